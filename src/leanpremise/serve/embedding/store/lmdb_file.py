"""Whether an LMDB data file may be mapped: a file cut short would be read past its end through the map,
which is SIGBUS (the process dies), not an exception.

py-lmdb has no call that checks a file without mapping it, so this reads the two meta pages (a few hundred
bytes) itself. Cheaper than opening the store in a child process first (docs/decisions.md), and it
catches what kills a process; damage inside pages LMDB reports itself, as an error.
"""

from __future__ import annotations

import stat
import struct
from pathlib import Path

LMDB_MAGIC = 0xBEEFC0DE
LMDB_PAGE_HEADER = 16
"""LMDB's page header (page number, pad, flags, lower/upper bounds) before a meta page's fields."""
LMDB_META = struct.Struct("<IIQQI44x48xQQ")
"""An LMDB (0.9, 64-bit) meta page after its header: magic, version, fixed address, map size, the free
database's record (whose first field holds the page size; the rest skipped), the main database's record
(skipped), last page used, transaction id."""
LMDB_P_META = 0x08


def lmdb_file_problem(path: Path) -> str | None:
    """Why the LMDB data file in directory `path` must not be mapped, or None when it may (or is absent).

    Both meta pages must be LMDB meta pages, and the file must hold every page the newer one (by
    transaction id, as LMDB picks) says is in use."""
    data = path / "data.mdb"
    try:
        st = data.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return "data.mdb is not a regular file"
    if st.st_size == 0:
        return None  # LMDB writes a new store's meta pages into an empty file itself
    with open(data, "rb") as f:
        first = _meta_page(f, 0)
        if isinstance(first, str):
            return first
        page_size = first[4]
        if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
            return f"data.mdb: meta page 0 gives page size {page_size}"
        second = _meta_page(f, page_size)
        if isinstance(second, str):
            return second
    newer = max(first, second, key=lambda m: m[6])
    needed = (newer[5] + 1) * page_size
    if needed > st.st_size:
        return f"data.mdb is {st.st_size} bytes but its meta page says {needed} are in use (truncated)"
    return None


def _meta_page(f, offset: int) -> tuple | str:
    """The fields of the meta page at `offset` (see LMDB_META), or why it is not one."""
    f.seek(offset)
    raw = f.read(LMDB_PAGE_HEADER + LMDB_META.size)
    if len(raw) < LMDB_PAGE_HEADER + LMDB_META.size:
        return f"data.mdb: no meta page at byte {offset} (the file is {offset + len(raw)} bytes)"
    flags = struct.unpack_from("<H", raw, 10)[0]
    fields = LMDB_META.unpack_from(raw, LMDB_PAGE_HEADER)
    if not flags & LMDB_P_META or fields[0] != LMDB_MAGIC or fields[1] != 1:
        return f"data.mdb: the page at byte {offset} is not an LMDB meta page"
    return fields
