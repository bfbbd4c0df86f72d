"""Shared by the export and serve tests: a hand-made data dir and its bundle, a server on loopback (in a thread
or a process), a brute-force ranker."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import decl, make_data_dir
from liveness import LIVENESS_S

MODULES = ["Init.Core", "Mathlib.Logic.Basic", "Mathlib.Data.Nat.Basic", "Mathlib.ModSys.Defs",
           "Mathlib.ModSys.Use", "Lean.Elab.Thing", "Mathlib.Order.Lattice"]
PREFIX = {"Init.Core": "Core", "Mathlib.Logic.Basic": "Logic", "Mathlib.Data.Nat.Basic": "Nat",
          "Mathlib.Order.Lattice": "Lattice"}
TYPES = ["a + b = b + a", "a * b = b * a", "a ≤ b → b ≤ c → a ≤ c", "¬¬p ↔ p", "p ∧ q → q ∧ p", "n < n + 1",
         "0 + n = n", "f (g x) = (f ∘ g) x", "s ⊆ s ∪ t", "x ∈ {x}"]


def module_system_decl(name, line, kind, exposed):
    row = decl(name, line, kind=kind, type_=f"{name.split('.')[-1]} = {line}")
    row.update(inModuleSystem=True, isExposed=exposed)
    return row


def build_data_dir(root: Path) -> Path:
    """Seven modules, ~50 declarations: a filtered-out module, a blacklisted name, module-system flags."""
    decls = {}
    line = 1
    for m in ["Init.Core", "Mathlib.Logic.Basic", "Mathlib.Data.Nat.Basic", "Mathlib.Order.Lattice"]:
        rows = []
        for j, t in enumerate(TYPES):
            kind = "theorem" if j % 3 else "def"
            rows.append(decl(f"{PREFIX[m]}.p{j}", line, kind=kind, type_=t))
            line += 1
        decls[m] = rows
    decls["Mathlib.Logic.Basic"].append(decl("Blacklisted.thm", 99, type_="True"))
    decls["Lean.Elab.Thing"] = [decl("Lean.Elab.thing", 1, type_="Lean.Syntax"), decl("thing2", 2)]
    decls["Mathlib.ModSys.Defs"] = [
        module_system_decl("ModSys.hiddenDef", 1, "def", exposed=False),
        module_system_decl("ModSys.exposedDef", 2, "def", exposed=True),
        module_system_decl("ModSys.thm", 3, "theorem", exposed=False),
        module_system_decl("ModSys.hiddenAbbrev", 4, "abbrev", exposed=False),
    ]
    decls["Mathlib.ModSys.Use"] = [module_system_decl("ModSys.useThm", 1, "theorem", exposed=False)]
    imports = {
        "Mathlib.Logic.Basic": ["Init.Core"],
        "Mathlib.Data.Nat.Basic": ["Init.Core", "Mathlib.Logic.Basic"],
        "Mathlib.ModSys.Use": ["Init.Core", "Mathlib.ModSys.Defs"],
        "Mathlib.Order.Lattice": ["Init.Core", "Mathlib.Logic.Basic"],
    }
    return make_data_dir(root, {m: None for m in MODULES}, imports, decls, {}, blacklist=["Blacklisted.thm"],
                         revision="v4.99.0")


def export_for_tests(model_dir: Path, out: Path, data_dir: Path | None, cache_dir: Path, **options) -> Path:
    """`leanpremise export` of `model_dir` over `data_dir` (None: the shipped sample) into `out`, quietly and
    without ONNX unless `onnx=True`; `options`: other ExportConfig fields."""
    from leanpremise.data import DataConfig
    from leanpremise.export.exporter import ExportConfig, export_bundle

    export_bundle(ExportConfig(model=str(model_dir), out=out, data=DataConfig(data_dir=data_dir, cache_dir=cache_dir),
                               **{"onnx": False, "progress": False, **options}))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """A real uvicorn server on 127.0.0.1 in a background thread (cheaper than a process per config)."""

    def __init__(self, app, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, wait_ready: bool = True, timeout: float = LIVENESS_S) -> ThreadServer:
        self.thread.start()
        deadline = time.time() + timeout
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn thread died"
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)
        if wait_ready:
            wait_healthy(self.url, deadline - time.time())
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=LIVENESS_S)


def wait_healthy(url: str, timeout: float = LIVENESS_S) -> dict:
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            r = httpx.get(f"{url}/health", timeout=LIVENESS_S)
            if r.status_code == 200:
                return r.json()
            last = r.text
        except httpx.HTTPError as e:
            last = repr(e)
        time.sleep(0.1)
    raise AssertionError(f"server at {url} never became healthy: {last}")


@contextmanager
def serve_process(bundle: Path, env: dict[str, str], log: Path):
    """`leanpremise serve BUNDLE` in a process of its own on a free loopback port, `env` over this process's
    environment, its output in `log`; yields (url, process) once healthy, and stops it after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "leanpremise", "serve", str(bundle), "--port", str(port)],
                                env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_healthy(url, timeout=LIVENESS_S)
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=LIVENESS_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def brute_force(corpus, emb: np.ndarray, state_vec: np.ndarray, k: int, imported=None, local=None,
                new: list[tuple[str, np.ndarray]] = (), caller_ms: bool = False, imported_all=()) -> list:
    """The contract's rules written out per premise, with names and sets: the reference for /retrieve."""
    new_names = {n for n, _ in new}
    everything = imported is None and local is None
    imported, local, imported_all = set(imported or ()), set(local or ()), set(imported_all)
    scored = []
    for i, name in enumerate(corpus.names):
        module = corpus.modules[corpus.module_id[i]]
        ok = everything or module in imported
        if ok and caller_ms and corpus.in_module_system[i] and corpus.kinds[i] != "theorem" \
                and not corpus.is_exposed[i] and module not in imported_all:
            ok = False
        ok = (ok or name in local) and name not in new_names
        if ok:
            scored.append((float(emb[i] @ state_vec), name))
    scored += [(float(v @ state_vec), n) for n, v in new]
    scored.sort(key=lambda x: -x[0])
    return [{"name": n, "score": s} for s, n in scored[:k]]


