"""How a reranker is trained (`rerank train`'s flags, read as they are): its own light module, so that the
command line builds its parser without importing the training code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from leanpremise.rank.kinds import RankerKind

DEFAULT_SIDE_RANKERS = (RankerKind.BM25, RankerKind.MEPO, RankerKind.USAGE, RankerKind.NEAREST)
"""The side rankers a reranker reads unless told otherwise (`rerank train --rankers`, the main job's): the
nearest proved states are among them on valid's word (docs/decisions.md)."""


@dataclass
class RerankConfig:
    """How a reranker is trained: each field is a `rerank train` flag (help in its metadata), the command
    reads it as is (eval/rerank/cli.py); `extra` alone is no flag."""

    depth: int = field(default=100, metadata={
        "help": "each ranker's list read this deep (candidates and rank features)"})
    local_bound: int = field(default=64, metadata={"help": "nearest local premises added to the candidates"})
    structure: bool = field(default=True, metadata={"help": "the structure features (locality, kind, ...)"})
    families: str = field(default="", metadata={
        "help": "comma-separated optional feature families (of: mentions, the new premises that name a candidate)"})
    library: Literal["lightgbm", "xgboost"] = field(default="lightgbm", metadata={
        "help": "learning-to-rank library (xgboost: pip install xgboost-cpu)"})
    max_states: int = field(default=8192, metadata={
        "help": "training states with positives used at most (a seeded sample)"})
    simulate_share: float = field(default=0.3, metadata={
        "help": "share of training states whose own module or folder is treated as unindexed"})
    simulate_scopes: str = field(default="module,folder", metadata={
        "help": "comma-separated scopes (of module, folder, subtree) the simulated states' own unindexed part is "
                "drawn from in equal parts; subtree: the first two components of the module's name"})
    # The mix of clients is chosen on valid (docs/decisions.md).
    client_share: float = field(default=0.5, metadata={
        "help": "share of training states sent as Lean's default client sends them (the others: the pre-June "
                "client's body); valid is sent by the default client"})
    seed: int = field(default=0, metadata={"help": "seed of the sample, the simulation and the model"})
    # Leaves, rate and the tree cap: the cheapest model within noise of the best valid Recall@32 in
    # benchmarks/rerank_cost.py's grid, since a server scores every candidate with every tree (docs/decisions.md).
    learning_rate: float = field(default=0.1, metadata={"help": "shrinkage of each boosting round"})
    num_leaves: int = field(default=7, metadata={"help": "leaves per tree at most"})
    min_data_in_leaf: int = field(default=20, metadata={"help": "least training rows in a leaf (LightGBM)"})
    lambda_l2: float = field(default=10.0, metadata={"help": "L2 penalty on leaf values (XGBoost's lambda)"})
    min_sum_hessian_in_leaf: float = field(default=1.0, metadata={
        "help": "least hessian a leaf holds (XGBoost's min_child_weight)"})
    max_rounds: int = field(default=50, metadata={
        "help": "boosting rounds (trees) at most; early stopping ends sooner (a large project without a "
                "dense model may want 200)"})
    # Valid NDCG@32 is noisy over a few hundred states, and a short patience stops at an early bump
    # (docs/decisions.md).
    early_stopping: int = field(default=200, metadata={
        "help": "rounds without a better valid NDCG@32 before stopping"})
    threads: int | None = field(default=None, metadata={"help": "threads of the library (default: all cores)"})
    extra: dict = field(default_factory=dict, metadata={"flag": False})
    """More parameters of the library, for code that builds a config; no flag (flags.ArgumentParser)."""

    def family_list(self) -> list[str]:
        """`families` as a list, in the order given (ValueError naming an unknown one)."""
        from leanpremise.rank.rerank.features import FAMILIES

        out = [f.strip() for f in self.families.split(",") if f.strip()]
        if unknown := [f for f in out if f not in FAMILIES]:
            raise ValueError(f"--families: unknown feature family {unknown[0]!r} (of {', '.join(FAMILIES)})")
        return out
