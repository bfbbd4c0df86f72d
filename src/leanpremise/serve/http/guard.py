"""What stands between a connection and the routes: body limits and timeouts, admission of bodies
(serve/http/admission.py), a concurrency bound on requests whose body has arrived, metrics by route and
status, and the last-resort 500.

A pure ASGI middleware rather than a `BaseHTTPMiddleware`, because it must see the body arrive: an
oversized body is refused from its Content-Length, or else once its running byte count passes the limit,
never after it has been buffered whole; a body arriving too slowly is cut off at a deadline; and a client
that goes away mid-body is counted under its own status label, `client_closed`, not as a server error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import orjson
from starlette.requests import ClientDisconnect

from leanpremise.serve.http.admission import (
    AdmissionPool,
    BodyRefused,
    BodyTimeout,
    BodyTooLarge,
    ClientGone,
    replay,
)
from leanpremise.serve.http.clients import client_key
from leanpremise.serve.http.connection import REFUSED_KEY
from leanpremise.serve.http.retry_discipline import WINDOW_S, RetryDiscipline
from leanpremise.serve.jobs import CLIENT

logger = logging.getLogger(__name__)

UNGATED = frozenset({"/health", "/metrics"})
"""Routes answered whatever the load: operators and probes must see an overloaded server."""

REFUSALS = frozenset({503, 422, 429})
"""Statuses of the app's answers counted as refusals for MAX_REFUSALS_PER_CLIENT: overload (503, 429) and a
body the schema refuses (422: a client re-posting an invalid body costs its parse every time)."""

METRICS = "/metrics"
MAX_SCRAPES = 2
"""/metrics answers rendered at once (each walks every metric on the event loop); more get 503: an
anonymous scraper crowd must not take the loop from /health and the requests."""

CLIENT_CLOSED = "client_closed"
"""The status label of a request whose client went away before its answer (nginx logs these as 499)."""


class BodyReader:
    """`receive`, counting body bytes against `limit` and the time against `deadline`."""

    def __init__(self, receive, limit: int, deadline: float):
        self._receive, self.limit, self.deadline = receive, limit, deadline
        self.received = 0
        self.done = False

    async def __call__(self):
        if self.done:
            return await self._receive()
        remaining = self.deadline - time.monotonic()
        try:
            message = await asyncio.wait_for(self._receive(), timeout=max(remaining, 0.001))
        except TimeoutError:
            raise BodyTimeout() from None
        if message["type"] == "http.disconnect":
            raise ClientGone()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                raise BodyTooLarge()
            self.done = not message.get("more_body", False)
        return message


class RequestGuard:
    """ASGI middleware over the app; reads its limits from the server's config on each request."""

    def __init__(self, app, server, routes: frozenset[str]):
        """`routes`: the paths counted under their own label in /metrics; any other is `other`."""
        self.app, self.server, self.routes = app, server, routes
        self.active = 0
        self.scrapes = 0
        self.work: dict[str, int] = {}
        """Work slots held, by client key (MAX_WORK_PER_CLIENT)."""
        self.pool = AdmissionPool()
        self.retries = RetryDiscipline()
        """Clients that keep coming back after being refused (serve/http/retry_discipline.py)."""
        metrics = getattr(server, "metrics", None)
        if metrics is not None:
            metrics.body_readers.set_function(lambda: len(self.pool.readers))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cfg, metrics = self.server.config, self.server.metrics
        path = scope.get("path", "")
        route = path if path in self.routes else "other"
        t0 = time.perf_counter()
        sent = {"status": None}

        async def tracked_send(message):
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                sent["complete"] = True
            await send(message)

        label = await self._handle(scope, receive, tracked_send, sent, path, cfg)
        metrics.requests.labels(route, label or str(sent["status"] or 500)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - t0)

    async def _handle(self, scope, receive, send, sent, path, cfg) -> str | None:
        """Run the request; returns a status label to count instead of the status sent, or None.

        A gated request's body is read first, in the admission pool (serve/http/admission.py), and only
        then does the request take one of MAX_CONCURRENT_REQUESTS work slots."""
        gated = path not in UNGATED
        length = content_length(scope)
        if length is None:
            await respond(send, 400, "bad Content-Length header", close=True)
            return None
        if length > cfg.max_body_bytes:
            await respond(send, 413, too_large(cfg.max_body_bytes), close=True)
            return None
        reader = BodyReader(receive, cfg.max_body_bytes, time.monotonic() + cfg.body_timeout_s)
        slot: str | None = None
        try:
            if gated:
                client = client_key(scope, cfg.client_ipv6_prefix)
                if not self.retries.admit(client, cfg.max_refusals_per_client):
                    self.retries.refused(client, cfg.max_refusals_per_client)
                    await respond(send, 429, f"more than {cfg.max_refusals_per_client} refused requests in {WINDOW_S:g} s "
                                  "from this client (MAX_REFUSALS_PER_CLIENT); retry after Retry-After",
                                  {"retry-after": str(cfg.retry_after_s)}, close=True)
                    return None
                body = await self.pool.read(receive, client, cfg)
                reader.received, reader.done = len(body), True
                if self.active >= cfg.max_concurrent_requests:
                    await respond(send, 503, f"more than {cfg.max_concurrent_requests} requests at once; retry "
                                  "later", {"retry-after": str(cfg.retry_after_s)})
                    self.retries.refused(client, cfg.max_refusals_per_client)
                    return None
                if cfg.max_work_per_client and self.work.get(client, 0) >= cfg.max_work_per_client:
                    await respond(send, 429, f"more than {cfg.max_work_per_client} requests at once from this "
                                  "client (MAX_WORK_PER_CLIENT); retry later", {"retry-after": str(cfg.retry_after_s)})
                    self.retries.refused(client, cfg.max_refusals_per_client)
                    return None
                self.active += 1
                self.work[client] = self.work.get(client, 0) + 1
                slot = client
                CLIENT.set(client)
                await run_until_gone(self.app(scope, replay(body, receive), send), receive, sent)
                if sent["status"] in REFUSALS:
                    self.retries.refused(client, cfg.max_refusals_per_client)
            elif path == METRICS and self.scrapes >= MAX_SCRAPES:
                await respond(send, 503, f"more than {MAX_SCRAPES} /metrics scrapes at once; retry later",
                              {"retry-after": str(cfg.retry_after_s)})
            else:
                self.scrapes += path == METRICS
                try:
                    await self.app(scope, reader, send)
                finally:
                    self.scrapes -= path == METRICS
        except BodyTooLarge:
            await respond_unless_started(send, sent, 413, too_large(cfg.max_body_bytes))
        except BodyRefused as e:
            logger.info("%r: request body refused from %s: %s", path, scope.get("client"), e.detail)
            if sent["status"] is None:
                await respond(send, e.status, e.detail, e.headers, close=True)
        except BodyTimeout:
            logger.info("%r: request body not received within %gs: answered 408", path, cfg.body_timeout_s)
            await respond_unless_started(send, sent, 408, f"request body not received within "
                                         f"{cfg.body_timeout_s:g} s (BODY_TIMEOUT_S)")
        except (ClientGone, ClientDisconnect, OSError) as e:
            # ClientDisconnect: Starlette's, when it reads the disconnect our reader did not see
            refused = scope.get(REFUSED_KEY)
            if refused is not None:  # the connection layer answered for us (a chunk storm, too many bytes)
                return str(refused[0])
            return self._client_closed(path, reader, e)
        except Exception:  # last resort: one request fails, the server stays up
            logger.exception("unhandled error on %r", path)
            await respond_unless_started(send, sent, 500, "internal error")
        finally:
            if slot is not None:
                self.active -= 1
                left = self.work[slot] - 1
                if left:
                    self.work[slot] = left
                else:
                    del self.work[slot]
        return None

    @staticmethod
    def _client_closed(path: str, reader: BodyReader, error: BaseException) -> str:
        logger.info("%r: client went away after %d body bytes (%s)", path, reader.received,
                    type(error).__name__)
        return CLIENT_CLOSED


