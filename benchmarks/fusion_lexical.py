"""Lexical fusion at full scale: BM25, MePo and usage on mathlib-src, fused (tuned on valid), test Recall@16/32/100.

    python benchmarks/fusion_lexical.py [--data mathlib-src] [--k 100]

Runs the CLI a user would (`baseline` per ranker and split at --k, `fuse` tuned on
valid, `eval-files` on test) so the figures are the files' own. No dense model:
a CPU here needs about 1.5 h to embed mathlib-src's 276k premises with MiniLM
(`benchmarks/fusion_quality.py --data mathlib-src` does the dense + lexical
fusion once those embeddings are in the bench cache). Each step is skipped when
its output exists, so a killed run resumes. Writes
benchmarks/results/fusion_lexical_<data>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import bench_cache, unpacked, write_result

RANKERS = ("bm25", "mepo", "usage")
KS = (16, 32, 100)


def cli(*argv: str) -> None:
    subprocess.run([sys.executable, "-m", "leanpremise", *argv], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mathlib-src")
    ap.add_argument("--k", type=int, default=100)
    args = ap.parse_args()
    data = str(unpacked(args.data))
    work = bench_cache() / f"fusion-lexical-{args.data}"
    rp, fused = work / "rp", work / "fused"
    seconds: dict[str, float] = {}
    if not (rp / "test_decls.json").exists():
        cli("export-decls", "--data_dir", data, "--split", "valid", "test", "--out_dir", str(rp))
    files = {}
    for ranker in RANKERS:
        for split in ("valid", "test"):
            metrics = rp / f"metrics_{ranker}_{split}.json"
            if not metrics.exists():
                t0 = time.perf_counter()
                cli("baseline", ranker, "--data_dir", data, "--split", split, "--k", str(args.k), "--out_dir",
                    str(rp), "--metrics_out", str(metrics))
                seconds[f"{ranker}_{split}"] = round(time.perf_counter() - t0, 1)
            name = "mepo-p0.6-c2.4" if ranker == "mepo" else ranker
            files[(ranker, split)] = rp / f"dot_{split}-{name}.json"
    cli("fuse", "--decls", str(rp / "valid_decls.json"), "--out", str(fused),
        *(str(files[(r, s)]) for r in RANKERS for s in ("valid", "test")))
    fused_test = sorted(fused.glob("dot_test-*.json"))
    table = work / "eval_test.json"
    cli("eval-files", str(rp / "test_decls.json"), *(str(files[(r, "test")]) for r in RANKERS),
        *map(str, fused_test), "--k", *map(str, KS), "--json", str(table))
    rows = json.loads(table.read_text())
    test = {Path(p).name: {f"recall@{k}": round(m[f"recall@{k}"], 4) for k in KS} for p, m in rows.items()}
    spec = json.loads((fused / "fusion.json").read_text())
    best = max((n for n in test if "+" not in n), key=lambda n: test[n]["recall@32"])
    hybrid = next(n for n in test if "+" in n)
    write_result(f"fusion_lexical_{args.data.replace('-', '_')}", {
        "data": args.data, "depth": args.k, "test": test,
        "best_single_on_test": best,
        "hybrid_gain_recall@32_over_best_single": round(test[hybrid]["recall@32"] - test[best]["recall@32"], 4),
        "fusion": {k: spec[k] for k in ("method", "weights", "params", "scores") if k in spec},
        "seconds": seconds,
    })


if __name__ == "__main__":
    main()
