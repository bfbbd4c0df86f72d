"""What the HTTP layer takes from Starlette and uvicorn: Starlette's disconnect error counted as the client's,
and uvicorn's h11 protocol (no public API sets a header timeout) still calling the hooks the timed
protocol overrides, with the attributes it reads."""

from __future__ import annotations

import asyncio

from serve_helpers import service_config


def test_a_starlette_client_disconnect_is_counted_as_client_closed_not_500():
    from starlette.requests import ClientDisconnect

    from leanpremise.serve.http.guard import RequestGuard
    from leanpremise.serve.prometheus import Metrics

    async def app(scope, receive, send):
        raise ClientDisconnect()

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        raise AssertionError(f"nothing is sent to a client that went away: {message}")

    server = type("Server", (), {"config": service_config(), "metrics": Metrics()})()
    guard = RequestGuard(app, server, routes=frozenset({"/retrieve"}))
    asyncio.run(guard({"type": "http", "path": "/retrieve", "headers": []}, receive, send))
    count = server.metrics.registry.get_sample_value
    assert count("leanpremise_requests_total", {"route": "/retrieve", "status": "client_closed"}) == 1
    assert count("leanpremise_requests_total", {"route": "/retrieve", "status": "500"}) is None
