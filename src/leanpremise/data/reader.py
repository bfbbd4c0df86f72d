"""Parse an ntp-toolkit data dir into compact column tables (:class:`RawData`).

Parsing is the slow part of loading Mathlib (gigabytes of `srcUpToTactic`), so
it runs in worker processes, keeps only the fields the rest of the system uses
(the state's (line, column) is derived and the source text dropped line by
line), and its result is cached on disk keyed by the files' sizes and mtimes.
Filtering and splitting happen later, on these tables, and are cheap.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from leanpremise.atomic import atomic_write_bytes
from leanpremise.data.errors import DataLayoutError
from leanpremise.data.jsonl import BadLines, iter_jsonl

logger = logging.getLogger(__name__)

CACHE_FORMAT = 3
PARALLEL_MIN_BYTES = 64 << 20

# Which ntp-toolkit step writes each part of the layout, for error messages.
PRODUCER = {
    "Modules.jsonl": "ntp-toolkit's module listing (written with every extraction)",
    "Imports": "ntp-toolkit's `imports` extraction (extract_repos.py --imports)",
    "Declarations": "ntp-toolkit's `declarations` extraction (extract_repos.py --declarations)",
    "TrainingDataWithPremises": "ntp-toolkit's `training_data_with_premises` extraction (hammer branch)",
    "HammerBlacklist.jsonl": "ntp-toolkit's hammer branch (extract_repos.py writes it with the premises)",
    "revision": "ntp-toolkit's extraction (it records the extracted revision)",
}

DECL_REQUIRED = ("name", "kind", "args", "type", "line", "column")
STATE_REQUIRED = ("declName", "state", "srcUpToTactic", "declHammerRecommendation")
IMPORT_NAME = re.compile(rb'"name"\s*:\s*"([^"\\]*)"')


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


def _need(path: Path, part: str) -> Path:
    if not path.exists():
        raise DataLayoutError(f"{path}: missing; it is written by {PRODUCER[part]}")
    return path


def check_layout(data_dir: Path, need_states: bool) -> None:
    """Stop early, naming the path, when `data_dir` is not an ntp-toolkit hammer extraction."""
    if not data_dir.exists():
        raise DataLayoutError(f"{data_dir}: data dir does not exist")
    if not data_dir.is_dir():
        raise DataLayoutError(f"{data_dir}: not a directory (expected an ntp-toolkit extraction)")
    parts = ["Modules.jsonl", "Imports", "Declarations", "HammerBlacklist.jsonl", "revision"]
    if need_states:
        parts.append("TrainingDataWithPremises")
    for part in parts:
        path = _need(data_dir / part, part)
        if part in ("Imports", "Declarations", "TrainingDataWithPremises") and not path.is_dir():
            raise DataLayoutError(f"{path}: expected a directory of <Module>.jsonl files ({PRODUCER[part]})")


def _jsonl_stems(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".jsonl")] for p in os.scandir(folder) if p.name.endswith(".jsonl"))


def _read_modules(data_dir: Path, bad: BadLines) -> list[str]:
    return [str(obj["name"]) for _, obj in iter_jsonl(data_dir / "Modules.jsonl", bad, ("name",))]


def _read_blacklist(data_dir: Path) -> list[str]:
    path = data_dir / "HammerBlacklist.jsonl"
    try:
        obj = orjson.loads(path.read_bytes())
        names = obj["hammerBlacklist"]
        if not isinstance(names, list):
            raise TypeError("hammerBlacklist is not a list")
        return [str(n) for n in names]
    except (orjson.JSONDecodeError, KeyError, TypeError) as e:
        raise DataLayoutError(
            f"{path}: expected one JSON object {{\"hammerBlacklist\": [names]}} ({e})"
        ) from e


# ---- per-file parsers (run in worker processes) ---------------------------------------------


_KNOWN_MODULES: dict[bytes, int] = {}


def _set_known_modules(known: dict[bytes, int]) -> None:
    """Worker initializer: the module ids every import name is mapped to."""
    global _KNOWN_MODULES
    _KNOWN_MODULES = known


def _import_names(path: str, bad: BadLines) -> list[bytes]:
    """Imported module names of one Imports file; a regex over the bytes, with a per-line fallback."""
    data = Path(path).read_bytes()
    names = IMPORT_NAME.findall(data)
    n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    if len(names) == n_lines and data.count(b"}") == n_lines:
        try:
            for n in names:
                n.decode()
            return names
        except UnicodeDecodeError:
            pass
    return [str(obj["name"]).encode() for _, obj in iter_jsonl(Path(path), bad, ("name",))]


def _parse_imports(paths: list[str]) -> tuple[list[np.ndarray], list[str], BadLines]:
    """Module ids imported by each file of a chunk of Imports files.

    Names outside the known modules (Lean core, say) get negative ids -1-k
    into the chunk's own table of unknown names, so only a few hundred strings
    cross the process boundary instead of millions.
    """
    bad = BadLines()
    unknown: dict[bytes, int] = {}
    out = []
    known = _KNOWN_MODULES
    for path in paths:
        ids = []
        for n in _import_names(path, bad):
            i = known.get(n)
            if i is None:
                i = unknown.get(n)
                if i is None:
                    i = unknown[n] = -1 - len(unknown)
            ids.append(i)
        out.append(np.asarray(ids, dtype=np.int32))
    return out, [n.decode() for n in unknown], bad


def _parse_decls(path: str) -> tuple[list[tuple], BadLines]:
    bad = BadLines()
    rows = []
    for i, d in iter_jsonl(Path(path), bad, DECL_REQUIRED):
        args = d["args"]
        if not isinstance(args, list) or not isinstance(d["line"], int) or not isinstance(d["column"], int):
            bad.add(path, i + 1, "field 'args', 'line' or 'column' has the wrong type")
            continue
        rows.append(
            (
                str(d["name"]),
                str(d["kind"]),
                " ".join(map(str, args)),
                str(d["type"]),
                d.get("doc"),
                d["line"],
                d["column"],
                bool(d.get("isProp", False)),
                bool(d.get("isHumanTheorem", False)),
                bool(d.get("inModuleSystem", False)),
                bool(d.get("isExposed", False)),
            )
        )
    return rows, bad


def _parse_states(path: str) -> tuple[list[tuple], BadLines]:
    """States of one TrainingDataWithPremises file; srcUpToTactic is reduced to (line, column) at once."""
    bad = BadLines()
    rows = []
    for i, d in iter_jsonl(Path(path), bad, STATE_REQUIRED):
        src = d["srcUpToTactic"]
        recs = d["declHammerRecommendation"]
        if not isinstance(src, str) or not isinstance(recs, list):
            bad.add(path, i + 1, "field 'srcUpToTactic' or 'declHammerRecommendation' has the wrong type")
            continue
        line = src.count("\n")
        column = len(src) - src.rfind("\n")
        rows.append((i, str(d["declName"] or ""), str(d["state"]), line, column, tuple(map(str, recs))))
    return rows, bad


def _run_all(fn, items: list, workers: int, known: dict[bytes, int] | None = None) -> list:
    """`fn` over `items`, in worker processes when `workers` > 1, results in order."""
    if workers <= 1 or len(items) < 2:
        _set_known_modules(known or {})
        return [fn(p) for p in items]
    chunksize = max(1, len(items) // (workers * 16))
    with ProcessPoolExecutor(max_workers=workers, initializer=_set_known_modules, initargs=(known or {},)) as pool:
        return list(pool.map(fn, items, chunksize=chunksize))


def _folder_bytes(folder: Path) -> int:
    return sum(e.stat().st_size for e in os.scandir(folder)) if folder.is_dir() else 0


def _pick_workers(data_dir: Path, requested: int | None) -> int:
    if requested is not None:
        return max(1, requested)
    size = _folder_bytes(data_dir / "TrainingDataWithPremises") + _folder_bytes(data_dir / "Imports")
    if size < PARALLEL_MIN_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


# ---- the parse ---------------------------------------------------------------------------------


def parse_data_dir(data_dir: Path, with_states: bool = True, workers: int | None = None) -> RawData:
    """Parse `data_dir` (no cache); see :func:`read_data_dir` for the cached entry point."""
    data_dir = Path(data_dir)
    check_layout(data_dir, need_states=with_states)
    bad = BadLines()
    revision = (data_dir / "revision").read_text(errors="replace").strip()
    blacklist = _read_blacklist(data_dir)
    listed = _read_modules(data_dir, bad)

    decl_stems = _jsonl_stems(data_dir / "Declarations")
    import_stems = _jsonl_stems(data_dir / "Imports")
    state_stems = _jsonl_stems(data_dir / "TrainingDataWithPremises") if with_states else []
    n_workers = _pick_workers(data_dir, workers)

    # Module ids: first the modules with files or listed, sorted; imported-only ones (Lean core) are added after
    # parsing, then everything is renumbered into one sorted order.
    base = sorted(set(listed) | set(decl_stems) | set(import_stems) | set(state_stems))
    known = {m.encode(): i for i, m in enumerate(base)}
    import_paths = [str(data_dir / "Imports" / f"{m}.jsonl") for m in import_stems]
    chunks = [import_paths[i : i + 64] for i in range(0, len(import_paths), 64)]
    names_all = list(base)
    name_id = {m: i for i, m in enumerate(base)}
    per_file: list[np.ndarray] = []
    for ids_list, unknown, b in _run_all(_parse_imports, chunks, n_workers, known):
        bad.merge(b)
        local = np.empty(len(unknown), dtype=np.int32)
        for k, name in enumerate(unknown):
            if name not in name_id:
                name_id[name] = len(names_all)
                names_all.append(name)
            local[k] = name_id[name]
        for ids in ids_list:
            neg = ids < 0
            if neg.any():
                ids = ids.copy()
                ids[neg] = local[-1 - ids[neg]]
            per_file.append(ids)
    modules = sorted(names_all)
    renumber = np.empty(len(names_all), dtype=np.int32)
    renumber[[name_id[m] for m in modules]] = np.arange(len(modules), dtype=np.int32)
    module_index = {m: i for i, m in enumerate(modules)}

    per_module: list[np.ndarray] = [np.empty(0, dtype=np.int32)] * len(modules)
    for stem, ids in zip(import_stems, per_file):
        mid = module_index[stem]
        ids = np.unique(renumber[ids])
        per_module[mid] = ids[ids != mid]
    indptr = np.zeros(len(modules) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(ids) for ids in per_module])
    indices = np.concatenate(per_module) if per_module else np.empty(0, dtype=np.int32)
    del per_file

    decl_results = _run_all(_parse_decls, [str(data_dir / "Declarations" / f"{m}.jsonl") for m in decl_stems], n_workers)
    decls = _decl_columns(decl_stems, decl_results, module_index, bad)
    del decl_results

    states = None
    if with_states:
        paths = [str(data_dir / "TrainingDataWithPremises" / f"{m}.jsonl") for m in state_stems]
        state_results = _run_all(_parse_states, paths, n_workers)
        states = _state_columns(state_stems, state_results, module_index, bad)

    return RawData(
        data_dir=str(data_dir.resolve()),
        revision=revision,
        modules=modules,
        listed_modules=listed,
        import_indptr=indptr,
        import_indices=indices.astype(np.int32),
        blacklist=blacklist,
        decls=decls,
        states=states,
        bad_lines=bad,
    )


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


# ---- the cache ---------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """`$LEANPREMISE_CACHE_DIR`, else `$XDG_CACHE_HOME/leanpremise`, else `~/.cache/leanpremise`."""
    env = os.environ.get("LEANPREMISE_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "leanpremise"


def fingerprint(data_dir: Path, with_states: bool) -> str:
    """A key that changes whenever any input file of `data_dir` is added, removed, resized or touched."""
    h = hashlib.sha256(f"{CACHE_FORMAT}|{data_dir.resolve()}|{with_states}".encode())
    parts = ["Modules.jsonl", "HammerBlacklist.jsonl", "revision", "Imports", "Declarations"]
    if with_states:
        parts.append("TrainingDataWithPremises")
    for part in parts:
        path = data_dir / part
        if path.is_dir():
            entries = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(path))
            h.update(repr((part, entries)).encode())
        elif path.exists():
            st = path.stat()
            h.update(repr((part, st.st_size, st.st_mtime_ns)).encode())
    return h.hexdigest()[:24]


def read_data_dir(
    data_dir: Path,
    with_states: bool = True,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    workers: int | None = None,
) -> RawData:
    """Parse `data_dir`, or load its parse from the cache when no input file changed."""
    data_dir = Path(data_dir)
    check_layout(data_dir, need_states=with_states)
    cache_path = None
    if use_cache:
        cache_path = (cache_dir or default_cache_dir()) / "parsed" / f"{fingerprint(data_dir, with_states)}.pkl"
        if cache_path.exists():
            try:
                with open(cache_path, "rb") as fh:
                    raw = pickle.load(fh)
                logger.info("loaded parsed %s from cache %s", data_dir, cache_path)
                raw.bad_lines.warn()
                return raw
            except Exception as e:  # noqa: BLE001 - a damaged cache entry, whatever the error, is rebuilt
                logger.warning("ignoring unreadable cache %s (%s)", cache_path, e)
    raw = parse_data_dir(data_dir, with_states=with_states, workers=workers)
    raw.bad_lines.warn()
    if cache_path is not None:
        try:
            atomic_write_bytes(cache_path, pickle.dumps(raw, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError as e:
            logger.warning("could not write cache %s (%s)", cache_path, e)
    return raw
