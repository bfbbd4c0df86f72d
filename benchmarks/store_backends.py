"""LMDB (the persistent embedding store today) against SQLite (stdlib) for the same records: get and put
throughput through the store's own read/write path, and what a damaged file does to a process.

The SQLite store here is a minimal prototype behind the same `EmbeddingStore` interface (one table, key
-> value, WAL, synchronous=NORMAL, the rowid as insertion order for first-in-first-out eviction), enough to
measure what the switch would cost; eviction itself is not exercised (both stores stay under budget).
Rounds alternate LMDB and SQLite (A/B interleaved) so the shared machine's load falls on both alike.

    python benchmarks/store_backends.py [--dim 384] [--records 20000] [--batch 64] [--rounds 5]

Writes benchmarks/results/store_backends.json.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from common import write_result

from leanpremise.serve.embedding.store import LmdbEmbeddingStore
from leanpremise.serve.embedding.store.interface import EmbeddingStore

MODEL = "model:sha256:bench|backend:onnx"
TEXT = "theorem t{i} (a b : Nat) : a + b + {i} = b + a + {i}"


class SqliteEmbeddingStore(EmbeddingStore):
    """The prototype: what an SQLite backend would be, for measuring only."""

    def __init__(self, path: Path, warn_every_s: float = 60.0):
        super().__init__(str(path), warn_every_s)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (generation INTEGER PRIMARY KEY, key BLOB UNIQUE "
                         "NOT NULL, value BLOB NOT NULL)")
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return str(self.path)

    def _read(self, keys: list[bytes]) -> list[bytes | None]:
        marks = ",".join("?" * len(keys))
        with self._lock:
            found = dict(self._db.execute(f"SELECT key, value FROM vectors WHERE key IN ({marks})", keys))
        return [found.get(k) for k in keys]

    def _write(self, items: dict[bytes, bytes]) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            before = self._db.total_changes
            self._db.executemany("INSERT OR IGNORE INTO vectors (key, value) VALUES (?, ?)", items.items())
            self._db.execute("COMMIT")
            return self._db.total_changes - before

    def close(self) -> None:
        self._db.close()


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def one_round(store: EmbeddingStore, texts: list[str], rows: np.ndarray, batch: int, dim: int) -> dict:
    """Put every record in batches, then get them back in batches; per-batch seconds of each."""
    put_s, get_s = [], []
    for i in range(0, len(texts), batch):
        t0 = time.perf_counter()
        written = store.put_many(MODEL, texts[i:i + batch], rows[i:i + batch])
        put_s.append(time.perf_counter() - t0)
        assert written == len(texts[i:i + batch])
    order = np.random.default_rng(1).permutation(len(texts))
    for i in range(0, len(texts), batch):
        chosen = [texts[j] for j in order[i:i + batch]]
        t0 = time.perf_counter()
        hits = store.get_many(MODEL, chosen, dim=dim)
        get_s.append(time.perf_counter() - t0)
        assert len(hits) == len(chosen)
    return {"put_s": put_s, "get_s": get_s}


def summary(per_batch: list[float], batch: int) -> dict:
    return {"records_per_s": round(batch / statistics.median(per_batch)),
            "p50_ms_per_batch": round(1000 * statistics.median(per_batch), 3),
            "p99_ms_per_batch": round(1000 * float(np.percentile(per_batch, 99)), 3)}


DAMAGED_CHILD = """
import sys
kind, where, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
from pathlib import Path
if kind == "lmdb-raw":
    import lmdb
    env = lmdb.open(where, map_size=1 << 30, max_dbs=3, readonly=True, lock=False)
    with env.begin(db=env.open_db(b"vectors")) as txn:
        n = sum(1 for _ in txn.cursor())
elif kind == "lmdb-store":
    from leanpremise.serve.embedding.store import LmdbEmbeddingStore
    texts = [TEXT.format(i=i) for i in range(count)]
    n = len(LmdbEmbeddingStore(Path(where)).get_many(MODEL, texts))
