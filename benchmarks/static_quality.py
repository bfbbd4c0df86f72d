"""The static encoder's quality on TEST: alone, re-ranked, against the best baseline of the same run.

    python benchmarks/static_quality.py --data mathlib-small
    python benchmarks/static_quality.py --data mathlib-src --train_flags "--num_train_epochs 4" \
        --hold_out Mathlib.AlgebraicGeometry

Trains `leanpremise train --encoder static` (the defaults valid chose, plus --train_flags) on the train split
(resumed from the bench cache when a run is there), then on the same test states: BM25, MePo and usage alone,
the lexical reranker (`rerank train`'s default side rankers + structure), the static encoder alone and
the reranker over it and the side rankers (the same defaults; both stopped on valid). Test Recall@32 of the
static encoder and of its reranker minus the best baseline (of BM25, MePo, usage and the lexical reranker) is
paired over the test states with a bootstrap interval. The stages are written as they finish: the static
encoder and its reranker, the held-out subtree, then the lexical reranker (the costliest baseline).

`--hold_out PREFIX` leaves that Mathlib subtree out of the encoder's training (the train states in it and
those with a positive in it) and, as benchmarks/rerank_quality.py's --off_mathlib does, ranks the subtree's
root states with a reranker trained on the rest, the subtree's premises sent as new premises.
Writes benchmarks/results/static_quality_<data>[_<tag>].json, rewritten after each stage. `--tag` also names
the rerankers' cache dir (a rerun beside an older one), `--static_dir` the static run's, `--rerank_config` (JSON)
changes the static model's reranker's config; the lexical reranker depends on no encoder and is trained once
per set of side rankers.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

import numpy as np
from common import bench_cache, paired, per_state_recall, unpacked, write_result
from rerank_quality import compare, recalls, scored_lists, subtree_draw, train


def side_rankers() -> list[str]:
    """The side rankers `rerank train` reads by default (today BM25, MePo, usage and the nearest proved states)."""
    from leanpremise.eval.rerank.config import DEFAULT_SIDE_RANKERS

    return [str(k.value) for k in DEFAULT_SIDE_RANKERS]


def hold_out_training(ds, prefix: str) -> dict:
    """Remove the subtree's train states, and the train states with a positive in it, from ds.split.train."""
    from leanpremise.eval.rerank.requests import modules_under

    sub = modules_under(ds.corpus, [prefix])
    states = ds.states
    train = np.asarray(ds.split.train, dtype=np.int64)
    in_sub = sub[states.module_id[train]]
    uses = np.array([bool(sub[ds.corpus.module_id[states.positives(int(s))]].any()) for s in train.tolist()])
    keep = ~(in_sub | uses)
    ds.split.train = train[keep]
    return {"subtree": prefix, "train_states_removed": int((~keep).sum()), "train_states_kept": int(keep.sum())}


