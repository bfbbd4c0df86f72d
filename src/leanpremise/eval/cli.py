"""`leanpremise retrieve | export-decls | eval-files | baseline`: evaluation and retrieved-premise files."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from pathlib import Path

from leanpremise.data.config import add_data_args, data_config_from_args

logger = logging.getLogger(__name__)

MEPO_GRID_P = (0.5, 0.6, 0.7, 0.8, 0.9)
MEPO_GRID_C = (0.9, 1.2, 2.4, 3.6)


def _load_dataset(args):
    from leanpremise.data.dataset import load_dataset

    return load_dataset(data_config_from_args(args))


def load_corpus_embeddings(path: Path, n_premises: int):
    """Pre-computed embeddings (one row per premise, corpus order), memory-mapped."""
    import numpy as np

    try:
        emb = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise SystemExit(f"error: --corpus_embeddings {path}: no such file") from None
    except ValueError as e:
        raise SystemExit(f"error: --corpus_embeddings {path}: not a .npy array ({e})") from None
    if emb.ndim != 2 or emb.shape[0] != n_premises:
        raise SystemExit(f"error: --corpus_embeddings {path}: shape {emb.shape}, expected ({n_premises}, dim) "
                         "for this data dir and corpus options")
    return emb


def _retrieve(args) -> int:
    from leanpremise.eval.retrieve import retrieve
    from leanpremise.model.encoder import model_display_name
    from leanpremise.model.t5 import load_encoder

    ds = _load_dataset(args)
    emb = load_corpus_embeddings(args.corpus_embeddings, len(ds.corpus)) if args.corpus_embeddings else None
    model = load_encoder(args.model, args.encoder, args.device)
    name = args.model_name or model_display_name(args.model)
    if getattr(args, "hybrid", None):
        return _retrieve_hybrid(args, ds, model, name, emb)
    retrieve(model, ds, args.split, k=args.k, out_dir=args.out_dir, model_name=name, corpus_embeddings=emb,
             metrics_out=args.metrics_out, batch_size=args.batch_size)
    return 0


def _retrieve_hybrid(args, ds, model, name, emb) -> int:
    from leanpremise.eval.hybrid import hybrid_retrieve
    from leanpremise.rank.names import parse_rankers

    try:
        lexical = parse_rankers(args.hybrid)
        hybrid_retrieve(model, ds, args.split, lexical, args.k, args.out_dir, name, corpus_embeddings=emb,
                        metrics_out=args.metrics_out, batch_size=args.batch_size, tune_on=args.tune_on,
                        seed=args.tune_seed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _fuse(args) -> int:
    from leanpremise.eval.fuse_files import fuse_files
    from leanpremise.json_files import FileFormatError

    if (args.decls is None) == (args.fusion is None):
        print("error: fuse needs exactly one of --decls VALID_DECLS (tune) and --fusion FUSION_JSON (apply)",
              file=sys.stderr)
        return 2
    try:
        spec, written = fuse_files(args.files, args.out, decls=args.decls, fusion=args.fusion,
                                   tune_split=args.tune_split, seed=args.tune_seed)
    except (FileFormatError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    how = "applied" if args.fusion else f"tuned on {spec.tuned_on.states} {spec.tuned_on.split} states"
    print(f"fusion {how}: {spec.label()}")
    if not args.fusion:
        print(f"wrote {args.out / 'fusion.json'}")
    for path in written:
        print(f"wrote {path}")
    return 0


def _export_decls(args) -> int:
    from leanpremise.eval.decls import export_decls

    ds = _load_dataset(args)
    for split in args.split:
        path = export_decls(ds, split, args.out_dir)
        print(f"wrote {path} ({len(ds.split_ids(split))} declarations)")
    return 0


def _eval_files(args) -> int:
    from leanpremise.eval.eval_files import file_metrics, format_rows, load_decls, load_ranking, plot_recall
    from leanpremise.json_files import FileFormatError

    try:
        gt = load_decls(args.decls)
        rankings = [load_ranking(p, gt) for p in args.retrieved]
    except FileFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = [(fr.label, file_metrics(fr, args.k, args.recall_without_positives)) for fr in rankings]
    print(format_rows(rows, args.k, args.recall_without_positives))
    if args.json:
        from leanpremise.atomic import atomic_write_bytes

        payload = {str(fr.path): m for fr, (_, m) in zip(rankings, rows)}
        atomic_write_bytes(args.json, json.dumps(payload, indent=1).encode())
    if args.plot:
        print(f"wrote {plot_recall(rankings, args.plot)}")
    return 0


def _metrics_path(base: Path | None, label: str, many: bool) -> Path | None:
    if base is None or not many:
        return base
    return base.with_name(f"{base.stem}-{label}{base.suffix or '.json'}")


def _baseline(args) -> int:
    import numpy as np

    from leanpremise.eval.retrieve import finish_retrieval

    if args.method == "reprover":
        args.encoder = "t5"
        if args.model is None:
            raise SystemExit("error: baseline reprover needs --model PATH (a ReProver / T5 checkpoint)")
        return _retrieve(args)
    ds = _load_dataset(args)
    state_ids = ds.split_ids(args.split)
    queries = [ds.states.state[s] for s in state_ids.tolist()]
    if args.method == "bm25":
        from leanpremise.rank.bm25 import BM25Config, BM25Ranker

        t0 = time.perf_counter()
        ranker = BM25Ranker(ds.corpus.texts, BM25Config(k1=args.k1, b=args.b), progress=True)
        index_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ids, scores = ranker.rank(queries, ds.access, state_ids, args.k, progress=True)
        metrics = finish_retrieval(ds, args.split, state_ids, ids, scores, args.out_dir, "bm25",
                                   time.perf_counter() - t0, None)
        _write_metrics(args.metrics_out, metrics, index_s)
        return 0
    if args.method == "usage":
        from leanpremise.rank.usage import UsageRanker

        if args.split == "train":
            logger.warning("baseline usage --split train: the counts come from the train states themselves")
        t0 = time.perf_counter()
        ranker = UsageRanker.from_dataset(ds)
        index_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ids, scores = ranker.rank(ds.access, state_ids, args.k)
        metrics = finish_retrieval(ds, args.split, state_ids, ids, scores, args.out_dir, "usage",
                                   time.perf_counter() - t0, None)
        _write_metrics(args.metrics_out, metrics, index_s)
        return 0
    from leanpremise.rank.mepo import MePoConfig, SymbolIndex, mepo_rank

    ps = MEPO_GRID_P if args.grid else args.p
    cs = MEPO_GRID_C if args.grid else args.c
    t0 = time.perf_counter()
    index = SymbolIndex.from_corpus(ds.corpus)
    index_s = time.perf_counter() - t0
    logger.info("MePo symbol index: %d premises, %d symbols in %.1fs", len(ds.corpus), len(index.vocab), index_s)
    settings = [MePoConfig(p=float(p), c=float(c), state_batch=args.state_batch) for p, c in itertools.product(ps, cs)]
    for cfg in settings:
        t0 = time.perf_counter()
        ids, scores = mepo_rank(index, queries, ds.access, state_ids, args.k, cfg, progress=True)
        metrics = finish_retrieval(ds, args.split, state_ids, ids.astype(np.int64), scores, args.out_dir, cfg.label,
                                   time.perf_counter() - t0, None)
        _write_metrics(_metrics_path(args.metrics_out, cfg.label, len(settings) > 1), metrics, index_s)
    return 0


def _write_metrics(path: Path | None, metrics: dict, index_seconds: float) -> None:
    if path is None:
        return
    from leanpremise.atomic import atomic_write_bytes

    atomic_write_bytes(Path(path), json.dumps({**metrics, "index_seconds": index_seconds}, indent=1).encode())


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", choices=["train", "valid", "test", "all"], default="test",
                   help="states to rank (default test; train: every training state, e.g. for --hard_negatives)")
    p.add_argument("--k", type=int, default=1024, help="premises kept per state (default 1024)")
    p.add_argument("--out_dir", type=Path, default=Path("retrieved_premises"),
                   help="where dot_<split>-<model_name>.json goes (default retrieved_premises)")
    p.add_argument("--metrics_out", type=Path, default=None,
                   help="write the metrics as one flat JSON object (<metric>@<k>, <metric>@<k>_pos, states, "
                        "states_without_positives, seconds)")


def _add_model_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--model", default=None, required=required,
                   help="model dir or hub id (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--encoder", choices=["sentence-transformers", "t5"], default="sentence-transformers",
                   help="t5: a ReProver-style T5 encoder with mean pooling (transformers T5EncoderModel)")
    p.add_argument("--model_name", default=None, help="MODEL_NAME in the output file name (default: from --model)")
    p.add_argument("--corpus_embeddings", type=Path, default=None,
                   help="pre-computed corpus embeddings (.npy, corpus order) instead of encoding the corpus")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")


def register(sub) -> None:
    r = sub.add_parser("retrieve", help="rank a split's states with a model, write dot_<split>-<model>.json")
    add_data_args(r)
    _add_model_args(r)
    _add_output_args(r)
    r.set_defaults(func=_retrieve)

    d = sub.add_parser("export-decls", help="write <split>_decls.json (evaluation theorems and ground truth)")
    add_data_args(d)
    d.add_argument("--split", nargs="+", choices=["valid", "test", "all"], default=["valid", "test"])
    d.add_argument("--out_dir", type=Path, default=Path("retrieved_premises"))
    d.set_defaults(func=_export_decls)

    e = sub.add_parser("eval-files", help="Recall/Precision/F1/FullRecall@k of retrieved-premises files")
    e.add_argument("decls", type=Path, help="<split>_decls.json (first: the ground truth)")
    e.add_argument("retrieved", type=Path, nargs="+", help="retrieved-premises files (dot_<split>-<model>.json)")
    e.add_argument("--k", type=int, nargs="+", default=[16, 32, 100])
    e.add_argument("--plot", type=Path, default=None, help="write Recall@k curves of all files (PNG)")
    e.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    e.add_argument("--recall_without_positives", choices=["skip", "one"], default="skip",
                   help="skip: Recall over states with positives (the evaluator's convention); "
                        "one: count them as recall 1 (the original eval_recall_at_k script)")
    e.set_defaults(func=_eval_files)

    b = sub.add_parser("baseline", help="BM25, MePo, usage (train-proof frequency) or ReProver-style "
                                        "retrieval, written like `retrieve`")
    b.add_argument("method", choices=["bm25", "mepo", "usage", "reprover"])
    add_data_args(b)
    _add_output_args(b)
    b.add_argument("--p", type=float, nargs="+", default=[0.6], help="MePo pass mark(s)")
    b.add_argument("--c", type=float, nargs="+", default=[2.4], help="MePo decay value(s)")
    b.add_argument("--grid", action="store_true",
                   help=f"MePo: run the original's grid p in {MEPO_GRID_P} x c in {MEPO_GRID_C}")
    b.add_argument("--state_batch", type=int, default=64, help="MePo: states run together")
    b.add_argument("--k1", type=float, default=1.5, help="BM25 k1")
    b.add_argument("--b", type=float, default=0.75, help="BM25 b")
    _add_model_args(b)
    b.set_defaults(func=_baseline)

    _add_hybrid_args(r)
    f = sub.add_parser("fuse", help="fuse retrieved-premises files: tune on valid (or apply a fusion.json), "
                                    "write dot_<split>-<A>+<B>.json for every split given")
    f.add_argument("files", type=Path, nargs="+", help="dot_<split>-<ranker>.json files (same rankers per split)")
    f.add_argument("--out", type=Path, required=True, help="where fusion.json and the fused files go")
    f.add_argument("--decls", type=Path, default=None, help="<tune split>_decls.json: tune on its states")
    f.add_argument("--fusion", type=Path, default=None, help="apply this fusion.json instead of tuning")
    f.add_argument("--tune_split", default="valid", help="the split whose files are tuned on (default valid)")
    f.add_argument("--tune_seed", type=int, default=0, help="seed of the bootstrap (and of --tune_on)")
    f.set_defaults(func=_fuse)


def _add_hybrid_args(p: argparse.ArgumentParser) -> None:
    """retrieve's fusion flags (added after its other flags, so the data and model flags stay as they are)."""
    p.add_argument("--hybrid", default=None, metavar="RANKERS",
                   help="fuse the model's ranking with lexical rankers (comma-separated subset of bm25,mepo,usage), "
                        "tuned on the valid split; writes dot_<split>-<model>+<rankers>.json and fusion.json")
    p.add_argument("--tune_on", type=float, default=None, metavar="FRACTION",
                   help="with --hybrid: tune on a random FRACTION of --split's states (e.g. a --split_mode all "
                        "extraction) and evaluate and write the rest")
    p.add_argument("--tune_seed", type=int, default=0, help="seed of the --tune_on draw and the bootstrap")
