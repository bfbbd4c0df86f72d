"""What re-ranking costs the server: serve_load's clients (k=100, 4 clients) on one bundle, re-ranked and not.

    python benchmarks/serve_rerank.py [--data mathlib-small] [--duration 30] [--clients 4] [--k 100]

Trains a reranker over the packaged MiniLM (dense), BM25, MePo and usage on the data's train states (a seeded
sample, `rerank train`'s defaults, or with `--rounds` a fixed number of trees), exports
one bundle with it (`export --rerank`, the MiniLM corpus rows from the bench cache), then runs serve_load's
closed-loop clients against `serve` with the reranker on and with `--no_rerank` (the plain dense ranking), and
reports p50/p90/p99 of both and the difference. It also times, in this process over the same clients' requests,
the reranker's parts per request alone: the side rankers' lists, the candidates and features (the one feature
function), and the model's scoring. Target: re-ranking adds at most 5 ms to p50 and 10 ms to p99. Writes
benchmarks/results/serve_load_rerank.json.

    python benchmarks/serve_rerank.py --model STATIC_DIR --reranker RERANKER_DIR --name serve_load_rerank_static

instead serves a bundle of another model (a static one: its rows embedded by export) with a reranker trained
over it (`leanpremise rerank train --model STATIC_DIR`), training nothing here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ServerProcess, bench_cache, unpacked, write_result
from serve_load import Client, mathlib_modules, percentiles, run_load

from leanpremise.eval.rerank.config import DEFAULT_SIDE_RANKERS

RANKERS = ["dense", *DEFAULT_SIDE_RANKERS]
"""The rankers the reranker reads by default: the dense model and `rerank train`'s default side rankers."""


def train(ds, emb: np.ndarray, out: Path, max_states: int, rounds: int | None, rankers=RANKERS) -> float:
    """A reranker over `rankers` with exactly `rounds` trees (no early stop), or with `rerank train`'s defaults
    (stopped on valid) when None; its training seconds."""
    from leanpremise.eval.rerank.index import build_rankers
    from leanpremise.eval.rerank.requests import IndexView
    from leanpremise.eval.rerank.train import RerankConfig, train_reranker

    t0 = time.perf_counter()
    rankers, table = build_rankers(ds, IndexView.full(ds.corpus), rankers, model="all-MiniLM-L6-v2",
                                   corpus_embeddings=emb, progress=False)
    fixed = {} if rounds is None else {"max_rounds": rounds, "early_stopping": rounds + 1}
    train_reranker(ds, rankers, table, ds.split_ids("train"), ds.split_ids("valid"),
                   RerankConfig(max_states=max_states, **fixed), out, progress=False)
    return time.perf_counter() - t0


def time_parts(bundle: Path, cache: Path, clients: list[Client], n: int) -> dict:
    """Per request, in this process: the side rankers' lists, the candidates + features, the model's scores."""
    from leanpremise.model.encoder import encode_texts, load_model
    from leanpremise.rank.dense import known_scores
    from leanpremise.rank.rerank.features import Signals, candidates, features
    from leanpremise.rank.runs import merge_new
    from leanpremise.serve.revisions.loader import load_bundle
    from leanpremise.serve.search.index import PremiseIndex
    from leanpremise.serve.search.reranked import RerankedRanking

    loaded = load_bundle(bundle, cache)
    reranked = RerankedRanking.load(bundle, loaded.manifest, loaded.corpus)
    index = PremiseIndex(loaded.corpus, loaded.embeddings)
    model = load_model(str(loaded.model_dir), "cpu")
    spec, times = reranked.spec, {"side_rankers": [], "dense_lookup_and_features": [], "features": [],
                                  "model_scores": [], "candidates": []}
    seen: dict[str, np.ndarray] = {}
    for j in range(n):
        body, _, _ = clients[j % len(clients)].next_request()
        k = body["k"]
        depth = reranked.depth(k)
        cand_mask = index.import_mask(body["imported_modules"], body["local_premises"])
        new_names = [p["name"] for p in body["new_premises"]]
        new_texts = [p["decl"] for p in body["new_premises"]]
        q = encode_texts(model, [body["state"]])
        missing = [t for t in dict.fromkeys(new_texts) if t not in seen]  # embedded once, as the server caches
        if missing:
            seen.update(zip(missing, encode_texts(model, missing)))
        new_emb = np.stack([seen[t] for t in new_texts]) if new_texts else np.zeros((0, q.shape[1]), np.float32)
        res = index.rows.topk(q, cand_mask.mask, cand_mask.count, depth)
        dense_run = merge_new(res[0][1], res[0][0], new_emb @ q[0] if len(new_emb) else np.zeros(0, np.float32),
                              index.size, depth)
        local = index.premise_ids(body["local_premises"])
        closure = index.module_ids(body["imported_modules"])
        t0 = time.perf_counter()
        inp, runs, lookups = reranked.lexical([body["state"]], cand_mask.mask, local, closure, new_names,
                                              new_texts, k)[0]  # new premises' analyses cached, as served
        t1 = time.perf_counter()
        runs["dense"] = dense_run
        cand = candidates(Signals(runs=runs), inp, spec.depth, spec.local_bound)
        lookups["dense"] = known_scores(cand, index.score(q, [cand], new_emb)[0])  # the search worker's job
        sig = Signals(runs=runs, lookups=lookups)
        t2 = time.perf_counter()
        x = features(reranked.table, inp, sig, cand, reranked.kinds, spec.structure, spec.depth, spec.families)
        t3 = time.perf_counter()
        reranked.reranker.rank(cand, x, k, runs[reranked.first][0][:k])
        t4 = time.perf_counter()
        times["side_rankers"].append(t1 - t0)
        times["candidates"].append(t2 - t1)
        times["dense_lookup_and_features"].append(t3 - t2)
        times["model_scores"].append(t4 - t3)
        times["features"].append(t3 - t1)
    return {name: percentiles(v) for name, v in times.items()}


