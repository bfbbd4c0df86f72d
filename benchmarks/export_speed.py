"""Corpus embedding throughput: PyTorch fp32 vs ONNX Runtime fp32 vs ONNX int8, and what int8 costs in Recall@32.

    python benchmarks/export_speed.py [--model DIR] [--n 2000] [--data_dir mathlib-small] [--split valid]

    python benchmarks/export_speed.py --static [MODEL_DIR] [--n 400]

instead measures a static model (benchmarks/static_model.py when no dir is given) on mathlib-src: its numpy
encoder against MiniLM (PyTorch, as `export` runs it) on the same `--n` sampled premises in the same run,
the static encoder over the whole corpus (target <= 60 s), and a whole `leanpremise export` of mathlib-src
with it (target <= 5 min). Writes benchmarks/results/export_speed_static.json.

Throughput is premises/s encoding `--n` corpus texts of mathlib-small (batch 64,
all cores). Recall@32 is computed on the valid split with ONNX fp32 (the same vectors as
PyTorch fp32, and faster) and ONNX int8 each embedding both the corpus and
the states (leanpremise.eval's ranking over accessible premises). Writes benchmarks/results/export_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, bench_cache, onnx_exports, unpacked, write_result


def throughput(embedder, texts: list[str]) -> float:
    embedder.encode(texts[:64])  # warm-up (allocations, lazy init)
    t0 = time.perf_counter()
    embedder.encode(texts)
    return len(texts) / (time.perf_counter() - t0)


def recall_at(embedder, dataset, split: str, k: int = 32) -> tuple[float, float]:
    from leanpremise.eval.metrics import compute_metrics
    from leanpremise.rank.dense import rank_premises

    t0 = time.perf_counter()
    corpus_emb = embedder.encode(dataset.corpus.texts)
    state_ids = dataset.split_ids(split)
    state_emb = embedder.encode([dataset.states.state[s] for s in state_ids.tolist()])
    ids, _ = rank_premises(state_emb, corpus_emb, dataset.access, state_ids, k)
    metrics = compute_metrics(ids, [dataset.states.positives(s) for s in state_ids.tolist()], [k], k)
    return metrics[f"recall@{k}"], time.perf_counter() - t0


def main() -> None:
    from leanpremise.data import DataConfig, load_dataset
    from leanpremise.model.backends import OnnxEmbedder, TorchEmbedder
    from leanpremise.model.encoder import default_model_path

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="SentenceTransformer dir (default: packaged MiniLM)")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--data_dir", type=Path, default=None,
                    help="default: mathlib-small from the shared data, unpacked once into the bench cache")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--onnx_cache", type=Path, default=None,
                    help="where the ONNX exports are made once (default: <bench cache>/onnx/<model name>)")
    ap.add_argument("--skip_recall", action="store_true")
    ap.add_argument("--static", type=Path, nargs="?", const=Path(), default=None, metavar="MODEL_DIR",
                    help="measure a static model on mathlib-src instead (no dir: benchmarks/static_model.py's)")
    args = ap.parse_args()
    if args.static is not None:
        static_run(args)
        return

    model_dir = args.model or default_model_path()
    args.data_dir = args.data_dir or unpacked("mathlib-small")
    # the packaged model's exports are shared with serve_int8_quality.py
    args.onnx_cache = args.onnx_cache or bench_cache() / "onnx" / (Path(model_dir).name if args.model
                                                                   else "all-MiniLM-L6-v2")
    fp32_path, int8_path = onnx_exports(model_dir, args.onnx_cache)
    dataset = load_dataset(DataConfig(data_dir=args.data_dir))
    rng = np.random.default_rng(0)
    pick = rng.choice(len(dataset.corpus), min(args.n, len(dataset.corpus)), replace=False)
    texts = [dataset.corpus.text(int(i)) for i in pick]
    load_before = os.getloadavg()
    backends = {  # each as `export` and `serve` run it: torch batches (16 on CPU), ONNX one unpadded text a run
        "torch_fp32": TorchEmbedder(model_dir, "cpu", 64),
        "onnx_fp32": OnnxEmbedder(model_dir, fp32_path),
        "onnx_int8": OnnxEmbedder(model_dir, int8_path),
    }
    result = {"model": str(model_dir), "texts": len(texts), "batch_size": {"torch": 16, "onnx": 1},
              "premises_per_s": {}, "loadavg_before": load_before}
    for name, emb in backends.items():
        result["premises_per_s"][name] = round(throughput(emb, texts), 1)
        print(name, result["premises_per_s"][name], "premises/s", flush=True)
    result["note"] = "2-core machine; each backend uses both cores"
    previous = RESULTS / "export_speed.json"
    if args.skip_recall and previous.exists():  # keep the last recall measurement rather than drop it
        old = json.loads(previous.read_text())
        if "recall" in old:
            result["recall"] = {**old["recall"], "measured": old.get("date")}
    write_result("export_speed", result)  # throughput first: the recall part takes much longer
    if not args.skip_recall:
        recalls = {}
        for name in ("onnx_fp32", "onnx_int8"):
            r, secs = recall_at(backends[name], dataset, args.split)
            recalls[name] = {"recall@32": round(r, 5), "seconds": round(secs, 1)}
            print(name, recalls[name], flush=True)
        result["recall"] = {"data_dir": str(args.data_dir), "split": args.split, **recalls,
                            "int8_minus_fp32_recall@32": round(recalls["onnx_int8"]["recall@32"]
                                                               - recalls["onnx_fp32"]["recall@32"], 5),
                            "fp32_reference": "ONNX fp32, equal to PyTorch fp32 within 3e-7 per coordinate "
                                              "(tests/test_export_bundle.py checks 1e-4)"}
        result["loadavg_after"] = os.getloadavg()
        write_result("export_speed", result)


def static_run(args) -> None:
    """The static model's embedding and export of mathlib-src, and MiniLM on a sample of it, same run."""
    import subprocess

    from static_model import static_bundle_path, static_minilm

    from leanpremise.data import DataConfig, load_corpus
    from leanpremise.model.backends import TorchEmbedder
    from leanpremise.model.encoder import default_model_path
    from leanpremise.model.static import StaticEncoder

    model_dir = static_minilm() if args.static == Path() else args.static
    data_dir = args.data_dir or unpacked("mathlib-src")
    t0 = time.perf_counter()
    texts = list(load_corpus(DataConfig(data_dir=data_dir)).texts)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), min(args.n, len(texts)), replace=False).tolist()]
    static, minilm = StaticEncoder(model_dir), TorchEmbedder(default_model_path(), "cpu", 64)
    load_before = os.getloadavg()
    rates = {"static_numpy": [], "minilm_torch": []}
    for _ in range(2):  # interleaved, so that the ratio sees the same load on the shared machine
        rates["minilm_torch"].append(throughput(minilm, sample))
        rates["static_numpy"].append(throughput(static, sample))
    per_s = {name: round(max(r), 1) for name, r in rates.items()}
    print("sample premises/s", per_s, flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    emb = static.encode(texts)
    corpus_s, corpus_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    print(f"static: {len(texts)} premises embedded in {corpus_s:.1f}s ({corpus_cpu_s:.1f}s CPU)", flush=True)
    assert emb.shape == (len(texts), static.dim)
    del emb
    bundle = static_bundle_path(data_dir.name)  # kept: the serve benchmarks serve it
    import resource

    t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "leanpremise", "export", "--model", str(model_dir), "--data_dir",
                    str(data_dir), "--out", str(bundle), "--model_name", "static-minilm"],
                   check=True, stdout=subprocess.DEVNULL)
    export_s = time.perf_counter() - t0
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    export_cpu_s = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    print(f"static export of {data_dir.name}: {export_s:.1f}s", flush=True)
    result = {
        "model": str(model_dir), "data": data_dir.name, "bundle": str(bundle), "premises": len(texts), "sample": len(sample),
        "sample_premises_per_s": per_s, "sample_runs_premises_per_s": {k: [round(x, 1) for x in v]
                                                                      for k, v in rates.items()},
        "static_over_minilm": round(per_s["static_numpy"] / per_s["minilm_torch"], 1),
        "corpus_load_s": round(load_s, 1),
        "corpus_embed_cpu_s": round(corpus_cpu_s, 1),
        "export_cpu_s": round(export_cpu_s, 1),
        "cpu_note": "CPU seconds: what the work costs on a quiet machine (the encoder runs on one core); the wall "
                    "seconds include the waits for the cores other jobs held",
        "corpus_embed_s": {"static_numpy": round(corpus_s, 1),
                           "minilm_torch_scaled_from_sample": round(len(texts) / per_s["minilm_torch"], 0)},
        "export_s": {"static": round(export_s, 1), "minilm_reference": "1 h 47 min for the corpus embedding alone "
                     "(docs/figures.md, 2026-12-01, this CPU): a same-run MiniLM export is impractical"},
        "targets": {"corpus_embed_s": 60, "export_s": 300},
        "met": {"corpus_embed_s": corpus_s <= 60, "export_s": export_s <= 300,
                "corpus_embed_cpu_s": corpus_cpu_s <= 60, "export_cpu_s": export_cpu_s <= 300},
        "machine": "2-core, shared with other jobs", "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
    }
    write_result("export_speed_static", result)


if __name__ == "__main__":
    main()
