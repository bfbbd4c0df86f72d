"""`leanpremise export`: write a bundle a premise server loads, and optionally publish it."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from leanpremise.data.config import DataConfig
from leanpremise.export.corpus_embeddings import CHUNK_SIZE
from leanpremise.flags import from_args, switch

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ExportFlags:
    model: str | None = field(default=None, metadata={
        "help": "SentenceTransformer dir or hub id (omit with --push to publish an existing --out bundle)"})
    out: Path = field(metadata={"help": "bundle directory to write"})


@dataclass
class BundleFlags:
    onnx: bool = field(default=True, metadata={"help": "also export the model to ONNX under model/onnx/ (not for a static "
                                                       "model, which the server embeds with in numpy)"})
    int8: bool = switch("also write an int8 dynamically quantised ONNX model (a static model has no ONNX graph: "
                        "ignored, with a warning)")
    corpus_embeddings: Path | None = field(default=None, metadata={
        "help": ".npy of pre-computed corpus embeddings (corpus order) to reuse instead of encoding"})
    reuse: list[Path] = field(default_factory=list, metadata={
        "metavar": "OLD_BUNDLE",
        "help": "older bundles: copy their rows where the same model (by content identity) embedded "
                "the same text, embed only the others; a bundle of another model reuses nothing"})
    fusion: Path | None = field(default=None, metadata={
        "aliases": ["--hybrid"], "metavar": "FUSION_JSON",
        "help": "fusion.json from `retrieve --hybrid` or `fuse`: put it and the BM25 index / MePo symbol "
                "table it needs into the bundle, so `serve` fuses dense and lexical rankings (--hybrid: the "
                "old name of --fusion)"})
    rerank: Path | None = field(default=None, metadata={
        "metavar": "RERANKER_DIR",
        "help": "a reranker directory from `rerank train`: put it and the rankers it reads into the bundle, so "
                "`serve` re-ranks (refused when its dense ranker read another model)"})
    usage_states: Literal["train", "all"] = field(default="train", metadata={
        "help": "proof states the usage counts (of --fusion / --rerank) count: the train split, or all of the "
                "data dir's (a project's own bundle: docs/lean-client-api.md)"})
    model_name: str | None = field(default=None, metadata={
        "help": "MODEL_NAME in the embeddings file name (default: model dir name)"})
    revision: str | None = field(default=None, metadata={
        "help": "branch/file-name revision (default: the data dir's revision file, made ref-safe)"})
    batch_size: int = field(default=64, metadata={"help": "encoding batch size"})
    chunk_size: int = field(default=CHUNK_SIZE, metadata={"help": "premises per resumable embedding chunk"})
    device: str | None = field(default=None, metadata={
        "help": "torch device for encoding (default: cuda if available)"})
    push: bool = switch("publish to the Hugging Face Hub after writing")
    model_repo: str | None = field(default=None, metadata={
        "help": "model repository for --push, e.g. user/all-MiniLM-L6-v2-lean"})
    data_repo: str | None = field(default=None, metadata={
        "help": "dataset repository for --push, e.g. user/lean-premises"})


def register(sub) -> None:
    p = sub.add_parser(
        "export", dataclass_types=[ExportFlags, DataConfig, BundleFlags],
        help="write a server bundle (model, ONNX, premises.tar.gz, embeddings) and optionally push it",
        description="Write a bundle: the model (sentence-transformers + ONNX), premises.tar.gz, "
                    "embeddings/<model>-<revision>.npy and manifest.json. With --push, publish the model "
                    "and the data to branch <revision> of --model_repo and --data_repo.",
    )
    p.set_defaults(func=run)


def missing_model_dir(model: str) -> str | None:
    """Why `--model` names no model, when that shows without loading anything (a path that does not exist;
    a hub id is `NAME` or `OWNER/NAME`), so the command fails at once rather than after its imports."""
    path = Path(model).expanduser()
    if path.exists():
        return None if path.is_dir() else f"--model {model}: not a directory (a SentenceTransformer dir or hub id)"
    if path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1 or "\\" in model:
        return f"--model {model}: no such model directory"
    return None


def run(args: argparse.Namespace) -> int:
    from leanpremise.bundle.layout import BundleError
    from leanpremise.data.errors import DataLayoutError
    from leanpremise.export.corpus_embeddings import EmbeddingShapeError
    from leanpremise.export.exporter import ModelDirError
    from leanpremise.export.publish import PublishError
    from leanpremise.json_files import FileFormatError
    from leanpremise.model.static import StaticModelError

    target, data, flags = from_args(args, ExportFlags, DataConfig, BundleFlags)
    if flags.push and not (flags.model_repo and flags.data_repo):
        logger.error("--push needs both --model_repo and --data_repo")
        return 2
    if target.model is None and not flags.push:
        logger.error("--model is required (only `--push` of an existing bundle may omit it)")
        return 2
    if flags.reuse and flags.corpus_embeddings is not None:
        logger.error("--reuse and --corpus_embeddings exclude each other (both say where the rows come from)")
        return 2
    if target.model is not None and (why := missing_model_dir(target.model)):
        raise FileNotFoundError(why)  # printed as one line by the top-level CLI
    try:
        if target.model is not None:
            from leanpremise.export.exporter import ExportConfig, export_bundle

            cfg = ExportConfig(model=target.model, out=target.out, data=data, onnx=flags.onnx,
                               int8=flags.int8, corpus_embeddings=flags.corpus_embeddings,
                               model_name=flags.model_name, batch_size=flags.batch_size,
                               chunk_size=flags.chunk_size, device=flags.device, revision=flags.revision,
                               reuse=list(flags.reuse), fusion=flags.fusion, rerank=flags.rerank,
                               usage_states=flags.usage_states)
            manifest = export_bundle(cfg)
            summary = {"bundle": str(target.out), "model_name": manifest.model_name,
                       "revision": manifest.revision, "premises": manifest.premise_count,
                       "dimension": manifest.dimension, "model_type": manifest.model_type}
            if manifest.hybrid is not None:
                summary["hybrid"] = manifest.hybrid
            if manifest.rerank is not None:
                summary["rerank"] = manifest.rerank
            if manifest.reuse is not None:
                summary |= {"reused": manifest.reuse.reused, "embedded": manifest.reuse.embedded}
            print(json.dumps(summary))
        if flags.push:
            from leanpremise.export.publish import publish_bundle

            urls = publish_bundle(target.out, flags.model_repo, flags.data_repo)
            print(json.dumps({"pushed": urls}))
    except (PublishError, BundleError, EmbeddingShapeError, DataLayoutError, FileNotFoundError, FileFormatError,
            ModelDirError, StaticModelError) as e:
        logger.error("%s", e)
        return 1
    return 0
