"""The export bundle's layout, manifest and premises archive: what `export` writes and `serve` reads.

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
        fusion.json                     the tuned fusion (eval/fusion.py's FusionSpec)
        bm25/                           bm25s's saved index of the corpus texts + bm25_stats.json
        mepo/vocab.json, indptr.npy, indices.npy
                                        MePo's premise-symbol table (CSR over the corpus order)
        usage.npy                       int64 per corpus premise: train states that used it (usage ranker)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tarfile
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from leanpremise.json_files import read_validated

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
MEPO_VOCAB, MEPO_INDPTR, MEPO_INDICES = "vocab.json", "indptr.npy", "indices.npy"
FORMAT_VERSION = 2
"""2 added `sizes`; a format-1 manifest (sha256 only) still loads, fully hashed (docs/decisions.md)."""
FAST_VERIFY_MAX_BYTES = 16 << 20
"""In the fast check, files up to this size are hashed; larger ones (weights, ONNX graphs, embeddings,
often the archive) only have their size compared."""

logger = logging.getLogger(__name__)


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


def _confined(rel: str | None) -> str | None:
    if rel is not None and (why := bundle_path_problem(rel)):
        raise ValueError(f"{rel!r}: {why}")
    return rel


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class ReuseRecord(BaseModel):
    """How an export with `--reuse` got its rows: copied from older bundles, or embedded anew."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    sources: list[str] = Field(default_factory=list)
    """The bundles given to `--reuse`, as given."""
    reused: int = 0
    """Rows copied (bit for bit) from a source embedded by the same model."""
    embedded: int = 0
    """Rows whose embedded text no source held, embedded by this export."""
    other_model: list[str] = Field(default_factory=list)
    """Sources embedded by another model (by content identity), from which nothing was reused."""


class Manifest(BaseModel):
    """What a server checks before trusting a bundle (the corpus options decide the premise count).

    Unknown keys (from a newer export) are ignored, as before; a key of the wrong type is an error naming it.
    """

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    model_name: str
    revision: str
    """Branch and file-name form of the data revision (see :func:`revision_slug`)."""
    dimension: int
    premise_count: int
    unfiltered_premise_count: int
    module_count: int
    embeddings: str
    """Path of the embeddings file inside the bundle (a listed file)."""
    filter: bool = True
    mathlib_only: bool = False
    nameless: bool = False
    onnx: str | None = None
    onnx_int8: str | None = None
    data_revision: str = ""
    """The data dir's `revision` file, verbatim."""
    source_model: str = ""
    created: str = ""
    format_version: int = FORMAT_VERSION
    checksums: dict[str, str] = Field(default_factory=dict)
    """sha256 of every file in the bundle except the manifest, keyed by relative path: the bundle's files."""
    sizes: dict[str, int] = Field(default_factory=dict)
    """Byte size of every file in `checksums` (format 2; a format-1 manifest has none)."""
    model_identity: str = ""
    """`leanpremise.model_identity.model_identity` of `model/` (empty in bundles written before it was
    recorded): lets a server or `export --reuse` compare models without hashing weights."""
    text_hashes: str | None = None
    """Path of the per-row sha256 of the embedded texts (prompt included), a listed file; None in older
    bundles."""
    reuse: ReuseRecord | None = None
    """Set by `export --reuse`: the sources and how many rows were reused and embedded."""
    hybrid: str | None = None
    """Path of the fusion file (`hybrid/fusion.json`, a listed file) when `export --hybrid` put the
    lexical rankers into the bundle; None: dense only."""

    @field_validator("embeddings", "onnx", "onnx_int8", "text_hashes", "hybrid")
    @classmethod
    def _check_path(cls, rel: str | None) -> str | None:
        """A named part stays inside the bundle."""
        return _confined(rel)

    @field_validator("checksums", "sizes")
    @classmethod
    def _check_keys(cls, files: dict):
        """Every listed path stays inside the bundle."""
        for rel in files:
            _confined(rel)
        return files

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        """Sizes, when given, cover exactly the listed files, and the parts named above are listed."""
        if self.sizes and self.sizes.keys() != self.checksums.keys():
            odd = min(self.sizes.keys() ^ self.checksums.keys())
            raise ValueError(f"`sizes` and `checksums` list different files ({odd!r} is in one only)")
        if self.checksums:
            for name in ("embeddings", "onnx", "onnx_int8", "text_hashes", "hybrid"):
                rel = getattr(self, name)
                if rel is not None and rel not in self.checksums:
                    raise ValueError(f"`{name}` {rel!r} is not among the files listed in `checksums`")
        return self

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(), indent=1, sort_keys=True).encode()

    @classmethod
    def read(cls, bundle: Path) -> Manifest:
        path = Path(bundle) / MANIFEST
        if not path.is_file():
            raise BundleError(f"{path}: missing; is {bundle} a bundle written by `leanpremise export`?")
        return read_validated(path, MANIFEST_FILE, "bundle manifest", BundleError, name_field=None)


