"""Parse an ntp-toolkit data dir into compact column tables (:class:`RawData`).

Parsing is the slow part of loading Mathlib (gigabytes of `srcUpToTactic`), so
the per-file parsers (:mod:`leanpremise.data.file_parsers`) run in worker
processes and keep only the fields the rest of the system uses; this module
shares the files out and assembles their rows into columns. Filtering and
splitting happen later, on these tables, and are cheap; keeping the tables on
disk is :mod:`leanpremise.data.parse_cache`'s job.
"""

from __future__ import annotations

import heapq
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

import numpy as np
import orjson

from leanpremise.data.errors import DataLayoutError
from leanpremise.data.file_parsers import parse_decls, parse_imports, parse_states, read_module_names
from leanpremise.data.jsonl import BadLines
from leanpremise.data.layout import check_layout, file_sizes, folder_bytes, jsonl_stems
from leanpremise.data.regular_file import read_regular_bytes

PARALLEL_MIN_BYTES = 64 << 20
"""Below this much Imports + TrainingDataWithPremises, starting worker processes costs more than it saves."""


@dataclass
class RawDecls:
    """Declarations of all modules, as columns in read order (module by module, file order)."""

    module_id: np.ndarray
    name: list[str]
    kind: list[str]
    args: list[str]
    """Arguments already joined with spaces, as the premise text uses them."""
    type: list[str]
    doc: list[str | None]
    line: np.ndarray
    column: np.ndarray
    is_prop: np.ndarray
    is_human: np.ndarray
    in_module_system: np.ndarray
    is_exposed: np.ndarray


@dataclass
class RawStates:
    """Proof states of all modules, as columns; `idx_in_module` is the line index in the module's file."""

    module_id: np.ndarray
    idx_in_module: np.ndarray
    line: np.ndarray
    column: np.ndarray
    decl_name: list[str]
    state: list[str]
    recommendation: list[tuple[str, ...]]
    """Raw `declHammerRecommendation` entries, e.g. "(sq, notInSimpAll)"."""


@dataclass
class RawData:
    """Everything parsed from one data dir, before filtering and splitting."""

    data_dir: str
    revision: str
    modules: list[str]
    """All module names, sorted: those listed, those with files, and those imported."""
    listed_modules: list[str]
    """Modules.jsonl, in its order."""
    import_indptr: np.ndarray
    import_indices: np.ndarray
    """CSR over module ids: the modules each module imports (transitively), itself excluded."""
    blacklist: list[str]
    decls: RawDecls
    states: RawStates | None
    bad_lines: BadLines = field(default_factory=BadLines)


# ---- the small files -------------------------------------------------------------------------------


def read_revision(data_dir: Path) -> str:
    return read_regular_bytes(data_dir / "revision").decode(errors="replace").strip()


def read_blacklist(data_dir: Path) -> list[str]:
    """HammerBlacklist.jsonl's names; one JSON object, so anything wrong in it is an error, not a skipped line."""
    path = data_dir / "HammerBlacklist.jsonl"
    try:
        obj = orjson.loads(read_regular_bytes(path))
    except orjson.JSONDecodeError as e:
        raise DataLayoutError(f"{path}: expected one JSON object {{\"hammerBlacklist\": [names]}} ({e})") from e
    names = obj.get("hammerBlacklist") if isinstance(obj, dict) else None
    if type(names) is not list or not all(type(n) is str for n in names):
        raise DataLayoutError(f"{path}: expected one JSON object {{\"hammerBlacklist\": [names]}} "
                              "whose names are strings")
    return names


# ---- processes ---------------------------------------------------------------------------------------


def pick_workers(data_dir: Path, requested: int | None) -> int:
    """Parser processes: as requested, else one for small data dirs and up to 8 for large ones."""
    if requested is not None:
        return max(1, requested)
    size = folder_bytes(data_dir / "TrainingDataWithPremises") + folder_bytes(data_dir / "Imports")
    if size < PARALLEL_MIN_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


