"""A persistent embedding cache for the server: (model identity, text) -> float32 vector, on disk or in Redis.

The in-memory LRU of the embedding service is lost at every restart, so a file's first request after one
re-embeds all its new premises. This store survives restarts (LMDB, one directory per host, shared by every
server process there) or is shared by replicas (Redis). Each backend is one class with the same small
interface (`EmbeddingStore`: `get_many` and `put_many` of a model key and texts, `close`, `where`); the
server opens its location once, shares it among the models it serves and closes it when it stops. Both
backends keep the same record:

- key: blake2b-128 of `model identity + NUL + text`, so a different model (by content, as the export's
  identity string says) never reads another's vectors and keys have a fixed size whatever the text;
- value: a 12-byte header (magic `LPEV`, format version, dtype code, dim) and the raw little-endian
  float32 row; in Redis followed by a 32-byte HMAC-SHA256 of key and value under the operator's key
  (EMBEDDING_CACHE_KEY), since anyone who can reach that Redis could otherwise write any vector under a
  key that follows from the public manifest and the text. A value whose header, length or HMAC does not
  match is foreign: it is a miss, with a warning.

Every row read is checked as well (serve/embedding/vector_check.py: finite, the model's dimension, unit
norm); a bad one is a miss, counted by `on_rejected` (the server counts it in /metrics), and re-embedded.

An LMDB file is checked before it is mapped (`lmdb_file_problem`): a data file shorter than its newest
meta page says would be read past its end through the map, which is SIGBUS, not an exception. A file that
fails the check is set aside like any other unusable store.

Neither backend ever raises on the request path: a store that fails (a corrupt LMDB file, Redis down or
slow) answers misses and drops puts, with a warning at most once per `warn_every_s`; the server then
embeds as it would without a store.

LMDB size and eviction: the file never grows past `max_bytes` (LMDB's map size, a hard limit). Records
may fill `RECORD_SHARE` of it (the budget; the rest is B-tree overhead and copy-on-write pages). Inserts
carry a generation number (a counter in the store); when a put would pass the budget, the oldest
generations are deleted first, in a transaction of their own, until the records are at `low_water` of the
budget. It is first-in-first-out: a hit does not
refresh a record, because that would turn every read into a write serialised across processes; the vectors a
revision's files need are re-put within a day of use anyway. Redis eviction is the server's business: each
put sets a TTL (`ttl_s`, default 30 days; None for no TTL, then run Redis with `maxmemory` and
`maxmemory-policy allkeys-lru`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
import struct
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from leanpremise.serve.embedding.vector_check import row_problem

logger = logging.getLogger(__name__)

MAGIC = b"LPEV"
FORMAT_VERSION = 1
DTYPE_CODES = {np.dtype("<f4"): ord("f")}
HEADER = struct.Struct("<4sBBxxI")
"""magic, format version, dtype code, two pad bytes, dim: 12 bytes before the raw row."""
STORE_MARKER = b"leanpremise-embedding-store/1"
"""What the LMDB meta database holds under `format`: anything else is a foreign store, set aside."""
KEY_BYTES = 16
DB_NAMES = (b"vectors", b"order", b"meta")
RECORD_SHARE = 0.2
"""Share of the LMDB map the records may fill: B-tree pages take about 1.7x the records, and a write copies
the pages it touches (hashed keys touch most), so the map must hold the old and the new tree at once."""
REDIS_PREFIX = b"leanpremise:emb:"
DEFAULT_TTL_S = 30 * 24 * 3600
TAG_BYTES = 32
"""HMAC-SHA256 tag after a Redis value."""
LMDB_MAGIC = 0xBEEFC0DE
LMDB_PAGE_HEADER = 16
"""LMDB's page header (page number, pad, flags, lower/upper bounds) before a meta page's fields."""
LMDB_META = struct.Struct("<IIQQI44x48xQQ")
"""An LMDB (0.9, 64-bit) meta page after its header: magic, version, fixed address, map size, the free
database's record (whose first field holds the page size; the rest skipped), the main database's record
(skipped), last page used, transaction id."""
LMDB_P_META = 0x08


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


class _RateLimitedWarning:
    """One log warning per `every_s` seconds per kind, with how many were suppressed in between; each
    names the store (`where`)."""

    def __init__(self, every_s: float, where: str):
        self.every_s, self.where = every_s, where
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, kind: str, message: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -float("inf")) < self.every_s:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        tail = f" ({suppressed} similar warnings suppressed)" if suppressed else ""
        logger.warning("embedding store %s: " + message + tail, self.where, *args)


class EmbeddingStore(Protocol):
    """What both backends offer the embedding service: a model's vectors read and written by text."""

    @property
    def where(self) -> str:
        """The store's location, for messages."""

    def get_many(self, model_key: str, texts: Sequence[str], dim: int | None = None) -> dict[str, np.ndarray]:
        """The stored vectors of those texts (misses are absent); never raises."""

    def put_many(self, model_key: str, texts: Sequence[str], vectors: np.ndarray) -> int:
        """Store one vector per text; returns how many were written (0 when the store failed); never raises."""

    def close(self) -> None:
        """Release the store (idempotent)."""


