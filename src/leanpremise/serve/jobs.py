"""Batching queued jobs: taking a batch off a queue, and handing its outcome back to the requests it served."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from contextvars import ContextVar

CLIENT: ContextVar[str] = ContextVar("leanpremise_client", default="")
"""The key of the client whose request is running (serve/http/clients.py), set by the request guard; the
queues served round robin across clients (the urgent embedding lane, the search worker) read it."""


def queue_by_client(queues: OrderedDict, job) -> None:
    """Queue `job` under the running request's client (`CLIENT`), for `take_round_robin`."""
    queues.setdefault(CLIENT.get(), deque()).append(job)


def take_round_robin(queues: OrderedDict, limit: int, size: Callable) -> list:
    """The oldest job of each client in turn (clients in `queues` order; one served goes to the back), while
    their sizes together stay within `limit` (at least one job); jobs whose future is done (their request
    went away) are dropped. So one client's many jobs wait behind each other, not in front of another's."""
    jobs, n = [], 0
    while queues:
        client, queue = next(iter(queues.items()))
        while queue and queue[0].future.done():
            queue.popleft()
        if not queue:
            queues.pop(client)
            continue
        if jobs and n + size(queue[0]) > limit:
            break
        jobs.append(queue.popleft())
        n += size(jobs[-1])
        queues.pop(client)
        if queue:
            queues[client] = queue
    return jobs


def fail_jobs(futures: Sequence[asyncio.Future], error: BaseException) -> None:
    """A failed batch fails each of its requests that is still waiting (not the worker that ran it)."""
    for fut in futures:
        if not fut.done():
            fut.set_exception(error)


def hand_out(futures: Sequence[asyncio.Future], sizes: Sequence[int], rows) -> None:
    """Give each waiting request its own consecutive slice of the batch's `rows`."""
    pos = 0
    for fut, size in zip(futures, sizes):
        if not fut.done():
            fut.set_result(rows[pos : pos + size])
        pos += size
