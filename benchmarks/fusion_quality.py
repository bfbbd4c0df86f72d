"""Fusion quality on mathlib-small: Recall@16/32/100 on TEST of BM25, MePo, usage, dense and the hybrid tuned on
VALID.

    python benchmarks/fusion_quality.py [--model DIR] [--data NAME] [--rankers bm25,mepo,usage] [--k 100]

The dense model defaults to the packaged (untrained) MiniLM. The corpus is
encoded once and kept in the bench cache (`embeddings/<data>-<model>.npy`).
The fusion is tuned by `leanpremise.eval.tuning.tune` on the valid split only,
exactly as `retrieve --hybrid bm25,mepo,usage --k 100` does (every ranker
ranks --k deep), then applied to test. Also reported: equal-weight RRF (k=60)
of all the rankers, untuned, for comparison.
Also: the hybrid minus each ranker alone on test Recall@32, paired over states, with a
bootstrap interval. Writes benchmarks/results/fusion_<data>.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import bench_cache, paired, per_state_recall, unpacked, write_result

KS = (16, 32, 100)


def corpus_embeddings(model, ds, data: str, model_name: str) -> tuple[np.ndarray, float | None]:
    from leanpremise.model.encoder import encode_texts

    path = bench_cache() / "embeddings" / f"{data}-{model_name}.npy"
    if path.exists():
        emb = np.load(path)
        if len(emb) == len(ds.corpus):
            return emb, None
    t0 = time.perf_counter()
    emb = encode_texts(model, ds.corpus.texts, batch_size=64, show_progress=True, desc="corpus")
    seconds = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb, seconds


def recalls(ids, positives) -> dict[str, float]:
    from leanpremise.eval.metrics import compute_metrics

    m = compute_metrics(ids, positives, list(KS), 32)
    return {f"recall@{k}": round(m[f"recall@{k}"], 4) for k in KS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mathlib-small")
    ap.add_argument("--model", default=None, help="dense model (default: the packaged untrained MiniLM)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--rankers", default="bm25,mepo,usage", help="rankers fused with the dense model")
    ap.add_argument("--k", type=int, default=100, help="depth every ranker ranks (and the fusion is tuned at)")
    args = ap.parse_args()

    import torch

    from leanpremise.data.dataset import load_dataset
    from leanpremise.eval.hybrid import Rankers
    from leanpremise.eval.tuning import tune
    from leanpremise.model.encoder import load_model, model_display_name
    from leanpremise.rank.fusion import FusionSpec, apply
    from leanpremise.rank.names import parse_rankers

    torch.set_num_threads(args.threads)
    ds = load_dataset(data_dir=unpacked(args.data))
    name = model_display_name(args.model)
    model = load_model(args.model, "cpu")
    emb, encode_s = corpus_embeddings(model, ds, args.data, name)
    t0 = time.perf_counter()
    rankers = Rankers(model, ds, parse_rankers(args.rankers), emb)
    index_s = time.perf_counter() - t0
    valid, test = ds.split_ids("valid"), ds.split_ids("test")
    t0 = time.perf_counter()
    valid_runs = rankers.runs(valid, args.k, name)
    rank_valid_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    spec = tune(valid_runs, [ds.states.positives(s) for s in valid.tolist()])
    tune_s = time.perf_counter() - t0
    test_runs = rankers.runs(test, args.k, name)
    test_pos = [ds.states.positives(s) for s in test.tolist()]
    valid_pos = [ds.states.positives(s) for s in valid.tolist()]
    singles = {r.name: recalls(r.ids, test_pos) for r in test_runs}
    fused_ids, _ = apply(test_runs, spec, args.k)
    rrf = FusionSpec(method="rrf", rankers=spec.rankers, weights=dict.fromkeys(spec.rankers, 1 / len(spec.rankers)),
                     params={"k": 60})
    rrf_ids, _ = apply(test_runs, rrf, args.k)
    hybrid = recalls(fused_ids, test_pos)
    fused_per_state = per_state_recall(fused_ids, test_pos)
    best = max(singles, key=lambda n: singles[n]["recall@32"])
    write_result(f"fusion_{args.data.replace('-', '_')}", {
        "data": args.data,
        "dense_model": name,
        "depth": args.k,
        "premises": len(ds.corpus),
        "valid_states": len(valid), "test_states": len(test),
        "test_states_with_positives": int(sum(len(p) > 0 for p in test_pos)),
        "test": {**singles, "hybrid_tuned": hybrid, "rrf_equal_k60_untuned": recalls(rrf_ids, test_pos)},
        "valid": {**{r.name: recalls(r.ids, valid_pos) for r in valid_runs},
                  "hybrid_tuned": recalls(apply(valid_runs, spec, args.k)[0], valid_pos)},
        "best_single_on_test": best,
        "hybrid_gain_recall@32_over_best_single": round(hybrid["recall@32"] - singles[best]["recall@32"], 4),
        "hybrid_gain_recall@32_paired": {r.name: paired(fused_per_state, per_state_recall(r.ids, test_pos))
                                          for r in test_runs},
        "target_gain_recall@32": 0.05,
        "fusion": spec.model_dump(exclude={"date"}),
        "seconds": {"corpus_encoding": encode_s, "lexical_indexes": round(index_s, 1),
                    "rank_valid_all": round(rank_valid_s, 1), "tune": round(tune_s, 1)},
        "torch_threads": args.threads,
    })


if __name__ == "__main__":
    main()
