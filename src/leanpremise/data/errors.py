"""Errors raised for input that is not an ntp-toolkit extraction."""

from __future__ import annotations

from pathlib import Path


class DataLayoutError(Exception):
    """A data dir, or a required file in it, is missing or unusable; the message names the path."""


def unreadable(path: Path | str, err: OSError) -> DataLayoutError:
    """The one-line error for an input the OS refuses to read (a symlink loop, a directory, no permission).

    Every read of a data dir goes through this, so the CLI prints one line naming the path, never a
    traceback.
    """
    return DataLayoutError(f"{path}: cannot read ({err.strerror or err})")
