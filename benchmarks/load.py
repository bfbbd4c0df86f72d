"""Load mathlib-src and build the split: time and peak RSS, cold (parse) and warm (from the cache).

    python benchmarks/load.py [--data_dir DIR]

Each load runs in a fresh process, so peak RSS is that load's alone. Targets on
the 2-core machine: cold load + split <= 20 s and <= 1.5 GiB; warm <= 3 s.
(The original loader: 62 s and 2.9 GiB on the same data and machine.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import unpacked, write_result

CHILD = """
import json, sys
from pathlib import Path
from leanpremise.data import DataConfig, load_dataset
ds = load_dataset(DataConfig(data_dir=Path(sys.argv[1]), cache_dir=Path(sys.argv[2])))
print(json.dumps(ds.stats()))
"""


def load_once(data_dir: Path, cache_dir: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(data_dir), str(cache_dir)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data_dir", type=Path, default=None, help="default: ../shared/data/mathlib-src, unpacked once")
    ap.add_argument("--repeat", type=int, default=2, help="cold loads to run (the best is reported too)")
    args = ap.parse_args()
    data_dir = args.data_dir or unpacked("mathlib-src")
    cold, warm = [], []
    for _ in range(args.repeat):
        cache = Path(tempfile.mkdtemp(prefix="lp-load-cache-"))
        try:
            cold.append(load_once(data_dir, cache))
            warm.append(load_once(data_dir, cache))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    stats = cold[0]
    keys = ("modules", "premises_unfiltered", "premises", "states", "train_states", "valid_states", "test_states",
            "train_pairs", "mean_positives_per_state", "share_states_without_positives", "malformed_lines")
    write_result("load", {
        "data_dir": str(data_dir),
        "cold_load_seconds": [s["load_seconds"] for s in cold],
        "cold_peak_rss_bytes": [s["peak_rss_bytes"] for s in cold],
        "warm_load_seconds": [s["load_seconds"] for s in warm],
        "warm_peak_rss_bytes": [s["peak_rss_bytes"] for s in warm],
        "best_cold_seconds": min(s["load_seconds"] for s in cold),
        "best_warm_seconds": min(s["load_seconds"] for s in warm),
        "targets": {"cold_seconds": 20, "cold_peak_rss_gib": 1.5, "warm_seconds": 3},
        "original_loader": {"seconds": 62, "peak_rss_gib": 2.9},
        "stats": {k: stats[k] for k in keys},
    })


if __name__ == "__main__":
    main()
