"""The premise-retrieval evaluator: a sentence-transformers evaluator usable during training and after it.

Per evaluation state it ranks the accessible premises (declaration excluded)
by dot product of normalised embeddings and computes the metrics of
`leanpremise.eval.metrics`. The corpus is encoded once per call (or taken
from pre-computed embeddings) and searched in chunks; see `ranking`.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

from leanpremise.atomic import atomic_write_bytes
from leanpremise.eval.metrics import DEFAULT_K_LIST, DEFAULT_MRR_K, compute_metrics, format_table
from leanpremise.model.encoder import encode_texts
from leanpremise.rank.dense import rank_premises

logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """One evaluation: flat metrics and the rankings behind them (rows follow `state_ids`)."""

    metrics: dict[str, float]
    state_ids: np.ndarray
    ids: np.ndarray
    scores: np.ndarray
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


class PremiseRetrievalEvaluator(SentenceEvaluator):
    """Precision/Recall/FullRecall/MRR/nDCG/MAP/Accuracy@k of a model over one split's states.

    `corpus_embeddings`, when given, are used by every call instead of encoding
    the corpus: right for evaluating a fixed model (retrieval, benchmarks), wrong
    during training, where the corpus must be re-encoded by the current model.
    """

    def __init__(self, dataset, split: str = "valid", k_list=None, mrr_k: int = DEFAULT_MRR_K,
                 batch_size: int = 64, name: str | None = None, write_csv: bool = True,
                 show_progress_bar: bool = False, corpus_embeddings: np.ndarray | None = None):
        super().__init__()
        self.dataset = dataset
        self.split = split
        self.state_ids = np.asarray(dataset.split_ids(split), dtype=np.int64)
        self.k_list = sorted({int(k) for k in (k_list or DEFAULT_K_LIST)})
        if not self.k_list or self.k_list[0] < 1:
            raise ValueError(f"k_list must hold positive integers, got {k_list!r}")
        self.mrr_k = int(mrr_k)
        self.max_k = max(self.k_list + [self.mrr_k])
        self.batch_size = batch_size
        self.name = split if name is None else name
        self.write_csv = write_csv
        self.show_progress_bar = show_progress_bar
        self.corpus_embeddings = corpus_embeddings
        self.primary_metric = f"recall@{max(self.k_list)}"
        self.csv_file = f"PremiseRetrieval_evaluation_{self.name}_results.csv" if self.name else \
            "PremiseRetrieval_evaluation_results.csv"

    # ---- the pieces ----------------------------------------------------------------------------

    def state_texts(self) -> list[str]:
        states = self.dataset.states
        return [states.state[s] for s in self.state_ids.tolist()]

    def positives(self) -> list[np.ndarray]:
        return [self.dataset.states.positives(s) for s in self.state_ids.tolist()]

    def encode_corpus(self, model) -> np.ndarray:
        return encode_texts(model, self.dataset.corpus.texts, batch_size=self.batch_size,
                            show_progress=self.show_progress_bar, desc="encode premises")

    def compute(self, model=None, corpus_embeddings: np.ndarray | None = None) -> EvalResult:
        """Rank and score. `seconds` covers encoding the states, ranking and metrics (not the corpus)."""
        corpus_emb = corpus_embeddings if corpus_embeddings is not None else self.corpus_embeddings
        timings: dict[str, float] = {}
        if corpus_emb is None:
            if model is None:
                raise ValueError("compute() needs a model or corpus embeddings")
            t0 = time.perf_counter()
            corpus_emb = self.encode_corpus(model)
            timings["corpus_encoding"] = time.perf_counter() - t0
        if len(corpus_emb) != len(self.dataset.corpus):
            raise ValueError(f"corpus embeddings have {len(corpus_emb)} rows but the corpus has "
                             f"{len(self.dataset.corpus)} premises: were they computed for this data dir "
                             "with the same options (filter, mathlib_only, nameless)?")
        t0 = time.perf_counter()
        if model is None:
            raise ValueError("compute() needs a model to encode the states")
        state_emb = encode_texts(model, self.state_texts(), batch_size=self.batch_size,
                                 show_progress=self.show_progress_bar, desc=f"encode {self.split} states")
        t1 = time.perf_counter()
        ids, scores = rank_premises(state_emb, corpus_emb, self.dataset.access, self.state_ids, self.max_k,
                                    progress=self.show_progress_bar)
        t2 = time.perf_counter()
        metrics = compute_metrics(ids, self.positives(), self.k_list, self.mrr_k)
        t3 = time.perf_counter()
        timings.update(state_encoding=t1 - t0, ranking=t2 - t1, metrics=t3 - t2)
        metrics["seconds"] = t3 - t0
        return EvalResult(metrics=metrics, state_ids=self.state_ids, ids=ids, scores=scores, seconds=t3 - t0,
                          timings=timings)

    # ---- the SentenceEvaluator protocol --------------------------------------------------------

    def __call__(self, model, output_path: str | None = None, epoch: float = -1, steps: int = -1,
                 *args, **kwargs) -> dict[str, float]:
        where = f" after epoch {epoch}" if epoch != -1 else ""
        where += f" (step {steps})" if steps != -1 else ""
        logger.info("premise retrieval evaluation on %s (%d states)%s", self.name, len(self.state_ids), where)
        result = self.compute(model)
        flat = {key: float(v) for key, v in result.metrics.items()}
        logger.info("\n%s", format_table(flat))
        if output_path is not None and self.write_csv:
            self._append_csv(Path(output_path), epoch, steps, flat)
        metrics = self.prefix_name_to_metrics(flat, self.name)
        if hasattr(model, "model_card_data"):
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    def csv_columns(self) -> list[str]:
        return ["epoch", "steps"] + [
            f"{m}@{k}" for k in self.k_list
            for m in ("precision", "recall", "fullrecall", "ndcg", "map", "accuracy")
        ] + [f"mrr@{self.mrr_k}", "states", "seconds"]

    def _append_csv(self, out_dir: Path, epoch, steps, metrics: dict[str, float]) -> None:
        """Append one row, rewriting the file atomically so an interrupted write loses nothing."""
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / self.csv_file
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if not old:
            writer.writerow(self.csv_columns())
        writer.writerow([epoch, steps] + [metrics.get(c, "") for c in self.csv_columns()[2:]])
        atomic_write_bytes(path, (old + buf.getvalue()).encode("utf-8"))

    def get_config_dict(self) -> dict:
        return {"split": self.split, "k_list": self.k_list, "mrr_k": self.mrr_k, "states": len(self.state_ids)}

