"""Opening an input file only when it is a regular file (a symlink to one is fine).

A data dir comes from anyone: a `Declarations/*.jsonl` that is a FIFO would hang a plain `open` until
someone writes to it, a symlink to `/dev/zero` would be read until memory runs out. The file is opened
without blocking and its handle checked, so what is read is what was checked (no swap between a `stat`
and the `open`).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from leanpremise.data.errors import DataLayoutError, unreadable

KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
         (stat.S_ISSOCK, "a socket"))


def open_regular(path: Path | str) -> BinaryIO:
    """`path` opened for binary reading; a :class:`DataLayoutError` naming it when it is not a regular file
    or the OS refuses it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise unreadable(path, e) from e
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise unreadable(path, IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)))
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in KINDS if test(mode)), "not a regular file")
            raise DataLayoutError(f"{path}: is {kind}, not a regular file; not read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_bytes(path: Path | str) -> bytes:
    """The bytes of a regular file (see `open_regular`)."""
    with open_regular(path) as fh:
        try:
            return fh.read()
        except OSError as e:
            raise unreadable(path, e) from e
