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

from pydantic import BaseModel, ConfigDict, TypeAdapter

from leanpremise.eval.decls import read_decls
from leanpremise.eval.retrieved_files import RetrievedFileError, RetrievedPremise, read_retrieved
from leanpremise.json_files import FileFormatError

log = logging.getLogger(__name__)

NOT_IN_SIMP_ALL = "notInSimpAll"


class BenchInputError(FileFormatError):
    """An input file of the benchmark is missing or malformed; the message names the file and entry."""


class PremisesLine(BaseModel):
    """One line of `<module>.jsonl` in the premises dir: a theorem and the premises it is tested with."""

    model_config = ConfigDict(extra="allow")

    declName: str
    declHammerRecommendation: list[str]


PREMISES_LINE = TypeAdapter(PremisesLine)
"""For readers of a premises-dir line (`PREMISES_LINE.validate_json(line)`)."""


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


def module_file_problem(module: str) -> str | None:
    """Why `<module>.jsonl` would not be a file directly inside the premises dir, or None.

    The name comes from a data file and is joined to a folder the benchmark writes into, so `../x`, an
    absolute path or a separator would write elsewhere; Lean module names (`Mathlib.Logic.Basic`) have none."""
    if not module or module.strip() != module:
        return "empty or padded with spaces"
    if "/" in module or "\\" in module or "\0" in module:
        return "holds a path separator (a Lean module name has dots, not slashes)"
    if module.startswith("."):
        return "starts with a dot (would leave or hide in the premises dir)"
    return None


def load_decls(path: Path, need_ground_truth: bool = False) -> list[Theorem]:
    """Read `<split>_decls.json`; ground-truth fields are required only for ground-truth runs."""
    path = Path(path)
    theorems, seen = [], set()
    for i, entry in enumerate(read_decls(path, BenchInputError)):
        name = entry.decl_name
        if name in seen:
            raise BenchInputError(f'{path}: entry {i} ("{name}"): listed twice')
        if why := module_file_problem(entry.module):
            raise BenchInputError(f'{path}: entry {i} ("{name}"): field "module": {entry.module!r} {why}')
        seen.add(name)
        if need_ground_truth:
            for key in ("gt_premises", "gt_hints"):
                if getattr(entry, key) is None:
                    raise BenchInputError(f'{path}: entry {i} ("{name}"): field "{key}": missing '
                                          "(a ground-truth run needs it)")
        theorems.append(Theorem(name, entry.module, tuple(entry.gt_premises or ()), dict(entry.gt_hints or {})))
    return theorems


def load_retrieved(path: Path, wanted: set[str]) -> dict[str, list[RetrievedPremise]]:
    """Map each wanted decl name to its retrieved premise records (the first entry of a decl wins).

    Older files held several states per declaration with the root state first, and some wrapped the list
    as `{"dot": [...]}`; both are accepted.
    """
    path = Path(path)
    try:
        entries = read_retrieved(path)
    except RetrievedFileError as e:
        raise BenchInputError(str(e)) from None
    found: dict[str, list[RetrievedPremise]] = {}
    extra = 0
    for entry in entries:
        if entry.decl_name not in wanted:
            extra += 1
        elif entry.decl_name not in found:
            found[entry.decl_name] = entry.premises
    if extra:
        log.warning("%s: %d entries are for declarations not in the decls file; ignored", path, extra)
    return found


def top_k(records: list[RetrievedPremise], k: int, rerank: bool, where: str) -> list[RetrievedPremise]:
    """The first k records in file order (the retriever's ranking), or the k best by `rerank_score` when
    reranking (stable on ties)."""
    if not rerank:
        return records[:k]
    for j, r in enumerate(records):
        if not isinstance(r.get("rerank_score"), int | float):
            raise BenchInputError(f"{where}: premise {j} ({r.get('corpus_id')}) has no numeric 'rerank_score' "
                                  "(--rerank needs a reranker's output)")
    return sorted(records, key=lambda r: r["rerank_score"], reverse=True)[:k]


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
    """Write one `<module>.jsonl` per module, a line per theorem, in the decls file's order; every file
    directly inside `directory` (a module name that would leave it is refused)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    by_module: dict[str, list[str]] = defaultdict(list)
    for s in selections:
        if why := module_file_problem(s.theorem.module):
            raise BenchInputError(f"{s.theorem.decl_name}: module {s.theorem.module!r} {why}")
        line = PremisesLine(declName=s.theorem.decl_name, declHammerRecommendation=s.recommendation())
        by_module[s.theorem.module].append(json.dumps(line.model_dump(), ensure_ascii=False))
    for module, lines in by_module.items():
        (directory / f"{module}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
