"""Handing a batched computation's outcome back to the requests whose jobs it served."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence


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
