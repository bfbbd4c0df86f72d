"""Training throughput of `leanpremise train`, end to end, and the share of time outside forward/backward.

MiniLM (the packaged all-MiniLM-L6-v2), batch 64, 3 negatives, GradCache
mini-batch 32, on the shipped sample (or --data_dir), through the real trainer:
dataloader, collator (negatives + mask), loss, optimizer. "Outside" is every
second of the training loop not spent in the trainer's training_step (the
GradCache forward and the backward): data loading, collating, optimizer,
scheduler, logging. Target: under 10%.

    python benchmarks/train_throughput.py [--steps 4] [--max_seq_length 128] [--out ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from common import save_json


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--num_negatives", type=int, default=3)
    p.add_argument("--mini_batch_size", type=int, default=32)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--data_dir", default=None)
    p.add_argument("--model", default=None, help="default: the packaged all-MiniLM-L6-v2")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `leanpremise train` flags")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_throughput.json")
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from leanpremise.train.cli import parse
    from leanpremise.train.runner import run_training

    with tempfile.TemporaryDirectory() as tmp:
        train_argv = ["--output_dir", tmp, "--max_steps", str(args.steps), "--per_device_train_batch_size",
                      str(args.batch_size), "--num_negatives_per_state", str(args.num_negatives),
                      "--mini_batch_size", str(args.mini_batch_size), "--max_seq_length", str(args.max_seq_length),
                      "--save_strategy", "no", "--evaluate_before", "False", "--evaluate_after", "False",
                      "--logging_steps", "1000", "--disable_tqdm", "True", *args.extra]
        if args.data_dir:
            train_argv += ["--data_dir", args.data_dir]
        if args.model:
            train_argv += ["--model_name_or_path", args.model]
        parsed = parse(train_argv)
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        res = run_training(*parsed, time_steps=True)
        total = time.perf_counter() - t0
    loop = res.train_seconds
    examples = res.steps * args.batch_size
    out = {
        "model": args.model or "all-MiniLM-L6-v2",
        "data_dir": args.data_dir or "shipped sample",
        "batch_size": args.batch_size, "num_negatives": args.num_negatives,
        "mini_batch_size": args.mini_batch_size, "max_seq_length": args.max_seq_length,
        "steps": res.steps,
        "examples_per_second": round(examples / loop, 3),
        "texts_per_second": round(examples * (2 + args.num_negatives) / loop, 2),
        "seconds_per_step": round(loop / max(res.steps, 1), 2),
        "training_loop_seconds": round(loop, 2),
        "forward_backward_seconds": round(res.step_seconds, 2),
        "share_outside_forward_backward": round(1 - res.step_seconds / loop, 4),
        "collate_seconds": round(res.collate_seconds, 3),
        "share_collating": round(res.collate_seconds / loop, 4),
        "setup_seconds_incl_load_and_pretokenise": round(total - loop, 2),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "load_average_at_start": round(load0, 2), "load_average_at_end": round(os.getloadavg()[0], 2)},
    }
    import torch

    out["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    save_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
