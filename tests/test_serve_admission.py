"""Fair admission against a real `leanpremise serve` on loopback: slow bodies hold places in the body
readers' pool, not work slots; the pool cuts its slowest reader when full; a client is capped by its
address (the peer's, or a listed proxy's X-Forwarded-For); /admin/reload needs ADMIN_TOKEN; /revisions
and /health name no paths. Slow clients bind other loopback addresses (127.0.0.x) to be other clients."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from liveness import LIVENESS_S
from serve_helpers import ThreadServer, metric, serve_process, service_config

GOAL = {"state": "a b : ℕ\n⊢ a + b = b + a", "k": 8}
TOKEN = "s3cret-admin-token"
HOLD = {"BODY_GRACE_S": "600", "BODY_TIMEOUT_S": "600", "HEADER_TIMEOUT_S": "600"}
"""Time limits long enough that a slow reader stays in the pool for as long as a test needs it."""


@pytest.fixture(scope="module")
def proxied(serve_bundle, cache_dir, tmp_path_factory):
    """Behind a listed proxy (127.0.0.1), two bodies per client, eight readers, reload with a token."""
    log = tmp_path_factory.mktemp("admission-proxied") / "server.log"
    env = {**HOLD, "EMBED_BACKEND": "torch", "LEANPREMISE_CACHE_DIR": str(cache_dir),
           "FORWARDED_ALLOW_IPS": "127.0.0.1", "MAX_BODY_READERS_PER_CLIENT": "2", "MAX_BODY_READERS": "8",
           "ADMIN_RELOAD": "true", "ADMIN_TOKEN": TOKEN}
    with serve_process(serve_bundle, env, log) as (url, _):
        yield url, log


@pytest.fixture(scope="module")
def direct(serve_bundle, cache_dir, tmp_path_factory):
    """No proxy listed, two bodies per client, reload on but no token."""
    log = tmp_path_factory.mktemp("admission-direct") / "server.log"
    env = {**HOLD, "EMBED_BACKEND": "torch", "LEANPREMISE_CACHE_DIR": str(cache_dir),
           "MAX_BODY_READERS_PER_CLIENT": "2", "ADMIN_RELOAD": "true"}
    with serve_process(serve_bundle, env, log) as (url, _):
        yield url, log


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def slow_body(url: str, source: str = "127.0.0.1", headers: dict | None = None) -> socket.socket:
    """A connection from `source` that sends a /retrieve head announcing 60 bytes, and one of them."""
    sock = socket.socket()
    sock.settimeout(LIVENESS_S)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port_of(url)))
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    sock.sendall(f"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n{extra}\r\n{{".encode())
    return sock


def status_of(sock: socket.socket) -> int | None:
    """The status line's code the server sent on `sock`, None when it closed without one."""
    data = b""
    while b"\r\n" not in data:
        piece = sock.recv(4096)
        if not piece:
            return None
        data += piece
    return int(data.split(b" ", 2)[1])


def wait_readers(url: str, n: int) -> None:
    """Until the server reports `n` bodies being read (its admission pool, in /metrics)."""
    deadline = time.monotonic() + LIVENESS_S
    while metric(url, "leanpremise_body_readers") != n:
        assert time.monotonic() < deadline, metric(url, "leanpremise_body_readers")
        time.sleep(0.05)


