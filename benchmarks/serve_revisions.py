"""Server memory for one vs three revisions of one corpus that differ by a few percent.

    python benchmarks/serve_revisions.py --bundle BUNDLE [--revisions 2] [--seed 0] [--backend torch]

From an existing bundle (e.g. mathlib-src exported with MiniLM), derives `--revisions` SYNTHETIC next
revisions of its premises (scripts/synthetic_revision.py's changes, default shares) and writes a bundle for
each with the same model, REUSING the previous bundle's rows for premises whose embedded text did not
change and random unit rows for the others (the rows' values do not matter for memory; no model runs).
Then starts `leanpremise serve BUNDLE` and `leanpremise serve BUNDLE NEXT1 NEXT2`, waits until every
revision answers /health, and reports each server's resident memory (VmRSS, and the peak VmHWM), the rows
the pool shares, and the ratio three/one (the issue's target: <= 1.3). Writes
benchmarks/results/serve_revisions.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ServerProcess, bench_cache, write_result


def next_bundle(prev: Path, out: Path, seed: int, cache: Path) -> Path:
    """A bundle of a synthetic next revision of `prev`'s premises, rows of unchanged texts copied."""
    from leanpremise.data import DataConfig, load_corpus
    from leanpremise.export.exporter import ExportConfig, export_bundle
    from leanpremise.serve.revisions.loader import load_bundle
    from leanpremise.testing.revision_synth import synthesize

    if (out / "manifest.json").is_file():
        return out
    old = load_bundle(prev, cache, verify=False)
    data = out.parent / f"{out.name}-data"
    if not (data / "revision").is_file():
        synthesize(old.premises_dir, data, seed=seed)
    corpus = load_corpus(DataConfig(data_dir=data, filter=old.manifest.filter, mathlib_only=old.manifest.mathlib_only,
                                    nameless=old.manifest.nameless, cache_dir=cache))
    by_text = {t: i for i, t in enumerate(old.corpus.texts)}
    rng = np.random.default_rng(seed)
    emb = np.empty((len(corpus), old.embeddings.shape[1]), dtype=np.float32)
    fresh = 0
    for i, text in enumerate(corpus.texts):
        j = by_text.get(text)
        if j is None:
            row = rng.standard_normal(emb.shape[1]).astype(np.float32)
            emb[i] = row / np.linalg.norm(row)
            fresh += 1
        else:
            emb[i] = old.embeddings[j]
    rows = out.parent / f"{out.name}-rows.npy"
    np.save(rows, emb)
    export_bundle(ExportConfig(model=str(prev / "model"), out=out, data=DataConfig(data_dir=data, cache_dir=cache),
                               corpus_embeddings=rows, onnx=False, progress=False,
                               model_name=old.manifest.model_name))
    print(f"{out}: {len(corpus)} premises, {fresh} new rows", flush=True)
    return out


def vm(pid: int, key: str) -> int:
    """A /proc/PID/status memory line (VmRSS, VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def serve_rss(bundles: list[Path], cache: Path, backend: str, dtype: str, port: int) -> dict:
    """Start a server on `bundles`, wait until every revision is healthy, and read its memory."""
    import httpx

    server = ServerProcess(bundles, port, cache, backend, dtype, ("--fast_verify",))
    try:
        server.wait_ready(timeout=1800)
        revisions = httpx.get(f"{server.url}/revisions", timeout=10).json()
        for r in revisions:
            assert httpx.get(f"{server.url}/{r['tag']}/health", timeout=10).status_code == 200
        pid = server.proc.pid
        return {"bundles": len(bundles), "rss_bytes": vm(pid, "VmRSS"), "peak_bytes": vm(pid, "VmHWM"),
                "load_seconds": round(time.perf_counter() - server.t0, 1),
                "revisions": [{k: r.get(k) for k in ("tag", "premises", "rows_shared")} for r in revisions]}
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True, help="the existing bundle (revision N)")
    ap.add_argument("--revisions", type=int, default=2, help="synthetic next revisions to add")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="where the next bundles go (default: bench cache)")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args()
    cache = bench_cache() / "serve-revisions-cache"
    work = args.work or bench_cache() / "serve-revisions" / args.bundle.resolve().name
    work.mkdir(parents=True, exist_ok=True)
    chain = [args.bundle.resolve()]
    for n in range(args.revisions):
        chain.append(next_bundle(chain[-1], work / f"next{n + 1}", args.seed + n, cache))
    one = serve_rss(chain[:1], cache, args.backend, args.dtype, args.port)
    many = serve_rss(chain, cache, args.backend, args.dtype, args.port)
    write_result("serve_revisions", {"bundle": str(args.bundle), "backend": args.backend, "dtype": args.dtype,
                                     "one": one, "all": many,
                                     "rss_ratio": round(many["rss_bytes"] / one["rss_bytes"], 3)})


if __name__ == "__main__":
    main()
