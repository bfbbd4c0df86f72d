"""`leanpremise fuse`: fuse existing retrieved-premises files, tuned on one split's states, applied to all.

Files are named `dot_<split>-<ranker>.json` (as `retrieve` and `baseline`
write them) and grouped by split; every split must hold the same rankers.
Tuning reads only the tuning split's files and the decls file's ground
truth (the other splits' files are read after the fusion is fixed), and
writes `fusion.json`; each split's fused file is `dot_<split>-<A>+<B>.json`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leanpremise.eval.retrieved_files import (
    RetrievedEntry,
    RetrievedFileError,
    read_retrieved,
    retrieved_file_name,
    write_retrieved,
)
from leanpremise.eval.tuning import tune
from leanpremise.rank.fusion import FusionSpec, apply, read_fusion, write_fusion
from leanpremise.rank.runs import Run, padded_topk

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^dot_(?P<split>[^-]+)-(?P<name>.+)\.json$")


def split_and_ranker(path: Path) -> tuple[str, str]:
    """`dot_valid-bm25.json` -> ("valid", "bm25"); other names are an error (the split must be known)."""
    m = NAME_RE.match(Path(path).name)
    if not m:
        raise RetrievedFileError(f"{path}: expected a file named dot_<split>-<ranker>.json (as retrieve and "
                                 "baseline write them), to know its split and ranker")
    return m["split"], m["name"]


def group_by_split(paths: list[Path]) -> dict[str, dict[str, Path]]:
    """{split: {ranker: path}}, every split with the same rankers in the same order."""
    groups: dict[str, dict[str, Path]] = {}
    for p in paths:
        split, name = split_and_ranker(p)
        if name in groups.setdefault(split, {}):
            raise RetrievedFileError(f"{p}: ranker {name!r} given twice for split {split!r}")
        groups[split][name] = Path(p)
    names = None
    for split, files in groups.items():
        if names is None:
            names = list(files)
        elif sorted(files) != sorted(names):
            raise RetrievedFileError(f"split {split!r} has rankers {sorted(files)}, another split has "
                                     f"{sorted(names)}: give the same rankers for every split")
    return {s: {n: files[n] for n in names} for s, files in groups.items()}


def state_key(entry: RetrievedEntry) -> str:
    return entry.state_name or entry.decl_name


@dataclass
class SplitRuns:
    """One split's files as aligned integer rankings over a shared premise vocabulary."""

    entries: list[RetrievedEntry]  # the first file's, for the fused file's state fields
    runs: list[Run]
    names: list[str]  # id -> premise name
    vocab: dict[str, int]
    k: int


def load_split(files: dict[str, Path]) -> SplitRuns:
    """Read and align one split's files (all must rank the same states)."""
    vocab: dict[str, int] = {}
    first: list[RetrievedEntry] | None = None
    keys: list[str] = []
    runs, k = [], 0
    for ranker, path in files.items():
        entries = read_retrieved(path)
        by_key = {state_key(e): e for e in entries}
        if first is None:
            first, keys = entries, [state_key(e) for e in entries]
        if set(by_key) != set(keys):
            extra = sorted(set(by_key) ^ set(keys))[:3]
            raise RetrievedFileError(f"{path}: ranks other states than {next(iter(files.values()))} "
                                     f"(e.g. {extra}); fuse files of the same states")
        depth = max((len(e.premises) for e in entries), default=0)
        k = max(k, depth)
        ids, scores = padded_topk((len(keys), depth), score_dtype=np.float64)
        for row, key in enumerate(keys):
            prem = by_key[key].premises
            ids[row, : len(prem)] = [vocab.setdefault(p["corpus_id"], len(vocab)) for p in prem]
            scores[row, : len(prem)] = [p["score"] for p in prem]
        runs.append(Run(ranker, ids, scores))
    return SplitRuns(first or [], runs, list(vocab), vocab, k)


def positives_for(split: SplitRuns, gt: dict[str, list[str]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """(rows of the states in `gt`, their positives in the split's id space; unseen names get fresh ids)."""
    rows, positives = [], []
    fresh = len(split.vocab)
    for row, e in enumerate(split.entries):
        if e.decl_name not in gt:
            continue
        ids = []
        for name in gt[e.decl_name]:
            if name in split.vocab:
                ids.append(split.vocab[name])
            else:
                ids.append(fresh)
                fresh += 1
        rows.append(row)
        positives.append(np.asarray(ids, dtype=np.int64))
    return np.asarray(rows, dtype=np.int64), positives


def tune_on_files(files: dict[str, Path], decls: Path, split: str, seed: int = 0) -> FusionSpec:
    """Tune on the states of `files` (one split) that `decls` names; records what it was tuned on."""
    from leanpremise.eval.eval_files import load_decls
    from leanpremise.rank.fusion import TunedOn

    gt = load_decls(decls)
    data = load_split(files)
    rows, positives = positives_for(data, gt)
    if not len(rows):
        raise RetrievedFileError(f"{decls}: names none of the states in {sorted(map(str, files.values()))}")
    runs = [Run(r.name, r.ids[rows], r.scores[rows]) for r in data.runs]
    spec = tune(runs, positives, seed=seed)
    spec.k = data.k
    spec.tuned_on = TunedOn(split=split, states=len(rows), files=[str(p) for p in files.values()],
                            decls=str(decls), seed=seed)
    return spec


def fused_label(spec: FusionSpec) -> str:
    return "+".join(spec.rankers)


def write_fused_split(data: SplitRuns, spec: FusionSpec, split: str, out_dir: Path, k: int | None = None) -> Path:
    """Apply `spec` to one split and write `dot_<split>-<A>+<B>.json` (scores non-increasing in order)."""
    k = k or spec.k or data.k
    ids, scores = apply(data.runs, spec, k)
    entries = []
    for e, row_ids, row_scores in zip(data.entries, ids, scores):
        keep = row_ids >= 0
        entries.append(RetrievedEntry.model_construct(
            state_name=e.state_name, decl_name=e.decl_name, module=e.module, idx_in_module=e.idx_in_module,
            premises=[{"corpus_id": data.names[i], "score": float(s)}
                      for i, s in zip(row_ids[keep].tolist(), row_scores[keep].tolist())]))
    return write_retrieved(Path(out_dir) / retrieved_file_name(split, fused_label(spec)), entries)


def fuse_files(paths: list[Path], out_dir: Path, decls: Path | None = None, fusion: Path | None = None,
               tune_split: str = "valid", seed: int = 0) -> tuple[FusionSpec, list[Path]]:
    """Tune (on `tune_split`'s files and `decls`) or load a fusion, then write every split's fused file."""
    groups = group_by_split(paths)
    if fusion is not None:
        spec = read_fusion(fusion)
        for split, files in groups.items():
            missing = [n for n in spec.rankers if n not in files]
            if missing:
                raise RetrievedFileError(f"{fusion}: needs ranker(s) {missing}; split {split!r} has {list(files)}")
            groups[split] = {n: files[n] for n in spec.rankers}
    else:
        if decls is None:
            raise ValueError("fuse needs --decls (to tune) or --fusion (a tuned fusion.json)")
        if tune_split not in groups:
            raise RetrievedFileError(f"no dot_{tune_split}-<ranker>.json among the files (splits given: "
                                     f"{sorted(groups)}); tuning uses the {tune_split!r} split")
        spec = tune_on_files(groups[tune_split], decls, tune_split, seed)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_fusion(Path(out_dir) / "fusion.json", spec)
    written = [write_fused_split(load_split(files), spec, split, out_dir) for split, files in groups.items()]
    return spec, written
