"""`leanpremise data stats|split`: inspect a data dir and its split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leanpremise.atomic import atomic_write_bytes
from leanpremise.data.config import DataConfig


def add_data_args(p: argparse.ArgumentParser, positional: bool = False) -> None:
    """The data options every command that reads a data dir shares (names as the original's train.py)."""
    if positional:
        p.add_argument("data_dir", nargs="?", type=Path, default=None,
                       help="ntp-toolkit data dir (default: the sample shipped with the package)")
    else:
        p.add_argument("--data_dir", type=Path, default=None,
                       help="ntp-toolkit data dir (default: the sample shipped with the package)")
    p.add_argument("--mathlib_only", type=_bool, default=False, help="keep only Mathlib.* modules")
    p.add_argument("--filter", type=_bool, default=True, help="apply the default corpus filters (True/False)")
    p.add_argument("--nameless", type=_bool, default=False, help="leave premise names out of premise texts")
    p.add_argument("--seed", type=int, default=0, help="split seed (0 reproduces the original's split)")
    p.add_argument("--n_valid", type=int, default=500)
    p.add_argument("--n_test", type=int, default=500)
    p.add_argument("--split_mode", choices=["standard", "all"], default="standard",
                   help="`all` evaluates every eligible root state (another project's extraction)")
    p.add_argument("--no_cache", action="store_true", help="re-parse the data dir even if a cached parse exists")


def _bool(text: str) -> bool:
    low = str(text).lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def data_config_from_args(args: argparse.Namespace) -> DataConfig:
    return DataConfig(
        data_dir=args.data_dir,
        mathlib_only=args.mathlib_only,
        filter=args.filter,
        nameless=args.nameless,
        seed=args.seed,
        n_valid=args.n_valid,
        n_test=args.n_test,
        split_mode=args.split_mode,
        use_cache=not args.no_cache,
    )


def _stats(args: argparse.Namespace) -> int:
    from leanpremise.data.dataset import load_dataset

    stats = load_dataset(data_config_from_args(args)).stats()
    if args.json:
        print(json.dumps(stats))
        return 0
    width = max(map(len, stats))
    for key, value in stats.items():
        if key == "peak_rss_bytes":
            value = f"{value / 2**20:.0f} MiB"
        elif isinstance(value, float):
            value = f"{value:.3f}"
        print(f"{key:<{width}}  {value}")
    return 0


def _split(args: argparse.Namespace) -> int:
    from leanpremise.data.dataset import load_dataset

    ds = load_dataset(data_config_from_args(args))
    payload = {"valid": ds.split.valid_decls, "test": ds.split.test_decls}
    atomic_write_bytes(Path(args.out), json.dumps(payload, indent=1).encode())
    print(f"wrote {args.out}: {len(payload['valid'])} valid, {len(payload['test'])} test declarations")
    return 0


def register(sub) -> None:
    data = sub.add_parser("data", help="inspect an ntp-toolkit data dir (stats, split)")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    stats = data_sub.add_parser("stats", help="counts, split sizes, load time and peak memory")
    add_data_args(stats, positional=True)
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(func=_stats)
    split = data_sub.add_parser("split", help="write the valid/test declaration names as JSON")
    add_data_args(split, positional=True)
    split.add_argument("--out", required=True, type=Path, help="output JSON file")
    split.set_defaults(func=_split)
