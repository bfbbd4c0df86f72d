"""`leanpremise serve BUNDLE` (or `--from_hub DATA_REPO@REV MODEL_REPO@REV`): run the premise server."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="run the premise server Lean's Cloud.premiseSelector calls",
        description="Serve /indexed-premises, /indexed-modules, /max-new-premises and /retrieve (plus /health, "
                    "/metrics) from a bundle written by `leanpremise export`, or from the Hub. Every option "
                    "can also come from the environment variable in brackets (the original server's names).",
    )
    p.add_argument("bundle", nargs="?", type=Path, default=None, help="bundle dir [BUNDLE_DIR]")
    p.add_argument("--from_hub", nargs=2, metavar=("DATA_REPO@REVISION", "MODEL_REPO@REVISION"), default=None,
                   help="download premises.tar.gz + embeddings and the model from the Hub "
                        "[DATA_REPO, DATA_REVISION, MODEL_ID, MODEL_REVISION]")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", default=None, help="auto|torch|onnx|onnx-int8|tei [EMBED_BACKEND] (default auto: "
                                                  "on CPU the bundle's int8 ONNX model, else its ONNX model, "
                                                  "else PyTorch; PyTorch on a GPU)")
    p.add_argument("--device", default=None, help="torch device for the torch backend (default cpu)")
    p.add_argument("--embed_service_url", default=None, help="text-embeddings-inference URL [EMBED_SERVICE_URL]")
    p.add_argument("--embed_service_timeout", type=float, default=None, help="[EMBED_SERVICE_TIMEOUT] seconds")
    p.add_argument("--max_concurrent_inputs", dest="embed_service_max_concurrent_inputs", type=int, default=None,
                   help="texts embedded at once before 503 [EMBED_SERVICE_MAX_CONCURRENT_INPUTS=128]")
    p.add_argument("--max_client_batch_size", type=int, default=None, help="[MAX_CLIENT_BATCH_SIZE=32]")
    p.add_argument("--embed_batch_size", type=int, default=None,
                   help="texts per torch encode call, and most texts batched for a backend that batches well "
                        "[EMBED_BATCH_SIZE=64]; ONNX Runtime on CPU embeds one text per run (no padding)")
    p.add_argument("--embed_workers", type=int, default=None,
                   help="embedding workers, each with its own tokenizer [EMBED_WORKERS] (default: 2 on CPU, "
                        "1 on a GPU or with TEI)")
    p.add_argument("--embed_threads", type=int, default=None,
                   help="threads per CPU embedding worker [EMBED_THREADS] (default: cores / workers)")
    p.add_argument("--search_threads", type=int, default=None,
                   help="threads scoring the embeddings (faiss, BLAS) [SEARCH_THREADS] (default: 1 up to 4 "
                        "cores, else a quarter of them)")
    p.add_argument("--search_batch_size", type=int, default=None,
                   help="most queued queries the search worker takes at once [SEARCH_BATCH_SIZE=16]")
    p.add_argument("--lru_cache_size", type=int, default=None, help="[LRU_CACHE_SIZE=131072]")
    p.add_argument("--max_new_premises", type=int, default=None, help="[MAX_NEW_PREMISES=2048]")
    p.add_argument("--max_k", type=int, default=None, help="[MAX_K=1024]")
    p.add_argument("--dtype", default=None, help="float32|float16|bfloat16 [DTYPE=float32]")
    p.add_argument("--data_dir", type=Path, default=None, help="download/unpack dir [DATA_DIR]")
    p.add_argument("--no_verify", action="store_true", help="skip the bundle's sha256 checks at startup")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    from dataclasses import fields

    from leanpremise.serve.config import ServeConfig, config_from_env
    from leanpremise.serve.loader import parse_repo_at

    hub = {}
    if args.from_hub:
        (data_repo, data_rev), (model_id, model_rev) = map(parse_repo_at, args.from_hub)
        hub = {"data_repo": data_repo, "data_revision": data_rev, "model_id": model_id, "model_revision": model_rev}
    flags = {f.name: getattr(args, f.name) for f in fields(ServeConfig) if hasattr(args, f.name)}
    if args.no_verify:
        flags["verify"] = False
    return config_from_env(**flags, **hub).validate()


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from leanpremise.bundle import BundleError
    from leanpremise.serve.app import create_app
    from leanpremise.serve.config import ConfigError

    try:
        config = config_from_args(args)
    except (ConfigError, BundleError) as e:
        logger.error("%s", e)
        return 2
    failed: list[BaseException] = []
    server: uvicorn.Server | None = None

    def stop(e: BaseException) -> None:
        failed.append(e)
        if server is not None:
            server.should_exit = True

    app = create_app(config, on_load_failed=stop)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="info",
                                           timeout_graceful_shutdown=5))
    server.run()
    return 1 if failed else 0
