"""Pack a data dir and a model into a small bundle for training on a remote GPU machine.

Drops what the loader does not need (see scripts/slim_data.py) and keeps only
*direct* imports; scripts/remote/unpack.py rebuilds the transitive Imports files
on the other side. The model is stored in float16 (half the upload); unpack.py
converts it back to float32 before training. Usage:

    python scripts/remote/pack.py DATA_DIR MODEL_DIR OUT_DIR
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from slim_data import copy_lines, slim_decl, slim_state


def transfer_state(raw: bytes) -> bytes:
    """slim_state, minus the next-tactic fields that training does not read."""
    d = orjson.loads(slim_state(raw))
    d.pop("nextTactic", None)
    d.pop("nextTacticHammerRecommendation", None)
    return orjson.dumps(d)


def pack_data(src: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "data"
        dst.mkdir()
        for name in ("revision", "HammerBlacklist.jsonl", "Modules.jsonl"):
            shutil.copy(src / name, dst / name)
        (dst / "Imports").mkdir()
        for f in sorted((src / "Imports").iterdir()):
            direct = [ln for ln in f.read_bytes().splitlines() if ln.strip() and orjson.loads(ln).get("isDirect")]
            (dst / "Imports" / f.name).write_bytes(b"".join(ln + b"\n" for ln in direct))
        for part, fn in (("Declarations", slim_decl), ("TrainingDataWithPremises", transfer_state)):
            (dst / part).mkdir()
            for f in sorted((src / part).iterdir()):
                copy_lines(f, dst / part / f.name, fn)
        subprocess.run(f"tar -C '{tmp}' -cf - data | xz -9 -T2 > '{out}'", shell=True, check=True)


def pack_model(model_dir: Path, out: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    model.to(torch.float16)
    model.save(str(out))


def main() -> None:
    data_dir, model_dir, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "model16.tar.xz").exists():
        with tempfile.TemporaryDirectory() as tmp:
            pack_model(model_dir, Path(tmp) / "model16")
            subprocess.run(f"tar -C '{tmp}' -cf - model16 | xz -9 -T2 > '{out}/model16.tar.xz'", shell=True, check=True)
    pack_data(data_dir, out / "data.tar.xz")
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size / 2**20:8.2f} MiB  {p.relative_to(out)}")


if __name__ == "__main__":
    main()
