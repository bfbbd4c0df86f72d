"""Parsers of one ntp-toolkit file (or one share of Imports files) each, run in worker processes.

Every field the data layer uses is checked against its type here, while a bad
line can still be skipped on its own: strings must be strings, integers
integers (a JSON `true` is not a line number) inside int32, lists lists of
strings. Nothing is coerced (`null` never becomes the name "None"). The checks
in the loops are one chain of cheap `type(x) is T` tests; only a line that fails
them is examined again, by :func:`first_problem`, to name the field in the
warning.

The parsers take everything they need as arguments and keep no state between
calls, so the same functions serve the serial path and the process pool.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from leanpremise.data.jsonl import BadLines, iter_jsonl
from leanpremise.data.regular_file import read_regular_bytes

INT32_MAX = 2**31 - 1
"""Line and column numbers are stored as int32; larger (or negative) ones are bad lines."""

DECL_REQUIRED = ("name", "kind", "args", "type", "line", "column")
STATE_REQUIRED = ("declName", "state", "srcUpToTactic", "declHammerRecommendation")
IMPORT_NAME = re.compile(rb'"name"\s*:\s*"([^"\\]*)"')


def all_str(items: list) -> bool:
    """Whether every item is a str; `str.join` checks this in C, much faster than a Python loop."""
    try:
        "".join(items)
    except TypeError:
        return False
    return True


def _is_position(v) -> bool:
    return type(v) is int and 0 <= v <= INT32_MAX


FieldCheck = tuple[str, Callable[[object], bool], str, bool]
"""(field, test, what is expected, whether the field may be absent)."""

DECL_FIELDS: tuple[FieldCheck, ...] = (
    ("name", lambda v: type(v) is str, "a string", False),
    ("kind", lambda v: type(v) is str, "a string", False),
    ("args", lambda v: type(v) is list and all_str(v), "a list of strings", False),
    ("type", lambda v: type(v) is str, "a string", False),
    ("doc", lambda v: v is None or type(v) is str, "a string or null", True),
    ("line", _is_position, f"an integer in [0, {INT32_MAX}]", False),
    ("column", _is_position, f"an integer in [0, {INT32_MAX}]", False),
    ("isProp", lambda v: type(v) is bool, "true or false", True),
    ("isHumanTheorem", lambda v: type(v) is bool, "true or false", True),
    ("inModuleSystem", lambda v: type(v) is bool, "true or false", True),
    ("isExposed", lambda v: type(v) is bool, "true or false", True),
)
STATE_FIELDS: tuple[FieldCheck, ...] = (
    ("declName", lambda v: type(v) is str, "a string", False),
    ("state", lambda v: type(v) is str, "a string", False),
    ("srcUpToTactic", lambda v: type(v) is str, "a string", False),
    ("declHammerRecommendation", lambda v: type(v) is list and all_str(v), "a list of strings", False),
)
NAME_FIELD: tuple[FieldCheck, ...] = (("name", lambda v: type(v) is str, "a string", False),)


def _shown(v) -> str:
    """A JSON value as a warning shows it: small scalars as written, containers and strings by kind."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "a list" if all_str(v) or not v else "a list holding a non-string"
    return "an object" if isinstance(v, dict) else "a string"


def first_problem(obj: dict, fields: tuple[FieldCheck, ...]) -> str:
    """Why a line failed the fast checks: the first field that is wrong, named, with what it holds."""
    for key, ok, expected, optional in fields:
        if key not in obj:
            if optional:
                continue
            return f"missing field {key!r}"
        if not ok(obj[key]):
            return f"field {key!r} is {_shown(obj[key])}, expected {expected}"
    return "a field has the wrong type"


def parse_decls(path: str) -> tuple[list[tuple], BadLines]:
    """Rows (name, kind, args joined, type, doc, line, column, 4 flags) of one Declarations file."""
    bad = BadLines()
    rows = []
    for i, d in iter_jsonl(Path(path), bad, DECL_REQUIRED):
        name, kind, args, type_, line, column = d["name"], d["kind"], d["args"], d["type"], d["line"], d["column"]
        doc = d.get("doc")
        prop, human = d.get("isProp", False), d.get("isHumanTheorem", False)
        in_ms, exposed = d.get("inModuleSystem", False), d.get("isExposed", False)
        joined = None
        if type(args) is list:
            try:
                joined = " ".join(args)
            except TypeError:
                pass
        if (
            joined is None or type(name) is not str or type(kind) is not str or type(type_) is not str
            or not (doc is None or type(doc) is str)
            or type(line) is not int or type(column) is not int or not 0 <= line <= INT32_MAX
            or not 0 <= column <= INT32_MAX
            or type(prop) is not bool or type(human) is not bool or type(in_ms) is not bool
            or type(exposed) is not bool
        ):
            bad.add(path, i + 1, first_problem(d, DECL_FIELDS))
            continue
        rows.append((name, kind, joined, type_, doc, line, column, prop, human, in_ms, exposed))
    return rows, bad


def parse_states(path: str) -> tuple[list[tuple], BadLines]:
    """Rows (line index, declName, state, line, column, recommendations) of one TrainingDataWithPremises file.

    `srcUpToTactic` is reduced to the state's (line, column) at once, so the file texts never pile up.
    """
    bad = BadLines()
    rows = []
    for i, d in iter_jsonl(Path(path), bad, STATE_REQUIRED):
        src, recs, decl_name, state = d["srcUpToTactic"], d["declHammerRecommendation"], d["declName"], d["state"]
        if (
            type(src) is not str or type(decl_name) is not str or type(state) is not str
            or type(recs) is not list or not all_str(recs)
        ):
            bad.add(path, i + 1, first_problem(d, STATE_FIELDS))
            continue
        line = src.count("\n")
        column = len(src) - src.rfind("\n")
        if line > INT32_MAX or column > INT32_MAX:
            bad.add(path, i + 1, f"field 'srcUpToTactic' puts the state beyond line or column {INT32_MAX}")
            continue
        rows.append((i, decl_name, state, line, column, tuple(recs)))
    return rows, bad


def read_module_names(path: Path, bad: BadLines) -> list[str]:
    """Module names of a `{"name": ...}` JSONL file (Modules.jsonl, or an Imports file the fast path gave up on)."""
    names = []
    for i, obj in iter_jsonl(path, bad, ("name",)):
        if type(obj["name"]) is str:
            names.append(obj["name"])
        else:
            bad.add(path, i + 1, first_problem(obj, NAME_FIELD))
    return names


def _import_names(path: str, bad: BadLines) -> list[bytes]:
    """Imported module names of one Imports file; a regex over the bytes, with a per-line fallback.

    The regex only matches string names, so a line whose `name` is anything else makes the counts
    disagree and the file goes through the checked per-line reader.
    """
    data = read_regular_bytes(path)
    names = IMPORT_NAME.findall(data)
    n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    if len(names) == n_lines and data.count(b"}") == n_lines:
        try:
            for n in names:
                n.decode()
            return names
        except UnicodeDecodeError:
            pass
    return [n.encode() for n in read_module_names(Path(path), bad)]


def parse_imports(known: dict[bytes, int], paths: list[str]) -> tuple[list[np.ndarray], list[str], BadLines]:
    """Module ids imported by each of `paths` (one share of the Imports files).

    `known` maps module names to ids; it comes with the task, and each worker
    gets one share, so the table crosses the process boundary once per worker.
    Names outside it (Lean core, say) get negative ids -1-k into the share's own
    table of unknown names, so only a few hundred strings come back instead of
    millions.
    """
    bad = BadLines()
    unknown: dict[bytes, int] = {}
    out = []
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
