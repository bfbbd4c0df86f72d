"""Request routing by revision: the outermost ASGI middleware picks the revision `/<tag>/...` addresses."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from leanpremise.serve.revisions.lifecycle import Server


class RevisionRouter:
    """ASGI middleware (outermost): picks the revision a request addresses (`/<tag>/...`, else the
    default), strips the tag from the path, and holds the revision until the response is sent, so a swap
    never takes a revision from under a request."""

    def __init__(self, app, server: Server):
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rev, path = self.server.table.pick(scope.get("path", ""))
        if path != scope.get("path"):
            scope = {**scope, "path": path, "raw_path": path.encode()}
        scope[REVISION_KEY] = rev
        if rev is None:
            return await self.app(scope, receive, send)
        rev.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.server.release(rev)


REVISION_KEY = "leanpremise.revision"
"""The scope key of the revision a request addresses."""
