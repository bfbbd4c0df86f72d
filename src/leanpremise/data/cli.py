"""`leanpremise data stats|split`: inspect a data dir and its split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leanpremise.atomic import atomic_write_bytes
from leanpremise.data.config import add_data_args, data_config_from_args

NOTES = {
    "modules": "listed in Modules.jsonl",
    "modules_with_imported_only": "plus modules only imported, without files (Lean core such as Init.Core); "
                                  "the server counts these",
}
"""A word after the figures whose meaning is not plain from the key."""


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
        note = f"  ({NOTES[key]})" if key in NOTES else ""
        print(f"{key:<{width}}  {value}{note}")
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
