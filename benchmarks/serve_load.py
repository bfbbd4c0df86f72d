"""Load test of the premise server: 4 clients on loopback for 60 s sending Lean-client-shaped requests.

    python benchmarks/serve_load.py [--bundle DIR] [--duration 60] [--clients 4] [--backend auto] [--dtype float32]

The bundle is mathlib-src with all-MiniLM-L6-v2 (built on first use with
`leanpremise export --corpus_embeddings`); when the MiniLM corpus embeddings are
not available yet, random unit vectors of the same shape stand in (search cost
does not depend on the values) and the result says so.

Each client plays a user editing one Mathlib file: imported_modules = the
import closure of a random Mathlib module (as positions in /indexed-modules),
local_premises = positions of that module's earlier declarations, 50 new
premises that repeat from request to request, of which a share is replaced by
unseen ones; every 100 requests the client moves to another file. The goal is
new each time (the file's declarations in turn) except for a share
(--repeat_share, 0.2) that re-sends one of the file's earlier goals, as
re-elaboration after an edit does. Latency is reported separately for
requests whose new premises are all cached, and among those for new and
re-sent goals.

Reports startup time (cold: unpack + parse the premises archive; warm: parse
cache present), p50/p90/p99 latency, requests/s and the server's peak RSS.
Targets on the 2-core machine: p50 <= 50 ms and p99 <= 250 ms for cached
requests; startup <= 30 s. Writes benchmarks/results/serve_load.json.

    python benchmarks/serve_load.py --restart [--new_premises 50]

instead times a file's first request (a new goal and 50 premises no server has
seen) after a restart: one server answers it (embedding them, which fills its
persistent embedding cache) and stops; then a server restarted on that cache
and one restarted on a fresh, empty cache each answer the same request first.
Reports both latencies, their ratio (target >= 20x) and whether the warm
answer is bit-identical. Writes benchmarks/results/serve_restart.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ServerProcess, bench_cache, unpacked, write_result

DATA_NAME = "mathlib-src"
"""The shared dataset the serve benchmarks use (unpacked once into the bench cache)."""
REQUESTS_PER_FILE = 100


def bundles_dir() -> Path:
    """Bundles, server caches and stand-in embeddings of the serve benchmarks, in the bench cache (made
    when missing: the benchmarks make their temporary folders in it)."""
    folder = bench_cache() / "bundles"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def minilm_embeddings() -> Path:
    """The MiniLM corpus embeddings of mathlib-src, if someone computed them (else random rows stand in)."""
    return bench_cache() / "emb" / f"all-MiniLM-L6-v2-{DATA_NAME}.npy"


def add_data_args(ap: argparse.ArgumentParser) -> None:
    """--data_dir and --embeddings, defaulting to the bench cache (shared by serve_load and serve_search)."""
    ap.add_argument("--data_dir", type=Path, default=None,
                    help=f"default: {DATA_NAME} from the shared data, unpacked once into the bench cache")
    ap.add_argument("--embeddings", type=Path, default=None,
                    help="corpus embeddings (.npy); default: <bench cache>/emb/"
                         f"all-MiniLM-L6-v2-{DATA_NAME}.npy, random unit rows when it does not exist")


def resolve_data_args(args) -> None:
    args.data_dir = args.data_dir or unpacked(DATA_NAME)
    args.embeddings = args.embeddings or minilm_embeddings()


def ensure_bundle(bundle: Path, data_dir: Path, embeddings: Path, n_premises: int, hybrid: Path | None = None
                  ) -> str:
    """Build the bundle if missing (or if it used random vectors and real ones exist now); returns the kind.
    `hybrid`: a fusion.json to export with (`export --hybrid`)."""
    import json

    manifest = bundle / "manifest.json"
    real = embeddings.exists()
    if manifest.exists():
        recorded = json.loads(manifest.read_text())
        if recorded.get("model_type") == "static":  # its own rows (export_speed.py --static wrote it)
            return "static"
        kind = "random" if "random" in recorded.get("source_model", "") else "minilm"
        if kind == "minilm" or not real:
            return kind
    source = embeddings
    if not real:
        source = bundles_dir() / f"random-unit-384-{DATA_NAME}.npy"
        if not source.exists():
            arr = random_unit_rows(n_premises)
            source.parent.mkdir(parents=True, exist_ok=True)
            np.save(source, arr)
    from leanpremise.data import DataConfig
    from leanpremise.export.exporter import ExportConfig, export_bundle
    from leanpremise.model.encoder import default_model_path

    m = export_bundle(ExportConfig(model=str(default_model_path()), out=bundle, data=DataConfig(data_dir=data_dir),
                                   int8=True, corpus_embeddings=source, model_name="all-MiniLM-L6-v2",
                                   fusion=hybrid))
    if not real:  # mark the bundle so a later run rebuilds it with the real embeddings
        m.source_model += " (random embeddings)"
        from leanpremise.atomic import atomic_write_bytes

        atomic_write_bytes(bundle / "manifest.json", m.to_json())
    return "minilm" if real else "random"


def random_unit_rows(n: int, dim: int = 384) -> np.ndarray:
    """Stand-in corpus embeddings: random unit vectors of MiniLM's shape (search cost ignores the values)."""
    arr = np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)
    arr /= np.linalg.norm(arr, axis=1, keepdims=True)
    return arr


