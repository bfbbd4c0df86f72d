"""SYNTHETIC next revision of an ntp-toolkit extraction: it imitates a month of Mathlib, it is NOT a release.

Derives revision N+1 of the extraction SRC into the new directory --out: renamed declarations (references
follow), statement edits, deleted and added declarations and modules, declarations moved to an imported
module. The output is deterministic for --seed, loads with `leanpremise data stats OUT`, and carries a
summary of what changed (`OUT/synthetic_revision.json`, counts per kind and the names). Used by the tests of
incremental export and by benchmarks/revision_update.py. Usage:

    python scripts/synthetic_revision.py SRC --out NEW [--seed 0] [--share_rename 0.01] ...

The logic lives in `leanpremise.testing.revision_synth` (its docstring says what each kind of change does).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from leanpremise.testing.revision_synth import SUMMARY_NAME, Shares, synthesize

HELP = {
    "rename": "share of corpus premises renamed",
    "edit": "share of corpus premises whose statement changes",
    "delete_decl": "share of corpus premises deleted",
    "add_decl": "new declarations, as a share of corpus premises",
    "move": "share of corpus premises moved to a module their module imports",
    "delete_module": "share of listed modules deleted (leaf modules only)",
    "add_module": "new modules, as a share of listed modules",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("src", type=Path, help="the extraction of revision N (read only)")
    parser.add_argument("--out", type=Path, required=True, help="new directory for revision N+1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--revision", default=None,
                        help="text of the new `revision` file (default: the old one + `+synthetic.<seed>`)")
    for f in fields(Shares):
        if f.name in HELP:
            parser.add_argument(f"--share_{f.name}", type=float, default=f.default,
                                help=f"{HELP[f.name]} (default {f.default})")
    parser.add_argument("--decls_per_added_module", type=int, default=Shares.decls_per_added_module)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shares = Shares(**{name: getattr(args, f"share_{name}") for name in HELP},
                    decls_per_added_module=args.decls_per_added_module)
    if not (args.src / "Modules.jsonl").is_file():
        print(f"synthetic_revision: error: {args.src}: not an extraction (no Modules.jsonl)", file=sys.stderr)
        return 2
    try:
        summary = synthesize(args.src, args.out, seed=args.seed, shares=shares, revision=args.revision)
    except FileExistsError as e:
        print(f"synthetic_revision: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary["counts"], indent=1))
    print(f"wrote {args.out} (revision {summary['revision']!r}; summary in {args.out / SUMMARY_NAME})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
