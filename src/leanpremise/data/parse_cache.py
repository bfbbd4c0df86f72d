"""The parse cache: a data dir's parsed tables on disk, in a format that cannot run code.

An entry is one `.npz` file, read with `allow_pickle=False`: the numeric
columns are arrays, and every string (names, texts, metadata) is JSON held in a
uint8 array. Whoever can write the cache dir can therefore make leanpremise
parse again, but never run code. The entry's name is a fingerprint of the
input files' sizes and mtimes, and the entry records its format and that
fingerprint inside, so an entry that is damaged, foreign, or from an older
format is set aside with a warning and the data dir is parsed again. Entries
of the pickle formats (`<key>.pkl`, format 3 and older) are never opened.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import fields
from itertools import chain, pairwise
from pathlib import Path

import numpy as np
import orjson

from leanpremise.data.config import default_cache_dir
from leanpremise.data.errors import unreadable
from leanpremise.data.jsonl import BadLines
from leanpremise.data.layout import check_layout
from leanpremise.data.parse import RawData, RawDecls, RawStates, parse_data_dir

logger = logging.getLogger(__name__)

CACHE_FORMAT = 4
"""4: npz + JSON. Bumping it changes every fingerprint, so older entries are never looked at."""

ARRAY_DTYPES = {
    "decls": {"module_id": np.int32, "line": np.int32, "column": np.int32, "is_prop": np.bool_,
              "is_human": np.bool_, "in_module_system": np.bool_, "is_exposed": np.bool_},
    "states": {"module_id": np.int32, "idx_in_module": np.int32, "line": np.int32, "column": np.int32},
}
"""The numeric columns of each table and their dtypes; every other field of the table is JSON."""


STR, STR_OR_NULL = {str}, {str, type(None)}


class CacheEntryError(Exception):
    """A cache entry that is damaged or not written by this version for this data dir."""


def fingerprint(data_dir: Path, with_states: bool) -> str:
    """A key that changes whenever any input file of `data_dir` is added, removed, resized or touched."""
    h = hashlib.sha256(f"{CACHE_FORMAT}|{data_dir.resolve()}|{with_states}".encode())
    parts = ["Modules.jsonl", "HammerBlacklist.jsonl", "revision", "Imports", "Declarations"]
    if with_states:
        parts.append("TrainingDataWithPremises")
    for part in parts:
        path = data_dir / part
        try:
            if path.is_dir():
                entries = []
                with os.scandir(path) as it:
                    for e in it:
                        try:
                            st = e.stat()
                        except OSError as err:
                            raise unreadable(e.path, err) from err
                        entries.append((e.name, st.st_size, st.st_mtime_ns))
                h.update(repr((part, sorted(entries))).encode())
            elif path.exists():
                st = path.stat()
                h.update(repr((part, st.st_size, st.st_mtime_ns)).encode())
        except OSError as e:
            raise unreadable(path, e) from e
    return h.hexdigest()[:24]


# ---- writing -------------------------------------------------------------------------------------------


def _json_array(obj) -> np.ndarray:
    return np.frombuffer(orjson.dumps(obj), dtype=np.uint8)


def _table_arrays(prefix: str, table: RawDecls | RawStates) -> dict[str, np.ndarray]:
    """A table's numeric columns as `<prefix>.<field>` arrays, its string columns as one JSON array."""
    out, strings = {}, {}
    for f in fields(table):
        value = getattr(table, f.name)
        if f.name in ARRAY_DTYPES[prefix]:
            out[f"{prefix}.{f.name}"] = value
        elif f.name == "recommendation":  # flat: one list of strings loads twice as fast as many small lists
            strings[f.name] = list(chain.from_iterable(value))
            out[f"{prefix}.recommendation_offsets"] = np.cumsum([0, *map(len, value)], dtype=np.int64)
        else:
            strings[f.name] = value
    out[f"{prefix}.strings"] = _json_array(strings)
    return out


def save_entry(path: Path, key: str, raw: RawData) -> None:
    """Write `raw` as one npz file, atomically (a temp file in the same folder, renamed)."""
    meta = {
        "format": CACHE_FORMAT, "key": key, "data_dir": raw.data_dir, "revision": raw.revision,
        "modules": raw.modules, "listed_modules": raw.listed_modules, "blacklist": raw.blacklist,
        "bad_lines": raw.bad_lines.by_file, "bad_line_totals": raw.bad_lines.totals, "has_states": raw.states is not None,
    }
    arrays = {"meta": _json_array(meta), "import_indptr": raw.import_indptr, "import_indices": raw.import_indices,
              **_table_arrays("decls", raw.decls)}
    if raw.states is not None:
        arrays.update(_table_arrays("states", raw.states))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- reading -------------------------------------------------------------------------------------------


def _array(npz, name: str, dtype) -> np.ndarray:
    a = npz[name]
    if a.dtype != dtype or a.ndim != 1:
        raise CacheEntryError(f"{name} is {a.dtype}[{a.ndim}d], expected {np.dtype(dtype)}[1d]")
    return a


def _json(npz, name: str):
    return orjson.loads(memoryview(_array(npz, name, np.uint8)))


