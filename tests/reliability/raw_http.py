"""HTTP/1.1 written by hand on a socket, for what a client library hides: a request held half-sent, so that
the server has accepted it but cannot answer yet, and the answer to it read back."""

from __future__ import annotations

import socket

import orjson

__all__ = ["GOOD", "open_slow_request", "read_response"]

GOOD = {"model": "tiny", "inputs": [[1.0, 2.0, 3.0, 4.0]]}
"""A request body every endpoint taking `inputs` answers 200 on the tiny fixture model."""


def open_slow_request(port: int, path: str = "/denoise") -> tuple[socket.socket, bytes]:
    """Send the headers and part of the body of a good request; returns the socket and the rest."""
    body = orjson.dumps(GOOD)
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body[:10])
    return sock, body[10:]


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Read one answer from `sock`: its status and its body (as long as its Content-Length says)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed without an answer: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(head.split(b" ", 2)[1]), rest
