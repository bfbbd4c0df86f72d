"""The re-ranked path's CPU per request, stage by stage, for two versions of the code on one bundle.

    python benchmarks/rerank_stages.py BUNDLE --before_src /tmp/before/src [--after_src src] [--requests 200]
        [--rounds 3]

serve_load's clients (k=100, 4 clients) make `--requests` requests; their goals and new premises are embedded
once here with the bundle's model, so the timed part is what re-ranking adds to a served request, as the
server runs it: the side rankers' lists and lookups (and the request's reading), the candidates and their
dense scores (the search worker's `PremiseIndex.score`), the features, the model's order. Each version runs
in its own process (PYTHONPATH = its tree), round after round, the order swapped each round, so a busy spell
of a shared machine falls on both; each stage is timed as thread CPU time (`time.thread_time`, less moved by
other jobs than wall time) and wall time, median over requests, then median over rounds. The two versions'
rankings of every request must be equal (ids and scores): the run fails otherwise. Writes
benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import unpacked, write_result

STAGES = ("side_rankers", "candidates_and_dense_scores", "features", "model", "total")


def make_requests(bundle: Path, data: str, n: int, clients: int, k: int, out: Path) -> None:
    """Pickle, per request: its body, its goal's embedding and its new premises' embeddings."""
    from serve_load import Client, mathlib_modules

    from leanpremise.data import DataConfig, load_dataset
    from leanpremise.model.encoder import encode_texts, load_model
    from leanpremise.serve.revisions.loader import load_bundle

    ds = load_dataset(DataConfig(data_dir=unpacked(data)))
    modules = mathlib_modules(ds.corpus)
    pool = [Client(ds.corpus, modules, seed, 50, 0.1, 0.2, k) for seed in range(clients)]
    cache = Path(tempfile.mkdtemp(prefix="rerank-stages-"))
    loaded = load_bundle(bundle, cache)
    model = load_model(str(loaded.model_dir), "cpu")
    seen: dict[str, np.ndarray] = {}
    reqs = []
    for j in range(n):
        body, _, _ = pool[j % len(pool)].next_request()
        texts = [p["decl"] for p in body["new_premises"]]
        q = encode_texts(model, [body["state"]])
        missing = [t for t in dict.fromkeys(texts) if t not in seen]
        if missing:
            seen.update(zip(missing, encode_texts(model, missing)))
        new_emb = np.stack([seen[t] for t in texts]) if texts else np.zeros((0, q.shape[1]), np.float32)
        reqs.append((body, q, new_emb))
    out.write_bytes(pickle.dumps(reqs))
    shutil.rmtree(cache, ignore_errors=True)


def time_stages(bundle: Path, requests: Path, out: Path) -> None:
    """(In the version's own process.) Per stage, each request's thread CPU and wall ms; and its ranking."""
    from leanpremise.rank.dense import known_scores
    from leanpremise.rank.rerank.features import Signals, features
    from leanpremise.rank.runs import merge_new
    from leanpremise.serve.revisions.loader import load_bundle
    from leanpremise.serve.search.index import PremiseIndex
    from leanpremise.serve.search.reranked import RerankedRanking

    reqs = pickle.loads(requests.read_bytes())
    cache = Path(tempfile.mkdtemp(prefix="rerank-stages-"))
    loaded = load_bundle(bundle, cache)
    rr = RerankedRanking.load(bundle, loaded.manifest, loaded.corpus)
    index = PremiseIndex(loaded.corpus, loaded.embeddings)
    ready = []
    for body, q, new_emb in reqs:  # what the server has before the re-ranked steps: mask, dense run
        depth = rr.depth(body["k"])
        mask = index.import_mask(body["imported_modules"], body["local_premises"])
        top = index.rows.topk(q, mask.mask, mask.count, depth)
        run = merge_new(top[0][1], top[0][0], new_emb @ q[0] if len(new_emb) else np.zeros(0, np.float32),
                        index.size, depth)
        ready.append((body, q, new_emb, mask.mask, run, index.premise_ids(body["local_premises"]),
                      index.module_ids(body["imported_modules"])))

    def one(r):
        body, q, new_emb, mask, run, local, closure = r
        k, marks = body["k"], [(time.thread_time(), time.perf_counter())]
        inp, runs, lookups = rr.lexical([body["state"]], mask, local, closure,
                                        [p["name"] for p in body["new_premises"]],
                                        [p["decl"] for p in body["new_premises"]], k)[0]
        marks.append((time.thread_time(), time.perf_counter()))
        runs["dense"] = run
        cand = rr.candidates(inp, runs)
        lookups["dense"] = known_scores(cand, index.score(q, [cand], new_emb)[0])
        marks.append((time.thread_time(), time.perf_counter()))
        x = features(rr.table, inp, Signals(runs=runs, lookups=lookups), cand, rr.kinds, rr.spec.structure,
                     rr.spec.depth)
        marks.append((time.thread_time(), time.perf_counter()))
        ranked = rr.reranker.rank(cand, x, k, runs[rr.first][0][:k] if rr.first else None)
        marks.append((time.thread_time(), time.perf_counter()))
        return marks, ranked

    for r in ready[:20]:  # warm: the side rankers' kept lists, caches, first calls
        one(r)
    cpu = {s: [] for s in STAGES}
    wall = {s: [] for s in STAGES}
    ranked = []
    for r in ready:
        marks, out_r = one(r)
        ranked.append([out_r[0].tolist(), out_r[1].tolist()])
        for i, s in enumerate(STAGES[:-1]):
            cpu[s].append((marks[i + 1][0] - marks[i][0]) * 1e3)
            wall[s].append((marks[i + 1][1] - marks[i][1]) * 1e3)
        cpu["total"].append((marks[-1][0] - marks[0][0]) * 1e3)
        wall["total"].append((marks[-1][1] - marks[0][1]) * 1e3)
    med = {f"{kind}/{s}": float(np.median(v[s])) for kind, v in (("cpu", cpu), ("wall", wall)) for s in STAGES}
    out.write_text(json.dumps({"medians_ms": med, "ranked": ranked, "trees": rr.reranker.booster.n_trees(),
                               "rankers": list(rr.kinds)}))
    shutil.rmtree(cache, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--before_src", type=Path, required=True)
    ap.add_argument("--after_src", type=Path, default=Path(__file__).resolve().parent.parent / "src")
    ap.add_argument("--data", default="mathlib-small")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--name", default="rerank_stages")
    ap.add_argument("--note", default="")
    ap.add_argument("--_time", nargs=2, type=Path, help=argparse.SUPPRESS)  # a version's own process
    args = ap.parse_args()
    if args._time:
        time_stages(args.bundle, *args._time)
        return
    code = {"before": str(args.before_src.resolve()), "after": str(args.after_src.resolve())}
    work = Path(tempfile.mkdtemp(prefix="rerank-stages-"))
    requests = work / "requests.pkl"
    make_requests(args.bundle, args.data, args.requests, args.clients, args.k, requests)
    runs, rankings = [], {}
    for r in range(args.rounds):
        for arm in (["before", "after"] if r % 2 == 0 else ["after", "before"]):
            out = work / f"{arm}-{r}.json"
            env = {**os.environ, "PYTHONPATH": code[arm]}
            subprocess.run([sys.executable, __file__, str(args.bundle), "--before_src", code["before"],
                            "--_time", str(requests), str(out)], env=env, check=True)
            got = json.loads(out.read_text())
            rankings.setdefault(arm, got["ranked"])
            runs.append({"round": r, "arm": arm, **got["medians_ms"], "loadavg": os.getloadavg()[0]})
            print(runs[-1], flush=True)
    shutil.rmtree(work, ignore_errors=True)
    equal = rankings["before"] == rankings["after"]
    medians = {arm: {key: round(statistics.median(x[key] for x in runs if x["arm"] == arm), 3)
                     for key in runs[0] if "/" in key} for arm in code}
    write_result(args.name, {"bundle": str(args.bundle), "before_src": code["before"], "after_src": code["after"],
                             "requests": args.requests, "clients": args.clients, "k": args.k, "rounds": args.rounds,
                             "trees": got["trees"], "rankers": got["rankers"], "runs": runs, "medians_ms": medians,
                             "rankings_equal": equal, "machine": "2-core, shared with other jobs", "note": args.note})
    if not equal:
        raise SystemExit("the two versions ranked some request differently")


if __name__ == "__main__":
    main()
