"""Embedding a request's texts: the service (the request side: cache, store, shared texts), the lanes (queues,
workers, bound), the in-memory cache, the persistent store, and which backends a server runs."""
