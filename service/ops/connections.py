"""Connection limits below the application: uvicorn's httptools protocol with guards it does not have.

- A connection must send a complete request line and headers within AE_HEADER_TIMEOUT_S of opening, or of the
  first byte of its next request; otherwise it is answered 408 and closed. Idle connections that never send
  anything, and slowloris clients that trickle headers, hold no socket for long.
- A request line plus headers over AE_MAX_HEADER_BYTES, or more than AE_MAX_HEADERS fields, is answered 431
  and closed as soon as the limit is crossed, before any key check and before the rest is buffered.
- At most `max_connections` connections are open per worker (by default the open-files limit less a reserve),
  so the process never runs out of file descriptors. A connection beyond that closes the oldest idle one (no
  request in progress: a keep-alive connection between requests, or one that never sent a byte) to make
  room, so idle clients cannot lock real ones out; when every connection is busy, the new one is answered
  503 and closed at once.
Idle keep-alive connections are closed after AE_KEEP_ALIVE_TIMEOUT_S (uvicorn's own timer).

Give uvicorn `http="service.ops.connections:GuardedHttpToolsProtocol"`: each worker process reads the limits
from its settings (the AE_* environment) when its first connection arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import Settings

__all__ = ["FD_RESERVE", "ConnectionLimits", "GuardedHttpToolsProtocol", "connection_limit"]

FD_RESERVE = 128
"""File descriptors kept free for model files, logs, the gRPC server and the like."""


def connection_limit(configured: int | None) -> int:
    """AE_MAX_CONNECTIONS, or the open-files soft limit less FD_RESERVE (at least 16)."""
    if configured is not None:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 65536
    return max(16, soft - FD_RESERVE)


class ConnectionLimits:
    def __init__(self, settings: Settings) -> None:
        self.header_timeout_s = settings.header_timeout_s
        self.max_header_bytes = settings.max_header_bytes
        self.max_headers = settings.max_headers
        self.max_connections = connection_limit(settings.max_connections)


class _RefusedError(Exception):
    """Raised from a parser callback to stop parsing a request that crossed a limit."""


def _answer(status: int, reason: str, message: str) -> bytes:
    body = ('{"detail": "' + message + '"}').encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    return head + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    _limits: ClassVar[ConnectionLimits | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if GuardedHttpToolsProtocol._limits is None:
            GuardedHttpToolsProtocol._limits = ConnectionLimits(Settings())
        self.limits = GuardedHttpToolsProtocol._limits
        self._header_bytes = 0
        self._header_count = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._refusal: bytes | None = None
        self._opened_at = 0.0
        self._receiving = False
        """Between a request's first byte and the end of its answer."""
        self._in_body = False
        self._since_headers = 0
        """Bytes received since the last request's headers were complete: the next headers' size so far."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._opened_at = self.loop.time()
        if len(self.connections) > self.limits.max_connections and not self._evict_idle():
            self.logger.warning(
                "refusing a connection: %d open and busy, AE_MAX_CONNECTIONS=%d",
                len(self.connections) - 1,
                self.limits.max_connections,
            )
            message = "too many open connections; retry later"
            transport.write(_answer(503, "Service Unavailable", message))
            transport.close()
            return
        self._arm_header_timer()

    @property
    def idle(self) -> bool:
        return not self._receiving and (self.cycle is None or self.cycle.response_complete)

    def _evict_idle(self) -> bool:
        """Close the oldest idle connection to make room for this one; False when none is idle."""
        idle = [
            c
            for c in self.connections
            if c is not self and isinstance(c, GuardedHttpToolsProtocol) and c.idle
        ]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c._opened_at)
        oldest.transport.close()
        self.connections.discard(oldest)
        return True

    def on_response_complete(self) -> None:
        self._receiving = False
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    # --- header timeout ------------------------------------------------------------------------------------

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        message = f"the request headers did not arrive within {self.limits.header_timeout_s:g} s"
        self.transport.write(_answer(408, "Request Timeout", message))
        self.transport.close()

    # --- header size ---------------------------------------------------------------------------------------

    def _count(self, size: int, fields: int) -> None:
        self._header_bytes += size
        self._header_count += fields
        if self._header_bytes > self.limits.max_header_bytes:
            message = f"the request line and headers are over {self.limits.max_header_bytes} bytes"
        elif self._header_count > self.limits.max_headers:
            message = f"the request has over {self.limits.max_headers} header fields"
        else:
            return
        self._refusal = _answer(431, "Request Header Fields Too Large", message)
        raise _RefusedError

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._receiving = True
        self._header_bytes = 0
        self._header_count = 0
        if self._header_timer is None:
            self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url), 0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4, 1)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        self._in_body = True
        self._since_headers = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._since_headers = 0
        super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # already refused: the connection is closing
        if not self._in_body:
            self._since_headers += len(data)
        super().data_received(data)
        # The parser hands a header over only once it is complete, so a huge one is caught here, by the
        # bytes that arrived without completing the headers.
        if self._refusal is None and not self._in_body and self._since_headers > self.limits.max_header_bytes:
            with contextlib.suppress(_RefusedError):
                self._count(self.limits.max_header_bytes + 1, 0)
            self.send_400_response("")

    def send_400_response(self, msg: str) -> None:
        # A parser callback that raised (a limit crossed) surfaces here as a parse error.
        if self._refusal is None:
            super().send_400_response(msg)
            return
        self._cancel_header_timer()
        self.transport.write(self._refusal)
        self.transport.close()
