"""The FastAPI app (module imported only when serving: it imports FastAPI): the four routes Lean calls,
plus /health, /metrics, /revisions and /admin/reload.

The bundle and model load in a background thread after the socket is open,
so /health can say 503 ("loading") and then 200; the Lean routes answer 503
with Retry-After until then. Search runs in a thread pool (faiss releases the
GIL), embedding in the embedding service's workers, so the event loop stays
free to accept requests and to batch them.

A request's path: `RevisionRouter` (serve/http/router.py: picks the revision `/<tag>/...` addresses)
-> `RequestGuard` (serve/http/guard.py: concurrency bound, body size and time limits, metrics,
last-resort 500) -> its route below, which reads that revision (serve/revisions/table.py) and the one
`Server` of the app (serve/revisions/lifecycle.py) -> the exception handlers, which turn `NotReady`,
`Overloaded`, `EmbeddingFailed`, `LimitExceeded` and validation errors into their status codes.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
from contextlib import asynccontextmanager

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from leanpremise.model.backends import EmbeddingFailed
from leanpremise.serve.embedding.lanes import Overloaded
from leanpremise.serve.errors import LimitExceeded
from leanpremise.serve.http.guard import RequestGuard
from leanpremise.serve.http.router import REVISION_KEY, RevisionRouter
from leanpremise.serve.revisions.lifecycle import ReloadFailed, Server, watch_sighup
from leanpremise.serve.revisions.table import Revision
from leanpremise.serve.search import answer as retrieve_request
from leanpremise.serve.settings import ServeConfig

logger = logging.getLogger(__name__)


class NotReady(Exception):
    """A Lean route was called before loading finished (or after it failed)."""


def create_app(config: ServeConfig, on_load_failed=None, preloaded: Server | None = None) -> FastAPI:
    """The ASGI app; `on_load_failed` is called (e.g. to stop uvicorn) if loading raises; `preloaded`: a
    server to serve instead of a new one."""
    server = preloaded or Server(config.check_source())
    server.on_load_failed = on_load_failed
    if server.config.admin_reload and not server.config.admin_token:
        logger.warning("ADMIN_RELOAD is on but ADMIN_TOKEN is not set: POST /admin/reload stays off (404)")
    docs = server.config.docs
    app = FastAPI(title="leanpremise premise server", lifespan=lifespan, docs_url="/docs" if docs else None,
                  redoc_url="/redoc" if docs else None, openapi_url="/openapi.json" if docs else None)
    app.state.server = server
    app.add_middleware(RequestGuard, server=server, routes=ROUTES)
    app.add_middleware(RevisionRouter, server=server)  # added last: outermost, so the guard sees /retrieve
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


@asynccontextmanager
async def lifespan(app: FastAPI):
    server: Server = app.state.server
    task = asyncio.create_task(server.start())
    hup = watch_sighup(server)
    yield
    if hup:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
    task.cancel()
    await server.stop()


def server_of(request: Request) -> Server:
    return request.app.state.server


def ready_revision(request: Request) -> Revision:
    """The revision the request addresses, or NotReady (503) while loading or after loading failed."""
    rev = request.scope.get(REVISION_KEY)
    if rev is None or not server_of(request).ready:
        raise NotReady()
    return rev


# ---- the routes -----------------------------------------------------------------------------------

router = APIRouter()


@router.get("/health")
async def health(request: Request):
    server = server_of(request)
    rev = request.scope.get(REVISION_KEY)
    if server.ready and rev is not None:
        return {"status": "ok", "premises": rev.index.size, "modules": len(rev.index.indexed_modules),
                "model_type": rev.bundle.manifest.model_type, "backend": rev.service.lanes.embedder.name, "embed_workers": len(rev.service.lanes.embedders),
                "load_seconds": round(rev.load_seconds, 2), "revision": rev.bundle.manifest.revision,
                "tag": rev.tag, **rev.ranking.describe(),
                "hybrid_in_bundle": bool(rev.bundle.manifest.hybrid),
                "rerank_in_bundle": bool(rev.bundle.manifest.rerank)}
    # the error's text (paths, exception messages) is in the log, not shown to anonymous clients
    failed = bool(server.error)
    return JSONResponse({"status": "failed" if failed else "loading",
                         "error": "loading failed (see the server log)" if failed else None},
                        status_code=503, headers={"Retry-After": "5"})


@router.get("/metrics")
async def prometheus(request: Request):
    server = server_of(request)
    services = [s.service for s in server.embedders.values() if s.service is not None]
    if services:
        server.metrics.cache_entries.set(sum(len(s.cache) for s in services))
        server.metrics.cache_bytes.set(sum(s.cache.nbytes for s in services))
    body, ctype = server.metrics.render()
    return Response(body, media_type=ctype)


@router.get("/indexed-premises")
async def indexed_premises(request: Request):
    return Response(ready_revision(request).indexed_premises_json, media_type="application/json")


@router.get("/indexed-modules")
async def indexed_modules(request: Request):
    return Response(ready_revision(request).indexed_modules_json, media_type="application/json")


@router.get("/max-new-premises")
async def max_new_premises(request: Request):
    return server_of(request).config.max_new_premises


@router.post("/retrieve")
async def retrieve(request: Request):
    # Parsed here rather than by FastAPI so that a body is read as JSON whatever its content type
    # (curl -d sends form-encoded headers) and errors name the field without a "body." prefix.
    server = server_of(request)
    body = server.request_model.model_validate_json(await request.body())
    result = await retrieve_request.answer(ready_revision(request), body)
    return Response(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


@router.get("/revisions")
async def revisions(request: Request):
    """Every revision served (tag, data revision, premises, model, default flag, and `state`: loaded or
    retiring), and any being loaded by a reload."""
    server = server_of(request)
    table = server.table
    out = [rev.describe(tag == table.default) for tag, rev in table.revisions.items()]
    out += [{"tag": tag, "state": "loading", "default": False} for tag in list(server.loading)
            if tag not in table.revisions]
    if not server.ready:
        out.append({"tag": None, "state": "failed" if server.error else "loading", "default": False})
    return out


@router.post("/admin/reload")
async def admin_reload(request: Request):
    """Reload as SIGHUP does, answering when the new table serves; only with ADMIN_RELOAD on and ADMIN_TOKEN
    set, and only to a request carrying `Authorization: Bearer <ADMIN_TOKEN>`, whatever its peer address
    (behind a proxy every peer is the proxy). Otherwise 404, so the route's existence is not advertised."""
    server = server_of(request)
    if not server.config.admin_reload or not admin_authorized(request, server.config.admin_token):
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    try:
        await server.reload()
    except ReloadFailed as e:
        return JSONResponse({"detail": f"reload failed, still serving the revisions loaded before: {e}"},
                            status_code=500)
    return await revisions(request)


