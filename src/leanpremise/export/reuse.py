"""`export --reuse`: copy the rows of older bundles whose embedded text the same model already embedded.

A row is reusable when two things match: the model's content identity (`leanpremise.model.identity`, never a
path or a time) and the sha256 of the exact string the model's `encode` sees (its default prompt prepended).
Bundles record both (`model_identity` and the `text_hashes` array in the manifest), so reuse reads two small
arrays and memory-maps the embeddings; for a bundle written before they were recorded, the identity is
computed from its `model/` and its texts are rebuilt from its premises archive and corpus options, the way a
server does.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leanpremise.bundle.archive import extract_premises_archive
from leanpremise.bundle.corpus import bundle_corpus
from leanpremise.bundle.layout import MODEL_DIR, PREMISES_ARCHIVE, BundleError
from leanpremise.bundle.manifest import Manifest, ReuseRecord
from leanpremise.bundle.verify import (
    check_finite_rows,
    check_inventory,
    read_verified_npy,
    verify_bundle_files,
)

logger = logging.getLogger(__name__)

HASH_BYTES = 32


def embedded_texts(model, texts: list[str]) -> list[str]:
    """The strings the model's `encode` actually sees: its default prompt, if it has one, prepended (as
    sentence-transformers does when `encode` is called without a prompt, which is how export calls it)."""
    name = getattr(model, "default_prompt_name", None)
    prompt = (getattr(model, "prompts", None) or {}).get(name) if name else None
    return [prompt + t for t in texts] if prompt else list(texts)


def text_hashes(texts: list[str]) -> np.ndarray:
    """sha256 of each text (UTF-8), as a uint8 array of shape (n, 32): the key of a row across bundles."""
    out = np.empty((len(texts), HASH_BYTES), dtype=np.uint8)
    for i, t in enumerate(texts):
        out[i] = np.frombuffer(hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest(), dtype=np.uint8)
    return out


@dataclass
class ReuseSource:
    """One older bundle's rows: embeddings (memory-mapped) and their text hashes, row for row."""

    path: Path
    hashes: np.ndarray
    embeddings: np.ndarray


def read_source(bundle: Path, model, dim: int, manifest: Manifest | None = None) -> ReuseSource:
    """The rows of `bundle` (already known to be embedded by `model`), verified as `serve` verifies a
    bundle: its files against the manifest's sizes and sha256 (the embeddings and text hashes on the very
    bytes used, read once), every row finite, and the arrays against each other."""
    bundle = Path(bundle)
    manifest = manifest or Manifest.read(bundle)
    check_inventory(bundle, manifest)
    read_here = frozenset(r for r in (manifest.embeddings, manifest.text_hashes) if r is not None)
    verify_bundle_files(bundle, manifest, skip=read_here)
    emb_path = bundle / manifest.embeddings
    emb = read_verified_npy(emb_path, manifest.checksums[manifest.embeddings])
    if emb.ndim != 2 or emb.shape[1] != dim or emb.dtype != np.float32:
        raise BundleError(f"{emb_path}: shape {emb.shape} {emb.dtype}, expected float32 rows of dimension {dim}")
    check_finite_rows(emb, emb_path)
    if manifest.text_hashes is not None:
        hashes = read_verified_npy(bundle / manifest.text_hashes, manifest.checksums[manifest.text_hashes])
    else:
        logger.info("%s: no text hashes (written by an older export); rebuilding its corpus texts from %s",
                    bundle, PREMISES_ARCHIVE)
        hashes = text_hashes(embedded_texts(model, bundle_corpus_texts(bundle, manifest)))
    if hashes.shape != (emb.shape[0], HASH_BYTES) or hashes.dtype != np.uint8:
        raise BundleError(f"{bundle}: {hashes.shape[0]} text hashes ({hashes.dtype}) for {emb.shape[0]} "
                          "embedding rows; the bundle is inconsistent")
    return ReuseSource(path=bundle, hashes=hashes, embeddings=emb)


def source_model_identity(bundle: Path, manifest: Manifest) -> str:
    """The identity of a source bundle's model, computed from its model files (verified against the
    manifest later, with the rest of the bundle); a manifest recording another is warned about."""
    from leanpremise.model.identity import model_identity

    computed = model_identity(Path(bundle) / MODEL_DIR)
    recorded = getattr(manifest, "model_identity", None)
    if recorded and recorded != computed:
        logger.warning("--reuse %s: its manifest records model identity %s…, its model files are %s…; "
                       "going by the files", bundle, recorded[:12], computed[:12])
    return computed


def bundle_corpus_texts(bundle: Path, manifest: Manifest) -> list[str]:
    """The corpus texts of a bundle, from its premises archive with the corpus options of its manifest."""
    with tempfile.TemporaryDirectory(prefix=".lp-reuse-") as tmp:
        data_dir = extract_premises_archive(bundle / PREMISES_ARCHIVE, Path(tmp) / "premises")
        return list(bundle_corpus(manifest, data_dir, use_cache=False).texts)


def reuse_rows(sources: list[Path], model, identity: str, hashes: np.ndarray, dim: int
               ) -> tuple[np.ndarray, np.ndarray, ReuseRecord]:
    """Rows of the new corpus found in `sources` (earlier sources first): (embeddings with those rows
    filled, mask of filled rows, record). Sources embedded by another model are skipped with one line: the
    model is told by the identity of the source's model files, hashed here, never by the identity its
    manifest records (which anyone editing the bundle could set)."""
    out = np.zeros((len(hashes), dim), dtype=np.float32)
    found = np.zeros(len(hashes), dtype=bool)
    record = ReuseRecord(sources=[str(s) for s in sources])
    wanted: dict[bytes, list[int]] = {}
    for i, row in enumerate(hashes):
        wanted.setdefault(row.tobytes(), []).append(i)
    for path in sources:
        path = Path(path)
        manifest = Manifest.read(path)
        other = source_model_identity(path, manifest)
        if other != identity:
            logger.warning("--reuse %s: embedded by another model (identity %s…, this one %s…); nothing reused "
                           "from it", path, other[:12], identity[:12])
            record.other_model.append(str(path))
            continue
        source = read_source(path, model, dim, manifest)
        rows, cols = [], []
        for j, row in enumerate(source.hashes):
            for i in wanted.pop(row.tobytes(), ()):
                rows.append(i)
                cols.append(j)
        if rows:
            out[rows] = source.embeddings[np.asarray(cols)]
            found[rows] = True
        logger.info("--reuse %s: %d rows copied", path, len(rows))
    record.reused = int(found.sum())
    record.embedded = len(hashes) - record.reused
    return out, found, record
