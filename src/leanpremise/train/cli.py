"""`leanpremise train`: every flag of the original train.py plus every SentenceTransformerTrainingArguments flag.

Flags a user does not give take the defaults below (shown by `-h`), chosen so
that `leanpremise train` with no argument trains the packaged MiniLM on the
shipped sample on a small CPU machine within the time README.md states, including the
valid evaluations before and after. Explicit flags mean what they meant in the
original. Bad input (a flag, a data dir, a model path) is one line on stderr
and exit status 2, reported before the slow work where it can be.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULTS = {
    "num_train_epochs": None,
    "per_device_train_batch_size": None,
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
"""Training-argument defaults of `leanpremise train` where they differ from Hugging Face's.

None marks a default that depends on the machine or on other flags: it is filled in by `resolve_defaults` on
the parsed values, so a flag the user gave is never overridden."""

EPOCHS = 1
BATCH_SIZE = 64

CPU_MAX_SEQ_LENGTH = 128
"""Without a GPU and without --max_seq_length, texts are truncated to this many tokens (speed)."""
CPU_BATCH_SIZE = 32
CPU_TRAIN_MINUTES = 5.0
"""Without a GPU: batch size and training time budget unless given (steps, epochs or minutes)."""

STATIC_EPOCHS = 8
STATIC_BATCH_SIZE = 256
STATIC_DEFAULTS = {"learning_rate": 0.05, "scale": 40.0, "positives_per_state": None, "num_negatives_per_state": 1,
                   "mine_hard_negatives": "bm25", "hard_negative_ratio": 1.0, "eval_batch_size": 1024}
"""Defaults of `--encoder static` for the flags not given, on any machine (chosen on valid with
benchmarks/static_ablation.py: docs/decisions.md). A static encoder's step costs little, so the CPU time budget
is the only CPU-specific default it shares."""


class UsageError(Exception):
    """Bad flags or inputs of `leanpremise train`: reported as one line, exit status 2."""


def build_parser():
    from sentence_transformers import SentenceTransformerTrainingArguments
    from transformers import HfArgumentParser

    from leanpremise.data.config import DataConfig
    from leanpremise.train.args import LossArguments, ModelArguments, RunArguments

    class TrainParser(HfArgumentParser):
        def error(self, message):  # one line, as every other command's input errors
            raise UsageError(f"{message} (every flag: leanpremise train -h)")

    parser = TrainParser(
        (ModelArguments, DataConfig, LossArguments, RunArguments, SentenceTransformerTrainingArguments),
        prog="leanpremise train",
        allow_abbrev=False,
        description="Train a premise selector (contrastive, masked, GradCache) on an ntp-toolkit data dir. "
                    f"With no argument: the packaged all-MiniLM-L6-v2 on the shipped sample, {EPOCHS} epoch, "
                    f"batch {BATCH_SIZE}, 3 negatives; on a machine without GPU, batch {CPU_BATCH_SIZE}, texts cut "
                    f"to {CPU_MAX_SEQ_LENGTH} tokens and at most {CPU_TRAIN_MINUTES:g} minutes of training unless "
                    "those flags are given. With --encoder static: "
                    f"{STATIC_EPOCHS} epochs, batch {STATIC_BATCH_SIZE}, "
                    + ", ".join(f"{k} {v}" for k, v in STATIC_DEFAULTS.items()) + " unless given. Valid Recall@{8,16,32} "
                    "is printed before and after training, then test Recall@{8,16,32,100} of every stage beside BM25. --output_dir defaults to output/<run_name or model-trained>.",
    )
    parser.set_defaults(**DEFAULTS)
    return parser


def given(argv: list[str], name: str) -> bool:
    """Whether `--name` is in `argv` (exact: the parser accepts no abbreviation)."""
    flag = f"--{name}"
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def flag_value(argv: list[str], name: str) -> str | None:
    """The value of `--name X` / `--name=X` in `argv` (the last one), read without building the parser."""
    flag, value = f"--{name}", None
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(flag + "="):
            value = a[len(flag) + 1:]
    return value


def default_output_dir(model_name_or_path: str | None, run_name: str | None, encoder: str = "transformer") -> str:
    from leanpremise.train.model import display_name, is_saved_static

    # "-trained": the retrieved-premises files are named after this dir, and must not overwrite the base
    # model's (dot_valid-all-MiniLM-L6-v2.json is the untrained baseline's file); "-static": nor those of the
    # transformer trained from the same base.
    built = encoder == "static" and not (model_name_or_path and is_saved_static(str(model_name_or_path)))
    return str(Path("output") / (run_name or f"{display_name(model_name_or_path)}-{'static' if built else 'trained'}"))


def resolve_defaults(model_args, run_args, train_args, has_gpu: bool) -> None:
    """Fill in the machine- and encoder-dependent defaults (those left None by the parser); given values stay."""
    static = model_args.encoder == "static"
    budget_given = (train_args.max_steps > 0 or train_args.num_train_epochs is not None
                    or run_args.max_train_minutes is not None)
    if train_args.num_train_epochs is None:
        train_args.num_train_epochs = STATIC_EPOCHS if static else EPOCHS
    if train_args.per_device_train_batch_size is None:
        train_args.per_device_train_batch_size = (STATIC_BATCH_SIZE if static else BATCH_SIZE if has_gpu
                                                  else CPU_BATCH_SIZE)
    if not has_gpu:
        train_args.dataloader_pin_memory = False  # nothing to pin for; torch warns on every dataloader
        if model_args.max_seq_length is None and not static:
            model_args.max_seq_length = CPU_MAX_SEQ_LENGTH
        if not budget_given:
            run_args.max_train_minutes = CPU_TRAIN_MINUTES


def apply_encoder_defaults(argv: list[str], model_args, loss_args, run_args, train_args) -> None:
    """A saved static model trains as a static encoder; a static encoder takes STATIC_DEFAULTS where no flag
    says otherwise, and refuses a text length limit (it reads whole texts, as its `encode` does)."""
    from leanpremise.train.model import is_saved_static

    path = model_args.model_name_or_path
    if path is not None and is_saved_static(str(Path(path).expanduser())):
        model_args.encoder = "static"
    if model_args.encoder != "static":
        return
    if model_args.max_seq_length is not None:
        raise UsageError("--max_seq_length does not apply to --encoder static (it embeds whole texts)")
    for name, value in STATIC_DEFAULTS.items():
        if not given(argv, name):
            target = next(args for args in (loss_args, run_args, train_args) if hasattr(args, name))
            setattr(target, name, value)


def parse(argv: list[str]):
    """(model, data, loss, run, training) arguments; --output_dir and the machine's defaults filled in."""
    import torch

    parser = build_parser()
    argv = list(argv)
    try:
        if len(argv) == 1 and argv[0].endswith(".json"):
            return parser.parse_json_file(argv[0])
        *parsed, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except ValueError as e:  # TrainingArguments checks flag combinations in __post_init__
        if "bf16" in str(e) and not torch.cuda.is_available():
            raise UsageError("--bf16 needs a GPU with bfloat16 support and this machine has none: leave it out "
                             "on CPU") from None
        raise UsageError(str(e)) from None
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)} (every flag: leanpremise train -h)")
    model_args, loss_args, run_args, train_args = parsed[0], parsed[2], parsed[3], parsed[4]
    apply_encoder_defaults(argv, model_args, loss_args, run_args, train_args)
    if not given(argv, "output_dir"):
        train_args.output_dir = default_output_dir(model_args.model_name_or_path, train_args.run_name,
                                                   model_args.encoder)
    resolve_defaults(model_args, run_args, train_args, has_gpu=torch.cuda.is_available())
    return parsed


