"""Off Mathlib with the default client's body: which training and which side ranker lift the reranker there.

    python benchmarks/off_mathlib_levers.py --data mathlib-src --hold_out Mathlib.AlgebraicGeometry \
        --static_model ~/.cache/leanpremise/bench2/static-quality/mathlib-src/static/final \
        --arms base,subtree,nearest,subtree+nearest

The subtree is held out as benchmarks/rerank_quality.py's --off_mathlib holds it out (its premises, states and
importers left out of the index and of training; its premises reach its states as new premises, in the
default client's order), and its root states are the same seeded draw (`subtree_draw`): 30 % of them are the
VALID states the arms are chosen on, the other 70 % the TEST states they are reported on. Each arm trains a
reranker with `rerank train`'s defaults but for its change (on the rest's train split, early-stopped on the
rest's valid split):

- `base`: the defaults (with --static_model, the static encoder's reranker of static_quality.py, reused from
  --reuse_base when that folder holds it);
- `subtree`: a third of the simulated training states have their whole subtree (the first two components of
  their module's name) unindexed, beside the module and folder simulations (`simulate_scopes`);
- `subtree_only`: every simulated state by its subtree;
- `nearest`: the nearest-proved-states ranker (rank/nearest_states.py, built from the rest's train states) as
  one more ranker the reranker reads;
- `A+B`: both changes.

For each arm: valid and test Recall@16/32/100, each ranker alone (the nearest-states ranker included), test
Recall@32 split by where the positive lives (a new premise of the subtree, or indexed), and the arm minus
`base` and minus the best single ranker on test Recall@32 paired over the states with a bootstrap interval.
Writes benchmarks/results/off_mathlib_levers_<data>.json, rewritten after each arm.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import bench_cache, paired, per_state_recall, unpacked, write_result
from rerank_quality import recalls, scored_lists, subtree_draw, train

SIDE = ["bm25", "mepo", "usage"]
ARMS = {"base": ({}, False), "subtree": ({"simulate_scopes": "module,folder,subtree"}, False),
        "subtree_only": ({"simulate_scopes": "subtree"}, False), "nearest": ({}, True),
        "subtree+nearest": ({"simulate_scopes": "module,folder,subtree"}, True),
        "subtree_only+nearest": ({"simulate_scopes": "subtree"}, True)}


def split_recall(ids: np.ndarray, positives: list[np.ndarray], n_index: int, k: int = 32) -> dict:
    """Micro Recall@k of the positives that are new premises (ids >= n_index) and of the indexed ones."""
    out = {}
    for label, pick in (("new", lambda p: p >= n_index), ("indexed", lambda p: p < n_index)):
        hit = tot = 0
        for row, pos in zip(ids, positives):
            pos = np.asarray(pos)
            pos = pos[pick(pos)]
            tot += len(pos)
            hit += int(np.isin(pos, row[:k]).sum())
        out[label] = {"positives": tot, f"recall@{k}": round(hit / max(tot, 1), 4)}
    return out


def static_embeddings(model_dir: Path, ds, cache: Path) -> tuple[object, np.ndarray]:
    """The static model and its corpus rows (cached beside the model)."""
    from sentence_transformers import SentenceTransformer

    from leanpremise.model.encoder import encode_texts

    model = SentenceTransformer(str(model_dir), device="cpu")
    path = cache / "static_corpus_embeddings.npy"
    if path.exists():
        emb = np.load(path)
        if len(emb) == len(ds.corpus):
            return model, emb
    emb = encode_texts(model, ds.corpus.texts, batch_size=256)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return model, emb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mathlib-src")
    ap.add_argument("--hold_out", default="Mathlib.AlgebraicGeometry")
    ap.add_argument("--static_model", type=Path, default=None, help="a static encoder trained without the subtree")
    ap.add_argument("--reuse_base", type=Path, default=None, help="the base arm's reranker, trained before")
    ap.add_argument("--arms", default="base,subtree,nearest,subtree+nearest")
    ap.add_argument("--off_states", type=int, default=1000)
    ap.add_argument("--max_states", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from leanpremise.data import load_dataset
    from leanpremise.eval.rerank.cli import RerankIndexFlags, _states
    from leanpremise.eval.rerank.index import build_rankers, nearest_of
    from leanpremise.eval.rerank.requests import IndexView, modules_under
    from leanpremise.eval.rerank.train import requests_for
    from leanpremise.rank.rerank.model import Reranker

    torch.set_num_threads(args.threads)
    name = f"off_mathlib_levers_{args.data.replace('-', '_')}"
    ds = load_dataset(data_dir=unpacked(args.data))
    cache = bench_cache() / "off-mathlib-levers" / args.data
    sub = modules_under(ds.corpus, [args.hold_out])
    rest = RerankIndexFlags(exclude_modules=args.hold_out)
    view = IndexView.without(ds.corpus, sub)
    usage_states = _states(ds, "train", rest, tuning=True)
    valid_rest = _states(ds, "valid", rest, tuning=True)
    ids, valid_ids, test_ids = subtree_draw(ds, sub, args.off_states, 0)
    result: dict = {"machine": "2-core, shared with other jobs", "data": args.data, "subtree": args.hold_out,
                    "client": "default", "states_sampled": len(ids), "valid_states": len(valid_ids),
                    "test_states": len(test_ids), "max_training_states": args.max_states,
                    "dense": str(args.static_model) if args.static_model else None, "arms": {}}
    model = emb = None
    kinds = list(SIDE)
    if args.static_model is not None:
        model, emb = static_embeddings(args.static_model, ds, cache)
        kinds.append("dense")
    t0 = time.perf_counter()
    rankers, table = build_rankers(ds, view, kinds, model=model, corpus_embeddings=emb, usage_states=usage_states)
    result["rankers_seconds"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    nearest = nearest_of(ds, view, usage_states)
    result["nearest_build_seconds"] = round(time.perf_counter() - t0, 1)
    result["nearest_states"] = len(nearest)
    n_index = len(view)
    lists: dict[str, dict] = {}
    for arm in [a for a in args.arms.split(",") if a]:
        overrides, with_nearest = ARMS[arm]
        rankers.side.nearest = nearest if with_nearest else None
        rankers.side.n = n_index
        t0 = time.perf_counter()
        out = cache / arm
        if arm == "base" and args.reuse_base is not None and (args.reuse_base / "reranker.json").exists():
            reranker = Reranker.load(args.reuse_base)
            if reranker.spec.kinds() != rankers.kinds():
                raise SystemExit(f"{args.reuse_base}: reads {reranker.spec.kinds()}, this run {rankers.kinds()}")
            spec, reused = reranker.spec, str(args.reuse_base)
        else:
            reranker, spec = train(ds, rankers, table, out, usage_states, valid_rest, max_states=args.max_states,
                                   **overrides)
            reused = None
        entry = {"changes": overrides | ({"rankers": "+ nearest"} if with_nearest else {}), "reused": reused,
                 "train_seconds": round(time.perf_counter() - t0, 1), "rest_valid": spec.valid_scores,
                 "rounds": spec.stopped_on["best_iteration"],
                 "importance_gain_top": dict(sorted(spec.importance.items(), key=lambda kv: -kv[1])[:12])}
        for part, part_ids in (("valid", valid_ids), ("test", test_ids)):
            timing: dict = {}
            got = scored_lists(reranker, rankers, table, requests_for(ds, rankers, table, part_ids), timing)
            pos = got["positives"]
            rer = np.stack(got["rerank"])
            singles = {k: recalls(np.stack([r[0] for r in got[k]]), pos) for k in rankers.kinds()}
            entry[part] = {"reranked": recalls(rer, pos), "singles": singles,
                           "reranked_by_where@32": split_recall(rer, pos, n_index),
                           "states_with_positives": int(sum(len(p) > 0 for p in pos))}
            if part == "test":
                entry["timing_per_request"] = timing
                best = max(singles, key=lambda k: singles[k]["recall@32"])
                lists[arm] = {"rerank": per_state_recall(rer, pos),
                              "best_single": per_state_recall(np.stack([r[0] for r in got[best]]), pos)}
                entry["test"]["best_single"] = best
                entry["test"]["minus_best_single_recall@32"] = paired(lists[arm]["rerank"], lists[arm]["best_single"])
                if "base" in lists and arm != "base":
                    entry["test"]["minus_base_recall@32"] = paired(lists[arm]["rerank"], lists["base"]["rerank"])
        result["arms"][arm] = entry
        write_result(name, result)
        print(arm, {p: entry[p]["reranked"] for p in ("valid", "test")}, flush=True)
    done = [a for a in result["arms"] if a != "base"]
    if done:
        pick = max(done, key=lambda a: result["arms"][a]["valid"]["reranked"]["recall@32"])
        base_valid = result["arms"].get("base", {}).get("valid", {}).get("reranked", {}).get("recall@32", -1)
        result["picked_on_valid"] = pick if result["arms"][pick]["valid"]["reranked"]["recall@32"] > base_valid \
            else "base"
        write_result(name, result)


if __name__ == "__main__":
    main()
