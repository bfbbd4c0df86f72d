"""The trainer: sentence-transformers' trainer, timing the model's forward/backward when asked."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from sentence_transformers import SentenceTransformerTrainer
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback


class NumericProgressCallback(ProgressCallback):
    """The training bar, with each log line's figures printed as numbers (4 significant digits), not strings."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None:
            shown = {k: (float(f"{v:.4g}") if isinstance(v, float) else v)
                     for k, v in (logs or {}).items() if k != "total_flos"}
            self.training_bar.write(str(shown))


class PremiseTrainer(SentenceTransformerTrainer):
    """SentenceTransformerTrainer that can account for the time spent in training_step.

    training_step is the forward (the GradCache embedding and loss) and the
    backward (the replayed mini-batches); everything else in a step (data
    loading, collating, optimizer, logging) is "outside". Timing synchronises
    CUDA around each step, so it is off unless `time_steps` is set.
    """

    def __init__(self, *args, time_steps: bool = False, time_budget: TimeBudget | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.time_budget = time_budget
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(NumericProgressCallback)
        if time_budget is not None:
            self.add_callback(time_budget)
        self.time_steps = time_steps
        self.step_seconds = 0.0
        self.steps_timed = 0

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not self.time_steps:
            return super().training_step(model, inputs, num_items_in_batch)
        self._sync()
        t0 = time.perf_counter()
        out = super().training_step(model, inputs, num_items_in_batch)
        self._sync()
        self.step_seconds += time.perf_counter() - t0
        self.steps_timed += 1
        return out

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """Under a time budget, a schedule that follows the budget's step estimate (see TimeBudget)."""
        if self.time_budget is None:
            return super().create_scheduler(num_training_steps, optimizer)
        from torch.optim.lr_scheduler import LambdaLR

        if self.lr_scheduler is None:
            kind = str(getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type))
            budget = self.time_budget
            self.lr_scheduler = LambdaLR(optimizer if optimizer is not None else self.optimizer,
                                         lambda step: budget.lr_factor(step, num_training_steps,
                                                                       self.args.get_warmup_steps, kind))
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def _sync(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


class TimeBudget(TrainerCallback):
    """Stop training after `minutes` of wall-clock time, stretching the LR schedule to what fits.

    The planned number of steps is re-estimated after every step from the mean
    step time so far, and the schedule (linear warm-up, then cosine, linear or
    constant decay) is evaluated against that plan, so a budgeted run still
    decays its learning rate to ~0 by the time the budget runs out.
    """

    def __init__(self, minutes: float, clock: Callable[[], float] = time.perf_counter):
        self.seconds = float(minutes) * 60.0
        self.clock = clock
        """Seconds from an arbitrary origin; injectable so tests can drive the budget with a fake clock."""
        self.start: float | None = None
        self.start_step = 0
        self.planned_steps: int | None = None
        self.stopped = False
        """Whether the budget, rather than the step or epoch count, ended the last training."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = self.clock()
        self.start_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        now = self.clock()
        elapsed = now - (now if self.start is None else self.start)
        done = state.global_step - self.start_step
        if done > 0:
            per_step = elapsed / done
            fit = state.global_step + int(max(self.seconds - elapsed, 0.0) / per_step)
            self.planned_steps = max(state.global_step, min(fit, state.max_steps))
        if elapsed >= self.seconds:
            self.stopped = state.global_step < state.max_steps
            control.should_training_stop = True
            strategy = getattr(args, "save_strategy", None)  # a checkpoint to resume from, unless asked for none
            control.should_save = strategy is None or getattr(strategy, "value", strategy) != "no"
        return control

    def lr_factor(self, step: int, total: int, warmup_steps, kind: str) -> float:
        """LR multiplier at `step`; `warmup_steps(total)` gives the warm-up for a run of `total` steps.

        The warm-up is taken from the planned steps, not the nominal ones: a budgeted run with a large
        nominal epoch count would otherwise never leave its warm-up.
        """
        total = self.planned_steps or total
        warmup = warmup_steps(total)
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        progress = min(1.0, (step - warmup) / max(total - warmup, 1))
        if "cosine" in kind:
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if kind == "linear":
            return 1.0 - progress
        return 1.0
