"""Batching queued jobs: taking a batch off a queue, and handing its outcome back to the requests it served."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence


def take_jobs(lane: deque, limit: int, size: Callable) -> list:
    """The oldest job, then the next ones in arrival order while their sizes together stay within `limit`."""
    jobs = [lane.popleft()]
    n = size(jobs[0])
    while lane and n + size(lane[0]) <= limit:
        jobs.append(lane.popleft())
        n += size(jobs[-1])
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
