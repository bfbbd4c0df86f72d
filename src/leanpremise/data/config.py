"""The data options: one typed dataclass, the single source of every data flag.

`leanpremise train` hands :class:`DataConfig` to HfArgumentParser as it is;
every other command that reads a data dir gets the same flags generated from
the same fields by :func:`add_data_args` (help from each field's metadata), so
a flag's name, type, default and help are written once, here.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
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


def parse_bool(text: str) -> bool:
    """`True`/`False` (and 1/0, yes/no) as HfArgumentParser reads a bool flag, so both parsers agree."""
    low = str(text).lower()
    if low in ("true", "1", "yes", "t", "y"):
        return True
    if low in ("false", "0", "no", "f", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def _base_type(hint):
    """`X` for `X | None`; the hint itself otherwise."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def add_data_args(p: argparse.ArgumentParser, positional: bool = False) -> None:
    """Add one flag per DataConfig field to `p`, spelled and parsed as HfArgumentParser does in `train`.

    Bools take `--flag True/False` (bare `--flag` means True; a flag defaulting to True also gets
    `--no_flag`); `--a_b` is also `--a-b`. With `positional`, the data dir is an optional positional argument instead of a flag.
    """
    hints = typing.get_type_hints(DataConfig)
    for f in dataclasses.fields(DataConfig):
        kind, help_text = _base_type(hints[f.name]), f.metadata["help"]
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        if f.name == "data_dir" and positional:
            p.add_argument("data_dir", nargs="?", type=Path, default=None, help=help_text)
        elif kind is bool:
            p.add_argument(*flags, type=parse_bool, nargs="?", const=True, default=f.default,
                           metavar="True|False", help=f"{help_text} (default: {f.default})")
            if f.default is True:
                p.add_argument(f"--no_{f.name}", f"--no-{f.name.replace('_', '-')}", dest=f.name,
                               action="store_false", help=f"Same as --{f.name} False.")
        elif typing.get_origin(kind) is Literal:
            p.add_argument(*flags, choices=list(typing.get_args(kind)), default=f.default,
                           help=f"{help_text} (default: {f.default})")
        else:
            default = "" if f.default is None else f" (default: {f.default})"
            p.add_argument(*flags, type=kind, default=f.default, help=help_text + default)


def data_config_from_args(args: argparse.Namespace) -> DataConfig:
    """The DataConfig of parsed flags added by :func:`add_data_args`."""
    return DataConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DataConfig)})
