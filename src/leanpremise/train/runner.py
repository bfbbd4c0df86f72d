"""Run a training: data, model, pre-tokenisation, trainer, checkpoints, evaluation before and after."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leanpremise.train.args import DataArguments, LossArguments, ModelArguments, RunArguments

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path | None
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, dict[str, float]] = field(default_factory=dict)
    train_seconds: float = 0.0
    examples: int = 0
    steps: int = 0
    step_seconds: float = 0.0
    collate_seconds: float = 0.0
    trainer: object = None


def data_config(args: DataArguments):
    from leanpremise.data import DataConfig

    return DataConfig(data_dir=args.data_dir, mathlib_only=args.mathlib_only, filter=args.filter,
                      nameless=args.nameless, seed=args.split_seed, n_valid=args.n_valid, n_test=args.n_test,
                      split_mode=args.split_mode, cache_dir=args.cache_dir)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def build_collator(model, dataset, loss_args: LossArguments, seed: int, state_ids: np.ndarray,
                   show_progress: bool = True):
    """Pre-tokenise premises and the training states, and the collator that batches them."""
    from leanpremise.train.collator import PremiseBatchCollator
    from leanpremise.train.mask import RetrievalMaskBuilder
    from leanpremise.train.negatives import HardNegatives, NegativeSampler
    from leanpremise.train.tokens import tokenize_texts

    t0 = time.perf_counter()
    premise_tokens = tokenize_texts(model, dataset.corpus.texts, desc="tokenize premises",
                                    show_progress=show_progress)
    uniq = np.unique(state_ids)
    state_row = np.full(len(dataset.states), -1, dtype=np.int64)
    state_row[uniq] = np.arange(len(uniq))
    state_tokens = tokenize_texts(model, [dataset.states.state[s] for s in uniq.tolist()],
                                  desc="tokenize states", show_progress=show_progress)
    logger.info("pre-tokenised %d premises and %d states in %.1fs", len(premise_tokens), len(state_tokens),
                time.perf_counter() - t0)
    hard = None
    if loss_args.hard_negatives is not None:
        hard = HardNegatives.from_file(loss_args.hard_negatives, dataset, top_k=loss_args.hard_negative_top_k)
    sampler = NegativeSampler(dataset, loss_args.num_negatives_per_state, hard, loss_args.hard_negative_ratio)
    return PremiseBatchCollator(
        preprocess_fn=model.preprocess, state_tokens=state_tokens, state_row=state_row,
        premise_tokens=premise_tokens, sampler=sampler,
        mask_builder=RetrievalMaskBuilder(dataset, loss_args.retrieval_mask_mode), seed=seed)


def run_training(model_args: ModelArguments, data_args: DataArguments, loss_args: LossArguments,
                 run_args: RunArguments, train_args, callbacks=None, dataset=None,
                 time_steps: bool = False) -> TrainResult:
    """Train a premise selector as the CLI does; returns where things went and the metrics."""
    from leanpremise.data import load_dataset
    from leanpremise.train.collator import EpochCallback
    from leanpremise.train.data import hf_train_dataset, train_pairs
    from leanpremise.train.evaluation import evaluate_and_retrieve, make_evaluator, recall_line, split_recall
    from leanpremise.train.loss import MaskedCachedMultipleNegativesRankingLoss
    from leanpremise.train.model import build_model, display_name
    from leanpremise.train.runs import resolve_resume, retire_stale_output, save_final, write_revision
    from leanpremise.train.trainer import PremiseTrainer, TimeBudget

    output_dir = Path(train_args.output_dir)
    is_main = train_args.process_index == 0
    ds = dataset if dataset is not None else load_dataset(data_config(data_args))
    if is_main:
        retire_stale_output(output_dir, ds.revision)
    _barrier()
    resume = resolve_resume(train_args.resume_from_checkpoint, output_dir, verbose=is_main)
    if is_main:
        write_revision(output_dir, ds.revision)

    model = build_model(model_args)
    state_col, positive_col = train_pairs(ds)
    if len(state_col) == 0:
        raise ValueError(f"{ds.data_dir}: the train split has no (state, positive premise) pair to train on")
    result = TrainResult(output_dir=output_dir, final_dir=None, examples=len(state_col))
    run_name = train_args.run_name or output_dir.name

    if run_args.evaluate_before and is_main:
        result.before = split_recall(model, ds, "valid", run_args.eval_batch_size)
        print(f"valid before training ({display_name(model_args.model_name_or_path)}): "
              f"{recall_line(result.before)}", flush=True)
    _barrier()

    collator = build_collator(model, ds, loss_args, train_args.seed, state_col,
                              show_progress=is_main and not train_args.disable_tqdm)
    collator.timings = [] if time_steps else None
    loss = MaskedCachedMultipleNegativesRankingLoss(
        model, mask_builder=collator.mask_builder, mini_batch_size=model_args.mini_batch_size,
        scale=loss_args.scale, gather_across_devices=loss_args.gather_across_devices)
    evaluator = None
    if str(getattr(train_args.eval_strategy, "value", train_args.eval_strategy)) != "no":
        evaluator = make_evaluator(ds, "valid", run_args.eval_batch_size, name="valid")
    trainer = PremiseTrainer(
        model=model, args=train_args, train_dataset=hf_train_dataset(state_col, positive_col), loss=loss,
        evaluator=evaluator, data_collator=collator,
        callbacks=[EpochCallback(collator)] + list(callbacks or []), time_steps=time_steps,
        time_budget=TimeBudget(run_args.max_train_minutes) if run_args.max_train_minutes else None)
    if train_args.dataloader_persistent_workers and train_args.dataloader_num_workers > 0:
        logger.warning("persistent dataloader workers keep the first epoch's negatives seed; "
                       "negatives are still random per batch but not resampled per epoch")

    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    result.train_seconds = time.perf_counter() - t0
    result.steps = trainer.state.global_step
    result.trainer = trainer
    result.step_seconds = trainer.step_seconds
    result.collate_seconds = float(sum(collator.timings)) if collator.timings is not None else 0.0
    trainer.save_state()

    if is_main:
        result.final_dir = save_final(model, output_dir, ds.revision)
        print(f"saved the final model to {result.final_dir}", flush=True)
        if run_args.evaluate_after:
            result.after = _evaluate_after(model, ds, run_name, run_args, output_dir, evaluate_and_retrieve,
                                           split_recall)
            print(f"valid after training: {recall_line(result.after.get('valid', {}))}", flush=True)
            if result.before:
                print(f"valid before training: {recall_line(result.before)}", flush=True)
            if "test" in result.after:
                print(f"test after training:  {recall_line(result.after['test'])}", flush=True)
            summary = {"before": result.before, "after": result.after, "train_seconds": result.train_seconds,
                       "steps": result.steps, "examples": result.examples}
            (output_dir / "final_metrics.json").write_text(json.dumps(summary, indent=1))
    _barrier()
    return result


def _evaluate_after(model, ds, run_name, run_args, output_dir, evaluate_and_retrieve, split_recall):
    """Valid and test metrics plus retrieved-premises files; valid Recall@k alone if retrieval is missing."""
    try:
        return evaluate_and_retrieve(model, ds, run_name, run_args.retrieved_premises_dir,
                                     run_args.eval_batch_size, metrics_dir=output_dir)
    except ModuleNotFoundError as e:
        if not e.name or not e.name.startswith("leanpremise.eval"):
            raise
        logger.warning("%s is not available: evaluating valid Recall@k only", e.name)
        return {"valid": split_recall(model, ds, "valid", run_args.eval_batch_size)}
