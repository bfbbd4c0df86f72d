"""One record of the persistent embedding store, as both backends keep it.

- key: blake2b-128 of `model identity + NUL + text`, so a different model (by content, as the export's
  identity string says) never reads another's vectors and keys have a fixed size whatever the text;
- value: a 12-byte header (magic `LPEV`, format version, dtype code, dim) and the raw little-endian
  float32 row; sealed (Redis) it is followed by a 32-byte HMAC-SHA256 of key and value under the
  operator's secret (EMBEDDING_CACHE_KEY), since anyone who can reach that Redis could otherwise write any
  vector under a key that follows from the public manifest and the text.

A value whose header, length or tag does not match is foreign: the reader treats it as a miss.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import numpy as np

MAGIC = b"LPEV"
FORMAT_VERSION = 1
DTYPE_CODES = {np.dtype("<f4"): ord("f")}
HEADER = struct.Struct("<4sBBxxI")
"""magic, format version, dtype code, two pad bytes, dim: 12 bytes before the raw row."""
KEY_BYTES = 16
TAG_BYTES = 32
"""HMAC-SHA256 tag after a sealed value."""


def record_key(model_id: str, text: str) -> bytes:
    """The fixed-size key of (model identity, text)."""
    # surrogatepass: JSON can carry a lone surrogate, which plain UTF-8 cannot encode.
    data = f"{model_id}\0{text}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=KEY_BYTES).digest()


def encode_vector(vector: np.ndarray) -> bytes:
    """Header + the row as little-endian float32."""
    row = np.ascontiguousarray(vector, dtype="<f4").reshape(-1)
    return HEADER.pack(MAGIC, FORMAT_VERSION, DTYPE_CODES[row.dtype], row.shape[0]) + row.tobytes()


def decode_vector(value: bytes, dim: int | None = None) -> np.ndarray | None:
    """The row of a value, or None when it is foreign (other magic, version, dtype, dim, or a short value)."""
    if len(value) < HEADER.size:
        return None
    magic, version, code, n = HEADER.unpack_from(value)
    if magic != MAGIC or version != FORMAT_VERSION or code != ord("f") or (dim is not None and n != dim):
        return None
    if len(value) != HEADER.size + 4 * n:
        return None
    return np.frombuffer(value, dtype="<f4", offset=HEADER.size).astype(np.float32)


def _tag(secret: bytes, key: bytes, value: bytes) -> bytes:
    """The HMAC of key and value together, so a valid value moved under another key fails its check."""
    return hmac.new(secret, key + value, hashlib.sha256).digest()


def seal(secret: bytes, key: bytes, value: bytes) -> bytes:
    """The value followed by its tag under `secret`."""
    return value + _tag(secret, key, value)


def unseal(secret: bytes, key: bytes, sealed: bytes) -> bytes | None:
    """The value without its tag, or None when the tag is not `secret`'s HMAC of key and value."""
    if len(sealed) < TAG_BYTES:
        return None
    body, tag = sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
    return body if hmac.compare_digest(tag, _tag(secret, key, body)) else None
