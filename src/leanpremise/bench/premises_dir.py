"""The per-theorem premise lists handed to `lake exe tactic_benchmark`, and the directory they live in.

Inputs are the evaluation stage's `<split>_decls.json` (theorems, their module and ground-truth premises)
and, unless the run uses the ground truth, a `dot_<split>-<model>.json` of statically retrieved premises.

Hints follow the original harness: every premise is written with the hint `notInSimpAll` unless
`pred_simp_all_hint` is set, in which case a retrieved premise's `simp_all_hint` field (when the retriever
predicted one; `notInSimpAll` otherwise) or the ground-truth `gt_hints` entry is used. This also holds for
ground-truth runs, which therefore ignore `gt_hints` by default, as the original did. Ground-truth runs use
every ground-truth premise (`k` is not applied; the Lean program receives `--k` and applies its own cut).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

NOT_IN_SIMP_ALL = "notInSimpAll"


class BenchInputError(ValueError):
    """An input file of the benchmark is missing or malformed; the message names the file and entry."""


@dataclass(frozen=True)
class Theorem:
    """One evaluation theorem as listed in the decls file."""

    decl_name: str
    module: str
    gt_premises: tuple[str, ...] = ()
    gt_hints: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Selection:
    """The premises (with simp_all hints) given to the Lean program for one theorem."""

    theorem: Theorem
    premises: list[str]
    hints: list[str]

    def recommendation(self) -> list[str]:
        """The `declHammerRecommendation` strings, `(name, hint)`, as the Lean program parses them."""
        return [f"({p}, {h})" for p, h in zip(self.premises, self.hints, strict=True)]


def _load_json(path: Path, what: str):
    try:
        with open(path, "rb") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise BenchInputError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BenchInputError(f"{path}: not valid JSON ({e})") from None


def _require(entry, key: str, kind: type, path: Path, i: int):
    if not isinstance(entry, dict):
        raise BenchInputError(f"{path}: entry {i} is a {type(entry).__name__}, expected an object")
    if key not in entry:
        raise BenchInputError(f"{path}: entry {i} has no {key!r} field")
    value = entry[key]
    if not isinstance(value, kind):
        raise BenchInputError(f"{path}: entry {i} field {key!r} is a {type(value).__name__}, "
                              f"expected {kind.__name__}")
    return value


def load_decls(path: Path, need_ground_truth: bool = False) -> list[Theorem]:
    """Read `<split>_decls.json`; ground-truth fields are required only for ground-truth runs."""
    path = Path(path)
    raw = _load_json(path, "decls file")
    if not isinstance(raw, list):
        raise BenchInputError(f"{path}: expected a JSON list of theorems, got {type(raw).__name__}")
    theorems, seen = [], set()
    for i, entry in enumerate(raw):
        name = _require(entry, "decl_name", str, path, i)
        module = _require(entry, "module", str, path, i)
        if name in seen:
            raise BenchInputError(f"{path}: entry {i}: {name!r} is listed twice")
        seen.add(name)
        premises: list = entry.get("gt_premises", []) if isinstance(entry, dict) else []
        hints: dict = entry.get("gt_hints", {})
        if need_ground_truth:
            premises = _require(entry, "gt_premises", list, path, i)
            hints = _require(entry, "gt_hints", dict, path, i)
        theorems.append(Theorem(name, module, tuple(premises), dict(hints)))
    return theorems


def load_retrieved(path: Path, wanted: set[str]) -> dict[str, list[dict]]:
    """Map each wanted decl name to its retrieved premise records (the first entry of a decl wins).

    Older files held several states per declaration with the root state first, and some wrapped the list
    as `{"dot": [...]}`; both are accepted.
    """
    path = Path(path)
    raw = _load_json(path, "retrieved-premises file")
    if isinstance(raw, dict) and isinstance(raw.get("dot"), list):
        raw = raw["dot"]
    if not isinstance(raw, list):
        raise BenchInputError(f"{path}: expected a JSON list of retrieval entries, got {type(raw).__name__}")
    found: dict[str, list[dict]] = {}
    extra = 0
    for i, entry in enumerate(raw):
        name = _require(entry, "decl_name", str, path, i)
        premises = _require(entry, "premises", list, path, i)
        if name not in wanted:
            extra += 1
            continue
        if name not in found:
            for j, p in enumerate(premises):
                if not isinstance(p, dict) or not isinstance(p.get("corpus_id"), str):
                    raise BenchInputError(f"{path}: entry {i} ({name}) premise {j} has no string 'corpus_id'")
            found[name] = premises
    if extra:
        log.warning("%s: %d entries are for declarations not in the decls file; ignored", path, extra)
    return found


def top_k(records: list[dict], k: int, rerank: bool, where: str) -> list[dict]:
    """The k best records by `score`, or by `rerank_score` when reranking (stable on ties)."""
    key = "rerank_score" if rerank else "score"
    for j, r in enumerate(records):
        if not isinstance(r.get(key), int | float):
            hint = " (--rerank needs a reranker's output)" if rerank else ""
            raise BenchInputError(f"{where}: premise {j} ({r.get('corpus_id')}) has no numeric {key!r}{hint}")
    return sorted(records, key=lambda r: r[key], reverse=True)[:k]


def select_premises(
    theorems: list[Theorem],
    retrieved_file: Path | None,
    k: int,
    rerank: bool = False,
    pred_simp_all_hint: bool = False,
) -> tuple[list[Selection], list[Theorem]]:
    """The premises to test each theorem with; theorems without retrieved premises are returned apart."""
    selections: list[Selection] = []
    missing: list[Theorem] = []
    if retrieved_file is None:
        for t in theorems:
            hints = [t.gt_hints.get(p, NOT_IN_SIMP_ALL) if pred_simp_all_hint else NOT_IN_SIMP_ALL
                     for p in t.gt_premises]
            selections.append(Selection(t, list(t.gt_premises), hints))
        return selections, missing
    found = load_retrieved(retrieved_file, {t.decl_name for t in theorems})
    for t in theorems:
        if t.decl_name not in found:
            log.warning("%s: no retrieved premises for %s; it is not tested", retrieved_file, t.decl_name)
            missing.append(t)
            continue
        best = top_k(found[t.decl_name], k, rerank, f"{retrieved_file} ({t.decl_name})")
        hints = [str(r.get("simp_all_hint", NOT_IN_SIMP_ALL)) if pred_simp_all_hint else NOT_IN_SIMP_ALL
                 for r in best]
        selections.append(Selection(t, [r["corpus_id"] for r in best], hints))
    return selections, missing


def write_premises_dir(directory: Path, selections: list[Selection]) -> None:
    """Write one `<module>.jsonl` per module, a line per theorem, in the decls file's order."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    by_module: dict[str, list[str]] = defaultdict(list)
    for s in selections:
        line = json.dumps({"declName": s.theorem.decl_name, "declHammerRecommendation": s.recommendation()},
                          ensure_ascii=False)
        by_module[s.theorem.module].append(line)
    for module, lines in by_module.items():
        (directory / f"{module}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
