"""A persistent embedding cache for the server: (model identity, text) -> float32 vector, on disk or in Redis.

The in-memory LRU of the embedding service is lost at every restart, so a file's first request after one
re-embeds all its new premises. This store survives restarts (LMDB, one directory per host, shared by every
server process there: `lmdb.py`) or is shared by replicas (Redis: `redis.py`). Both keep the same record
(`record.py`: the key, the bytes of a value, the HMAC seal Redis values carry) behind the same small
interface (`interface.py`: `get_many` and `put_many` of a model key and texts, `close`, `where`); the server
opens its location once, shares it among the models it serves and closes it when it stops.

Neither backend ever raises on the request path: a store that fails (a corrupt LMDB file, Redis down or
slow) answers misses and drops puts, with a warning at most once per `warn_every_s`; the server then embeds
as it would without a store.
"""

from __future__ import annotations

import logging
from pathlib import Path

from leanpremise.serve.embedding.store.interface import EmbeddingStore, Rejected
from leanpremise.serve.embedding.store.lmdb import LmdbEmbeddingStore
from leanpremise.serve.embedding.store.lmdb_file import lmdb_file_problem
from leanpremise.serve.embedding.store.record import HEADER, decode_vector, encode_vector, record_key
from leanpremise.serve.embedding.store.redis import DEFAULT_TTL_S, REDIS_PREFIX, RedisEmbeddingStore

__all__ = ["DEFAULT_TTL_S", "HEADER", "REDIS_PREFIX", "EmbeddingStore", "LmdbEmbeddingStore",
           "RedisEmbeddingStore", "Rejected", "decode_vector", "encode_vector", "lmdb_file_problem",
           "open_embedding_store", "open_server_store", "record_key", "store_model_key"]

logger = logging.getLogger(__name__)


def open_embedding_store(location: str | Path, max_bytes: int = 2 << 30, ttl_s: int | None = DEFAULT_TTL_S,
                         hmac_key: bytes | None = None) -> EmbeddingStore:
    """A Redis store for a `redis://`, `rediss://` or `unix://` URL (its values tagged under `hmac_key`),
    else the LMDB store in that directory (opened anew: open an LMDB directory once per process)."""
    text = str(location)
    if text.startswith(("redis://", "rediss://", "unix://")):
        return RedisEmbeddingStore(text, ttl_s=ttl_s, hmac_key=hmac_key)
    return LmdbEmbeddingStore(Path(location).expanduser().resolve(), max_bytes=max_bytes)


def store_model_key(identity: str, embedder) -> str:
    """The model part of a record's key: the model's content identity and the backend that embeds with it
    (the int8 ONNX graph's vectors are not the float model's, so they must not answer for each other)."""
    return f"{identity}|backend:{getattr(embedder, 'name', type(embedder).__name__)}"


def open_server_store(config, bundle, embedder, opened: dict[str, EmbeddingStore]
                      ) -> tuple[EmbeddingStore, str] | None:
    """(the persistent cache the server's settings name, the key of the bundle's model as `embedder` runs
    it there); None when it is off or cannot be opened (the server then embeds as without it). `opened`:
    the stores the server has open, by location; a location is opened once and added there, for the server
    to share among its models and close when it stops. Blocking: the model's identity may have to be
    computed from its files."""
    location = config.embedding_cache_location()
    if location is None:
        return None
    try:
        from leanpremise.bundle.manifest import bundle_model_identity

        identity = bundle_model_identity(bundle.manifest, bundle.model_dir)
        store = opened.get(location)
        if store is None:
            store = opened[location] = open_embedding_store(location, max_bytes=config.embedding_cache_max_bytes,
                                                            ttl_s=config.embedding_cache_ttl_s or None,
                                                            hmac_key=config.embedding_cache_hmac_key())
    except Exception as e:  # noqa: BLE001 - a cache that cannot open must not stop the server
        logger.warning("persistent embedding cache %s: cannot open (%s); running without it", location, e)
        return None
    logger.info("persistent embedding cache: %s", store.where)
    return store, store_model_key(identity, embedder)
