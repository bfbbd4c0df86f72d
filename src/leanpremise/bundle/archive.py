"""Unpacking `premises.tar.gz`, the part of an ntp-toolkit data dir a server needs."""

from __future__ import annotations

import tarfile
from pathlib import Path


def extract_premises_archive(archive: Path, target: Path) -> Path:
    """Unpack `premises.tar.gz` into `target` (must not exist yet), refusing members outside it."""
    target.mkdir(parents=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(target, filter="data")
    return target
