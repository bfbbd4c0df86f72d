"""uvicorn's h11 protocol with a header read timeout and bounds on a body's framing.

uvicorn times out a connection idle between requests (`timeout_keep_alive`) but not one that opens and
then sends its request line and headers a byte at a time: such a client holds its connection, and a
slot of `limit_concurrency`, for ever. This protocol closes a connection whose headers are not complete
within `header_timeout_s` of its opening or of the previous response.

It also bounds what a body costs to parse, not only its length: a chunked body is refused (400) once it
has more chunks than `BodyFraming.max_chunks` plus one per KiB of body received, and any body (413) once
the bytes on the wire pass `BodyFraming.wire_limit`. h11 parses one chunk per event, so a megabyte sent
as one-byte chunks would cost a million events of loop time; counted here, parsing stops after the
allowance, so the work per request stays linear in what it is allowed to send, with a small constant.

Responses nobody reads (issue 28): writing a response has a deadline: once the transport's buffer passes its
high-water mark (`pause_writing`), it must shrink within `send_timeout_s`, else the connection is aborted
(not closed politely, which would wait for the buffer to drain); a pipelined request is not started while
the response before it is still stuck in the buffer; the idle timers (headers, keep-alive) abort as well;
and a client (by its key, serve/http/clients.py, of the peer address) may hold at most
`max_connections_per_client` connections (more are aborted at once).

No public uvicorn API sets such bounds, so this is the one module relying on uvicorn's internals: it
subclasses `H11Protocol`, overrides `connection_made`, `data_received`, `handle_events`,
`on_response_complete` and `connection_lost`, wraps its h11 connection's `next_event`, and reads `cycle`,
`conn`, `scope`, `transport`, `loop` and `logger`. tests/test_serve_http_layer.py drives the real
protocol through those hooks and fails when they change (checked against uvicorn 0.30 to 0.54).
"""

from __future__ import annotations

from dataclasses import dataclass

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

from leanpremise.serve.http.clients import address_key

REFUSED_KEY = "leanpremise.refused"
"""Scope key under which the protocol records (status, detail) of a body it refused, for the metrics."""

LINGER_S = 2.0
"""Seconds a refused connection stays open, reading and dropping what the client still sends, after its
answer and a half-close: closing at once would reset the connection and lose the answer in flight."""

FRAMING_BYTES_PER_CHUNK = 32
"""Wire bytes a chunk's framing (size line, CRLFs) is allowed beyond its data."""


@dataclass(frozen=True)
class BodyFraming:
    """Bounds on a request body's framing: `max_body_bytes` (MAX_BODY_BYTES), `max_chunks`
    (MAX_BODY_CHUNKS) and `max_header_bytes` (MAX_HEADER_BYTES, part of what arrives on the wire)."""

    max_body_bytes: int
    max_chunks: int
    max_header_bytes: int = 65536

    def chunks_allowed(self, body_bytes: int) -> int:
        """Chunks a body of `body_bytes` so far may have taken: a base, plus one per KiB."""
        return self.max_chunks + (body_bytes >> 10)

    @property
    def wire_limit(self) -> int:
        """Wire bytes of one request (headers, body and its framing) beyond which it is refused."""
        most_chunks = self.chunks_allowed(self.max_body_bytes)
        return self.max_body_bytes + self.max_header_bytes + FRAMING_BYTES_PER_CHUNK * most_chunks


@dataclass(frozen=True)
class Writing:
    """Bounds on writing: `send_timeout_s` (SEND_TIMEOUT_S), `max_connections_per_client`
    (MAX_CONNECTIONS_PER_CLIENT, 0: none) and the client key's IPv6 prefix (CLIENT_IPV6_PREFIX)."""

    send_timeout_s: float = 30.0
    max_connections_per_client: int = 0
    ipv6_prefix: int = 64


