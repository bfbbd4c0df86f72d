"""The premise server under attack: 4 honest clients (as in serve_load.py, at k=100) for --duration
seconds (default 60) per mix: once alone (quiet), then beside each attack mix.

    python benchmarks/serve_hostile.py [--bundle DIR] [--duration 60] [--clients 4] [--backend auto]
        [--mixes quiet,slow_bodies,chunk_storm,premise_burst,premise_burst16,premise_storm16,corpus] [--storm_once]

The mixes (each against a fresh server with the default settings):
  slow_bodies    64 connections (from 127.0.0.2) each announcing Content-Length: 60 and sending a byte
                 every 0.45 s; reconnecting when cut
  chunk_storm    2 connections (from 127.0.0.3) each sending a 1 MB body as 1-byte chunks, again and again
  premise_burst  4 clients (from 127.0.0.4-7) each sending requests of 2,048 unique new premises, in a loop
  premise_burst16  16 such clients at once (127.0.0.4-19), issue 22's point 3 kept up: each new request
                 as soon as its last is answered, or after the Retry-After of a 503
  premise_storm16  the same 16 clients retrying a 503 at once (they ignore Retry-After)
  corpus         1 client replaying the hostile corpus (tests/hostile_requests.py), with its short time
                 limits (HOSTILE_ENV)
  many_goals     issue 28, point 1: 12 requests in flight from one address (127.0.0.20), each of 64 fresh
                 goals of about 1,500 characters, each sent again as soon as it is answered
  invalid_bodies issue 28, point 2: 2 clients (127.0.0.21) re-posting a 590 KB body that is valid JSON but
                 breaks the schema in every entry (4 lists of 32,768 bad entries)
  unread_responses issue 28, point 3: 48 connections (127.0.0.22) each asking for /indexed-premises with a
                 tiny receive window, pipelining a /retrieve behind it and never reading; reconnecting
                 when cut
Attackers run in a process of their own (`--attack MIX`) and bind other loopback addresses than the honest
clients (127.0.0.1), so that the per-client cap sees them as other clients, as it would on a network.

Per mix: honest p50/p99 and their ratio to the quiet run (target <= 1.5), honest non-200 answers (target
0), /health p99 probed every 50 ms (target <= 100 ms), the server's peak RSS over its idle RSS (target
<= 1.5); and the honest requests bringing a goal not sent before (their new premises cached): p50/p99 and
ratio to the quiet run (target under premise_burst16: p99 <= 2). `--storm_once` instead times one 1 MB body in 1-byte chunks against an idle server: the server's
CPU seconds, the answer's status and seconds, and /health p50 meanwhile (run it with PYTHONPATH naming
another checkout's src/ for a before/after). Writes benchmarks/results/serve_hostile.json (or --name).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import socket
import subprocess
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
    percentiles,
    resolve_data_args,
    run_load,
)

from hostile_requests import HOSTILE_ENV, cases, send_case

HONEST_K = 100
MIXES = ("quiet", "slow_bodies", "chunk_storm", "premise_burst", "premise_burst16", "premise_storm16", "corpus",
         "many_goals", "invalid_bodies", "unread_responses")
TARGETS = {"honest_latency_ratio": 1.5, "honest_non_200": 0, "health_p99_ms": 100, "peak_over_idle_rss": 1.5,
           "new_goal_p99_ratio_premise_burst16": 2.0}
NEW_GOAL = "latency_cached_new_premises_state_not_sent_before"
"""run_load's latencies of the requests whose goal is new (and whose new premises are cached)."""


class HonestClient(Client):
    """serve_load's simulated user, asking for k=100."""

    def next_request(self):
        body, cached, repeated = super().next_request()
        body["k"] = HONEST_K
        return body, cached, repeated


