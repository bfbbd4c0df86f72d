"""Retrieved-premises files (`dot_<split>-<model>.json`): their schema, writer and reader, shared by every
ranker and every reader (eval-files, the tactic benchmark's premises dir, hard negatives).

Shape (docs/output-formats.md): a list of {"state_name", "decl_name", "module",
"idx_in_module", "premises": [{"corpus_id": name, "score": float}, ...]}, best
first, accessible premises only. Extra fields (a premise's `simp_all_hint` or
`rerank_score`) are kept. A file's order is its ranking, which is what Lean and
the tactic benchmark read; the writer refuses an entry whose scores rise in
file order, so anyone who sorts by score gets the same ranking, and the reader
warns about files from elsewhere that break this and ranks them in file order.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from leanpremise.atomic import atomic_write_bytes
from leanpremise.json_files import FileFormatError, describe

logger = logging.getLogger(__name__)


@with_config(ConfigDict(extra="allow"))
class RetrievedPremise(TypedDict):
    """One ranked premise (a TypedDict, not a model: a file holds a great many, and dicts validate faster)."""

    corpus_id: str
    score: float


class RetrievedEntry(BaseModel):
    """One state's ranking. `state_name` and the position fields may be absent in other tools' files."""

    model_config = ConfigDict(extra="allow")

    state_name: str | None = None
    decl_name: str
    module: str | None = None
    idx_in_module: int | None = None
    premises: list[RetrievedPremise]

    def ranked_names(self) -> list[str]:
        """Premise names in file order (the ranking), each name once."""
        return list(dict.fromkeys(p["corpus_id"] for p in self.premises))

    def scores_rise(self) -> bool:
        """Whether a premise scores above the one before it (the file order disagrees with the scores)."""
        scores = [p["score"] for p in self.premises]
        return any(b > a for a, b in itertools.pairwise(scores))


RETRIEVED_FILE = TypeAdapter(list[RetrievedEntry])


class RetrievedFileError(FileFormatError):
    pass


def retrieved_file_name(split: str, model_name: str) -> str:
    return f"dot_{split}-{model_name}.json"


def retrieved_entries(dataset, state_ids: np.ndarray, ids: np.ndarray, scores: np.ndarray) -> list[RetrievedEntry]:
    """One entry per state; padding (-1) ids are dropped, so a state sees at most k real premises."""
    corpus, states = dataset.corpus, dataset.states
    names = corpus.names
    out = []
    for row, s in enumerate(np.asarray(state_ids).tolist()):
        keep = ids[row] >= 0
        premises = [{"corpus_id": names[i], "score": float(v)}
                    for i, v in zip(ids[row][keep].tolist(), scores[row][keep].tolist())]
        out.append(RetrievedEntry.model_construct(
            state_name=states.name(s, corpus.modules),
            decl_name=states.decl_name[s],
            module=corpus.modules[states.module_id[s]],
            idx_in_module=int(states.idx_in_module[s]),
            premises=premises,
        ))
    return out


def write_retrieved(path: Path, entries: list[RetrievedEntry]) -> Path:
    """Write the file atomically; a ranker whose scores disagree with its order is a bug, so it raises."""
    for i, entry in enumerate(entries):
        if entry.scores_rise():
            raise ValueError(f"{path}: entry {i} ({entry.decl_name!r}): scores rise in ranking order; a ranker "
                             "must write scores that are non-increasing in file order")
    atomic_write_bytes(Path(path), RETRIEVED_FILE.dump_json(entries))
    return Path(path)


def read_retrieved(path: Path, what: str = "retrieved-premises") -> list[RetrievedEntry]:
    """Validated entries of a retrieved-premises file; warns once if some rank against their scores.

    Older files wrapped the list as `{"dot": [...]}`; that is accepted too.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RetrievedFileError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise RetrievedFileError(f"{path}: is a directory, expected a {what} file") from None
    try:
        entries = RETRIEVED_FILE.validate_json(data)
    except ValidationError as e:
        if data.lstrip()[:1] == b"{":
            try:
                raw = orjson.loads(data)
            except orjson.JSONDecodeError:
                raw = None
            if isinstance(raw, dict) and isinstance(raw.get("dot"), list):
                return read_retrieved_list(path, orjson.dumps(raw["dot"]), what)
        raise RetrievedFileError(describe(path, e, data, what)) from None
    warn_if_out_of_order(path, entries)
    return entries


def read_retrieved_list(path: Path, data: bytes, what: str) -> list[RetrievedEntry]:
    try:
        entries = RETRIEVED_FILE.validate_json(data)
    except ValidationError as e:
        raise RetrievedFileError(describe(path, e, data, what).replace(": entry", ': "dot" entry', 1)
                                 ) from None
    warn_if_out_of_order(path, entries)
    return entries


def warn_if_out_of_order(path: Path, entries: list[RetrievedEntry]) -> int:
    """Log one warning if some entries' scores rise in file order; returns how many do."""
    bad = sum(entry.scores_rise() for entry in entries)
    if bad:
        logger.warning("%s: %d of %d entries have scores that rise in file order; ranking them in file order "
                       "(what Lean reads), not by score", path, bad, len(entries))
    return bad
