"""`<split>_decls.json`: the evaluation theorems with their ground truth; its schema, writer and reader.

Read by `eval-files`, by the tactic benchmark (`bench tactic`) and by the Lean side's scripts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, TypeAdapter

from leanpremise.atomic import atomic_write_bytes
from leanpremise.json_files import FileFormatError, read_validated


class DeclEntry(BaseModel):
    """One evaluation theorem. The ground-truth fields may be absent in hand-made files for retrieved runs
    of the tactic benchmark; readers that need them say so (None means absent)."""

    model_config = ConfigDict(extra="allow")

    decl_name: str
    module: str
    idx_in_module: int | None = None
    gt_premises: list[str] | None = None
    gt_hints: dict[str, str] | None = None


DECLS_FILE = TypeAdapter(list[DeclEntry])


def decl_entries(dataset, state_ids: np.ndarray) -> list[DeclEntry]:
    """One entry per (root) state: its declaration, in-corpus positives and all simp_all hints."""
    corpus, states = dataset.corpus, dataset.states
    out = []
    for s in np.asarray(state_ids).tolist():
        out.append(DeclEntry.model_construct(
            decl_name=states.decl_name[s],
            module=corpus.modules[states.module_id[s]],
            idx_in_module=int(states.idx_in_module[s]),
            gt_premises=[corpus.names[p] for p in states.positives(s).tolist()],
            gt_hints=states.hints(s),
        ))
    return out


def write_decls(path: Path, entries: list[DeclEntry]) -> Path:
    atomic_write_bytes(Path(path), DECLS_FILE.dump_json(entries))
    return Path(path)


def read_decls(path: Path, error: type[Exception] = FileFormatError) -> list[DeclEntry]:
    """Validated entries of a decls file; `error` (naming file, entry and field) when it is not one."""
    return read_validated(path, DECLS_FILE, "decls", error)


def export_decls(dataset, split: str, out_dir: Path) -> Path:
    """Write `<out_dir>/<split>_decls.json` and return its path."""
    return write_decls(Path(out_dir) / f"{split}_decls.json", decl_entries(dataset, dataset.split_ids(split)))
