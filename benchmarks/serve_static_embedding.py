"""Where a static model's texts are embedded in the server: in the request's thread or through the embedding
lanes (a worker thread each), measured on the embedding service itself (no HTTP, no search).

    python benchmarks/serve_static_embedding.py [--model DIR] [--goals 400] [--bulk 2048] [--rounds 5]

For each placement, interleaved round by round: the latency of embedding one new goal (what a request
with its new premises cached costs in embedding), and of a request bringing `--bulk` new premises no one
sent before (target: 2,048 in <= 100 ms). Placements: `lanes` (every chunk handed to a worker, as for a
transformer: goals and a few premises to the urgent lane, many to the bulk lane in small chunks) and
`inline` (every chunk embedded by the request itself, on the event loop, yielding between chunks: what the
server does for a static model), and `inline+pieces`, inline with the encoder's cache of tokenized pieces
(TOKEN_CACHE_ENTRIES; serve/embedding/static_tokens.py: what the server does since issue 26; the other two
arms tokenize whole texts, as before it). The first round's bulk request meets an empty piece cache: it is
reported apart (`..._first`). `--placements inline+pieces --inline_chunks 32,128` instead compares the
server's placement at several INLINE_CHUNK sizes (texts embedded on the event loop in one go), interleaved.
Writes benchmarks/results/<--name>.json.

    python benchmarks/serve_static_embedding.py --model <bundle>/model --data_dir <mathlib-src> --name serve_speed_embedding
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import unpacked, write_result
from static_model import static_minilm

PLACEMENTS = ("lanes", "inline", "inline+pieces")


def make_service(model_dir: Path, placement: str, inline_chunk: int | None = None):
    """The server's embedding service over the static model's embedders, as `serve` makes them
    (`inline_chunk`: INLINE_CHUNK, default the setting's)."""
    from leanpremise.bundle.manifest import Manifest
    from leanpremise.serve.embedding.backends import make_embedders
    from leanpremise.serve.embedding.service import EmbeddingService
    from leanpremise.serve.settings import ServeConfig

    config = ServeConfig(_env_file=None, token_cache_entries=ServeConfig.model_fields["token_cache_entries"].default
                         if placement.endswith("+pieces") else 0,
                         inline_chunk=inline_chunk or ServeConfig.model_fields["inline_chunk"].default)
    manifest = Manifest.model_construct(model_type="static")
    embedders, background = make_embedders(config, SimpleNamespace(manifest=manifest, model_dir=model_dir))
    service = EmbeddingService(embedders, config, background=background)
    service.inline = placement.startswith("inline")
    return service


async def measure(services: dict, texts: list[str], goals: int, bulk: int, rounds: int) -> dict:
    for s in services.values():
        await s.start()
    goal_ms = {p: [] for p in services}
    bulk_ms = {p: [] for p in services}
    bulk_cpu_ms = {p: [] for p in services}
    cursor = 0
    for _ in range(rounds):
        for placement, service in services.items():
            for _ in range(goals // rounds):
                goal = "⊢ " + texts[cursor % len(texts)].split(" : ", 1)[-1]
                cursor += 1
                t0 = time.perf_counter()
                await service.embed([goal], [])
                goal_ms[placement].append((time.perf_counter() - t0) * 1000)
            new = [f"{texts[(cursor + j) % len(texts)]} -- {cursor}" for j in range(bulk)]
            cursor += bulk
            t0, c0 = time.perf_counter(), time.process_time()
            await service.embed(["⊢ " + new[0]], new)
            bulk_ms[placement].append((time.perf_counter() - t0) * 1000)
            bulk_cpu_ms[placement].append((time.process_time() - c0) * 1000)
    for s in services.values():
        await s.stop()

    def stats(xs):
        a = np.asarray(xs)
        return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 3),
                "p90_ms": round(float(np.percentile(a, 90)), 3), "max_ms": round(float(a.max()), 3)}

    return {p: {"new_goal": stats(goal_ms[p]), f"request_with_{bulk}_new_premises": stats(bulk_ms[p][1:]),
                f"request_with_{bulk}_new_premises_cpu": stats(bulk_cpu_ms[p][1:]),
                f"request_with_{bulk}_new_premises_first_ms": round(bulk_ms[p][0], 1),
                f"request_with_{bulk}_new_premises_first_cpu_ms": round(bulk_cpu_ms[p][0], 1)} for p in services}


def main() -> None:
    from leanpremise.data import DataConfig, load_corpus

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="static model dir (default: benchmarks/static_model.py)")
    ap.add_argument("--data_dir", type=Path, default=None, help="texts to embed (default: mathlib-small)")
    ap.add_argument("--goals", type=int, default=400)
    ap.add_argument("--bulk", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--name", default="serve_static_embedding")
    ap.add_argument("--placements", default=",".join(PLACEMENTS), help="comma-separated, of " + ", ".join(PLACEMENTS))
    ap.add_argument("--inline_chunks", default="", help="comma-separated INLINE_CHUNK sizes: one arm each "
                                                         "(for an inline placement; default: the setting's)")
    args = ap.parse_args()
    model_dir = args.model or static_minilm()
    texts = list(load_corpus(DataConfig(data_dir=args.data_dir or unpacked("mathlib-small"))).texts)
    load_before = os.getloadavg()
    chunks = [int(c) for c in args.inline_chunks.split(",") if c] or [None]
    services = {p if c is None else f"{p}@{c}": make_service(model_dir, p, c)
                for p in args.placements.split(",") for c in chunks}
    result = asyncio.run(measure(services, texts, args.goals, args.bulk, args.rounds))
    for p, r in result.items():
        print(p, r, flush=True)
    write_result(args.name, {
        "model": str(model_dir), "placements": result, "target": {f"request_with_{args.bulk}_new_premises_ms": 100},
        "machine": "2-core, shared with other jobs", "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "cpu_note": "_cpu: the process's CPU time over the request (all its threads): what it costs on a quiet "
                    "machine, where the wall time would be about that (one thread works at a time)",
        "note": "the embedding service alone (cache lookups, lanes, encoder), each placement's rounds interleaved; "
                "every goal and premise text new to the service; the bulk figures leave out the first round, "
                "whose premises meet empty caches (given apart as _first)",
    })


if __name__ == "__main__":
    main()
