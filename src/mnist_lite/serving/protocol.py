"""uvicorn's HTTP/1.1 protocol with a deadline on each request's head, against clients that never finish one."""

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10  # a request's head must arrive within this, from the connection or the last response


# The one private hook: uvicorn times only the wait between kept-alive requests, never a head that does not end
# (test_serve.py::test_a_connection_that_sends_no_headers_is_closed_and_health_still_answers).
class HeaderDeadline(H11Protocol):
    """Closes a connection that sends nothing, or half a request head, for HEADER_TIMEOUT_S."""

    deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.hang_up = transport.close
        self.restart(HEADER_TIMEOUT_S)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in: the app bounds the body
            self.restart(None)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined request already in has its head: the app bounds it, as in data_received.
        self.restart(HEADER_TIMEOUT_S if self.conn.their_state is h11.IDLE else None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.restart(None)
        super().connection_lost(exc)

    def restart(self, seconds: float | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.deadline = None if seconds is None else asyncio.get_running_loop().call_later(seconds, self.hang_up)