def _map_files(fn, paths: list[str], workers: int) -> list:
    """`fn` over `paths`, in worker processes when `workers` > 1, results in order."""
    if workers <= 1 or len(paths) < 2:
        return [fn(p) for p in paths]
    chunksize = max(1, len(paths) // (workers * 16))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        try:
            return list(pool.map(fn, paths, chunksize=chunksize))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # one bad file: don't parse the rest first
            raise


def _shares_by_size(paths: list[str], workers: int) -> list[list[int]]:
    """Indices of `paths` dealt into at most `workers` shares of about equal bytes (largest file first)."""
    if workers <= 1 or len(paths) < 2:
        return [list(range(len(paths)))]
    sizes = file_sizes(paths)
    loads = [(0, k) for k in range(workers)]
    shares: list[list[int]] = [[] for _ in range(workers)]
    for i in sorted(range(len(paths)), key=lambda i: -sizes[i]):
        load, k = heapq.heappop(loads)
        shares[k].append(i)
        heapq.heappush(loads, (load + sizes[i], k))
    return [sorted(s) for s in shares if s]


# ---- the import graph --------------------------------------------------------------------------------


def _imported_ids(paths: list[str], names: list[str], workers: int, bad: BadLines) -> list[np.ndarray]:
    """Ids into `names` of the modules each Imports file lists; imported-only names are appended to `names`.

    The name table goes to each worker once, with its share of the files (see
    :func:`~leanpremise.data.file_parsers.parse_imports`).
    """
    known = {m.encode(): i for i, m in enumerate(names)}
    shares = _shares_by_size(paths, workers)
    share_paths = [[paths[i] for i in share] for share in shares]
    if len(shares) == 1:
        results = [parse_imports(known, share_paths[0])]
    else:
        with ProcessPoolExecutor(max_workers=len(shares)) as pool:
            results = list(pool.map(parse_imports, repeat(known), share_paths))
    name_id = {m: i for i, m in enumerate(names)}
    per_file: list[np.ndarray] = [np.empty(0, dtype=np.int32)] * len(paths)
    for share, (ids_list, unknown, b) in zip(shares, results):
        bad.merge(b)
        local = np.empty(len(unknown), dtype=np.int32)
        for k, name in enumerate(unknown):
            if name not in name_id:
                name_id[name] = len(names)
                names.append(name)
            local[k] = name_id[name]
        for i, ids in zip(share, ids_list):
            neg = ids < 0
            if neg.any():
                ids = ids.copy()
                ids[neg] = local[-1 - ids[neg]]
            per_file[i] = ids
    return per_file


def _import_graph(data_dir: Path, base: list[str], import_stems: list[str], workers: int,
                  bad: BadLines) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(all module names sorted, CSR indptr, indices) of the transitive imports of each module.

    Imported-only modules (Lean core) are met while parsing; once all are known,
    every id is renumbered into the one sorted order.
    """
    names = list(base)
    paths = [str(data_dir / "Imports" / f"{m}.jsonl") for m in import_stems]
    per_file = _imported_ids(paths, names, workers, bad)
    modules = sorted(names)
    renumber = np.empty(len(names), dtype=np.int32)
    position = {m: i for i, m in enumerate(names)}
    renumber[[position[m] for m in modules]] = np.arange(len(modules), dtype=np.int32)
    module_index = {m: i for i, m in enumerate(modules)}

    per_module: list[np.ndarray] = [np.empty(0, dtype=np.int32)] * len(modules)
    for stem, ids in zip(import_stems, per_file):
        mid = module_index[stem]
        ids = np.unique(renumber[ids])
        per_module[mid] = ids[ids != mid]
    indptr = np.zeros(len(modules) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(ids) for ids in per_module])
    indices = np.concatenate(per_module) if per_module else np.empty(0, dtype=np.int32)
    return modules, indptr, indices.astype(np.int32)


# ---- rows to columns ---------------------------------------------------------------------------------


def _columns(stems, results, module_index, bad: BadLines, width: int) -> tuple[np.ndarray, list[tuple]]:
    """Concatenate per-file row lists into (module id per row, columns), collecting bad lines."""
    module_id, rows = [], []
    for stem, (file_rows, b) in zip(stems, results):
        bad.merge(b)
        module_id.extend([module_index[stem]] * len(file_rows))
        rows.extend(file_rows)
    return np.asarray(module_id, dtype=np.int32), (list(zip(*rows)) if rows else [()] * width)


def _decl_columns(stems, results, module_index, bad: BadLines) -> RawDecls:
    module_id, cols = _columns(stems, results, module_index, bad, 11)
    return RawDecls(
        module_id=module_id,
        name=list(cols[0]),
        kind=list(cols[1]),
        args=list(cols[2]),
        type=list(cols[3]),
        doc=list(cols[4]),
        line=np.asarray(cols[5], dtype=np.int32),
        column=np.asarray(cols[6], dtype=np.int32),
        is_prop=np.asarray(cols[7], dtype=bool),
        is_human=np.asarray(cols[8], dtype=bool),
        in_module_system=np.asarray(cols[9], dtype=bool),
        is_exposed=np.asarray(cols[10], dtype=bool),
    )


def _state_columns(stems, results, module_index, bad: BadLines) -> RawStates:
    module_id, cols = _columns(stems, results, module_index, bad, 6)
    return RawStates(
        module_id=module_id,
        idx_in_module=np.asarray(cols[0], dtype=np.int32),
        decl_name=list(cols[1]),
        state=list(cols[2]),
        line=np.asarray(cols[3], dtype=np.int32),
        column=np.asarray(cols[4], dtype=np.int32),
        recommendation=list(cols[5]),
    )


# ---- the parse -----------------------------------------------------------------------------------------


def parse_data_dir(data_dir: Path, with_states: bool = True, workers: int | None = None) -> RawData:
    """Parse `data_dir` (no cache); :func:`leanpremise.data.parse_cache.read_data_dir` is the cached entry point."""
    data_dir = Path(data_dir)
    check_layout(data_dir, need_states=with_states)
    bad = BadLines()
    revision = read_revision(data_dir)
    blacklist = read_blacklist(data_dir)
    listed = read_module_names(data_dir / "Modules.jsonl", bad)
    decl_stems = jsonl_stems(data_dir / "Declarations")
    import_stems = jsonl_stems(data_dir / "Imports")
    state_stems = jsonl_stems(data_dir / "TrainingDataWithPremises") if with_states else []
    n_workers = pick_workers(data_dir, workers)

    base = sorted(set(listed) | set(decl_stems) | set(import_stems) | set(state_stems))
    modules, indptr, indices = _import_graph(data_dir, base, import_stems, n_workers, bad)
    module_index = {m: i for i, m in enumerate(modules)}

    decl_paths = [str(data_dir / "Declarations" / f"{m}.jsonl") for m in decl_stems]
    decls = _decl_columns(decl_stems, _map_files(parse_decls, decl_paths, n_workers), module_index, bad)
    states = None
    if with_states:
        state_paths = [str(data_dir / "TrainingDataWithPremises" / f"{m}.jsonl") for m in state_stems]
        states = _state_columns(state_stems, _map_files(parse_states, state_paths, n_workers), module_index, bad)

    return RawData(
        data_dir=str(data_dir.resolve()),
        revision=revision,
        modules=modules,
        listed_modules=listed,
        import_indptr=indptr,
        import_indices=indices,
        blacklist=blacklist,
        decls=decls,
        states=states,
        bad_lines=bad,
    )