def connect(port: int, source: str, timeout: float = 60) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_status(sock: socket.socket) -> str:
    data = b""
    try:
        while b"\r\n" not in data:
            piece = sock.recv(4096)
            if not piece:
                break
            data += piece
    except OSError as e:
        return type(e).__name__
    return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed"


def slow_bodies(port: int, stop: threading.Event, counts: collections.Counter, n: int = 64) -> None:
    """`n` connections sending a 60-byte body a byte every 0.45 s, each reconnecting when cut."""

    def one():
        while not stop.is_set():
            try:
                sock = connect(port, "127.0.0.2")
                sock.sendall(b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n")
                sock.setblocking(False)
                for _ in range(60):
                    if stop.wait(0.45):
                        break
                    try:
                        sock.send(b" ")
                    except BlockingIOError:
                        pass
                    try:
                        if sock.recv(4096):
                            counts["cut"] += 1
                            break
                    except BlockingIOError:
                        pass
                sock.close()
            except OSError as e:
                counts[type(e).__name__] += 1
                stop.wait(0.1)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


STORM_BODY = b'{"state": "x", "k": 8, "pad": "' + b"p" * (2**20 - 40) + b'"}'


def storm_wire() -> bytes:
    """A 1 MB body as 1-byte chunks: ~6 MB on the wire."""
    return b"".join(b"1\r\n%c\r\n" % c for c in STORM_BODY) + b"0\r\n\r\n"


def send_storm(port: int, wire: bytes, source: str) -> str:
    sock = connect(port, source)
    try:
        sock.sendall(b"POST /retrieve HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: application/json\r\n\r\n")
        result = {}

        def reader():
            result["status"] = read_status(sock)

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            for i in range(0, len(wire), 65536):
                if not t.is_alive():
                    break
                sock.sendall(wire[i : i + 65536])
        except OSError:
            pass
        t.join(timeout=120)
        return result.get("status", "no answer")
    finally:
        sock.close()


def chunk_storm(port: int, stop: threading.Event, counts: collections.Counter, n: int = 2) -> None:
    wire = storm_wire()

    def one():
        while not stop.is_set():
            try:
                counts[send_storm(port, wire, "127.0.0.3")] += 1
            except OSError as e:
                counts[type(e).__name__] += 1

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def premise_burst(port: int, stop: threading.Event, counts: collections.Counter, n: int = 4,
                  polite: bool = False) -> None:
    """`n` clients each posting requests of 2,048 unique short new premises, one after another; `polite`:
    after a 503, a client waits the Retry-After it was given before its next request."""
    import httpx
    import orjson

    def one(i: int):
        transport = httpx.HTTPTransport(local_address=f"127.0.0.{4 + i}")
        with httpx.Client(transport=transport, timeout=600) as http:
            round_ = 0
            while not stop.is_set():
                salt = f"{i}.{round_}.{os.urandom(4).hex()}"
                body = {"state": f"⊢ burst {salt}", "k": 8,
                        "new_premises": [{"name": f"B.{salt}.{j}", "decl": f"theorem B.{salt}.{j} : {j} = {j}"}
                                         for j in range(2048)]}
                try:
                    r = http.post(f"http://127.0.0.1:{port}/retrieve", content=orjson.dumps(body),
                                  headers={"content-type": "application/json"})
                    counts[str(r.status_code)] += 1
                    if polite and r.status_code == 503:
                        stop.wait(float(r.headers.get("retry-after", "1")))
                except httpx.HTTPError as e:
                    counts[type(e).__name__] += 1
                round_ += 1

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def corpus(port: int, stop: threading.Event, counts: collections.Counter) -> None:
    """Replay the hostile corpus (fresh unique names each round) until `stop`."""
    while not stop.is_set():
        for case in cases():
            if stop.is_set():
                return
            try:
                outcome, _ = send_case(case, "127.0.0.1", port)
            except OSError as e:
                outcome = f"client error {type(e).__name__}"
            counts[str(outcome)] += 1


def premise_burst16(port: int, stop: threading.Event, counts: collections.Counter) -> None:
    premise_burst(port, stop, counts, n=16, polite=True)


def premise_storm16(port: int, stop: threading.Event, counts: collections.Counter) -> None:
    premise_burst(port, stop, counts, n=16)


def many_goals(port: int, stop: threading.Event, counts: collections.Counter, n: int = 12) -> None:
    """`n` requests in flight from one address, each of 64 fresh goals of about 1,500 characters."""
    import httpx
    import orjson

    def one(i: int):
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.20"), timeout=600) as http:
            while not stop.is_set():
                salt = os.urandom(6).hex()
                body = {"state": [f"x y : ℕ\nh : x ≤ y {salt} {g}\n⊢ " + "x + y = y + x ∧ " * 90 for g in range(64)],
                        "k": 8}
                try:
                    r = http.post(f"http://127.0.0.1:{port}/retrieve", content=orjson.dumps(body),
                                  headers={"content-type": "application/json"})
                    counts[str(r.status_code)] += 1
                    if r.status_code in (429, 503):
                        stop.wait(float(r.headers.get("retry-after", "1")))
                except httpx.HTTPError as e:
                    counts[type(e).__name__] += 1

    _run_threads(one, n)


def invalid_bodies(port: int, stop: threading.Event, counts: collections.Counter, n: int = 2) -> None:
    """`n` clients re-posting a body that breaks the schema everywhere, at once after each answer."""
    import httpx
    import orjson

    m = 32_768
    body = orjson.dumps({"state": "x", "k": 8, "local_premises": [None] * m, "imported_modules": [None] * m,
                         "new_premises": [{}] * m, "imported_all_modules": [None] * m})

    def one(i: int):
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.21"), timeout=600) as http:
            while not stop.is_set():
                try:
                    r = http.post(f"http://127.0.0.1:{port}/retrieve", content=body,
                                  headers={"content-type": "application/json"})
                    counts[str(r.status_code)] += 1
                except httpx.HTTPError as e:
                    counts[type(e).__name__] += 1

    _run_threads(one, n)


def unread_responses(port: int, stop: threading.Event, counts: collections.Counter, n: int = 48) -> None:
    """`n` connections asking for /indexed-premises (several MB) with a tiny receive window, a /retrieve
    pipelined behind it, never reading; each reconnects once the server cuts it."""
    retrieve = b'{"state": "\u22a2 unread", "k": 8}'
    wire = (b"GET /indexed-premises HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(retrieve)).encode() + b"\r\n\r\n" + retrieve)

    def one(i: int):
        while not stop.is_set():
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
                sock.bind(("127.0.0.22", 0))
                sock.connect(("127.0.0.1", port))
                sock.sendall(wire)
                counts["sent"] += 1
                sock.settimeout(1.0)
                while not stop.is_set():  # never read: only notice when the server cuts the connection
                    try:
                        if sock.recv(1, socket.MSG_PEEK) == b"" and not stop.wait(0):
                            break
                    except TimeoutError:
                        continue
                    stop.wait(1.0)
                    try:
                        sock.send(b"")
                    except OSError:
                        break
                counts["cut"] += 1
                sock.close()
            except OSError as e:
                counts[type(e).__name__] += 1
                stop.wait(0.5)

    _run_threads(one, n)


def _run_threads(target, n: int) -> None:
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


ATTACKS = {"slow_bodies": slow_bodies, "chunk_storm": chunk_storm, "premise_burst": premise_burst,
           "premise_burst16": premise_burst16, "premise_storm16": premise_storm16, "corpus": corpus,
           "many_goals": many_goals, "invalid_bodies": invalid_bodies, "unread_responses": unread_responses}


def probe_health(url: str, stop: threading.Event, seconds: list[float], statuses: collections.Counter) -> None:
    """GET /health every 50 ms until `stop`, recording each answer's seconds."""
    import httpx

    with httpx.Client(timeout=60) as http:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                statuses[str(http.get(f"{url}/health").status_code)] += 1
            except httpx.HTTPError as e:
                statuses[type(e).__name__] += 1
            seconds.append(time.perf_counter() - t0)
            stop.wait(0.05)


def one_run(args, corpus_, mathlib, cache: Path, mix: str) -> dict:
    import psutil

    saved = dict(os.environ)
    # each run gets its own persistent embedding cache: no run finds another's vectors
    os.environ["EMBEDDING_CACHE_DIR"] = str(cache / f"embeddings-{mix}")
    if mix == "corpus":
        os.environ.update(HOSTILE_ENV)
    server = ServerProcess(args.bundle, args.port, cache, args.backend, "float32")
    os.environ.clear()
    os.environ.update(saved)
    try:
        server.wait_ready()
        time.sleep(2)
        idle = psutil.Process(server.proc.pid).memory_info().rss
        clients = [HonestClient(corpus_, mathlib, seed, args.new_premises, args.fresh_share)
                   for seed in range(args.clients)]
        stop = threading.Event()
        health_s, health_status = [], collections.Counter()
        prober = threading.Thread(target=probe_health, args=(server.url, stop, health_s, health_status), daemon=True)
        prober.start()
        attacker = None
        if mix in ATTACKS:  # in a process of its own: its threads do not take the honest clients' GIL
            attacker = subprocess.Popen([sys.executable, __file__, "--attack", mix, "--port", str(args.port),
                                         "--duration", str(args.duration + 5)], stdout=subprocess.PIPE, text=True)
            time.sleep(3)  # the attack under way before the honest clients start
        result = run_load(server.url, clients, args.duration, server.proc.pid)
        stop.set()
        prober.join(timeout=120)
        counts = json.loads(attacker.communicate(timeout=300)[0] or "{}") if attacker else {}
        result["server_idle_rss_mib"] = round(idle / 2**20, 1)
        result["peak_over_idle_rss"] = round(result["server_peak_rss_mib"] * 2**20 / idle, 2)
        result["honest_non_200"] = sum(result["errors"].values())
        result["health"] = {**percentiles(health_s), "statuses": dict(health_status)}
        if mix in ATTACKS:
            result["attacker_outcomes"] = dict(counts)
        return result
    finally:
        server.stop()


def storm_once(args, cache: Path) -> dict:
    """One 1 MB body in 1-byte chunks against an idle server: its CPU, its answer, /health meanwhile."""
    import psutil

    os.environ["EMBEDDING_CACHE_DIR"] = str(cache / "embeddings-storm")
    server = ServerProcess(args.bundle, args.port, cache, args.backend, "float32")
    try:
        server.wait_ready()
        time.sleep(2)
        proc = psutil.Process(server.proc.pid)
        wire = storm_wire()
        stop, health_s, health_status = threading.Event(), [], collections.Counter()
        prober = threading.Thread(target=probe_health, args=(server.url, stop, health_s, health_status), daemon=True)
        cpu0 = sum(proc.cpu_times()[:2])
        prober.start()
        t0 = time.perf_counter()
        status = send_storm(args.port, wire, "127.0.0.3")
        seconds = time.perf_counter() - t0
        time.sleep(1)  # the server may still be parsing what it received
        stop.set()
        prober.join()
        return {"wire_mib": round(len(wire) / 2**20, 1), "status": status, "seconds": round(seconds, 2),
                "server_cpu_s": round(sum(proc.cpu_times()[:2]) - cpu0, 2),
                "health_during": {**percentiles(health_s), "statuses": dict(health_status)},
                "code": os.environ.get("PYTHONPATH", "this checkout")}
    finally:
        server.stop()


def attack_only(mix: str, port: int, seconds: float) -> None:
    """Run attack `mix` against `port` for `seconds`, then print its outcomes as JSON (a child process)."""
    stop, counts = threading.Event(), collections.Counter()
    thread = threading.Thread(target=ATTACKS[mix], args=(port, stop, counts), daemon=True)
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join(timeout=120)
    print(json.dumps(dict(counts)))


def main() -> None:
    from leanpremise.data import DataConfig, load_corpus

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=None,
                    help=f"default: <bench cache>/bundles/{DATA_NAME}-minilm, built when missing")
    add_data_args(ap)
    ap.add_argument("--duration", type=float, default=60, help="seconds of honest load per mix")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--new_premises", type=int, default=50)
    ap.add_argument("--fresh_share", type=float, default=0.1)
    ap.add_argument("--port", type=int, default=8732)
    ap.add_argument("--mixes", default=",".join(MIXES), help=f"comma-separated, of {', '.join(MIXES)}")
    ap.add_argument("--storm_once", action="store_true", help="time one 1 MB body in 1-byte chunks instead")
    ap.add_argument("--name", default=None, help="result file name (default serve_hostile, or "
                                                 "serve_hostile_storm with --storm_once)")
    ap.add_argument("--attack", choices=sorted(ATTACKS), default=None,
                    help="only run this attack against --port for --duration seconds (what each mix starts)")
    args = ap.parse_args()
    if args.attack:
        return attack_only(args.attack, args.port, args.duration)
    resolve_data_args(args)
    args.bundle = args.bundle or bundles_dir() / f"{DATA_NAME}-minilm"
    cache = Path(tempfile.mkdtemp(prefix="serve-hostile-cache-", dir=bundles_dir()))
    try:
        if args.storm_once:
            ensure_bundle(args.bundle, args.data_dir, args.embeddings, 0)
            write_result(args.name or "serve_hostile_storm", {"bundle": args.bundle.name, **storm_once(args, cache)})
            return
        corpus_ = load_corpus(DataConfig(data_dir=args.data_dir))
        kind = ensure_bundle(args.bundle, args.data_dir, args.embeddings, len(corpus_))
        mathlib = mathlib_modules(corpus_)
        mixes = [m.strip() for m in args.mixes.split(",") if m.strip()]
        if "quiet" not in mixes:
            mixes.insert(0, "quiet")
        runs = {mix: one_run(args, corpus_, mathlib, cache, mix) for mix in mixes}
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    quiet = runs["quiet"]["latency_all"]
    quiet_new = runs["quiet"][NEW_GOAL]
    summary = {}
    for mix, run in runs.items():
        lat, new = run["latency_all"], run[NEW_GOAL]
        summary[mix] = {
            "honest_p50_ms": lat.get("p50_ms"), "honest_p99_ms": lat.get("p99_ms"),
            "honest_p50_ratio": round(lat["p50_ms"] / quiet["p50_ms"], 2) if lat.get("p50_ms") else None,
            "honest_p99_ratio": round(lat["p99_ms"] / quiet["p99_ms"], 2) if lat.get("p99_ms") else None,
            "honest_requests": run["requests"], "honest_non_200": run["honest_non_200"],
            "health_p99_ms": run["health"].get("p99_ms"), "peak_over_idle_rss": run["peak_over_idle_rss"],
            "new_goal_p50_ms": new.get("p50_ms"), "new_goal_p99_ms": new.get("p99_ms"),
            "new_goal_p99_ratio": round(new["p99_ms"] / quiet_new["p99_ms"], 2) if new.get("p99_ms") else None,
            "attacker_outcomes": run.get("attacker_outcomes"),
        }
    write_result(args.name or "serve_hostile", {
        "bundle": args.bundle.name, "corpus_embeddings": kind, "clients": args.clients, "k": HONEST_K,
        "duration_s": args.duration, "summary": summary, "targets": TARGETS, "runs": runs,
        "note": "closed loop; attackers, honest clients and server share the machine's cores",
    })


if __name__ == "__main__":
    main()
