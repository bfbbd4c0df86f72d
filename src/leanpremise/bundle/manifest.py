"""The bundle's manifest: what a server checks before trusting a bundle, written by `export` last."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from leanpremise.bundle.layout import FORMAT_VERSION, MANIFEST, BundleError, confined
from leanpremise.data.config import CorpusOptions, DataConfig, SplitMode
from leanpremise.json_files import read_validated
from leanpremise.model.static import ModelType

logger = logging.getLogger(__name__)


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


class SplitRecord(BaseModel):
    """The split a bundle's usage counts were counted on (its train states): DataConfig's split fields of
    the `export` that wrote them."""

    model_config = ConfigDict(extra="ignore")

    split_seed: int
    n_valid: int
    n_test: int
    split_mode: SplitMode

    @classmethod
    def of(cls, data: DataConfig) -> SplitRecord:
        return cls(**{name: getattr(data, name) for name in cls.model_fields})


_CORPUS = CorpusOptions()


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
    filter: bool = _CORPUS.filter
    mathlib_only: bool = _CORPUS.mathlib_only
    nameless: bool = _CORPUS.nameless
    """The corpus options (data/config.py `CorpusOptions`, flat keys): they decide the corpus a server
    rebuilds from the premises archive."""
    model_type: ModelType = "transformer"
    """`leanpremise.model.static.model_type` of `model/`, as export found it: "static" (a StaticEmbedding
    model, embedded in numpy, no ONNX) or "transformer" (what a manifest written before it was recorded
    holds)."""
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
    """`leanpremise.model.identity.model_identity` of `model/` (empty in bundles written before it was
    recorded): lets a server or `export --reuse` compare models without hashing weights."""
    text_hashes: str | None = None
    """Path of the per-row sha256 of the embedded texts (prompt included), a listed file; None in older
    bundles."""
    reuse: ReuseRecord | None = None
    """Set by `export --reuse`: the sources and how many rows were reused and embedded."""
    hybrid: str | None = None
    """Path of the fusion file (`hybrid/fusion.json`, a listed file) when `export --hybrid` put the
    lexical rankers into the bundle; None: dense only."""
    rerank: str | None = None
    """Path of the reranker's spec (`rerank/reranker.json`, a listed file) when `export --rerank` put a
    reranker into the bundle; None: no re-ranking."""
    split: SplitRecord | None = None
    usage_states: dict[str, str | int] | None = None
    """Which proof states the usage counts (the usage ranker, usage by module) count: `states` is `train`
    (the data dir's train split) or `all` (every proof state of the data dir: `export --usage_states all`, a
    project's own bundle), `count` how many; None when the bundle has no usage counts."""
    """The split of the train states that counted the usage ranker's `hybrid/usage.npy`; None when the
    bundle has no usage counts (nothing else in a bundle depends on a split) or was written before."""

    @field_validator("embeddings", "onnx", "onnx_int8", "text_hashes", "hybrid", "rerank")
    @classmethod
    def _check_path(cls, rel: str | None) -> str | None:
        """A named part stays inside the bundle."""
        return confined(rel)

    @field_validator("checksums", "sizes")
    @classmethod
    def _check_keys(cls, files: dict):
        """Every listed path stays inside the bundle."""
        for rel in files:
            confined(rel)
        return files

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        """Sizes, when given, cover exactly the listed files, and the parts named above are listed."""
        if self.sizes and self.sizes.keys() != self.checksums.keys():
            odd = min(self.sizes.keys() ^ self.checksums.keys())
            raise ValueError(f"`sizes` and `checksums` list different files ({odd!r} is in one only)")
        if self.checksums:
            for name in ("embeddings", "onnx", "onnx_int8", "text_hashes", "hybrid", "rerank"):
                rel = getattr(self, name)
                if rel is not None and rel not in self.checksums:
                    raise ValueError(f"`{name}` {rel!r} is not among the files listed in `checksums`")
        return self

    def corpus_options(self) -> CorpusOptions:
        """The options the corpus of this bundle was built with."""
        return CorpusOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(CorpusOptions)})

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(), indent=1, sort_keys=True).encode()

    @classmethod
    def read(cls, bundle: Path) -> Manifest:
        path = Path(bundle) / MANIFEST
        if not path.is_file():
            raise BundleError(f"{path}: missing; is {bundle} a bundle written by `leanpremise export`?")
        return read_validated(path, MANIFEST_FILE, "bundle manifest", BundleError, name_field=None)


MANIFEST_FILE = TypeAdapter(Manifest)


def bundle_model_identity(manifest, model_dir: Path) -> str:
    """The model identity `manifest` records, or (a bundle written before it was recorded, or a data repo
    of the original upload script) the one computed from `model_dir`, which hashes the model's weights."""
    recorded = getattr(manifest, "model_identity", None)
    if recorded:
        return recorded
    from leanpremise.model.identity import model_identity

    logger.info("%s: no model identity in the manifest (written by an older export); hashing the model",
                model_dir)
    return model_identity(model_dir)
