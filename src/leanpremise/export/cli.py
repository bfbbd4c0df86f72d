"""`leanpremise export`: write a bundle a premise server loads, and optionally publish it."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def register(sub) -> None:
    from leanpremise.data.config import add_data_args

    p = sub.add_parser(
        "export", help="write a server bundle (model, ONNX, premises.tar.gz, embeddings) and optionally push it",
        description="Write a bundle: the model (sentence-transformers + ONNX), premises.tar.gz, "
                    "embeddings/<model>-<revision>.npy and manifest.json. With --push, publish the model "
                    "and the data to branch <revision> of --model_repo and --data_repo.",
    )
    p.add_argument("--model", default=None,
                   help="SentenceTransformer dir or hub id (omit with --push to publish an existing --out bundle)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    add_data_args(p)
    p.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True,
                   help="also export the model to ONNX under model/onnx/ (default: on)")
    p.add_argument("--int8", action="store_true", help="also write an int8 dynamically quantised ONNX model")
    p.add_argument("--corpus_embeddings", type=Path, default=None,
                   help=".npy of pre-computed corpus embeddings (corpus order) to reuse instead of encoding")
    p.add_argument("--reuse", type=Path, nargs="+", default=[], metavar="OLD_BUNDLE",
                   help="older bundles: copy their rows where the same model (by content identity) embedded "
                        "the same text, embed only the others; a bundle of another model reuses nothing")
    p.add_argument("--hybrid", type=Path, default=None, metavar="FUSION_JSON",
                   help="fusion.json from `retrieve --hybrid` or `fuse`: put it and the BM25 index / MePo "
                        "symbol table it needs into the bundle, so `serve` fuses dense and lexical rankings")
    p.add_argument("--model_name", default=None, help="MODEL_NAME in the embeddings file name (default: model dir name)")
    p.add_argument("--revision", default=None,
                   help="branch/file-name revision (default: the data dir's revision file, made ref-safe)")
    p.add_argument("--batch_size", type=int, default=64, help="encoding batch size")
    p.add_argument("--chunk_size", type=int, default=4096, help="premises per resumable embedding chunk")
    p.add_argument("--device", default=None, help="torch device for encoding (default: cuda if available)")
    p.add_argument("--push", action="store_true", help="publish to the Hugging Face Hub after writing")
    p.add_argument("--model_repo", default=None, help="model repository for --push, e.g. user/all-MiniLM-L6-v2-lean")
    p.add_argument("--data_repo", default=None, help="dataset repository for --push, e.g. user/lean-premises")
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
    from leanpremise.data.config import data_config_from_args
    from leanpremise.data.errors import DataLayoutError
    from leanpremise.export.corpus_embeddings import EmbeddingShapeError
    from leanpremise.export.exporter import ModelDirError
    from leanpremise.export.publish import PublishError
    from leanpremise.json_files import FileFormatError

    if args.push and not (args.model_repo and args.data_repo):
        logger.error("--push needs both --model_repo and --data_repo")
        return 2
    if args.model is None and not args.push:
        logger.error("--model is required (only `--push` of an existing bundle may omit it)")
        return 2
    if args.reuse and args.corpus_embeddings is not None:
        logger.error("--reuse and --corpus_embeddings exclude each other (both say where the rows come from)")
        return 2
    if args.model is not None and (why := missing_model_dir(args.model)):
        raise FileNotFoundError(why)  # printed as one line by the top-level CLI
    try:
        if args.model is not None:
            from leanpremise.export.exporter import ExportConfig, export_bundle

            cfg = ExportConfig(model=args.model, out=args.out, data=data_config_from_args(args), onnx=args.onnx,
                               int8=args.int8, corpus_embeddings=args.corpus_embeddings,
                               model_name=args.model_name, batch_size=args.batch_size,
                               chunk_size=args.chunk_size, device=args.device,
                               revision=args.revision, reuse=list(args.reuse), hybrid=args.hybrid)
            manifest = export_bundle(cfg)
            summary = {"bundle": str(args.out), "model_name": manifest.model_name,
                       "revision": manifest.revision, "premises": manifest.premise_count,
                       "dimension": manifest.dimension}
            if manifest.hybrid is not None:
                summary["hybrid"] = manifest.hybrid
            if manifest.reuse is not None:
                summary |= {"reused": manifest.reuse.reused, "embedded": manifest.reuse.embedded}
            print(json.dumps(summary))
        if args.push:
            from leanpremise.export.publish import publish_bundle

            urls = publish_bundle(args.out, args.model_repo, args.data_repo)
            print(json.dumps({"pushed": urls}))
    except (PublishError, BundleError, EmbeddingShapeError, DataLayoutError, FileNotFoundError, FileFormatError,
            ModelDirError) as e:
        logger.error("%s", e)
        return 1
    return 0
