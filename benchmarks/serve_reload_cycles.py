"""Server memory over add/remove reload cycles: a bundle added to the served directory and removed again,
`--cycles` times (SIGHUP after each change, as an operator's deploy script would).

    python benchmarks/serve_reload_cycles.py [--bundle BUNDLE] [--cycles 20] [--backend torch]

BUNDLE is the revision always served (default: mathlib-small exported with a tiny random 2-layer model,
built once into the bench cache: the rows' values do not matter for memory); the revision added and
removed is a synthetic next revision of it (serve_revisions.py's `next_bundle`: unchanged rows reused).
Reports the server's VmRSS after the first cycle and after each later one, and the ratio last/first (the
issue's target: within 10 %). Writes benchmarks/results/serve_reload_cycles.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import ServerProcess, bench_cache, unpacked, write_result
from serve_revisions import next_bundle, vm


def tiny_bundle(cache: Path) -> Path:
    """mathlib-small exported with a tiny random model, once."""
    from conftest import build_tiny_model
    from serve_helpers import export_for_tests

    out = bench_cache() / "reload-cycles" / "base"
    if (out / "manifest.json").is_file():
        return out
    model = build_tiny_model(bench_cache() / "reload-cycles" / "tiny-model", hidden=64)
    return export_for_tests(model, out, unpacked("mathlib-small"), cache)


def revisions(url: str) -> list[str]:
    import httpx

    return sorted(r["tag"] for r in httpx.get(f"{url}/revisions", timeout=30).json())


def reload_until(server: ServerProcess, count: int, timeout: float = 600) -> float:
    """SIGHUP, then wait until /revisions lists `count` revisions; seconds taken."""
    t0 = time.perf_counter()
    os.kill(server.proc.pid, signal.SIGHUP)
    while len(revisions(server.url)) != count:
        if time.perf_counter() - t0 > timeout:
            raise SystemExit(f"the reload did not reach {count} revisions")
        time.sleep(0.05)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=None, help="the revision always served")
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--port", type=int, default=8767)
    args = ap.parse_args()
    cache = bench_cache() / "reload-cycles-cache"
    base = (args.bundle or tiny_bundle(cache)).resolve()
    added = next_bundle(base, bench_cache() / "reload-cycles" / f"{base.name}-next", 0, cache)
    served = bench_cache() / "reload-cycles" / "served"
    shutil.rmtree(served, ignore_errors=True)
    served.mkdir(parents=True)
    shutil.copytree(base, served / "base")
    server = ServerProcess(served, args.port, cache, args.backend, args.dtype, ("--fast_verify",))
    rss, seconds = [], []
    try:
        server.wait_ready(timeout=1800)
        idle = vm(server.proc.pid, "VmRSS")
        for _ in range(args.cycles):
            shutil.copytree(added, served / "added")
            seconds.append(reload_until(server, 2))
            shutil.rmtree(served / "added")
            seconds.append(reload_until(server, 1))
            rss.append(vm(server.proc.pid, "VmRSS"))
        peak = vm(server.proc.pid, "VmHWM")
    finally:
        server.stop()
    write_result("serve_reload_cycles", {
        "bundle": str(args.bundle or "mathlib-small, tiny model"), "added": str(added), "cycles": args.cycles,
        "idle_rss_bytes": idle, "rss_after_cycle_bytes": rss, "peak_bytes": peak,
        "last_over_first": round(rss[-1] / rss[0], 3),
        "reload_seconds_median": round(sorted(seconds)[len(seconds) // 2], 2),
    })


if __name__ == "__main__":
    main()
