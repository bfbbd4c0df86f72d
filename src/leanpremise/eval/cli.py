"""`leanpremise retrieve | export-decls | eval-files | baseline | fuse`: evaluation, retrieved-premises
files and their fusion."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from leanpremise.data.config import DataConfig
from leanpremise.eval.ranking_flags import ModelFlags, OutputFlags, load_corpus_embeddings
from leanpremise.flags import from_args, switch
from leanpremise.rank.kinds import RankerKind
from leanpremise.rank.names import LEXICAL

logger = logging.getLogger(__name__)

MEPO_GRID_P = (0.5, 0.6, 0.7, 0.8, 0.9)
MEPO_GRID_C = (0.9, 1.2, 2.4, 3.6)


@dataclass
class RetrieveFusionFlags:
    """retrieve's fusion flags (after its other flags, so the data and model flags stay first in -h)."""

    hybrid: str | None = field(default=None, metadata={
        "metavar": "RANKERS",
        "help": "fuse the model's ranking with lexical rankers (comma-separated subset of bm25,mepo,usage), "
                "tuned on the valid split; writes dot_<split>-<model>+<rankers>.json and fusion.json"})
    tune_on: float | None = field(default=None, metadata={
        "metavar": "FRACTION",
        "help": "with --hybrid: tune on a random FRACTION of --split's states (e.g. a --split_mode all "
                "extraction) and evaluate and write the rest"})
    tune_seed: int = field(default=0, metadata={"help": "seed of the --tune_on draw and the bootstrap"})


@dataclass
class ExportDeclsFlags:
    split: list[str] = field(default_factory=lambda: ["valid", "test"],
                             metadata={"choices": ["valid", "test", "all"]})
    out_dir: Path = field(default=Path("retrieved_premises"), metadata={
        "help": "where <split>_decls.json goes"})


@dataclass
class EvalFilesFlags:
    k: list[int] = field(default_factory=lambda: [16, 32, 100], metadata={"help": "the k of every metric@k"})
    plot: Path | None = field(default=None, metadata={"help": "write Recall@k curves of all files (PNG)"})
    json: Path | None = field(default=None, metadata={"help": "also write the table as JSON"})
    recall_without_positives: Literal["skip", "one"] = field(default="skip", metadata={
        "help": "skip: Recall over states with positives (the evaluator's convention); "
                "one: count them as recall 1 (the original eval_recall_at_k script)"})


@dataclass
class BaselineFlags:
    p: list[float] = field(default_factory=lambda: [0.6], metadata={"help": "MePo pass mark(s)"})
    c: list[float] = field(default_factory=lambda: [2.4], metadata={"help": "MePo decay value(s)"})
    grid: bool = switch(f"MePo: run the original's grid p in {MEPO_GRID_P} x c in {MEPO_GRID_C}")
    state_batch: int = field(default=64, metadata={"help": "MePo: states run together"})
    k1: float = field(default=1.5, metadata={"help": "BM25 k1"})
    b: float = field(default=0.75, metadata={"help": "BM25 b"})


@dataclass(kw_only=True)
class FuseFlags:
    out: Path = field(metadata={"help": "where fusion.json and the fused files go"})
    decls: Path | None = field(default=None, metadata={"help": "<tune split>_decls.json: tune on its states"})
    fusion: Path | None = field(default=None, metadata={
        "metavar": "FUSION_JSON", "help": "apply this fusion.json instead of tuning"})
    tune_split: str = field(default="valid", metadata={"help": "the split whose files are tuned on"})
    tune_seed: int = field(default=0, metadata={"help": "seed of the bootstrap (and of --tune_on)"})


def _retrieve(args) -> int:
    from leanpremise.eval.rerank.cli import RetrieveRerankFlags

    data, model, out = from_args(args, DataConfig, ModelFlags, OutputFlags)
    rerank = from_args(args, RetrieveRerankFlags)
    if rerank.rerank is not None:
        return _retrieve_reranked(data, model, out, rerank.rerank)
    return _run_retrieve(data, model, out, from_args(args, RetrieveFusionFlags))


