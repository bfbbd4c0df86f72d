"""The reranker's size against its quality: valid Recall@32 and scoring time per request over a grid of trees.

    python benchmarks/rerank_cost.py --model STATIC_DIR [--data sample] [--grid 31:-1,15:-1,7:-1,31:5]
        [--rounds 25,50,100,200] [--learning_rates 0.05]

STATIC_DIR: a dense model trained on that data (the main job's `final/` for the shipped sample). The feature
rows of the train and valid states are built once, as `rerank train` builds them (its defaults:
the rankers dense + BM25 + MePo + usage over the dense model `--model`, the structure features). For each
(num_leaves, max_depth, learning rate) of the grid a LightGBM reranker is trained with `rerank train`'s other
defaults (early-stopped on valid NDCG@32); each of its first `--rounds` trees (and its early-stopped length)
is one setting. Per setting: valid Recall@32 (per state, for a paired bootstrap against the best setting) and
the model's scoring time per valid request (one thread, the request's rows at once, as a server scores them;
medians over repeats interleaved across settings, since the machine is shared). The cheapest setting whose
valid Recall@32 is within noise of the best (the paired-bootstrap interval of their difference holds 0) is
the one to make `rerank train`'s default. Writes benchmarks/results/rerank_cost_<data>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import paired, per_state_recall, unpacked, write_result

KINDS = ["dense", "bm25", "mepo", "usage"]


def rows(ds, model: str, cfg):
    """(train rows, valid rows, feature names) as `rerank train` builds them with `cfg`."""
    from leanpremise.eval.rerank.index import build_rankers
    from leanpremise.eval.rerank.requests import IndexView
    from leanpremise.eval.rerank.rows import build_rows
    from leanpremise.eval.rerank.train import KS, requests_for, sample_train_states
    from leanpremise.rank.rerank.features import feature_list

    rankers, table = build_rankers(ds, IndexView.full(ds.corpus), KINDS, model=model, model_name=Path(model).name,
                                   progress=False)
    kinds = rankers.kinds()
    states = sample_train_states(ds, ds.split_ids("train"), cfg.max_states, cfg.seed)
    train_req = requests_for(ds, rankers, table, states, cfg.simulate_share, cfg.seed, counted=True,
                             client_share=cfg.client_share)
    train = build_rows(rankers, table, train_req, kinds, cfg.structure, cfg.depth, cfg.local_bound, progress=False)
    valid_ids = ds.split_ids("valid")
    valid = build_rows(rankers, table, requests_for(ds, rankers, table, valid_ids), kinds, cfg.structure, cfg.depth,
                       cfg.local_bound, tail_depth=max(KS), progress=False)
    return train, valid, [f.name for f in feature_list(kinds, cfg.structure)]


def valid_recall(booster, valid, k: int = 32) -> np.ndarray:
    """Per valid state with positives: Recall@k of the reranked list (as `rerank train` scores valid)."""
    from leanpremise.eval.rerank.train import KS
    from leanpremise.rank.rerank.model import order_by_score

    scores = booster.predict(np.ascontiguousarray(valid.x, dtype=np.float32))
    depth = max(KS)
    out = np.full((len(valid.sizes), depth), -1, dtype=np.int64)
    off = valid.offsets
    for i in range(len(valid.sizes)):
        g = slice(int(off[i]), int(off[i + 1]))
        ids, _ = order_by_score(valid.cand[g], scores[g], depth, valid.tails[i] if valid.tails else None)
        out[i, : len(ids)] = ids
    return per_state_recall(out, valid.positives, k)


def truncated(booster, rounds: int):
    """The booster's first `rounds` trees, as a model file of them loads (what a server would score with)."""
    import lightgbm as lgb

    from leanpremise.rank.rerank.booster import LightGBMBooster

    return LightGBMBooster(lgb.Booster(model_str=booster.model.model_to_string(num_iteration=rounds)))


def depth_of(booster) -> float:
    """Mean depth of the model's leaves (weighted by the training rows that reach them): nodes per tree."""
    dump = booster.model.dump_model()["tree_info"]
    total = count = 0.0

    def walk(node, d):
        nonlocal total, count
        if "split_index" not in node:
            total += d * node.get("leaf_count", 1)
            count += node.get("leaf_count", 1)
            return
        walk(node["left_child"], d + 1)
        walk(node["right_child"], d + 1)

    for t in dump:
        walk(t["tree_structure"], 0)
    return round(total / max(count, 1), 2)


