"""The FastAPI app (module imported only when serving: it imports FastAPI): the four routes Lean calls, plus /health and /metrics.

The bundle and model load in a background thread after the socket is open,
so /health can say 503 ("loading") and then 200; the Lean routes answer 503
with Retry-After until then. Search runs in a thread pool (faiss releases the
GIL), embedding in the embedding service's worker, so the event loop stays
free to accept requests and to batch them.

A request's path: `RequestGuard` (serve/guard.py: concurrency bound, body size and time limits,
metrics, last-resort 500) -> its route below, which reads the one `ServerState` of the app -> the
exception handlers, which turn `NotReady`, `Overloaded`, `EmbeddingFailed`, `LimitExceeded` and
validation errors into their status codes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from leanpremise.serve import retrieve_request
from leanpremise.serve.embedders import EmbeddingFailed
from leanpremise.serve.embedding_service import EmbeddingService, Overloaded
from leanpremise.serve.embedding_store import open_server_store
from leanpremise.serve.guard import RequestGuard
from leanpremise.serve.prometheus import Metrics
from leanpremise.serve.schemas import LimitExceeded, request_model
from leanpremise.serve.search_batcher import SearchBatcher
from leanpremise.serve.settings import ServeConfig

logger = logging.getLogger(__name__)


class NotReady(Exception):
    """A Lean route was called before loading finished (or after it failed)."""


class ServerState:
    """What loading produces; `ready` flips once index, model and embedding service exist."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.metrics = Metrics()
        self.ready = False
        self.error: str | None = None
        self.on_load_failed = None
        self.index = None
        self.service: EmbeddingService | None = None
        self.bundle = None
        self.indexed_premises_json = b"[]"
        self.indexed_modules_json = b"[]"
        self.load_seconds = 0.0
        self.request_model = request_model(config)
        self.max_text_chars = 512 * config.chars_per_token
        """States and decls are cut to this many characters before tokenising (set from the model)."""
        self.candidate_mask_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="candidates")
        self.search_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search")
        self.searcher: SearchBatcher | None = None

    def load(self):
        """Blocking: bundle (or hub download), index, embedder."""
        from leanpremise.serve.embedders import make_embedders
        from leanpremise.serve.index import PremiseIndex
        from leanpremise.serve.loader import load_bundle, load_from_hub

        cfg = self.config
        t0 = time.perf_counter()
        if cfg.bundle is not None:
            bundle = load_bundle(cfg.bundle, cfg.data_dir, verify=cfg.verify, fast=cfg.fast_verify)
        else:
            bundle = load_from_hub(cfg.data_repo, cfg.data_revision, cfg.model_id, cfg.model_revision, cfg.data_dir,
                                   verify=cfg.verify, fast=cfg.fast_verify)
        search_threads = limit_blas_threads(cfg.search_threads)
        index = PremiseIndex(bundle.corpus, bundle.embeddings, cfg.dtype, search_threads)
        limit_torch_threads(cfg, search_threads)
        embedders, background = make_embedders(cfg, bundle)
        bundle.embeddings = None  # the index holds its own (possibly half-precision) copy
        self.max_text_chars = text_bound(embedders[0], bundle, cfg.chars_per_token)
        if embedders[0].dim != index.dim:
            raise ValueError(f"the model embeds in dimension {embedders[0].dim}, the index in {index.dim}")
        self.bundle, self.index = bundle, index
        self.indexed_premises_json = orjson.dumps(index.indexed_premises)
        self.indexed_modules_json = orjson.dumps(index.indexed_modules)
        self.load_seconds = time.perf_counter() - t0
        logger.info("loaded %d premises (%d modules), %s embedder x%d%s, in %.1fs", index.size,
                    len(index.indexed_modules), embedders[0].name, len(embedders),
                    " + 1 in the background" if background is not None else "", self.load_seconds)
        return embedders, background

    async def start(self) -> None:
        """Load off the event loop, then start the embedding and search workers; a failure is kept for
        /health and handed to `on_load_failed` (the CLI stops uvicorn)."""
        cfg, metrics = self.config, self.metrics
        try:
            embedders, background = await asyncio.get_running_loop().run_in_executor(None, self.load)
            store = await asyncio.get_running_loop().run_in_executor(None, open_server_store, cfg, self.bundle,
                                                                     embedders[0])
            service = EmbeddingService(embedders, cfg, metrics=metrics, background=background, store=store)
            searcher = SearchBatcher(self.index, self.search_executor, cfg.max_queries_per_search, metrics)
            await service.start()
            await searcher.start()
            self.service, self.searcher = service, searcher
            self.ready = True
            metrics.ready.set(1)
            metrics.load_seconds.set(self.load_seconds)
            metrics.indexed.set(self.index.size)
        except Exception as e:  # noqa: BLE001 - reported on /health and to the launcher
            self.error = f"{type(e).__name__}: {e}"
            logger.error("loading failed: %s", self.error)
            if self.on_load_failed is not None:
                self.on_load_failed(e)

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
        if self.searcher is not None:
            await self.searcher.stop()
        self.candidate_mask_pool.shutdown(wait=False, cancel_futures=True)
        self.search_executor.shutdown(wait=False, cancel_futures=True)


