"""Clients that keep coming back after being refused (issue 22): one client's bucket of refusals (a fake
clock), and the request guard in front of an app that answers 503 as an overloaded server does, driven as
ASGI."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from liveness import LIVENESS_S
from serve_helpers import service_config


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drive(guard, client: str, body: bytes) -> dict:
    """POST `body` to /retrieve through `guard` as ASGI from `client`; the response-start message."""
    scope = {"type": "http", "method": "POST", "path": "/retrieve", "client": (client, 5000),
             "headers": [(b"content-length", str(len(body)).encode())]}
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    return next(m for m in sent if m["type"] == "http.response.start")


def test_a_client_is_held_only_past_its_refusals_per_window_and_recovers_when_it_slows_down():
    from leanpremise.serve.http.retry_discipline import WINDOW_S, RetryDiscipline

    clock = Clock()
    d = RetryDiscipline(clock=clock)
    assert d.admit("a", 4)  # never refused
    for _ in range(4):  # a burst of four refusals at once (parallel requests): still read
        assert d.admit("a", 4)
        d.refused("a", 4)
    assert not d.admit("a", 4)  # no refusal left: held
    assert d.admit("b", 4)  # another client is not
    clock.now += WINDOW_S / 4 * 0.9
    assert not d.admit("a", 4)  # less than one refusal refilled
    clock.now += WINDOW_S / 4 * 0.2
    assert d.admit("a", 4)  # one back
    d.refused("a", 4)
    assert not d.admit("a", 4)  # and spent again
    clock.now += 10 * WINDOW_S  # a long wait refills the bucket, to its capacity only
    for _ in range(4):
        d.refused("a", 4)
    assert not d.admit("a", 4)
    for _ in range(100):
        d.refused("c", 0)
    assert d.admit("c", 0)  # 0: off


def test_the_guard_holds_a_client_that_keeps_retrying_unread_and_reads_it_again_once_it_slows_down():
    from leanpremise.serve.http.guard import RequestGuard
    from leanpremise.serve.http.retry_discipline import WINDOW_S
    from leanpremise.serve.prometheus import Metrics

    calls = []

    async def overloaded_app(scope, receive, send):  # what the app answers when the bulk bound refuses
        calls.append(scope["client"][0])
        await send({"type": "http.response.start", "status": 503, "headers": [(b"retry-after", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    cfg = service_config(max_refusals_per_client=3, retry_after_s=2)
    guard = RequestGuard(overloaded_app, SimpleNamespace(config=cfg, metrics=Metrics()), frozenset({"/retrieve"}))
    clock = Clock()
    guard.retries._clock = clock

    def post(client: str) -> tuple[int, dict]:
        start = drive(guard, client, b'{"state": "x", "k": 8}')
        return start["status"], dict(start["headers"])

    assert [post("10.0.0.1")[0] for _ in range(3)] == [503] * 3  # refused by the app three times
    status, headers = post("10.0.0.1")  # the fourth at once is held
    assert status == 429 and headers[b"retry-after"] == b"2" and headers[b"connection"] == b"close"
    assert post("10.0.0.1")[0] == 429
    assert calls == ["10.0.0.1"] * 3  # held requests never reach the app (their bodies are not read)
    assert post("10.0.0.2")[0] == 503  # another client is answered as usual
    clock.now += WINDOW_S  # it stops for a while
    assert post("10.0.0.1")[0] == 503 and calls[-1] == "10.0.0.1"


def guard_answering(status: int, **settings):
    """A guard in front of an app that answers every request `status`; `post(client)` -> status."""
    from leanpremise.serve.http.guard import RequestGuard
    from leanpremise.serve.prometheus import Metrics

    calls = []

    async def app(scope, receive, send):
        calls.append(scope["client"][0])
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guard = RequestGuard(app, SimpleNamespace(config=service_config(**settings), metrics=Metrics()),
                         frozenset({"/retrieve"}))

    def post(client: str) -> int:
        return drive(guard, client, b'{"state": null}')["status"]

    return post, calls


def test_an_invalid_body_counts_as_a_refusal():
    post, calls = guard_answering(422, max_refusals_per_client=3)
    assert [post("10.0.0.1") for _ in range(5)] == [422, 422, 422, 429, 429]
    assert len(calls) == 3  # held ones are not parsed again
    post_ok, _ = guard_answering(200, max_refusals_per_client=3)
    assert [post_ok("10.0.0.1") for _ in range(5)] == [200] * 5


def test_an_ipv6_64_and_ipv4_mapped_addresses_share_one_client_key():
    from leanpremise.serve.http.clients import address_key

    assert address_key("2001:db8:1:2::1", 64) == address_key("2001:db8:1:2:ffff:0:0:9", 64) == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1", 64) != address_key("2001:db8:1:2::1", 64)
    assert address_key("2001:db8:1:2::1", 128) != address_key("2001:db8:1:2::2", 128)
    assert address_key("::ffff:192.0.2.7", 64) == address_key("192.0.2.7", 64) == "192.0.2.7"
    assert address_key("fe80::1%eth0", 64) == "fe80::/64"
    assert address_key("testclient", 64) == "testclient"
    post, _ = guard_answering(503, max_refusals_per_client=2)  # the bound the guard keeps, by that key
    assert [post("2001:db8:1:2::1"), post("2001:db8:1:2::2")] == [503, 503]
    assert post("2001:db8:1:2::3") == 429  # a third address of the same /64: the same client, held
    assert post("2001:db8:1:9::1") == 503  # another /64 is another client
    post, _ = guard_answering(503, max_refusals_per_client=1)
    assert [post("::ffff:10.0.0.5"), post("10.0.0.5")] == [503, 429]


def test_a_client_holds_at_most_its_share_of_work_slots_and_a_client_gone_stops_its_request():
    from leanpremise.serve.http.guard import RequestGuard
    from leanpremise.serve.prometheus import Metrics

    async def scenario():
        held, cancelled = asyncio.Event(), []

        async def app(scope, receive, send):
            try:
                await held.wait()
            except asyncio.CancelledError:
                cancelled.append(scope["client"][0])
                raise
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"[]"})

        metrics = Metrics()
        guard = RequestGuard(app, SimpleNamespace(config=service_config(max_work_per_client=2), metrics=metrics),
                             frozenset({"/retrieve"}))

        async def post(client: str, gone: asyncio.Event | None = None) -> int:
            body, sent, read = b"{}", [], []

            async def receive():
                if not read:
                    read.append(1)
                    return {"type": "http.request", "body": body, "more_body": False}
                await (gone or asyncio.Event()).wait()
                return {"type": "http.disconnect"}

            async def send(message):
                sent.append(message)

            scope = {"type": "http", "method": "POST", "path": "/retrieve", "client": (client, 5000),
                     "headers": [(b"content-length", b"2")]}
            await guard(scope, receive, send)
            starts = [m["status"] for m in sent if m["type"] == "http.response.start"]
            return starts[0] if starts else 0

        hangs_up = asyncio.Event()
        first = [asyncio.create_task(post("10.0.0.1", hangs_up)), asyncio.create_task(post("10.0.0.1"))]
        while guard.work.get("10.0.0.1", 0) < 2:
            await asyncio.sleep(0)
        assert await post("10.0.0.1") == 429  # a third at once from the same client
        other = asyncio.create_task(post("10.0.0.2"))  # another client is not held by it
        while guard.work.get("10.0.0.2", 0) < 1:
            await asyncio.sleep(0)
        hangs_up.set()  # the first client's first request hangs up: it is stopped, its slot freed
        assert await asyncio.wait_for(first[0], LIVENESS_S) == 0 and cancelled == ["10.0.0.1"]
        assert guard.work == {"10.0.0.1": 1, "10.0.0.2": 1}
        held.set()
        assert await asyncio.wait_for(asyncio.gather(first[1], other), LIVENESS_S) == [200, 200]
        assert guard.work == {} and guard.active == 0
        return metrics

    metrics = asyncio.run(scenario())
    assert metrics.requests.labels("/retrieve", "client_closed")._value.get() == 1


def test_metrics_scrapes_at_once_are_bounded():
    from leanpremise.serve.http.guard import MAX_SCRAPES, RequestGuard
    from leanpremise.serve.prometheus import Metrics

    async def scenario():
        held = asyncio.Event()

        async def app(scope, receive, send):
            await held.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        guard = RequestGuard(app, SimpleNamespace(config=service_config(), metrics=Metrics()), frozenset({"/metrics"}))

        async def scrape() -> int:
            sent = []

            async def receive():
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message):
                sent.append(message)

            await guard({"type": "http", "method": "GET", "path": "/metrics", "client": ("10.0.0.9", 1),
                         "headers": []}, receive, send)
            return next(m["status"] for m in sent if m["type"] == "http.response.start")

        running = [asyncio.create_task(scrape()) for _ in range(MAX_SCRAPES)]
        while guard.scrapes < MAX_SCRAPES:
            await asyncio.sleep(0)
        assert await scrape() == 503
        held.set()
        assert await asyncio.gather(*running) == [200] * MAX_SCRAPES
        assert await scrape() == 200

    asyncio.run(scenario())