Rejected = Callable[[str, int], None]
"""Told (reason, count) of the values a read turned down: "header" (foreign format or dim), "hmac",
"nonfinite", "norm" (see vector_check.py)."""


def _get_many(read: Callable[[list[bytes]], list], warn: _RateLimitedWarning, model_key: str,
              texts: Sequence[str], dim: int | None, unseal: Callable[[bytes, bytes], bytes | None] | None = None,
              on_rejected: Rejected | None = None) -> dict[str, np.ndarray]:
    """`get_many` of either backend, `read` fetching its raw values by key, `unseal` (key, value) -> the
    value without its tag, None when the tag is wrong: decoding, checking (rows are checked when `dim` is
    given, as the server always does), and failures as misses."""
    if not texts:
        return {}
    keys = [record_key(model_key, t) for t in texts]
    try:
        values = read(keys)
    except Exception as e:  # noqa: BLE001 - the request path must not fail on a cache
        warn("get", "read failed, answering misses: %s", e)
        return {}
    hits: dict[str, np.ndarray] = {}
    rejected: dict[str, int] = {}
    for key, text, value in zip(keys, texts, values):
        if value is None:
            continue
        if unseal is not None:
            value = unseal(key, value)
            if value is None:
                rejected["hmac"] = rejected.get("hmac", 0) + 1
                continue
        vector = decode_vector(value, dim)
        problem = "header" if vector is None else row_problem(vector, dim) if dim is not None else None
        if problem is None:
            hits[text] = vector
        else:
            rejected[problem] = rejected.get(problem, 0) + 1
    if rejected:
        warn("foreign", "values treated as misses (%s)", ", ".join(f"{n} {why}" for why, n in rejected.items()))
        if on_rejected is not None:
            for why, n in rejected.items():
                on_rejected(why, n)
    return hits


def _put_many(write: Callable[[dict[bytes, bytes]], int], warn: _RateLimitedWarning, model_key: str,
              texts: Sequence[str], vectors: np.ndarray) -> int:
    """`put_many` of either backend, `write` storing raw values by key: encoding, and failures as 0."""
    vectors = np.asarray(vectors)
    if len(texts) != len(vectors):
        raise ValueError(f"put_many: {len(texts)} texts but {len(vectors)} vectors")
    if not texts:
        return 0
    items = {record_key(model_key, t): encode_vector(v) for t, v in zip(texts, vectors)}
    try:
        return write(items)
    except Exception as e:  # noqa: BLE001
        warn("put", "write failed, %d vectors not stored: %s", len(items), e)
        return 0


