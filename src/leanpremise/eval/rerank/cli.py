"""`leanpremise rerank train | apply` and `retrieve --rerank`: the learned reranker on a data dir's states."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from leanpremise.data.config import DataConfig
from leanpremise.eval.ranking_flags import ModelFlags, OutputFlags
from leanpremise.eval.rerank.config import DEFAULT_SIDE_RANKERS, RerankConfig
from leanpremise.flags import from_args
from leanpremise.rank.kinds import RankerKind

SIDE_KINDS = tuple(k for k in RankerKind if k != RankerKind.DENSE)
"""The rankers beside the dense model a reranker can read (`--rankers`)."""

logger = logging.getLogger(__name__)

APPLY_METRIC_KS = (16, 32, 100, 1024)
"""The k of the metrics `rerank apply` (and `retrieve --rerank`) reports, those up to its --k."""


@dataclass
class RerankIndexFlags:
    """What the index holds (a user's own project reaches a server as new premises, not indexed)."""

    new_modules: str | None = field(default=None, metadata={
        "metavar": "PREFIXES", "help": "comma-separated module prefixes the index does not hold: their premises "
                                       "are sent as new premises (a project of one's own); apply evaluates only "
                                       "their states"})
    exclude_modules: str | None = field(default=None, metadata={
        "metavar": "PREFIXES", "help": "comma-separated module prefixes left out altogether (their premises, "
                                       "their states and those of modules importing them): train on the rest"})
    tune_on: float | None = field(default=None, metadata={
        "metavar": "FRACTION", "help": "train on a seeded FRACTION of --split's states (e.g. a project's own, "
                                       "with --split_mode all --split all), apply to the rest"})
    tune_seed: int = field(default=0, metadata={"help": "seed of the --tune_on draw"})


@dataclass(kw_only=True)
class RerankTrainFlags:
    """What `rerank train` reads and writes; how it trains is its RerankConfig."""

    out: Path = field(metadata={"help": "the reranker directory to write (reranker.json + the model)"})
    rankers: str = field(default=",".join(DEFAULT_SIDE_RANKERS), metadata={
        "help": "comma-separated side rankers (of bm25, mepo, usage, nearest: the nearest proved states' "
                "premises) beside --model's"})
    split: str = field(default="train", metadata={"help": "states to train on (valid stops training)"})
    init: Path | None = field(default=None, metadata={
        "help": "a reranker directory to continue (adapt it to a project with --tune_on)"})


@dataclass(kw_only=True)
class RerankApplyFlags:
    """The reranker `rerank apply` runs and how its states are sent; which states and where their file
    goes are its OutputFlags."""

    reranker: Path = field(metadata={"help": "a reranker directory (rerank train)"})
    files: Path | None = field(default=None, metadata={
        "help": "the dense ranker's already retrieved file of --split (dot_<split>-<model>.json), instead of "
                "running --model: its scores are read for the premises it lists only"})
    client: Literal["default", "pre-june"] = field(default="default", metadata={
        "help": "each state's request as this Lean client sends it (default: since June 2026; pre-june: local "
                "premises sent by name; docs/lean-client-api.md)"})


@dataclass
class RetrieveRerankFlags:
    rerank: Path | None = field(default=None, metadata={
        "metavar": "RERANKER_DIR", "help": "re-rank with this reranker (it runs the rankers it names); writes "
                                           "dot_<split>-<model>+rerank.json"})


def _prefixes(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def _view(ds, index: RerankIndexFlags):
    """The index view and the bool per module of what it leaves out."""
    import numpy as np

    from leanpremise.eval.rerank.requests import IndexView, modules_under

    out = np.zeros(len(ds.corpus.modules), dtype=bool)
    for text in (index.new_modules, index.exclude_modules):
        if _prefixes(text):
            out |= modules_under(ds.corpus, _prefixes(text))
    return (IndexView.without(ds.corpus, out) if out.any() else IndexView.full(ds.corpus)), out


def _states(ds, split: str, index: RerankIndexFlags, *, tuning: bool):
    """The states of `split` a command works on: without excluded modules (and their importers); with
    --new_modules only theirs; with --tune_on the tuning draw (train) or the rest (apply)."""
    import numpy as np

    from leanpremise.eval.rerank.requests import modules_under

    ids = ds.split_ids(split)
    corpus, mods = ds.corpus, ds.states.module_id[ids]
    if _prefixes(index.exclude_modules):
        gone = modules_under(corpus, _prefixes(index.exclude_modules))
        importers = np.array([gone[corpus.imports_of(m)].any() for m in range(len(corpus.modules))], dtype=bool)
        ids = ids[~(gone | importers)[mods]]
        mods = ds.states.module_id[ids]
    if _prefixes(index.new_modules):
        ids = ids[modules_under(corpus, _prefixes(index.new_modules))[mods]]
    if index.tune_on is not None:
        from leanpremise.eval.tune_draw import draw_tuning_states

        tune, rest = draw_tuning_states(ids, index.tune_on, index.tune_seed, split)
        ids = tune if tuning else rest
    return ids


def _rest(index: RerankIndexFlags) -> RerankIndexFlags:
    """The index's side of the data: neither excluded nor new modules (the usage counts' and valid states)."""
    return RerankIndexFlags(exclude_modules=",".join(_prefixes(index.exclude_modules) + _prefixes(index.new_modules))
                            or None)


def _rankers(ds, view, kinds: list[str], model: ModelFlags, usage_states):
    from leanpremise.eval.rerank.index import build_rankers

    if model.model is not None and model.encoder != "sentence-transformers":
        raise ValueError(f"--encoder {model.encoder}: a reranker's dense ranker is a sentence-transformers model")
    emb = None
    if model.model is not None and model.corpus_embeddings is not None:
        from leanpremise.eval.ranking_flags import load_corpus_embeddings

        emb = load_corpus_embeddings(model.corpus_embeddings, len(ds.corpus))
    return build_rankers(ds, view, kinds + ([RankerKind.DENSE] if model.model is not None else []),
                         model=model.model, model_name=model.model_name, corpus_embeddings=emb,
                         usage_states=usage_states)


def _train_on(ds, model: ModelFlags, index: RerankIndexFlags, flags: RerankTrainFlags, cfg: RerankConfig,
              kinds: list[str]):
    """(the trained reranker's spec, seconds) of `rerank train` on the dataset `ds`."""
    import numpy as np

    from leanpremise.eval.rerank.train import train_reranker

    view, _ = _view(ds, index)
    train_ids = _states(ds, flags.split, index, tuning=True)
    usage_states = _states(ds, "train", _rest(index), tuning=True)
    valid_ids = _states(ds, "valid", _rest(index), tuning=True)
    if index.tune_on is not None or not len(valid_ids):  # a project's own states: stop on a part of the draw
        stop = np.random.default_rng(cfg.seed).permutation(len(train_ids))[: max(1, len(train_ids) // 5)]
        valid_ids, train_ids = train_ids[np.sort(stop)], np.delete(train_ids, stop)
    t0 = time.perf_counter()
    counted = flags.split == "train" and index.tune_on is None and not _prefixes(index.new_modules)
    rankers, table = _rankers(ds, view, [k for k in SIDE_KINDS if k in kinds], model, usage_states)
    spec = train_reranker(ds, rankers, table, train_ids, valid_ids, cfg, flags.out, init=flags.init, counted=counted,
                          trained_on={"data_revision": ds.revision, "data_dir": str(ds.data_dir),
                                      "corpus": asdict(ds.config.corpus_options()),
                                      "index": {k: v for k, v in asdict(index).items() if v is not None}})
    return spec, time.perf_counter() - t0


def _train(args) -> int:
    from leanpremise.data.dataset import load_dataset
    from leanpremise.rank.rerank.spec import RerankerFileError

    data, model, index, flags, cfg = from_args(args, DataConfig, ModelFlags, RerankIndexFlags, RerankTrainFlags,
                                               RerankConfig)
    kinds = [k.strip() for k in flags.rankers.split(",") if k.strip()]
    if any(k not in SIDE_KINDS for k in kinds) or len(set(kinds)) != len(kinds):
        print(f"error: --rankers {flags.rankers!r}: expected distinct names of {', '.join(SIDE_KINDS)}",
              file=sys.stderr)
        return 2
    if model.model is None and not kinds:
        print("error: no ranker: give --rankers or --model", file=sys.stderr)
        return 2
    try:
        spec, seconds = _train_on(load_dataset(data), model, index, flags, cfg, kinds)
    except (RerankerFileError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"reranker written to {flags.out} in {seconds:.0f}s: {spec.stopped_on['best_iteration']} "
          f"rounds; valid " + "  ".join(f"R@{k.split('@')[1]} {100 * v:.2f}%" for k, v in spec.valid_scores.items()))
    return 0


def apply_reranker(ds, reranker_dir: Path, split: str, k: int, out_dir: Path, metrics_out: Path | None,
                   model: ModelFlags, index: RerankIndexFlags, files: Path | None = None,
                   client: str = "default") -> dict:
    """Rank `split` with a reranker, each state as `client` sends it, and write `dot_<split>-<name>+rerank.json`
    and the metrics."""
    from leanpremise.eval.metrics import compute_metrics
    from leanpremise.eval.rerank.apply import rerank_states
    from leanpremise.eval.retrieve import finish_retrieval
    from leanpremise.rank.rerank.model import Reranker

    reranker = Reranker.load(reranker_dir)
    spec = reranker.spec
    dense = spec.ranker(RankerKind.DENSE)
    if dense is not None and model.model is None and files is None:
        raise ValueError(f"{reranker_dir} reads a dense ranker ({dense.name}): give --model (and "
                         "--corpus_embeddings) or --files")
    view, _ = _view(ds, index)
    state_ids = _states(ds, split, index, tuning=False)
    usage_states = _states(ds, "train", _rest(index), tuning=True)
    side = [kind for kind in spec.kinds() if kind != RankerKind.DENSE]
    rankers, table = _rankers(ds, view, side, model if files is None else ModelFlags(), usage_states)
    if files is not None:
        from leanpremise.eval.rerank.signals import FileDense

        rankers.dense = FileDense.read(files, ds, view, dense.name)
    t0 = time.perf_counter()
    ids, scores = rerank_states(reranker, ds, rankers, table, state_ids, k, client=client)
    seconds = time.perf_counter() - t0
    name = (dense.name if dense is not None else "+".join(spec.kinds())) + "+rerank"
    positives = [ds.states.positives(s) for s in state_ids.tolist()]
    metrics = compute_metrics(ids, positives, [x for x in APPLY_METRIC_KS if x <= k], 32)
    return finish_retrieval(ds, split, state_ids, ids, scores, out_dir, name, seconds, metrics_out,
                            metrics=metrics)


def _apply(args) -> int:
    from leanpremise.data.dataset import load_dataset
    from leanpremise.rank.rerank.spec import RerankerFileError

    data, model, index, out, flags = from_args(args, DataConfig, ModelFlags, RerankIndexFlags, OutputFlags,
                                               RerankApplyFlags)
    try:
        apply_reranker(load_dataset(data), flags.reranker, out.split, out.k, out.out_dir, out.metrics_out,
                       model, index, flags.files, flags.client)
    except (RerankerFileError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def register(sub) -> None:
    r = sub.add_parser("rerank", help="train or apply a learned reranker over every ranker and where premises "
                                      "live (LightGBM lambdarank)")
    rsub = r.add_subparsers(dest="rerank_command", metavar="RERANK_COMMAND", required=True)
    t = rsub.add_parser("train", dataclass_types=[DataConfig, ModelFlags, RerankIndexFlags, RerankTrainFlags,
                                                  RerankConfig],
                        help="train a reranker on the train split's states, early-stopped on valid")
    t.set_defaults(func=_train)
    a = rsub.add_parser("apply", dataclass_types=[DataConfig, ModelFlags, RerankIndexFlags, OutputFlags,
                                                  RerankApplyFlags],
                        help="rank a split with a reranker, write dot_<split>-<name>+rerank.json")
    a.set_defaults(func=_apply)
