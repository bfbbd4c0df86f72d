"""After-training retrieval: rank a split's states, write the retrieved-premises file, report metrics.

Every ranker (a trained model, BM25, MePo, a ReProver-style T5 encoder) ends in
`finish_retrieval`, so files, tables and metric JSON are identical in shape.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from leanpremise.atomic import atomic_write_bytes
from leanpremise.eval.metrics import DEFAULT_K_LIST, DEFAULT_MRR_K, compute_metrics, format_table
from leanpremise.eval.retrieved_files import retrieved_entries, retrieved_file_name, write_retrieved

logger = logging.getLogger(__name__)


def k_list_up_to(k: int) -> list[int]:
    """The default k list cut at k (k itself added), so `--k 64` reports 1..64."""
    ks = [x for x in DEFAULT_K_LIST if x <= k]
    return ks if k in ks else ks + [k]


def finish_retrieval(dataset, split: str, state_ids: np.ndarray, ids: np.ndarray, scores: np.ndarray,
                     out_dir: Path, model_name: str, seconds: float, metrics_out: Path | None = None,
                     quiet: bool = False, metrics: dict[str, float] | None = None) -> dict[str, float]:
    """Metrics (computed unless given), the retrieved file, the printed table and the optional metrics JSON."""
    k = ids.shape[1]
    if metrics is None:
        metrics = compute_metrics(ids, [dataset.states.positives(s) for s in np.asarray(state_ids).tolist()],
                                  k_list_up_to(k), min(DEFAULT_MRR_K, k))
    metrics = dict(metrics)
    metrics["seconds"] = float(seconds)
    path = write_retrieved(Path(out_dir) / retrieved_file_name(split, model_name),
                           retrieved_entries(dataset, state_ids, ids, scores))
    if not quiet:
        print(f"{model_name} on {split} ({len(state_ids)} states, {seconds:.2f}s): wrote {path}")
        print(format_table(metrics))
    if metrics_out is not None:
        atomic_write_bytes(Path(metrics_out), json.dumps(metrics, indent=1).encode())
    return metrics


def retrieve(model, dataset, split: str, k: int = 1024, out_dir=Path("retrieved_premises"),
             model_name: str | None = None, corpus_embeddings: np.ndarray | None = None,
             metrics_out: Path | None = None, batch_size: int = 64) -> dict[str, float]:
    """Encode (or reuse corpus embeddings), rank, write `<out_dir>/dot_<split>-<model_name>.json`,
    print the table, optionally write metrics JSON; return the flat metrics dict.

    `model` is a SentenceTransformer, or a path / hub id / None (the packaged MiniLM) to load.
    `seconds` in the result covers encoding the states, ranking and metrics only.
    """
    from leanpremise.eval.evaluator import PremiseRetrievalEvaluator
    from leanpremise.model.encoder import load_model, model_display_name

    if model is None or isinstance(model, (str, Path)):
        model_name = model_name or model_display_name(model)
        model = load_model(model)
    if model_name is None:
        raise ValueError("retrieve() needs model_name when given a loaded model")
    evaluator = PremiseRetrievalEvaluator(dataset, split=split, k_list=k_list_up_to(k), mrr_k=min(DEFAULT_MRR_K, k),
                                          batch_size=batch_size, write_csv=False, show_progress_bar=True)
    result = evaluator.compute(model, corpus_embeddings=corpus_embeddings)
    logger.info("timings: %s", {key: round(v, 2) for key, v in result.timings.items()})
    return finish_retrieval(dataset, split, result.state_ids, result.ids[:, :k], result.scores[:, :k], out_dir,
                            model_name, result.seconds, metrics_out, metrics=result.metrics)
