"""Does training help? MiniLM trained for a fixed CPU budget vs untrained MiniLM and BM25, test Recall@{16,32}.

Trains the packaged all-MiniLM-L6-v2 on the train split of --data_dir
(default: mathlib-small) with `leanpremise train`'s defaults for a CPU
(batch 32, 3 negatives, no_positive mask, texts cut to 128 tokens) for
--minutes of training (the LR schedule is stretched to what fits), then
evaluates the test split. BM25 comes from `leanpremise baseline bm25`.
Everything runs one after the other, so only one heavy process runs at a time.

    python benchmarks/train_quality.py [--minutes 20] [--data_dir DIR] [--out ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import save_json, unpacked

KS = (16, 32)


def bm25_metrics(data_dir: str, tmp: Path) -> dict:
    out = tmp / "bm25.json"
    cmd = [sys.executable, "-m", "leanpremise", "baseline", "bm25", "--data_dir", data_dir, "--split", "test",
           "--out_dir", str(tmp / "rp"), "--metrics_out", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default=None,
                   help="default: mathlib-small from the shared data, unpacked once into the bench cache")
    p.add_argument("--minutes", type=float, default=20.0, help="training time budget")
    p.add_argument("--model", default=None, help="model to train (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `leanpremise train` flags")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_quality.json")
    args = p.parse_args(argv)
    args.data_dir = str(args.data_dir or unpacked("mathlib-small"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from leanpremise.data import load_dataset
    from leanpremise.text_encoder import load_model
    from leanpremise.train.cli import parse
    from leanpremise.train.evaluation import split_recall
    from leanpremise.train.runner import data_config, run_training

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        train_argv = ["--data_dir", args.data_dir, "--output_dir", str(tmp / "run"), "--max_train_minutes",
                      str(args.minutes), "--num_train_epochs", "100", "--per_device_train_batch_size",
                      str(args.batch_size), "--max_seq_length", str(args.max_seq_length), "--save_strategy", "no",
                      "--evaluate_before", "False", "--evaluate_after", "False", "--disable_tqdm", "True",
                      *args.extra]
        if args.model:
            train_argv += ["--model_name_or_path", args.model]
        parsed = parse(train_argv)
        ds = load_dataset(data_config(parsed[1]))
        t0 = time.perf_counter()
        bm25 = bm25_metrics(args.data_dir, tmp)
        t_bm25 = time.perf_counter() - t0
        untrained = split_recall(load_model(args.model), ds, "test")
        t0 = time.perf_counter()
        res = run_training(*parsed, dataset=ds)
        t_train = time.perf_counter() - t0
        trained = split_recall(res.trainer.model, ds, "test")

    def pick(metrics):
        return {f"recall@{k}": round(float(metrics[f"recall@{k}"]), 4) for k in KS}

    out = {
        "data_dir": args.data_dir, "model": args.model or "all-MiniLM-L6-v2", "train_pairs": res.examples, "train_minutes_budget": args.minutes,
        "train_seconds": round(res.train_seconds, 1), "steps": res.steps,
        "examples_seen": res.steps * args.batch_size, "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length, "extra_flags": args.extra,
        "test_states": len(ds.split.test),
        "trained": pick(trained), "untrained": pick(untrained), "bm25": pick(bm25),
        "trained_beats_both": all(trained[f"recall@{k}"] > max(untrained[f"recall@{k}"], bm25[f"recall@{k}"])
                                  for k in KS),
        "seconds": {"bm25": round(t_bm25, 1), "run_training": round(t_train, 1)},
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": round(os.getloadavg()[0], 2)},
    }
    save_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
