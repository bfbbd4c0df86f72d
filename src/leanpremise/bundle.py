"""The export bundle's layout, manifest and premises archive: what `export` writes and `serve` reads.

Its own module so that a server needs nothing from the export stage (docs/output-formats.md, "The export
bundle").

    BUNDLE/
      manifest.json                     model name, revision, dimension, counts, sha256 of every file
      model/                            sentence-transformers format (pushed to the model repo)
        onnx/model.onnx                 ONNX export (pooling + normalisation in the graph)
        onnx/model_qint8.onnx           optional int8 dynamic quantisation
      premises.tar.gz                   revision, Modules.jsonl, HammerBlacklist.jsonl, Declarations/, Imports/
      embeddings/<model>-<revision>.npy one normalised float32 row per corpus premise, corpus order
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from leanpremise.json_files import read_validated

MANIFEST = "manifest.json"
MODEL_DIR = "model"
PREMISES_ARCHIVE = "premises.tar.gz"
EMBEDDINGS_DIR = "embeddings"
ONNX_DIR = "onnx"
"""Under MODEL_DIR: the ONNX graphs."""
ONNX_FILE = "model.onnx"
INT8_FILE = "model_qint8.onnx"
FORMAT_VERSION = 1


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


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


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
    """Path of the embeddings file inside the bundle."""
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
    """sha256 of every file in the bundle except the manifest, keyed by relative path."""

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(), indent=1, sort_keys=True).encode()

    @classmethod
    def read(cls, bundle: Path) -> Manifest:
        path = Path(bundle) / MANIFEST
        if not path.is_file():
            raise BundleError(f"{path}: missing; is {bundle} a bundle written by `leanpremise export`?")
        return read_validated(path, MANIFEST_FILE, "bundle manifest", BundleError, name_field=None)


MANIFEST_FILE = TypeAdapter(Manifest)


def file_checksums(root: Path) -> dict[str, str]:
    """sha256 of every regular file under `root` except the manifest."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def verify_checksums(bundle: Path, manifest: Manifest, paths: list[str] | None = None) -> None:
    """Raise BundleError naming the first file whose sha256 differs from the manifest."""
    for rel in paths if paths is not None else sorted(manifest.checksums):
        expected = manifest.checksums.get(rel)
        path = Path(bundle) / rel
        if expected is None:
            continue
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing")
        if sha256_file(path) != expected:
            raise BundleError(f"{path}: sha256 differs from {MANIFEST} (damaged or edited after export)")


def extract_premises_archive(archive: Path, target: Path) -> Path:
    """Unpack `premises.tar.gz` into `target` (must not exist yet), refusing members outside it."""
    target.mkdir(parents=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(target, filter="data")
    return target
