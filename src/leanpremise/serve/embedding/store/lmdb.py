"""The persistent store on disk: an LMDB directory, one per host, shared by every server process there.

An LMDB file is checked before it is mapped (store/lmdb_file.py); a file that fails the check, or that
LMDB or the store's own marker calls corrupt or foreign, is set aside (renamed `<dir>.corrupt-...`) and a
fresh store started.

Size and eviction: the file never grows past `max_bytes` (LMDB's map size, a hard limit). Records may fill
`RECORD_SHARE` of it (the budget; the rest is B-tree overhead and copy-on-write pages). Inserts carry a
generation number (a counter in the store); when a put would pass the budget, the oldest generations are
deleted first, in a transaction of their own, until the records are at `low_water` of the budget. It is
first-in-first-out: a hit does not refresh a record, because that would turn every read into a write
serialised across processes; the vectors a revision's files need are re-put within a day of use anyway.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from leanpremise.serve.embedding.store.interface import EmbeddingStore
from leanpremise.serve.embedding.store.lmdb_file import lmdb_file_problem
from leanpremise.serve.embedding.store.record import KEY_BYTES

logger = logging.getLogger(__name__)

STORE_MARKER = b"leanpremise-embedding-store/1"
"""What the LMDB meta database holds under `format`: anything else is a foreign store, set aside."""
DB_NAMES = (b"vectors", b"order", b"meta")
RECORD_SHARE = 0.2
"""Share of the LMDB map the records may fill: B-tree pages take about 1.7x the records, and a write copies
the pages it touches (hashed keys touch most), so the map must hold the old and the new tree at once."""
GENERATION_BYTES = 8
"""The big-endian generation number before each stored value (and the key of its order entry)."""


class LmdbEmbeddingStore(EmbeddingStore):
    """An LMDB directory, safe for several processes of one host (LMDB locks its writers).

    Open it once per process and directory, after any fork: LMDB forbids opening one environment twice in a
    process (py-lmdb refuses the second open; this store then runs without it, see `_open`). The server
    opens its location once and shares the store among the models it serves (serve/revisions/lifecycle.py).
    """

    def __init__(self, path: str | Path, max_bytes: int = 2 << 30, low_water: float = 0.8,
                 warn_every_s: float = 60.0):
        self.path = Path(path)
        super().__init__(str(self.path), warn_every_s)
        self.max_bytes = int(max_bytes)
        self.budget = int(RECORD_SHARE * self.max_bytes)
        self.low_water = low_water
        self._env = None
        self._lock = threading.Lock()
        self._open()

    @property
    def where(self) -> str:
        return str(self.path)

    def _open(self) -> None:
        """Open the store; a corrupt or foreign one is set aside with a warning and a fresh one opened. Any
        other failure (the directory open elsewhere in this process, no reader slot, a full disk) leaves
        the directory as it is and the store runs without it."""
        import lmdb

        for attempt in range(3):
            self.path.mkdir(parents=True, exist_ok=True)
            problem = lmdb_file_problem(self.path)
            if problem is not None:  # mapping it could SIGBUS: never open it
                if attempt == 2:
                    logger.warning("embedding store %s: %s; running without it", self.path, problem)
                    return
                self._set_aside(problem)
                continue
            env = None
            try:
                env = lmdb.open(str(self.path), map_size=self.max_bytes, max_dbs=3, metasync=False,
                                readahead=False)
                with env.begin() as txn:  # named databases are keys of the main one: only ours may be there
                    others = {key for key, _ in txn.cursor()} - set(DB_NAMES)
                if others:
                    raise lmdb.InvalidError(f"not a leanpremise embedding store ({len(others)} other keys)")
                vectors, order, meta = (env.open_db(name) for name in DB_NAMES)
                with env.begin(write=True) as txn:
                    marker = txn.get(b"format", db=meta)
                    if marker is None and txn.stat(vectors)["entries"] == 0:
                        txn.put(b"format", STORE_MARKER, db=meta)
                    elif marker != STORE_MARKER:
                        raise lmdb.InvalidError(f"not a leanpremise embedding store (format {marker!r})")
            except (lmdb.Error, OSError) as e:  # OSError: the path is a file, or unreadable
                if env is not None:
                    env.close()
                if attempt == 2 or not _unusable(e):
                    logger.warning("embedding store %s: cannot open (%s); running without it", self.path, e)
                    return
                self._set_aside(e)
                continue
            self._env, self._vectors, self._order, self._meta = env, vectors, order, meta
            return

    def _set_aside(self, error: Exception | str) -> None:
        """Rename the unusable store directory out of the way (another process may have done it first)."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        try:
            self.path.rename(aside)
        except FileNotFoundError:
            return
        except OSError as e:
            logger.warning("embedding store %s: unusable (%s) and cannot be set aside: %s", self.path, error, e)
            return
        logger.warning("embedding store %s: unusable (%s); set aside as %s, starting a fresh one",
                       self.path, error, aside)

    def _read(self, keys: list[bytes]) -> list[bytes | None]:
        if self._env is None:
            return [None] * len(keys)
        with self._env.begin(db=self._vectors, buffers=False) as txn:
            values = [txn.get(k) for k in keys]
        return [None if v is None else v[GENERATION_BYTES:] for v in values]

    def _write(self, items: dict[bytes, bytes]) -> int:
        import lmdb

        if self._env is None:
            return 0
        sizes = [_record_bytes(v) for v in items.values()]
        while sizes and sum(sizes) > self.budget:  # one put larger than the budget keeps its last rows
            sizes.pop(0)
        items = dict(list(items.items())[len(items) - len(sizes):])
        with self._lock:
            try:
                self._make_room(sum(sizes), self.low_water)
                return self._insert(items)
            except lmdb.MapFullError:  # B-tree overhead outgrew the map: make more room, retry once
                self._make_room(sum(sizes), self.low_water / 2)
                return self._insert(items)

    def _counter(self, txn, name: bytes) -> int:
        """One of the meta database's counters (`bytes` used, last `generation`)."""
        return int.from_bytes(txn.get(name, b"\0" * GENERATION_BYTES, db=self._meta), "big")

    def _make_room(self, incoming: int, low_water: float) -> None:
        """Evict (in a transaction of its own, so freed pages are reusable) when `incoming` would not fit."""
        with self._env.begin(write=True) as txn:
            used = self._counter(txn, b"bytes")
            if used + incoming > self.budget:
                used = self._evict(txn, used, max(0, int(low_water * self.budget) - incoming))
                txn.put(b"bytes", used.to_bytes(GENERATION_BYTES, "big"), db=self._meta)

    def _insert(self, items: dict[bytes, bytes]) -> int:
        written = 0
        with self._env.begin(write=True) as txn:
            generation, used = self._counter(txn, b"generation"), self._counter(txn, b"bytes")
            for key, value in items.items():
                if txn.get(key, db=self._vectors) is not None:
                    continue
                generation += 1
                stamp = generation.to_bytes(GENERATION_BYTES, "big")
                txn.put(key, stamp + value, db=self._vectors)
                txn.put(stamp, key, db=self._order)
                used += _record_bytes(value)
                written += 1
            txn.put(b"generation", generation.to_bytes(GENERATION_BYTES, "big"), db=self._meta)
            txn.put(b"bytes", used.to_bytes(GENERATION_BYTES, "big"), db=self._meta)
        return written

    def _evict(self, txn, used: int, target: int) -> int:
        """Delete the oldest generations until `used` is at most `target`; returns the new `used`."""
        cursor = txn.cursor(db=self._order)
        evicted = 0
        while used > target and cursor.first():
            key = cursor.value()
            value = txn.pop(key, db=self._vectors)
            if value is not None:
                used -= _record_bytes(value[GENERATION_BYTES:])
            cursor.delete()
            evicted += 1
        logger.info("embedding store %s: evicted the %d oldest vectors", self.path, evicted)
        return max(used, 0)

    def stats(self) -> dict:
        """Records held, the bytes they count against the budget, the budget and the file bound."""
        if self._env is None:
            return {"entries": 0, "bytes": 0, "budget": self.budget, "max_bytes": self.max_bytes}
        with self._env.begin() as txn:
            return {"entries": txn.stat(self._vectors)["entries"], "bytes": self._counter(txn, b"bytes"),
                    "budget": self.budget, "max_bytes": self.max_bytes}

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def _unusable(error: Exception) -> bool:
    """Whether an error opening the store says its files are not a usable store (set it aside), rather
    than that it cannot be opened now (py-lmdb's "already open in this process" is a plain `lmdb.Error`)."""
    import lmdb

    return isinstance(error, (OSError, lmdb.InvalidError, lmdb.CorruptedError, lmdb.PageNotFoundError,
                              lmdb.VersionMismatchError, lmdb.IncompatibleError, lmdb.PanicError))


def _record_bytes(value: bytes) -> int:
    """What one record costs against the budget: key, generation, value, and its order entry."""
    return KEY_BYTES + GENERATION_BYTES + len(value) + GENERATION_BYTES + KEY_BYTES
