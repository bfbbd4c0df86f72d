"""A new revision in minutes: full export vs `export --reuse` of the previous bundle, on CPU.

    python benchmarks/revision_update.py [--data src|small] [--model DIR] [--seed 0]
        [--full_from_throughput N] [--old_bundle DIR]

Revision N is mathlib-src (`--data small`: mathlib-small); revision N+1 is a SYNTHETIC next revision made by
scripts/synthetic_revision.py with its default shares (a few percent of premises renamed, edited, added,
deleted, moved), cached in the bench cache. Both exports run through the CLI (`leanpremise export --device
cpu`, ONNX on, int8 off) on a warm parse cache; each run's command time is measured.

- Full export: really run, unless `--full_from_throughput N`: then the embedding throughput is measured on
  N random premises of revision N+1 (the exporter's own batching) and the full time is extrapolated as
  (an export of the same corpus with pre-computed rows, timed: everything but the embedding) + premises /
  throughput; the JSON labels it `extrapolated`.
- Old bundle: `--data small` exports revision N itself first (real MiniLM rows). `--data src` uses
  `--old_bundle` (default <bench cache>/bundles/mathlib-src-minilm, built by benchmarks/serve_load.py if
  missing); when its rows are random stand-ins (the JSON says so), timings and row counts hold, equality
  with a full export does not mean anything for the reused rows.
- Equality: reused rows bit-identical to the old bundle's rows of the same text; when the full export ran,
  the largest difference between the `--reuse` bundle and it, over embedded and over all rows (target
  1e-5), and whether every other file is identical.

Target: the `--reuse` export takes <= 5 % of the full one. Writes benchmarks/results/revision_update.json
(`--data small`: revision_update_small.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, bench_cache, unpacked, write_result

DATA = {"src": "mathlib-src", "small": "mathlib-small"}
SCRIPT = REPO / "scripts" / "synthetic_revision.py"
MODEL_NAME = "all-MiniLM-L6-v2"


def next_revision(src: Path, name: str, seed: int) -> Path:
    """The synthetic revision N+1 of `src` (script defaults), made once into the bench cache."""
    out = bench_cache() / "revisions" / f"{name}-synthetic-{seed}"
    if (out / "synthetic_revision.json").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(SCRIPT), str(src), "--out", str(out), "--seed", str(seed)], check=True)
    return out


def timed_export(model: Path, data: Path, out: Path, *extra: str) -> tuple[float, dict]:
    """Run `leanpremise export` on CPU into a fresh `out`; (seconds, the JSON line it printed)."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.parent / f".{out.name}.chunks", ignore_errors=True)  # no resume from an earlier run
    cmd = [sys.executable, "-m", "leanpremise", "export", "--model", str(model), "--data_dir", str(data),
           "--out", str(out), "--device", "cpu", "--model_name", MODEL_NAME, *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return seconds, json.loads(proc.stdout.strip().splitlines()[-1])


def embedding_throughput(model_dir: Path, texts: list[str], n: int, seed: int) -> float:
    """Premises/s of the exporter's encoding (chunk batching, CPU) on `n` random texts."""
    from leanpremise.export.corpus_embeddings import encode_chunk
    from leanpremise.model.encoder import encode_texts, load_model

    model = load_model(model_dir, "cpu")
    pick = np.random.default_rng(seed).choice(len(texts), size=min(n, len(texts)), replace=False)
    sample = [texts[i] for i in pick.tolist()]
    dim = model.get_embedding_dimension()
    encode_chunk(lambda b: encode_texts(model, b), sample[:64], dim, 64, lambda _: None)  # warm-up
    t0 = time.perf_counter()
    encode_chunk(lambda b: encode_texts(model, b, batch_size=64), sample, dim, 64, lambda _: None)
    return len(sample) / (time.perf_counter() - t0)


def rows_of(bundle: Path) -> tuple[np.ndarray, np.ndarray | None]:
    from leanpremise.bundle.manifest import Manifest

    m = Manifest.read(bundle)
    hashes = np.load(bundle / m.text_hashes) if m.text_hashes else None
    return np.load(bundle / m.embeddings, mmap_mode="r"), hashes


def reused_rows_identical(old: Path, new: Path, new_texts_hashes: np.ndarray) -> bool | None:
    """Whether every row of `new` whose text `old` holds is `old`'s row bit for bit (None: `old` has no
    recorded text hashes to map rows with)."""
    old_rows, old_hashes = rows_of(old)
    new_rows, _ = rows_of(new)
    if old_hashes is None:
        return None
    where = {h.tobytes(): j for j, h in enumerate(old_hashes)}
    pairs = [(i, where[h.tobytes()]) for i, h in enumerate(new_texts_hashes) if h.tobytes() in where]
    if not pairs:
        return True
    i, j = map(list, zip(*pairs, strict=True))
    return bool(np.array_equal(np.asarray(new_rows[i]).view(np.uint32), np.asarray(old_rows[j]).view(np.uint32)))


def other_files_identical(a: Path, b: Path) -> bool:
    """Every file but the embeddings and the manifest has the same sha256 in both bundles."""
    from leanpremise.bundle.manifest import Manifest

    ma, mb = Manifest.read(a), Manifest.read(b)
    skip = {ma.embeddings}
    return {k: v for k, v in ma.checksums.items() if k not in skip} == \
        {k: v for k, v in mb.checksums.items() if k not in skip}


def main() -> None:
    from leanpremise.bundle.manifest import Manifest
    from leanpremise.data import DataConfig, load_corpus
    from leanpremise.model.encoder import default_model_path

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=sorted(DATA), default="src")
    ap.add_argument("--model", type=Path, default=None, help="SentenceTransformer dir (default: packaged MiniLM)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic revision and of the sample")
    ap.add_argument("--full_from_throughput", type=int, default=None, metavar="N",
                    help="do not run the full export: extrapolate it from the throughput on N premises")
    ap.add_argument("--old_bundle", type=Path, default=None,
                    help="bundle of revision N (--data src; default <bench cache>/bundles/mathlib-src-minilm)")
    args = ap.parse_args()
    model = args.model or default_model_path()
    name = DATA[args.data]
    old_data = unpacked(name)
    new_data = next_revision(old_data, name, args.seed)
    work = bench_cache() / "revision_update" / name
    work.mkdir(parents=True, exist_ok=True)
    new_corpus = load_corpus(DataConfig(data_dir=new_data))  # also warms the parse cache for the timed runs
    result: dict = {"data": name, "next_revision": f"synthetic (scripts/synthetic_revision.py, seed {args.seed})",
                    "synthetic_changes": json.loads((new_data / "synthetic_revision.json").read_text())["counts"],
                    "premises": len(new_corpus), "model": MODEL_NAME if args.model is None else str(args.model),
                    "device": "cpu"}

    if args.data == "small":
        old = work / "old"
        result["old_bundle_export_s"] = round(timed_export(model, old_data, old)[0], 1)
        result["old_bundle"] = {"path": str(old), "rows": "MiniLM (exported here)"}
    else:
        old = args.old_bundle or bench_cache() / "bundles" / "mathlib-src-minilm"
        if not (old / "manifest.json").is_file():
            from serve_load import ensure_bundle, minilm_embeddings

            ensure_bundle(old, old_data, minilm_embeddings(), len(load_corpus(DataConfig(data_dir=old_data))))
        random_rows = "random" in Manifest.read(old).source_model
        result["old_bundle"] = {"path": str(old), "rows": "random stand-ins (timing only)" if random_rows
                                else "MiniLM"}
    result["old_bundle"]["text_hashes_recorded"] = Manifest.read(old).text_hashes is not None

    reuse_s, printed = timed_export(model, new_data, work / "reused", "--reuse", str(old))
    result["reuse_export_s"] = round(reuse_s, 1)
    result["rows_reused"], result["rows_embedded"] = printed["reused"], printed["embedded"]
    _, new_hashes = rows_of(work / "reused")
    result["reused_rows_bit_identical_to_old"] = reused_rows_identical(old, work / "reused", new_hashes)

    if args.full_from_throughput:
        stand_in = work / "precomputed-rows.npy"
        rng = np.random.default_rng(0)
        rows = rng.standard_normal((len(new_corpus), Manifest.read(old).dimension), dtype=np.float32)
        np.save(stand_in, rows / np.linalg.norm(rows, axis=1, keepdims=True))
        overhead_s, _ = timed_export(model, new_data, work / "overhead", "--corpus_embeddings", str(stand_in))
        rate = embedding_throughput(model, list(new_corpus.texts), args.full_from_throughput, args.seed)
        full_s = overhead_s + len(new_corpus) / rate
        result["full_export"] = {"kind": "extrapolated", "seconds": round(full_s, 1),
                                 "export_without_embedding_s": round(overhead_s, 1),
                                 "embedding_premises_per_s": round(rate, 1),
                                 "throughput_sample": min(args.full_from_throughput, len(new_corpus))}
        result["equality_with_full_export"] = "not measured (full export extrapolated; see --data small)"
        shutil.rmtree(work / "overhead", ignore_errors=True)
    else:
        full_s, _ = timed_export(model, new_data, work / "full")
        full_rows, _ = rows_of(work / "full")
        new_rows, _ = rows_of(work / "reused")
        embedded = np.ones(len(new_rows), dtype=bool)  # the rows the --reuse export embedded, if known
        _, old_hashes = rows_of(old)
        if old_hashes is not None:
            known = {h.tobytes() for h in old_hashes}
            embedded = np.array([h.tobytes() not in known for h in new_hashes])
        diff = np.abs(np.asarray(new_rows) - np.asarray(full_rows))
        result["full_export"] = {"kind": "measured", "seconds": round(full_s, 1)}
        result["equality_with_full_export"] = {
            "max_abs_diff_all_rows": float(diff.max()),
            "max_abs_diff_embedded_rows": float(diff[embedded].max()) if embedded.any() else 0.0,
            "within_1e-5": bool(diff.max() <= 1e-5),
            "other_files_identical": other_files_identical(work / "full", work / "reused"),
        }
    result["reuse_share_of_full"] = round(result["reuse_export_s"] / result["full_export"]["seconds"], 4)
    result["target_share"] = 0.05
    write_result("revision_update" + ("_small" if args.data == "small" else ""), result)


if __name__ == "__main__":
    main()