def train_static(ds, data_dir, out, flags: list[str]) -> tuple[object, dict]:
    """The trained static encoder (trained now, or loaded when `out/final` holds a finished run)."""
    from sentence_transformers import SentenceTransformer

    from leanpremise.train.cli import parse
    from leanpremise.train.runner import run_training

    record = out / "quality_train.json"
    if (out / "final").is_dir() and record.exists():
        return SentenceTransformer(str(out / "final"), device="cpu"), json.loads(record.read_text())
    argv = ["--encoder", "static", "--data_dir", str(data_dir), "--output_dir", str(out), "--evaluate_before",
            "False", "--evaluate_after", "False", "--rerank_after", "False", "--disable_tqdm", "True",
            "--resume_from_checkpoint", "True", "--save_steps", "100", *flags]
    t0 = time.perf_counter()
    res = run_training(*parse(argv), dataset=ds)
    info = {"flags": flags, "train_seconds": round(res.train_seconds, 1), "steps": res.steps,
            "pairs_per_epoch": res.examples, "wall_seconds": round(time.perf_counter() - t0, 1)}
    record.write_text(json.dumps(info))
    return res.trainer.model, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mathlib-small")
    ap.add_argument("--train_flags", default="", help="extra `leanpremise train` flags")
    ap.add_argument("--hold_out", default=None, metavar="PREFIX")
    ap.add_argument("--off_states", type=int, default=1000)
    ap.add_argument("--skip_lexical", action="store_true", help="no lexical reranker baseline (it retrains one)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="", help="names the rerankers' cache dirs and the result file (a rerun "
                                              "beside an older result)")
    ap.add_argument("--static_dir", default=None, help="the static run's output dir (default: the bench cache's; "
                                                       "reused when it holds a finished run)")
    ap.add_argument("--rerank_config", default="{}", help="JSON of RerankConfig fields the static model's "
                                                          "reranker takes instead of `rerank train`'s defaults")
    args = ap.parse_args()

    import torch

    from leanpremise.data import load_dataset
    from leanpremise.eval.rerank.index import build_rankers
    from leanpremise.eval.rerank.requests import IndexView
    from leanpremise.eval.rerank.train import requests_for
    from leanpremise.model.encoder import encode_texts

    torch.set_num_threads(args.threads)
    name = f"static_quality_{args.data.replace('-', '_')}" + (f"_{args.tag}" if args.tag else "")
    side = side_rankers()
    result: dict = {"machine_note": "2-core, shared with other jobs", "data": args.data, "side_rankers": side}
    data_dir = unpacked(args.data)
    ds = load_dataset(data_dir=data_dir)
    cache = bench_cache() / "static-quality" / args.data
    train_split = ds.split.train
    if args.hold_out:
        result["held_out_of_training"] = hold_out_training(ds, args.hold_out)
    static_dir = Path(args.static_dir) if args.static_dir else cache / "static"
    model, result["training"] = train_static(ds, data_dir, static_dir, shlex.split(args.train_flags))
    result["static_dir"] = str(static_dir)
    rr = cache / args.tag if args.tag else cache
    ds.split.train = train_split  # the rerankers' own training holds out what it needs (off_mathlib)
    write_result(name, result)
    t0 = time.perf_counter()
    emb = encode_texts(model, ds.corpus.texts, batch_size=256)
    result["corpus_embedding_seconds"] = round(time.perf_counter() - t0, 1)
    valid, test = ds.split_ids("valid"), ds.split_ids("test")
    full = IndexView.full(ds.corpus)

    rankers, table = build_rankers(ds, full, side + ["dense"], model=model, corpus_embeddings=emb)
    t0 = time.perf_counter()
    result["rerank_config"] = json.loads(args.rerank_config)
    reranker, spec = train(ds, rankers, table, rr / "reranker", ds.split_ids("train"), valid,
                           **result["rerank_config"])
    result["reranker_train_seconds"] = round(time.perf_counter() - t0, 1)
    result["valid"] = {"static": static_valid(model, ds), "static reranked": spec.valid_scores}
    lists = scored_lists(reranker, rankers, table, list(requests_for(ds, rankers, table, test)), {})
    pos = lists["positives"]
    ids = {kind: padded([r[0] for r in lists[kind]]) for kind in side + ["dense"]}
    ids["static reranked"] = np.stack(lists["rerank"])
    result["test_states"] = {"states": len(test), "with_positives": int(sum(len(p) > 0 for p in pos))}
    score(result, ids, pos, side)
    write_result(name, result)
    if args.hold_out:
        result["off_mathlib"] = off_mathlib(ds, args.hold_out, model, emb, rr, side, args.off_states, 0)
        write_result(name, result)
    if not args.skip_lexical:
        lex_rankers, table = build_rankers(ds, full, side)
        lexical, lex_spec = lexical_reranker(ds, lex_rankers, table, cache / f"lexical-{'-'.join(side)}", valid)
        lex_lists = scored_lists(lexical, lex_rankers, table, list(requests_for(ds, lex_rankers, table, test)), {})
        ids["lexical reranker"] = np.stack(lex_lists["rerank"])
        result["valid"]["lexical reranker"] = lex_spec.valid_scores
        score(result, ids, pos, side + ["lexical reranker"])
        write_result(name, result)


