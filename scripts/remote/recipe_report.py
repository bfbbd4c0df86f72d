"""The recipe's one metrics JSON, from whatever its stages have written so far (run after every stage).

    python scripts/remote/recipe_report.py OUT WORK NAME --start UNIX_TIME --budget_s S --command CMD
    python scripts/remote/recipe_report.py --truncate K SRC DST   # a retrieved-premises file cut to K premises

Reads OUT/stages.tsv (stage, exit status, seconds), OUT/train_progress.json (scripts/remote/recipe_train.py),
WORK/run/metrics_{valid,test}.json (the dense evaluation after training), OUT/eval_files_test.json
(`leanpremise eval-files --json` over the test files) and WORK/fused/fusion.json; a missing input leaves its
part out and `complete` false. Writes OUT/NAME.json atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import time
from pathlib import Path

KS = (16, 32, 100)


def read_json(path: Path):
    """The parsed file, or None when it is missing or cut short (a stage killed while writing it)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_stages(path: Path) -> dict[str, dict]:
    """{stage: {"rc": int, "seconds": float}} from tab-separated lines, the last line of a stage winning."""
    stages: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                stages[parts[0]] = {"rc": int(parts[1]), "seconds": float(parts[2])}
    return stages


def recalls(metrics: dict | None) -> dict[str, float] | None:
    if not metrics:
        return None
    return {f"recall@{k}": round(metrics[f"recall@{k}"], 4) for k in KS if f"recall@{k}" in metrics}


def ranker_of(path: str) -> str:
    """`.../dot_test-minilm+bm25+mepo-p0.6-c2.4.json` -> `minilm+bm25+mepo-p0.6-c2.4`."""
    m = re.match(r"^dot_[^-]+-(.+)\.json$", Path(path).name)
    return m.group(1) if m else Path(path).name


def test_table(eval_files: dict | None, dense_name: str) -> dict[str, dict]:
    """dense / hybrid / bm25 / mepo Recall@16/32/100 on test, all from the one eval-files table."""
    out: dict[str, dict] = {}
    for path, metrics in (eval_files or {}).items():
        name = ranker_of(path)
        if name == dense_name:
            role = "dense"
        elif "+" in name:
            role = "hybrid"
        elif name == "bm25":
            role = "bm25"
        elif name.startswith("mepo"):
            role = "mepo"
        else:
            role = name
        out[role] = {"ranker": name, **recalls(metrics)}
    return out


def device() -> str:
    try:
        gpus = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], check=False,
                              capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
    except (FileNotFoundError, subprocess.TimeoutExpired):
        gpus = []
    return f"{', '.join(gpus) or 'no GPU'} ({os.cpu_count()} CPU cores)"


def build(out: Path, work: Path, name: str, dense_name: str, start: float, budget_s: float, command: str,
          versions: str) -> dict:
    stages = read_stages(out / "stages.tsv")
    progress = read_json(out / "train_progress.json") or {}
    fusion = read_json(work / "fused" / "fusion.json")
    table = test_table(read_json(out / "eval_files_test.json"), dense_name)
    dense_test = read_json(work / "run" / "metrics_test.json")
    report = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(start)),
        "device": f"{device()}, {versions}".rstrip(", "),
        "command": command,
        "budget_s": budget_s,
        "elapsed_s": round(time.time() - start, 1),
        "complete": bool(progress.get("complete")) and {"dense", "hybrid"} <= set(table),
        "stages": stages,
        "train": {k: v for k, v in progress.items() if k not in ("complete",)},
        "test": table,
        "fusion": fusion,
        "dense_valid": recalls(read_json(work / "run" / "metrics_valid.json")),
        "dense_test_all": dense_test,
    }
    if not table.get("dense") and dense_test:
        report["test"]["dense"] = {"ranker": dense_name, "source": "metrics_test.json", **recalls(dense_test)}
    return report


def truncate(k: int, src: Path, dst: Path) -> None:
    """Copy a retrieved-premises file keeping each state's first k premises (its top k: files are in rank order)."""
    from leanpremise.eval.retrieved_files import read_retrieved, write_retrieved

    entries = read_retrieved(src)
    for e in entries:
        e.premises = e.premises[:k]
    write_retrieved(dst, entries)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--truncate", type=int, default=None)
    p.add_argument("--start", type=float, default=None)
    p.add_argument("--budget_s", type=float, default=None)
    p.add_argument("--command", default="")
    p.add_argument("--dense_name", default="minilm")
    p.add_argument("--versions", default="")
    args = p.parse_args()
    if args.truncate is not None:
        truncate(args.truncate, *args.paths)
        return
    out, work, name = args.paths
    report = build(out, work, str(name), args.dense_name, args.start, args.budget_s, args.command, args.versions)
    tmp = out / f".{name}.{os.getpid()}.json.tmp"  # stages in the background report concurrently
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out / f"{name}.json")


if __name__ == "__main__":
    main()