def mathlib_modules(corpus) -> np.ndarray:
    """Ids of the Mathlib modules that declare premises: the files a simulated user edits."""
    mathlib = np.flatnonzero([m.startswith("Mathlib.") for m in corpus.modules])
    return mathlib[(corpus.module_end[mathlib] - corpus.module_start[mathlib]) > 0]


class Client:
    """One simulated user: a file (module), its imports and locals, and 50 mostly repeating new premises."""

    def __init__(self, corpus, modules: np.ndarray, seed: int, n_new: int, fresh_share: float,
                 repeat_share: float = 0.2, k: int = 100):
        self.corpus, self.modules, self.n_new, self.fresh_share = corpus, modules, n_new, fresh_share
        self.k = k
        self.repeat_share = repeat_share
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.fresh = 0
        self.sent_in_file = REQUESTS_PER_FILE

    def _open_file(self) -> None:
        c = self.corpus
        self.mid = int(self.rng.choice(self.modules))
        lo, hi = int(c.module_start[self.mid]), int(c.module_end[self.mid])
        self.ids = np.arange(lo, hi)
        self.imported = c.imports_of(self.mid).tolist()
        picks = self.rng.choice(len(c), self.n_new, replace=False)
        self.new = [{"name": f"User{self.seed}.{c.names[i]}", "decl": c.text(int(i))} for i in picks.tolist()]
        self.sent_in_file = 0
        self.sent_states: list[str] = []
        self.state_cursor = 0

    def _state(self) -> tuple[str, bool]:
        """(goal, sent before): mostly a goal not sent yet (each of the file's declarations once, then
        goals with a hypothesis added); a share of `repeat_share` re-sends one of this file's earlier
        goals, as Lean does when it re-elaborates the proofs below an edit."""
        if self.sent_states and self.rng.random() < self.repeat_share:
            return self.sent_states[int(self.rng.integers(len(self.sent_states)))], True
        c = self.corpus
        i = int(self.ids[self.state_cursor % len(self.ids)])
        goal = "⊢ " + c.text(i).split(" : ", 1)[-1]
        if self.state_cursor >= len(self.ids):
            j = int(self.rng.integers(len(c)))
            goal = f"h{self.state_cursor} : {c.text(j).split(' : ', 1)[-1]}\n{goal}"
        self.state_cursor += 1
        self.sent_states.append(goal)
        return goal, False

    def next_request(self) -> tuple[dict, bool, bool]:
        """(body, all new premises already seen by the server, state already sent)."""
        if self.sent_in_file >= REQUESTS_PER_FILE:
            self._open_file()
        cached = self.sent_in_file > 0
        if cached and self.rng.random() < self.fresh_share:
            for j in self.rng.choice(self.n_new, 3, replace=False).tolist():
                self.fresh += 1
                self.new[j] = {"name": f"User{self.seed}.fresh{self.fresh}",
                               "decl": f"theorem User{self.seed}.fresh{self.fresh} (n : ℕ) : n + {self.fresh} = "
                                       f"{self.fresh} + n"}
            cached = False
        cursor = int(self.rng.integers(0, len(self.ids) + 1))
        local = self.corpus.source_index[self.ids[:cursor]].tolist()
        state, repeated = self._state()
        body = {"state": state, "local_premises": local, "imported_modules": self.imported,
                "new_premises": list(self.new), "k": self.k, "caller_in_module_system": False,
                "imported_all_modules": []}
        self.sent_in_file += 1
        return body, cached, repeated