async def run_until_gone(app_call, receive, sent) -> None:
    """Run the app on a request whose body was read, while watching `receive` for the client going away:
    then the app is cancelled (its queued embedding chunks are dropped, a chunk being embedded finishes and
    is cached) and ClientGone is raised, so a client that hangs up stops costing work (issue 28)."""
    app = asyncio.ensure_future(app_call)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({app, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not app.done() and not sent.get("complete"):
            app.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await app
            raise ClientGone()
        await app
    finally:
        watcher.cancel()
        if not app.done():
            app.cancel()


async def _disconnected(receive) -> None:
    """Return once the client is gone (uvicorn also answers so once the response is complete). After its
    body, a request's `receive` has nothing else to say; a server that answers otherwise is not watched."""
    if (await receive())["type"] != "http.disconnect":
        await asyncio.Event().wait()


def content_length(scope) -> int | None:
    """The Content-Length header (0 when absent), None when it is not a plain number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.strip()
            if not text.isdigit() or len(text) > 18:
                return None
            return int(text)
    return 0


def too_large(limit: int) -> str:
    return f"request body larger than {limit} bytes (MAX_BODY_BYTES)"


async def respond(send, status: int, detail: str, headers: dict | None = None, close: bool = False) -> None:
    """A JSON `{"detail": ...}` answer; `close` ends the connection after it (a body left unread)."""
    body = orjson.dumps({"detail": detail})
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    if close:
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def respond_unless_started(send, sent, status: int, detail: str) -> None:
    if sent["status"] is None:
        await respond(send, status, detail, close=True)
