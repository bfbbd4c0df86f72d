"""The learned reranker against the tuned RRF hybrid of the same rankers: Recall@16/32/100 on TEST.

    python benchmarks/rerank_quality.py --data mathlib-small --arms lexical,untrained,trained [--ablations]
    python benchmarks/rerank_quality.py --data mathlib-small --arms lexical --served
    python benchmarks/rerank_quality.py --data mathlib-src --arms untrained --cost \
        --off_mathlib Mathlib.AlgebraicGeometry

Arms: `lexical` (BM25 + MePo + usage + structure, no neural model), `lexical+nearest` (+ the nearest proved
states' premises, rank/nearest_states.py), any arm `+mentions` (its rankers, `--families mentions`),
`untrained` (+ the packaged MiniLM),
`trained` (+ the MiniLM trained 84 steps by benchmarks/train_quality.py, its model and corpus embeddings
read from the bench cache). Every arm trains a reranker with `rerank train`'s defaults (on the train split,
early-stopped on valid) and tunes the RRF/wsum fusion of the same rankers on valid (eval/tuning.py, as
`retrieve --hybrid` and `fuse` do); both are then scored on the same test states, each ranker ranking
100 deep. The reranked minus the tuned hybrid (and minus the best single ranker) on test Recall@32 is paired
over the test states with a bootstrap interval. Also: each model's feature importance (gain), the feature
code's time per request (candidates + features alone, and the model's scoring alone), and with
`--ablations` the reranker retrained without the structure features and without each ranker.

`--cost` times `leanpremise rerank train` itself (a subprocess: wall time and peak RSS) for the first arm.
`--off_mathlib PREFIX` holds that subtree out as another project: a reranker trained on the rest (its
premises, states and importers left out) ranks the subtree's root states (`--split_mode all`), whose own
premises reach it as new premises, against the best single ranker there; then a seeded 30 % of those states
adapt it (`rerank train --init ... --tune_on 0.3`) and the other 70 % are scored again.

Every test figure is given per client protocol (`test_by_client`): each state's request as Lean's default
client sends it since June 2026 (`default`: no local premises, the file's declarations as new premises) and as
the pre-June client did (`pre-june`), both simulated by eval/rerank/requests.py. `--served` replays the
default client's body for every test state, built by tests/lean_client.py from the client's code, against a
real server on a bundle of the first arm's reranker (a tiny random encoder: the lexical reranker reads no
dense ranker), and compares the served top 100 with `rerank apply`'s (`served_default_client`).

Corpus embeddings of the packaged MiniLM are read from (or written to) the bench cache as
fusion_quality.py keeps them. Writes benchmarks/results/rerank_<data>.json, rewritten after each arm.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import RESULTS, bench_cache, paired, per_state_recall, unpacked, write_result

KS = (16, 32, 100)
DEPTH = 100
SIDE = ["bm25", "mepo", "usage"]


def recalls(ids, positives) -> dict[str, float]:
    from leanpremise.eval.metrics import compute_metrics

    m = compute_metrics(ids, positives, list(KS), 32)
    return {f"recall@{k}": round(m[f"recall@{k}"], 4) for k in KS}


def minilm_embeddings(ds, data: str) -> np.ndarray:
    """The packaged MiniLM's corpus rows, from the bench cache (computed once)."""
    from leanpremise.model.encoder import encode_texts, load_model, model_display_name

    path = bench_cache() / "embeddings" / f"{data}-{model_display_name(None)}.npy"
    if path.exists():
        emb = np.load(path)
        if len(emb) == len(ds.corpus):
            return emb
    emb = encode_texts(load_model(None, "cpu"), ds.corpus.texts, show_progress=True, desc="corpus")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb


def arm_model(arm: str, ds, data: str):
    """(model path or None, corpus embeddings or None, kinds) of an arm (`+mentions`: the same rankers)."""
    arm = arm.removesuffix("+mentions")
    if arm == "lexical":
        return None, None, SIDE
    if arm == "lexical+nearest":
        return None, None, SIDE + ["nearest"]
    if arm == "untrained":
        return "all-MiniLM-L6-v2", minilm_embeddings(ds, data), SIDE + ["dense"]
    folder = bench_cache() / "models" / "train_quality-random"
    if not (folder / "final").is_dir():
        raise SystemExit(f"{folder}/final: missing; run benchmarks/train_quality.py --arms random first")
    return str(folder / "final"), np.load(folder / "corpus_embeddings.npy"), SIDE + ["dense"]


