"""Reading the JSON files that tools exchange, against the pydantic type of their shape.

Each file shape has one pydantic model, next to the stage that writes it (see docs/decisions.md,
"File schemas"); this module turns a file into that model and a validation failure into one line that
names the file, the entry (its position and declaration name) and the field, e.g.
`dot_test-bm25.json: entry 17 ("Nat.foo"): field "premises[3].score": Input should be a valid number`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import TypeAdapter, ValidationError

T = TypeVar("T")


class FileFormatError(ValueError):
    """A file that is missing, not JSON, or not of its documented shape; the message names file and entry."""


def _json_type(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", int: "number", float: "number",
            bool: "boolean", type(None): "null"}.get(type(value), type(value).__name__)


def _field_path(loc: tuple) -> str:
    """`("premises", 3, "score")` -> `premises[3].score`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _entry_label(raw: Any, key: int | str, name_field: str) -> str:
    """`entry 17 ("Nat.foo")` for a list, `entry "Nat.foo"` for an object keyed by name."""
    if isinstance(key, str):
        return f"entry {key!r}"
    entry = raw[key] if isinstance(raw, list) and 0 <= key < len(raw) else None
    name = entry.get(name_field) if isinstance(entry, dict) else None
    return f'entry {key} ("{name}")' if isinstance(name, str) else f"entry {key}"


def describe(path: Path, error: ValidationError, data: bytes, what: str, name_field: str | None = "decl_name") -> str:
    """One line for the first problem of a failed validation (and how many more there are).

    `name_field` names an entry by that field; None: the file is one object, not a collection of entries.
    """
    first = error.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return f"{path}: not valid JSON ({first['msg'].removeprefix('Invalid JSON: ')})"
    raw = orjson.loads(data)  # only on the error path: the entry's name for the message
    loc = tuple(first["loc"])
    more = f" (and {error.error_count() - 1} more problems)" if error.error_count() > 1 else ""
    msg = "missing" if first["type"] == "missing" else first["msg"]
    if not loc:
        shape = {"list_type": "list", "dict_type": "object", "model_type": "object"}.get(first["type"])
        if shape is None:
            return f"{path}: {msg}{more}"
        return f"{path}: expected a JSON {shape} (a {what} file), got {_json_type(raw)}"
    if name_field is None:
        return f'{path}: field "{_field_path(loc)}": {msg}{more}'
    where = _entry_label(raw, loc[0], name_field)
    if len(loc) == 1:
        return f"{path}: {where}: {msg}{more}"
    return f'{path}: {where}: field "{_field_path(loc[1:])}": {msg}{more}'


def read_validated(path: Path, adapter: TypeAdapter[T], what: str, error: type[Exception] = FileFormatError,
                   name_field: str | None = "decl_name") -> T:
    """The file at `path` as `adapter`'s type; `error` (naming the file and entry) when it is not."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, expected a {what} file") from None
    return validate_bytes(path, data, adapter, what, error, name_field)


def validate_bytes(path: Path, data: bytes, adapter: TypeAdapter[T], what: str,
                   error: type[Exception] = FileFormatError, name_field: str | None = "decl_name") -> T:
    """`data` (the contents of `path`) as `adapter`'s type; `error` naming the file and entry when it is not."""
    try:
        return adapter.validate_json(data)
    except ValidationError as e:
        raise error(describe(path, e, data, what, name_field)) from None
