"""Building the rankers an evaluation's reranker reads, over an index view of a data dir."""

from __future__ import annotations

import logging

import numpy as np

from leanpremise.eval.rerank.requests import IndexView
from leanpremise.eval.rerank.signals import DenseRanker, EvalRankers
from leanpremise.rank.kinds import RankerKind
from leanpremise.rank.rerank.premises import PremiseTable
from leanpremise.rank.side import SideRankers

logger = logging.getLogger(__name__)


def build_rankers(ds, view: IndexView, kinds: list[str], model=None, model_name: str | None = None,
                  corpus_embeddings: np.ndarray | None = None, usage_states: np.ndarray | None = None,
                  progress: bool = True, identity: str | None = None) -> tuple[EvalRankers, PremiseTable]:
    """The rankers `kinds` (of bm25, mepo, usage, nearest, dense) over the premises `view` holds, and its
    premise table. Usage counts and the nearest proved states come from `usage_states` (default: the train
    split) restricted to the view; the dense
    ranker needs a model, and encodes the corpus unless `corpus_embeddings` are given."""
    from leanpremise.rank.bm25 import BM25Config, BM25Ranker
    from leanpremise.rank.mepo import MePoConfig, SymbolIndex
    from leanpremise.rank.usage import UsageRanker, usage_counts

    corpus = ds.corpus
    ids = view.ids.tolist()
    texts = corpus.texts
    view_texts = [texts[i] for i in ids]
    names = [corpus.names[i] for i in ids]
    bm25 = mepo = usage = None
    mepo_config = MePoConfig()
    if RankerKind.BM25 in kinds:
        bm25 = BM25Ranker(view_texts, BM25Config(), progress=progress)
    if RankerKind.MEPO in kinds:
        from leanpremise.rank.lean_tokens import symbols

        mepo = SymbolIndex([symbols(t, exclude=n) for t, n in zip(view_texts, names)])
    module_usage = None
    if RankerKind.USAGE in kinds:
        counts = usage_counts(ds, usage_states)
        usage = UsageRanker(counts[view.ids])
        module_usage = module_usage_of(ds, view, usage_states)
    nearest = nearest_of(ds, view, usage_states) if RankerKind.NEAREST in kinds else None
    side = SideRankers(bm25, mepo, mepo_config, usage, {n: i for i, n in enumerate(names)}, module_usage, nearest)
    dense = None
    if RankerKind.DENSE in kinds:
        dense = _dense(ds, view, model, model_name, corpus_embeddings, progress)
        dense.identity = identity or dense.identity
    table = PremiseTable.from_corpus(corpus).subset(view.ids)
    rankers = EvalRankers(view, side, dense, mepo_settings={"p": mepo_config.p, "c": mepo_config.c},
                          bm25_settings={"k1": 1.5, "b": 0.75})
    return rankers, table


def nearest_of(ds, view: IndexView, state_ids: np.ndarray | None = None):
    """The nearest-proved-states ranker of `state_ids` (default: the train split) over the index's premises,
    each state keyed by its declaration (a training state does not see its own proof's states)."""
    from leanpremise.rank.nearest_states import NearestStates

    state_ids = ds.split_ids("train") if state_ids is None else np.asarray(state_ids)
    return NearestStates.from_states(ds.states, state_ids, view.to_view, len(view))


def module_usage_of(ds, view: IndexView, state_ids: np.ndarray | None = None):
    """Usage by module over the index's premises, from `state_ids` (default: the train split)."""
    from leanpremise.rank.module_usage import ModuleUsage

    state_ids = ds.split_ids("train") if state_ids is None else np.asarray(state_ids)
    positives = []
    for s in state_ids.tolist():
        ids = view.to_view[ds.states.positives(s)]
        positives.append(ids[ids >= 0])
    return ModuleUsage.from_positives(ds.states.module_id[state_ids], positives, len(ds.corpus.modules), len(view))


def _dense(ds, view: IndexView, model, model_name, corpus_embeddings, progress: bool) -> DenseRanker:
    from leanpremise.model.encoder import DEFAULT_MODEL_NAME, encode_texts, load_model, model_display_name

    if model == DEFAULT_MODEL_NAME:  # the packaged one, by its name
        model = None
    if model is None or isinstance(model, str):
        name = model_name or model_display_name(model)
        model_path = model
        model = load_model(model)
    else:
        name, model_path = model_name or "dense", None
    if corpus_embeddings is None:
        corpus_embeddings = encode_texts(model, ds.corpus.texts, show_progress=progress, desc="encode premises")
    emb = np.asarray(corpus_embeddings, dtype=np.float32)
    if len(emb) != len(ds.corpus):
        raise ValueError(f"corpus embeddings have {len(emb)} rows, the corpus has {len(ds.corpus)} premises")
    view_emb = emb if len(view) == len(emb) else np.ascontiguousarray(emb[view.ids])
    return DenseRanker(emb=emb, view_emb=view_emb, model=model, name=name, identity=_identity(model, model_path))


def _identity(model, path) -> str | None:
    """The content identity of the model's saved files, when it was loaded from a folder."""
    from pathlib import Path

    from leanpremise.model.encoder import default_model_path
    from leanpremise.model.identity import model_identity

    folder = Path(path) if path else default_model_path() if path is None else None
    if folder is not None and folder.is_dir():
        try:
            return model_identity(folder)
        except OSError:
            return None
    return None
