"""Prometheus metrics of one server instance (own registry, so several apps can share a process)."""

from __future__ import annotations


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.requests = Counter("leanpremise_requests_total", "HTTP requests", ["route", "status"], registry=r)
        self.latency = Histogram("leanpremise_request_seconds", "HTTP request latency", ["route"], registry=r,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.cache_hits = Counter("leanpremise_new_premise_cache_hits_total", "new premises found in the cache",
                                  registry=r)
        self.cache_misses = Counter("leanpremise_new_premise_cache_misses_total", "new premises embedded",
                                    registry=r)
        self.state_cache_hits = Counter("leanpremise_state_cache_hits_total", "states found in the cache",
                                        registry=r)
        self.state_cache_misses = Counter("leanpremise_state_cache_misses_total", "states embedded", registry=r)
        self.cache_entries = Gauge("leanpremise_new_premise_cache_entries",
                                   "cached embeddings (new premises and states)",
                                   registry=r)
        self.cache_bytes = Gauge("leanpremise_embedding_cache_bytes", "bytes the cached embeddings take (rows and "
                                 "keys, estimated)", registry=r)
        self.store_hits = Counter("leanpremise_embedding_store_hits_total", "texts missing from the in-memory "
                                  "cache found in the persistent embedding cache", registry=r)
        self.store_misses = Counter("leanpremise_embedding_store_misses_total", "texts missing from the "
                                    "in-memory cache and the persistent one", registry=r)
        self.store_written = Counter("leanpremise_embedding_store_written_total", "embeddings written to the "
                                     "persistent embedding cache", registry=r)
        self.cache_rejected = Counter("leanpremise_embedding_cache_rejected_total", "cached vectors turned "
                                      "down and embedded again: cache (memory, lmdb, redis), reason (header, "
                                      "hmac, dim, nonfinite, norm)", ["cache", "reason"], registry=r)
        self.embedded = Counter("leanpremise_embedded_texts_total", "texts run through the embedder", registry=r)
        self.batch_size = Histogram("leanpremise_embed_batch_texts", "texts per embedder call", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.search_batch = Histogram("leanpremise_search_batch_requests",
                                      "requests taken by one call of the search worker", registry=r,
                                      buckets=(1, 2, 3, 4, 6, 8, 12, 16))
        self.inflight = Gauge("leanpremise_embed_inflight_texts", "texts queued or being embedded", registry=r)
        self.overloaded = Counter("leanpremise_overloaded_total", "requests refused with 503 (overload)",
                                  registry=r)
        self.body_readers = Gauge("leanpremise_body_readers", "connections reading a request body (the "
                                  "admission pool, apart from the work slots)", registry=r)
        self.ready = Gauge("leanpremise_ready", "1 once the index and model are loaded", registry=r)
        self.load_seconds = Gauge("leanpremise_load_seconds", "seconds spent loading bundle and model", registry=r)
        self.indexed = Gauge("leanpremise_indexed_premises", "premises in the index", registry=r)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