else:
    import sqlite3
    db = sqlite3.connect(where)
    n = sum(1 for _ in db.execute("SELECT key, value FROM vectors"))
print("read", n, "of", count, "records")
"""


def damage(kind: str, mode: str, texts: list[str], rows: np.ndarray, dim: int) -> dict:
    """Fill a store, damage its file (`truncate`: cut to 8 KiB; `scribble`: random bytes over its middle
    half), and read it all in a child process: what happens to that process."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if kind.startswith("lmdb"):
            store = LmdbEmbeddingStore(root / "s")
            data, where = root / "s" / "data.mdb", root / "s"
        else:
            store = SqliteEmbeddingStore(root / "s.sqlite")
            data = where = root / "s.sqlite"
        store.put_many(MODEL, texts, rows)
        store.close()
        if kind == "sqlite":
            sqlite3.connect(data).execute("PRAGMA wal_checkpoint(TRUNCATE)").connection.close()
        size = data.stat().st_size
        with open(data, "r+b") as f:
            if mode == "truncate":
                f.truncate(8192)
            else:
                f.seek(size // 4)
                f.write(np.random.default_rng(2).bytes(size // 2))
        child = f"TEXT, MODEL = {TEXT!r}, {MODEL!r}\n" + DAMAGED_CHILD
        done = subprocess.run([sys.executable, "-c", child, kind, str(where), str(len(texts))],
                              capture_output=True, text=True, timeout=120, check=False,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        last = (done.stderr.strip().splitlines() or [""])[-1]
        return {"store": kind, "damage": mode, "returncode": done.returncode,
                "outcome": "killed by SIGBUS" if done.returncode == -7 else
                           done.stdout.strip() if done.returncode == 0 else f"error: {last[:160]}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=384, help="vector size (MiniLM and the static encoder: 384)")
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=64, help="texts per get/put, about one request's")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    texts = [TEXT.format(i=i) for i in range(args.records)]
    rows = unit_rows(args.records, args.dim, 0)
    timings: dict[str, dict[str, list[float]]] = {"lmdb": {"put_s": [], "get_s": []},
                                                  "sqlite": {"put_s": [], "get_s": []}}
    load_before = os.getloadavg()
    for r in range(args.rounds):
        for kind in ("lmdb", "sqlite") if r % 2 == 0 else ("sqlite", "lmdb"):
            with tempfile.TemporaryDirectory() as tmp:
                store = (LmdbEmbeddingStore(Path(tmp) / "s") if kind == "lmdb"
                         else SqliteEmbeddingStore(Path(tmp) / "s.sqlite"))
                got = one_round(store, texts, rows, args.batch, args.dim)
                store.close()
            for name, values in got.items():
                timings[kind][name] += values
    throughput = {kind: {"put": summary(t["put_s"], args.batch), "get": summary(t["get_s"], args.batch)}
                  for kind, t in timings.items()}
    ratio = {op: round(throughput["sqlite"][op]["p50_ms_per_batch"] / throughput["lmdb"][op]["p50_ms_per_batch"], 2)
             for op in ("get", "put")}
    small = min(2000, args.records)
    damaged = [damage(kind, mode, texts[:small], rows[:small], args.dim)
               for kind in ("lmdb-raw", "lmdb-store", "sqlite") for mode in ("truncate", "scribble")]
    write_result("store_backends", {
        "machine_note": "2-core, shared with other jobs", "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(), "dim": args.dim, "value_bytes": 12 + 4 * args.dim,
        "records": args.records, "batch": args.batch, "rounds": args.rounds,
        "throughput": throughput, "sqlite_over_lmdb_p50_time": ratio, "damaged_file": damaged,
        "notes": "get/put through the store's own path (keys, encoding, row checks) in one process; rounds "
                 "interleaved; lmdb-raw: py-lmdb opened without the store's meta-page check; lmdb-store: "
                 "LmdbEmbeddingStore (checks, sets aside, answers misses where LMDB reports an error); sqlite: the stdlib module reading every row",
    })


if __name__ == "__main__":
    main()