def close_all(url: str, socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()
    wait_readers(url, 0)


def test_seventy_slow_bodies_leave_an_honest_request_its_answer(direct):
    url, _ = direct
    socks = [slow_body(url, f"127.0.0.{2 + i // 2}") for i in range(70)]  # two per address: within the cap
    try:
        wait_readers(url, 70)  # more than MAX_CONCURRENT_REQUESTS (64), all still reading
        r = httpx.post(f"{url}/retrieve", json=GOAL, timeout=LIVENESS_S)
        assert r.status_code == 200, r.text
        assert metric(url, "leanpremise_body_readers") == 70  # nobody was cut for it
    finally:
        close_all(url, socks)


def test_a_full_pool_cuts_its_slowest_reader_not_the_newcomer(proxied):
    url, _ = proxied
    socks = [slow_body(url, f"127.0.1.{1 + i}") for i in range(8)]  # MAX_BODY_READERS
    try:
        wait_readers(url, 8)
        r = httpx.post(f"{url}/retrieve", json=GOAL, timeout=LIVENESS_S)
        assert r.status_code == 200, r.text
        for s in socks:
            s.settimeout(0.5)
        cut = []
        for s in socks:
            try:
                cut.append(status_of(s))
            except TimeoutError:
                pass  # still being read: not cut
        assert cut == [408], cut
    finally:
        close_all(url, socks)


def test_a_client_gets_429_past_its_cap_while_others_are_served(direct):
    url, _ = direct
    socks = [slow_body(url, "127.0.2.1") for _ in range(2)]
    try:
        wait_readers(url, 2)
        third = slow_body(url, "127.0.2.1")
        socks.append(third)
        assert status_of(third) == 429
        assert httpx.post(f"{url}/retrieve", json=GOAL, timeout=LIVENESS_S).status_code == 200  # 127.0.0.1
    finally:
        close_all(url, socks)


def test_forwarded_for_counts_as_the_client_only_from_a_listed_proxy(proxied, direct):
    forwarded = {"X-Forwarded-For": "10.0.0.1"}
    url, _ = proxied  # 127.0.0.1 is a listed proxy: the client is 10.0.0.1
    socks = [slow_body(url, headers=forwarded) for _ in range(2)]
    try:
        wait_readers(url, 2)
        third = slow_body(url, headers=forwarded)
        socks.append(third)
        assert status_of(third) == 429
        other = httpx.post(f"{url}/retrieve", json=GOAL, headers={"X-Forwarded-For": "10.0.0.2"},
                           timeout=LIVENESS_S)
        assert other.status_code == 200, other.text
    finally:
        close_all(url, socks)
    url, _ = direct  # no proxy listed: the header is ignored, every request here is 127.0.0.1's
    socks = [slow_body(url, headers=forwarded) for _ in range(2)]
    try:
        wait_readers(url, 2)
        r = httpx.post(f"{url}/retrieve", json=GOAL, headers={"X-Forwarded-For": "10.0.0.2"}, timeout=LIVENESS_S)
        assert r.status_code == 429, r.text
    finally:
        close_all(url, socks)


def test_admin_reload_needs_the_token_from_any_address(proxied, direct):
    url, _ = proxied
    tag = httpx.get(f"{url}/revisions", timeout=LIVENESS_S).json()[0]["tag"]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
        assert httpx.post(f"{url}/admin/reload", headers=headers, timeout=LIVENESS_S).status_code == 404, headers
    right = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(f"{url}/admin/reload", headers=right, timeout=LIVENESS_S)
    assert r.status_code == 200, r.text
    assert [x["tag"] for x in r.json()] == [tag]
    assert httpx.post(f"{url}/{tag}/admin/reload", headers=right, timeout=LIVENESS_S).status_code == 200
    assert httpx.post(f"{url}/{tag}/admin/reload", timeout=LIVENESS_S).status_code == 404
    url, log = direct  # ADMIN_RELOAD without ADMIN_TOKEN: off, and said so once at start
    assert httpx.post(f"{url}/admin/reload", headers=right, timeout=LIVENESS_S).status_code == 404
    assert log.read_text().count("ADMIN_TOKEN is not set") == 1


def test_revisions_and_health_name_no_paths(proxied, serve_bundle):
    url, _ = proxied
    for path in ("/revisions", "/health"):
        text = httpx.get(f"{url}{path}", timeout=LIVENESS_S).text
        assert str(serve_bundle) not in text and str(serve_bundle.parent) not in text, text
    assert all("bundle" not in rev for rev in httpx.get(f"{url}/revisions", timeout=LIVENESS_S).json())


def test_a_failed_load_is_told_without_its_error_text(tmp_path, cache_dir):
    """The error (naming files) goes to the log; /health and the Lean routes say only that loading failed."""
    from leanpremise.serve.http.app import create_app

    missing = tmp_path / "secret-place" / "bundle"
    missing.mkdir(parents=True)
    app = create_app(service_config(bundle=missing, data_dir=cache_dir, embedding_cache_on=False))
    srv = ThreadServer(app).start(wait_ready=False)
    try:
        server = app.state.server
        deadline = time.monotonic() + LIVENESS_S
        while not server.error:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert "secret-place" in server.error  # the log line names it...
        for r in (httpx.get(f"{srv.url}/health", timeout=LIVENESS_S),
                  httpx.post(f"{srv.url}/retrieve", json=GOAL, timeout=LIVENESS_S),
                  httpx.get(f"{srv.url}/revisions", timeout=LIVENESS_S)):
            assert "secret-place" not in r.text, r.text  # ...the answers do not
        assert httpx.get(f"{srv.url}/health", timeout=LIVENESS_S).json()["status"] == "failed"
    finally:
        srv.stop()