MANIFEST_FILE = TypeAdapter(Manifest)


def bundle_files(root: Path) -> tuple[dict[str, str], dict[str, int]]:
    """sha256 and size of every regular file under `root` except the manifest (what export lists)."""
    root = Path(root)
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).as_posix() != MANIFEST]
    rels = [p.relative_to(root).as_posix() for p in files]
    return ({r: sha256_file(p) for r, p in zip(rels, files, strict=True)},
            {r: p.stat().st_size for r, p in zip(rels, files, strict=True)})


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _present_files(bundle: Path) -> set[str]:
    """Relative paths of the files in `bundle` (symlinks not followed), refusing links that leave it."""
    root = bundle.resolve()
    found = set()
    for folder, dirs, files in os.walk(bundle, followlinks=False):
        for name in dirs + files:
            path = Path(folder) / name
            if path.is_symlink() and not _inside(path.resolve(), root):
                raise BundleError(f"{path}: a symlink pointing outside the bundle ({os.readlink(path)})")
        found.update((Path(folder) / name).relative_to(bundle).as_posix() for name in files)
    found.discard(MANIFEST)
    return found


def check_inventory(bundle: Path, manifest: Manifest) -> None:
    """Raise BundleError (one line naming the file) unless the bundle holds exactly the listed files, each
    inside the bundle and of its listed size. Only `stat`s: cheap enough to run before every start."""
    bundle = Path(bundle)
    if not manifest.checksums:
        raise BundleError(f"{bundle / MANIFEST}: lists no files, so the bundle cannot be verified; "
                          "re-export it with this version of `leanpremise export`")
    present = _present_files(bundle)
    for rel in sorted(manifest.checksums):
        path = bundle / rel
        if not path.is_file():
            raise BundleError(f"{path}: listed in {MANIFEST} but missing")
        if not _inside(path.resolve(), bundle.resolve()):
            raise BundleError(f"{path}: resolves outside the bundle ({path.resolve()})")
        if rel in manifest.sizes and (size := path.stat().st_size) != manifest.sizes[rel]:
            raise BundleError(f"{path}: {size} bytes, {MANIFEST} says {manifest.sizes[rel]} "
                              "(truncated, damaged or edited after export)")
    if extra := sorted(present - manifest.checksums.keys()):
        raise BundleError(f"{bundle / extra[0]}: in the bundle but not listed in {MANIFEST}"
                          + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    if not manifest.sizes:
        logger.warning("%s: a format-%d manifest without file sizes: sizes are not checked and every file is "
                       "hashed, also in the fast check", bundle / MANIFEST, manifest.format_version)


def verify_file(path: Path, rel: str, manifest: Manifest, fast: bool = False) -> bool:
    """Check the file listed as `rel` against the manifest; True when it was hashed.

    Fast: a file larger than FAST_VERIFY_MAX_BYTES whose size the manifest lists is only size-checked."""
    expected = manifest.checksums.get(rel)
    if expected is None:
        raise BundleError(f"{path}: not listed in {MANIFEST}")
    if not Path(path).is_file():
        raise BundleError(f"{path}: listed in {MANIFEST} but missing")
    size = Path(path).stat().st_size
    if rel in manifest.sizes and size != manifest.sizes[rel]:
        raise BundleError(f"{path}: {size} bytes, {MANIFEST} says {manifest.sizes[rel]} "
                          "(truncated, damaged or edited after export)")
    if fast and rel in manifest.sizes and size > FAST_VERIFY_MAX_BYTES:
        return False
    if sha256_file(path) != expected:
        raise BundleError(f"{path}: sha256 differs from {MANIFEST} (damaged or edited after export)")
    return True


def verify_bundle_files(bundle: Path, manifest: Manifest, fast: bool = False) -> None:
    """Every listed file against its size and sha256 (fast: large files by size only); run after
    :func:`check_inventory`, so nothing unlisted is there."""
    hashed = sum(verify_file(Path(bundle) / rel, rel, manifest, fast) for rel in sorted(manifest.checksums))
    logger.info("verified %d bundle files (%d by sha256%s)", len(manifest.checksums), hashed,
                ", the others by size" if hashed < len(manifest.checksums) else "")


def extract_premises_archive(archive: Path, target: Path) -> Path:
    """Unpack `premises.tar.gz` into `target` (must not exist yet), refusing members outside it."""
    target.mkdir(parents=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(target, filter="data")
    return target
