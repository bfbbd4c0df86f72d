"""The side rankers' files in a bundle (BM25 index, MePo table, usage counts, usage by module, the fusion):
written by `export --fusion` and `export --rerank`, read by the server's fused and re-ranked rankings, here
only, so the writer and the readers name the same files the same way (bundle/layout.py has their paths).

A bundle with a fusion and a reranker holds one copy of each side ranker's files: both read them. Every
reader checks what it reads against the corpus it serves (sizes, counts) and refuses a damaged file with a
BundleError naming it; nothing is unpickled.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from leanpremise.atomic import atomic_write_bytes
from leanpremise.bundle.layout import (
    HYBRID_BM25,
    HYBRID_FUSION,
    HYBRID_MEPO,
    HYBRID_USAGE,
    RERANK_MODULE_USAGE,
    RERANK_NEAREST,
    BundleError,
)
from leanpremise.rank.kinds import RankerKind
from leanpremise.rank.side import SideRankers

logger = logging.getLogger(__name__)

USAGE_STATES = ("train", "all")
"""Which proof states a bundle's usage counts count: the train split (as evaluation counts them), or every
state of the data dir (a project's own bundle: nothing of it is held out once it is served)."""


def usage_state_ids(dataset, which: str = "train") -> np.ndarray:
    """The state ids the usage counts of a bundle are made from (USAGE_STATES)."""
    if which == "train":
        return dataset.split_ids("train")
    if which == "all":
        return np.arange(len(dataset.states), dtype=np.int64)
    raise ValueError(f"usage states {which!r}: expected one of {', '.join(USAGE_STATES)}")


# ---- writing (export) ---------------------------------------------------------------------------------

def write_fusion(spec, work: Path) -> str:
    """The fusion's file under `work` (atomically); its bundle path (the manifest's `hybrid`)."""
    from leanpremise.rank.fusion import FUSION_FILE

    atomic_write_bytes(work / HYBRID_FUSION, FUSION_FILE.dump_json(spec, indent=1))
    return HYBRID_FUSION


def write_side_rankers(kinds, corpus, work: Path, progress: bool = True, dataset=None, usage_states: str = "train"
                       ) -> None:
    """The files of the side rankers `kinds` (of bm25, mepo, usage) under `work`, once each: a fusion and a
    reranker of one bundle read the same ones. `dataset` gives the usage counts, from its `usage_states`."""
    if RankerKind.BM25 in kinds and not (work / HYBRID_BM25).exists():
        from leanpremise.rank.bm25 import BM25Ranker

        BM25Ranker(corpus.texts, progress=progress).save(work / HYBRID_BM25)
    if RankerKind.MEPO in kinds and not (work / HYBRID_MEPO).exists():
        from leanpremise.rank.mepo import SymbolIndex

        SymbolIndex.from_corpus(corpus).save(work / HYBRID_MEPO)
    if RankerKind.USAGE in kinds and not (work / HYBRID_USAGE).exists():
        from leanpremise.rank.usage import UsageRanker, usage_counts

        if dataset is None:
            raise ValueError("the usage ranker is asked for: export needs the dataset to count it")
        states = usage_state_ids(dataset, usage_states)
        ranker = UsageRanker(usage_counts(dataset, states))
        ranker.save(work / HYBRID_USAGE)
        logger.info("usage ranker: %d of %d premises used by %d states (%s)", len(ranker.order), ranker.n,
                    len(states), usage_states)


def write_module_usage(dataset, work: Path, usage_states: str = "train") -> None:
    """Usage by module over the whole corpus from `usage_states` (the train split by default: the counts the
    reranker was trained with; evaluation's index over the full corpus counts the same states)."""
    from leanpremise.rank.module_usage import ModuleUsage

    state_ids = usage_state_ids(dataset, usage_states)
    positives = [dataset.states.positives(s) for s in state_ids.tolist()]
    ModuleUsage.from_positives(np.asarray(dataset.states.module_id)[state_ids], positives,
                               len(dataset.corpus.modules), len(dataset.corpus)).save(work / RERANK_MODULE_USAGE)


def write_nearest_states(dataset, work: Path, usage_states: str = "train") -> None:
    """The nearest proved states' table (rank/nearest_states.py) from the same states as the usage counts."""
    from leanpremise.rank.nearest_states import NearestStates

    NearestStates.from_states(dataset.states, usage_state_ids(dataset, usage_states), None,
                              len(dataset.corpus)).save(work / RERANK_NEAREST)


# ---- reading (serve) ----------------------------------------------------------------------------------

def read_fusion(root: Path, manifest):
    """The bundle's fusion (`manifest.hybrid`), refused unless a server can apply it (BundleError, one line)."""
    from leanpremise.rank.fusion import FusionFileError, read_servable_fusion

    try:
        return read_servable_fusion(Path(root) / manifest.hybrid)
    except FusionFileError as e:
        raise BundleError(str(e)) from e


def read_side_rankers(root: Path, kinds, corpus, mepo_config=None, module_usage: bool = False) -> SideRankers:
    """The side rankers `kinds` (of bm25, mepo, usage, nearest) of the bundle at `root`, checked against `corpus`, as a
    request runs them (rank/side.py); with `module_usage` and usage, usage by module too. BundleError names the
    file that is missing or damaged."""
    root = Path(root)
    n = len(corpus)
    bm25 = mepo = usage = by_module = nearest = None
    try:
        if RankerKind.BM25 in kinds:
            from leanpremise.rank.bm25 import BM25Ranker

            bm25 = BM25Ranker.load(root / HYBRID_BM25, n)
        if RankerKind.MEPO in kinds:
            from leanpremise.rank.mepo import SymbolIndex

            mepo = SymbolIndex.load(root / HYBRID_MEPO, n)
        if RankerKind.USAGE in kinds:
            from leanpremise.rank.usage import UsageRanker

            usage = UsageRanker.load(root / HYBRID_USAGE, n)
            if module_usage:
                from leanpremise.rank.module_usage import ModuleUsage

                by_module = ModuleUsage.load(root / RERANK_MODULE_USAGE, len(corpus.modules), n)
        if RankerKind.NEAREST in kinds:
            from leanpremise.rank.nearest_states import NearestStates

            nearest = NearestStates.load(root / RERANK_NEAREST, n)
    except (OSError, ValueError) as e:
        raise BundleError(f"{root}: side rankers: {e}") from e
    side = SideRankers(bm25, mepo, mepo_config, usage, corpus.name_to_id if usage is not None else None, by_module,
                       nearest)
    side.n = n
    return side