def scored_lists(reranker, rankers, table, requests, timing: dict):
    """Per request: the reranked list and every ranker's list (all DEPTH long, the request's id space), and
    the positives; the time of candidates + features and of the model's scoring, per request."""
    from leanpremise.eval.rerank.signals import batch_signals
    from leanpremise.rank.rerank.features import candidates, features
    from leanpremise.rank.rerank.model import order_by_score

    spec = reranker.spec
    out = {"rerank": [], "positives": []}
    feat_s, score_s, n_cand = [], [], []
    requests = list(requests)
    for a in range(0, len(requests), 128):
        batch = requests[a:a + 128]
        for req, sig in zip(batch, batch_signals(rankers, batch, DEPTH)):
            sig.runs = {k: v for k, v in sig.runs.items() if k in spec.kinds()}
            t0 = time.perf_counter()
            cand = candidates(sig, req.input, spec.depth, spec.local_bound)
            x = features(table, req.input, sig, cand, spec.kinds(), spec.structure, spec.depth, spec.families)
            t1 = time.perf_counter()
            scores = reranker.score(x)
            t2 = time.perf_counter()
            feat_s.append(t1 - t0)
            n_cand.append(len(cand))
            score_s.append(t2 - t1)
            first = next(k for k in ("dense", "bm25", "mepo", "usage") if k in sig.runs)
            ids, _ = order_by_score(cand, scores, DEPTH, sig.runs[first][0])
            row = np.full(DEPTH, -1, dtype=np.int64)
            row[: len(ids)] = ids[:DEPTH]
            out["rerank"].append(row)
            for kind, (rids, rscores) in sig.runs.items():
                out.setdefault(kind, []).append((rids[:DEPTH], rscores[:DEPTH]))
            out["positives"].append(req.positives)
    timing["features_ms"] = {"median": round(1e3 * float(np.median(feat_s)), 3),
                             "p99": round(1e3 * float(np.quantile(feat_s, 0.99)), 3),
                             "mean_candidates": round(float(np.mean(n_cand)), 1)}
    timing["model_ms"] = {"median": round(1e3 * float(np.median(score_s)), 3),
                          "p99": round(1e3 * float(np.quantile(score_s, 0.99)), 3)}
    return out


def runs_of(lists: dict, kinds: list[str]):
    from leanpremise.rank.runs import Run

    return [Run(kind, np.stack([r[0] for r in lists[kind]]), np.stack([r[1] for r in lists[kind]]))
            for kind in kinds if kind in lists]


def compare(reranker, rankers, table, ds, test_ids, tune_ids, tuned_what: str, client: str = "default") -> dict:
    """Reranked vs every ranker alone vs their fusion tuned on `tune_ids`, on `test_ids`, each state's
    request as `client` sends it."""
    from leanpremise.eval.rerank.train import requests_for
    from leanpremise.eval.tuning import tune
    from leanpremise.rank.fusion import apply

    timing: dict = {}
    kinds = reranker.spec.kinds()
    test = scored_lists(reranker, rankers, table, requests_for(ds, rankers, table, test_ids, client=client), timing)
    tune_lists = scored_lists(reranker, rankers, table, requests_for(ds, rankers, table, tune_ids, client=client), {})
    spec = tune(runs_of(tune_lists, kinds), tune_lists["positives"])
    spec.k = DEPTH
    test_runs = runs_of(test, kinds)
    fused, _ = apply(test_runs, spec, DEPTH)
    pos = test["positives"]
    rerank = np.stack(test["rerank"])
    singles = {r.name: recalls(r.ids, pos) for r in test_runs}
    best = max(singles, key=lambda n: singles[n]["recall@32"])
    best_ids = next(r.ids for r in test_runs if r.name == best)
    per = per_state_recall(rerank, pos)
    return {"client": client, "test_states": len(test_ids), "test_states_with_positives": int(sum(len(p) > 0 for p in pos)),
            "singles": singles, "best_single": best, "hybrid_tuned": recalls(fused, pos),
            "hybrid_fusion": spec.label(), "hybrid_tuned_on": tuned_what,
            "reranked": recalls(rerank, pos),
            "reranked_minus_hybrid_recall@32": paired(per, per_state_recall(fused, pos)),
            "reranked_minus_best_single_recall@32": paired(per, per_state_recall(best_ids, pos)),
            "timing_per_request": timing}


def by_client(reranker, rankers, table, ds, test_ids, tune_ids, tuned_what: str) -> dict:
    """`compare` for each client protocol (requests.CLIENTS)."""
    from leanpremise.eval.rerank.requests import CLIENTS

    return {c: compare(reranker, rankers, table, ds, test_ids, tune_ids, tuned_what, c) for c in CLIENTS}


