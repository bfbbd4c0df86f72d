"""Two versions of the server's code on one bundle, interleaved: serve_load's clients (k=100, 4 clients) against
`serve` run from each source tree in turn, re-ranked and plain (`--no_rerank`), round after round with the order
of the two versions swapped each round, so a slow spell of a shared machine falls on both.

    git archive <commit> src | tar -x -C /tmp/before
    python benchmarks/serve_code_ab.py BUNDLE --before_src /tmp/before/src [--after_src src] [--duration 20]
    python benchmarks/serve_code_ab.py --static --before_src /tmp/before/src --modes plain --clients 1   # issue 26

`--static`: the static model's mathlib-src bundle (benchmarks/export_speed.py --static writes it) on mathlib-src.
`--modes plain` runs the plain arm only (a bundle without a reranker). Each run also reports the server's CPU
time per request and the p50 of new goals (new premises cached, goal not sent before).

Each run starts with cold caches (a fresh embedding store): its all-requests p99 is the first requests' embedding
of new premises, so the warm figures (requests whose new premises were all cached) are reported beside them.
Writes benchmarks/results/<name>.json: every run, the medians of each arm's figures, and what re-ranking adds
(re-ranked minus plain) for each version.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ServerProcess, unpacked, write_result
from serve_load import DATA_NAME, Client, mathlib_modules, run_load

QUANTITIES = ("p50_ms", "p99_ms", "warm_p50_ms", "warm_p99_ms", "new_goal_p50_ms", "requests_per_s",
              "server_cpu_ms_per_request", "client_cpu_ms_per_request")
"""Per run: every request, and the requests whose new premises were all in the embedding cache already (warm:
without a cold start's embedding of new premises, which dominates an all-requests p99)."""


def main() -> None:
    from leanpremise.data import DataConfig, load_corpus

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path, nargs="?", default=None)
    ap.add_argument("--static", action="store_true",
                    help="the static model's mathlib-src bundle, on mathlib-src (instead of a BUNDLE)")
    ap.add_argument("--before_env", action="append", default=[], metavar="NAME=VALUE",
                    help="a server setting for the before arm only (repeatable), e.g. SCAN_SHARDS=1 with the same "
                         "source tree on both arms")
    ap.add_argument("--after_env", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--modes", default="reranked,plain", help="which arms: reranked, plain (--no_rerank), or both")
    ap.add_argument("--before_src", type=Path, required=True)
    ap.add_argument("--after_src", type=Path, default=Path(__file__).resolve().parent.parent / "src")
    ap.add_argument("--data", default="mathlib-small")
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--port", type=int, default=8761)
    ap.add_argument("--name", default="serve_code_ab")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    if args.static:
        from static_model import static_bundle_path

        args.bundle, args.data = args.bundle or static_bundle_path(DATA_NAME), DATA_NAME
    if args.bundle is None:
        ap.error("give a BUNDLE or --static")
    modes = [m for m in (("reranked", ()), ("plain", ("--no_rerank",))) if m[0] in args.modes.split(",")]
    code = {"before": str(args.before_src), "after": str(args.after_src)}
    arm_env = {"before": dict(e.split("=", 1) for e in args.before_env),
               "after": dict(e.split("=", 1) for e in args.after_env)}
    base_env = dict(os.environ)
    corpus = load_corpus(DataConfig(data_dir=unpacked(args.data)))
    modules = mathlib_modules(corpus)
    cache = Path(tempfile.mkdtemp(prefix="serve-ab-cache-"))
    runs = []
    try:
        for r in range(args.rounds):
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            for mode, extra in modes:
                for arm in order:
                    os.environ.clear()
                    os.environ.update(base_env, **arm_env[arm], PYTHONPATH=code[arm])  # the server imports this tree
                    store = Path(tempfile.mkdtemp(prefix="serve-ab-store-"))
                    try:
                        server = ServerProcess(args.bundle, args.port, cache, "auto", "float32",
                                               ("--embedding_cache", str(store / "e.lmdb"), *extra))
                        server.wait_ready()
                        clients = [Client(corpus, modules, seed, 50, 0.1, 0.2, args.k) for seed in range(args.clients)]
                        res = run_load(server.url, clients, args.duration, server.proc.pid)
                        server.stop()
                    finally:
                        shutil.rmtree(store, ignore_errors=True)
                    lat, warm = res["latency_all"], res["latency_cached_new_premises"]
                    new_goal = res["latency_cached_new_premises_state_not_sent_before"]
                    runs.append({"round": r, "mode": mode, "arm": arm, "n": lat["n"], "p50_ms": lat["p50_ms"],
                                 "p99_ms": lat["p99_ms"], "warm_n": warm["n"], "warm_p50_ms": warm.get("p50_ms"),
                                 "warm_p99_ms": warm.get("p99_ms"), "new_goal_p50_ms": new_goal.get("p50_ms"),
                                 "requests_per_s": res["requests_per_s"],
                                 "server_cpu_ms_per_request": res["server_cpu_ms_per_request"],
                                 "client_cpu_ms_per_request": res["client_cpu_ms_per_request"],
                                 "errors": res["errors"], "loadavg": os.getloadavg()[0]})
                    print(runs[-1], flush=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    names = [mode for mode, _ in modes]
    medians = {f"{mode}/{arm}": {q: _median([x[q] for x in runs if x["mode"] == mode and x["arm"] == arm])
                                 for q in QUANTITIES}
               for mode in names for arm in ("before", "after")}
    added = {arm: {q: _difference(medians[f"reranked/{arm}"][q], medians[f"plain/{arm}"][q]) for q in QUANTITIES}
             for arm in ("before", "after")} if len(names) == 2 else None
    ratios = {mode: {q: round(medians[f"{mode}/after"][q] / medians[f"{mode}/before"][q], 3) for q in QUANTITIES
                     if medians[f"{mode}/before"][q] and medians[f"{mode}/after"][q] is not None} for mode in names}
    write_result(args.name, {"bundle": str(args.bundle), "before_src": code["before"], "after_src": code["after"],
                             "before_env": arm_env["before"], "after_env": arm_env["after"],
                             "clients": args.clients, "k": args.k, "duration_s": args.duration, "runs": runs,
                             "medians": medians, "after_over_before": ratios, "rerank_added_ms": added,
                             "machine_load": "2-core, shared with other jobs" if os.getloadavg()[0] > 1.5 else "2-core",
                             "note": args.note})


def _median(values: list) -> float | None:
    """The median of the runs that had such requests (a run too short for any warm request has none)."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 1)


if __name__ == "__main__":
    main()
