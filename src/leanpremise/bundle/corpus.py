"""A bundle's corpus, rebuilt from its unpacked premises with the corpus options its manifest records: the
corpus a server indexes, and the texts `export --reuse` hashes for a bundle written before text hashes."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from leanpremise.bundle.manifest import Manifest
from leanpremise.data import DataConfig, load_corpus
from leanpremise.data.corpus import Corpus


def bundle_corpus(manifest: Manifest, premises_dir: Path, cache_dir: Path | None = None,
                  use_cache: bool = True) -> Corpus:
    """The corpus of `premises_dir` (a bundle's unpacked `premises.tar.gz`) as `manifest` says it was built;
    `cache_dir`/`use_cache` as DataConfig's (the parse cache)."""
    return load_corpus(DataConfig(data_dir=Path(premises_dir), **asdict(manifest.corpus_options()),
                                  cache_dir=cache_dir, use_data_cache=use_cache))
