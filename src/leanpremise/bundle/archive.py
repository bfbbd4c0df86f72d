"""Unpacking `premises.tar.gz`, the part of an ntp-toolkit data dir a server needs, within bounds.

An archive comes from a bundle dir, the Hub (`serve --from_hub`) or an old bundle (`export --reuse`), so it
is unpacked as if hostile: only regular files and folders, each inside the target; no sparse member (a
1 MB archive can hold a sparse 16 GiB file); every member, the total and every line bounded
(`ArchiveLimits`, defaults in docs/decisions.md), counted on the bytes actually written, not on the
headers; and never writing into the last `FREE_DISK_RESERVE` bytes of the disk. Anything past a bound
stops the unpacking with one `ArchiveRefused` line naming the archive and the member, and what was
unpacked is removed.
"""

from __future__ import annotations

import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from leanpremise.bundle.layout import BundleError

CHUNK = 1 << 20
FREE_DISK_RESERVE = 256 << 20
"""Bytes of free disk an unpacking leaves alone, whatever its bounds allow."""


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds of one unpacking (the defaults fit Mathlib many times over: docs/decisions.md)."""

    max_member_bytes: int = 256 << 20
    max_total_bytes: int = 16 << 30
    max_line_bytes: int = 16 << 20
    max_members: int = 1_000_000


class ArchiveRefused(BundleError):
    """An archive member past a bound, sparse, or not a plain file or folder inside the target; one line."""


def extract_premises_archive(archive: Path, target: Path, limits: ArchiveLimits | None = None,
                             fileobj=None) -> Path:
    """Unpack `premises.tar.gz` into `target` (must not exist yet) within `limits`; `fileobj`: the archive
    already open (the handle its checksum was verified on), else `archive` is opened."""
    limits = limits or ArchiveLimits()
    target = Path(target)
    target.mkdir(parents=True)
    try:
        with tarfile.open(archive if fileobj is None else None, "r:gz", fileobj=fileobj) as tar:
            _extract(tar, Path(archive), target, limits)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def _extract(tar: tarfile.TarFile, archive: Path, target: Path, limits: ArchiveLimits) -> None:
    """Each member in turn, streamed (tarfile reads headers as it goes: nothing is listed up front)."""
    total = 0
    for count, member in enumerate(tar, start=1):
        def refuse(why: str, member=member) -> ArchiveRefused:
            return ArchiveRefused(f"{archive}: member {member.name!r} {why}; not unpacked")

        if count > limits.max_members:
            raise refuse(f"is past the {limits.max_members}th (ARCHIVE_MAX_MEMBERS)")
        if member.issparse():
            raise refuse(f"is a sparse file ({member.size} bytes unpacked)")
        if not (member.isreg() or member.isdir()):
            raise refuse("is not a plain file or folder (a link, device or FIFO)")
        if member.name.startswith("/"):
            raise refuse("has an absolute path")
        try:
            safe = tarfile.data_filter(member, str(target))
        except tarfile.FilterError as e:
            raise refuse(f"is refused ({e})") from None
        dest = target / safe.name
        if member.isdir():
            dest.mkdir(parents=True, exist_ok=True)
            continue
        if member.size > limits.max_member_bytes:
            raise refuse(f"is {member.size} bytes, more than ARCHIVE_MAX_MEMBER_BYTES={limits.max_member_bytes}")
        if total + member.size > limits.max_total_bytes:
            raise refuse(f"would take the archive past ARCHIVE_MAX_TOTAL_BYTES={limits.max_total_bytes}")
        if shutil.disk_usage(target).free < member.size + FREE_DISK_RESERVE:
            raise refuse(f"({member.size} bytes) does not fit on the disk of {target} with "
                         f"{FREE_DISK_RESERVE >> 20} MiB to spare")
        dest.parent.mkdir(parents=True, exist_ok=True)
        total += _copy_member(tar, member, dest, limits, refuse)


def _copy_member(tar, member, dest: Path, limits: ArchiveLimits, refuse) -> int:
    """Write one member, bounding its bytes (as counted, not as its header says) and its lines."""
    src = tar.extractfile(member)
    written = line = 0
    with open(dest, "xb") as out:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            if written > limits.max_member_bytes:
                raise refuse(f"is more than ARCHIVE_MAX_MEMBER_BYTES={limits.max_member_bytes}")
            line = _longest_line(chunk, line, limits.max_line_bytes, refuse)
            out.write(chunk)
    dest.chmod(0o644)
    return written


def _longest_line(chunk: bytes, open_line: int, max_line: int, refuse) -> int:
    """Check the lines of `chunk` (the first continues a line of `open_line` bytes); returns the length of
    the line left open at its end."""
    first_nl = chunk.find(b"\n")
    if first_nl < 0:
        open_line += len(chunk)
        if open_line > max_line:
            raise refuse(f"has a line longer than ARCHIVE_MAX_LINE_BYTES={max_line}")
        return open_line
    last_nl = chunk.rfind(b"\n")
    inner = max(map(len, chunk[first_nl + 1:last_nl].split(b"\n"))) if last_nl > first_nl else 0
    if open_line + first_nl > max_line or inner > max_line or len(chunk) - last_nl - 1 > max_line:
        raise refuse(f"has a line longer than ARCHIVE_MAX_LINE_BYTES={max_line}")
    return len(chunk) - last_nl - 1
