"""Cut the sample dataset shipped in the package from a larger ntp-toolkit data dir.

The sample is the import closure of a few root modules: every file of those
modules is copied unchanged (so it keeps the real format, quirks included),
and Modules.jsonl is cut to the same modules. Usage:

    python scripts/make_sample.py SRC_DIR OUT.tar.xz Mathlib.Algebra.Group.Basic Mathlib.Order.Lattice
"""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

NAME = "mathlib-sample"


def closure(src: Path, roots: list[str]) -> set[str]:
    keep = set(roots)
    for root in roots:
        for line in (src / "Imports" / f"{root}.jsonl").read_text().splitlines():
            keep.add(json.loads(line)["name"])
    return keep


def main() -> None:
    src, out, roots = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    keep = closure(src, roots)
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / NAME
        dst.mkdir()
        for name in ("revision", "HammerBlacklist.jsonl"):
            shutil.copy(src / name, dst / name)
        lines = [ln for ln in (src / "Modules.jsonl").read_text().splitlines() if json.loads(ln)["name"] in keep]
        (dst / "Modules.jsonl").write_text("\n".join(lines) + "\n")
        for part in ("Imports", "Declarations", "TrainingDataWithPremises"):
            (dst / part).mkdir()
            for module in sorted(keep):
                f = src / part / f"{module}.jsonl"
                if f.exists():
                    shutil.copy(f, dst / part / f.name)
        with tarfile.open(out, "w:xz", preset=9) as tar:
            tar.add(dst, arcname=NAME)
    print(f"{out}: {len(keep)} modules, {out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
