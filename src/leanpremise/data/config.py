"""Typed configuration of the data layer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SplitMode = Literal["standard", "all"]


@dataclass(frozen=True)
class DataConfig:
    """How to read an ntp-toolkit data dir and split it.

    The defaults reproduce the original LeanHammer training code, so that two
    runs on the same data and seed evaluate on the same theorems.
    """

    data_dir: Path | None = None
    """Data dir in the ntp-toolkit layout; None means the sample shipped with the package."""
    mathlib_only: bool = False
    """Keep only premises and states of modules whose name starts with `Mathlib.`."""
    filter: bool = True
    """Apply the default corpus filters (module/name blacklists, `Lean.` types, HammerBlacklist)."""
    nameless: bool = False
    """Leave the premise name out of the text a model embeds."""
    seed: int = 0
    n_valid: int = 500
    n_test: int = 500
    split_mode: SplitMode = "standard"
    """`standard`: test/valid/train as the original; `all`: every eligible root state is evaluated."""
    cache_dir: Path | None = None
    """Where parsed data dirs are cached; None means `$LEANPREMISE_CACHE_DIR` or `~/.cache/leanpremise`."""
    use_cache: bool = True
    workers: int | None = None
    """Parser processes; None picks from the CPU count and the data size."""
