"""A dense model's test file against BM25's, paired over the same states: the static encoder alone.

    leanpremise retrieve --model MODEL --model_name NAME --data_dir D --split test --k 100 --out_dir rp
    leanpremise baseline bm25 --data_dir D --split test --k 100 --out_dir rp
    python benchmarks/static_alone.py --data mathlib-src --model_file rp/dot_test-NAME.json \
        --baseline_file rp/dot_test-bm25.json [--note "..."]

Recall@16/32/100 of both over the test states with positives, and model minus BM25 on Recall@32 with a
paired-bootstrap interval. For a run whose static_quality.py stages did not all finish in time (its rerankers
are the slow part on a shared machine). Writes benchmarks/results/static_alone_<data>.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import paired, per_state_recall, unpacked, write_result

KS = (16, 32, 100)


def ranked(path: Path, ds, state_ids: np.ndarray, k: int = 100) -> np.ndarray:
    """(states, k) corpus ids of a retrieved-premises file, in `state_ids` order (matched by state name)."""
    from leanpremise.eval.retrieved_files import read_retrieved

    by_name = {e.state_name: [ds.corpus.name_to_id.get(p["corpus_id"], -1) for p in e.premises[:k]]
               for e in read_retrieved(path, "retrieved premises")}
    out = np.full((len(state_ids), k), -1, dtype=np.int64)
    for i, s in enumerate(state_ids.tolist()):
        row = by_name.get(ds.states.name(s, ds.corpus.modules), [])
        out[i, :len(row)] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model_file", type=Path, required=True)
    ap.add_argument("--baseline_file", type=Path, required=True)
    ap.add_argument("--note", default="")
    args = ap.parse_args()

    from leanpremise.data import load_dataset
    from leanpremise.eval.metrics import compute_metrics

    ds = load_dataset(data_dir=unpacked(args.data))
    test = ds.split_ids("test")
    pos = [ds.states.positives(s) for s in test.tolist()]
    model, base = ranked(args.model_file, ds, test), ranked(args.baseline_file, ds, test)
    result = {"machine_note": "2-core, shared with other jobs", "note": args.note,
              "model_file": args.model_file.name, "baseline_file": args.baseline_file.name,
              "test_states": len(test), "with_positives": int(sum(len(p) > 0 for p in pos))}
    for label, ids in (("model", model), ("baseline", base)):
        m = compute_metrics(ids, pos, list(KS), 32)
        result[label] = {f"recall@{k}": round(m[f"recall@{k}"], 4) for k in KS}
    result["model_minus_baseline_recall@32"] = paired(per_state_recall(model, pos), per_state_recall(base, pos))
    write_result(f"static_alone_{args.data.replace('-', '_')}", result)


if __name__ == "__main__":
    main()
