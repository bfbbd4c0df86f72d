"""What the server's int8 backend costs in quality: int8 states against a float32 corpus.

    python benchmarks/serve_int8_quality.py [--data_dir DIR] [--splits valid,test]

A bundle's corpus embeddings are computed once, in float32 (usually on a GPU);
`serve --backend onnx-int8` then embeds only the states in int8. This measures
exactly that mix on mathlib-small (valid and test splits, all-MiniLM-L6-v2):
Recall@k with float32 states and with int8 states against the same float32
corpus, the int8 - float32 difference with a 95 % paired-bootstrap interval
over states, and the per-state embedding time of each backend on one thread.
Writes benchmarks/results/serve_int8_quality.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_cache, onnx_exports, unpacked, write_result

KS = (8, 16, 32, 64)


def main() -> None:
    from leanpremise.data import DataConfig, load_dataset
    from leanpremise.eval.metrics import compute_metrics, hit_matrix, per_state_metrics
    from leanpremise.model.backends import OnnxEmbedder
    from leanpremise.model.encoder import default_model_path
    from leanpremise.rank.dense import rank_premises

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", type=Path, default=None, help="default: mathlib-small from ../shared/data")
    ap.add_argument("--splits", default="valid,test", help="comma-separated splits, pooled")
    args = ap.parse_args()

    data_dir = args.data_dir or unpacked("mathlib-small")
    ds = load_dataset(DataConfig(data_dir=data_dir))
    model_dir = default_model_path()
    fp32_path, int8_path = onnx_exports(model_dir, bench_cache() / "onnx" / "all-MiniLM-L6-v2")
    fp32 = OnnxEmbedder(model_dir, fp32_path, batch_size=32)
    int8 = OnnxEmbedder(model_dir, int8_path, batch_size=32)

    corpus_file = bench_cache() / "emb" / f"onnx-fp32-{data_dir.name}-{ds.revision}.npy"
    if corpus_file.exists():
        corpus = np.load(corpus_file)
    else:
        t0 = time.perf_counter()
        corpus = fp32.encode(ds.corpus.texts)
        print(f"corpus: {len(corpus)} premises in {time.perf_counter() - t0:.0f}s", flush=True)
        corpus_file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=corpus_file.parent, suffix=".npy", delete=False) as f:
            np.save(f, corpus)
        Path(f.name).replace(corpus_file)

    splits = args.splits.split(",")
    state_ids = np.concatenate([ds.split_ids(name) for name in splits])
    texts = [ds.states.state[s] for s in state_ids.tolist()]
    positives = [ds.states.positives(s) for s in state_ids.tolist()]
    result: dict = {"data_dir": str(data_dir), "splits": splits, "states": len(state_ids),
                    "premises": len(corpus), "corpus_embeddings": "ONNX float32"}
    per_state: dict[str, dict[int, np.ndarray]] = {}
    for name, embedder in (("fp32_states", fp32), ("int8_states", int8)):
        one = OnnxEmbedder(model_dir, fp32_path if embedder is fp32 else int8_path, threads=1)
        t0 = time.perf_counter()
        for text in texts[:100]:
            one.encode([text])
        seconds = (time.perf_counter() - t0) / min(100, len(texts))
        states = embedder.encode(texts)
        ids, _ = rank_premises(states, corpus, ds.access, state_ids, max(KS))
        metrics = compute_metrics(ids, positives, list(KS))
        hits, n_pos = hit_matrix(ids, positives)
        recalls = per_state_metrics(hits, n_pos, list(KS), max(KS))
        per_state[name] = {k: recalls[f"recall@{k}"][n_pos > 0] for k in KS}
        result[name] = {f"recall@{k}": round(float(metrics[f"recall@{k}"]), 4) for k in KS}
        result[name]["ms_per_state_one_thread"] = round(seconds * 1000, 2)
    result["int8_minus_fp32"] = {}
    for k in KS:
        diff = per_state["int8_states"][k] - per_state["fp32_states"][k]
        lo, hi = bootstrap_interval(diff)
        result["int8_minus_fp32"][f"recall@{k}"] = {"mean": round(float(diff.mean()), 4),
                                                    "ci95": [round(lo, 4), round(hi, 4)],
                                                    "states_changed": int((diff != 0).sum())}
    write_result("serve_int8_quality", result)


def bootstrap_interval(diff: np.ndarray, rounds: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean of paired per-state differences."""
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (rounds, len(diff)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


if __name__ == "__main__":
    main()
