"""`leanpremise data stats|split`: inspect a data dir and its split."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from leanpremise.atomic import atomic_write_bytes
from leanpremise.data.config import DataConfig, flags_without_data_dir
from leanpremise.flags import from_args, switch

NOTES = {
    "modules": "listed in Modules.jsonl",
    "modules_with_imported_only": "plus modules only imported, without files (Lean core such as Init.Core); "
                                  "the server counts these",
}
"""A word after the figures whose meaning is not plain from the key."""

DATA_DIR_HELP = next(f.metadata["help"] for f in dataclasses.fields(DataConfig) if f.name == "data_dir")


@dataclass
class StatsFlags:
    json: bool = switch("print one JSON object")


@dataclass
class SplitFlags:
    out: Path = field(metadata={"help": "output JSON file"})


def _stats(args: argparse.Namespace) -> int:
    from leanpremise.data.dataset import load_dataset

    stats = load_dataset(from_args(args, DataConfig)).stats()
    if from_args(args, StatsFlags).json:
        print(json.dumps(stats))
        return 0
    width = max(map(len, stats))
    for key, value in stats.items():
        if key == "peak_rss_bytes":
            value = f"{value / 2**20:.0f} MiB"
        elif isinstance(value, float):
            value = f"{value:.3f}"
        note = f"  ({NOTES[key]})" if key in NOTES else ""
        print(f"{key:<{width}}  {value}{note}")
    return 0


def _split(args: argparse.Namespace) -> int:
    from leanpremise.data.dataset import load_dataset

    ds = load_dataset(from_args(args, DataConfig))
    out = from_args(args, SplitFlags).out
    payload = {"valid": ds.split.valid_decls, "test": ds.split.test_decls}
    atomic_write_bytes(out, json.dumps(payload, indent=1).encode())
    print(f"wrote {out}: {len(payload['valid'])} valid, {len(payload['test'])} test declarations")
    return 0


def register(sub) -> None:
    data = sub.add_parser("data", help="inspect an ntp-toolkit data dir (stats, split)")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    data_flags = flags_without_data_dir()
    stats = data_sub.add_parser("stats", dataclass_types=[data_flags, StatsFlags],
                                help="counts, split sizes, load time and peak memory")
    stats.add_argument("data_dir", nargs="?", type=Path, default=None, help=DATA_DIR_HELP)
    stats.set_defaults(func=_stats)
    split = data_sub.add_parser("split", dataclass_types=[data_flags, SplitFlags],
                                help="write the valid/test declaration names as JSON")
    split.add_argument("data_dir", nargs="?", type=Path, default=None, help=DATA_DIR_HELP)
    split.set_defaults(func=_split)
