"""Embedding a request's texts: the service (lanes, workers, bound), its in-memory cache, the persistent
store, and which backends a server runs."""