def time_predict(settings: dict, valid, requests: np.ndarray, repeats: int) -> dict[str, dict]:
    """Per setting: median and p99 over `requests` of its scoring time per request, each request's time the
    median of `repeats`, the settings interleaved request by request."""
    off = valid.offsets
    groups = [np.ascontiguousarray(valid.x[int(off[i]):int(off[i + 1])], dtype=np.float32) for i in requests]
    times = {name: [] for name in settings}
    for x in groups:
        for name, booster in settings.items():
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                booster.predict(x)
                ts.append(time.perf_counter() - t0)
            times[name].append(float(np.median(ts)))
    return {name: {"median_ms": round(1e3 * float(np.median(v)), 3), "p99_ms": round(1e3 * float(np.quantile(v, 0.99)), 3)}
            for name, v in times.items()}


def main() -> None:
    from leanpremise.data import DataConfig, load_dataset
    from leanpremise.eval.rerank.train import RerankConfig, fit

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="sample", help="sample (the one shipped, the main job's) or a bench dataset")
    ap.add_argument("--model", required=True, help="the dense model the reranker reads, trained on --data")
    ap.add_argument("--grid", default="31:-1,15:-1,7:-1,31:6,15:4",
                    help="num_leaves:max_depth pairs (max_depth -1: unbounded, LightGBM's default)")
    ap.add_argument("--learning_rates", default="0.05")
    ap.add_argument("--rounds", default="25,50,100,200", help="tree counts to cut each trained model at")
    ap.add_argument("--timed_requests", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()

    ds = load_dataset(DataConfig(data_dir=None if args.data == "sample" else unpacked(args.data)))
    base = RerankConfig()
    t0 = time.perf_counter()
    train, valid, names = rows(ds, args.model, base)
    rows_s = time.perf_counter() - t0
    settings, recall, meta = {}, {}, {}
    for lr in [float(v) for v in args.learning_rates.split(",")]:
        for pair in args.grid.split(","):
            leaves, depth = (int(v) for v in pair.split(":"))
            cfg = RerankConfig(num_leaves=leaves, learning_rate=lr, extra={"max_depth": depth} if depth > 0 else {})
            booster, best, seconds = fit(cfg, names, train, valid)
            cuts = sorted({r for r in (int(v) for v in args.rounds.split(",")) if r < best} | {best})
            for r in cuts:
                name = f"leaves={leaves} max_depth={depth} lr={lr} trees={r}" + (" (early-stopped)" if r == best else "")
                settings[name] = truncated(booster, r)
                recall[name] = valid_recall(settings[name], valid)
                meta[name] = {"num_leaves": leaves, "max_depth": depth, "learning_rate": lr, "trees": r,
                              "early_stopped": r == best, "fit_seconds": round(seconds, 1),
                              "mean_leaf_depth": depth_of(settings[name]),
                              "valid_recall@32": round(float(recall[name].mean()), 4)}
            print(f"lr {lr} leaves {leaves} depth {depth}: best {best} trees, valid R@32 "
                  f"{meta[name]['valid_recall@32']} ({seconds:.0f} s)", flush=True)
    rng = np.random.default_rng(0)
    requests = np.sort(rng.choice(len(valid.sizes), size=min(args.timed_requests, len(valid.sizes)), replace=False))
    timing = time_predict(settings, valid, requests, args.repeats)
    best_name = max(recall, key=lambda n: recall[n].mean())
    for name in settings:
        meta[name].update(timing[name])
        meta[name]["minus_best"] = paired(recall[name], recall[best_name])
        meta[name]["within_noise_of_best"] = meta[name]["minus_best"]["high"] >= 0
    default = next(n for n in settings if n.startswith(f"leaves={base.num_leaves} max_depth=-1 lr={base.learning_rate} ")
                   and meta[n]["early_stopped"]) if any(meta[n]["early_stopped"] for n in meta) else None
    ok = [n for n in settings if meta[n]["within_noise_of_best"]]
    cheapest = min(ok, key=lambda n: meta[n]["median_ms"])
    write_result(args.name or f"rerank_cost_{args.data.replace('-', '_')}", {
        "data": args.data, "model": args.model, "rankers": KINDS, "rows_seconds": round(rows_s, 1),
        "train_rows": len(train.y), "valid_states": len(valid.sizes),
        "mean_valid_candidates": round(float(np.mean(valid.sizes)), 1),
        "timed_requests": len(requests), "repeats": args.repeats,
        "best": best_name, "default_before": default, "cheapest_within_noise": cheapest,
        "speedup_vs_default": round(meta[default]["median_ms"] / meta[cheapest]["median_ms"], 2) if default else None,
        "settings": meta,
        "rule": "the cheapest (median scoring ms per valid request) setting whose valid Recall@32 minus the best's "
                "has a paired-bootstrap interval holding 0",
        "note": "2-core, shared with other jobs",
    })
    print("best", best_name, meta[best_name]["valid_recall@32"], "cheapest within noise", cheapest,
          meta[cheapest]["valid_recall@32"], meta[cheapest]["median_ms"], "ms")


if __name__ == "__main__":
    main()
