"""The data options: one typed dataclass, the single source of every data flag.

Every command that reads a data dir hands :class:`DataConfig` to HfArgumentParser
(`train` among its training arguments, the others through `leanpremise.flags`), so a
flag's name, type, default and help are written once, here.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

SplitMode = Literal["standard", "all"]


@dataclass(frozen=True)
class CorpusOptions:
    """Which declarations make the corpus and what text of each a model embeds: the options a bundle's
    manifest records (bundle/manifest.py, the same keys), so that a server rebuilds exactly the corpus its
    embeddings were made from."""

    mathlib_only: bool = field(default=False, metadata={
        "help": "Keep only premises and states of modules whose name starts with `Mathlib.`."})
    filter: bool = field(default=True, metadata={
        "help": "Apply the default corpus filters (module/name blacklists, `Lean.` types, HammerBlacklist)."})
    nameless: bool = field(default=False, metadata={"help": "Leave the premise name out of the text a model embeds."})

    def corpus_options(self) -> CorpusOptions:
        """These options alone (of a DataConfig: without where the data is and how it is split)."""
        return CorpusOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(CorpusOptions)})


@dataclass(frozen=True)
class DataConfig(CorpusOptions):
    """How to read an ntp-toolkit data dir and split it: the corpus options (inherited, the same flat flags)
    and the rest.

    The defaults reproduce the original LeanHammer training code, so that two
    runs on the same data and seed evaluate on the same theorems. Field names
    are the flag names (those of the original's train.py).
    """

    data_dir: Path | None = field(default=None, metadata={
        "help": "ntp-toolkit data dir (default: the sample shipped with the package)."})
    split_seed: int = field(default=0, metadata={
        "help": "Seed of the valid/test split (0 reproduces the original's split)."})
    n_valid: int = field(default=500, metadata={"help": "Valid declarations."})
    n_test: int = field(default=500, metadata={"help": "Test declarations."})
    split_mode: SplitMode = field(default="standard", metadata={
        "help": "`standard`: test/valid/train as the original; `all`: every eligible root state is evaluated "
                "(another project's extraction)."})
    cache_dir: Path | None = field(default=None, metadata={
        "help": "Cache of parsed data dirs (default: $LEANPREMISE_CACHE_DIR, else ~/.cache/leanpremise)."})
    use_data_cache: bool = field(default=True, metadata={
        "help": "Load a data dir's parse from the cache when no input file changed (False: parse again)."})
    workers: int | None = field(default=None, metadata={
        "help": "Parser processes (default: from the CPU count and the data size)."})


def default_cache_dir() -> Path:
    """Where `cache_dir` points when unset: `$LEANPREMISE_CACHE_DIR`, else `$XDG_CACHE_HOME/leanpremise`,
    else `~/.cache/leanpremise` (read when called, never at import)."""
    env = os.environ.get("LEANPREMISE_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "leanpremise"


def flags_without_data_dir() -> type:
    """The DataConfig fields but `data_dir`, as a dataclass of flags: for the commands whose data dir is an
    optional positional argument (`data stats DIR`), which HfArgumentParser cannot make. The positional's
    dest is `data_dir`, so ``from_args(args, DataConfig)`` reads both kinds of command alike."""
    hints = typing.get_type_hints(DataConfig)
    return dataclasses.make_dataclass("DataFlags", [
        (f.name, hints[f.name], field(default=f.default, default_factory=f.default_factory,
                                      metadata=f.metadata))
        for f in dataclasses.fields(DataConfig) if f.name != "data_dir"], frozen=True)
