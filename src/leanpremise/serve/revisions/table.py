"""What a request reads: one revision served (its bundle, index, ranking, workers and its model's embedding
service), the embedding service that revisions of one model share, and the table of revisions served.
Their lifecycle (load, activate, swap, retire, close) is serve/revisions/lifecycle.py's `Server`.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from leanpremise.serve.embedding.service import EmbeddingService
from leanpremise.serve.search.index import PremiseIndex
from leanpremise.serve.search.ranking import Ranking, Workers


@dataclass
class LoadedRevision:
    """A bundle loaded and not yet served (serve/revisions/lifecycle.py `Server.load_one`, then `activate`)."""

    spec: object
    """Its BundleSpec (serve/revisions/plan.py): path, manifest, tag."""
    bundle: object
    """The LoadedBundle (serve/revisions/loader.py); its rows have gone to the model's pool."""
    index: PremiseIndex
    ranking: Ranking
    shared: SharedEmbedder
    seconds: float
    """How long loading took."""


class Revision:
    """One bundle served at /<tag>/ (and at / when it is the default): what the Lean routes read. Its
    embedding service is shared with every revision of the same model; its rows live in that model's pool.
    Built from its parts: `config` gives the per-request limits (serve/settings.py's ServeConfig)."""

    def __init__(self, loaded: LoadedRevision, workers: Workers, config):
        self.spec, self.tag = loaded.spec, loaded.spec.tag
        self.config = config
        self.bundle, self.index, self.shared = loaded.bundle, loaded.index, loaded.shared
        self.ranking: Ranking = loaded.ranking
        self.workers = workers
        self.service: EmbeddingService = loaded.shared.service
        self.max_text_chars = loaded.shared.max_text_chars
        self.indexed_premises_json = orjson.dumps(self.index.indexed_premises)
        self.indexed_modules_json = orjson.dumps(self.index.indexed_modules)
        self.load_seconds = loaded.seconds
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
                "rows_shared": int(getattr(self.index.rows, "reused", 0))}


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
