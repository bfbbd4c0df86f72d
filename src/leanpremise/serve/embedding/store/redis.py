"""The persistent store shared by replicas: a Redis database, its values sealed under the operator's secret.

Eviction is Redis's business: each put sets a TTL (`ttl_s`, default 30 days; None for no TTL, then run
Redis with `maxmemory` and `maxmemory-policy allkeys-lru`). After a failure the store stays quiet for
`retry_after_s` (every call is a miss without a network round trip), so a Redis that is down or slow
costs a request nothing but its own embedding time.
"""

from __future__ import annotations

import time

from leanpremise.serve.embedding.store.interface import EmbeddingStore
from leanpremise.serve.embedding.store.record import seal, unseal

REDIS_PREFIX = b"leanpremise:emb:"
DEFAULT_TTL_S = 30 * 24 * 3600


class RedisEmbeddingStore(EmbeddingStore):
    """A Redis database, `redis://HOST:PORT/N` (`rediss://`, `unix://` too); failures degrade to misses."""

    def __init__(self, url: str, ttl_s: int | None = DEFAULT_TTL_S, timeout_s: float = 0.25,
                 retry_after_s: float = 5.0, warn_every_s: float = 60.0, hmac_key: bytes | None = None):
        """`hmac_key`: the secret values are sealed and checked under (None: unsealed, for a Redis only this
        server can reach; the server's settings require one unless explicitly waived)."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        super().__init__(url, warn_every_s)
        self.url, self.ttl_s, self.retry_after_s = url, ttl_s, retry_after_s
        # No client-side retries: a miss is cheaper than a request waiting on backoffs.
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                            retry=Retry(NoBackoff(), 0))
        self._down_until = 0.0
        self._hmac_key = hmac_key

    @property
    def where(self) -> str:
        return self.url

    def _open_value(self, key: bytes, value: bytes) -> bytes | None:
        return value if self._hmac_key is None else unseal(self._hmac_key, key, value)

    def _guard(self) -> None:
        if time.monotonic() < self._down_until:
            raise ConnectionError("unreachable a moment ago; not retried yet")

    def _failed(self) -> None:
        self._down_until = time.monotonic() + self.retry_after_s

    def _read(self, keys: list[bytes]) -> list[bytes | None]:
        self._guard()
        try:
            return self._client.mget([REDIS_PREFIX + k for k in keys])
        except Exception:
            self._failed()
            raise

    def _write(self, items: dict[bytes, bytes]) -> int:
        self._guard()
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, value in items.items():
                if self._hmac_key is not None:
                    value = seal(self._hmac_key, key, value)
                pipe.set(REDIS_PREFIX + key, value, ex=self.ttl_s)
            pipe.execute()
        except Exception:
            self._failed()
            raise
        return len(items)

    def close(self) -> None:
        self._client.close()