def _str_list(value, name: str, nullable: bool = False) -> list:
    """`value` when it is a list of strings (or nulls); `set(map(type, ...))` runs in C and copies nothing."""
    if type(value) is not list or not set(map(type, value)) <= (STR_OR_NULL if nullable else STR):
        raise CacheEntryError(f"{name} is not a list of strings")
    return value


def _unflatten(flat: list[str], offsets: np.ndarray) -> list[tuple[str, ...]]:
    """`flat` cut at `offsets` (n + 1 of them, from 0 to len(flat)) into n tuples."""
    if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(flat) or np.any(np.diff(offsets) < 0):
        raise CacheEntryError("states.recommendation_offsets do not cut the entries")
    cut = offsets.tolist()
    return [tuple(flat[a:b]) for a, b in pairwise(cut)]


def _load_table(npz, prefix: str, n_modules: int) -> dict:
    """A table's columns, each checked for type, and all of one length with module ids in range."""
    cols = {name: _array(npz, f"{prefix}.{name}", dtype) for name, dtype in ARRAY_DTYPES[prefix].items()}
    strings = _json(npz, f"{prefix}.strings")
    if type(strings) is not dict:
        raise CacheEntryError(f"{prefix}.strings is not an object")
    for name, value in strings.items():
        if name == "recommendation":
            cols[name] = _unflatten(_str_list(value, "states.recommendation"),
                                    _array(npz, "states.recommendation_offsets", np.int64))
        else:
            cols[name] = _str_list(value, f"{prefix}.{name}", nullable=name == "doc")
    n = len(cols["module_id"])
    if any(len(c) != n for c in cols.values()):
        raise CacheEntryError(f"{prefix} columns differ in length")
    if n and (cols["module_id"].min() < 0 or cols["module_id"].max() >= n_modules):
        raise CacheEntryError(f"{prefix}.module_id out of range")
    return cols


def load_entry(path: Path, key: str) -> RawData:
    """Read an entry written by :func:`save_entry` for `key`; :class:`CacheEntryError` (or any I/O or
    format error) when it is not one."""
    with np.load(path, allow_pickle=False) as npz:
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise CacheEntryError("not an npz archive")
        meta = _json(npz, "meta")
        if type(meta) is not dict or meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
            raise CacheEntryError("written for another data dir or format")
        modules = _str_list(meta["modules"], "modules")
        indptr = _array(npz, "import_indptr", np.int64)
        indices = _array(npz, "import_indices", np.int32)
        if (len(indptr) != len(modules) + 1 or indptr[0] != 0 or indptr[-1] != len(indices)
                or np.any(np.diff(indptr) < 0) or (len(indices) and not 0 <= indices.min() <= indices.max()
                                                    < len(modules))):
            raise CacheEntryError("import graph is inconsistent")
        decls = RawDecls(**_load_table(npz, "decls", len(modules)))
        states = RawStates(**_load_table(npz, "states", len(modules))) if meta["has_states"] else None
        bad = BadLines({str(p): [(int(n), str(why)) for n, why in rows] for p, rows in meta["bad_lines"].items()},
                       {str(p): int(n) for p, n in meta.get("bad_line_totals", {}).items()})
        return RawData(data_dir=str(meta["data_dir"]), revision=str(meta["revision"]), modules=modules,
                       listed_modules=_str_list(meta["listed_modules"], "listed_modules"),
                       import_indptr=indptr, import_indices=indices,
                       blacklist=_str_list(meta["blacklist"], "blacklist"),
                       decls=decls, states=states, bad_lines=bad)


def _set_aside(path: Path, why: Exception) -> None:
    """Move a bad entry out of the way (kept as `<name>.rejected` for a look), so it is never read again."""
    aside = path.with_name(path.name + ".rejected")
    try:
        os.replace(path, aside)
        where = f"moved to {aside}"
    except OSError as e:
        where = f"could not move it ({e.strerror or e})"
    logger.warning("parse cache entry %s is damaged or not ours (%s: %s); %s; parsing again",
                   path, type(why).__name__, str(why)[:120], where)


def _cached(path: Path, key: str) -> RawData | None:
    """The entry at `path`, or None when there is none or it had to be set aside."""
    if not os.path.lexists(path):
        return None
    try:
        return load_entry(path, key)
    except Exception as e:  # noqa: BLE001 - whatever is wrong with an entry, parsing again fixes it
        _set_aside(path, e)
        return None


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
    path = key = None
    if use_cache:
        key = fingerprint(data_dir, with_states)
        path = (cache_dir or default_cache_dir()) / "parsed" / f"{key}.npz"
        raw = _cached(path, key)
        if raw is not None:
            logger.info("loaded parsed %s from cache %s", data_dir, path)
            raw.bad_lines.warn()
            return raw
    raw = parse_data_dir(data_dir, with_states=with_states, workers=workers)
    raw.bad_lines.warn()
    if path is not None:
        try:
            save_entry(path, key, raw)
        except (OSError, TypeError, orjson.JSONEncodeError) as e:
            logger.warning("could not write cache %s (%s)", path, e)
    return raw