def percentiles(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    a = np.asarray(xs) * 1000
    return {"n": len(xs), "p50_ms": round(float(np.percentile(a, 50)), 1), "p90_ms": round(float(np.percentile(a, 90)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1), "mean_ms": round(float(a.mean()), 1)}


def run_load(url: str, clients: list[Client], duration: float, pid: int) -> dict:
    import httpx
    import psutil

    records: list[tuple[float, int, bool, bool]] = []
    lock = threading.Lock()
    stop = time.perf_counter() + duration
    proc = psutil.Process(pid)
    peak = [proc.memory_info().rss]

    def worker(client: Client):
        with httpx.Client(timeout=60) as http:
            while time.perf_counter() < stop:
                body, cached, repeated = client.next_request()
                payload = orjson.dumps(body)  # as compact as Lean's client sends, and cheap for the shared cores
                t0 = time.perf_counter()
                r = http.post(f"{url}/retrieve", content=payload, headers={"content-type": "application/json"})
                dt = time.perf_counter() - t0
                with lock:
                    records.append((dt, r.status_code, cached, repeated))

    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    cpu0 = proc.cpu_times()
    own0 = psutil.Process().cpu_times()
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak.append(proc.memory_info().rss)
        time.sleep(0.5)
    elapsed = time.perf_counter() - t0
    cpu1 = proc.cpu_times()
    own1 = psutil.Process().cpu_times()
    server_cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    client_cpu_s = (own1.user + own1.system) - (own0.user + own0.system)
    ok = [r for r in records if r[1] == 200]
    return {
        "duration_s": round(elapsed, 1),
        "requests": len(records),
        "errors": {str(code): sum(1 for r in records if r[1] == code) for code in {r[1] for r in records} if code != 200},
        "requests_per_s": round(len(records) / elapsed, 2),
        "latency_all": percentiles([r[0] for r in ok]),
        "latency_cached_new_premises": percentiles([r[0] for r in ok if r[2]]),
        "latency_with_uncached_new_premises": percentiles([r[0] for r in ok if not r[2]]),
        "latency_cached_new_premises_state_sent_before": percentiles([r[0] for r in ok if r[2] and r[3]]),
        "latency_cached_new_premises_state_not_sent_before": percentiles([r[0] for r in ok if r[2] and not r[3]]),
        "server_peak_rss_mib": round(max(peak) / 2**20, 1),
        "server_cpu_ms_per_request": round(server_cpu_s * 1000 / max(len(records), 1), 2),
        "client_cpu_ms_per_request": round(client_cpu_s * 1000 / max(len(records), 1), 2),  # this process: the clients
    }


def server_metric(url: str, name: str) -> float:
    """One sample of the server's /metrics page (0 when absent)."""
    import httpx

    lines = [ln for ln in httpx.get(f"{url}/metrics").text.splitlines() if ln.startswith(name + " ")]
    return float(lines[0].split()[-1]) if lines else 0.0


def first_request(args, cache: Path, store: Path, payload: bytes) -> dict:
    """Start a server on `cache` with its persistent embedding cache in `store`, time the first /retrieve of
    `payload` once it is healthy, stop it; the latency, the answer and the texts the server embedded."""
    import httpx

    server = ServerProcess(args.bundle, args.port, cache, args.backend, args.dtype, ("--embedding_cache", str(store)))
    try:
        startup = server.wait_ready()
        t0 = time.perf_counter()
        r = httpx.post(f"{server.url}/retrieve", content=payload, headers={"content-type": "application/json"},
                       timeout=600)
        latency = time.perf_counter() - t0
        if r.status_code != 200:
            raise SystemExit(f"/retrieve answered {r.status_code}: {r.text[:300]}")
        embedded = server_metric(server.url, "leanpremise_embedded_texts_total")
        store_hits = server_metric(server.url, "leanpremise_embedding_store_hits_total")
        backend = httpx.get(f"{server.url}/health").json()["backend"]
    finally:
        server.stop()  # a graceful stop: the cache writes still queued are flushed
    return {"latency_s": latency, "answer": r.content, "embedded": int(embedded), "store_hits": int(store_hits),
            "startup_s": round(startup, 1), "backend": backend}


def run_restart(args, corpus, modules, kind: str) -> None:
    """First-request latency after a restart, with the persistent embedding cache warm and fresh."""
    client = Client(corpus, modules, seed=10_000, n_new=args.new_premises, fresh_share=0.0)
    body, _, _ = client.next_request()
    payload = orjson.dumps(body)
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="serve-restart-cache-", dir=bundles_dir()))
    stores = Path(tempfile.mkdtemp(prefix="serve-restart-stores-", dir=bundles_dir()))
    try:
        seed = first_request(args, cache, stores / "warm.lmdb", payload)  # embeds them and stores them
        warm = first_request(args, cache, stores / "warm.lmdb", payload)
        fresh = first_request(args, cache, stores / "fresh.lmdb", payload)
    finally:
        shutil.rmtree(stores, ignore_errors=True)
        if args.cache_dir is None:
            shutil.rmtree(cache, ignore_errors=True)
    fresh_scores = np.array([r["score"] for r in orjson.loads(fresh["answer"])])
    seed_scores = np.array([r["score"] for r in orjson.loads(seed["answer"])])
    write_result(args.name or "serve_restart", {
        "bundle": str(args.bundle), "corpus_embeddings": kind, "backend": warm["backend"], "dtype": args.dtype,
        "new_premises": args.new_premises, "texts_in_request": args.new_premises + 1,
        "first_request_fresh_cache_ms": round(fresh["latency_s"] * 1000, 1),
        "first_request_warm_cache_ms": round(warm["latency_s"] * 1000, 1),
        "speedup": round(fresh["latency_s"] / warm["latency_s"], 1),
        "embedded": {"first_server": seed["embedded"], "restart_warm": warm["embedded"],
                     "restart_fresh": fresh["embedded"]},
        "store_hits_restart_warm": warm["store_hits"],
        "warm_answer_bit_identical": warm["answer"] == seed["answer"],
        "fresh_answer_max_score_diff": float(np.max(np.abs(fresh_scores - seed_scores), initial=0.0))
        if len(fresh_scores) == len(seed_scores) else None,
        "startup_s": {"first": seed["startup_s"], "warm": warm["startup_s"], "fresh": fresh["startup_s"]},
        "loadavg_at_end": os.getloadavg(),
        "targets": {"speedup": 20},
        "note": "each latency is the first /retrieve a freshly started server answers; the request is a new "
                "goal and new premises (corpus texts under new names); both restarts share the parse cache",
    })