class LmdbEmbeddingStore:
    """An LMDB directory, safe for several processes of one host (LMDB locks its writers).

    Open it once per process and directory, after any fork: LMDB forbids opening one environment twice in a
    process (py-lmdb refuses the second open; this store then runs without it, see `_open`). The server
    opens its location once and shares the store among the models it serves (serve/revisions/lifecycle.py).
    """

    def __init__(self, path: str | Path, max_bytes: int = 2 << 30, low_water: float = 0.8,
                 warn_every_s: float = 60.0):
        self.path = Path(path)
        self._warn = _RateLimitedWarning(warn_every_s, str(self.path))
        self.max_bytes = int(max_bytes)
        self.budget = int(RECORD_SHARE * self.max_bytes)
        self.low_water = low_water
        self._env = None
        self._lock = threading.Lock()
        self.on_rejected: Rejected | None = None
        self._open()

    @property
    def where(self) -> str:
        return str(self.path)

    def get_many(self, model_key: str, texts: Sequence[str], dim: int | None = None) -> dict[str, np.ndarray]:
        """The stored vectors of those texts (misses are absent); never raises."""
        return _get_many(self._get_values, self._warn, model_key, texts, dim, on_rejected=self.on_rejected)

    def put_many(self, model_key: str, texts: Sequence[str], vectors: np.ndarray) -> int:
        """Store one vector per text; returns how many were written (0 when the store failed); never raises."""
        return _put_many(self._put_values, self._warn, model_key, texts, vectors)

    def _open(self) -> None:
        """Open the store; a corrupt or foreign one is set aside with a warning and a fresh one opened. Any
        other failure (the directory open elsewhere in this process, no reader slot, a full disk) leaves
        the directory as it is and the store runs without it."""
        import lmdb

        for attempt in range(3):
            self.path.mkdir(parents=True, exist_ok=True)
            problem = lmdb_file_problem(self.path)
            if problem is not None:  # mapping it could SIGBUS: never open it
                if attempt == 2:
                    logger.warning("embedding store %s: %s; running without it", self.path, problem)
                    return
                self._set_aside(problem)
                continue
            env = None
            try:
                env = lmdb.open(str(self.path), map_size=self.max_bytes, max_dbs=3, metasync=False,
                                readahead=False)
                with env.begin() as txn:  # named databases are keys of the main one: only ours may be there
                    others = {key for key, _ in txn.cursor()} - set(DB_NAMES)
                if others:
                    raise lmdb.InvalidError(f"not a leanpremise embedding store ({len(others)} other keys)")
                vectors, order, meta = (env.open_db(name) for name in DB_NAMES)
                with env.begin(write=True) as txn:
                    marker = txn.get(b"format", db=meta)
                    if marker is None and txn.stat(vectors)["entries"] == 0:
                        txn.put(b"format", STORE_MARKER, db=meta)
                    elif marker != STORE_MARKER:
                        raise lmdb.InvalidError(f"not a leanpremise embedding store (format {marker!r})")
            except (lmdb.Error, OSError) as e:  # OSError: the path is a file, or unreadable
                if env is not None:
                    env.close()
                if attempt == 2 or not _unusable(e):
                    logger.warning("embedding store %s: cannot open (%s); running without it", self.path, e)
                    return
                self._set_aside(e)
                continue
            self._env, self._vectors, self._order, self._meta = env, vectors, order, meta
            return

    def _set_aside(self, error: Exception | str) -> None:
        """Rename the unusable store directory out of the way (another process may have done it first)."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        try:
            self.path.rename(aside)
        except FileNotFoundError:
            return
        except OSError as e:
            logger.warning("embedding store %s: unusable (%s) and cannot be set aside: %s", self.path, error, e)
            return
        logger.warning("embedding store %s: unusable (%s); set aside as %s, starting a fresh one",
                       self.path, error, aside)

    def _get_values(self, keys: list[bytes]) -> list[bytes | None]:
        if self._env is None:
            return [None] * len(keys)
        with self._env.begin(db=self._vectors, buffers=False) as txn:
            values = [txn.get(k) for k in keys]
        return [None if v is None else v[8:] for v in values]  # past the generation number

    def _put_values(self, items: dict[bytes, bytes]) -> int:
        import lmdb

        if self._env is None:
            return 0
        sizes = [_record_bytes(v) for v in items.values()]
        while sizes and sum(sizes) > self.budget:  # one put larger than the budget keeps its last rows
            sizes.pop(0)
        items = dict(list(items.items())[len(items) - len(sizes):])
        with self._lock:
            try:
                self._make_room(sum(sizes), self.low_water)
                return self._insert(items)
            except lmdb.MapFullError:  # B-tree overhead outgrew the map: make more room, retry once
                self._make_room(sum(sizes), self.low_water / 2)
                return self._insert(items)

    def _make_room(self, incoming: int, low_water: float) -> None:
        """Evict (in a transaction of its own, so freed pages are reusable) when `incoming` would not fit."""
        with self._env.begin(write=True) as txn:
            used = int.from_bytes(txn.get(b"bytes", b"\0" * 8, db=self._meta), "big")
            if used + incoming > self.budget:
                used = self._evict(txn, used, max(0, int(low_water * self.budget) - incoming))
                txn.put(b"bytes", used.to_bytes(8, "big"), db=self._meta)

    def _insert(self, items: dict[bytes, bytes]) -> int:
        written = 0
        with self._env.begin(write=True) as txn:
            generation = int.from_bytes(txn.get(b"generation", b"\0" * 8, db=self._meta), "big")
            used = int.from_bytes(txn.get(b"bytes", b"\0" * 8, db=self._meta), "big")
            for key, value in items.items():
                if txn.get(key, db=self._vectors) is not None:
                    continue
                generation += 1
                txn.put(key, generation.to_bytes(8, "big") + value, db=self._vectors)
                txn.put(generation.to_bytes(8, "big"), key, db=self._order)
                used += _record_bytes(value)
                written += 1
            txn.put(b"generation", generation.to_bytes(8, "big"), db=self._meta)
            txn.put(b"bytes", used.to_bytes(8, "big"), db=self._meta)
        return written

    def _evict(self, txn, used: int, target: int) -> int:
        """Delete the oldest generations until `used` is at most `target`; returns the new `used`."""
        cursor = txn.cursor(db=self._order)
        evicted = 0
        while used > target and cursor.first():
            key = cursor.value()
            value = txn.pop(key, db=self._vectors)
            if value is not None:
                used -= _record_bytes(value[8:])
            cursor.delete()
            evicted += 1
        logger.info("embedding store %s: evicted the %d oldest vectors", self.path, evicted)
        return max(used, 0)

    def stats(self) -> dict:
        """Records held, the bytes they count against the budget, the budget and the file bound."""
        if self._env is None:
            return {"entries": 0, "bytes": 0, "budget": self.budget, "max_bytes": self.max_bytes}
        with self._env.begin() as txn:
            used = int.from_bytes(txn.get(b"bytes", b"\0" * 8, db=self._meta), "big")
            return {"entries": txn.stat(self._vectors)["entries"], "bytes": used, "budget": self.budget,
                    "max_bytes": self.max_bytes}

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def lmdb_file_problem(path: Path) -> str | None:
    """Why the LMDB data file in directory `path` must not be mapped, or None when it may (or is absent).

    Reads its two meta pages (a few hundred bytes): both must be LMDB meta pages, and the file must hold
    every page the newer one (by transaction id, as LMDB picks) says is in use. Cheaper than opening the
    store in a child process first (docs/decisions.md), and it catches what kills a process, a file cut
    short; damage inside pages LMDB reports itself, as an error."""
    data = path / "data.mdb"
    try:
        st = data.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return "data.mdb is not a regular file"
    if st.st_size == 0:
        return None  # LMDB writes a new store's meta pages into an empty file itself
    with open(data, "rb") as f:
        first = _lmdb_meta(f, 0)
        if isinstance(first, str):
            return first
        page_size = first[4]
        if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
            return f"data.mdb: meta page 0 gives page size {page_size}"
        second = _lmdb_meta(f, page_size)
        if isinstance(second, str):
            return second
    newer = max(first, second, key=lambda m: m[6])
    needed = (newer[5] + 1) * page_size
    if needed > st.st_size:
        return f"data.mdb is {st.st_size} bytes but its meta page says {needed} are in use (truncated)"
    return None


def _lmdb_meta(f, offset: int) -> tuple | str:
    """The fields of the meta page at `offset` (see LMDB_META), or why it is not one."""
    f.seek(offset)
    raw = f.read(LMDB_PAGE_HEADER + LMDB_META.size)
    if len(raw) < LMDB_PAGE_HEADER + LMDB_META.size:
        return f"data.mdb: no meta page at byte {offset} (the file is {offset + len(raw)} bytes)"
    flags = struct.unpack_from("<H", raw, 10)[0]
    fields = LMDB_META.unpack_from(raw, LMDB_PAGE_HEADER)
    if not flags & LMDB_P_META or fields[0] != LMDB_MAGIC or fields[1] != 1:
        return f"data.mdb: the page at byte {offset} is not an LMDB meta page"
    return fields


def _unusable(error: Exception) -> bool:
    """Whether an error opening the store says its files are not a usable store (set it aside), rather
    than that it cannot be opened now (py-lmdb's "already open in this process" is a plain `lmdb.Error`)."""
    import lmdb

    return isinstance(error, (OSError, lmdb.InvalidError, lmdb.CorruptedError, lmdb.PageNotFoundError,
                              lmdb.VersionMismatchError, lmdb.IncompatibleError, lmdb.PanicError))


def _record_bytes(value: bytes) -> int:
    """What one record costs against the budget: key, generation, value, and its order entry."""
    return KEY_BYTES + 8 + len(value) + 8 + KEY_BYTES


class RedisEmbeddingStore:
    """A Redis database shared by replicas, `redis://HOST:PORT/N`; failures degrade to misses.

    After a failure the store stays quiet for `retry_after_s` (every call is a miss without a network
    round trip), so a Redis that is down costs a request nothing but its own embedding time.
    """

    def __init__(self, url: str, ttl_s: int | None = DEFAULT_TTL_S, timeout_s: float = 0.25,
                 retry_after_s: float = 5.0, warn_every_s: float = 60.0, hmac_key: bytes | None = None):
        """`hmac_key`: the key values are tagged and checked under (None: untagged, for a Redis only this
        server can reach; the server's settings require one unless explicitly waived)."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url, self.ttl_s, self.retry_after_s = url, ttl_s, retry_after_s
        # No client-side retries: a miss is cheaper than a request waiting on backoffs.
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                            retry=Retry(NoBackoff(), 0))
        self._down_until = 0.0
        self._warn = _RateLimitedWarning(warn_every_s, url)
        self._hmac_key = hmac_key
        self.on_rejected: Rejected | None = None

    @property
    def where(self) -> str:
        return self.url

    def get_many(self, model_key: str, texts: Sequence[str], dim: int | None = None) -> dict[str, np.ndarray]:
        """The stored vectors of those texts (misses are absent); never raises."""
        unseal = self._unseal if self._hmac_key is not None else None
        return _get_many(self._get_values, self._warn, model_key, texts, dim, unseal, self.on_rejected)

    def put_many(self, model_key: str, texts: Sequence[str], vectors: np.ndarray) -> int:
        """Store one vector per text; returns how many were written (0 when the store failed); never raises."""
        return _put_many(self._put_values, self._warn, model_key, texts, vectors)

    def _tag(self, key: bytes, value: bytes) -> bytes:
        return hmac.new(self._hmac_key, key + value, hashlib.sha256).digest()

    def _unseal(self, key: bytes, value: bytes) -> bytes | None:
        """The value without its tag, or None when the tag is not this key's HMAC of key and value."""
        body, tag = value[:-TAG_BYTES], value[-TAG_BYTES:]
        if len(value) < TAG_BYTES or not hmac.compare_digest(tag, self._tag(key, body)):
            return None
        return body

    def _guard(self) -> None:
        if time.monotonic() < self._down_until:
            raise ConnectionError("unreachable a moment ago; not retried yet")

    def _failed(self) -> None:
        self._down_until = time.monotonic() + self.retry_after_s

    def _get_values(self, keys: list[bytes]) -> list[bytes | None]:
        self._guard()
        try:
            return self._client.mget([REDIS_PREFIX + k for k in keys])
        except Exception:
            self._failed()
            raise

    def _put_values(self, items: dict[bytes, bytes]) -> int:
        self._guard()
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, value in items.items():
                if self._hmac_key is not None:
                    value = value + self._tag(key, value)
                pipe.set(REDIS_PREFIX + key, value, ex=self.ttl_s)
            pipe.execute()
        except Exception:
            self._failed()
            raise
        return len(items)

    def close(self) -> None:
        self._client.close()


def open_embedding_store(location: str | Path, max_bytes: int = 2 << 30, ttl_s: int | None = DEFAULT_TTL_S,
                         hmac_key: bytes | None = None) -> LmdbEmbeddingStore | RedisEmbeddingStore:
    """A Redis store for a `redis://`, `rediss://` or `unix://` URL (its values tagged under `hmac_key`),
    else the LMDB store in that directory (opened anew: open an LMDB directory once per process)."""
    text = str(location)
    if text.startswith(("redis://", "rediss://", "unix://")):
        return RedisEmbeddingStore(text, ttl_s=ttl_s, hmac_key=hmac_key)
    return LmdbEmbeddingStore(Path(location).expanduser().resolve(), max_bytes=max_bytes)


def store_model_key(identity: str, embedder) -> str:
    """The model part of a record's key: the model's content identity and the backend that embeds with it
    (the int8 ONNX graph's vectors are not the float model's, so they must not answer for each other)."""
    return f"{identity}|backend:{getattr(embedder, 'name', type(embedder).__name__)}"


def open_server_store(config, bundle, embedder, opened: dict[str, EmbeddingStore]
                      ) -> tuple[EmbeddingStore, str] | None:
    """(the persistent cache the server's settings name, the key of the bundle's model as `embedder` runs
    it there); None when it is off or cannot be opened (the server then embeds as without it). `opened`:
    the stores the server has open, by location; a location is opened once and added there, for the server
    to share among its models and close when it stops. Blocking: the model's identity may have to be
    computed from its files."""
    location = config.embedding_cache_location()
    if location is None:
        return None
    try:
        from leanpremise.bundle.manifest import bundle_model_identity

        identity = bundle_model_identity(bundle.manifest, bundle.model_dir)
        store = opened.get(location)
        if store is None:
            store = opened[location] = open_embedding_store(location, max_bytes=config.embedding_cache_max_bytes,
                                                            ttl_s=config.embedding_cache_ttl_s or None,
                                                            hmac_key=config.embedding_cache_hmac_key())
    except Exception as e:  # noqa: BLE001 - a cache that cannot open must not stop the server
        logger.warning("persistent embedding cache %s: cannot open (%s); running without it", location, e)
        return None
    logger.info("persistent embedding cache: %s", store.where)
    return store, store_model_key(identity, embedder)
