"""How requests reach the hub: a small protocol, and a default built on ``http.client``.

Tests and unusual deployments inject their own transport (a fake that records
attempts, a proxy, a connection that drops). A transport either returns the hub's
reply, whatever its status, or raises ``TransportError`` (or an ``OSError``) when no
reply came: connection refused or reset, a timeout, a reply cut short. ``timeout_s``
bounds the whole attempt, from connecting to the reply's last byte.
"""

from __future__ import annotations

import functools
import http.client
import io
import socket
import ssl
import time
from typing import Any, Mapping, Protocol, cast
from urllib.parse import urlsplit

# A batch reply of 1,000 purchases with their breakdowns stays well under this.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
USER_AGENT = "alliance-partners-sdk/0.1"

Reply = tuple[int, dict[str, str], bytes]


class TransportError(Exception):
    """The request got no complete HTTP reply; the hub may or may not have acted on it."""


class Transport(Protocol):
    """Sends one HTTP request and returns (status, headers with lower-case names, body)."""

    def send(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
             timeout_s: float) -> Reply:
        """Send the request; raise ``TransportError`` or ``OSError`` if no whole reply arrives within ``timeout_s``."""
        ...


class HttpClientTransport:
    """The default transport: one ``http.client`` connection per request, standard library only."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None,
                 max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self._ssl_context = ssl_context
        self._max_response_bytes = max_response_bytes

    def send(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
             timeout_s: float) -> Reply:
        """Send one request over a fresh connection and read the whole reply."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportError(f"cannot send to {url!r}: only http and https URLs are supported")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        deadline_s = time.monotonic() + timeout_s
        connection = self._connection(parts.scheme, parts.hostname, parts.port, timeout_s)
        # A socket timeout bounds each wait on its own; reading against one deadline keeps a
        # hub that sends its reply a byte at a time from stretching the attempt.
        # http.client only ever calls response_class(sock, ...), so a factory serves; typeshed
        # declares the attribute a class, hence the cast.
        connection.response_class = cast(
            "type[http.client.HTTPResponse]", functools.partial(_response_before, deadline_s=deadline_s)
        )
        try:
            connection.connect()
            _time_left_s(connection.sock, deadline_s)
            connection.request(method, target, body=body, headers={"User-Agent": USER_AGENT, **headers})
            response = connection.getresponse()
            data = response.read(self._max_response_bytes + 1)
            if len(data) > self._max_response_bytes:
                raise TransportError(f"the reply is larger than {self._max_response_bytes} bytes")
            if response.length:
                # http.client returns what came when the connection closes before the
                # Content-Length was read; a reply cut short is no reply (the hub may
                # have acted: the caller retries under the same idempotency key).
                raise TransportError(f"the reply was cut short: {len(data)} bytes of {len(data) + response.length}")
            reply_headers: dict[str, str] = {}
            for name, value in response.getheaders():
                key = name.lower()
                reply_headers[key] = f"{reply_headers[key]}, {value}" if key in reply_headers else value
            return response.status, reply_headers, data
        except (OSError, http.client.HTTPException) as error:
            raise TransportError(f"{type(error).__name__}: {error}") from error
        finally:
            connection.close()

    def _connection(self, scheme: str, host: str, port: int | None, timeout_s: float) -> http.client.HTTPConnection:
        if scheme == "https":
            context = self._ssl_context or ssl.create_default_context()
            return http.client.HTTPSConnection(host, port, timeout=timeout_s, context=context)
        return http.client.HTTPConnection(host, port, timeout=timeout_s)


def _time_left_s(sock: socket.socket, deadline_s: float) -> None:
    """Let the socket's next wait last only until the deadline; past it, time out at once."""
    time_left_s = deadline_s - time.monotonic()
    if time_left_s <= 0:
        raise TimeoutError("timed out: the attempt's time is up")
    sock.settimeout(time_left_s)


class _DeadlineReader(io.RawIOBase):
    """A socket's reading side where every read waits only for what is left of one deadline."""

    def __init__(self, sock: socket.socket, deadline_s: float) -> None:
        super().__init__()
        self._sock = sock
        # The socket's own raw file keeps it open while the reply is read, even once the
        # connection has let go of it (as it does for "Connection: close").
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline_s = deadline_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        _time_left_s(self._sock, self._deadline_s)
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineSocket:
    """What ``http.client.HTTPResponse`` needs of a socket: a file to read the reply from."""

    def __init__(self, sock: socket.socket, deadline_s: float) -> None:
        self._sock = sock
        self._deadline_s = deadline_s

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline_s))


def _response_before(sock: socket.socket, *, deadline_s: float, **options: Any) -> http.client.HTTPResponse:
    """The reply to read from ``sock``, every read of it bounded by ``deadline_s``."""
    # HTTPResponse uses its socket only for makefile("rb"), which _DeadlineSocket provides;
    # typeshed asks for a real socket.
    return http.client.HTTPResponse(cast(socket.socket, _DeadlineSocket(sock, deadline_s)), **options)