def served_replay(ds, data_dir: Path, reranker_dir: Path, rankers, table, state_ids, work: Path, k: int = 100
                  ) -> dict:
    """The default client's body of every state of `state_ids` (tests/lean_client.py) POSTed to a server on a
    bundle of `reranker_dir`: its top k against `rerank apply`'s for the same states, and its recall."""
    import httpx

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from common import ServerProcess

    from conftest import build_tiny_model
    from lean_client import default_client_body
    from leanpremise.data import DataConfig
    from leanpremise.eval.rerank.apply import rerank_states
    from leanpremise.export.exporter import ExportConfig, export_bundle
    from leanpremise.rank.rerank.model import Reranker

    model = build_tiny_model(work / "tiny-model")
    bundle = work / "bundle"
    if bundle.exists():
        import shutil

        shutil.rmtree(bundle)
    export_bundle(ExportConfig(model=str(model), out=bundle, data=DataConfig(data_dir=data_dir, cache_dir=work / "cache"),
                               onnx=False, progress=False, rerank=reranker_dir))
    want, _ = rerank_states(Reranker.load(reranker_dir), ds, rankers, table, np.asarray(state_ids), k,
                            progress=False, client="default")
    corpus = ds.corpus
    server = ServerProcess(bundle, 18931, work / "serve-cache", "torch", "float32")
    try:
        server.wait_ready()
        modules = httpx.get(f"{server.url}/indexed-modules", timeout=60).json()
        rows, equal, seconds, sent = [], 0, [], []
        for s, expect in zip(np.asarray(state_ids).tolist(), want.tolist()):
            m = int(ds.states.module_id[s])
            own = [(corpus.names[i], corpus.texts[i]) for i in range(int(corpus.module_start[m]),
                                                                      int(ds.access.prefix_end[s]))
                   if i != ds.states.decl_id[s]]
            body = default_client_body(ds.states.state[s], [corpus.modules[i] for i in corpus.imports_of(m).tolist()],
                                       modules, lambda mod: [(corpus.names[i], corpus.texts[i]) for i in range(
                                           int(corpus.module_start[corpus.module_index[mod]]),
                                           int(corpus.module_end[corpus.module_index[mod]]))], own, k)
            sent.append(len(body["new_premises"]))
            t0 = time.perf_counter()
            got = httpx.post(f"{server.url}/retrieve", json=body, timeout=120).json()
            seconds.append(time.perf_counter() - t0)
            ids = [corpus.name_to_id[p["name"]] for p in got]
            equal += ids == [i for i in expect if i >= 0]
            row = np.full(k, -1, dtype=np.int64)
            row[: len(ids)] = ids
            rows.append(row)
    finally:
        server.stop()
    pos = [ds.states.positives(s) for s in np.asarray(state_ids).tolist()]
    served = np.stack(rows)
    return {"states": len(rows), "served_equal_to_rerank_apply": equal, "served": recalls(served, pos),
            "rerank_apply": recalls(want, pos), "request_ms_median": round(1e3 * float(np.median(seconds)), 1),
            "new_premises_per_body_median": float(np.median(sent))}


def train(ds, rankers, table, out: Path, train_ids, valid_ids, **overrides):
    from leanpremise.eval.rerank.train import RerankConfig, train_reranker
    from leanpremise.rank.rerank.model import Reranker

    counted = overrides.pop("counted", True)
    init = overrides.pop("init", None)
    cfg = RerankConfig(**overrides)
    spec = train_reranker(ds, rankers, table, train_ids, valid_ids, cfg, out, counted=counted, init=init)
    return Reranker.load(out), spec


def cli_train_cost(data_dir: Path, model: str | None, emb_path: Path | None, out: Path, extra: list[str]) -> dict:
    """`leanpremise rerank train` as a user runs it: wall seconds and the peak RSS of the process."""
    cmd = [sys.executable, "-m", "leanpremise", "rerank", "train", "--data_dir", str(data_dir), "--out", str(out),
           *extra]
    if model is not None:
        cmd += ["--model", model] + (["--corpus_embeddings", str(emb_path)] if emb_path is not None else [])
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"command": " ".join(cmd[1:]), "seconds": round(wall, 1), "peak_rss_gib": round(peak / 2**30, 2)}