def static_valid(model, ds) -> dict[str, float]:
    """Valid Recall@16/32/100 of the static encoder alone (as static_ablation.py measures its arms)."""
    from leanpremise.train.evaluation import split_recall

    valid = split_recall(model, ds, "valid", batch_size=256)
    return {f"recall@{k}": round(valid[f"recall@{k}"], 4) for k in (16, 32, 100)}


def lexical_reranker(ds, rankers, table, out: Path, valid):
    """The lexical reranker (the side rankers and the structure, `rerank train`'s defaults): it reads no
    encoder, so one trained for these side rankers is reused by every static model's run."""
    from leanpremise.rank.rerank.model import Reranker

    if (out / "reranker.json").exists():
        lexical = Reranker.load(out)
        return lexical, lexical.spec
    return train(ds, rankers, table, out, ds.split_ids("train"), valid)


def padded(rows: list[np.ndarray]) -> np.ndarray:
    """Rankers' lists as one (states, longest) array, -1 past a list's end (the nearest states may list fewer)."""
    out = np.full((len(rows), max((len(r) for r in rows), default=0)), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def score(result: dict, ids: dict, pos, baselines: list[str]) -> None:
    """Test recalls of every list, and the static encoder's and its reranker's paired gains over the best
    baseline (by test Recall@32, the strictest choice for us)."""
    result["test"] = {kind: recalls(x, pos) for kind, x in ids.items()}
    best = max(baselines, key=lambda k: result["test"][k]["recall@32"])
    base = per_state_recall(ids[best], pos)
    result["best_baseline"] = best
    result["static_minus_best_baseline_recall@32"] = paired(per_state_recall(ids["dense"], pos), base)
    result["reranked_minus_best_baseline_recall@32"] = paired(per_state_recall(ids["static reranked"], pos), base)
    result["reranked_minus_static_recall@32"] = paired(per_state_recall(ids["static reranked"], pos),
                                                       per_state_recall(ids["dense"], pos))


def off_mathlib(ds, prefix: str, model, emb, cache, side: list[str], n_states: int, seed: int) -> dict:
    """As rerank_quality.off_mathlib before adapting: a reranker over the static encoder and the side rankers,
    trained without subtree `prefix` (its premises, states and importers), ranks a seeded sample of the
    subtree's root states, whose own premises reach it as new premises."""
    from leanpremise.eval.rerank.cli import RerankIndexFlags, _states
    from leanpremise.eval.rerank.index import build_rankers
    from leanpremise.eval.rerank.requests import IndexView, modules_under

    sub = modules_under(ds.corpus, [prefix])
    rest = RerankIndexFlags(exclude_modules=prefix)
    view = IndexView.without(ds.corpus, sub)
    usage_states = _states(ds, "train", rest, tuning=True)
    rankers, table = build_rankers(ds, view, side + ["dense"], model=model, corpus_embeddings=emb,
                                   usage_states=usage_states)
    t0 = time.perf_counter()
    base, spec = train(ds, rankers, table, cache / f"off-{prefix}", usage_states,
                       _states(ds, "valid", rest, tuning=True))
    seconds = time.perf_counter() - t0
    ids, tune_ids, eval_ids = subtree_draw(ds, sub, n_states, seed)
    out = compare(base, rankers, table, ds, eval_ids, tune_ids, f"{prefix}: random 0.3 of {len(ids)} states")
    return {"subtree": prefix, "states_sampled": len(ids), "evaluated_states": len(eval_ids),
            "reranker_train_seconds": round(seconds, 1), "valid": spec.valid_scores, "before_adapting": out,
            "lexical_reranker_recall@32_same_states": "0.496 (docs/figures.md, 2026-12-02: same subtree, "
                                                      "sampling seed and states)"}


if __name__ == "__main__":
    main()
