"""The trainer: sentence-transformers' trainer, timing the model's forward/backward when asked."""

from __future__ import annotations

import time

from sentence_transformers import SentenceTransformerTrainer


class PremiseTrainer(SentenceTransformerTrainer):
    """SentenceTransformerTrainer that can account for the time spent in training_step.

    training_step is the forward (the GradCache embedding and loss) and the
    backward (the replayed mini-batches); everything else in a step (data
    loading, collating, optimizer, logging) is "outside". Timing synchronises
    CUDA around each step, so it is off unless `time_steps` is set.
    """

    def __init__(self, *args, time_steps: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
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

    def _sync(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