def main() -> None:
    from leanpremise.data import DataConfig, load_corpus

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=None,
                    help=f"default: <bench cache>/bundles/{DATA_NAME}-minilm, built when missing")
    ap.add_argument("--static", action="store_true",
                    help="serve the static model's bundle instead (benchmarks/export_speed.py --static writes it)")
    add_data_args(ap)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--k", type=int, default=100, help="premises asked per request (LeanHammer asks for 100)")
    ap.add_argument("--new_premises", type=int, default=50)
    ap.add_argument("--fresh_share", type=float, default=0.1, help="share of requests bringing 3 unseen new premises")
    ap.add_argument("--repeat_share", type=float, default=0.2,
                    help="share of requests re-sending an earlier goal of the same file (re-elaboration)")
    ap.add_argument("--port", type=int, default=8731)
    ap.add_argument("--name", default=None, help="result file name (benchmarks/results/<name>.json; default "
                                                  "serve_load, or serve_restart with --restart)")
    ap.add_argument("--restart", action="store_true",
                    help="time a file's first request after a restart, persistent embedding cache warm vs fresh")
    ap.add_argument("--cache_dir", type=Path, default=None,
                    help="reuse this server cache (unpacked premises + parse) and skip the cold start")
    ap.add_argument("--hybrid", type=Path, default=None, metavar="FUSION_JSON",
                    help="serve a bundle exported with this fusion (default bundle: <bench cache>/bundles/"
                         f"{DATA_NAME}-minilm-hybrid, built when missing)")
    args = ap.parse_args()
    resolve_data_args(args)
    if args.static and args.bundle is None:
        from static_model import static_bundle_path

        args.bundle = static_bundle_path(DATA_NAME)
        if not (args.bundle / "manifest.json").exists():
            raise SystemExit(f"{args.bundle}: missing; run benchmarks/export_speed.py --static first")
    args.bundle = args.bundle or bundles_dir() / f"{DATA_NAME}-minilm{'-hybrid' if args.hybrid else ''}"

    corpus = load_corpus(DataConfig(data_dir=args.data_dir))
    kind = ensure_bundle(args.bundle, args.data_dir, args.embeddings, len(corpus), args.hybrid)
    mathlib = mathlib_modules(corpus)
    if args.restart:
        run_restart(args, corpus, mathlib, kind)
        return

    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="serve-load-cache-", dir=bundles_dir()))
    # The persistent embedding cache starts empty in every run, also with --cache_dir: the clients' goals
    # repeat from run to run (fixed seeds), so a store kept from an earlier run would answer "new" goals
    # without embedding them.
    store = Path(tempfile.mkdtemp(prefix="serve-load-store-", dir=bundles_dir()))
    fresh_store = ("--embedding_cache", str(store / "embeddings.lmdb"))
    try:
        startup_cold = None
        if args.cache_dir is None:
            cold = ServerProcess(args.bundle, args.port, cache, args.backend, args.dtype, fresh_store)
            startup_cold = round(cold.wait_ready(), 1)
            cold.stop()
        server = ServerProcess(args.bundle, args.port, cache, args.backend, args.dtype, fresh_store)
        startup_warm = server.wait_ready()
        import httpx

        health = httpx.get(f"{server.url}/health").json()
        loadavg = os.getloadavg()
        clients = [Client(corpus, mathlib, seed, args.new_premises, args.fresh_share, args.repeat_share, args.k)
                   for seed in range(args.clients)]
        result = run_load(server.url, clients, args.duration, server.proc.pid)
        result["states_embedded"] = int(server_metric(server.url, "leanpremise_state_cache_misses_total"))
        result["store_hits"] = int(server_metric(server.url, "leanpremise_embedding_store_hits_total"))
        server.stop()
    finally:
        shutil.rmtree(store, ignore_errors=True)
        if args.cache_dir is None:
            shutil.rmtree(cache, ignore_errors=True)
    write_result(args.name or "serve_load", {
        "bundle": str(args.bundle), "corpus_embeddings": kind, "premises": health["premises"],
        "modules": health["modules"], "backend": health["backend"], "model_type": health.get("model_type"),
        "dtype": args.dtype, "clients": args.clients,
        "k": args.k,
        "new_premises_per_request": args.new_premises, "fresh_share": args.fresh_share,
        "repeat_share": args.repeat_share,
        "startup_cold_s": startup_cold, "startup_warm_s": round(startup_warm, 1),
        "server_load_seconds": health["load_seconds"], **result, "loadavg_at_start": loadavg,
        "hybrid": health.get("hybrid"),
        "targets": ({"p50_ms": 40, "p99_ms": 200} if health.get("hybrid") else {"p50_ms": 30, "p99_ms": 150})
        if args.k == 100 else {"p50_cached_ms": 50, "p99_cached_ms": 250, "startup_s": 30},
        "note": "closed loop: each client sends its next request when the last is answered; "
                "the clients run on the server's 2 cores",
    })


if __name__ == "__main__":
    main()
