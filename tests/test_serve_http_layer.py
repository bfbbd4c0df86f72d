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


class FakeTransport:
    """What uvicorn's protocol asks of an asyncio transport, recording what it writes and whether it closed."""

    def __init__(self, peer: str = "127.0.0.1"):
        self.written, self.closed, self.aborted, self.buffered = b"", False, False, 0
        self.peer = peer

    def get_extra_info(self, name, default=None):
        return {"peername": (self.peer, 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += data
        if getattr(self, "fills", None) is not None and data.endswith(b"ok"):  # the client reads nothing
            protocol, self.fills = self.fills, None
            self.buffered = 10_000
            protocol.pause_writing()  # as asyncio's transport does once its buffer passes the mark

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _timed_protocol():
    """A TimedH11Protocol over uvicorn's own Config and ServerState, on the running loop."""
    import uvicorn
    from uvicorn.server import ServerState

    from leanpremise.serve.http.connection import timed_h11

    config = uvicorn.Config(_ok, log_level="warning", timeout_keep_alive=30)
    protocol = timed_h11(5.0)(config, ServerState(), {}, _loop=asyncio.get_running_loop())
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


def test_uvicorn_h11_still_calls_the_hooks_the_header_timeout_overrides():
    """Drives uvicorn's real H11Protocol through one request with a fake transport: connection_made arms
    the header timer, handle_events (called by data_received) disarms it once a request's headers are in
    `cycle`, on_response_complete re-arms it for the next request, connection_lost cancels it; the timer
    closes `transport` and logs through `logger`. Fails when uvicorn renames or stops calling any of them."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    for hook in ("connection_made", "handle_events", "on_response_complete", "connection_lost"):
        assert hook in vars(H11Protocol), f"uvicorn's H11Protocol no longer defines {hook}"

    async def one_request():
        protocol, transport = _timed_protocol()
        assert protocol.transport is transport and protocol.cycle is None
        assert protocol.loop is asyncio.get_running_loop() and protocol.logger is not None
        armed = protocol._header_timer
        assert armed is not None and not armed.cancelled()
        protocol.data_received(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers not complete yet
        assert protocol.cycle is None and protocol._header_timer is armed
        protocol.data_received(b"\r\n")
        assert protocol.cycle is not None and protocol._header_timer is None and armed.cancelled()
        await asyncio.gather(*list(protocol.server_state.tasks))  # the app answers, then the cycle completes
        assert transport.written.startswith(b"HTTP/1.1 200") and not transport.closed
        rearmed = protocol._header_timer
        assert rearmed is not None and not rearmed.cancelled()  # waiting for the next request's headers
        return protocol, transport, rearmed

    async def then_lost():
        protocol, _, timer = await one_request()
        protocol.connection_lost(None)
        assert timer.cancelled()

    async def then_idle():
        protocol, transport, _ = await one_request()
        protocol._header_timeout()  # no next request: the finished cycle is still `cycle`
        assert transport.closed

    async def slow_headers():
        protocol, transport = _timed_protocol()
        protocol.data_received(b"GET /health HTTP/1.1\r\nHo")
        protocol._header_timeout()  # what the timer runs when it fires
        assert transport.closed

    asyncio.run(then_lost())
    asyncio.run(then_idle())
    asyncio.run(slow_headers())


def test_the_framed_protocol_refuses_a_chunk_storm_and_tells_the_app_its_client_is_gone():
    """uvicorn's h11 protocol with BodyFraming over a fake transport: a body of 1-byte chunks is answered
    400 after the allowance (MAX_BODY_CHUNKS + one per KiB), the app's receive says http.disconnect, the
    scope records the status for the metrics, and what follows is dropped unparsed; 4 KiB chunks pass."""
    import uvicorn
    from uvicorn.server import ServerState

    from leanpremise.serve.http.connection import REFUSED_KEY, BodyFraming, timed_h11

    seen: dict = {}

    async def app(scope, receive, send):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        seen.update(last=message["type"], refused=scope.get(REFUSED_KEY))
        if message["type"] == "http.request":
            await _ok(scope, receive, send)

    def framed():
        config = uvicorn.Config(app, log_level="warning")
        protocol = timed_h11(5.0, BodyFraming(max_body_bytes=2**20, max_chunks=64))(
            config, ServerState(), {}, _loop=asyncio.get_running_loop())
        transport = FakeTransport()
        transport.can_write_eof = lambda: False
        protocol.connection_made(transport)
        protocol.data_received(b"POST /retrieve HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        return protocol, transport

    async def storm():
        protocol, transport = framed()
        protocol.data_received(b"1\r\nx\r\n" * 10_000)
        assert transport.written.startswith(b"HTTP/1.1 400") and transport.closed
        assert protocol._chunks == 65  # parsing stopped one past the allowance, not at 10,000
        protocol.data_received(b"1\r\nx\r\n" * 10_000)  # dropped
        assert protocol._chunks == 65
        await asyncio.gather(*list(protocol.server_state.tasks))
        assert seen == {"last": "http.disconnect", "refused": (400, seen["refused"][1])}

    async def big_chunks():
        protocol, transport = framed()
        piece = b"y" * 4096
        protocol.data_received(b"1000\r\n" + piece + b"\r\n" * 1 + (b"1000\r\n" + piece + b"\r\n") * 99 + b"0\r\n\r\n")
        await asyncio.gather(*list(protocol.server_state.tasks))
        assert transport.written.startswith(b"HTTP/1.1 200"), transport.written[:100]

    async def wire_bytes():
        protocol, transport = framed()
        ext = b";x=" + b"e" * 30000
        for _ in range(60):  # few chunks, each with a long extension: over the wire bound, not the chunks'
            protocol.data_received(b"400" + ext + b"\r\n" + b"z" * 1024 + b"\r\n")
        assert transport.written.startswith(b"HTTP/1.1 413") and transport.closed

    asyncio.run(storm())
    asyncio.run(big_chunks())
    asyncio.run(wire_bytes())


def test_an_unread_response_is_aborted_after_its_deadline_and_holds_back_the_next_pipelined_request():
    """Issue 28, point 3, driven through uvicorn's real protocol: the transport reports its buffer full
    (`pause_writing`); while it drains, the deadline moves; when it stops draining for SEND_TIMEOUT_S the
    connection is aborted; a request pipelined behind the stuck response is not started meanwhile."""
    import uvicorn
    from uvicorn.server import ServerState

    from leanpremise.serve.http.connection import Writing, timed_h11

    assert "pause_writing" in vars(uvicorn.protocols.http.h11_impl.H11Protocol)

    config = uvicorn.Config(_ok, log_level="warning", timeout_keep_alive=30)

    async def stuck():
        """A connection whose transport is full, with /b pipelined behind /a: (protocol, transport, /a's
        cycle) once /a's handler is done."""
        protocol = timed_h11(5.0, None, Writing(send_timeout_s=0.5))(config, ServerState(), {},
                                                                     _loop=asyncio.get_running_loop())
        transport = FakeTransport()
        protocol.connection_made(transport)
        transport.fills = protocol
        protocol.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        first = protocol.cycle
        await asyncio.wait_for(asyncio.gather(*list(protocol.server_state.tasks)), 30)
        return protocol, transport, first

    async def scenario():
        protocol, transport, first = await stuck()
        assert protocol.cycle is first and protocol._complete_later  # /b not started behind the stuck /a
        timer = protocol._send_timer
        transport.buffered = 5_000  # some progress: the deadline moves
        protocol._send_timeout(10_000)
        assert not transport.aborted and protocol._send_timer is not timer
        protocol._send_timeout(5_000)  # none since: aborted
        assert transport.aborted

        protocol2, transport2, first = await stuck()
        transport2.buffered = 0
        protocol2.resume_writing()  # read at last: the pipelined request goes on
        assert protocol2.cycle is not first and protocol2._send_timer is None
        await asyncio.wait_for(asyncio.gather(*list(protocol2.server_state.tasks)), 30)
        assert transport2.written.count(b"HTTP/1.1 200") == 2 and not transport2.aborted

    asyncio.run(scenario())


def test_connections_per_client_are_capped_by_client_key():
    import uvicorn
    from uvicorn.server import ServerState

    from leanpremise.serve.http.connection import Writing, timed_h11

    async def scenario():
        config = uvicorn.Config(_ok, log_level="warning")
        cls = timed_h11(5.0, None, Writing(max_connections_per_client=2))
        state = ServerState()

        def connect(peer: str):
            protocol = cls(config, state, {}, _loop=asyncio.get_running_loop())
            transport = FakeTransport(peer)
            protocol.connection_made(transport)
            return protocol, transport

        a = [connect("2001:db8::1"), connect("2001:db8::2")]
        assert not any(t.aborted for _, t in a)
        assert connect("2001:db8::3")[1].aborted  # the same /64
        assert not connect("10.0.0.1")[1].aborted
        a[0][0].connection_lost(None)
        assert not connect("2001:db8::4")[1].aborted  # a place was freed

    asyncio.run(scenario())
