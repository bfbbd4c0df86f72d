"""`retrieve --hybrid bm25,mepo,usage`: dense, lexical and usage rankings of the same states, fused with a
fusion tuned on held-out states (the valid split, or a seeded random part of the states with `--tune_on`).

The tuning states are ranked and tuned on before the evaluation states are
ranked, and never overlap them. Writes the fused `dot_<split>-<model>+<rankers>.json`,
`fusion.json` beside it, and the fused metrics (`--metrics_out`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from leanpremise.eval.tune_draw import draw_tuning_states
from leanpremise.eval.tuning import tune
from leanpremise.rank.fusion import TunedOn, apply, write_fusion
from leanpremise.rank.kinds import RankerKind
from leanpremise.rank.runs import Run

logger = logging.getLogger(__name__)


def split_states(dataset, split: str, tune_on: float | None, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(tuning state ids, evaluation state ids, what the tuning states are)."""
    if tune_on is None:
        if split == "valid":
            logger.warning("--hybrid with --split valid: the fusion is tuned and evaluated on the same states")
        return dataset.split_ids("valid"), dataset.split_ids(split), "valid"
    tune_ids, eval_ids = draw_tuning_states(dataset.split_ids(split), tune_on, seed, split)
    return tune_ids, eval_ids, f"{split} (random {tune_on:g}, seed {seed})"


class Rankers:
    """The dense model and the lexical rankers, each built once and run on any states."""

    def __init__(self, model, dataset, lexical: list[str], corpus_embeddings, batch_size: int = 64):
        from leanpremise.model.encoder import encode_texts

        self.model, self.ds, self.lexical, self.batch_size = model, dataset, lexical, batch_size
        if corpus_embeddings is None:
            corpus_embeddings = encode_texts(model, dataset.corpus.texts, batch_size=batch_size,
                                             show_progress=True, desc="corpus")
        self.corpus_emb = corpus_embeddings
        self.bm25 = self.mepo_index = self.usage = None
        if RankerKind.BM25 in lexical:
            from leanpremise.rank.bm25 import BM25Ranker

            self.bm25 = BM25Ranker(dataset.corpus.texts)
        if RankerKind.MEPO in lexical:
            from leanpremise.rank.mepo import SymbolIndex

            self.mepo_index = SymbolIndex.from_corpus(dataset.corpus)
        if RankerKind.USAGE in lexical:
            from leanpremise.rank.usage import UsageRanker

            self.usage = UsageRanker.from_dataset(dataset)

    def runs(self, state_ids: np.ndarray, k: int, dense_name: str) -> list[Run]:
        """Each ranker's top-k over `state_ids` (dense first, then the lexical rankers in LEXICAL order)."""
        from leanpremise.model.encoder import encode_texts
        from leanpremise.rank.dense import rank_premises

        queries = [self.ds.states.state[s] for s in np.asarray(state_ids).tolist()]
        emb = encode_texts(self.model, queries, batch_size=self.batch_size)
        out = [Run(dense_name, *rank_premises(emb, self.corpus_emb, self.ds.access, state_ids, k))]
        if self.bm25 is not None:
            out.append(Run(RankerKind.BM25, *self.bm25.rank(queries, self.ds.access, state_ids, k)))
        if self.mepo_index is not None:
            from leanpremise.rank.mepo import MePoConfig, mepo_rank

            out.append(Run(RankerKind.MEPO, *mepo_rank(self.mepo_index, queries, self.ds.access, state_ids, k,
                                              MePoConfig())))
        if self.usage is not None:
            out.append(Run(RankerKind.USAGE, *self.usage.rank(self.ds.access, state_ids, k)))
        return out


def hybrid_retrieve(model, dataset, split: str, lexical: list[str], k: int, out_dir: Path, model_name: str,
                    corpus_embeddings=None, metrics_out: Path | None = None, batch_size: int = 64,
                    tune_on: float | None = None, seed: int = 0) -> dict[str, float]:
    """Tune on the tuning states, then rank, fuse, write and score the evaluation states."""
    from leanpremise.eval.metrics import DEFAULT_MRR_K, compute_metrics
    from leanpremise.eval.retrieve import finish_retrieval, k_list_up_to

    tune_ids, eval_ids, tuned_what = split_states(dataset, split, tune_on, seed)
    if not len(tune_ids):
        raise ValueError(f"no tuning states ({tuned_what} is empty): with --split_mode all, use --tune_on")
    rankers = Rankers(model, dataset, lexical, corpus_embeddings, batch_size)
    positives = [dataset.states.positives(s) for s in tune_ids.tolist()]
    spec = tune(rankers.runs(tune_ids, k, model_name), positives, seed=seed)
    spec.k = k
    spec.tuned_on = TunedOn(split=tuned_what, states=len(tune_ids), seed=seed, fraction=tune_on)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_fusion(Path(out_dir) / "fusion.json", spec)
    print(f"fusion tuned on {len(tune_ids)} {tuned_what} states: {spec.label()}")
    t0 = time.perf_counter()
    runs = rankers.runs(eval_ids, k, model_name)
    ids, scores = apply(runs, spec, k)
    seconds = time.perf_counter() - t0
    eval_pos = [dataset.states.positives(s) for s in eval_ids.tolist()]
    for run in runs:
        m = compute_metrics(run.ids, eval_pos, [16, 32, 100], 32)
        print(f"  {run.name:>24} alone: " + "  ".join(f"R@{x} {m[f'recall@{x}']:.4f}" for x in (16, 32, 100)))
    name = f"{model_name}+{'+'.join(lexical)}"
    return finish_retrieval(dataset, split, eval_ids, ids, scores, out_dir, name, seconds, metrics_out,
                            metrics=compute_metrics(ids, eval_pos, k_list_up_to(k), min(DEFAULT_MRR_K, k)))
