"""Corpus embeddings for a bundle: encoded in chunks that survive interruption, or reused from a file.

Encoding Mathlib on a CPU takes long; each finished chunk is saved
atomically in a chunk folder keyed by the model's content identity and the
corpus texts (never paths or times), so a re-run after Ctrl-C, a crash or
SIGKILL embeds only the missing chunks.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from leanpremise.atomic import atomic_write_bytes

logger = logging.getLogger(__name__)

CHUNK_SIZE = 4096


class EmbeddingShapeError(ValueError):
    pass


def texts_fingerprint(texts: list[str]) -> str:
    """sha256 of the corpus texts in order: with the model's identity, what decides every row."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def encode_in_chunks(encode, texts: list[str], chunk_dir: Path, key: str, dim: int,
                     chunk_size: int = CHUNK_SIZE, progress: bool = True,
                     batch_size: int | None = None) -> np.ndarray:
    """Embed `texts` with `encode(list[str]) -> (n, dim)`, saving chunk i as `chunk_dir/<i>.npy`.

    Chunks written for another `key` (other model, other corpus) or chunk size are discarded. With
    `batch_size`, `encode` is called once per batch (and the progress bar moves per batch).
    """
    from tqdm.auto import tqdm

    chunk_dir = Path(chunk_dir)
    meta = {"key": key, "count": len(texts), "chunk_size": chunk_size, "dim": dim}
    meta_path = chunk_dir / "chunks.json"
    if chunk_dir.exists():
        try:
            same = json.loads(meta_path.read_text()) == meta
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:
            logger.info("discarding embedding chunks in %s (other model, corpus or chunk size)", chunk_dir)
            shutil.rmtree(chunk_dir)
    chunk_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(meta_path, json.dumps(meta).encode())

    n_chunks = (len(texts) + chunk_size - 1) // chunk_size
    out = np.empty((len(texts), dim), dtype=np.float32)
    todo = []
    for i in range(n_chunks):
        lo, hi = i * chunk_size, min(len(texts), (i + 1) * chunk_size)
        path = chunk_dir / f"{i:06d}.npy"
        try:
            part = np.load(path, allow_pickle=False) if path.exists() else None
        except (OSError, ValueError):
            part = None
        if part is not None and part.shape == (hi - lo, dim):
            out[lo:hi] = part
        else:
            todo.append(i)
    done = len(texts) - sum(min(len(texts), (i + 1) * chunk_size) - i * chunk_size for i in todo)
    if done:
        logger.info("resuming: %d of %d premises already embedded in %s", done, len(texts), chunk_dir)
    with tqdm(total=len(texts), initial=done, desc="embedding corpus", unit="premise", disable=not progress) as bar:
        for i in todo:
            lo, hi = i * chunk_size, min(len(texts), (i + 1) * chunk_size)
            part = encode_chunk(encode, texts[lo:hi], dim, batch_size or (hi - lo), bar.update)
            atomic_write_bytes(chunk_dir / f"{i:06d}.npy", npy_bytes(part))
            out[lo:hi] = part
    return out


def encode_chunk(encode, texts: list[str], dim: int, batch_size: int, advance) -> np.ndarray:
    """One chunk's embeddings, `encode` called per batch of `batch_size` texts of similar length.

    The texts are batched longest first, as sentence-transformers batches a single call, so padding (and
    the numbers) stay what one call over the chunk gives; `advance(n)` reports each finished batch.
    """
    out = np.empty((len(texts), dim), dtype=np.float32)
    if batch_size >= len(texts):  # one call, in the given order
        order = np.arange(len(texts))
    else:
        order = np.argsort([-len(t) for t in texts], kind="stable")
    for a in range(0, len(texts), max(batch_size, 1)):
        idx = order[a:a + batch_size]
        part = np.asarray(encode([texts[j] for j in idx.tolist()]), dtype=np.float32)
        if part.shape != (len(idx), dim):
            raise EmbeddingShapeError(f"encoder returned shape {part.shape} for {len(idx)} texts of dim {dim}")
        out[idx] = part
        advance(len(idx))
    return out


def load_precomputed(path: Path, n_premises: int, dim: int | None = None) -> np.ndarray:
    """Pre-computed corpus embeddings, checked against the corpus (rows) and the model (columns)."""
    path = Path(path)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise EmbeddingShapeError(f"{path}: not a readable .npy array ({e})") from e
    if arr.ndim != 2 or arr.shape[0] != n_premises:
        raise EmbeddingShapeError(
            f"{path}: shape {arr.shape}, but the corpus has {n_premises} premises "
            "(embeddings must be one row per premise, in corpus order, with the same corpus options)"
        )
    if dim is not None and arr.shape[1] != dim:
        raise EmbeddingShapeError(f"{path}: rows have dimension {arr.shape[1]}, the model embeds in {dim}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise EmbeddingShapeError(f"{path}: dtype {arr.dtype} is not a float type")
    out = np.asarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise EmbeddingShapeError(f"{path}: contains NaN or infinite values")
    norms = np.linalg.norm(out, axis=1)
    if len(out) and np.abs(norms - 1).max() > 1e-3:
        logger.warning("%s: rows are not unit-norm; normalising them (scores are cosine similarities)", path)
        out = out / np.maximum(norms, 1e-12)[:, None]
    return np.ascontiguousarray(out)


def embeddings_npy_bytes(arr: np.ndarray) -> bytes:
    return npy_bytes(np.ascontiguousarray(arr, dtype=np.float32))
