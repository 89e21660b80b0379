"""Body decoding: large bodies are parsed on a worker thread, never on the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.ops.front import LARGE_BODY_BYTES
from service.protocols.http_codec import decode_body


@pytest.mark.parametrize(("size", "on_loop"), [(LARGE_BODY_BYTES, True), (LARGE_BODY_BYTES + 1, False)])
def test_decode_body_runs_large_bodies_off_the_event_loop(size: int, on_loop: bool) -> None:
    async def main() -> tuple[int, int]:
        loop_thread = threading.get_ident()
        ran = await decode_body(b"x" * size, threading.get_ident)
        return loop_thread, ran

    loop_thread, ran = asyncio.run(main())
    assert (ran == loop_thread) is on_loop


def test_decode_body_passes_the_decoders_errors_through_from_the_thread() -> None:
    def decode() -> None:
        raise ValueError("bad body")

    with pytest.raises(ValueError, match="bad body"):
        asyncio.run(decode_body(b"x" * (LARGE_BODY_BYTES + 1), decode))
