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
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from leanpremise.eval.rerank.requests import (
    build_request,
    import_order,
    module_folders,
    simulations,
    subtree_of,
)
from leanpremise.eval.rerank.rows import RerankRows, build_rows
from leanpremise.rank.rerank.features import CATEGORICAL, FEATURE_SET, feature_list
from leanpremise.rank.rerank.model import Reranker, order_by_score
from leanpremise.rank.rerank.spec import MODEL_FILES, FeatureEntry, RankerEntry, RerankerSpec, write_spec

logger = logging.getLogger(__name__)

KS = (8, 16, 32, 100)


@dataclass
class RerankConfig:
    """How a reranker is trained (each field is a `rerank train` flag)."""

    depth: int = 100
    """Each ranker's list read this deep (candidates and rank features)."""
    local_bound: int = 64
    """Nearest local premises added to the candidates."""
    structure: bool = True
    library: str = "lightgbm"
    max_states: int = 8192
    """Training states with positives used at most (a seeded sample)."""
    simulate_share: float = 0.3
    """Share of training states whose own module or folder is treated as unindexed."""
    client_share: float = 0.5
    """Share of training states sent as Lean's default client sends them, the others as the pre-June client
    did (docs/decisions.md: the mix chosen on valid)."""
    simulate_scopes: str = field(default="module,folder", metadata={
        "help": "comma-separated scopes (of module, folder, subtree) the simulated states' own unindexed part is "
                "drawn from in equal parts; subtree: the first two components of the module's name, a project "
                "of a hundred files (docs/decisions.md)"})
    seed: int = 0
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 20
    lambda_l2: float = 10.0
    """L2 penalty on leaf values (XGBoost's `lambda`)."""
    min_sum_hessian_in_leaf: float = 1.0
    """Least hessian a leaf holds (XGBoost's `min_child_weight`)."""
    max_rounds: int = 1000
    early_stopping: int = 200
    """Rounds without a better valid NDCG@32 before stopping: valid NDCG@32 is noisy over a few hundred
    states, and a short patience stops at an early bump (docs/decisions.md)."""
    threads: int | None = None
    extra: dict = field(default_factory=dict)


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
    out = np.full((len(rows.sizes), k), -1, dtype=np.int64)
    for i in range(len(rows.sizes)):
        g = rows.group(i)
        ids, _ = order_by_score(rows.cand[g], scores[g], k, rows.tails[i] if rows.tails else None)
        out[i, : len(ids)] = ids
    return out


def recalls(ids: np.ndarray, positives: list[np.ndarray], ks=KS) -> dict[str, float]:
    from leanpremise.eval.metrics import compute_metrics

    m = compute_metrics(ids, positives, list(ks), min(32, max(ks)))
    return {f"recall@{k}": round(float(m[f"recall@{k}"]), 4) for k in ks}


def _groups(rows: RerankRows) -> np.ndarray:
    """Rows of the requests with at least one positive candidate (the others carry no ranking signal)."""
    keep = np.zeros(len(rows.y), dtype=bool)
    for i in range(len(rows.sizes)):
        g = rows.group(i)
        if rows.y[g].any():
            keep[g] = True
    return keep


def fit(cfg: RerankConfig, names: list[str], train: RerankRows, valid: RerankRows, init=None):
    """(booster, best iteration, seconds) of the library `cfg.library`, early-stopped on `valid`; `init`: a
    booster of the same features to continue (its trees are kept, new ones added)."""
    t0 = time.perf_counter()
    tk, vk = _groups(train), _groups(valid)
    tsizes = np.array([s for i, s in enumerate(train.sizes) if train.y[train.group(i)].any()])
    vsizes = np.array([s for i, s in enumerate(valid.sizes) if valid.y[valid.group(i)].any()])
    if not len(tsizes) or not len(vsizes):
        raise ValueError("no training or valid state has a positive among its candidates: nothing to learn from")
    threads = cfg.threads or 0
    if cfg.library == "lightgbm":
        import lightgbm as lgb

        cat = [names.index(c) for c in CATEGORICAL if c in names]
        dtrain = lgb.Dataset(train.x[tk], train.y[tk], group=tsizes, feature_name=names, categorical_feature=cat,
                             free_raw_data=True)
        dvalid = lgb.Dataset(valid.x[vk], valid.y[vk], group=vsizes, reference=dtrain)
        params = {"objective": "lambdarank", "metric": "ndcg", "ndcg_eval_at": [32],
                  "lambdarank_truncation_level": max(cfg.depth, 32), "learning_rate": cfg.learning_rate,
                  "num_leaves": cfg.num_leaves, "min_data_in_leaf": cfg.min_data_in_leaf,
                  "lambda_l2": cfg.lambda_l2, "min_sum_hessian_in_leaf": cfg.min_sum_hessian_in_leaf,
                  "feature_fraction": 0.9, "bagging_fraction": 0.8, "bagging_freq": 1, "seed": cfg.seed,
                  "deterministic": True, "num_threads": threads, "verbose": -1, **cfg.extra}
        booster = lgb.train(params, dtrain, num_boost_round=cfg.max_rounds, valid_sets=[dvalid],
                            valid_names=["valid"], init_model=init,
                            callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)])
        best = int(booster.best_iteration or booster.current_iteration())
        return booster, best, time.perf_counter() - t0
    if cfg.library == "xgboost":
        import xgboost as xgb

        dtrain = xgb.DMatrix(train.x[tk], label=train.y[tk], missing=np.nan, feature_names=names)
        dtrain.set_group(tsizes)
        dvalid = xgb.DMatrix(valid.x[vk], label=valid.y[vk], missing=np.nan, feature_names=names)
        dvalid.set_group(vsizes)
        params = {"objective": "rank:ndcg", "eval_metric": "ndcg@32", "eta": cfg.learning_rate,
                  "max_leaves": cfg.num_leaves, "grow_policy": "lossguide",
                  "min_child_weight": cfg.min_sum_hessian_in_leaf, "lambda": cfg.lambda_l2,
                  "subsample": 0.8, "colsample_bytree": 0.9, "tree_method": "hist", "seed": cfg.seed,
                  "nthread": threads, **cfg.extra}
        booster = xgb.train(params, dtrain, num_boost_round=cfg.max_rounds, evals=[(dvalid, "valid")],
                            early_stopping_rounds=cfg.early_stopping, verbose_eval=False, xgb_model=init)
        best = int(booster.best_iteration) + 1
        return booster[:best], best, time.perf_counter() - t0
    raise ValueError(f"unknown library {cfg.library!r}: expected lightgbm or xgboost")


