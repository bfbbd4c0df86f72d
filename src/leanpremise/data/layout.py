"""The ntp-toolkit data dir layout: which parts it has, who writes them, and the files of each part.

Checked before any slow work (parsing, loading a model), so that a wrong path ends in one line naming it
and the ntp-toolkit step that should have written it.
"""

from __future__ import annotations

import os
from pathlib import Path

from leanpremise.data.errors import DataLayoutError, unreadable

PRODUCER = {
    "Modules.jsonl": "ntp-toolkit's module listing (written with every extraction)",
    "Imports": "ntp-toolkit's `imports` extraction (extract_repos.py --imports)",
    "Declarations": "ntp-toolkit's `declarations` extraction (extract_repos.py --declarations)",
    "TrainingDataWithPremises": "ntp-toolkit's `training_data_with_premises` extraction (hammer branch)",
    "HammerBlacklist.jsonl": "ntp-toolkit's hammer branch (extract_repos.py writes it with the premises)",
    "revision": "ntp-toolkit's extraction (it records the extracted revision)",
}
"""Which ntp-toolkit step writes each part of the layout, for error messages."""

FILE_PARTS = ("Modules.jsonl", "HammerBlacklist.jsonl", "revision")
FOLDER_PARTS = ("Imports", "Declarations", "TrainingDataWithPremises")


def _need(path: Path, part: str) -> Path:
    if not path.exists():
        if path.is_symlink():
            raise DataLayoutError(f"{path}: a symbolic link that leads nowhere (broken, or a loop)")
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
        if part in FOLDER_PARTS and not path.is_dir():
            raise DataLayoutError(f"{path}: expected a directory of <Module>.jsonl files ({PRODUCER[part]})")
        if part in FILE_PARTS and path.is_dir():
            raise DataLayoutError(f"{path}: a directory, expected a file ({PRODUCER[part]})")


def jsonl_stems(folder: Path) -> list[str]:
    """Module names of a part's `<Module>.jsonl` files, sorted; none when the folder is absent."""
    if not folder.is_dir():
        return []
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name[: -len(".jsonl")] for e in entries if e.name.endswith(".jsonl"))
    except OSError as e:
        raise unreadable(folder, e) from e


def folder_bytes(folder: Path) -> int:
    """Total size of a part's files (0 when absent): how much parsing there is to do."""
    if not folder.is_dir():
        return 0
    total = 0
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                try:
                    total += e.stat().st_size
                except OSError as err:
                    raise unreadable(e.path, err) from err
    except OSError as e:
        raise unreadable(folder, e) from e
    return total


def file_sizes(paths: list[str]) -> list[int]:
    """Sizes of input files, for sharing them out among parser processes by bytes."""
    sizes = []
    for p in paths:
        try:
            sizes.append(os.stat(p).st_size)
        except OSError as e:
            raise unreadable(p, e) from e
    return sizes
