"""What a request reads: one revision served (its bundle, index, search worker and its model's embedding
service), the embedding service that revisions of one model share, and the table of revisions served.
Their lifecycle (load, activate, swap, retire, close) is serve/revisions/lifecycle.py's `Server`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from leanpremise.serve.embedding.service import EmbeddingService
from leanpremise.serve.search.batcher import SearchBatcher

if TYPE_CHECKING:
    from leanpremise.serve.revisions.lifecycle import Server


class Revision:
    """One bundle served at /<tag>/ (and at / when it is the default): what the Lean routes read. Its
    embedding service is shared with every revision of the same model; its rows live in that model's pool."""

    def __init__(self, spec, server: Server, bundle, index, shared: SharedEmbedder, load_seconds: float):
        self.spec, self.tag, self.server = spec, spec.tag, server
        self.config = server.config
        self.candidate_mask_pool = server.candidate_mask_pool
        self.lexical_pool = server.lexical_pool
        self.fused = bundle.fused
        self.reranked = bundle.reranked
        self.bundle, self.index, self.shared = bundle, index, shared
        self.service: EmbeddingService = shared.service
        self.max_text_chars = shared.max_text_chars
        self.indexed_premises_json = orjson.dumps(index.indexed_premises)
        self.indexed_modules_json = orjson.dumps(index.indexed_modules)
        self.load_seconds = load_seconds
        self.searcher = SearchBatcher(index, server.search_executor, server.config.max_queries_per_search,
                                      server.metrics)
        self.active = 0
        """Requests using this revision now; a retired revision is closed when it reaches 0."""
        self.retired = False
        self.closed = False

    def describe(self, default: bool) -> dict:
        m = self.bundle.manifest
        return {"tag": self.tag, "revision": m.data_revision or m.revision, "premises": self.index.size,
                "modules": len(self.index.indexed_modules), "model": m.model_name,
                "model_type": m.model_type,
                "model_identity": self.shared.key,
                "default": default, "state": "retiring" if self.retired else "loaded",
                "rows_shared": int(getattr(self.index.searcher, "reused", 0))}


class SharedEmbedder:
    """The embedding service (workers and cache) of one model identity, and the revisions using it."""

    def __init__(self, key: str, embedders, background, max_text_chars: int):
        self.key, self.embedders, self.background = key, embedders, background
        self.max_text_chars = max_text_chars
        self.service: EmbeddingService | None = None
        self.users = 0


class RevisionTable:
    """The revisions served, swapped whole on reload (one attribute assignment, so a request sees the old
    table or the new one, never a mixture)."""

    def __init__(self, revisions: dict[str, Revision], default: str | None):
        self.revisions, self.default = revisions, default

    @property
    def default_revision(self) -> Revision | None:
        return self.revisions.get(self.default)

    def pick(self, path: str) -> tuple[Revision | None, str]:
        """(the revision a request path addresses, the path without its tag)."""
        first, _, rest = path.lstrip("/").partition("/")
        rev = self.revisions.get(first)
        if rev is not None:
            return rev, "/" + rest
        return self.default_revision, path
