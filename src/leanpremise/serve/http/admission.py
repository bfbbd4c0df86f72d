"""Admission of request bodies, apart from the work slots: a pool of connections reading their bodies.

A request counts toward MAX_CONCURRENT_REQUESTS only once its body has fully arrived; until then it holds
a place in this pool, which is bounded in readers (MAX_BODY_READERS), in readers per client
(MAX_BODY_READERS_PER_CLIENT, by the client address uvicorn reports: the peer, or the X-Forwarded-For of
a proxy listed in FORWARDED_ALLOW_IPS; 0 turns the cap off), and in bytes buffered by all readers
together (MAX_BODY_BUFFER_BYTES). A reader must keep up a minimum rate: after BODY_GRACE_S it must have
sent MIN_BODY_BYTES_PER_S for every second past the grace, else it is cut with 408; the check is a
deadline on each wait for more body (a loop timer), so a reader that sends nothing is cut on time too.

When the pool is full, a new reader is not refused: the slowest reader (fewest bytes per second since
it started) is cut with 408 and the new one takes its place, so that a crowd of slow connections cannot
keep honest ones out (docs/decisions.md, "Fair admission").
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

NEWCOMER_S = 1.0
"""Seconds a new reader is spared when the full pool picks its slowest to cut (its rate is still unknown)."""


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


class ClientGone(Exception):
    pass


class BodyRefused(Exception):
    """A body the pool will not read: `status`, `detail` and headers for the answer."""

    def __init__(self, status: int, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


@dataclass(eq=False)
class Reader:
    """One connection reading its body: who, since when, how much, and the task doing it."""

    client: str
    started: float
    received: int = 0
    task: asyncio.Task | None = None
    evicted: bool = False
    body: list = field(default_factory=list)

    def rate(self, now: float) -> float:
        return self.received / max(now - self.started, 1e-3)


class AdmissionPool:
    """The body readers of one server; `read` returns a request's whole body or raises BodyRefused."""

    def __init__(self):
        self.readers: set[Reader] = set()
        self.by_client: dict[str, int] = {}
        self.buffered = 0

    async def read(self, receive, client: str, cfg) -> bytes:
        """Admit the reader (cutting the slowest when full), read its body under the rate and size
        bounds of `cfg`, and free its place."""
        per_client = cfg.max_body_readers_per_client
        if per_client and self.by_client.get(client, 0) >= per_client:
            raise BodyRefused(429, f"more than {per_client} request bodies being read from one client "
                                   "(MAX_BODY_READERS_PER_CLIENT); retry later", {"retry-after": str(cfg.retry_after_s)})
        if len(self.readers) >= cfg.max_body_readers:
            self._evict_slowest()
        reader = Reader(client, time.monotonic())
        self.readers.add(reader)
        self.by_client[client] = self.by_client.get(client, 0) + 1
        reader.task = asyncio.ensure_future(self._read(reader, receive, cfg))
        try:
            return await reader.task
        except asyncio.CancelledError:
            if reader.evicted:
                raise BodyRefused(408, f"request body too slow: more than {cfg.max_body_readers} bodies being "
                                       "read (MAX_BODY_READERS), and this one the slowest") from None
            raise
        finally:
            self._release(reader)

    def _evict_slowest(self) -> None:
        now = time.monotonic()
        live = [r for r in self.readers if not r.evicted and r.task is not None]
        # a reader admitted a moment ago has had no time to show its rate: cut one that has, if any
        live = [r for r in live if now - r.started >= NEWCOMER_S] or live
        if live:
            slowest = min(live, key=lambda r: r.rate(now))
            slowest.evicted = True
            slowest.task.cancel()
            self._release(slowest)

    def _release(self, reader: Reader) -> None:
        if reader in self.readers:
            self.readers.discard(reader)
            self.buffered -= reader.received
            left = self.by_client.get(reader.client, 1) - 1
            if left:
                self.by_client[reader.client] = left
            else:
                self.by_client.pop(reader.client, None)

    async def _read(self, reader: Reader, receive, cfg) -> bytes:
        """The body's messages joined; BodyTooLarge, BodyTimeout, BodyRefused or ClientGone on the way."""
        overall = reader.started + cfg.body_timeout_s
        while True:
            now = time.monotonic()
            by_rate = reader.started + cfg.body_grace_s + reader.received / cfg.min_body_bytes_per_s
            deadline = min(overall, by_rate)
            try:
                message = await asyncio.wait_for(receive(), timeout=max(deadline - now, 0.001))
            except TimeoutError:
                if deadline == overall:
                    raise BodyTimeout() from None
                raise BodyRefused(408, f"request body slower than {cfg.min_body_bytes_per_s} bytes/s after "
                                       f"{cfg.body_grace_s:g} s (MIN_BODY_BYTES_PER_S, BODY_GRACE_S)") from None
            if message["type"] == "http.disconnect":
                raise ClientGone()
            if message["type"] != "http.request":
                continue
            piece = message.get("body", b"")
            reader.received += len(piece)
            self.buffered += len(piece)
            if reader.received > cfg.max_body_bytes:
                raise BodyTooLarge()
            if self.buffered > cfg.max_body_buffer_bytes:
                raise BodyRefused(503, f"request bodies being read take more than {cfg.max_body_buffer_bytes} "
                                       "bytes (MAX_BODY_BUFFER_BYTES); retry later",
                                  {"retry-after": str(cfg.retry_after_s)})
            if piece:
                reader.body.append(piece)
            if not message.get("more_body", False):
                return b"".join(reader.body)


def replay(body: bytes, receive):
    """An ASGI `receive` handing the app `body` whole, then the real `receive` (for the disconnect)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
