"""Data layer: the ntp-toolkit reader, corpus, accessibility and split.

The usual entry point is :func:`leanpremise.data.dataset.load_dataset`.
"""

from leanpremise.data.config import CorpusOptions, DataConfig
from leanpremise.data.dataset import PremiseDataset, load_corpus, load_dataset

__all__ = ["CorpusOptions", "DataConfig", "PremiseDataset", "load_corpus", "load_dataset"]
