"""Tuning the static encoder on VALID: one choice changed at a time from a base recipe.

    python benchmarks/static_ablation.py [--data mathlib-small] [--arms base,epochs4,...] [--threads 2]

Each arm is `leanpremise train --encoder static` with the base recipe's flags plus its own (ARMS), trained
on the train split; its valid Recall@16/32/100 is measured on the states with positives (test is not read:
the quality benchmark, static_quality.py, scores the chosen recipe on test). Hard-negative arms read
the top 64 of BM25 (`baseline bm25 --split train`) or of an earlier arm's model (`retrieve --split train`,
SELF_MODELS) on every train state. Writes benchmarks/results/static_ablation_<data>.json after each arm; an arm already
there is not run again unless --rerun.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, bench_cache, unpacked, write_result

KS = (16, 32, 100)
BASE = ["--num_train_epochs", "8", "--per_device_train_batch_size", "256", "--learning_rate", "0.05",
        "--positives_per_state", "4", "--num_negatives_per_state", "0", "--scale", "20",
        "--mine_hard_negatives", "none"]
"""The base recipe every arm changes one thing of: the probe's (issue 26), as `train --encoder static` first
defaulted to; valid chose the defaults from these arms."""

ARMS: dict[str, list[str]] = {
    "base": [],
    "epochs4": ["--num_train_epochs", "4"],
    "epochs16": ["--num_train_epochs", "16"],
    "positives1": ["--positives_per_state", "1"],
    "positives2": ["--positives_per_state", "2"],
    "positives8": ["--positives_per_state", "8"],
    "positives_all": ["--positives_per_state", "100000"],
    "batch128": ["--per_device_train_batch_size", "128"],
    "batch512": ["--per_device_train_batch_size", "512"],
    "lr0.02": ["--learning_rate", "0.02"],
    "lr0.1": ["--learning_rate", "0.1"],
    "lr0.2": ["--learning_rate", "0.2"],
    "scale10": ["--scale", "10"],
    "scale40": ["--scale", "40"],
    "dim256_pca": ["--static_dim", "256"],
    "dim128_pca": ["--static_dim", "128"],
    "tokenizer_lean": ["--static_tokenizer", "lean"],
    "tokenizer_lean_random": ["--static_tokenizer", "lean", "--static_init", "random", "--static_dim", "384"],
    "init_random": ["--static_init", "random", "--static_dim", "384"],
    "negatives1": ["--num_negatives_per_state", "1"],
    "hard_bm25": ["--num_negatives_per_state", "1", "--hard_negative_ratio", "1.0", "--hard_negatives", "@bm25"],
    "hard_self": ["--num_negatives_per_state", "1", "--hard_negative_ratio", "1.0", "--hard_negatives", "@self"],
    "mask_none": ["--retrieval_mask_mode", "none"],
    "mask_only_negative": ["--retrieval_mask_mode", "only_negative"],
    # the single changes that helped, together
    "scale40_positives_all": ["--scale", "40", "--positives_per_state", "100000"],
    "scale40_positives_all_hard_bm25": ["--scale", "40", "--positives_per_state", "100000",
                                        "--num_negatives_per_state", "1", "--hard_negative_ratio", "1.0",
                                        "--hard_negatives", "@bm25"],
    "scale40_positives_all_epochs16": ["--scale", "40", "--positives_per_state", "100000",
                                       "--num_train_epochs", "16"],
    "scale60_positives_all": ["--scale", "60", "--positives_per_state", "100000"],
    # one change at a time from those defaults (issue 26's second round)
    "scale40_positives_all_batch128": ["--scale", "40", "--positives_per_state", "100000",
                                       "--per_device_train_batch_size", "128"],
    "scale40_positives_all_batch64": ["--scale", "40", "--positives_per_state", "100000",
                                      "--per_device_train_batch_size", "64"],
    "scale40_positives_all_hard_self": ["--scale", "40", "--positives_per_state", "100000",
                                        "--num_negatives_per_state", "1", "--hard_negative_ratio", "1.0",
                                        "--hard_negatives", "@self_defaults"],
    # BM25's hard negatives won on valid: one change at a time from the defaults plus them
    **{f"hard_bm25_{name}": ["--scale", "40", "--positives_per_state", "100000", "--num_negatives_per_state", "1",
                             "--hard_negative_ratio", "1.0", "--hard_negatives", "@bm25", *flags]
       for name, flags in {
           "neg2": ["--num_negatives_per_state", "2"],
           "neg2_half": ["--num_negatives_per_state", "2", "--hard_negative_ratio", "0.5"],
           "top16": ["--hard_negative_top_k", "16"],
           "epochs16": ["--num_train_epochs", "16"],
           "batch128": ["--per_device_train_batch_size", "128"],
           "scale60": ["--scale", "60"],
           "lr0.1": ["--learning_rate", "0.1"],
       }.items()},
}
SELF_MODELS = {"self": "base", "self_defaults": "scale40_positives_all"}
"""The arm whose trained model mines the `@self...` hard negatives."""


def leanpremise(*args: str) -> float:
    """Run a `leanpremise` command in its own process; its seconds."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "leanpremise", *args], check=True, stdout=subprocess.DEVNULL)
    return round(time.perf_counter() - t0, 1)


