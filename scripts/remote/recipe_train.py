"""`leanpremise train` that stops training at a wall-clock time, timing its stages as it goes.

    python scripts/remote/recipe_train.py --train_until UNIX_TIME --progress OUT/train_progress.json \\
        -- TRAIN_FLAGS...

`--max_train_minutes` counts from the first training step, after loading and pre-tokenising, whose length
depends on the machine; a run that must end by a fixed time needs the budget fixed when training starts.
This runs `run_training` as `leanpremise train` does, and sets the time budget, once the trainer is built,
to what is left until `--train_until` (the learning-rate schedule follows it as for `--max_train_minutes`).
`--progress` is rewritten at every log step and after each stage (load, pre-tokenising, training, final
evaluation), so a run cut short still says how far it got.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

PARALLEL_AFTER_PRETOKENISING = "false"


class Progress:
    """The progress file: stage seconds and the latest training figures, rewritten atomically on each change."""

    def __init__(self, path: Path | None, clock=time.perf_counter):
        self.path, self.clock = path, clock
        self.data: dict = {"stages_s": {}, "complete": False}

    def update(self, **fields) -> None:
        self.data.update(fields)
        self.write()

    def stage(self, name: str, seconds: float) -> None:
        self.data["stages_s"][name] = round(seconds, 2)
        self.write()

    def write(self) -> None:
        if self.path is None:
            return
        from leanpremise.atomic import atomic_write_bytes

        atomic_write_bytes(self.path, json.dumps(self.data, indent=1).encode())


def timed(progress: Progress, name: str, fn):
    """`fn`, recording its wall time as stage `name` when it returns (or fails)."""
    def run(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            progress.stage(name, time.perf_counter() - t0)
    return run


def budget_until(train_until: float, now: float) -> float:
    """Seconds of training left before `train_until` (Unix time), never negative: 0 stops after one step."""
    return max(train_until - now, 0.0)


def progress_callback(progress: Progress, batch_size: int):
    """A TrainerCallback that puts steps, epoch, loss and examples/s into the progress file at every log step."""
    from transformers import TrainerCallback

    class LogProgress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            elapsed = time.perf_counter() - self.t0
            logs = logs or {}
            fields = {"steps": state.global_step, "epoch": round(float(state.epoch or 0.0), 4),
                      "train_elapsed_s": round(elapsed, 2),
                      "examples_per_s": round(state.global_step * batch_size / elapsed, 1) if elapsed else None}
            if "loss" in logs:
                fields["last_loss"] = float(logs["loss"])
            progress.update(**fields)

    return LogProgress()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train_until", type=float, required=True, help="Unix time by which training stops")
    p.add_argument("--progress", type=Path, default=None, help="JSON file of stage seconds and training figures")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then `leanpremise train` flags")
    args = p.parse_args(argv)
    train_argv = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args

    from leanpremise.data.errors import DataLayoutError
    from leanpremise.train import cli, runner

    progress = Progress(args.progress)
    try:
        cli.check_paths_early(train_argv)
        model_args, data_args, loss_args, run_args, train_args = cli.parse(train_argv)
    except (cli.UsageError, DataLayoutError, FileNotFoundError, ValueError) as e:
        print(f"recipe_train: error: {e}", file=sys.stderr)
        return 2
    # A placeholder, so that the trainer gets a TimeBudget (and its schedule); fixed once the trainer is built.
    run_args.max_train_minutes = max(budget_until(args.train_until, time.time()), 1.0) / 60.0
    batch = train_args.per_device_train_batch_size * max(train_args.world_size, 1)

    def build_trainer(*a, **kw):
        trainer, collator = build(*a, **kw)
        # Rust parallelism for pre-tokenising only: dataloader workers fork next, and the final evaluation's
        # tokenising stalled with it on (dry runs on CPU).
        os.environ["TOKENIZERS_PARALLELISM"] = PARALLEL_AFTER_PRETOKENISING
        seconds = budget_until(args.train_until, time.time())
        trainer.time_budget.seconds = seconds
        progress.update(train_budget_s=round(seconds, 1))
        return trainer, collator

    def train(trainer, collator, resume, result, is_main):
        t0 = time.perf_counter()
        try:
            run_train(trainer, collator, resume, result, is_main)
        finally:
            progress.stage("train_s", time.perf_counter() - t0)
        state = trainer.state
        nominal = next((h["train_samples_per_second"] for h in reversed(state.log_history)
                        if "train_samples_per_second" in h), None)
        progress.update(
            steps=result.steps, epoch=round(float(state.epoch or 0.0), 4), pairs_per_epoch=result.examples,
            train_loop_s=round(result.train_seconds, 2),
            examples_per_s=round(result.steps * batch / result.train_seconds, 1) if result.train_seconds else None,
            hf_train_samples_per_second=nominal, budget_stopped=bool(trainer.time_budget.stopped))

    build = timed(progress, "pretokenise_and_trainer_s", runner.build_trainer)
    run_train = runner.train
    runner.build_collator = timed(progress, "pretokenise_s", runner.build_collator)
    runner.build_trainer, runner.train = build_trainer, train
    runner.finish = timed(progress, "save_and_evaluate_s", runner.finish)

    from leanpremise.data import load_dataset

    t0 = time.perf_counter()
    ds = load_dataset(data_args)
    progress.stage("load_s", time.perf_counter() - t0)
    progress.update(batch_size=batch)
    result = runner.run_training(model_args, data_args, loss_args, run_args, train_args, dataset=ds,
                                 callbacks=[progress_callback(progress, batch)])
    progress.update(final_dir=str(result.final_dir) if result.final_dir else None, complete=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
