"""`export --hybrid FUSION_JSON`: the tuned fusion and what its lexical rankers need, written into a bundle.

The server then fuses without tokenising the corpus at startup: BM25 is bm25s's saved index of the corpus
texts, MePo the premise-symbol table, usage the per-premise counts over the data dir's train split. Only
rankers the fusion reads (weight above 0) are written.
"""

from __future__ import annotations

import logging
from pathlib import Path

from leanpremise.atomic import atomic_write_bytes
from leanpremise.bundle.layout import HYBRID_BM25, HYBRID_FUSION, HYBRID_MEPO, HYBRID_USAGE
from leanpremise.rank.fusion import FUSION_FILE, active_rankers, read_servable_fusion
from leanpremise.rank.names import side_rankers

logger = logging.getLogger(__name__)

DEEP_FUSION = 256
"""A fusion tuned deeper than this makes every served request rank that deep: warn."""


def check_fusion_file(path: Path):
    """The fusion spec at `path`, refused unless the server can apply it (one dense ranker at most, every
    other one lexical); checked before the export's long steps."""
    spec = read_servable_fusion(path)
    if spec.k is not None and spec.k > DEEP_FUSION:
        logger.warning("%s was tuned at depth k=%d: the server ranks every request that deep for it (tune with "
                       "`retrieve --hybrid ... --k 100` for LeanHammer's k)", path, spec.k)
    return spec


def uses_usage(spec) -> bool:
    """Whether the fusion reads the usage ranker (then `export` loads the states, not the corpus alone)."""
    return "usage" in side_rankers(active_rankers(spec))[0]


USAGE_STATES = ("train", "all")
"""Which proof states a bundle's usage counts count: the train split (as evaluation counts them), or every
state of the data dir (a project's own bundle: nothing of it is held out once it is served)."""


def usage_state_ids(dataset, which: str = "train"):
    """The state ids the usage counts of a bundle are made from (USAGE_STATES)."""
    import numpy as np

    if which == "train":
        return dataset.split_ids("train")
    if which == "all":
        return np.arange(len(dataset.states), dtype=np.int64)
    raise ValueError(f"usage states {which!r}: expected one of {', '.join(USAGE_STATES)}")


def write_hybrid(spec, corpus, work: Path, progress: bool = True, dataset=None, usage_states: str = "train") -> str:
    """fusion.json, the BM25 index, the MePo table and the usage counts (those the fusion reads) under
    `work`; the fusion file's bundle path. `dataset` (of the exported corpus) gives the usage counts, from
    its `usage_states` (USAGE_STATES)."""
    active = list(side_rankers(active_rankers(spec))[0])
    atomic_write_bytes(work / HYBRID_FUSION, FUSION_FILE.dump_json(spec, indent=1))
    write_side_rankers(active, corpus, work, progress, dataset, usage_states)
    logger.info("hybrid: %s; rankers written: %s", spec.label(), ", ".join(active) or "none")
    return HYBRID_FUSION


def write_side_rankers(kinds, corpus, work: Path, progress: bool = True, dataset=None, usage_states: str = "train"
                       ) -> None:
    """The files of the side rankers `kinds` (of bm25, mepo, usage) under `work`'s hybrid/, once each:
    a fusion and a reranker of one bundle read the same ones. `dataset` gives the usage counts, from its
    `usage_states` (USAGE_STATES)."""
    if "bm25" in kinds and not (work / HYBRID_BM25).exists():
        from leanpremise.rank.bm25 import BM25Ranker

        BM25Ranker(corpus.texts, progress=progress).save(work / HYBRID_BM25)
    if "mepo" in kinds and not (work / HYBRID_MEPO).exists():
        from leanpremise.rank.mepo import SymbolIndex

        SymbolIndex.from_corpus(corpus).save(work / HYBRID_MEPO)
    if "usage" in kinds and not (work / HYBRID_USAGE).exists():
        from leanpremise.rank.usage import UsageRanker, usage_counts

        if dataset is None:
            raise ValueError("the usage ranker is asked for: export needs the dataset to count it")
        states = usage_state_ids(dataset, usage_states)
        ranker = UsageRanker(usage_counts(dataset, states))
        ranker.save(work / HYBRID_USAGE)
        logger.info("usage ranker: %d of %d premises used by %d states (%s)", len(ranker.order), ranker.n,
                    len(states), usage_states)
