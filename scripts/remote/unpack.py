"""Unpack a bundle made by scripts/remote/pack.py: rebuild transitive imports, restore a float32 model.

    python scripts/remote/unpack.py BUNDLE_DIR OUT_DIR   ->  OUT_DIR/data, OUT_DIR/model
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path


def transitive_imports(imports_dir: Path) -> None:
    """Rewrite each Imports file with its transitive closure (direct ones flagged isDirect)."""
    direct = {f.name[:-6]: [json.loads(ln)["name"] for ln in f.read_text().splitlines() if ln.strip()]
              for f in imports_dir.iterdir()}
    closure: dict[str, set[str]] = {}

    def close(m: str) -> set[str]:
        if m not in closure:
            closure[m] = set()  # cycles cannot happen in Lean; this guards anyway
            acc = set()
            for d in direct.get(m, []):
                acc.add(d)
                acc |= close(d)
            closure[m] = acc
        return closure[m]

    sys.setrecursionlimit(100000)
    for m, ds in direct.items():
        ds_set = set(ds)
        lines = [json.dumps({"name": n, "isDirect": n in ds_set}) for n in sorted(close(m))]
        (imports_dir / f"{m}.jsonl").write_text("".join(ln + "\n" for ln in lines))


def main() -> None:
    bundle, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for archive in ("data.tar.xz", "model16.tar.xz"):
        if (bundle / archive).exists():
            with tarfile.open(bundle / archive) as tar:
                tar.extractall(out if archive.startswith("data") else bundle, filter="data")
    transitive_imports(out / "data" / "Imports")
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(bundle / "model16"), device="cpu")
    model.to(torch.float32)
    model.save(str(out / "model"))


if __name__ == "__main__":
    main()
