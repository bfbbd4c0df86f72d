"""A trained reranker: its spec checked against the code's features, its model loaded, candidates scored.

Loading refuses, in one line naming the file, a spec of another format, a feature this code computes at
another version or in another order, a ranker list the features cannot read, and a model file that does not
parse, does not take the spec's number of features, or whose trees could hang or crash the library
(rank/rerank/validate.py). The model is built from the bytes that were checked (read once; never by path).
A server gets such a bundle refused at startup or reload.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from leanpremise.rank.rerank.booster import Booster, booster_class
from leanpremise.rank.rerank.features import FAMILIES, FEATURE_SET, KNOWN, RANKERS, feature_list
from leanpremise.rank.rerank.spec import (
    FORMAT_VERSION,
    MODEL_FILES,
    RerankerFileError,
    RerankerSpec,
    read_spec,
)
from leanpremise.rank.rerank.validate import HARD_LIMITS, ModelLimits


def spec_problem(spec: RerankerSpec) -> str | None:
    """Why this code cannot apply `spec` (one phrase naming the field), or None."""
    if spec.format_version != FORMAT_VERSION:
        return f'field "format_version": {spec.format_version}, this version reads {FORMAT_VERSION}'
    if spec.feature_set != FEATURE_SET:
        return f'field "feature_set": {spec.feature_set}, this version computes feature set {FEATURE_SET}'
    kinds = spec.kinds()
    if len(set(kinds)) != len(kinds) or not kinds and not spec.structure:
        return f'field "rankers": expected distinct rankers of {", ".join(RANKERS)}, got {kinds}'
    if unknown := [f for f in spec.families if f not in FAMILIES]:
        return f'field "families": unknown feature family {unknown[0]!r} (this version knows {sorted(FAMILIES)})'
    for entry in spec.features:
        if entry.name not in KNOWN:
            return f'field "features": unknown feature {entry.name!r}'
        if KNOWN[entry.name] != entry.version:
            return (f'field "features": {entry.name!r} version {entry.version}, this version computes version '
                    f"{KNOWN[entry.name]}")
    expected = [f.name for f in feature_list(kinds, spec.structure, spec.families)]
    if [e.name for e in spec.features] != expected:
        return f'field "features": expected the columns {expected} for rankers {kinds}'
    if spec.model_file != MODEL_FILES[spec.library]:
        return f'field "model_file": {spec.model_file!r}, a {spec.library} reranker keeps {MODEL_FILES[spec.library]!r}'
    return None


class Reranker:
    """Scores a request's candidates with the trained model; `rank` orders them."""

    def __init__(self, spec: RerankerSpec, booster: Booster, folder: Path | None = None):
        self.spec, self.booster, self.folder = spec, booster, folder
        self.kinds = spec.kinds()
        self.n_features = len(spec.features)

    @classmethod
    def load(cls, folder: Path, limits: ModelLimits = HARD_LIMITS, sha256: str | None = None) -> Reranker:
        """The reranker in `folder`; `sha256`: the model file's expected hash (a bundle's manifest lists
        it), checked on the very bytes the model is built from."""
        folder = Path(folder)
        spec = read_spec(folder)
        if why := spec_problem(spec):
            raise RerankerFileError(f"{folder / 'reranker.json'}: {why}")
        path = folder / spec.model_file
        booster = booster_class(spec.library).load(checked_model(spec, path, limits, sha256), path)
        n = booster.n_features()
        if n != len(spec.features):
            raise RerankerFileError(f"{path}: a model of {n} features, {folder / 'reranker.json'} lists "
                                    f"{len(spec.features)}")
        return cls(spec, booster, folder)

    def score(self, x: np.ndarray) -> np.ndarray:
        """Model scores (float64, higher is better) of feature rows `x`, on one thread (a server runs many)."""
        if len(x) == 0:
            return np.zeros(0)
        return self.booster.predict(np.ascontiguousarray(x, dtype=np.float32))

    def rank(self, cand: np.ndarray, x: np.ndarray, k: int, tail: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the k best candidates, best first, equal scores by lower id; when fewer than k,
        the ids of `tail` (a ranker's deeper list) not among them follow, each scored below the last."""
        return order_by_score(np.asarray(cand, dtype=np.int64), self.score(x), k, tail)


def order_by_score(cand: np.ndarray, scores: np.ndarray, k: int, tail: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The reranked list of one request: candidates by score (ties by lower id), then `tail`'s others."""
    order = np.lexsort((cand, -scores))[:k]
    ids, out = cand[order], scores[order]
    if len(ids) < k and tail is not None:
        tail = np.asarray(tail, dtype=np.int64)
        extra = tail[(tail >= 0) & ~np.isin(tail, cand)][: k - len(ids)]
        floor = (out[-1] if len(out) else 0.0) - 1.0
        ids = np.concatenate([ids, extra])
        out = np.concatenate([out, floor - np.arange(len(extra), dtype=np.float64)])
    return ids, out


def checked_model(spec: RerankerSpec, path: Path, limits: ModelLimits = HARD_LIMITS,
                  sha256: str | None = None) -> str | bytearray:
    """The model file `path` read once, its hash checked when given, its trees checked against `limits`
    and the spec's feature count: what its library may be given (RerankerFileError, one line, otherwise)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise RerankerFileError(f"{path}: missing (the reranker's {spec.library} model)") from None
    except OSError as e:
        raise RerankerFileError(f"{path}: cannot read ({e.strerror or e})") from e
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise RerankerFileError(f"{path}: sha256 differs from the bundle's manifest (edited after export)")
    return booster_class(spec.library).check(data, path, len(spec.features), limits)

