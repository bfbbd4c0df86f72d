"""uvicorn's h11 protocol with a header read timeout.

uvicorn times out a connection idle between requests (`timeout_keep_alive`) but not one that opens and
then sends its request line and headers a byte at a time: such a client holds its connection, and a
slot of `limit_concurrency`, for ever. This protocol closes a connection whose headers are not complete
within `header_timeout_s` of its opening or of the previous response.

No public uvicorn API sets such a timeout, so this is the one module relying on uvicorn's internals: it
subclasses `H11Protocol`, overrides `connection_made`, `handle_events`, `on_response_complete` and
`connection_lost`, and reads `cycle`, `transport`, `loop` and `logger`.
tests/test_serve_http_layer.py drives the real protocol through those hooks and fails when they change
(checked against uvicorn 0.30 to 0.54).
"""

from __future__ import annotations

from uvicorn.protocols.http.h11_impl import H11Protocol


def timed_h11(header_timeout_s: float) -> type[H11Protocol]:
    """An H11Protocol class closing connections whose headers take longer than `header_timeout_s`."""

    class TimedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_header_timer(None)

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
                self.logger.info("closing a connection whose request headers took over %gs", header_timeout_s)
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            timer = getattr(self, "_header_timer", None)
            if timer is not None and self.cycle is not None and self.cycle is not self._waiting_after:
                timer.cancel()  # a new request's headers are complete
                self._header_timer = None

        def on_response_complete(self) -> None:
            finished = self.cycle
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_header_timer(finished)

        def connection_lost(self, exc) -> None:
            timer = getattr(self, "_header_timer", None)
            if timer is not None:
                timer.cancel()
            super().connection_lost(exc)

    return TimedH11Protocol
