"""Request bodies: read once, whole, before a request is admitted, within a time and a memory budget.

`BodyReader.read` checks the framing headers (a Transfer-Encoding other than chunked is refused, as is a
Content-Length over AE_MAX_BODY_BYTES), reserves the body's size in the shared `ByteBudget` (waiting, unread,
while other bodies fill it), reads it under a deadline of AE_BODY_TIMEOUT_S plus one second per
AE_MIN_BODY_RATE bytes (408 past it), and inflates a gzip or deflate Content-Encoding strictly (a truncated
stream or trailing bytes are refused; the inflated size counts against AE_MAX_BODY_BYTES too). The body then
lives in the scope under `BODY_KEY`, where the protocols take it, and the app sees a `receive` that replays
it. A client that goes away mid-body raises `ClientDisconnect`.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass

from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope

from service.errors import (
    BadRequestError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
    quote,
)
from service.ops.admission import ByteBudget, RequestDeadlines

__all__ = ["BODY_KEY", "BodyReader", "ReadBody", "inflate", "replay"]

BODY_KEY = "ae.body"
"""Scope key of the request's whole (inflated) body."""

_WBITS = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}


@dataclass(frozen=True)
class ReadBody:
    body: bytes
    reserved: int
    """Bytes held in the budget until the request finishes."""


def inflate(body: bytes, encoding: bytes, max_bytes: int) -> bytes:
    """`body` decoded from a gzip or deflate Content-Encoding; the stream must end exactly with the body."""
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise UnsupportedMediaTypeError(
            f"unsupported Content-Encoding {quote(encoding.decode('latin-1'))}; expected gzip, deflate or "
            "identity"
        )
    name = encoding.decode()
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise BadRequestError(f"the body is not valid {name} data: {exc}") from None
    if len(data) > max_bytes:
        raise PayloadTooLargeError(
            f"the decompressed body is over the limit of {max_bytes} bytes (AE_MAX_BODY_BYTES)"
        )
    if not inflater.eof:
        raise BadRequestError(f"the {name} body is truncated: the stream does not end (no trailer)")
    if inflater.unused_data:
        raise BadRequestError(f"the {name} body has {len(inflater.unused_data)} bytes after its stream ends")
    return data


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that answers the whole body once, then whatever the server sends (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class BodyReader:
    def __init__(
        self, budget: ByteBudget, max_body_bytes: int, body_timeout_s: float, min_body_rate: int
    ) -> None:
        self.budget = budget
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.min_body_rate = min_body_rate
        # The first wait is the same for every request: one loop timer watches them all (RequestDeadlines).
        self._first_wait = RequestDeadlines(body_timeout_s)

    def _framing(self, scope: Scope) -> tuple[int | None, bytes | None]:
        """(Content-Length or None, Content-Encoding or None), refusing what cannot be read."""
        length: int | None = None
        encoding: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or len(value) > 18:
                    raise BadRequestError(f"Content-Length {quote(value.decode('latin-1'))} is not a number")
                length = int(value)
            elif name == b"transfer-encoding" and value.strip().lower() != b"chunked":
                raise BadRequestError(
                    f"Transfer-Encoding {quote(value.decode('latin-1'))} is not supported; send the body "
                    "as it is or chunked, and say a compression with Content-Encoding"
                )
            elif name == b"content-encoding":
                coding = value.strip().lower()
                encoding = None if coding in (b"", b"identity") else coding
        if length is not None and length > self.max_body_bytes:
            raise PayloadTooLargeError(
                f"request body of {length} bytes is over the limit of {self.max_body_bytes} bytes "
                "(AE_MAX_BODY_BYTES)"
            )
        return length, encoding

    async def read(self, scope: Scope, receive: Receive) -> ReadBody:
        """The whole body, inflated; its reservation must be given back with `budget.release`."""
        length, encoding = self._framing(scope)
        if length == 0:
            return ReadBody(b"", 0)
        reserved = await self.budget.reserve(self.max_body_bytes if length is None else length)
        try:
            body = await self._receive_all(receive, length)
            if encoding is not None:
                body = inflate(body, encoding, self.max_body_bytes)
        except BaseException:
            self.budget.release(reserved)
            raise
        return ReadBody(body, reserved)

    async def _receive_all(self, receive: Receive, length: int | None) -> bytes:
        first = await self._receive(receive, None)
        body: bytes = first.get("body", b"")
        if len(body) > self.max_body_bytes:
            raise PayloadTooLargeError(
                f"request body is over the limit of {self.max_body_bytes} bytes (AE_MAX_BODY_BYTES)"
            )
        if not first.get("more_body", False):
            return bytes(body)  # the common case: all of it in one message
        loop = asyncio.get_running_loop()
        expected = self.max_body_bytes if length is None else length
        limit_s = self.body_timeout_s + expected / self.min_body_rate
        chunks = [first.get("body", b"")]
        received = len(chunks[0])
        try:
            async with asyncio.timeout_at(loop.time() + limit_s):
                while True:
                    message = await self._receive(receive, received)
                    chunk: bytes = message.get("body", b"")
                    received += len(chunk)
                    if received > self.max_body_bytes:
                        limit = self.max_body_bytes
                        raise PayloadTooLargeError(
                            f"request body is over the limit of {limit} bytes (AE_MAX_BODY_BYTES)"
                        )
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise RequestTimeoutError(
                f"the request body did not arrive within {limit_s:.3g} s ({received} bytes came; "
                f"AE_BODY_TIMEOUT_S={self.body_timeout_s:g} plus 1 s per AE_MIN_BODY_RATE bytes)"
            ) from None

    async def _receive(self, receive: Receive, received: int | None) -> Message:
        if received is None:
            # Usually the body came with the headers and this returns at once; when it did not, the wait
            # is bounded like every other.
            deadline = self._first_wait.start()
            try:
                message = await receive()
            except asyncio.CancelledError:
                if deadline.ours():
                    raise RequestTimeoutError(
                        f"no request body arrived within {self.body_timeout_s:g} s (AE_BODY_TIMEOUT_S)"
                    ) from None
                raise
            finally:
                self._first_wait.stop(deadline)
        else:
            message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        return message