def check_paths_early(argv: list[str]) -> None:
    """Input paths that must exist, checked from the raw flags before the slow imports and the model load."""
    from leanpremise.data.layout import check_layout

    data_dir = flag_value(argv, "data_dir")
    if data_dir is not None:
        check_layout(Path(data_dir).expanduser(), need_states=True)
    for name in ("hard_negatives",):
        value = flag_value(argv, name)
        if value is not None and not Path(value).expanduser().is_file():
            raise UsageError(f"--{name} {value}: no such file")
    model = flag_value(argv, "model_name_or_path")
    if model is not None and not Path(model).expanduser().exists() and model.startswith(("/", ".", "~")):
        raise UsageError(f"--model_name_or_path {model}: no such model dir")
    if model is not None:
        from leanpremise.model.encoder import check_remote_code

        check_remote_code(Path(model).expanduser(), trusted(argv))


def trusted(argv: list[str]) -> bool:
    """Whether the raw flags turn --trust_remote_code on (`--trust_remote_code`, `... True`, `...=yes`)."""
    if not given(argv, "trust_remote_code"):
        return False
    value = flag_value(argv, "trust_remote_code")
    return value is None or value.startswith("-") or value.lower() in ("true", "yes", "1", "y", "t")


def main(argv: list[str] | None = None) -> int:
    from leanpremise.data.errors import DataLayoutError

    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if argv not in (["-h"], ["--help"]):
            check_paths_early(argv)
        model_args, data_args, loss_args, run_args, train_args = parse(argv)
        from leanpremise.train.runner import run_training

        if train_args.process_index == 0:
            logger.info("model %s\ndata %s\nloss %s\nrun %s", model_args, data_args, loss_args, run_args)
        run_training(model_args, data_args, loss_args, run_args, train_args)
    except (UsageError, DataLayoutError, FileNotFoundError, ValueError) as e:
        print(f"leanpremise train: error: {e}", file=sys.stderr)
        return 2
    return 0


def register(sub) -> None:
    """List `train` in `leanpremise -h` (the command itself is dispatched to main() before argparse)."""
    import argparse

    p = sub.add_parser("train", help="train a premise selector (see `leanpremise train -h`)", add_help=False)
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda args: main(args.train_args))
