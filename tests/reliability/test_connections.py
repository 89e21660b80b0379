"""Connections below the application, against a real server: slow or idle clients, oversized headers, more
connections than file descriptors, framing that cannot be trusted."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import FIXTURE_MODELS
from tests.live import LOOPBACK, LiveServer
from tests.reliability.raw_http import GOOD

BODY = orjson.dumps(GOOD)


def _connect(server: LiveServer) -> socket.socket:
    return socket.create_connection((LOOPBACK, server.port), timeout=10)


def _answer(sock: socket.socket, timeout: float = 10.0) -> tuple[int, bytes]:
    """The status and body of the server's answer, reading until it closes or the body is complete."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lengths = [
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ]
        if lengths and len(rest) >= lengths[0]:
            break
    if not data:
        return 0, b""
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _closed(sock: socket.socket, within: float) -> bool:
    """Whether the server closes `sock` within `within` seconds (whatever it says first)."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if sock.recv(65536) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


@pytest.fixture
def server(server_factory: Any) -> LiveServer:
    guarded: LiveServer = server_factory(
        FIXTURE_MODELS, header_timeout_s="1", keep_alive_timeout_s="1", max_headers="50"
    )
    return guarded


def test_connections_trickled_headers_are_cut_at_the_header_timeout(server: LiveServer) -> None:
    sock = _connect(server)
    started = time.perf_counter()
    sock.sendall(b"POST /denoise HTTP/1.1\r\nHost: x\r\n")
    status = 0
    for i in range(20):
        try:
            sock.sendall(f"X-Slow-{i}: y\r\n".encode())
        except (BrokenPipeError, ConnectionResetError):
            break
        time.sleep(0.2)
        sock.settimeout(0.01)
        try:
            peek = sock.recv(65536, socket.MSG_PEEK)
        except TimeoutError:
            continue
        if peek:
            status, _ = _answer(sock)
            break
    assert status == 408
    assert time.perf_counter() - started < 3.0
    assert httpx.post(f"{server.url}/denoise", json=GOOD).status_code == 200


def test_connections_idle_ones_are_closed(server: LiveServer) -> None:
    never_spoke = _connect(server)
    assert _closed(never_spoke, within=3.0)
    kept_alive = _connect(server)
    kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _answer(kept_alive)[0] == 200
    assert _closed(kept_alive, within=3.0)  # AE_KEEP_ALIVE_TIMEOUT_S=1


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"X-Big: " + b"a" * (1024 * 1024) + b"\r\n", b"over 32768 bytes"),
        (b"".join(b"X-H%d: v\r\n" % i for i in range(20000)), b"over 50 header fields"),
        (b"X-Long-Url: 1\r\n", None),
    ],
    ids=["one-megabyte-header", "twenty-thousand-headers", "control"],
)
def test_connections_oversized_headers_are_refused_431_before_anything_else(
    server_factory: Any, head: bytes, message: bytes | None
) -> None:
    server: LiveServer = server_factory(FIXTURE_MODELS, max_headers="50", api_keys="a-key")
    sock = _connect(server)
    request = b"POST /denoise HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + head
    request += b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(request)  # the server may close as soon as the limit is crossed
    status, body = _answer(sock)
    if message is None:
        assert status == 401  # within the limits: it gets as far as the key check
    else:
        assert status == 431 and message in body, body[:200]
    assert httpx.get(f"{server.url}/healthz").status_code == 200


@pytest.fixture
def idle_sockets() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for sock in held:
        sock.close()


def test_connections_more_idle_ones_than_file_descriptors_never_lock_real_clients_out(
    idle_sockets: list[socket.socket], tmp_path: Any
) -> None:
    # 256 open files: the server keeps at most 128 connections and closes idle ones to make room.
    with LiveServer(FIXTURE_MODELS, nofile=256, env={"AE_HEADER_TIMEOUT_S": "60"}) as server:
        for _ in range(300):
            idle_sockets.append(_connect(server))
        time.sleep(0.5)
        for _ in range(5):
            r = httpx.post(f"{server.url}/denoise", json=GOOD, timeout=10)
            assert r.status_code == 200
        assert server.process.poll() is None
        assert "Too many open files" not in server.log_text()
        closed = sum(_closed(s, within=0.05) for s in idle_sockets)
        assert closed >= 300 - 128


@pytest.mark.parametrize("encoding", [b"gzip, chunked", b"chunked, gzip", b"identity"])
def test_connections_transfer_encoding_other_than_chunked_is_refused(
    server: LiveServer, encoding: bytes
) -> None:
    sock = _connect(server)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
    sock.sendall(
        b"POST /denoise HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: "
        + encoding
        + b"\r\n\r\n"
        + chunked
    )
    status, body = _answer(sock)
    assert status == 400
    assert b"Transfer-Encoding" in body or b"Invalid HTTP request" in body
