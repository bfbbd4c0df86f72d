"""Tolerant JSONL reading: a malformed line is skipped and reported, never fatal.

Real ntp-toolkit extractions hold a handful of truncated lines or bad UTF-8.
The original reader dropped the rest of a file at the first bad line; here each
bad line is skipped on its own, and the caller gets its line number so that one
warning per file can name them.

Junk is bounded: only the first MAX_LINES_NAMED bad lines of a file are kept (the
rest are counted), and a file that is mostly bad lines (at least JUNK_MIN_BAD of
them, and more than half its lines so far) stops with a DataLayoutError naming
the file and its first bad line: it is not an extraction, and keeping every bad
line of millions took hundreds of megabytes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from leanpremise.data.errors import DataLayoutError, unreadable
from leanpremise.data.regular_file import open_regular

logger = logging.getLogger(__name__)

MAX_LINES_NAMED = 5
"""Bad lines of a file kept (and named in its warning); the others are only counted."""
JUNK_MIN_BAD = 1000
"""Bad lines a file may have before it can count as junk (then: more than half of its lines bad)."""


@dataclass
class BadLines:
    """Malformed lines found while reading, grouped by file: the first MAX_LINES_NAMED of each, and how
    many in all (`totals`; a file absent there has exactly the lines listed)."""

    by_file: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)

    def add(self, path: Path | str, line_no: int, why: str) -> None:
        key = str(path)
        self.totals[key] = self.total(key) + 1
        rows = self.by_file.setdefault(key, [])
        if len(rows) < MAX_LINES_NAMED:
            rows.append((line_no, why))

    def total(self, path: Path | str) -> int:
        key = str(path)
        return self.totals.get(key, len(self.by_file.get(key, ())))

    def merge(self, other: BadLines) -> None:
        for path, rows in other.by_file.items():
            total = self.total(path) + other.total(path)
            self.by_file[path] = (self.by_file.get(path, []) + rows)[:MAX_LINES_NAMED]
            self.totals[path] = total

    @property
    def count(self) -> int:
        return sum(self.total(path) for path in self.by_file)

    def warn(self) -> None:
        """One warning per file that names its bad lines (1-based), then a total."""
        for path, rows in sorted(self.by_file.items()):
            total = self.total(path)
            named = ", ".join(f"line {n} ({why})" for n, why in rows[:MAX_LINES_NAMED])
            more = f" and {total - len(rows[:MAX_LINES_NAMED])} more" if total > MAX_LINES_NAMED else ""
            logger.warning("%s: skipped %d malformed JSONL line(s): %s%s", path, total, named, more)
        if self.by_file:
            logger.warning("skipped %d malformed line(s) in %d file(s) in total", self.count, len(self.by_file))


def iter_jsonl(path: Path, bad: BadLines, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict]]:
    """Yield (0-based line index, object) for each well-formed line of a JSONL file.

    A line that is not JSON, not an object, or lacks a `required` key is
    recorded in `bad` and skipped. Line indices count every line, good or bad,
    so they stay the positions the rest of the ecosystem uses. A file the OS
    will not read, one that is not a regular file, or one that is mostly bad
    lines (the caller's own `bad.add`s count too) is a :class:`DataLayoutError`
    naming it.
    """
    with open_regular(path) as fh:
        try:
            for i, raw in enumerate(fh):
                if not raw.strip():
                    continue
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError as e:
                    bad.add(path, i + 1, f"invalid JSON: {str(e)[:60]}")
                    _stop_if_junk(path, bad, i + 1)
                    continue
                if not isinstance(obj, dict):
                    bad.add(path, i + 1, "not a JSON object")
                    _stop_if_junk(path, bad, i + 1)
                    continue
                missing = [k for k in required if k not in obj]
                if missing:
                    bad.add(path, i + 1, f"missing field {missing[0]!r}")
                    _stop_if_junk(path, bad, i + 1)
                    continue
                yield i, obj
                _stop_if_junk(path, bad, i + 1)
        except OSError as e:
            raise unreadable(path, e) from e


def _stop_if_junk(path: Path, bad: BadLines, lines: int) -> None:
    """Raise when `path` is mostly bad lines after `lines` lines (see the module's docstring)."""
    total = bad.total(path)
    if total >= JUNK_MIN_BAD and 2 * total > lines:
        first_no, why = bad.by_file[str(path)][0]
        raise DataLayoutError(f"{path}: {total} of its first {lines} lines are malformed (the first, line "
                              f"{first_no}: {why}); not ntp-toolkit JSONL, stopped reading")
