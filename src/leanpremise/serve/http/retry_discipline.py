"""Clients that keep coming back after being refused: a client (by address) may be answered 503 or 429 at
most `MAX_REFUSALS_PER_CLIENT` times in any `WINDOW_S` seconds, on average; past that, its requests are
answered 429 with Retry-After before their bodies are read, until its rate of refusals falls (issue 22).

A refused request is cheap but not free: its body is parsed and its texts are looked up before the bulk
bound refuses it. A client that retries at once, ignoring Retry-After, makes the server do that work again
and again, and a handful of such clients take the event loop from everyone else. The count is a token
bucket per client: `MAX_REFUSALS_PER_CLIENT` tokens, refilled at that many per `WINDOW_S`; every refusal
(a held request's 429 too) takes one, and a client without a token is held. So a client that waits as
told is never held, nor one whose burst of parallel requests (a proxy, several tactic calls at once) was
refused at once; a client that keeps retrying is held as long as it keeps on. Clients are told apart by
the address admission uses (the peer, or the X-Forwarded-For of a trusted proxy); the table of them is
bounded, the least recently refused forgotten first.
"""

from __future__ import annotations

import time

from cachetools import LRUCache

WINDOW_S = 10.0
"""Seconds over which a client's refusals are counted (the bucket refills its capacity in this time)."""

MAX_CLIENTS = 65_536
"""Clients remembered at once (each a few dozen bytes)."""


class RetryDiscipline:
    """Per client: the tokens left in its bucket of refusals, and when it was last counted."""

    def __init__(self, max_clients: int = MAX_CLIENTS, clock=time.monotonic):
        self._clients: LRUCache = LRUCache(max_clients)
        self._clock = clock

    def _tokens(self, client: str, capacity: int) -> float:
        tokens, at = self._clients.get(client, (float(capacity), self._clock()))
        return min(float(capacity), tokens + (self._clock() - at) * capacity / WINDOW_S)

    def refused(self, client: str, capacity: int) -> None:
        """The client was just answered 503 or 429."""
        if capacity > 0:
            self._clients[client] = (max(self._tokens(client, capacity) - 1.0, 0.0), self._clock())

    def admit(self, client: str, capacity: int) -> bool:
        """Whether to read this client's request now: False while it has no refusal left (0: always True)."""
        if capacity <= 0 or client not in self._clients:
            return True
        return self._tokens(client, capacity) >= 1.0