def hard_file(kind: str, data_dir: Path, work: Path) -> Path:
    """Top-64 retrievals on every train state: BM25's, or an earlier arm's model's (made once)."""
    out = work / "negatives"
    path = out / f"dot_train-{kind}.json"
    if not path.exists():
        common = ["--data_dir", str(data_dir), "--split", "train", "--k", "64", "--out_dir", str(out)]
        if kind == "bm25":
            leanpremise("baseline", "bm25", *common)
        else:
            leanpremise("retrieve", "--model", str(work / SELF_MODELS[kind] / "final"), "--model_name", kind, *common)
    return path


def train_arm(arm: str, flags: list[str], ds, data_dir: Path, work: Path) -> dict:
    """Train one arm and measure valid recall of its final model."""
    from leanpremise.train.cli import parse
    from leanpremise.train.evaluation import split_recall
    from leanpremise.train.runner import run_training

    flags = [str(hard_file(f[1:], data_dir, work)) if f.startswith("@") else f for f in flags]
    argv = ["--encoder", "static", "--data_dir", str(data_dir), "--output_dir", str(work / arm),
            "--evaluate_before", "False", "--evaluate_after", "False", "--rerank_after", "False",
            "--disable_tqdm", "True", "--save_strategy", "no", "--max_train_minutes", "60", *BASE, *flags]
    m, _, lo, _, t = parsed = parse(argv)
    recipe = {"num_train_epochs": t.num_train_epochs, "per_device_train_batch_size": t.per_device_train_batch_size,
              "learning_rate": t.learning_rate, "positives_per_state": lo.positives_per_state,
              "num_negatives_per_state": lo.num_negatives_per_state, "hard_negatives": bool(lo.hard_negatives),
              "mine_hard_negatives": lo.mine_hard_negatives,
              "scale": lo.scale, "retrieval_mask_mode": lo.retrieval_mask_mode, "static_tokenizer": m.static_tokenizer,
              "static_init": m.static_init, "static_dim": m.static_dim}
    res = run_training(*parsed, dataset=ds)
    t0 = time.perf_counter()
    valid = split_recall(res.trainer.model, ds, "valid", batch_size=256)
    return {"flags": flags, "recipe": recipe, "train_seconds": round(res.train_seconds, 1), "steps": res.steps,
            "pairs_per_epoch": res.examples, "eval_seconds": round(time.perf_counter() - t0, 1),
            "valid": {f"recall@{k}": round(valid[f"recall@{k}"], 4) for k in KS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mathlib-small")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--rerun", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from leanpremise.data import load_dataset

    torch.set_num_threads(args.threads)
    name = f"static_ablation_{args.data.replace('-', '_')}"
    path = RESULTS / f"{name}.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result = {k: v for k, v in result.items() if k not in ("benchmark", "date", "machine")}
    result["note"] = "2-core machine, shared with other jobs: train_seconds are indicative"
    result["base_recipe"] = result.get("base_recipe") or {
        "num_train_epochs": 8, "per_device_train_batch_size": 256, "learning_rate": 0.05, "positives_per_state": 4,
        "num_negatives_per_state": 0, "static_tokenizer": "base", "static_init": "base",
        "retrieval_mask_mode": "no_positive", "scale": 20.0}
    result["base_recipe_note"] = ("the recipe every arm's flags change (the first defaults; each arm also "
                                  "records its full recipe when run after the defaults moved)")
    result.setdefault("arms", {})
    data_dir = unpacked(args.data)
    ds = load_dataset(data_dir=data_dir)
    work = bench_cache() / "static-ablation" / args.data
    for arm in [a for a in args.arms.split(",") if a]:
        if arm in result["arms"] and not args.rerun:
            continue
        result["arms"][arm] = train_arm(arm, ARMS[arm], ds, data_dir, work)
        base = result["arms"].get("base", {}).get("valid", {}).get("recall@32")
        if base is not None:
            result["arms"][arm]["valid_r32_minus_base"] = round(result["arms"][arm]["valid"]["recall@32"] - base, 4)
        write_result(name, result)


if __name__ == "__main__":
    main()
