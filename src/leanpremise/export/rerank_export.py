"""`export --rerank RERANKER_DIR`: a trained reranker and what its rankers need, written into a bundle.

The reranker's own two files (reranker.json and the model in its library's text format) are copied as they
are; the side rankers it reads (BM25, MePo, usage) are the same files `export --fusion` writes (one copy when
a bundle has both), and usage by module and the nearest proved states are written beside the reranker. A reranker this code cannot apply
(another feature version, a model that does not load) or whose dense ranker read another model's embeddings
is refused before the export's long steps, in one line.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from leanpremise.bundle.layout import RERANK_DIR, RERANK_SPEC
from leanpremise.bundle.side_rankers import write_module_usage, write_nearest_states, write_side_rankers
from leanpremise.rank.kinds import RankerKind
from leanpremise.rank.rerank.model import Reranker
from leanpremise.rank.rerank.spec import RerankerFileError, RerankerSpec

logger = logging.getLogger(__name__)


def check_reranker_dir(folder: Path) -> RerankerSpec:
    """The reranker's spec, once its files load as the server will load them (RerankerFileError names the
    file and field otherwise)."""
    return Reranker.load(Path(folder)).spec


def uses_dataset(spec: RerankerSpec) -> bool:
    """Whether the reranker reads usage counts or the nearest proved states (then `export` loads the states,
    not the corpus alone)."""
    return RankerKind.USAGE in spec.kinds() or RankerKind.NEAREST in spec.kinds()


def check_dense_identity(spec: RerankerSpec, folder: Path, identities: set[str]) -> None:
    """Refuse a reranker whose dense ranker read another model's embeddings than the exported model's
    (`identities`: the content identities of that model, as given and as saved into the bundle)."""
    dense = spec.ranker("dense")
    if dense is None:
        return
    if not dense.model_identity or dense.model_identity not in identities:
        raise RerankerFileError(
            f"{Path(folder) / 'reranker.json'}: field \"rankers\": its dense ranker {dense.name!r} has model "
            f"identity {dense.model_identity or '(none recorded)'}, the exported model's is "
            f"{' / '.join(sorted(identities))}; train the reranker with this model (`rerank train --model`)")


def write_rerank(spec: RerankerSpec, folder: Path, corpus, work: Path, progress: bool = True, dataset=None,
                 usage_states: str = "train") -> str:
    """The reranker's files, its side rankers and usage by module (counted over `usage_states`,
    bundle/side_rankers.USAGE_STATES) under `work`; the spec's bundle path."""
    folder = Path(folder)
    (work / RERANK_DIR).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / spec.model_file, work / RERANK_DIR / spec.model_file)
    shutil.copyfile(folder / "reranker.json", work / RERANK_SPEC)
    side = [k for k in spec.kinds() if k != RankerKind.DENSE]
    write_side_rankers(side, corpus, work, progress, dataset, usage_states)
    if RankerKind.USAGE in side:
        write_module_usage(dataset, work, usage_states)
    if RankerKind.NEAREST in side:
        write_nearest_states(dataset, work, usage_states)
    logger.info("rerank: %s reranker over %s (depth %d) written", spec.library, ", ".join(spec.kinds()),
                spec.depth)
    return RERANK_SPEC
