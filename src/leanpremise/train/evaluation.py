"""Evaluation around training: valid Recall@k before and after, retrieved-premises files after.

The evaluation stage (`leanpremise.eval`) does the ranking and writes the
files; training reports through it, so that a training's figures are those
`leanpremise retrieve` would give.
"""

from __future__ import annotations

import logging
from pathlib import Path

from leanpremise.eval.evaluator import PremiseRetrievalEvaluator
from leanpremise.eval.retrieve import retrieve
from leanpremise.model.encoder import encode_texts

logger = logging.getLogger(__name__)

REPORT_KS = (8, 16, 32)
TEST_KS = (8, 16, 32, 100)
"""The Recall@k of the closing test table (every stage beside BM25)."""


def make_evaluator(dataset, split: str = "valid", batch_size: int = 64, name: str | None = None,
                   show_progress: bool = False) -> PremiseRetrievalEvaluator:
    """The evaluation stage's PremiseRetrievalEvaluator (used by the trainer at --eval_strategy)."""
    return PremiseRetrievalEvaluator(dataset, split=split, batch_size=batch_size, name=name,
                                     show_progress_bar=show_progress)


def split_recall(model, dataset, split: str = "valid", batch_size: int = 64,
                 show_progress: bool = False) -> dict[str, float]:
    """Flat metrics of `model` on `split` (recall@k, ...)."""
    evaluator = make_evaluator(dataset, split, batch_size, show_progress=show_progress)
    return dict(evaluator.compute(model).metrics)


def recall_before(model, dataset, splits=("valid", "test"), batch_size: int = 64,
                  show_progress: bool = False) -> dict[str, dict[str, float]]:
    """Flat metrics of `model` on each of `splits`, the corpus encoded once."""
    corpus_emb = encode_texts(model, dataset.corpus.texts, batch_size=batch_size, show_progress=show_progress,
                              desc="encode premises")
    return {split: dict(PremiseRetrievalEvaluator(dataset, split=split, batch_size=batch_size,
                                                  show_progress_bar=show_progress,
                                                  corpus_embeddings=corpus_emb).compute(model).metrics)
            for split in splits}


def recall_line(metrics: dict[str, float], ks=REPORT_KS) -> str:
    """Recall@k in percent, as the evaluation tables print it (over the states with positives)."""
    return "  ".join(f"R@{k} {100 * metrics.get(f'recall@{k}', float('nan')):.2f}%" for k in ks)


def evaluate_and_retrieve(model, dataset, model_name: str, out_dir: Path, batch_size: int = 64,
                          metrics_dir: Path | None = None):
    """Encode the corpus once; evaluate valid and test and write dot_<split>-<model_name>.json for each.
    Returns ({split: metrics}, the corpus embeddings)."""
    corpus_emb = encode_texts(model, dataset.corpus.texts, batch_size=batch_size, show_progress=True,
                              desc="encode premises")
    results = {}
    for split in ("valid", "test"):
        metrics_out = Path(metrics_dir) / f"metrics_{split}.json" if metrics_dir is not None else None
        results[split] = retrieve(model, dataset, split, out_dir=Path(out_dir), model_name=model_name,
                                  corpus_embeddings=corpus_emb, metrics_out=metrics_out, batch_size=batch_size)
    return results, corpus_emb


def rerank_after_training(model, final_dir: Path, corpus_emb, dataset, model_name: str, out: Path,
                          max_states: int, batch_size: int = 64) -> dict[str, dict[str, float]]:
    """A reranker over the trained model (its corpus embeddings already made) and the side rankers, trained
    on a sample of the train states and stopped on valid (a short patience: the main job is bounded).
    Returns {"valid": its valid Recall@k, "test": its test metrics, "bm25_test": BM25's test metrics}."""
    from leanpremise.eval.metrics import compute_metrics
    from leanpremise.eval.rerank.apply import rerank_states
    from leanpremise.eval.rerank.config import DEFAULT_SIDE_RANKERS, RerankConfig
    from leanpremise.eval.rerank.index import build_rankers
    from leanpremise.eval.rerank.requests import IndexView
    from leanpremise.eval.rerank.train import train_reranker
    from leanpremise.model.identity import model_identity
    from leanpremise.rank.kinds import RankerKind
    from leanpremise.rank.rerank.model import Reranker

    rankers, table = build_rankers(dataset, IndexView.full(dataset.corpus),
                                   [RankerKind.DENSE, *DEFAULT_SIDE_RANKERS], model=model, model_name=model_name, corpus_embeddings=corpus_emb,
                                   progress=False, identity=model_identity(final_dir))
    spec = train_reranker(dataset, rankers, table, dataset.split_ids("train"), dataset.split_ids("valid"),
                          RerankConfig(max_states=max_states, early_stopping=50), out, progress=True,
                          trained_on={"data_revision": dataset.revision, "after_training": str(final_dir)})
    test_ids = dataset.split_ids("test")
    positives = [dataset.states.positives(s) for s in test_ids.tolist()]
    k = max(TEST_KS)
    ids, _ = rerank_states(Reranker.load(out), dataset, rankers, table, test_ids, k, progress=False)
    queries = [dataset.states.state[s] for s in test_ids.tolist()]
    bm25_ids, _ = rankers.side.bm25.rank(queries, dataset.access, test_ids, k)  # the full view: corpus ids
    return {"valid": dict(spec.valid_scores), "test": compute_metrics(ids, positives, list(TEST_KS), 32),
            "bm25_test": compute_metrics(bm25_ids, positives, list(TEST_KS), 32)}
