"""Writing `premises.tar.gz`: the part of an ntp-toolkit data dir a premise server needs, nothing else.

(A server unpacks it with `leanpremise.bundle.archive.extract_premises_archive`.)

The archive is reproducible (sorted members, zero mtimes and owners), so
re-exporting unchanged data gives the same checksum.
"""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

from leanpremise.data.layout import check_layout

ARCHIVE_FILES = ("revision", "Modules.jsonl", "HammerBlacklist.jsonl")
ARCHIVE_DIRS = ("Declarations", "Imports")


def archive_members(data_dir: Path) -> list[tuple[str, Path]]:
    """(name in archive, source path) for every file that goes in, in archive order."""
    data_dir = Path(data_dir)
    check_layout(data_dir, need_states=False)
    members = [(name, data_dir / name) for name in ARCHIVE_FILES]
    for folder in ARCHIVE_DIRS:
        for path in sorted((data_dir / folder).glob("*.jsonl")):
            members.append((f"{folder}/{path.name}", path))
    return members


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644 if info.isfile() else 0o755
    return info


def write_premises_archive(data_dir: Path, out_path: Path, compresslevel: int = 6) -> Path:
    """Write the archive to `out_path` (callers place it in a temp dir that is renamed when complete)."""
    with (
        open(out_path, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=compresslevel, filename="") as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for folder in ARCHIVE_DIRS:
            info = _normalise(tarfile.TarInfo(folder))
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, path in archive_members(data_dir):
            info = _normalise(tar.gettarinfo(str(path), arcname=name))
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    return out_path
