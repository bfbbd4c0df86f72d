"""What every persistent store offers the embedding service, and the read and write path they share.

A backend stores raw record values by record key (`_read`, `_write`); this class turns texts into keys,
rows into values and back, checks every row read (serve/embedding/vector_check.py: finite, the model's
dimension, unit norm) and turns any failure into misses or dropped puts, so no store ever raises on the
request path. A value turned down is a miss, counted by `on_rejected` (the server counts it in /metrics),
and re-embedded.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from leanpremise.serve.embedding.store.record import decode_vector, encode_vector, record_key
from leanpremise.serve.embedding.vector_check import row_problem

logger = logging.getLogger(__name__)

Rejected = Callable[[str, int], None]
"""Told (reason, count) of the values a read turned down: "header" (foreign format or dim), "hmac",
"nonfinite", "norm" (see vector_check.py)."""


class RateLimitedWarning:
    """One log warning per `every_s` seconds per kind, with how many were suppressed in between; each
    names the store (`where`), so a store that keeps failing does not flood the log."""

    def __init__(self, every_s: float, where: str):
        self.every_s, self.where = every_s, where
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, kind: str, message: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -float("inf")) < self.every_s:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        tail = f" ({suppressed} similar warnings suppressed)" if suppressed else ""
        logger.warning("embedding store %s: " + message + tail, self.where, *args)


class EmbeddingStore(abc.ABC):
    """A model's vectors read and written by text; a backend supplies `where`, `_read`, `_write`, `close`."""

    on_rejected: Rejected | None = None

    def __init__(self, where: str, warn_every_s: float):
        self._warn = RateLimitedWarning(warn_every_s, where)

    @property
    @abc.abstractmethod
    def where(self) -> str:
        """The store's location, for messages."""

    @abc.abstractmethod
    def _read(self, keys: list[bytes]) -> list[bytes | None]:
        """The raw values of those keys (None: absent); may raise, the caller answers misses."""

    @abc.abstractmethod
    def _write(self, items: dict[bytes, bytes]) -> int:
        """Store raw values by key; returns how many were written; may raise, the caller counts 0."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store (idempotent)."""

    def _open_value(self, key: bytes, value: bytes) -> bytes | None:
        """The record value inside a stored one, None when its seal is wrong (a backend that seals says)."""
        return value

    def get_many(self, model_key: str, texts: Sequence[str], dim: int | None = None) -> dict[str, np.ndarray]:
        """The stored vectors of those texts (misses are absent; rows are checked when `dim` is given, as
        the server always does); never raises."""
        if not texts:
            return {}
        keys = [record_key(model_key, t) for t in texts]
        try:
            values = self._read(keys)
        except Exception as e:  # noqa: BLE001 - the request path must not fail on a cache
            self._warn("get", "read failed, answering misses: %s", e)
            return {}
        hits: dict[str, np.ndarray] = {}
        rejected: dict[str, int] = {}
        for key, text, value in zip(keys, texts, values):
            if value is None:
                continue
            value = self._open_value(key, value)
            if value is None:
                rejected["hmac"] = rejected.get("hmac", 0) + 1
                continue
            vector = decode_vector(value, dim)
            problem = "header" if vector is None else row_problem(vector, dim) if dim is not None else None
            if problem is None:
                hits[text] = vector
            else:
                rejected[problem] = rejected.get(problem, 0) + 1
        if rejected:
            self._warn("foreign", "values treated as misses (%s)",
                       ", ".join(f"{n} {why}" for why, n in rejected.items()))
            if self.on_rejected is not None:
                for why, n in rejected.items():
                    self.on_rejected(why, n)
        return hits

    def put_many(self, model_key: str, texts: Sequence[str], vectors: np.ndarray) -> int:
        """Store one vector per text; returns how many were written (0 when the store failed); never raises
        on a store failure (a count mismatch is the caller's bug, a ValueError)."""
        vectors = np.asarray(vectors)
        if len(texts) != len(vectors):
            raise ValueError(f"put_many: {len(texts)} texts but {len(vectors)} vectors")
        if not texts:
            return 0
        items = {record_key(model_key, t): encode_vector(v) for t, v in zip(texts, vectors)}
        try:
            return self._write(items)
        except Exception as e:  # noqa: BLE001
            self._warn("put", "write failed, %d vectors not stored: %s", len(items), e)
            return 0
