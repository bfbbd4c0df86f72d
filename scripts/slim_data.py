"""Write a compact copy of an ntp-toolkit data dir that loads to the same dataset.

The bulk of a real extraction is `srcUpToTactic` (every file's text up to every
tactic). The loader only needs the (line, column) it ends at, so the copy
replaces it with a string of the same line count and last-line length, empties
`declUpToTactic`, and drops the Declarations' `decl` field. Useful to move a
dataset to a training machine. Usage:

    python scripts/slim_data.py SRC_DIR OUT_DIR
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import orjson


def slim_state(raw: bytes) -> bytes:
    d = orjson.loads(raw)
    src = d["srcUpToTactic"]
    line, column = src.count("\n"), len(src) - src.rfind("\n")
    d["srcUpToTactic"] = "\n" * line + " " * (column - 1)
    d["declUpToTactic"] = ""
    return json.dumps(d, ensure_ascii=False).encode()


def slim_decl(raw: bytes) -> bytes:
    d = orjson.loads(raw)
    d.pop("decl", None)
    return json.dumps(d, ensure_ascii=False).encode()


def copy_lines(src: Path, dst: Path, fn) -> None:
    out = []
    for raw in src.read_bytes().splitlines():
        try:
            out.append(fn(raw) if raw.strip() else raw)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            out.append(raw)  # malformed lines are kept as they are: the loader reports them
    dst.write_bytes(b"\n".join(out) + b"\n")


def main() -> None:
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    dst.mkdir(parents=True)
    for name in ("revision", "HammerBlacklist.jsonl", "Modules.jsonl"):
        shutil.copy(src / name, dst / name)
    shutil.copytree(src / "Imports", dst / "Imports")
    for part, fn in (("Declarations", slim_decl), ("TrainingDataWithPremises", slim_state)):
        (dst / part).mkdir()
        for f in sorted((src / part).iterdir()):
            copy_lines(f, dst / part / f.name, fn)


if __name__ == "__main__":
    main()
