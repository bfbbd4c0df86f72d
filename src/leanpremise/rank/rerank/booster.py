"""The reranker's model behind one interface, one class per learning-to-rank library (LightGBM, XGBoost).

A booster is trained on grouped rows (each request's candidates one group), early-stopped on the valid rows;
it is loaded only from bytes that rank/rerank/validate.py checked (never by path, never a pickle); it scores
feature rows on one thread (a server runs many requests at once) and is saved in its library's own format.
Everything that differs between the libraries lives here; the rest of the reranker never asks which one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from leanpremise.rank.rerank.spec import MODEL_FILES, RerankerFileError
from leanpremise.rank.rerank.validate import ModelLimits, lightgbm_model_str, xgboost_model_bytes


class TrainSettings(Protocol):
    """What a booster's training reads of a reranker's training config (eval/rerank/train.RerankConfig)."""

    depth: int
    seed: int
    learning_rate: float
    num_leaves: int
    min_data_in_leaf: int
    lambda_l2: float
    min_sum_hessian_in_leaf: float
    max_rounds: int
    early_stopping: int
    threads: int | None
    extra: dict


@dataclass
class Grouped:
    """Feature rows in query groups: `x` (rows, features), labels `y` (1: a positive), `sizes` per group."""

    x: np.ndarray
    y: np.ndarray
    sizes: np.ndarray


class Booster:
    """A trained model of one library; `model` is the library's own object."""

    library: ClassVar[str]
    model_file: ClassVar[str]
    """The file name a reranker directory keeps this library's model under."""

    def __init__(self, model):
        self.model = model

    @classmethod
    def train(cls, cfg: TrainSettings, names: list[str], categorical: list[str], train: Grouped, valid: Grouped,
              init: Booster | None = None) -> tuple[Booster, int]:
        """(booster, best round) trained on `train`, stopped when valid NDCG@32 has not improved for
        `cfg.early_stopping` rounds; `init`: a booster of the same features to continue."""
        raise NotImplementedError

    @classmethod
    def check(cls, data: bytes, path: Path, n_features: int, limits: ModelLimits) -> str | bytearray:
        """The content of model file `path` (holding `data`) that the library may be given, after
        validate.py's checks; RerankerFileError (one line naming the file) otherwise."""
        raise NotImplementedError

    @classmethod
    def _from_checked(cls, model: str | bytearray):
        raise NotImplementedError

    @classmethod
    def load(cls, model: str | bytearray, path: Path) -> Booster:
        """The booster built from content `check` returned; `path` names it in errors."""
        try:
            return cls(cls._from_checked(model))
        except ImportError as e:
            raise RerankerFileError(f"{path}: a {cls.library} reranker, and {cls.library} is not installed ({e})"
                                    ) from e
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RerankerFileError(f"{path}: not a readable {cls.library} model ({first})") from e

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores (float64) of the float32 C-contiguous rows `x`, on the calling thread only."""
        raise NotImplementedError

    def n_features(self) -> int:
        raise NotImplementedError

    def n_trees(self) -> int:
        raise NotImplementedError

    def importance(self, names: list[str]) -> dict[str, float]:
        """Total gain of each feature in the model."""
        raise NotImplementedError

    def save(self, path: Path) -> None:
        """The model in its library's own format (never a pickle)."""
        self.model.save_model(str(path))