def create_app(config: ServeConfig, on_load_failed=None, preloaded: ServerState | None = None) -> FastAPI:
    """The ASGI app; `on_load_failed` is called (e.g. to stop uvicorn) if loading raises; `preloaded`: a
    state to serve instead of a new one."""
    state = preloaded or ServerState(config.check_source())
    state.on_load_failed = on_load_failed
    docs = state.config.docs
    app = FastAPI(title="leanpremise premise server", lifespan=lifespan, docs_url="/docs" if docs else None,
                  redoc_url="/redoc" if docs else None, openapi_url="/openapi.json" if docs else None)
    app.state.server = state
    app.add_middleware(RequestGuard, state=state, routes=ROUTES)
    app.add_exception_handler(NotReady, not_ready)
    app.add_exception_handler(Overloaded, overloaded)
    app.add_exception_handler(EmbeddingFailed, embedding_failed)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(ValidationError, invalid_request)
    app.add_exception_handler(LimitExceeded, limit_exceeded)
    app.include_router(router)
    app.openapi = lambda: openapi_schema(app)
    return app


def openapi_schema(app: FastAPI) -> dict:
    """FastAPI's schema, plus the /retrieve body it cannot see (the route parses the body itself): the
    request model with this server's limits, so the published schema says what is accepted. Built also
    when /openapi.json is off: tests fuzz the app from it in-process."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = FastAPI.openapi(app)
    body = app.state.server.request_model.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(body.pop("$defs", {}))
    components["RetrieveRequest"] = body
    post = schema["paths"]["/retrieve"]["post"]
    post["requestBody"] = {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/RetrieveRequest"}}}}
    for code, text in {"413": "body larger than MAX_BODY_BYTES", "422": "a field is invalid or over a limit",
                       "503": "loading or overloaded (Retry-After)"}.items():
        post["responses"].setdefault(code, {"description": text})
    app.openapi_schema = schema
    return schema


def text_bound(embedder, bundle, chars_per_token: int) -> int:
    """Characters of a state or decl that can matter: the model's max sequence length (in tokens) times a
    generous bound on the characters one token covers; beyond that the tokenizer truncates anyway."""
    from leanpremise.serve.embedders import max_seq_length

    tokens = getattr(embedder, "max_length", None) or max_seq_length(bundle.model_dir, None)
    return int(tokens) * chars_per_token


@asynccontextmanager
async def lifespan(app: FastAPI):
    state: ServerState = app.state.server
    task = asyncio.create_task(state.start())
    yield
    task.cancel()
    await state.stop()


def server_state(request: Request) -> ServerState:
    return request.app.state.server


def ready_state(request: Request) -> ServerState:
    """The server state, or NotReady (503) while loading or after loading failed."""
    state = request.app.state.server
    if not state.ready:
        raise NotReady()
    return state


# ---- the routes -----------------------------------------------------------------------------------

router = APIRouter()


@router.get("/health")
async def health(request: Request):
    state = server_state(request)
    if state.ready:
        return {"status": "ok", "premises": state.index.size, "modules": len(state.index.indexed_modules),
                "backend": state.service.embedder.name, "embed_workers": len(state.service.embedders),
                "load_seconds": round(state.load_seconds, 2), "revision": state.bundle.manifest.revision}
    return JSONResponse({"status": "failed" if state.error else "loading", "error": state.error},
                        status_code=503, headers={"Retry-After": "5"})


@router.get("/metrics")
async def prometheus(request: Request):
    state = server_state(request)
    if state.service is not None:
        state.metrics.cache_entries.set(len(state.service.cache))
        state.metrics.cache_bytes.set(state.service.cache.nbytes)
    body, ctype = state.metrics.render()
    return Response(body, media_type=ctype)


@router.get("/indexed-premises")
async def indexed_premises(request: Request):
    return Response(ready_state(request).indexed_premises_json, media_type="application/json")


@router.get("/indexed-modules")
async def indexed_modules(request: Request):
    return Response(ready_state(request).indexed_modules_json, media_type="application/json")


@router.get("/max-new-premises")
async def max_new_premises(request: Request):
    return server_state(request).config.max_new_premises


@router.post("/retrieve")
async def retrieve(request: Request):
    # Parsed here rather than by FastAPI so that a body is read as JSON whatever its content type
    # (curl -d sends form-encoded headers) and errors name the field without a "body." prefix.
    state = server_state(request)
    body = state.request_model.model_validate_json(await request.body())
    result = await retrieve_request.answer(ready_state(request), body)
    return Response(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


ROUTES = frozenset(route.path for route in router.routes)
"""Paths that get their own metrics label; any other path is counted as `other`."""


# ---- errors -> status codes ---------------------------------------------------------------------


async def not_ready(request: Request, exc: NotReady) -> JSONResponse:
    error = server_state(request).error
    if error:
        return JSONResponse({"detail": f"server failed to load: {error}"}, status_code=503)
    return JSONResponse({"detail": "loading the index and model"}, status_code=503, headers={"Retry-After": "5"})


async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
    return JSONResponse({"detail": f"server overloaded ({exc}); retry later"}, status_code=503,
                        headers={"Retry-After": str(server_state(request).config.retry_after_s)})


async def embedding_failed(request: Request, exc: EmbeddingFailed) -> JSONResponse:
    return JSONResponse({"detail": f"embedding backend failed: {exc}"}, status_code=502)


async def invalid_request(request: Request, exc: RequestValidationError | ValidationError) -> JSONResponse:
    return validation_error_response(exc.errors())


async def limit_exceeded(request: Request, exc: LimitExceeded) -> JSONResponse:
    return validation_error_response([{"loc": (exc.field,), "msg": str(exc), "type": "limit_exceeded"}])


MAX_ERRORS_SHOWN = 20
"""A request with thousands of bad entries gets the first few named, not an answer as large as itself."""

REQUEST_FIELDS = frozenset({"state", "k", "imported_modules", "local_premises", "new_premises",
                            "caller_in_module_system", "imported_all_modules", "name", "decl"})


def field_path(loc) -> str:
    """`("new_premises", 3, "function-after[...]", "decl")` -> `new_premises[3].decl`: fields and indices,
    without pydantic's union-member tags."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in REQUEST_FIELDS:
            out += f".{part}" if out else part
    return out


