"""Pre-tokenising throughput of `leanpremise train` on a data dir: the premises and the train states, with the
Rust tokenizer on one thread and on every core (`TOKENIZERS_PARALLELISM`), as the recipe runs it.

    python scripts/remote/pretok_speed.py DATA_DIR OUT_JSON [MODEL_DIR] [--max_seq_length N]

Both passes must give the same tokens (checked); the JSON holds texts/s of each and the machine's load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from pathlib import Path


def digest(table) -> str:
    """sha256 of a TokenTable's offsets and flat arrays: equal tokens, equal digest."""
    h = hashlib.sha256(table.offsets.tobytes())
    for key in sorted(table.flat):
        h.update(key.encode())
        h.update(table.flat[key].tobytes())
    return h.hexdigest()


def timed_pass(model, texts: dict[str, list[str]], parallel: bool) -> dict:
    """Tokenise each list once with Rust parallelism on or off; seconds, texts/s and a digest per list."""
    from leanpremise.model.tokens import tokenize_texts

    os.environ["TOKENIZERS_PARALLELISM"] = "true" if parallel else "false"
    out, total_s, total_n = {}, 0.0, 0
    for name, items in texts.items():
        t0 = time.perf_counter()
        table = tokenize_texts(model, items, desc=name, show_progress=False)
        s = time.perf_counter() - t0
        out[name] = {"texts": len(items), "seconds": round(s, 2), "texts_per_s": round(len(items) / s),
                     "sha256": digest(table)}
        total_s, total_n = total_s + s, total_n + len(items)
    out["all"] = {"texts": total_n, "seconds": round(total_s, 2), "texts_per_s": round(total_n / total_s)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("model", nargs="?", default=None, help="model dir (default: the packaged MiniLM)")
    p.add_argument("--max_seq_length", type=int, default=None, help="default: the model's own")
    args = p.parse_args()

    import numpy as np

    from leanpremise.data import load_dataset
    from leanpremise.data.config import DataConfig
    from leanpremise.train.args import ModelArguments
    from leanpremise.train.data import train_pairs
    from leanpremise.train.model import build_model

    ds = load_dataset(DataConfig(data_dir=args.data_dir))
    model = build_model(ModelArguments(model_name_or_path=args.model, max_seq_length=args.max_seq_length))
    if args.max_seq_length:
        model.max_seq_length = args.max_seq_length
    state_ids = np.unique(train_pairs(ds)[0])
    texts = {"premises": list(ds.corpus.texts), "states": [ds.states.state[s] for s in state_ids.tolist()]}
    load_before = os.getloadavg()
    one = timed_pass(model, texts, parallel=False)
    every = timed_pass(model, texts, parallel=True)
    same = all(one[k]["sha256"] == every[k]["sha256"] for k in texts)
    result = {
        "benchmark": "pretokenise",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "data": str(args.data_dir),
        "model": args.model or "packaged all-MiniLM-L6-v2",
        "max_seq_length": model.max_seq_length,
        "cpu_cores": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_average_before_after": [round(x, 2) for x in load_before] + [round(x, 2) for x in os.getloadavg()],
        "one_thread": one,
        "all_cores": every,
        "same_tokens": same,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("max_seq_length", "cpu_cores", "same_tokens")}),
          "one thread", one["all"], "all cores", every["all"])
    if not same:
        raise SystemExit("the two passes gave different tokens")


if __name__ == "__main__":
    main()
