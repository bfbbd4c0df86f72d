"""Training a reranker: LightGBM's lambdarank (or XGBoost's rank:ndcg) over the feature rows of training
states, early-stopped on the valid states, never on test.

Each training state is one query group (its candidates, labelled 1 for its positives); a state without a
positive among its candidates gives no ranking signal and is left out of the groups. A share of the
training states is simulated as coming from an unindexed file or folder (requests.simulations), so that the
model has seen the feature values a user's own project gives. Only the model's own text or JSON format is
written, never a pickle.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from leanpremise.atomic import fresh_partial_dir, swap_in_dir
from leanpremise.eval.rerank.config import RerankConfig
from leanpremise.eval.rerank.requests import (
    build_request,
    import_order,
    module_folders,
    simulations,
    subtree_of,
)
from leanpremise.eval.rerank.rows import RerankRows, build_rows
from leanpremise.rank.kinds import RankerKind
from leanpremise.rank.rerank.booster import Booster, Grouped, booster_class
from leanpremise.rank.rerank.features import CATEGORICAL, FEATURE_SET, feature_list
from leanpremise.rank.rerank.model import Reranker, order_by_score
from leanpremise.rank.rerank.spec import FeatureEntry, RankerEntry, RerankerSpec, write_spec
from leanpremise.rank.runs import padded_topk

logger = logging.getLogger(__name__)

VALID_RECALL_KS = (8, 16, 32, 100)
"""The k of the valid Recall@k a trained reranker reports (reranker.json's `valid_scores`); the valid
lists are ranked to the deepest."""


def sample_train_states(ds, train_ids: np.ndarray, max_states: int, seed: int) -> np.ndarray:
    """Training states with a positive, at most `max_states` of them, drawn with `seed` (sorted)."""
    ids = np.asarray([s for s in np.asarray(train_ids).tolist() if len(ds.states.positives(s))], dtype=np.int64)
    if len(ids) > max_states:
        ids = np.sort(np.random.default_rng(seed).choice(ids, size=max_states, replace=False))
    return ids


def requests_for(ds, rankers, table, state_ids: np.ndarray, share: float = 0.0, seed: int = 0,
                 counted: bool = False, client: str = "default", client_share: float | None = None,
                 scopes: tuple[str, ...] = ("module", "folder")):
    """The requests of `state_ids` by `client` (requests.CLIENTS), a `share` of them simulated unindexed
    (by `scopes`, requests.simulations);
    `client_share`: instead, that share of them by the default client and the others by the pre-June one
    (a training mix); `counted`: the states are among those the usage counts were made from."""
    n = len(state_ids)
    folders = module_folders(ds.corpus) if share > 0 else None
    subtrees = module_folders(ds.corpus, subtree_of) if share > 0 and "subtree" in scopes else None
    modes = simulations(n, share, seed, scopes) if share > 0 else ["none"] * n
    if client_share is None:
        clients = [client] * n
    else:
        draw = np.random.default_rng([seed, 1]).random(n)
        clients = ["default" if u < client_share else "pre-june" for u in draw.tolist()]
    order = import_order(ds.corpus)
    return (build_request(ds, rankers.view, table, int(s), mode, folders, counted=counted, client=c, order=order,
                          subtrees=subtrees)
            for s, mode, c in zip(np.asarray(state_ids).tolist(), modes, clients))


def ranked_lists(reranker: Reranker, rows: RerankRows, k: int) -> np.ndarray:
    """(B, k) ids of the reranked lists of every request of `rows` (request id space, -1 padded)."""
    scores = reranker.score(rows.x)
    out, _ = padded_topk((len(rows.sizes), k))
    for i in range(len(rows.sizes)):
        g = rows.group(i)
        ids, _ = order_by_score(rows.cand[g], scores[g], k, rows.tails[i] if rows.tails else None)
        out[i, : len(ids)] = ids
    return out


def recalls(ids: np.ndarray, positives: list[np.ndarray], ks=VALID_RECALL_KS) -> dict[str, float]:
    from leanpremise.eval.metrics import compute_metrics

    m = compute_metrics(ids, positives, list(ks), min(32, max(ks)))
    return {f"recall@{k}": round(float(m[f"recall@{k}"]), 4) for k in ks}


def grouped(rows: RerankRows) -> Grouped:
    """The rows of the requests with a positive among their candidates, as query groups (the others carry
    no ranking signal)."""
    keep = np.zeros(len(rows.y), dtype=bool)
    sizes = []
    for i, size in enumerate(rows.sizes):
        g = rows.group(i)
        if rows.y[g].any():
            keep[g] = True
            sizes.append(size)
    return Grouped(rows.x[keep], rows.y[keep], np.array(sizes, dtype=np.int64))


def fit(cfg: RerankConfig, names: list[str], train: RerankRows, valid: RerankRows, init: Booster | None = None
        ) -> tuple[Booster, int, float]:
    """(booster, best iteration, seconds) of the library `cfg.library`, early-stopped on `valid`; `init`: a
    booster of the same features to continue (its trees are kept, new ones added)."""
    t0 = time.perf_counter()
    cls = booster_class(cfg.library)
    gt, gv = grouped(train), grouped(valid)
    if not len(gt.sizes) or not len(gv.sizes):
        raise ValueError("no training or valid state has a positive among its candidates: nothing to learn from")
    booster, best = cls.train(cfg, names, [c for c in CATEGORICAL if c in names], gt, gv, init)
    return booster, best, time.perf_counter() - t0


def save_reranker(out: Path, spec: RerankerSpec, booster: Booster) -> Path:
    """The model file and reranker.json into `out`, written in a partial folder and swapped in whole."""
    out = Path(out)
    work = fresh_partial_dir(out)
    booster.save(work / spec.model_file)
    write_spec(work, spec)
    swap_in_dir(work, out)
    return out


def ranker_entries(rankers) -> list[RankerEntry]:
    out = []
    for kind in rankers.kinds():
        if kind == RankerKind.DENSE:
            out.append(RankerEntry(kind=kind, name=rankers.dense.name, model_identity=rankers.dense.identity))
        elif kind == RankerKind.MEPO:
            out.append(RankerEntry(kind=kind, name=kind, params=rankers.mepo_settings or {}))
        elif kind == RankerKind.BM25:
            out.append(RankerEntry(kind=kind, name=kind, params=rankers.bm25_settings or {}))
        else:
            out.append(RankerEntry(kind=kind, name=kind))
    return out


def train_reranker(ds, rankers, table, train_ids: np.ndarray, valid_ids: np.ndarray, cfg: RerankConfig,
                   out: Path, progress: bool = True, trained_on: dict | None = None, init: Path | None = None,
                   counted: bool = True) -> RerankerSpec:
    """Train on (a sample of) `train_ids`, stop on `valid_ids`, write the reranker directory `out`; `init`:
    a reranker directory to continue (same rankers and features), e.g. to adapt one to a project;
    `counted`: the training states are among those the usage counts were made from (the train split)."""
    t0 = time.perf_counter()
    kinds = rankers.kinds()
    families = cfg.family_list()
    columns = feature_list(kinds, cfg.structure, families)
    names = [f.name for f in columns]
    base: Reranker | None = None
    if init is not None:
        base = Reranker.load(init)
        if [e.name for e in base.spec.features] != names or base.spec.library != cfg.library:
            raise ValueError(f"--init {init}: a {base.spec.library} reranker of rankers {base.spec.kinds()}; "
                             f"this training reads {kinds} with {cfg.library}")
        cfg = replace(cfg, depth=base.spec.depth, local_bound=base.spec.local_bound)
    states = sample_train_states(ds, train_ids, cfg.max_states, cfg.seed)
    logger.info("reranker: %d training states with positives (of %d), %d valid states", len(states),
                len(train_ids), len(valid_ids))
    scopes = tuple(x.strip() for x in cfg.simulate_scopes.split(",") if x.strip())
    train_req = requests_for(ds, rankers, table, states, cfg.simulate_share, cfg.seed, counted=counted,
                             client_share=cfg.client_share, scopes=scopes)
    train = build_rows(rankers, table, train_req, kinds, cfg.structure, cfg.depth, cfg.local_bound,
                       progress=progress, desc="rerank rows (train)", total=len(states),
                       families=families)
    valid_req = requests_for(ds, rankers, table, valid_ids)
    valid = build_rows(rankers, table, valid_req, kinds, cfg.structure, cfg.depth, cfg.local_bound,
                       tail_depth=max(VALID_RECALL_KS), progress=progress, desc="rerank rows (valid)", total=len(valid_ids),
                       families=families)
    rows_s = time.perf_counter() - t0
    booster, best, fit_s = fit(cfg, names, train, valid, None if base is None else base.booster)
    spec = RerankerSpec(
        library=cfg.library, model_file=booster_class(cfg.library).model_file, feature_set=FEATURE_SET,
        features=[FeatureEntry(name=f.name, version=f.version) for f in columns],
        rankers=ranker_entries(rankers), structure=cfg.structure, families=families, depth=cfg.depth,
        local_bound=cfg.local_bound,
        categorical=[c for c in CATEGORICAL if c in names],
        trained_on={**(trained_on or {}), "split": "train", "states": len(states), "rows": len(train.y),
                    "simulated_share": cfg.simulate_share, "simulated_scopes": list(scopes), "client_share": cfg.client_share,
                    "valid_client": "default", "seed": cfg.seed,
                    "config": {k: v for k, v in asdict(cfg).items() if k != "extra"} | {"extra": cfg.extra}},
        stopped_on={"split": "valid", "states": len(valid_ids), "metric": "ndcg@32", "best_iteration": best},
        importance=booster.importance(names), date=time.strftime("%Y-%m-%d %H:%M:%S"))
    reranker = Reranker(spec, booster)
    valid_ids_ranked = ranked_lists(reranker, valid, max(VALID_RECALL_KS))
    spec.valid_scores = recalls(valid_ids_ranked, valid.positives)
    spec.trained_on["seconds"] = {"rows": round(rows_s, 1), "fit": round(fit_s, 1),
                                  "total": round(time.perf_counter() - t0, 1)}
    save_reranker(out, spec, booster)
    logger.info("reranker written to %s: %d rounds, valid %s", out, best, spec.valid_scores)
    return spec
