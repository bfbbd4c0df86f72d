"""The FastAPI app (module imported only when serving: it imports FastAPI): the four routes Lean calls, plus /health and /metrics.

The bundle and model load in a background thread after the socket is open,
so /health can say 503 ("loading") and then 200; the Lean routes answer 503
with Retry-After until then. Search runs in a thread pool (faiss releases the
GIL), embedding in the embedding service's worker, so the event loop stays
free to accept requests and to batch them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import orjson
from fastapi import Request
from pydantic import ValidationError

from leanpremise.serve.config import ServeConfig
from leanpremise.serve.embedders import EmbeddingFailed
from leanpremise.serve.embedding_service import EmbeddingService, Overloaded
from leanpremise.serve.metrics import Metrics
from leanpremise.serve.schemas import RetrieveRequest
from leanpremise.serve.search_batcher import SearchBatcher

logger = logging.getLogger(__name__)


class ServerState:
    """What loading produces; `ready` flips once index, model and embedding service exist."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.metrics = Metrics()
        self.ready = False
        self.error: str | None = None
        self.index = None
        self.service: EmbeddingService | None = None
        self.bundle = None
        self.indexed_premises_json = b"[]"
        self.indexed_modules_json = b"[]"
        self.load_seconds = 0.0
        self.search_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="candidates")
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
            bundle = load_bundle(cfg.bundle, cfg.data_dir, verify=cfg.verify)
        else:
            bundle = load_from_hub(cfg.data_repo, cfg.data_revision, cfg.model_id, cfg.model_revision, cfg.data_dir)
        search_threads = limit_blas_threads(cfg.search_threads)
        index = PremiseIndex(bundle.corpus, bundle.embeddings, cfg.dtype, search_threads)
        limit_torch_threads(cfg, search_threads)
        embedders, background = make_embedders(cfg, bundle)
        bundle.embeddings = None  # the index holds its own (possibly half-precision) copy
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


def create_app(config: ServeConfig, on_load_failed=None, preloaded: ServerState | None = None):
    """The ASGI app; `on_load_failed` is called (e.g. to stop uvicorn) if loading raises."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response

    from leanpremise.serve.retrieve import retrieve

    state = preloaded or ServerState(config.validate())
    metrics = state.metrics

    async def _load_in_background():
        loop = asyncio.get_running_loop()
        try:
            embedders, background = await loop.run_in_executor(None, state.load)
            service = EmbeddingService(embedders, background=background, cache_size=config.lru_cache_size,
                                       max_inflight=config.embed_service_max_concurrent_inputs,
                                       chunk_size=config.max_client_batch_size,
                                       max_batch=config.embed_batch_size, metrics=metrics)
            searcher = SearchBatcher(state.index, state.search_executor, config.search_batch_size, metrics)
            await service.start()
            await searcher.start()
            state.service, state.searcher = service, searcher
            state.ready = True
            metrics.ready.set(1)
            metrics.load_seconds.set(state.load_seconds)
            metrics.indexed.set(state.index.size)
        except Exception as e:  # noqa: BLE001 - reported on /health and to the launcher
            state.error = f"{type(e).__name__}: {e}"
            logger.error("loading failed: %s", state.error)
            if on_load_failed is not None:
                on_load_failed(e)

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(_load_in_background())
        yield
        task.cancel()
        if state.service is not None:
            await state.service.stop()
        if state.searcher is not None:
            await state.searcher.stop()
        state.search_pool.shutdown(wait=False, cancel_futures=True)
        state.search_executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="leanpremise premise server", lifespan=lifespan)
    app.state.server = state

    def not_ready() -> JSONResponse:
        if state.error:
            return JSONResponse({"detail": f"server failed to load: {state.error}"}, status_code=503)
        return JSONResponse({"detail": "loading the index and model"}, status_code=503,
                            headers={"Retry-After": "5"})

    @app.middleware("http")
    async def observe(request: Request, call_next):
        t0 = time.perf_counter()
        route = request.url.path if request.url.path in ROUTES else "other"
        try:
            response = await call_next(request)
        except Exception:  # never let one request take the process down
            logger.exception("unhandled error on %s", request.url.path)
            response = JSONResponse({"detail": "internal error"}, status_code=500)
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - t0)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return validation_error_response(exc.errors())

    @app.get("/health")
    async def health():
        if state.ready:
            return {"status": "ok", "premises": state.index.size, "modules": len(state.index.indexed_modules),
                    "backend": state.service.embedder.name, "embed_workers": len(state.service.embedders),
                    "load_seconds": round(state.load_seconds, 2),
                    "revision": state.bundle.manifest.revision}
        return JSONResponse({"status": "failed" if state.error else "loading", "error": state.error},
                            status_code=503, headers={"Retry-After": "5"})

    @app.get("/metrics")
    async def prometheus():
        if state.service is not None:
            metrics.cache_entries.set(len(state.service.cache))
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    @app.get("/indexed-premises")
    async def indexed_premises():
        if not state.ready:
            return not_ready()
        return Response(state.indexed_premises_json, media_type="application/json")

    @app.get("/indexed-modules")
    async def indexed_modules():
        if not state.ready:
            return not_ready()
        return Response(state.indexed_modules_json, media_type="application/json")

    @app.get("/max-new-premises")
    async def max_new_premises():
        return config.max_new_premises

    @app.post("/retrieve")
    async def retrieve_route(request: Request):
        # Parsed here rather than by FastAPI so that a body is read as JSON whatever its content type
        # (curl -d sends form-encoded headers) and errors name the field without a "body." prefix.
        try:
            body = RetrieveRequest.model_validate_json(await request.body())
        except ValidationError as e:
            return validation_error_response(e.errors())
        if not state.ready:
            return not_ready()
        try:
            result = await retrieve(state, body)
        except Overloaded as e:
            return JSONResponse({"detail": f"server overloaded ({e}); retry later"}, status_code=503,
                                headers={"Retry-After": str(config.retry_after_s)})
        except EmbeddingFailed as e:
            return JSONResponse({"detail": f"embedding backend failed: {e}"}, status_code=502)
        return Response(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    return app


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


def validation_error_response(errors: list[dict]):
    """422 whose `message` names each offending field (`k: Input should be a valid integer`)."""
    from fastapi.responses import JSONResponse

    parts = []
    for err in errors:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        if err.get("type") == "json_invalid":
            parts.append(f"request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})")
        else:
            parts.append(f"{loc or 'body'}: {err.get('msg')}")
    detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors]
    return JSONResponse({"detail": detail, "message": "; ".join(dict.fromkeys(parts))}, status_code=422)


ROUTES = {"/retrieve", "/indexed-premises", "/indexed-modules", "/max-new-premises", "/health", "/metrics"}
