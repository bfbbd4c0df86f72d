"""Load a data dir into corpus, states, accessibility and split: the data layer's entry point."""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from leanpremise.data.accessibility import Accessibility
from leanpremise.data.config import DataConfig
from leanpremise.data.corpus import Corpus
from leanpremise.data.jsonl import BadLines
from leanpremise.data.parse_cache import read_data_dir
from leanpremise.data.sample import sample_data_dir
from leanpremise.data.split import Split, make_split
from leanpremise.data.states import States

logger = logging.getLogger(__name__)


def resolve_data_dir(config: DataConfig) -> Path:
    """The configured data dir, or the packaged sample when none is given."""
    if config.data_dir is None:
        return sample_data_dir(config.cache_dir)
    return Path(config.data_dir).expanduser()


def peak_rss_bytes() -> int:
    """Peak resident memory of this process and of its (parser) children, whichever is larger."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * 1024


@dataclass
class PremiseDataset:
    """Everything training, evaluation and serving need from one data dir."""

    config: DataConfig
    data_dir: Path
    corpus: Corpus
    states: States
    access: Accessibility
    split: Split
    bad_lines: BadLines
    load_seconds: float

    @property
    def revision(self) -> str:
        return self.corpus.revision

    def split_ids(self, name: str) -> np.ndarray:
        return self.split.get(name)

    def stats(self) -> dict:
        """The figures `leanpremise data stats` prints."""
        st, sp = self.states, self.split
        npos = st.n_positives
        train_pairs = int(npos[sp.train].sum()) if len(sp.train) else 0
        train_decls = len({st.decl_name[s] for s in sp.train.tolist()})
        return {
            "data_dir": str(self.data_dir),
            "revision": self.revision,
            "modules": len(self.corpus.listed_modules),
            "modules_with_imported_only": len(self.corpus.modules),
            "modules_with_declarations": int((self.corpus.module_end > self.corpus.module_start).sum()),
            "premises_unfiltered": self.corpus.stats.premises_unfiltered,
            "premises": self.corpus.stats.premises,
            "premises_filtered_out": self.corpus.stats.filtered_out,
            "duplicate_premises_dropped": self.corpus.stats.duplicates_dropped,
            "states": len(st),
            "declarations": len(set(st.decl_name)),
            "train_declarations": train_decls,
            "valid_declarations": len(sp.valid_decls),
            "test_declarations": len(sp.test_decls),
            "train_states": len(sp.train),
            "valid_states": len(sp.valid),
            "test_states": len(sp.test),
            "all_states": len(sp.all),
            "train_pairs": train_pairs,
            "mean_positives_per_state": float(npos.mean()) if len(npos) else 0.0,
            "share_states_without_positives": float((npos == 0).mean()) if len(npos) else 0.0,
            "malformed_lines": self.bad_lines.count,
            "load_seconds": round(self.load_seconds, 3),
            "peak_rss_bytes": peak_rss_bytes(),
        }


def load_dataset(config: DataConfig | None = None, **overrides) -> PremiseDataset:
    """Read (or load from cache), filter, and split a data dir."""
    config = replace(config or DataConfig(), **overrides)
    t0 = time.perf_counter()
    data_dir = resolve_data_dir(config)
    raw = read_data_dir(data_dir, with_states=True, cache_dir=config.cache_dir, use_cache=config.use_data_cache,
                        workers=config.workers)
    corpus = Corpus(raw, **asdict(config.corpus_options()))
    states = States(raw.states, corpus, mathlib_only=config.mathlib_only)
    split = make_split(states, corpus, seed=config.split_seed, n_valid=config.n_valid, n_test=config.n_test,
                       mode=config.split_mode)
    access = Accessibility(corpus, states)
    seconds = time.perf_counter() - t0
    logger.info("loaded %s: %d premises, %d states in %.1fs", data_dir, len(corpus), len(states), seconds)
    return PremiseDataset(config=config, data_dir=data_dir, corpus=corpus, states=states, access=access,
                          split=split, bad_lines=raw.bad_lines, load_seconds=seconds)


def load_corpus(config: DataConfig | None = None, **overrides) -> Corpus:
    """The corpus alone: for a premise server or an export, where no TrainingDataWithPremises is needed."""
    config = replace(config or DataConfig(), **overrides)
    data_dir = resolve_data_dir(config)
    raw = read_data_dir(data_dir, with_states=False, cache_dir=config.cache_dir, use_cache=config.use_data_cache,
                        workers=config.workers)
    return Corpus(raw, **asdict(config.corpus_options()))
