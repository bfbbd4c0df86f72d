"""Run a training: data, model, pre-tokenisation, trainer, checkpoints, evaluation before and after."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leanpremise.data.config import DataConfig
from leanpremise.train.args import LossArguments, ModelArguments, RunArguments

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path | None
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, dict[str, float]] = field(default_factory=dict)
    before_test: dict[str, float] = field(default_factory=dict)
    reranked: dict[str, float] = field(default_factory=dict)
    """Valid Recall@k of the reranker trained after training (empty without --rerank_after)."""
    reranked_test: dict[str, float] = field(default_factory=dict)
    bm25_test: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    examples: int = 0
    steps: int = 0
    step_seconds: float = 0.0
    collate_seconds: float = 0.0
    trainer: object = None


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def build_collator(model, dataset, loss_args: LossArguments, seed: int, state_ids: np.ndarray,
                   show_progress: bool = True):
    """Pre-tokenise premises and the training states, and the collator that batches them."""
    from leanpremise.model.tokens import tokenize_texts
    from leanpremise.train.collator import PremiseBatchCollator
    from leanpremise.train.data import PositiveRotation
    from leanpremise.train.mask import RetrievalMaskBuilder
    from leanpremise.train.negatives import HardNegatives, NegativeSampler, bm25_hard_negatives
    from leanpremise.train.static import is_static

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
    elif loss_args.mine_hard_negatives == "bm25" and round(loss_args.num_negatives_per_state
                                                          * loss_args.hard_negative_ratio) > 0:
        hard = bm25_hard_negatives(dataset, uniq, loss_args.hard_negative_top_k)
    sampler = NegativeSampler(dataset, loss_args.num_negatives_per_state, hard, loss_args.hard_negative_ratio)
    return PremiseBatchCollator(
        preprocess_fn=model.preprocess, state_tokens=state_tokens, state_row=state_row,
        premise_tokens=premise_tokens, sampler=sampler,
        mask_builder=RetrievalMaskBuilder(dataset, loss_args.retrieval_mask_mode), seed=seed,
        rotation=PositiveRotation(dataset, seed) if loss_args.positives_per_state else None,
        bags=is_static(model))


def run_training(model_args: ModelArguments, data_args: DataConfig, loss_args: LossArguments,
                 run_args: RunArguments, train_args, callbacks=None, dataset=None,
                 time_steps: bool = False) -> TrainResult:
    """Train a premise selector as the CLI does; returns where things went and the metrics."""
    from leanpremise.data import load_dataset
    from leanpremise.train.model import build_model

    output_dir = Path(train_args.output_dir)
    is_main = train_args.process_index == 0
    ds = dataset if dataset is not None else load_dataset(data_args)
    resume = prepare_output_dir(output_dir, ds.revision, train_args.resume_from_checkpoint, is_main)

    model = build_model(model_args, dataset=ds)
    state_col, positive_col, slot_col = training_rows(ds, loss_args.positives_per_state, train_args.seed)
    if len(state_col) == 0:
        raise ValueError(f"{ds.data_dir}: the train split has no (state, positive premise) pair to train on")
    result = TrainResult(output_dir=output_dir, final_dir=None, examples=len(state_col))

    if run_args.evaluate_before and is_main:
        result.before, result.before_test = evaluate_untrained(model, ds, model_args, run_args,
                                                               train_args.disable_tqdm)
    _barrier()

    trainer, collator = build_trainer(model, ds, (state_col, positive_col, slot_col), model_args, loss_args,
                                      run_args, train_args, callbacks, time_steps)
    train(trainer, collator, resume, result, is_main)
    if is_main:
        finish(model, ds, train_args.run_name or output_dir.name, run_args, result)
    _barrier()
    return result


def training_rows(ds, positives_per_state: int | None, seed: int):
    """(state, positive, slot) columns of the training rows: every (state, positive) pair, slot None; or, with
    a cap per state, rotating slots (the positive column is then epoch 0's, for the model card)."""
    from leanpremise.train.data import PositiveRotation, capped_pairs, train_pairs

    if not positives_per_state:
        return (*train_pairs(ds), None)
    state_col, slot_col = capped_pairs(ds, positives_per_state)
    return state_col, PositiveRotation(ds, seed).positives(state_col, slot_col, 0), slot_col


def prepare_output_dir(output_dir: Path, revision: str, resume_flag, is_main: bool) -> str | None:
    """Move a run on other data aside, find the checkpoint to resume from, record the data revision."""
    from leanpremise.train.runs import resolve_resume, retire_stale_output, write_revision

    if is_main:
        retire_stale_output(output_dir, revision)
    _barrier()
    resume = resolve_resume(resume_flag, output_dir, verbose=is_main)
    if is_main:
        write_revision(output_dir, revision)
    return resume


def evaluate_untrained(model, ds, model_args: ModelArguments, run_args: RunArguments,
                       quiet: bool = False) -> tuple[dict[str, float], dict[str, float]]:
    """Valid and test metrics of the model before training, saying what it encodes first (minutes on CPU for a
    transformer); valid's are printed, test's go to the closing table."""
    from leanpremise.train.evaluation import recall_before, recall_line
    from leanpremise.train.model import display_name

    name = display_name(model_args.model_name_or_path)
    if model_args.encoder == "static":
        name = f"static encoder from {name}, untrained"
    n_states = len(ds.split_ids("valid")) + len(ds.split_ids("test"))
    print(f"evaluating {name} before training: encoding {len(ds.corpus)} premises and {n_states} valid and "
          "test states, then ranking", flush=True)
    before = recall_before(model, ds, ("valid", "test"), run_args.eval_batch_size, show_progress=not quiet)
    print(f"valid before training ({name}): {recall_line(before['valid'])}", flush=True)
    return before["valid"], before["test"]


def build_trainer(model, ds, rows, model_args: ModelArguments, loss_args: LossArguments,
                  run_args: RunArguments, train_args, callbacks, time_steps: bool):
    """The trainer over the (state, positive, slot) rows, with the masked loss and its collator (GradCache for
    a transformer; a static encoder's batch is embedded in one pass)."""
    from leanpremise.train.collator import EpochCallback
    from leanpremise.train.data import hf_train_dataset, model_card_widget
    from leanpremise.train.evaluation import make_evaluator
    from leanpremise.train.loss import (
        MaskedCachedMultipleNegativesRankingLoss,
        MaskedMultipleNegativesRankingLoss,
    )
    from leanpremise.train.static import is_static
    from leanpremise.train.trainer import PremiseTrainer, TimeBudget

    state_col, positive_col, slot_col = rows
    is_main = train_args.process_index == 0
    collator = build_collator(model, ds, loss_args, train_args.seed, state_col,
                              show_progress=is_main and not train_args.disable_tqdm)
    collator.timings = [] if time_steps else None
    if is_static(model):  # GradCache cannot split a static encoder's inputs, nor would it save memory there
        loss = MaskedMultipleNegativesRankingLoss(model, mask_builder=collator.mask_builder, scale=loss_args.scale,
                                                  gather_across_devices=loss_args.gather_across_devices)
    else:
        loss = MaskedCachedMultipleNegativesRankingLoss(
            model, mask_builder=collator.mask_builder, mini_batch_size=model_args.mini_batch_size,
            scale=loss_args.scale, gather_across_devices=loss_args.gather_across_devices)
    evaluator = None
    if str(getattr(train_args.eval_strategy, "value", train_args.eval_strategy)) != "no":
        evaluator = make_evaluator(ds, "valid", run_args.eval_batch_size, name="valid")
    # The train rows are ids, from which the model card cannot draw its examples: give it real texts.
    model.model_card_data.widget = model_card_widget(ds, state_col, positive_col)
    trainer = PremiseTrainer(
        model=model, args=train_args, train_dataset=hf_train_dataset(state_col, positive_col, slot_col), loss=loss,
        evaluator=evaluator, data_collator=collator,
        callbacks=[EpochCallback(collator)] + list(callbacks or []), time_steps=time_steps,
        time_budget=TimeBudget(run_args.max_train_minutes) if run_args.max_train_minutes else None)
    if train_args.dataloader_persistent_workers and train_args.dataloader_num_workers > 0:
        logger.warning("persistent dataloader workers keep the first epoch's negatives seed; "
                       "negatives are still random per batch but not resampled per epoch")
    return trainer, collator


def train(trainer, collator, resume: str | None, result: TrainResult, is_main: bool) -> None:
    """Run the trainer, record steps and timings, and say so when the time budget ended training."""
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    result.train_seconds = time.perf_counter() - t0
    result.steps = trainer.state.global_step
    result.trainer = trainer
    result.step_seconds = trainer.step_seconds
    result.collate_seconds = float(sum(collator.timings)) if collator.timings is not None else 0.0
    trainer.save_state()
    budget = trainer.time_budget
    if is_main and budget is not None and budget.stopped:
        print(f"the time budget (--max_train_minutes {budget.seconds / 60:g}) ended training after step "
              f"{result.steps} of {trainer.state.max_steps}; the learning rate schedule was fitted to the "
              "budget", flush=True)


def test_table(ds, result: TrainResult) -> str:
    """The closing table: test Recall@k of every stage this run measured, beside BM25."""
    from leanpremise.train.evaluation import TEST_KS, recall_line

    test_ids = ds.split_ids("test")
    with_positives = int(sum(len(ds.states.positives(s)) > 0 for s in test_ids.tolist()))
    rows = [("BM25", result.bm25_test), ("dense before training", result.before_test),
            ("dense after training", result.after.get("test", {})),
            ("reranked (dense, lexical, nearest)", result.reranked_test)]
    lines = [f"TEST ({len(test_ids)} states, {with_positives} with positives; valid only stopped and tuned):"]
    lines += [f"  {label:<40} {recall_line(metrics, TEST_KS)}" for label, metrics in rows if metrics]
    return "\n".join(lines)


def finish(model, ds, run_name: str, run_args: RunArguments, result: TrainResult) -> None:
    """Save the final model; evaluate valid and test, write retrieved premises and final_metrics.json."""
    from leanpremise.train.evaluation import evaluate_and_retrieve, recall_line
    from leanpremise.train.runs import save_final

    output_dir = result.output_dir
    result.final_dir = save_final(model, output_dir, ds.revision)
    print(f"saved the final model to {result.final_dir}", flush=True)
    if not run_args.evaluate_after:
        return
    result.after, corpus_emb = evaluate_and_retrieve(model, ds, run_name, run_args.retrieved_premises_dir,
                                                     run_args.eval_batch_size, metrics_dir=output_dir)
    if run_args.rerank_after:
        from leanpremise.train.evaluation import rerank_after_training

        reranked = rerank_after_training(model, result.final_dir, corpus_emb, ds, run_name,
                                         output_dir / "reranker", run_args.rerank_max_states,
                                         run_args.eval_batch_size)
        result.reranked, result.reranked_test, result.bm25_test = (
            reranked["valid"], reranked["test"], reranked["bm25_test"])
    print(f"valid after training: {recall_line(result.after.get('valid', {}))}", flush=True)
    if result.before:
        print(f"valid before training: {recall_line(result.before)}", flush=True)
    if result.reranked:
        print(f"valid reranked:        {recall_line(result.reranked)}  (dense after training + BM25 + MePo + "
              f"usage + nearest states + structure; {output_dir / 'reranker'})", flush=True)
    if "test" in result.after:
        print(f"test after training:  {recall_line(result.after['test'])}", flush=True)
        print(test_table(ds, result), flush=True)
    summary = {"before": result.before, "after": result.after, "reranked": result.reranked,
               "before_test": result.before_test, "reranked_test": result.reranked_test,
               "bm25_test": result.bm25_test,
               "train_seconds": result.train_seconds, "steps": result.steps, "examples": result.examples}
    (output_dir / "final_metrics.json").write_text(json.dumps(summary, indent=1))