def _retrieve_reranked(data: DataConfig, flags: ModelFlags, out: OutputFlags, reranker: Path) -> int:
    """`retrieve --rerank`: the reranker over the model's ranking and the side rankers it names."""
    from leanpremise.data.dataset import load_dataset
    from leanpremise.eval.rerank.cli import RerankIndexFlags, apply_reranker
    from leanpremise.model.encoder import DEFAULT_MODEL_NAME
    from leanpremise.rank.rerank.spec import RerankerFileError

    model = dataclasses.replace(flags, model=flags.model or DEFAULT_MODEL_NAME)
    try:
        apply_reranker(load_dataset(data), reranker, out.split, out.k, out.out_dir, out.metrics_out, model,
                       RerankIndexFlags())
    except (RerankerFileError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _run_retrieve(data: DataConfig, flags: ModelFlags, out: OutputFlags,
                  fusion: RetrieveFusionFlags | None = None) -> int:
    from leanpremise.data.dataset import load_dataset
    from leanpremise.eval.retrieve import retrieve
    from leanpremise.model.encoder import model_display_name
    from leanpremise.model.t5 import load_encoder

    ds = load_dataset(data)
    emb = load_corpus_embeddings(flags.corpus_embeddings, len(ds.corpus)) if flags.corpus_embeddings else None
    model = load_encoder(flags.model, flags.encoder, flags.device)
    name = flags.model_name or model_display_name(flags.model)
    if fusion is not None and fusion.hybrid:
        return _retrieve_hybrid(fusion, flags, out, ds, model, name, emb)
    retrieve(model, ds, out.split, k=out.k, out_dir=out.out_dir, model_name=name, corpus_embeddings=emb,
             metrics_out=out.metrics_out, batch_size=flags.batch_size)
    return 0


def _retrieve_hybrid(fusion: RetrieveFusionFlags, flags: ModelFlags, out: OutputFlags, ds, model, name,
                     emb) -> int:
    from leanpremise.eval.hybrid import hybrid_retrieve
    from leanpremise.rank.names import parse_rankers

    try:
        lexical = parse_rankers(fusion.hybrid)
        hybrid_retrieve(model, ds, out.split, lexical, out.k, out.out_dir, name, corpus_embeddings=emb,
                        metrics_out=out.metrics_out, batch_size=flags.batch_size, tune_on=fusion.tune_on,
                        seed=fusion.tune_seed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _fuse(args) -> int:
    from leanpremise.eval.fuse_files import fuse_files
    from leanpremise.json_files import FileFormatError

    flags = from_args(args, FuseFlags)
    if (flags.decls is None) == (flags.fusion is None):
        print("error: fuse needs exactly one of --decls VALID_DECLS (tune) and --fusion FUSION_JSON (apply)",
              file=sys.stderr)
        return 2
    try:
        spec, written = fuse_files(args.files, flags.out, decls=flags.decls, fusion=flags.fusion,
                                   tune_split=flags.tune_split, seed=flags.tune_seed)
    except (FileFormatError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    how = "applied" if flags.fusion else f"tuned on {spec.tuned_on.states} {spec.tuned_on.split} states"
    print(f"fusion {how}: {spec.label()}")
    if not flags.fusion:
        print(f"wrote {flags.out / 'fusion.json'}")
    for path in written:
        print(f"wrote {path}")
    return 0


def _export_decls(args) -> int:
    from leanpremise.data.dataset import load_dataset
    from leanpremise.eval.decls import export_decls

    data, flags = from_args(args, DataConfig, ExportDeclsFlags)
    ds = load_dataset(data)
    for split in flags.split:
        path = export_decls(ds, split, flags.out_dir)
        print(f"wrote {path} ({len(ds.split_ids(split))} declarations)")
    return 0


def _eval_files(args) -> int:
    from leanpremise.eval.eval_files import file_metrics, format_rows, load_decls, load_ranking, plot_recall
    from leanpremise.json_files import FileFormatError

    flags = from_args(args, EvalFilesFlags)
    try:
        gt = load_decls(args.decls)
        rankings = [load_ranking(p, gt) for p in args.retrieved]
    except FileFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = [(fr.label, file_metrics(fr, flags.k, flags.recall_without_positives)) for fr in rankings]
    print(format_rows(rows, flags.k, flags.recall_without_positives))
    if flags.json:
        from leanpremise.atomic import atomic_write_bytes

        payload = {str(fr.path): m for fr, (_, m) in zip(rankings, rows)}
        atomic_write_bytes(flags.json, json.dumps(payload, indent=1).encode())
    if flags.plot:
        print(f"wrote {plot_recall(rankings, flags.plot)}")
    return 0


def _metrics_path(base: Path | None, label: str, many: bool) -> Path | None:
    if base is None or not many:
        return base
    return base.with_name(f"{base.stem}-{label}{base.suffix or '.json'}")


def _baseline(args) -> int:
    import numpy as np

    from leanpremise.data.dataset import load_dataset
    from leanpremise.eval.retrieve import finish_retrieval

    data, out, flags, model = from_args(args, DataConfig, OutputFlags, BaselineFlags, ModelFlags)
    if args.method == "reprover":
        if model.model is None:
            raise SystemExit("error: baseline reprover needs --model PATH (a ReProver / T5 checkpoint)")
        return _run_retrieve(data, dataclasses.replace(model, encoder="t5"), out)
    ds = load_dataset(data)
    state_ids = ds.split_ids(out.split)
    queries = [ds.states.state[s] for s in state_ids.tolist()]
    if args.method == RankerKind.BM25:
        from leanpremise.rank.bm25 import BM25Config, BM25Ranker

        t0 = time.perf_counter()
        ranker = BM25Ranker(ds.corpus.texts, BM25Config(k1=flags.k1, b=flags.b), progress=True)
        index_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ids, scores = ranker.rank(queries, ds.access, state_ids, out.k, progress=True)
        metrics = finish_retrieval(ds, out.split, state_ids, ids, scores, out.out_dir, "bm25",
                                   time.perf_counter() - t0, None)
        _write_metrics(out.metrics_out, metrics, index_s)
        return 0
    if args.method == RankerKind.USAGE:
        from leanpremise.rank.usage import UsageRanker

        if out.split == "train":
            logger.warning("baseline usage --split train: the counts come from the train states themselves")
        t0 = time.perf_counter()
        ranker = UsageRanker.from_dataset(ds)
        index_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ids, scores = ranker.rank(ds.access, state_ids, out.k)
        metrics = finish_retrieval(ds, out.split, state_ids, ids, scores, out.out_dir, "usage",
                                   time.perf_counter() - t0, None)
        _write_metrics(out.metrics_out, metrics, index_s)
        return 0
    from leanpremise.rank.mepo import MePoConfig, SymbolIndex, mepo_rank

    ps = MEPO_GRID_P if flags.grid else flags.p
    cs = MEPO_GRID_C if flags.grid else flags.c
    t0 = time.perf_counter()
    index = SymbolIndex.from_corpus(ds.corpus)
    index_s = time.perf_counter() - t0
    logger.info("MePo symbol index: %d premises, %d symbols in %.1fs", len(ds.corpus), len(index.vocab), index_s)
    settings = [MePoConfig(p=float(p), c=float(c), state_batch=flags.state_batch)
                for p, c in itertools.product(ps, cs)]
    for cfg in settings:
        t0 = time.perf_counter()
        ids, scores = mepo_rank(index, queries, ds.access, state_ids, out.k, cfg, progress=True)
        metrics = finish_retrieval(ds, out.split, state_ids, ids.astype(np.int64), scores, out.out_dir,
                                   cfg.label, time.perf_counter() - t0, None)
        _write_metrics(_metrics_path(out.metrics_out, cfg.label, len(settings) > 1), metrics, index_s)
    return 0


def _write_metrics(path: Path | None, metrics: dict, index_seconds: float) -> None:
    if path is None:
        return
    from leanpremise.atomic import atomic_write_bytes

    atomic_write_bytes(Path(path), json.dumps({**metrics, "index_seconds": index_seconds}, indent=1).encode())


def register(sub) -> None:
    from leanpremise.eval.rerank.cli import RetrieveRerankFlags
    from leanpremise.eval.rerank.cli import register as register_rerank

    r = sub.add_parser("retrieve", dataclass_types=[DataConfig, ModelFlags, OutputFlags, RetrieveFusionFlags,
                                                    RetrieveRerankFlags],
                       help="rank a split's states with a model, write dot_<split>-<model>.json")
    r.set_defaults(func=_retrieve)

    d = sub.add_parser("export-decls", dataclass_types=[DataConfig, ExportDeclsFlags],
                       help="write <split>_decls.json (evaluation theorems and ground truth)")
    d.set_defaults(func=_export_decls)

    e = sub.add_parser("eval-files", dataclass_types=[EvalFilesFlags],
                       help="Recall/Precision/F1/FullRecall@k of retrieved-premises files")
    e.add_argument("decls", type=Path, help="<split>_decls.json (first: the ground truth)")
    e.add_argument("retrieved", type=Path, nargs="+", help="retrieved-premises files (dot_<split>-<model>.json)")
    e.set_defaults(func=_eval_files)

    b = sub.add_parser("baseline", dataclass_types=[DataConfig, OutputFlags, BaselineFlags, ModelFlags],
                       help="BM25, MePo, usage (train-proof frequency) or ReProver-style retrieval, written "
                            "like `retrieve`")
    b.add_argument("method", choices=[*LEXICAL, "reprover"])
    b.set_defaults(func=_baseline)

    f = sub.add_parser("fuse", dataclass_types=[FuseFlags],
                       help="fuse retrieved-premises files: tune on valid (or apply a fusion.json), "
                            "write dot_<split>-<A>+<B>.json for every split given")
    f.add_argument("files", type=Path, nargs="+", help="dot_<split>-<ranker>.json files (same rankers per split)")
    f.set_defaults(func=_fuse)

    register_rerank(sub)
