"""`leanpremise train`: every flag of the original train.py plus every SentenceTransformerTrainingArguments flag.

Flags a user does not give take the defaults below (shown by `-h`), chosen so
that `leanpremise train` with no argument trains the packaged MiniLM on the
shipped sample on a 2-core CPU in under 10 minutes including the valid
evaluations before and after. Explicit flags mean what they meant in the
original.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULTS = {
    "num_train_epochs": 1,
    "per_device_train_batch_size": 64,
    "learning_rate": 2e-4,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.03,
    "max_grad_norm": 1.0,
    "logging_steps": 10,
    "save_strategy": "steps",
    "save_steps": 200,
    "save_total_limit": 2,
    "report_to": "none",
    "eval_strategy": "no",
}
"""Training-argument defaults of `leanpremise train` where they differ from Hugging Face's."""

CPU_MAX_SEQ_LENGTH = 128
"""Without a GPU and without --max_seq_length, texts are truncated to this many tokens (speed)."""
CPU_BATCH_SIZE = 32
CPU_TRAIN_MINUTES = 5.0
"""Without a GPU: batch size and training time budget unless given (steps, epochs or minutes)."""


def build_parser():
    from sentence_transformers import SentenceTransformerTrainingArguments
    from transformers import HfArgumentParser

    from leanpremise.train.args import DataArguments, LossArguments, ModelArguments, RunArguments

    parser = HfArgumentParser(
        (ModelArguments, DataArguments, LossArguments, RunArguments, SentenceTransformerTrainingArguments),
        prog="leanpremise train",
        description="Train a premise selector (contrastive, masked, GradCache) on an ntp-toolkit data dir. "
                    "With no argument: the packaged all-MiniLM-L6-v2 on the shipped sample, 1 epoch, batch 64, "
                    f"3 negatives; on a machine without GPU, batch {CPU_BATCH_SIZE}, texts cut to "
                    f"{CPU_MAX_SEQ_LENGTH} tokens and at most {CPU_TRAIN_MINUTES:g} minutes of training unless "
                    "those flags are given. Valid Recall@{8,16,32} "
                    "is printed before and after training. --output_dir defaults to output/<run_name or model-trained>.",
    )
    parser.set_defaults(**DEFAULTS)
    return parser


def given(argv: list[str], name: str) -> bool:
    flag = f"--{name}"
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def default_output_dir(model_name_or_path: str | None, run_name: str | None) -> str:
    from leanpremise.train.model import display_name

    # "-trained": the retrieved-premises files are named after this dir, and must not overwrite the base
    # model's (dot_valid-all-MiniLM-L6-v2.json is the untrained baseline's file).
    return str(Path("output") / (run_name or f"{display_name(model_name_or_path)}-trained"))


def parse(argv: list[str]):
    """(model, data, loss, run, training) arguments; --output_dir filled in when not given."""
    parser = build_parser()
    argv = list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(argv[0])
    if not given(argv, "output_dir"):
        model_args, _, _, _, train_args = parser.parse_args_into_dataclasses(args=argv)
        argv += ["--output_dir", default_output_dir(model_args.model_name_or_path, train_args.run_name)]
    parsed = parser.parse_args_into_dataclasses(args=argv)
    model_args, run_args, train_args = parsed[0], parsed[3], parsed[4]
    import torch

    if not torch.cuda.is_available():
        if model_args.max_seq_length is None and not given(argv, "max_seq_length"):
            model_args.max_seq_length = CPU_MAX_SEQ_LENGTH
        if not given(argv, "per_device_train_batch_size"):
            train_args.per_device_train_batch_size = CPU_BATCH_SIZE
        if not any(given(argv, f) for f in ("max_steps", "num_train_epochs", "max_train_minutes")):
            run_args.max_train_minutes = CPU_TRAIN_MINUTES
    return parsed


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    model_args, data_args, loss_args, run_args, train_args = parse(argv)
    from leanpremise.train.runner import run_training

    if train_args.process_index == 0:
        logger.info("model %s\ndata %s\nloss %s\nrun %s", model_args, data_args, loss_args, run_args)
    try:
        run_training(model_args, data_args, loss_args, run_args, train_args)
    except ValueError as e:
        print(f"leanpremise train: error: {e}", file=sys.stderr)
        return 2
    return 0


def register(sub) -> None:
    """List `train` in `leanpremise -h` (the command itself is dispatched to main() before argparse)."""
    import argparse

    p = sub.add_parser("train", help="train a premise selector (see `leanpremise train -h`)", add_help=False)
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda args: main(args.train_args))