def subtree_draw(ds, sub: np.ndarray, n_states: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sampled, tuning, evaluated) ids: a seeded sample of `n_states` of the subtree's eligible root states
    (every one, as --split_mode all sees them), a random 0.3 of which tunes and the rest is evaluated; the
    one draw every held-out-subtree benchmark uses, so their figures are over the same states."""
    from leanpremise.data import load_dataset

    everything = load_dataset(ds.config, split_mode="all")
    ids = everything.split_ids("all")
    ids = ids[sub[ds.states.module_id[ids]]]
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(ids, size=min(n_states, len(ids)), replace=False))
    pick = np.zeros(len(ids), dtype=bool)
    pick[rng.permutation(len(ids))[: round(0.3 * len(ids))]] = True
    return ids, ids[pick], ids[~pick]


def off_mathlib(ds, prefix: str, model, emb, kinds, cache: Path, n_states: int, seed: int, adapt: bool = True,
                max_states: int = 8192) -> dict:
    """The reranker trained without subtree `prefix` on that subtree's states, before and after adapting."""
    from leanpremise.eval.rerank.cli import RerankIndexFlags, _states
    from leanpremise.eval.rerank.index import build_rankers
    from leanpremise.eval.rerank.requests import IndexView, modules_under

    sub = modules_under(ds.corpus, [prefix])
    rest = RerankIndexFlags(exclude_modules=prefix)
    view = IndexView.without(ds.corpus, sub)
    usage_states = _states(ds, "train", rest, tuning=True)
    rankers, table = build_rankers(ds, view, kinds, model=model, corpus_embeddings=emb, usage_states=usage_states)
    t0 = time.perf_counter()
    base, base_spec = train(ds, rankers, table, cache / f"off-{prefix}-base", usage_states,
                            _states(ds, "valid", rest, tuning=True), max_states=max_states)
    base_s = time.perf_counter() - t0
    ids, tune_ids, eval_ids = subtree_draw(ds, sub, n_states, seed)
    what = f"{prefix}: random 0.3 of {len(ids)} states"
    before_by_client = by_client(base, rankers, table, ds, eval_ids, tune_ids, what)
    before = before_by_client["default"]
    out = {"subtree": prefix, "modules": int(sub.sum()), "premises_held_out": int(sub[ds.corpus.module_id].sum()),
           "index_premises": len(view), "states_sampled": len(ids), "tuning_states": len(tune_ids),
           "evaluated_states": len(eval_ids), "base_train_seconds": round(base_s, 1),
           "base_valid": base_spec.valid_scores, "base_training_states": base_spec.trained_on["states"],
           "before_adapting": before,
           "before_adapting_by_client": before_by_client}
    if not adapt:
        return out
    stop = tune_ids[: max(1, len(tune_ids) // 5)]
    adapted, adapted_spec = train(ds, rankers, table, cache / f"off-{prefix}-adapted", tune_ids[len(stop):], stop,
                                  counted=False, init=cache / f"off-{prefix}-base", simulate_share=0.0,
                                  max_rounds=300)
    after = compare(adapted, rankers, table, ds, eval_ids, tune_ids, f"{prefix}: random 0.3 of {len(ids)} states")
    return out | {"after_adapting": after, "adapted_rounds_added": adapted_spec.stopped_on["best_iteration"]
                  - base_spec.stopped_on["best_iteration"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mathlib-small")
    ap.add_argument("--arms", default="lexical,untrained,trained")
    ap.add_argument("--ablations", action="store_true", help="retrain without structure and without each ranker")
    ap.add_argument("--cost", action="store_true", help="time `rerank train` (CLI) for the first arm")
    ap.add_argument("--off_mathlib", default=None, metavar="PREFIX", help="hold this subtree out as a project")
    ap.add_argument("--off_states", type=int, default=1000, help="subtree root states sampled for --off_mathlib")
    ap.add_argument("--no_adapt", action="store_true", help="--off_mathlib without adapting on the subtree")
    ap.add_argument("--off_max_states", type=int, default=8192, help="training states of --off_mathlib's reranker")
    ap.add_argument("--reuse_reranker", action="store_true",
                    help="an arm whose reranker the bench cache holds (same code, same data) is not retrained")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--served", action="store_true",
                    help="replay the default client's body of every test state against a served bundle (first arm)")
    ap.add_argument("--client_shares", default=None, metavar="SHARES",
                    help="comma-separated --client_share values to train the first arm with, picked on valid")
    args = ap.parse_args()

    import torch

    from leanpremise.data import load_dataset
    from leanpremise.eval.rerank.index import build_rankers
    from leanpremise.eval.rerank.requests import IndexView

    torch.set_num_threads(args.threads)
    name = f"rerank_{args.data.replace('-', '_')}"
    path = RESULTS / f"{name}.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result = {k: v for k, v in result.items() if k not in ("benchmark", "date", "machine")}
    result.setdefault("arms", {})
    result["load"] = "2-core, shared with other jobs"
    data_dir = unpacked(args.data)
    ds = load_dataset(data_dir=data_dir)
    cache = bench_cache() / "rerankers" / args.data
    valid, test = ds.split_ids("valid"), ds.split_ids("test")
    arms = [a for a in args.arms.split(",") if a]
    for i, arm in enumerate(arms):
        model, emb, kinds = arm_model(arm, ds, args.data)
        entry: dict = {"rankers": kinds}
        if args.cost and i == 0:
            emb_path = bench_cache() / "embeddings" / f"{args.data}-all-MiniLM-L6-v2.npy" if arm == "untrained" else (
                Path(model).parent / "corpus_embeddings.npy" if model else None)
            entry["rerank_train_cli"] = cli_train_cost(data_dir, model, emb_path, cache / f"{arm}-cli", [])
        rankers, table = build_rankers(ds, IndexView.full(ds.corpus), kinds, model=model, corpus_embeddings=emb)
        t0 = time.perf_counter()
        if args.client_shares and i == 0:  # the training mix of client protocols, picked on valid
            import shutil

            from leanpremise.rank.rerank.spec import read_spec

            tried = {}
            for x in [float(v) for v in args.client_shares.split(",")]:
                _, sp = train(ds, rankers, table, cache / f"{arm}-share-{x}", ds.split_ids("train"), valid,
                              client_share=x)
                tried[x] = sp.valid_scores
            best = max(tried, key=lambda x: tried[x]["recall@32"])
            entry["client_share_valid"] = {"tried": {str(x): v for x, v in tried.items()}, "picked": best}
            shutil.rmtree(cache / arm, ignore_errors=True)
            shutil.copytree(cache / f"{arm}-share-{best}", cache / arm)
            from leanpremise.rank.rerank.model import Reranker

            reranker, spec = Reranker.load(cache / arm), read_spec(cache / arm)
        elif args.reuse_reranker and (cache / arm / "reranker.json").exists():  # the arm's reranker of a run before
            from leanpremise.rank.rerank.model import Reranker

            reranker = Reranker.load(cache / arm)
            spec = reranker.spec
            entry["reused_reranker"] = str(cache / arm)
        else:
            reranker, spec = train(ds, rankers, table, cache / arm, ds.split_ids("train"), valid,
                                   **({"families": "mentions"} if arm.endswith("+mentions") else {}))
        entry["train_seconds"] = round(time.perf_counter() - t0, 1)
        entry["valid"] = spec.valid_scores
        entry["rounds"] = spec.stopped_on["best_iteration"]
        entry["training_states"] = spec.trained_on["states"]
        entry["importance_gain"] = dict(sorted(spec.importance.items(), key=lambda kv: -kv[1]))
        entry["test_by_client"] = by_client(reranker, rankers, table, ds, test, valid, "valid")
        entry["test"] = entry["test_by_client"]["default"]
        result["arms"][arm] = entry
        write_result(name, result)
        if args.served and i == 0:
            entry["served_default_client"] = served_replay(ds, data_dir, cache / arm, rankers, table, test,
                                                           cache / "served")
        if args.ablations:
            ablations = {}
            variants = [("without structure", {"structure": False}, kinds)]
            variants += [(f"without {k}", {}, [x for x in kinds if x != k]) for k in kinds]
            for label, overrides, ks in variants:
                sub, _ = build_rankers(ds, IndexView.full(ds.corpus), ks, model=model, corpus_embeddings=emb,
                                       progress=False)
                r, _ = train(ds, sub, table, cache / f"{arm}-ablation", ds.split_ids("train"), valid, **overrides)
                ablations[label] = compare(r, sub, table, ds, test, valid, "valid")["reranked"]
            entry["ablations_test"] = ablations
        result["arms"][arm] = entry
        write_result(name, result)
    if args.off_mathlib:
        if "off_mathlib" in result and "before_adapting_by_client" not in result["off_mathlib"]:
            result["off_mathlib_pre_client_protocols"] = result["off_mathlib"]  # issue 20's run, kept
        model, emb, kinds = arm_model(arms[0] if arms else "lexical", ds, args.data)
        result["off_mathlib"] = off_mathlib(ds, args.off_mathlib, model, emb, kinds, cache, args.off_states, 0,
                                            adapt=not args.no_adapt, max_states=args.off_max_states)
        write_result(name, result)


if __name__ == "__main__":
    main()