def main() -> None:
    from leanpremise.data import DataConfig, load_dataset
    from leanpremise.export.exporter import ExportConfig, export_bundle
    from leanpremise.model.encoder import default_model_path

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mathlib-small")
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--max_states", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=None,
                    help="train exactly this many trees (the runs before 2026-12-08: 200); default: rerank train's "
                         "defaults, stopped on valid")
    ap.add_argument("--rankers", default=",".join(RANKERS),
                    help="the rankers the trained reranker reads (the bundle is named after them)")
    ap.add_argument("--timed_requests", type=int, default=200)
    ap.add_argument("--port", type=int, default=8741)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--name", default="serve_load_rerank")
    ap.add_argument("--model", type=Path, default=None,
                    help="serve this model's bundle (exported here) instead of the packaged MiniLM's; needs --reranker")
    ap.add_argument("--reranker", type=Path, default=None, help="a reranker dir trained over --model")
    args = ap.parse_args()

    data_dir = unpacked(args.data)
    ds = load_dataset(DataConfig(data_dir=data_dir))
    work = bench_cache() / "bundles"
    work.mkdir(parents=True, exist_ok=True)
    if args.model is not None:
        if args.reranker is None:
            raise SystemExit("--model needs --reranker (a reranker trained over that model)")
        rr, bundle, train_s = args.reranker, work / f"{args.data}-{args.model.name}-rerank", None
        export_bundle(ExportConfig(model=str(args.model), out=bundle, data=DataConfig(data_dir=data_dir),
                                   model_name=args.model.name, rerank=rr, progress=False))
    else:
        from rerank_quality import minilm_embeddings

        emb = minilm_embeddings(ds, args.data)
        tag = "" if args.rankers == ",".join(RANKERS) else "-" + args.rankers.replace(",", "-")
        rr, bundle = work / f"{args.data}-rerank-model{tag}", work / f"{args.data}-minilm-rerank{tag}"
        emb_path = bench_cache() / "embeddings" / f"{args.data}-all-MiniLM-L6-v2.npy"
        train_s = train(ds, emb, rr, args.max_states, args.rounds, args.rankers.split(","))
        export_bundle(ExportConfig(model=str(default_model_path()), out=bundle, data=DataConfig(data_dir=data_dir),
                                   onnx=False, corpus_embeddings=emb_path, model_name="all-MiniLM-L6-v2", rerank=rr,
                                   progress=False))
    modules = mathlib_modules(ds.corpus)
    runs = {}
    cache = Path(tempfile.mkdtemp(prefix="serve-rerank-cache-", dir=work))
    try:
        for arm, extra in (("reranked", ()), ("plain", ("--no_rerank",))):
            store = Path(tempfile.mkdtemp(prefix="serve-rerank-store-", dir=work))
            try:
                server = ServerProcess(bundle, args.port, cache, args.backend, args.dtype,
                                       ("--embedding_cache", str(store / "e.lmdb"), *extra))
                server.wait_ready()
                import httpx

                health = httpx.get(f"{server.url}/health").json()
                clients = [Client(ds.corpus, modules, seed, 50, 0.1, 0.2, args.k) for seed in range(args.clients)]
                result = run_load(server.url, clients, args.duration, server.proc.pid)
                server.stop()
            finally:
                shutil.rmtree(store, ignore_errors=True)
            runs[arm] = {"rerank": health["rerank"], "rerank_in_bundle": health["rerank_in_bundle"],
                         "backend": health["backend"], "model_type": health.get("model_type"), "loadavg_at_start": os.getloadavg(), **result}
        clients = [Client(ds.corpus, modules, seed, 50, 0.1, 0.2, args.k) for seed in range(args.clients)]
        parts = time_parts(bundle, cache, clients, args.timed_requests)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    a, b = runs["reranked"]["latency_all"], runs["plain"]["latency_all"]
    from leanpremise.rank.rerank.model import Reranker

    trees = Reranker.load(rr).booster.n_trees()
    write_result(args.name, {
        "data": args.data, "bundle": str(bundle), "premises": len(ds.corpus), "clients": args.clients, "k": args.k,
        "reranker": {"rankers": args.rankers.split(","), "rounds": args.rounds, "trees": trees, "training_states": args.max_states,
                     "train_seconds": round(train_s, 1)} if train_s is not None else
                    {"dir": str(rr), "trained_by": "leanpremise rerank train --model " + str(args.model)},
        "duration_s": args.duration, "arms": runs,
        "added_ms": {"p50": round(a["p50_ms"] - b["p50_ms"], 1), "p99": round(a["p99_ms"] - b["p99_ms"], 1)},
        "per_request_parts_in_process": parts,
        "targets": {"added_p50_ms": 5, "added_p99_ms": 10},
        "note": "mathlib-small bundle (the shared 2-core machine; mathlib-src's index is 10x larger, which the "
                "side rankers' and the dense search's costs grow with, the features' and the model's do not); "
                "plain = the same bundle served with --no_rerank (dense only); closed loop, the clients share "
                "the server's cores; run with nice -n 10 while other engineers' jobs ran",
    })


if __name__ == "__main__":
    main()