def timed_h11(header_timeout_s: float, framing: BodyFraming | None = None,
              writing: Writing | None = None) -> type[H11Protocol]:
    """An H11Protocol class aborting connections whose headers take longer than `header_timeout_s`; with
    `framing`, refusing bodies whose chunks or wire bytes pass its bounds; with `writing`, bounding the
    writing of responses and the connections per client."""
    connections: dict[str, int] = {}
    """Open connections by client key (one table per server: each server makes its own class)."""

    class TimedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._send_timer = None
            self._complete_later = False
            self._client = None
            if writing is not None and writing.max_connections_per_client:
                peer = transport.get_extra_info("peername")
                key = address_key(str(peer[0]), writing.ipv6_prefix) if peer else ""
                if connections.get(key, 0) >= writing.max_connections_per_client:
                    self.logger.info("aborting a connection: more than %d from one client (MAX_CONNECTIONS_PER_CLIENT)",
                                     writing.max_connections_per_client)
                    transport.abort()
                    return
                connections[key] = connections.get(key, 0) + 1
                self._client = key
            self._reset_counts()
            if framing is not None:
                self._h11_next_event = self.conn.next_event
                self.conn.next_event = self._counted_next_event
            self._arm_header_timer(None)

        # ---- body framing ---------------------------------------------------------------------------
        def _reset_counts(self) -> None:
            self._wire = self._body = self._chunks = 0
            self._refused = False

        def data_received(self, data: bytes) -> None:
            if framing is not None and not self._refused:
                self._wire += len(data)
                if self._wire > framing.wire_limit:
                    self._refuse(413, f"request larger than {framing.wire_limit} bytes on the wire "
                                      "(MAX_BODY_BYTES and its framing)")
                    return
            if self._refused:
                return  # the answer is sent; what the client still sends is dropped unparsed
            super().data_received(data)

        def _counted_next_event(self):
            """h11's next event, counting the body's bytes and chunks; PAUSED once a bound is passed."""
            if self._refused:
                return h11.PAUSED
            event = self._h11_next_event()
            if type(event) is h11.Data:
                self._body += len(event.data)
                self._chunks += event.chunk_start
                if self._chunks > framing.chunks_allowed(self._body):
                    self._refuse(400, f"chunked body in more than {framing.chunks_allowed(self._body)} chunks "
                                      f"for {self._body} bytes (MAX_BODY_CHUNKS, plus one per KiB)")
                    return h11.PAUSED
            return event

        def _refuse(self, status: int, detail: str) -> None:
            """Answer `status` now (unless an answer has started), tell the app its client is gone (the
            guard counts the request under `status`), and close the connection."""
            self._refused = True
            self.logger.info("refused a request body: %s", detail)
            cycle = self.cycle
            if cycle is not None:
                if self.scope is not None:
                    self.scope[REFUSED_KEY] = (status, detail)
                started = cycle.response_started
                cycle.disconnected = True
                cycle.message_event.set()
            else:
                started = False
            if not started and self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                body = orjson.dumps({"detail": detail})
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                           (b"connection", b"close")]
                try:
                    out = self.conn.send(h11.Response(status_code=status, headers=headers))
                    out += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
                    self.transport.write(out)
                    if self.transport.can_write_eof():
                        self.transport.write_eof()
                        self.loop.call_later(LINGER_S, self.transport.close)
                        return
                except h11.LocalProtocolError:
                    pass
            self.transport.close()

        # ---- header timeout -------------------------------------------------------------------------
        def _arm_header_timer(self, finished_cycle) -> None:
            old = getattr(self, "_header_timer", None)
            if old is not None:
                old.cancel()
            self._waiting_after = finished_cycle
            self._header_timer = self.loop.call_later(header_timeout_s, self._header_timeout)

        def _header_timeout(self) -> None:
            self._header_timer = None
            if self.cycle is not None and self.cycle is not self._waiting_after:
                return  # headers arrived (a pipelined request parsed without new data)
            if not self.transport.is_closing():
                self.logger.info("aborting a connection whose request headers took over %gs", header_timeout_s)
                self.transport.abort()

        def handle_events(self) -> None:
            super().handle_events()
            timer = getattr(self, "_header_timer", None)
            if timer is not None and self.cycle is not None and self.cycle is not self._waiting_after:
                timer.cancel()  # a new request's headers are complete
                self._header_timer = None

        # ---- writing ---------------------------------------------------------------------------------
        def pause_writing(self) -> None:
            super().pause_writing()
            if writing is not None:
                self._arm_send_timer(self.transport.get_write_buffer_size())

        def _arm_send_timer(self, size: int) -> None:
            if self._send_timer is not None:
                self._send_timer.cancel()
            self._send_timer = self.loop.call_later(writing.send_timeout_s, self._send_timeout, size)

        def _send_timeout(self, size: int) -> None:
            """The buffer has not drained below its mark in time: abort unless it at least shrank."""
            self._send_timer = None
            if self.transport.is_closing() and not self.flow.write_paused:
                return
            left = self.transport.get_write_buffer_size()
            if left < size:
                self._arm_send_timer(left)
                return
            self.logger.info("aborting a connection whose response was not read for %gs (SEND_TIMEOUT_S)",
                             writing.send_timeout_s)
            self.transport.abort()

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._send_timer is not None:
                self._send_timer.cancel()
                self._send_timer = None
            if self._complete_later:
                self._complete_later = False
                self._complete()

        def timeout_keep_alive_handler(self) -> None:
            super().timeout_keep_alive_handler()
            self.transport.abort()  # closed politely, it would wait for what the client never reads

        def on_response_complete(self) -> None:
            if writing is not None and self.flow.write_paused:  # no pipelined request while this one is stuck
                self._complete_later = True
                return
            self._complete()

        def _complete(self) -> None:
            finished = self.cycle
            if not self._refused:
                self._wire = self._body = self._chunks = 0
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_header_timer(finished)

        def connection_lost(self, exc) -> None:
            for name in ("_header_timer", "_send_timer"):
                timer = getattr(self, name, None)
                if timer is not None:
                    timer.cancel()
            client = getattr(self, "_client", None)
            if client is not None:
                left = connections.get(client, 1) - 1
                if left:
                    connections[client] = left
                else:
                    connections.pop(client, None)
                self._client = None
            super().connection_lost(exc)

    return TimedH11Protocol
