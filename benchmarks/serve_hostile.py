"""The premise server under attack: 4 honest clients (as in serve_load.py, at k=100) for 60 s, once alone
and once beside 1 client replaying the hostile corpus (tests/hostile_requests.py) in a loop.

    python benchmarks/serve_hostile.py [--bundle DIR] [--duration 60] [--clients 4] [--backend auto]

The bundle is serve_load.py's mathlib-src bundle (built on first use). Each run starts a fresh server with
the default limits and the short time limits of the corpus (HOSTILE_ENV: a slow body or slow headers are
cut off after 2 s). Reports the honest clients' p50/p99 in both runs, the server's idle and peak RSS, and
the count of answers by status, honest and hostile apart. Targets: honest p50 and p99 with the attacker
within 1.25x of those without; peak RSS <= 1.5x idle RSS; no 500. Writes
benchmarks/results/serve_hostile.json.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import ServerProcess, write_result
from serve_load import (
    DATA_NAME,
    Client,
    add_data_args,
    bundles_dir,
    ensure_bundle,
    mathlib_modules,
    resolve_data_args,
    run_load,
)

from hostile_requests import HOSTILE_ENV, cases, send_case

HONEST_K = 100


class HonestClient(Client):
    """serve_load's simulated user, asking for k=100."""

    def next_request(self):
        body, cached, repeated = super().next_request()
        body["k"] = HONEST_K
        return body, cached, repeated


def attack(port: int, stop: threading.Event, counts: collections.Counter, slowest: dict) -> None:
    """Replay the hostile corpus (fresh unique names each round) until `stop`."""
    while not stop.is_set():
        for case in cases():
            if stop.is_set():
                return
            try:
                outcome, seconds = send_case(case, "127.0.0.1", port)
            except OSError as e:
                outcome, seconds = f"client error {type(e).__name__}", 0.0
            counts[str(outcome)] += 1
            slowest[case.name] = round(max(slowest.get(case.name, 0.0), seconds), 2)


def one_run(args, corpus, mathlib, cache: Path, hostile: bool) -> dict:
    import psutil

    # each run gets its own persistent embedding cache: the second must not find the first one's vectors
    os.environ["EMBEDDING_CACHE_DIR"] = str(cache / ("embeddings-attacked" if hostile else "embeddings-calm"))
    server = ServerProcess(args.bundle, args.port, cache, args.backend, "float32")
    try:
        server.wait_ready()
        time.sleep(2)
        idle = psutil.Process(server.proc.pid).memory_info().rss
        clients = [HonestClient(corpus, mathlib, seed, args.new_premises, args.fresh_share)
                   for seed in range(args.clients)]
        stop, counts, slowest = threading.Event(), collections.Counter(), {}
        attacker = threading.Thread(target=attack, args=(args.port, stop, counts, slowest), daemon=True)
        if hostile:
            attacker.start()
        result = run_load(server.url, clients, args.duration, server.proc.pid)
        stop.set()
        if hostile:
            attacker.join(timeout=60)
        result["server_idle_rss_mib"] = round(idle / 2**20, 1)
        result["peak_over_idle_rss"] = round(result["server_peak_rss_mib"] * 2**20 / idle, 2)
        if hostile:
            result["hostile_outcomes"] = dict(counts)
            result["hostile_slowest_case_s"] = dict(sorted(slowest.items(), key=lambda kv: -kv[1])[:5])
        return result
    finally:
        server.stop()


def main() -> None:
    from leanpremise.data import DataConfig, load_corpus

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=None,
                    help=f"default: <bench cache>/bundles/{DATA_NAME}-minilm, built when missing")
    add_data_args(ap)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--new_premises", type=int, default=50)
    ap.add_argument("--fresh_share", type=float, default=0.1)
    ap.add_argument("--port", type=int, default=8732)
    ap.add_argument("--name", default="serve_hostile", help="result file name (benchmarks/results/<name>.json)")
    args = ap.parse_args()
    resolve_data_args(args)
    args.bundle = args.bundle or bundles_dir() / f"{DATA_NAME}-minilm"
    os.environ.update(HOSTILE_ENV)  # the servers started below inherit the corpus's time limits

    corpus = load_corpus(DataConfig(data_dir=args.data_dir))
    kind = ensure_bundle(args.bundle, args.data_dir, args.embeddings, len(corpus))
    mathlib = mathlib_modules(corpus)
    cache = Path(tempfile.mkdtemp(prefix="serve-hostile-cache-", dir=bundles_dir()))
    try:
        calm = one_run(args, corpus, mathlib, cache, hostile=False)
        attacked = one_run(args, corpus, mathlib, cache, hostile=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    def ratio(key: str, group: str = "latency_all") -> float | None:
        a, b = attacked[group].get(key), calm[group].get(key)
        return round(a / b, 2) if a and b else None

    statuses = collections.Counter(attacked.get("hostile_outcomes", {}))
    for run in (calm, attacked):
        statuses.update({f"honest {k}": v for k, v in run["errors"].items()})
    write_result(args.name, {
        "bundle": str(args.bundle), "corpus_embeddings": kind, "clients": args.clients, "k": HONEST_K,
        "duration_s": args.duration, "without_attacker": calm, "with_attacker": attacked,
        "honest_p50_ratio": ratio("p50_ms"), "honest_p99_ratio": ratio("p99_ms"),
        "honest_cached_p50_ratio": ratio("p50_ms", "latency_cached_new_premises"),
        "honest_cached_p99_ratio": ratio("p99_ms", "latency_cached_new_premises"),
        "answers_500": sum(v for k, v in statuses.items() if k.endswith("500")),
        "targets": {"honest_latency_ratio": 1.25, "peak_over_idle_rss": 1.5, "answers_500": 0},
        "note": "closed loop; the attacker shares the machine's cores with the server and honest clients",
    })


if __name__ == "__main__":
    main()