def validation_error_response(errors: list[dict]) -> JSONResponse:
    """422 whose `message` names each offending field (`k: Input should be a valid integer`,
    `new_premises[3].decl: String should have at most 50000 characters`)."""
    parts = []
    for err in errors[:MAX_ERRORS_SHOWN]:
        loc = field_path(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            parts.append(f"request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})")
        else:
            parts.append(f"{loc or 'body'}: {err.get('msg')}")
    if len(errors) > MAX_ERRORS_SHOWN:
        parts.append(f"... and {len(errors) - MAX_ERRORS_SHOWN} more errors")
    detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
              for e in errors[:MAX_ERRORS_SHOWN]]
    return JSONResponse({"detail": detail, "message": "; ".join(dict.fromkeys(parts))}, status_code=422)


# ---- thread pools ---------------------------------------------------------------------------------


def limit_blas_threads(threads: int | None, cpus: int | None = None) -> int:
    """Set the BLAS pool (the search's rescoring) to the search's `threads` (default: 1 up to 4 cores, else
    cpus // 4), the count its faiss scan uses too."""
    import os

    from threadpoolctl import threadpool_limits

    cpus = cpus or os.cpu_count() or 1
    threads = threads or (1 if cpus <= 4 else cpus // 4)
    threadpool_limits(limits=threads, user_api="blas")
    return threads


def limit_torch_threads(config, search_threads: int) -> None:
    """Where torch is loaded but not the embedding backend (which sets its own threads), keep its OpenMP
    pool small, since idle OpenMP threads spin; a server on ONNX Runtime need not load torch at all."""
    import sys

    if config.backend == "torch" or "torch" not in sys.modules:
        return
    import torch

    torch.set_num_threads(search_threads)
