"""Errors the server's layers raise and its HTTP layer turns into status codes (serve/http/app.py): here, so
the search code raises them without importing the HTTP layer."""

from __future__ import annotations


class LimitExceeded(ValueError):
    """A request within every per-field limit that still asks too much in total (states x k, lexical work):
    a 422 naming `field`."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
