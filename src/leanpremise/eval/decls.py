"""`<split>_decls.json`: the evaluation theorems with their ground truth, read by the tactic benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from leanpremise.atomic import atomic_write_bytes
from leanpremise.eval.retrieved_files import dumps


def decl_entries(dataset, state_ids: np.ndarray) -> list[dict]:
    """One entry per (root) state: its declaration, in-corpus positives and all simp_all hints."""
    corpus, states = dataset.corpus, dataset.states
    out = []
    for s in np.asarray(state_ids).tolist():
        out.append({
            "decl_name": states.decl_name[s],
            "module": corpus.modules[states.module_id[s]],
            "idx_in_module": int(states.idx_in_module[s]),
            "gt_premises": [corpus.names[p] for p in states.positives(s).tolist()],
            "gt_hints": states.hints(s),
        })
    return out


def export_decls(dataset, split: str, out_dir: Path) -> Path:
    """Write `<out_dir>/<split>_decls.json` and return its path."""
    path = Path(out_dir) / f"{split}_decls.json"
    atomic_write_bytes(path, dumps(decl_entries(dataset, dataset.split_ids(split))))
    return path