class LightGBMBooster(Booster):
    library = "lightgbm"
    model_file = MODEL_FILES["lightgbm"]

    @classmethod
    def train(cls, cfg, names, categorical, train, valid, init=None):
        import lightgbm as lgb

        cat = [names.index(c) for c in categorical]
        dtrain = lgb.Dataset(train.x, train.y, group=train.sizes, feature_name=names, categorical_feature=cat,
                             free_raw_data=True)
        dvalid = lgb.Dataset(valid.x, valid.y, group=valid.sizes, reference=dtrain)
        params = {"objective": "lambdarank", "metric": "ndcg", "ndcg_eval_at": [32],
                  "lambdarank_truncation_level": max(cfg.depth, 32), "learning_rate": cfg.learning_rate,
                  "num_leaves": cfg.num_leaves, "min_data_in_leaf": cfg.min_data_in_leaf,
                  "lambda_l2": cfg.lambda_l2, "min_sum_hessian_in_leaf": cfg.min_sum_hessian_in_leaf,
                  "feature_fraction": 0.9, "bagging_fraction": 0.8, "bagging_freq": 1, "seed": cfg.seed,
                  "deterministic": True, "num_threads": cfg.threads or 0, "verbose": -1, **cfg.extra}
        model = lgb.train(params, dtrain, num_boost_round=cfg.max_rounds, valid_sets=[dvalid],
                          valid_names=["valid"], init_model=None if init is None else init.model,
                          callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)])
        return cls(model), int(model.best_iteration or model.current_iteration())

    @classmethod
    def check(cls, data, path, n_features, limits):
        return lightgbm_model_str(data, path, n_features, limits)

    @classmethod
    def _from_checked(cls, model):
        import lightgbm

        return lightgbm.Booster(model_str=model)

    def predict(self, x):
        return np.asarray(self.model.predict(x, num_threads=1), dtype=np.float64)

    def n_features(self):
        return int(self.model.num_feature())

    def n_trees(self):
        return int(self.model.num_trees())

    def importance(self, names):
        gains = self.model.feature_importance(importance_type="gain")
        return {n: round(float(g), 2) for n, g in zip(names, gains)}


class XGBoostBooster(Booster):
    library = "xgboost"
    model_file = MODEL_FILES["xgboost"]

    @classmethod
    def train(cls, cfg, names, categorical, train, valid, init=None):
        import xgboost as xgb

        dtrain = xgb.DMatrix(train.x, label=train.y, missing=np.nan, feature_names=names)
        dtrain.set_group(train.sizes)
        dvalid = xgb.DMatrix(valid.x, label=valid.y, missing=np.nan, feature_names=names)
        dvalid.set_group(valid.sizes)
        params = {"objective": "rank:ndcg", "eval_metric": "ndcg@32", "eta": cfg.learning_rate,
                  "max_leaves": cfg.num_leaves, "grow_policy": "lossguide",
                  "min_child_weight": cfg.min_sum_hessian_in_leaf, "lambda": cfg.lambda_l2,
                  "subsample": 0.8, "colsample_bytree": 0.9, "tree_method": "hist", "seed": cfg.seed,
                  "nthread": cfg.threads or 0, **cfg.extra}
        model = xgb.train(params, dtrain, num_boost_round=cfg.max_rounds, evals=[(dvalid, "valid")],
                          early_stopping_rounds=cfg.early_stopping, verbose_eval=False,
                          xgb_model=None if init is None else init.model)
        best = int(model.best_iteration) + 1
        return cls(model[:best]), best

    @classmethod
    def check(cls, data, path, n_features, limits):
        return xgboost_model_bytes(data, path, n_features, limits)

    @classmethod
    def _from_checked(cls, model):
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(model)
        return booster

    def predict(self, x):
        import xgboost

        return np.asarray(self.model.predict(xgboost.DMatrix(x, missing=np.nan, nthread=1)), dtype=np.float64)

    def n_features(self):
        return int(self.model.num_features())

    def n_trees(self):
        return int(self.model.num_boosted_rounds())

    def importance(self, names):
        scores = self.model.get_score(importance_type="total_gain")
        return {n: round(float(scores.get(n, 0.0)), 2) for n in names}


BOOSTERS: dict[str, type[Booster]] = {b.library: b for b in (LightGBMBooster, XGBoostBooster)}


def booster_class(library: str) -> type[Booster]:
    """The booster class of `library` (ValueError naming the choices otherwise)."""
    try:
        return BOOSTERS[library]
    except KeyError:
        raise ValueError(f"unknown library {library!r}: expected {' or '.join(BOOSTERS)}") from None