def search_stacked(index, queries: np.ndarray, cand, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`index.search_many` of every query over one candidate set, as (B, k') arrays of scores and ids."""
    results = index.search_many(queries, [cand] * len(queries), [k] * len(queries))
    k = max(0, min(k, cand.count))
    if not results:
        return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
    return np.stack([r[0] for r in results]), np.stack([r[1] for r in results])


def service_config(**settings):
    """Server settings for tests: defaults (and the environment) with `settings` over them, no .env file."""
    from leanpremise.serve.settings import ServeConfig

    return ServeConfig(_env_file=None, **settings)


def assert_same_ranking(got: list, expected: list, atol: float = 2e-4) -> None:
    """Same length, same scores in order, same names except among (near-)ties."""
    assert len(got) == len(expected), (got, expected)
    g_scores = np.array([r["score"] for r in got])
    e_scores = np.array([r["score"] for r in expected])
    np.testing.assert_allclose(g_scores, e_scores, atol=atol)
    for i, (g, e) in enumerate(zip(got, expected)):
        if g["name"] != e["name"]:
            tied = [r["name"] for r in expected if abs(r["score"] - e["score"]) <= atol]
            assert g["name"] in tied, (i, g, e)


@contextmanager
def redis_server(workdir: Path, db: int = 3):
    """A real `redis-server` on a free loopback port (no persistence), yielding (url, process); the test is
    skipped only when the binary is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server); the Redis store is untested")
    import redis

    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                             "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/{db}"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:  # wait for the server to answer (an event, not a fixed sleep)
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.02)
    try:
        yield url, proc
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def metric(url: str, name: str) -> float:
    """The value of sample `name` (labels included) on the server's /metrics page; 0 when absent."""
    lines = [ln for ln in httpx.get(f"{url}/metrics", timeout=LIVENESS_S).text.splitlines() if ln.startswith(name + " ")]
    return float(lines[0].split()[-1]) if lines else 0.0
