"""Helpers the benchmarks share: locating and unpacking the shared datasets, writing results, starting a
premise server."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BOOTSTRAP = {"resamples": 2000, "seed": 0, "level": 0.95}
RESULTS = REPO / "benchmarks" / "results"


def shared_data_dir() -> Path:
    """`../shared/data` beside the checkout, or $LEANPREMISE_SHARED_DATA."""
    return Path(os.environ.get("LEANPREMISE_SHARED_DATA", REPO.parent / "shared" / "data"))


def bench_cache() -> Path:
    """Where benchmarks keep what they build once (unpacked data, bundles, embeddings, ONNX exports):
    $LEANPREMISE_BENCH_CACHE, else ~/.cache/leanpremise/bench."""
    return Path(os.environ.get("LEANPREMISE_BENCH_CACHE", Path.home() / ".cache" / "leanpremise" / "bench"))


def onnx_exports(model_dir: Path, out: Path) -> tuple[Path, Path]:
    """float32 and int8 ONNX exports of `model_dir`, made once into `out` and reused."""
    from leanpremise.model.onnx import export_onnx, quantize_int8

    fp32, int8 = out / "model.onnx", out / "model_qint8.onnx"
    if not fp32.exists():
        out.mkdir(parents=True, exist_ok=True)
        export_onnx(model_dir, fp32)
    if not int8.exists():
        quantize_int8(fp32, int8)
    return fp32, int8


def unpacked(name: str) -> Path:
    """Unpack `<shared>/data/<name>.tar.zst` once into the bench cache; return the data dir."""
    target = bench_cache() / "data" / name
    if (target / "revision").exists():
        return target
    archive = shared_data_dir() / f"{name}.tar.zst"
    if not archive.exists():
        raise SystemExit(f"{archive}: not found (set LEANPREMISE_SHARED_DATA to the folder holding {name}.tar.zst)")
    tmp = target.parent / f".{name}.unpacking"
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    tmp.mkdir(parents=True)
    subprocess.run(f"zstd -d --long=31 -c '{archive}' | tar -x -C '{tmp}'", shell=True, check=True)
    (tmp / name).rename(target)
    tmp.rmdir()
    return target


class ServerProcess:
    """`leanpremise serve BUNDLE...` in a process of its own, as the serve benchmarks run it: on loopback at
    `port`, its server cache (unpacked premises, parse cache) in `cache` (LEANPREMISE_CACHE_DIR and
    --data_dir), the embedding backend and row dtype given (EMBED_BACKEND, DTYPE), `extra` flags after; the
    rest of its settings from this process's environment."""

    def __init__(self, bundles: Path | list[Path], port: int, cache: Path, backend: str, dtype: str,
                 extra: tuple[str, ...] = ()):
        bundles = [bundles] if isinstance(bundles, (str, Path)) else list(bundles)
        env = {**os.environ, "LEANPREMISE_CACHE_DIR": str(cache), "EMBED_BACKEND": backend, "DTYPE": dtype}
        self.url = f"http://127.0.0.1:{port}"
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "leanpremise", "serve", *map(str, bundles), "--port",
                                      str(port), "--data_dir", str(cache), *extra], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 600) -> float:
        """Seconds from the start until /health answers 200 (the default revision is loaded)."""
        import httpx

        while time.perf_counter() - self.t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return time.perf_counter() - self.t0
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit("server did not become healthy")

    def stop(self) -> None:
        """A graceful stop (the persistent embedding cache's queued writes are flushed), then a kill after 30 s."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def save_json(path: Path, payload: dict) -> Path:
    """Write `payload` to `path` atomically (a killed benchmark leaves no half file) and print it."""
    from leanpremise.atomic import atomic_write_bytes

    atomic_write_bytes(Path(path), (json.dumps(payload, indent=2) + "\n").encode())
    print(json.dumps(payload, indent=2))
    return Path(path)


def write_result(name: str, payload: dict) -> Path:
    """Write benchmarks/results/<name>.json with the machine described."""
    payload = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        **payload,
    }
    return save_json(RESULTS / f"{name}.json", payload)


def per_state_recall(ids, positives, k: int = 32):
    """Recall@k of each state with positives (the states Recall@k averages over), in state order."""
    from leanpremise.eval.metrics import hit_matrix, per_state_metrics

    hits, n_pos = hit_matrix(ids, positives)
    return per_state_metrics(hits, n_pos, [k])[f"recall@{k}"][n_pos > 0]


def paired(a, b) -> dict[str, float]:
    """Mean of a - b over the same states, with a two-sided paired-bootstrap interval (BOOTSTRAP)."""
    import numpy as np

    from leanpremise.eval.stats import bootstrap_interval

    diff = np.asarray(a) - np.asarray(b)
    low, high = bootstrap_interval(diff, BOOTSTRAP["resamples"], BOOTSTRAP["seed"], BOOTSTRAP["level"])
    return {"mean": round(float(diff.mean()), 4), "low": round(low, 4), "high": round(high, 4),
            "states": len(diff)}
