"""Writing output files and folders so that a killed process never leaves half of one behind."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

FILE_MODE = 0o666
"""Mode asked of the kernel for a new file; the umask takes its bits off, as for any file `open` creates."""
DIR_MODE = 0o777


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new, empty temp file beside `name` in `folder`, created with O_EXCL and FILE_MODE.

    Not `tempfile.mkstemp`: that creates files 0600 whatever the umask, so a bundle written by one user
    could not be read by another one sharing its group; here the kernel applies the umask itself (no
    process-wide `os.umask` round trip, which would race with other threads)."""
    while True:
        tmp = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), FILE_MODE), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file.

    The file gets 0666 minus the umask, and missing folders 0777 minus the umask, like any other file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def partial_dir(out: Path) -> Path:
    """Where the folder `out` is written before it is swapped in: `.<name>.partial` beside it (same file
    system, so the swap is a rename)."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"


def fresh_partial_dir(out: Path) -> Path:
    """The partial folder of `out`, created empty: what a killed earlier run left there is removed."""
    work = partial_dir(out)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def swap_in_dir(work: Path, out: Path) -> None:
    """Replace the folder `out` (when there is one) by the complete folder `work`, with renames only: a reader
    finds the old folder or the new one, never a mix; the old one is removed after the swap."""
    work, out = Path(work), Path(out)
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(work, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (`/proc/self/status`); elsewhere
    by setting and restoring it (which is not thread-safe, hence the first way)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(root: Path) -> None:
    """Give every file under `root` (and `root` itself) the mode a fresh `open`/`mkdir` would: libraries
    that write through their own temp files (transformers' safetensors writer) leave them 0600."""
    mask = current_umask()
    root = Path(root)
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        path.chmod((DIR_MODE if path.is_dir() else FILE_MODE) & ~mask)
