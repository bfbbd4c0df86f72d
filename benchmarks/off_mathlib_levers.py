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

`--sized ARM@LEAVES:ROUNDS[:RATE[:PATIENCE]],...` instead fits arms of one training simulation (the subtree
scope and the nearest states) that differ in the mention features (`subtree+nearest+mentions`,
rank/rerank/mentions.py) and in the booster's size, on one set of training rows built once (cached, so a
killed run resumes) and evaluated on one set of VALID/TEST rows; `base` (--reuse_base) is evaluated beside
them. It writes off_mathlib_levers_<data>_mentions<tag>.json.

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


def parse_sized(arm: str) -> tuple[str, dict]:
    """`subtree+nearest+mentions@15:300:0.1:50` -> (the arm's changes, the booster's size: leaves, rounds at
    most, learning rate, early-stopping patience)."""
    name, _, size = arm.partition("@")
    leaves, rounds, rate, patience = (size.split(":") + [None] * 4)[:4]
    return name, {"num_leaves": int(leaves), "max_rounds": int(rounds), "learning_rate": float(rate or 0.1),
                  "early_stopping": int(patience or 200)}


def cached_rows(path: Path, build):
    """`build()`'s RerankRows, kept in `path` (a pickle) so that a run resumed after a kill reuses them."""
    import pickle

    if path.exists():
        with open(path, "rb") as f:
            return pickle.load(f)
    rows = build()
    tmp = path.with_suffix(".partial")
    with open(tmp, "wb") as f:
        pickle.dump(rows, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    return rows


def without_columns(rows, keep: np.ndarray):
    """`rows` reading only the columns `keep` (the same candidates: families add columns, not candidates)."""
    from dataclasses import replace

    return replace(rows, x=np.ascontiguousarray(rows.x[:, keep]))


def off_rows(views: list, rankers, table, requests) -> tuple[list, dict, dict]:
    """For each view (a spec: the rankers it reads, depth, local bound, structure, families), the candidates
    and feature rows of the off-subtree `requests`; every ranker's list (its signals computed once for all
    views); the per-request time of the first view's candidates + features and of its mention columns."""
    from rerank_quality import DEPTH

    from leanpremise.eval.rerank.rows import RerankRows
    from leanpremise.eval.rerank.signals import batch_signals
    from leanpremise.rank.rerank import mentions
    from leanpremise.rank.rerank.features import candidates, features

    parts = [{"xs": [], "cands": [], "sizes": [], "tails": []} for _ in views]
    positives, runs, feat_s, mention_s = [], {}, [], []
    requests = list(requests)
    for a in range(0, len(requests), 128):
        batch = requests[a:a + 128]
        for req, sig_all in zip(batch, batch_signals(rankers, batch, DEPTH)):
            positives.append(req.positives)
            for kind, (rids, _) in sig_all.runs.items():
                row = np.full(DEPTH, -1, dtype=np.int64)
                row[: min(DEPTH, len(rids))] = rids[:DEPTH]
                runs.setdefault(kind, []).append(row)
            for v, (spec, part) in enumerate(zip(views, parts)):
                kinds = spec.kinds()
                sig = type(sig_all)(runs={k: x for k, x in sig_all.runs.items() if k in kinds},
                                    lookups=sig_all.lookups)
                t0 = time.perf_counter()
                cand = candidates(sig, req.input, spec.depth, spec.local_bound)
                x = features(table, req.input, sig, cand, kinds, spec.structure, spec.depth, spec.families)
                if v == 0:
                    feat_s.append(time.perf_counter() - t0)
                    if spec.families:
                        t0 = time.perf_counter()
                        mentions.columns(table, req.input, cand)
                        mention_s.append(time.perf_counter() - t0)
                part["xs"].append(x)
                part["cands"].append(cand)
                part["sizes"].append(len(cand))
                first = next(k for k in ("dense", "bm25", "mepo", "usage") if k in sig.runs)
                part["tails"].append(sig.runs[first][0][:DEPTH].copy())
    out = [RerankRows(x=np.concatenate(p["xs"]), y=np.zeros(sum(p["sizes"]), bool), cand=np.concatenate(p["cands"]),
                      sizes=np.array(p["sizes"]), states=np.zeros(len(p["sizes"])), positives=positives,
                      tails=p["tails"]) for p in parts]
    sizes = parts[0]["sizes"]
    timing = {"features_ms": {"median": round(1e3 * float(np.median(feat_s)), 3),
                              "p99": round(1e3 * float(np.percentile(feat_s, 99)), 3),
                              "mean_candidates": round(float(np.mean(sizes)), 1)}}
    if mention_s:
        timing["mention_columns_ms"] = {"median": round(1e3 * float(np.median(mention_s)), 3),
                                        "p99": round(1e3 * float(np.percentile(mention_s, 99)), 3)}
    return out, {k: np.stack(v) for k, v in runs.items()}, timing


def score_rows(reranker, rows) -> tuple[np.ndarray, dict]:
    """The reranked lists of `rows` (DEPTH deep) and the model's time per request (one request at a time)."""
    from rerank_quality import DEPTH

    from leanpremise.rank.rerank.model import order_by_score

    out = np.full((len(rows.sizes), DEPTH), -1, dtype=np.int64)
    took = []
    for i in range(len(rows.sizes)):
        g = rows.group(i)
        t0 = time.perf_counter()
        scores = reranker.score(rows.x[g])
        took.append(time.perf_counter() - t0)
        ids, _ = order_by_score(rows.cand[g], scores, DEPTH, rows.tails[i])
        out[i, : len(ids)] = ids[:DEPTH]
    return out, {"median": round(1e3 * float(np.median(took)), 3), "p99": round(1e3 * float(np.percentile(took, 99)), 3)}


OLD_SIZE = {"num_leaves": 31, "max_rounds": 1000, "learning_rate": 0.05, "early_stopping": 200}
"""The size the `subtree+nearest` arm was trained at before the merged defaults (its folder is reused)."""


def sized(args, ds, rankers, table, nearest, n_index, usage_states, valid_rest, valid_ids, test_ids, cache, result,
          name) -> None:
    """Arms of one training simulation (--simulate_scopes module,folder,subtree, the nearest states) that
    differ in the mention features and the booster's size: the rows are built once (with the mention
    columns, kept in the cache) and each arm fits on its columns of them, so arms differ only in that."""
    from dataclasses import replace
    from types import SimpleNamespace

    from leanpremise.eval.rerank.config import RerankConfig
    from leanpremise.eval.rerank.rows import build_rows
    from leanpremise.eval.rerank.train import (
        VALID_RECALL_KS,
        fit,
        ranked_lists,
        ranker_entries,
        requests_for,
        sample_train_states,
        save_reranker,
    )
    from leanpremise.eval.rerank.train import recalls as valid_recalls
    from leanpremise.rank.rerank.booster import booster_class
    from leanpremise.rank.rerank.features import CATEGORICAL, FEATURE_SET, feature_list
    from leanpremise.rank.rerank.mentions import FAMILY
    from leanpremise.rank.rerank.model import Reranker
    from leanpremise.rank.rerank.spec import FeatureEntry, RerankerSpec

    rankers.side.nearest, rankers.side.n = nearest, n_index
    cfg = RerankConfig(simulate_scopes="module,folder,subtree", max_states=args.max_states, families=FAMILY,
                       threads=args.threads)
    kinds = rankers.kinds()
    full = [f.name for f in feature_list(kinds, True, [FAMILY])]
    plain = [f.name for f in feature_list(kinds, True)]
    assert full[: len(plain)] == plain
    rows_dir = cache / f"rows-{args.max_states}{args.tag}"
    rows_dir.mkdir(parents=True, exist_ok=True)
    scopes = ("module", "folder", "subtree")
    t0 = time.perf_counter()
    states = sample_train_states(ds, usage_states, cfg.max_states, cfg.seed)
    train_all = cached_rows(rows_dir / "train.pkl", lambda: build_rows(
        rankers, table, requests_for(ds, rankers, table, states, cfg.simulate_share, cfg.seed, counted=True,
                                     client_share=cfg.client_share, scopes=scopes),
        kinds, True, cfg.depth, cfg.local_bound, progress=True, desc="train rows", total=len(states),
        families=[FAMILY]))
    valid_all = cached_rows(rows_dir / "valid.pkl", lambda: build_rows(
        rankers, table, requests_for(ds, rankers, table, valid_rest), kinds, True, cfg.depth, cfg.local_bound,
        tail_depth=max(VALID_RECALL_KS), progress=True, desc="valid rows", total=len(valid_rest),
        families=[FAMILY]))
    result["training_rows"] = {"states": len(states), "rows": len(train_all.y), "rest_valid_states": len(valid_rest),
                               "seconds": round(time.perf_counter() - t0, 1), "scopes": list(scopes),
                               "simulate_share": cfg.simulate_share, "client_share": cfg.client_share}
    write_result(name, result)
    full_view = SimpleNamespace(kinds=lambda: kinds, depth=cfg.depth, local_bound=cfg.local_bound, structure=True,
                                families=[FAMILY])
    base = Reranker.load(args.reuse_base) if args.reuse_base is not None else None
    off: dict[str, dict] = {}
    for part, part_ids in (("valid", valid_ids), ("test", test_ids)):
        views = [full_view] + ([base.spec] if base is not None else [])
        rows, runs, timing = off_rows(views, rankers, table, requests_for(ds, rankers, table, part_ids))
        off[part] = {"rows": rows[0], "runs": runs, "timing": timing}
        if base is not None:
            off[part]["base"] = rows[1]
        print(part, "rows", timing, flush=True)
    pos = {p: off[p]["rows"].positives for p in off}
    singles = {p: {k: recalls(off[p]["runs"][k], pos[p]) for k in kinds} for p in off}
    best_single = max(singles["test"], key=lambda k: singles["test"][k]["recall@32"])
    best_lists = per_state_recall(off["test"]["runs"][best_single], pos["test"])
    result["singles"] = singles
    result["best_single_on_test"] = best_single
    result["feature_timing_per_request"] = off["test"]["timing"]
    lists: dict[str, np.ndarray] = {}
    arms = (["base"] if base is not None else []) + [a for a in args.sized.split(",") if a]
    for arm in arms:
        t0 = time.perf_counter()
        entry: dict = {}
        if arm == "base":
            reranker, rows_of = base, {p: off[p]["base"] for p in off}
            entry["reused"] = str(args.reuse_base)
        else:
            kind, size = parse_sized(arm)
            fams = [FAMILY] if kind.endswith("+mentions") else []
            if kind not in ("subtree+nearest", "subtree+nearest+mentions"):
                raise SystemExit(f"--sized: unknown arm {kind!r}")
            names = full if fams else plain
            keep = np.arange(len(names))
            rows_of = {p: without_columns(off[p]["rows"], keep) for p in off}
            folder = cache / (f"{arm.replace(':', '_')}-{args.max_states}" + (args.tag if fams else ""))
            old = cache / "subtree+nearest"
            if not fams and size == OLD_SIZE and args.max_states == 8192 and (old / "reranker.json").exists():
                folder = old
            if (folder / "reranker.json").exists():
                reranker = Reranker.load(folder)
                entry["reused"] = str(folder)
            else:
                arm_cfg = replace(cfg, families=",".join(fams), **size)
                train_rows = without_columns(train_all, keep) if not fams else train_all
                valid_rows = without_columns(valid_all, keep) if not fams else valid_all
                booster, best, fit_s = fit(arm_cfg, names, train_rows, valid_rows)
                spec = RerankerSpec(
                    library=arm_cfg.library, model_file=booster_class(arm_cfg.library).model_file,
                    feature_set=FEATURE_SET,
                    features=[FeatureEntry(name=f.name, version=f.version) for f in feature_list(kinds, True, fams)],
                    rankers=ranker_entries(rankers), structure=True, families=fams, depth=arm_cfg.depth,
                    local_bound=arm_cfg.local_bound, categorical=[c for c in CATEGORICAL if c in names],
                    trained_on={"states": len(states), "simulated_scopes": list(scopes), "size": size,
                                "seconds": {"fit": round(fit_s, 1)}},
                    stopped_on={"split": "valid", "states": len(valid_rest), "metric": "ndcg@32",
                                "best_iteration": best},
                    importance=booster.importance(names), date=time.strftime("%Y-%m-%d %H:%M:%S"))
                reranker = Reranker(spec, booster)
                spec.valid_scores = valid_recalls(ranked_lists(reranker, valid_rows, max(VALID_RECALL_KS)),
                                                  valid_rows.positives)
                save_reranker(folder, spec, booster)
                del train_rows, valid_rows
            entry["size"] = size
            entry["families"] = fams
        spec = reranker.spec
        entry |= {"fit_seconds": round(time.perf_counter() - t0, 1), "rest_valid": spec.valid_scores,
                  "rounds": spec.stopped_on.get("best_iteration"),
                  "importance_gain_top": dict(sorted(spec.importance.items(), key=lambda kv: -kv[1])[:12])}
        for part in off:
            ranked, model_ms = score_rows(reranker, rows_of[part])
            entry[part] = {"reranked": recalls(ranked, pos[part]),
                           "reranked_by_where@32": split_recall(ranked, pos[part], n_index),
                           "states_with_positives": int(sum(len(p) > 0 for p in pos[part]))}
            if part == "test":
                entry["model_ms_per_request"] = model_ms
                lists[arm] = per_state_recall(ranked, pos[part])
                entry["test"]["minus_best_single_recall@32"] = paired(lists[arm], best_lists)
                if "base" in lists and arm != "base":
                    entry["test"]["minus_base_recall@32"] = paired(lists[arm], lists["base"])
                twin = arm.replace("+mentions", "")
                if twin != arm and twin in lists:
                    entry["test"]["minus_without_mentions_recall@32"] = paired(lists[arm], lists[twin])
        result["arms"][arm] = entry
        done = [a for a in result["arms"]]
        result["picked_on_valid"] = max(done, key=lambda a: result["arms"][a]["valid"]["reranked"]["recall@32"])
        write_result(name, result)
        print(arm, {p: entry[p]["reranked"] for p in off}, entry.get("rounds"), entry.get("model_ms_per_request"),
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mathlib-src")
    ap.add_argument("--hold_out", default="Mathlib.AlgebraicGeometry")
    ap.add_argument("--static_model", type=Path, default=None, help="a static encoder trained without the subtree")
    ap.add_argument("--reuse_base", type=Path, default=None, help="the base arm's reranker, trained before")
    ap.add_argument("--arms", default="base,subtree,nearest,subtree+nearest")
    ap.add_argument("--sized", default="", help="arms fitted on one set of training rows (all with --scopes and "
                    "the nearest states), each ARM@LEAVES:ROUNDS[:RATE[:PATIENCE]], ARM one of subtree+nearest, "
                    "subtree+nearest+mentions; the one without mentions at the old size is reused from the "
                    "`subtree+nearest` arm's folder when it is there")
    ap.add_argument("--tag", default="", help="--sized: a suffix of the cached rows, the mention arms' folders and "
                    "the results file (a run of another version of the mention features)")
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
    name = f"off_mathlib_levers_{args.data.replace('-', '_')}" + (f"_mentions{args.tag}" if args.sized else "")
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
    if args.sized:
        sized(args, ds, rankers, table, nearest, n_index, usage_states, valid_rest, valid_ids, test_ids, cache,
              result, name)
        return
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
