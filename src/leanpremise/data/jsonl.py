"""Tolerant JSONL reading: a malformed line is skipped and reported, never fatal.

Real ntp-toolkit extractions hold a handful of truncated lines or bad UTF-8.
The original reader dropped the rest of a file at the first bad line; here each
bad line is skipped on its own, and the caller gets its line number so that one
warning per file can name them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from leanpremise.data.errors import unreadable

logger = logging.getLogger(__name__)

MAX_LINES_NAMED = 5


@dataclass
class BadLines:
    """Malformed lines found while reading, grouped by file."""

    by_file: dict[str, list[tuple[int, str]]] = field(default_factory=dict)

    def add(self, path: Path | str, line_no: int, why: str) -> None:
        self.by_file.setdefault(str(path), []).append((line_no, why))

    def merge(self, other: BadLines) -> None:
        for path, rows in other.by_file.items():
            self.by_file.setdefault(path, []).extend(rows)

    @property
    def count(self) -> int:
        return sum(len(rows) for rows in self.by_file.values())

    def warn(self) -> None:
        """One warning per file that names its bad lines (1-based), then a total."""
        for path, rows in sorted(self.by_file.items()):
            named = ", ".join(f"line {n} ({why})" for n, why in rows[:MAX_LINES_NAMED])
            more = f" and {len(rows) - MAX_LINES_NAMED} more" if len(rows) > MAX_LINES_NAMED else ""
            logger.warning("%s: skipped %d malformed JSONL line(s): %s%s", path, len(rows), named, more)
        if self.by_file:
            logger.warning("skipped %d malformed line(s) in %d file(s) in total", self.count, len(self.by_file))


def iter_jsonl(path: Path, bad: BadLines, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict]]:
    """Yield (0-based line index, object) for each well-formed line of a JSONL file.

    A line that is not JSON, not an object, or lacks a `required` key is
    recorded in `bad` and skipped. Line indices count every line, good or bad,
    so they stay the positions the rest of the ecosystem uses. A file the OS
    will not read is a :class:`DataLayoutError` naming it.
    """
    try:
        with open(path, "rb") as fh:
            for i, raw in enumerate(fh):
                if not raw.strip():
                    continue
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError as e:
                    bad.add(path, i + 1, f"invalid JSON: {str(e)[:60]}")
                    continue
                if not isinstance(obj, dict):
                    bad.add(path, i + 1, "not a JSON object")
                    continue
                missing = [k for k in required if k not in obj]
                if missing:
                    bad.add(path, i + 1, f"missing field {missing[0]!r}")
                    continue
                yield i, obj
    except OSError as e:
        raise unreadable(path, e) from e
