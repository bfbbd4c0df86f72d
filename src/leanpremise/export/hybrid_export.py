"""`export --hybrid FUSION_JSON`: the tuned fusion and what its lexical rankers need, written into a bundle.

The server then fuses without tokenising the corpus at startup: BM25 is bm25s's saved index of the corpus
texts, MePo the premise-symbol table, usage the per-premise counts over the data dir's train split. Only
rankers the fusion reads (weight above 0) are written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from leanpremise.atomic import atomic_write_bytes
from leanpremise.bundle import (
    HYBRID_BM25,
    HYBRID_FUSION,
    HYBRID_MEPO,
    HYBRID_USAGE,
    MEPO_INDICES,
    MEPO_INDPTR,
    MEPO_VOCAB,
)
from leanpremise.eval.fusion import FUSION_FILE, FusionFileError, active_rankers, read_fusion
from leanpremise.eval.hybrid import LEXICAL, side_rankers

logger = logging.getLogger(__name__)

DEEP_FUSION = 256
"""A fusion tuned deeper than this makes every served request rank that deep: warn."""


def check_fusion_file(path: Path):
    """The fusion spec at `path`, refused unless the server can apply it (one dense ranker at most, every
    other one lexical); checked before the export's long steps."""
    spec = read_fusion(path)
    try:
        _, _, dense = side_rankers(spec.rankers)
    except ValueError as e:
        raise FusionFileError(f"{path}: field \"rankers\": {e}") from None
    if len(dense) > 1:
        raise FusionFileError(f"{path}: field \"rankers\": {dense} are not lexical rankers ({', '.join(LEXICAL)}); "
                         "a bundle has one dense model")
    if spec.k is not None and spec.k > DEEP_FUSION:
        logger.warning("%s was tuned at depth k=%d: the server ranks every request that deep for it (tune with "
                       "`retrieve --hybrid ... --k 100` for LeanHammer's k)", path, spec.k)
    return spec


def write_hybrid(spec, corpus, work: Path, progress: bool = True, data=None) -> str:
    """fusion.json, the BM25 index, the MePo table and the usage counts (those the fusion reads) under
    `work`; the fusion file's bundle path. `data` (a DataConfig) is read for the usage counts."""
    active = list(side_rankers(active_rankers(spec))[0])
    atomic_write_bytes(work / HYBRID_FUSION, FUSION_FILE.dump_json(spec, indent=1))
    if "bm25" in active:
        from leanpremise.eval.bm25 import BM25Ranker

        BM25Ranker(corpus.texts, progress=progress).save(work / HYBRID_BM25)
    if "mepo" in active:
        from leanpremise.eval.mepo import SymbolIndex

        vocab, indptr, indices = SymbolIndex.from_corpus(corpus).to_arrays()
        folder = work / HYBRID_MEPO
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / MEPO_VOCAB, json.dumps(vocab, ensure_ascii=False).encode())
        np.save(folder / MEPO_INDPTR, np.asarray(indptr, dtype=np.int64), allow_pickle=False)
        np.save(folder / MEPO_INDICES, np.asarray(indices, dtype=np.int32), allow_pickle=False)
    if "usage" in active:
        write_usage(corpus, data, work / HYBRID_USAGE)
    logger.info("hybrid: %s; lexical rankers written: %s", spec.label(),
                ", ".join(n for n in active if n in LEXICAL) or "none")
    return HYBRID_FUSION


def write_usage(corpus, data, path: Path):
    """The usage counts of the data dir's train split, in the exported corpus's order."""
    from leanpremise.data import load_dataset
    from leanpremise.eval.usage import UsageRanker

    if data is None:
        raise ValueError("the fusion uses the usage ranker: export needs the data dir to count it")
    ds = load_dataset(data)
    if ds.corpus.names != corpus.names:
        raise ValueError(f"{data.data_dir}: the dataset's corpus differs from the exported one")
    ranker = UsageRanker.from_dataset(ds)
    ranker.save(path)
    logger.info("usage ranker: %d of %d premises used by %d train states", len(ranker.order), ranker.n,
                len(ds.split_ids("train")))
