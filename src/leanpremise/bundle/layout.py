"""The export bundle's layout: its file names and paths, what `export` writes and `serve` reads.

Its own module so that a server needs nothing from the export stage (docs/output-formats.md, "The export
bundle").

    BUNDLE/
      manifest.json                     model name, revision, dimension, counts, size and sha256 of every file
      model/                            sentence-transformers format (pushed to the model repo)
        onnx/model.onnx                 ONNX export (pooling + normalisation in the graph)
        onnx/model_qint8.onnx           optional int8 dynamic quantisation
      premises.tar.gz                   revision, Modules.jsonl, HammerBlacklist.jsonl, Declarations/, Imports/
      embeddings/<model>-<revision>.npy one normalised float32 row per corpus premise, corpus order
      embeddings/<model>-<revision>.texts-sha256.npy
                                        sha256 of each row's embedded text (prompt included), uint8 (n, 32)
      hybrid/                           only with `export --hybrid FUSION_JSON`:
        fusion.json                     the tuned fusion (rank/fusion.py's FusionSpec)
        bm25/                           bm25s's saved index of the corpus texts + bm25_stats.json (rank/bm25.py)
        mepo/vocab.json, indptr.npy, indices.npy
                                        MePo's premise-symbol table, CSR over the corpus order (rank/mepo.py)
        usage.npy                       int64 per corpus premise: train states that used it (usage ranker)
      rerank/                           only with `export --rerank RERANKER_DIR` (its side rankers in hybrid/):
        reranker.json, model.txt|model.json
                                        the reranker's spec and model (rank/rerank/spec.py), copied as trained
        module_usage/*.npy              usage by module, CSR over modules (rank/module_usage.py)
        nearest_states/                 when the reranker reads it: the usage states' goal vectors and
                                        premises (rank/nearest_states.py)
"""


from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

MANIFEST = "manifest.json"
MODEL_DIR = "model"
PREMISES_ARCHIVE = "premises.tar.gz"
EMBEDDINGS_DIR = "embeddings"
TEXT_HASHES_SUFFIX = ".texts-sha256.npy"
ONNX_DIR = "onnx"
"""Under MODEL_DIR: the ONNX graphs."""
ONNX_FILE = "model.onnx"
INT8_FILE = "model_qint8.onnx"
HYBRID_DIR = "hybrid"
HYBRID_FUSION = f"{HYBRID_DIR}/fusion.json"
HYBRID_BM25 = f"{HYBRID_DIR}/bm25"
HYBRID_MEPO = f"{HYBRID_DIR}/mepo"
HYBRID_USAGE = f"{HYBRID_DIR}/usage.npy"
RERANK_DIR = "rerank"
RERANK_SPEC = f"{RERANK_DIR}/reranker.json"
RERANK_MODULE_USAGE = f"{RERANK_DIR}/module_usage"
RERANK_NEAREST = f"{RERANK_DIR}/nearest_states"
FORMAT_VERSION = 2
"""2 added `sizes`; a format-1 manifest (sha256 only) still loads, fully hashed (docs/decisions.md)."""
FAST_VERIFY_MAX_BYTES = 16 << 20
"""In the fast check, files up to this size are hashed; larger ones (weights, ONNX graphs, embeddings,
often the archive) only have their size compared."""



class BundleError(Exception):
    """A bundle that is missing a part or disagrees with its manifest (the message names the file)."""


def revision_slug(revision: str) -> str:
    """The revision as a branch and file name: ntp-toolkit revisions such as
    `mathlib4@<sha> batteries@<sha> lean4:v4.33.0-rc1` hold characters git refs and paths reject."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", revision.strip()).strip("._-")
    return slug or "unknown"


def embeddings_file_name(model_name: str, revision: str) -> str:
    """`embeddings/<model_name>-<revision>.npy`, the path the original server downloads."""
    return f"{EMBEDDINGS_DIR}/{model_name}-{revision}.npy"


def text_hashes_file_name(embeddings_rel: str) -> str:
    """The text-hash array beside an embeddings file: `<same stem>.texts-sha256.npy`."""
    return embeddings_rel.removesuffix(".npy") + TEXT_HASHES_SUFFIX


def onnx_file(model_dir: Path, int8: bool = False) -> Path:
    """Where a bundle's model dir keeps its ONNX graph (`int8`: the quantised one): the exporter writes it
    there and the server looks for it there."""
    return Path(model_dir) / ONNX_DIR / (INT8_FILE if int8 else ONNX_FILE)


def bundle_path_problem(rel: str) -> str | None:
    """Why `rel` cannot name a file inside a bundle (absolute, `..`, empty parts, a backslash), or None.

    Manifest paths are joined to the bundle dir, so one that leaves it would make the server read or
    trust any file of the machine."""
    if not rel or "\\" in rel or "\0" in rel:
        return "not a relative path with / separators"
    parts = rel.split("/")
    if PurePosixPath(rel).is_absolute() or re.match(r"^[A-Za-z]:", rel):
        return "an absolute path, outside the bundle"
    if any(part in ("", ".", "..") for part in parts):
        return "leaves the bundle or has empty parts (`..`, `.`, `//`)"
    return None


def confined(rel: str | None) -> str | None:
    if rel is not None and (why := bundle_path_problem(rel)):
        raise ValueError(f"{rel!r}: {why}")
    return rel

