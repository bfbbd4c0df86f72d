"""The lexical rankers' cost per request, as the hybrid server runs them (serve/search/fused.py): BM25 and
MePo over the corpus and a request's new premises, for requests of several shapes.

    python benchmarks/lexical_work.py [--data_dir DIR] [--repeats 3] [--name lexical_work]

Builds BM25 and the MePo symbol table from the data dir's corpus (default mathlib-small from the bench
cache), then times `FusedRanking.lexical` (a fresh instance per request shape, so no new-premise analysis
is cached; then once more with the caches warm, as a file's second request) on requests of S states cut to
the model's length (`--max_text_chars`, default 256 tokens x 64 characters) and N new premises taken from
real declarations under fresh names (or
those joined up to a length). Per shape it records the request's lexical work as the server counts
it (`serve/search/lexical_budget.py`: characters of the states and new premises, as cut), the CPU
seconds of the cold and warm calls, and CPU ns per unit of work: the figure `MAX_LEXICAL_WORK` is set from.
Writes benchmarks/results/lexical_work.json (or --name).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import unpacked, write_result

SHAPES = ((1, 0, 0), (1, 50, 0), (1, 2048, 0), (16, 2048, 0), (64, 2048, 0), (64, 0, 0), (1, 2048, 7000),
          (16, 2048, 7000))
"""(states, new premises, characters of each new premise: 0 for a real declaration's own length)."""


def main() -> None:

    from leanpremise.data import DataConfig, load_corpus
    from leanpremise.rank.bm25 import BM25Ranker
    from leanpremise.rank.fusion import FusionSpec
    from leanpremise.rank.mepo import SymbolIndex
    from leanpremise.rank.side import SideRankers
    from leanpremise.serve.search.fused import FusedRanking
    from leanpremise.serve.search.lexical_budget import lexical_work

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", type=Path, default=None, help="default: mathlib-small from the bench cache")
    ap.add_argument("--max_text_chars", type=int, default=256 * 64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="lexical_work")
    args = ap.parse_args()
    data_dir = args.data_dir or unpacked("mathlib-small")
    corpus = load_corpus(DataConfig(data_dir=data_dir))
    t0 = time.process_time()
    bm25, mepo = BM25Ranker(corpus.texts), SymbolIndex.from_corpus(corpus)
    build_s = time.process_time() - t0
    spec = FusionSpec(method="rrf", rankers=["dense", "bm25", "mepo"], weights={"dense": 1.0, "bm25": 1.0, "mepo": 1.0}, params={"k": 60}, k=100)
    rng = random.Random(0)
    long_texts = sorted(corpus.texts, key=len)[-512:]

    def long_text(head: str, chars: int) -> str:  # real declarations joined up to `chars`, as the server cuts
        parts, n = [head], len(head)
        while n < chars:
            parts.append(rng.choice(long_texts))
            n += len(parts[-1]) + 3
        return " ⊢ ".join(parts)[:chars]

    rows = []
    for n_states, n_new, new_chars in SHAPES:
        states = [long_text(f"h{i} :", args.max_text_chars) for i in range(n_states)]
        picks = rng.sample(range(len(corpus)), n_new)
        new_names = [f"User.fresh{j}" for j in range(n_new)]
        new_texts = [long_text(corpus.texts[i], new_chars) if new_chars else corpus.texts[i][: args.max_text_chars]
                     for i in picks]
        work = lexical_work(states, new_texts)
        cold, warm = [], []
        for _ in range(args.repeats):
            fused = FusedRanking(spec, SideRankers(bm25, mepo))
            t = time.process_time()
            fused.lexical(states, None, new_texts, new_names, 100)
            cold.append(time.process_time() - t)
            t = time.process_time()
            fused.lexical(states, None, new_texts, new_names, 100)
            warm.append(time.process_time() - t)
        c, w = statistics.median(cold), statistics.median(warm)
        rows.append({"states": n_states, "new_premises": n_new, "state_chars": sum(map(len, states)), "work": work,
                     "new_premise_chars": sum(map(len, new_texts)),
                     "cold_cpu_s": round(c, 4), "warm_cpu_s": round(w, 4),
                     "cold_cpu_ns_per_work": round(c * 1e9 / max(work, 1), 1),
                     "warm_cpu_ns_per_work": round(w * 1e9 / max(work, 1), 1)})
        print(rows[-1], flush=True)
    write_result(args.name, {"data_dir": data_dir.name, "premises": len(corpus), "index_build_cpu_s": round(build_s, 1),
                             "max_text_chars": args.max_text_chars, "repeats": args.repeats, "shapes": rows,
                             "note": "CPU seconds of one thread (time.process_time); k=100, depth 100, all "
                                     "premises candidates"})


if __name__ == "__main__":
    main()
