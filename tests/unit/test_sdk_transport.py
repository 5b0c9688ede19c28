"""The SDK's default transport: a reply cut short is no reply, never a truncated success."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from partners_sdk.transport import HttpClientTransport, TransportError

BODY = b'{"receipt_id":"r-1","points":{"total":123}}'


def _serve_once(reply: bytes) -> tuple[str, threading.Thread]:
    """A one-shot loopback server: reads the request, writes ``reply``, closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def run() -> None:
        with listener:
            connection, _ = listener.accept()
            with connection:
                # Read the whole request first: closing with unread bytes would send a
                # reset, and the client would see that instead of the reply cut short.
                request = b""
                while b"\r\n\r\n" not in request:
                    request += connection.recv(65536)
                head, _, body = request.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += connection.recv(65536)
                connection.sendall(reply)
                connection.shutdown(socket.SHUT_WR)
                while connection.recv(65536):
                    pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{port}/partner/v1/purchases", thread


def _head(length: int) -> bytes:
    return (b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {length}\r\nConnection: close\r\n\r\n".encode())


def test_a_complete_reply_is_returned():
    url, thread = _serve_once(_head(len(BODY)) + BODY)
    status, headers, body = HttpClientTransport().send("POST", url, {}, b"{}", timeout_s=5)
    thread.join(timeout=5)
    assert (status, headers["content-length"], body) == (201, str(len(BODY)), BODY)


def test_a_reply_cut_short_by_a_dying_server_is_a_transport_error():
    # A worker killed while writing its 201: the headers and part of the body arrived.
    url, thread = _serve_once(_head(len(BODY)) + BODY[:10])
    with pytest.raises(TransportError, match="cut short: 10 bytes of 43"):
        HttpClientTransport().send("POST", url, {}, b"{}", timeout_s=5)
    thread.join(timeout=5)


def test_a_reply_dribbled_a_byte_at_a_time_cannot_stretch_an_attempt_past_its_timeout():
    # Each byte comes well within the timeout, so only a bound on the whole attempt stops it.
    reply = _head(len(BODY)) + BODY
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def dribble() -> None:
        with listener:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                for index in range(len(reply)):
                    if stop.wait(0.2):
                        return
                    connection.sendall(reply[index:index + 1])

    thread = threading.Thread(target=dribble, daemon=True)
    thread.start()
    started_s = time.monotonic()
    try:
        with pytest.raises(TransportError, match="timed out"):
            HttpClientTransport().send("GET", f"http://127.0.0.1:{listener.getsockname()[1]}/", {}, None,
                                       timeout_s=1.0)
        elapsed_s = time.monotonic() - started_s
    finally:
        stop.set()
        thread.join(timeout=5)
    assert elapsed_s < 2.0
