"""Helpers the benchmarks share: locating and unpacking the shared datasets, writing results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def shared_data_dir() -> Path:
    """`../shared/data` beside the checkout, or $LEANPREMISE_SHARED_DATA."""
    return Path(os.environ.get("LEANPREMISE_SHARED_DATA", REPO.parent / "shared" / "data"))


def bench_cache() -> Path:
    return Path(os.environ.get("LEANPREMISE_BENCH_CACHE", Path.home() / ".cache" / "leanpremise" / "bench"))


def unpacked(name: str) -> Path:
    """Unpack `<shared>/data/<name>.tar.zst` once into the bench cache; return the data dir."""
    target = bench_cache() / "data" / name
    if (target / "revision").exists():
        return target
    archive = shared_data_dir() / f"{name}.tar.zst"
    if not archive.exists():
        raise SystemExit(f"{archive}: not found (set LEANPREMISE_SHARED_DATA to the folder holding {name}.tar.zst)")
    tmp = target.parent / f".{name}.unpacking"
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    tmp.mkdir(parents=True)
    subprocess.run(f"zstd -d --long=31 -c '{archive}' | tar -x -C '{tmp}'", shell=True, check=True)
    (tmp / name).rename(target)
    tmp.rmdir()
    return target


def write_result(name: str, payload: dict) -> Path:
    """Write benchmarks/results/<name>.json with the machine described, atomically."""
    payload = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        **payload,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(out)
    print(json.dumps(payload, indent=2))
    return out