def importance(library: str, booster, names: list[str]) -> dict[str, float]:
    """Total gain of each feature in the final model."""
    if library == "lightgbm":
        gains = booster.feature_importance(importance_type="gain")
        return {n: round(float(g), 2) for n, g in zip(names, gains)}
    scores = booster.get_score(importance_type="total_gain")
    return {n: round(float(scores.get(n, 0.0)), 2) for n in names}


def save_reranker(out: Path, spec: RerankerSpec, booster) -> Path:
    """The model file and reranker.json into `out`, written in a partial folder and swapped in whole."""
    out = Path(out)
    work = out.parent / f".{out.name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model_path = work / spec.model_file
    if spec.library == "lightgbm":
        booster.save_model(str(model_path))
    else:
        booster.save_model(str(model_path))
    write_spec(work, spec)
    if out.exists():
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        work.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        work.rename(out)
    return out


def ranker_entries(rankers) -> list[RankerEntry]:
    out = []
    for kind in rankers.kinds():
        if kind == "dense":
            out.append(RankerEntry(kind="dense", name=rankers.dense.name, model_identity=rankers.dense.identity))
        elif kind == "mepo":
            out.append(RankerEntry(kind="mepo", name="mepo", params=rankers.mepo_settings or {}))
        elif kind == "bm25":
            out.append(RankerEntry(kind="bm25", name="bm25", params=rankers.bm25_settings or {}))
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
    names = [f.name for f in feature_list(kinds, cfg.structure)]
    base = None
    if init is not None:
        base = Reranker.load(init)
        if [e.name for e in base.spec.features] != names or base.spec.library != cfg.library:
            raise ValueError(f"--init {init}: a {base.spec.library} reranker of rankers {base.spec.kinds()}; "
                             f"this training reads {kinds} with {cfg.library}")
        cfg.depth, cfg.local_bound = base.spec.depth, base.spec.local_bound
    states = sample_train_states(ds, train_ids, cfg.max_states, cfg.seed)
    logger.info("reranker: %d training states with positives (of %d), %d valid states", len(states),
                len(train_ids), len(valid_ids))
    scopes = tuple(x.strip() for x in cfg.simulate_scopes.split(",") if x.strip())
    train_req = requests_for(ds, rankers, table, states, cfg.simulate_share, cfg.seed, counted=counted,
                             client_share=cfg.client_share, scopes=scopes)
    train = build_rows(rankers, table, train_req, kinds, cfg.structure, cfg.depth, cfg.local_bound,
                       progress=progress, desc="rerank rows (train)", total=len(states))
    valid_req = requests_for(ds, rankers, table, valid_ids)
    valid = build_rows(rankers, table, valid_req, kinds, cfg.structure, cfg.depth, cfg.local_bound,
                       tail_depth=max(KS), progress=progress, desc="rerank rows (valid)", total=len(valid_ids))
    rows_s = time.perf_counter() - t0
    booster, best, fit_s = fit(cfg, names, train, valid, None if base is None else base.booster)
    spec = RerankerSpec(
        library=cfg.library, model_file=MODEL_FILES[cfg.library], feature_set=FEATURE_SET,
        features=[FeatureEntry(name=f.name, version=f.version) for f in feature_list(kinds, cfg.structure)],
        rankers=ranker_entries(rankers), structure=cfg.structure, depth=cfg.depth, local_bound=cfg.local_bound,
        categorical=[c for c in CATEGORICAL if c in names],
        trained_on={**(trained_on or {}), "split": "train", "states": len(states), "rows": len(train.y),
                    "simulated_share": cfg.simulate_share, "simulated_scopes": list(scopes), "client_share": cfg.client_share,
                    "valid_client": "default", "seed": cfg.seed,
                    "config": {k: v for k, v in asdict(cfg).items() if k != "extra"} | {"extra": cfg.extra}},
        stopped_on={"split": "valid", "states": len(valid_ids), "metric": "ndcg@32", "best_iteration": best},
        importance=importance(cfg.library, booster, names), date=time.strftime("%Y-%m-%d %H:%M:%S"))
    reranker = Reranker(spec, booster)
    valid_ids_ranked = ranked_lists(reranker, valid, max(KS))
    spec.valid_scores = recalls(valid_ids_ranked, valid.positives)
    spec.trained_on["seconds"] = {"rows": round(rows_s, 1), "fit": round(fit_s, 1),
                                  "total": round(time.perf_counter() - t0, 1)}
    save_reranker(out, spec, booster)
    logger.info("reranker written to %s: %d rounds, valid %s", out, best, spec.valid_scores)
    return spec
