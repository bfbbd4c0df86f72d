"""Which states a reranker over a dense model should be fitted on: the train states (what `rerank train`
does) or states the dense model never trained on (four fifths of valid; the last fifth stops both fits).

    python benchmarks/rerank_fit_states.py [--static_dir DIR] [--config JSON]

On its own train states a trained encoder ranks far better than on unseen ones (issue 26's static model: train
R@32 0.956, valid 0.863), so a reranker fitted there learns to trust the dense score more than it should on a
new goal. This measures what fitting on unseen states gains, on mathlib-small's test split (paired bootstrap
over the test states). Writes benchmarks/results/rerank_fit_states.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_cache, paired, per_state_recall, unpacked, write_result
from rerank_quality import recalls, scored_lists, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--static_dir", type=Path,
                    default=bench_cache() / "static-quality" / "mathlib-small" / "static-hardbm25" / "final",
                    help="the dense model (default: static_quality.py's hard-negative static encoder)")
    ap.add_argument("--config", default="{}", help="JSON of RerankConfig fields both fits take")
    ap.add_argument("--seed", type=int, default=0, help="seed of the valid draw")
    args = ap.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from leanpremise.data import load_dataset
    from leanpremise.eval.rerank.config import DEFAULT_SIDE_RANKERS
    from leanpremise.eval.rerank.index import build_rankers
    from leanpremise.eval.rerank.requests import IndexView
    from leanpremise.eval.rerank.train import requests_for
    from leanpremise.model.encoder import encode_texts

    torch.set_num_threads(1)
    ds = load_dataset(data_dir=unpacked("mathlib-small"))
    model = SentenceTransformer(str(args.static_dir))
    emb = encode_texts(model, ds.corpus.texts, batch_size=256)
    side = [str(k) for k in DEFAULT_SIDE_RANKERS]
    rankers, table = build_rankers(ds, IndexView.full(ds.corpus), side + ["dense"], model=model,
                                   corpus_embeddings=emb)
    valid, test, train_ids = ds.split_ids("valid"), ds.split_ids("test"), ds.split_ids("train")
    perm = np.random.default_rng(args.seed).permutation(len(valid))
    stop, fit = np.sort(valid[perm[: len(valid) // 5]]), np.sort(valid[perm[len(valid) // 5:]])
    cfg = json.loads(args.config)
    requests = list(requests_for(ds, rankers, table, test))
    result: dict = {"data": "mathlib-small", "dense": str(args.static_dir), "side_rankers": side, "config": cfg,
                    "stop_states": len(stop), "machine_note": "2-core"}
    ids, positives = {}, None
    for name, states in {"train states": train_ids, "four fifths of valid": fit}.items():
        t0 = time.perf_counter()
        out = bench_cache() / "rerank-fit-states" / name.replace(" ", "-")
        reranker, spec = train(ds, rankers, table, out, states, stop, **cfg)
        lists = scored_lists(reranker, rankers, table, requests, {})
        ids[name], positives = np.stack(lists["rerank"]), lists["positives"]
        result[name] = {"fit_states": len(states), "stop_valid": spec.valid_scores,
                        "test": recalls(ids[name], positives), "seconds": round(time.perf_counter() - t0, 1)}
        print(name, result[name], flush=True)
    a, b = (per_state_recall(ids[n], positives, 32) for n in ("four fifths of valid", "train states"))
    result["valid_fit_minus_train_fit_recall@32"] = paired(a, b)
    write_result("rerank_fit_states", result)


if __name__ == "__main__":
    main()