def admin_authorized(request: Request, token: str | None) -> bool:
    """Whether the request carries `Authorization: Bearer <token>`; compared in constant time."""
    if not token:
        return False
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


ROUTES = frozenset(route.path for route in router.routes)
"""Paths that get their own metrics label; any other path is counted as `other`."""


# ---- errors -> status codes ---------------------------------------------------------------------


async def not_ready(request: Request, exc: NotReady) -> JSONResponse:
    if server_of(request).error:  # its text is in the log
        return JSONResponse({"detail": "server failed to load (see the server log)"}, status_code=503)
    return JSONResponse({"detail": "loading the index and model"}, status_code=503, headers={"Retry-After": "5"})


async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
    return JSONResponse({"detail": f"server overloaded ({exc}); retry later"}, status_code=503,
                        headers={"Retry-After": str(server_of(request).config.retry_after_s)})


async def embedding_failed(request: Request, exc: EmbeddingFailed) -> JSONResponse:
    """502 saying what failed but not how: the backend's error may carry its URL (and credentials in it)."""
    logger.warning("embedding backend failed: %s", exc)
    return JSONResponse({"detail": "embedding backend failed (see the server log)"}, status_code=502)


async def invalid_request(request: Request, exc: RequestValidationError | ValidationError) -> JSONResponse:
    """422 naming the first errors; the input is never copied into them (a body's worth of Python objects)."""
    if isinstance(exc, ValidationError):
        return validation_error_response(exc.errors(include_url=False, include_input=False), exc.error_count())
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


def validation_error_response(errors: list[dict], count: int | None = None) -> JSONResponse:
    """422 whose `message` names each offending field (`k: Input should be a valid integer`,
    `new_premises[3].decl: String should have at most 50000 characters`); `count`: all errors found."""
    count = len(errors) if count is None else count
    parts = []
    for err in errors[:MAX_ERRORS_SHOWN]:
        loc = field_path(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            parts.append(f"request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})")
        else:
            parts.append(f"{loc or 'body'}: {err.get('msg')}")
    if count > MAX_ERRORS_SHOWN:
        parts.append(f"... and {count - MAX_ERRORS_SHOWN} more errors")
    detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
              for e in errors[:MAX_ERRORS_SHOWN]]
    return JSONResponse({"detail": detail, "message": "; ".join(dict.fromkeys(parts))}, status_code=422)
