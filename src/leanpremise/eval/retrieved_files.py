"""Reading and writing retrieved-premises files (`dot_<split>-<model>.json`), shared by every ranker.

Shape (docs/output-formats.md): a list of {"state_name", "decl_name", "module",
"idx_in_module", "premises": [{"corpus_id": name, "score": float}, ...]}, best
first, accessible premises only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from leanpremise.atomic import atomic_write_bytes


def retrieved_file_name(split: str, model_name: str) -> str:
    return f"dot_{split}-{model_name}.json"


def retrieved_entries(dataset, state_ids: np.ndarray, ids: np.ndarray, scores: np.ndarray) -> list[dict]:
    """One entry per state; padding (-1) ids are dropped, so a state sees at most k real premises."""
    corpus, states = dataset.corpus, dataset.states
    names = corpus.names
    out = []
    for row, s in enumerate(np.asarray(state_ids).tolist()):
        keep = ids[row] >= 0
        premises = [{"corpus_id": names[i], "score": float(v)}
                    for i, v in zip(ids[row][keep].tolist(), scores[row][keep].tolist())]
        out.append({
            "state_name": states.name(s, corpus.modules),
            "decl_name": states.decl_name[s],
            "module": corpus.modules[states.module_id[s]],
            "idx_in_module": int(states.idx_in_module[s]),
            "premises": premises,
        })
    return out


def dumps(obj) -> bytes:
    """JSON bytes (orjson when available: a 500 x 1024 file is written in a fraction of a second)."""
    try:
        import orjson

        return orjson.dumps(obj)
    except ImportError:  # pragma: no cover
        return json.dumps(obj).encode()


def write_retrieved(path: Path, entries: list[dict]) -> Path:
    atomic_write_bytes(Path(path), dumps(entries))
    return Path(path)


class RetrievedFileError(ValueError):
    pass


def read_json_list(path: Path, what: str) -> list[dict]:
    """A JSON list of objects, with an error naming the file and the first bad entry."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RetrievedFileError(f"{path}: no such {what} file") from None
    except json.JSONDecodeError as e:
        raise RetrievedFileError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(data, list):
        raise RetrievedFileError(f"{path}: expected a JSON list of {what} entries, got {type(data).__name__}")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "decl_name" not in entry:
            raise RetrievedFileError(f"{path}: entry {i} is not an object with a 'decl_name' field")
    return data


def ranked_names(entry: dict, path: Path, index: int) -> list[str]:
    """Premise names of a retrieved entry, best first (sorted by score; stable for ties), each name once."""
    premises = entry.get("premises")
    if not isinstance(premises, list):
        raise RetrievedFileError(f"{path}: entry {index} ({entry.get('decl_name')}) has no 'premises' list")
    try:
        pairs = [(str(p["corpus_id"]), float(p["score"])) for p in premises]
    except (KeyError, TypeError, ValueError):
        raise RetrievedFileError(f"{path}: entry {index} ({entry.get('decl_name')}): each premise needs "
                                 "'corpus_id' and a numeric 'score'") from None
    order = sorted(range(len(pairs)), key=lambda j: -pairs[j][1])
    return list(dict.fromkeys(pairs[j][0] for j in order))  # a name listed twice counts once
