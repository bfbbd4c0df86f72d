"""`reranker.json`: what a reranker directory holds and how it was made, one schema for its writer and readers.

A reranker directory is `reranker.json` plus the model in its library's own text format (LightGBM's model
text, XGBoost's JSON; never pickle). The spec names the rankers whose lists and scores the features read
(with their settings), how deep each list is read, how many local premises join the candidates, and each
feature with its version: a reader whose code computes a feature differently (another version) refuses the
reranker rather than feed it other numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from leanpremise.json_files import FileFormatError, read_validated
from leanpremise.rank.kinds import RankerKind
from leanpremise.rank.runs import MAX_LIST_DEPTH

SPEC_FILE = "reranker.json"
FORMAT_VERSION = 1
MODEL_FILES = {"lightgbm": "model.txt", "xgboost": "model.json"}


class RerankerFileError(FileFormatError):
    """A reranker directory that is missing a file, or whose spec or model cannot be used (names the file)."""


class FeatureEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: int


class RankerEntry(BaseModel):
    """One ranker the features read: its kind (features.RANKERS) and the settings it ran with."""

    model_config = ConfigDict(extra="allow")

    kind: RankerKind
    name: str
    """The ranker's name where it was made (`mepo`, the dense model's display name)."""
    params: dict[str, float | str] = Field(default_factory=dict)
    model_identity: str | None = None
    """For the dense ranker: the content identity of the model whose embeddings the features read."""


class RerankerSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    format_version: int = FORMAT_VERSION
    library: Literal["lightgbm", "xgboost"]
    model_file: str
    feature_set: int
    features: list[FeatureEntry]
    rankers: list[RankerEntry]
    structure: bool = True
    families: list[str] = Field(default_factory=list)
    """Optional feature families the columns end with (features.FAMILIES); none before they existed."""
    depth: int = Field(ge=1, le=MAX_LIST_DEPTH)
    """Each ranker's list is read this deep for candidates and rank features."""
    local_bound: int = Field(ge=0, le=MAX_LIST_DEPTH)
    """Nearest local premises added to the candidates."""
    categorical: list[str] = Field(default_factory=list)
    trained_on: dict[str, object] = Field(default_factory=dict)
    stopped_on: dict[str, object] = Field(default_factory=dict)
    valid_scores: dict[str, float] = Field(default_factory=dict)
    importance: dict[str, float] = Field(default_factory=dict)
    """Gain of each feature in the final model."""
    date: str | None = None

    def kinds(self) -> list[str]:
        return [r.kind for r in self.rankers]

    def ranker(self, kind: str) -> RankerEntry | None:
        return next((r for r in self.rankers if r.kind == kind), None)


SPEC_ADAPTER = TypeAdapter(RerankerSpec)


def read_spec(folder: Path) -> RerankerSpec:
    path = Path(folder) / SPEC_FILE
    return read_validated(path, SPEC_ADAPTER, "reranker", RerankerFileError, name_field=None)


def write_spec(folder: Path, spec: RerankerSpec) -> Path:
    from leanpremise.atomic import atomic_write_bytes

    path = Path(folder) / SPEC_FILE
    atomic_write_bytes(path, SPEC_ADAPTER.dump_json(spec, indent=1))
    return path
