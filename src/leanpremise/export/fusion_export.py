"""`export --hybrid FUSION_JSON`: the tuned fusion and what its lexical rankers need, written into a bundle.

The server then fuses without tokenising the corpus at startup: BM25 is bm25s's saved index of the corpus
texts, MePo the premise-symbol table, usage the per-premise counts over the data dir's train split. Only
rankers the fusion reads (weight above 0) are written.
"""

from __future__ import annotations

import logging
from pathlib import Path

from leanpremise.bundle.side_rankers import write_fusion, write_side_rankers
from leanpremise.rank.fusion import active_rankers, read_servable_fusion
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


def write_hybrid(spec, corpus, work: Path, progress: bool = True, dataset=None, usage_states: str = "train") -> str:
    """fusion.json, the BM25 index, the MePo table and the usage counts (those the fusion reads) under
    `work`; the fusion file's bundle path. `dataset` (of the exported corpus) gives the usage counts, from
    its `usage_states` (bundle/side_rankers.USAGE_STATES)."""
    active = list(side_rankers(active_rankers(spec))[0])
    rel = write_fusion(spec, work)
    write_side_rankers(active, corpus, work, progress, dataset, usage_states)
    logger.info("hybrid: %s; rankers written: %s", spec.label(), ", ".join(active) or "none")
    return rel
