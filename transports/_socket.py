# smtpbee/transports/_socket
#
# The blocking transport: one socket, one thread, the core's procedures.
#
# Theory of operation
# -------------------
# SyncClient (generated from the async client, see _async/client.py) holds the
# public methods and the request loop; this class only answers the requests
# with a socket:
#   * Read: one recv() under what is left of the reply's Deadline;
#   * Write: sendall() under the request's timeout (counted for the whole
#     buffer);
#   * Poll: what select() says is already readable, without waiting;
#   * UpgradeTLS: wrap the socket (a socket given already wrapped is reported
#     as it is);
#   * PullBody: the next piece of the body.
# The socket timeout is set only when the wanted deadline differs from the
# one already set.
#
# Invariant: after a failure the session cannot use, the socket is closed.
from __future__ import annotations

import functools
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

from smtpbee._requests import Poll, PullBody, Read, Request, UpgradeTLS, Write
from smtpbee.transports._common import is_verifying, tls_info
from smtpbee.transports._message import READ_SIZE
from smtpbee.transports._sync.client import SyncClient
from smtpbee.transports._sync.one_call import send_with

__all__ = ["SMTPClient", "send"]


class SMTPClient(SyncClient):
    """An SMTP client over a blocking socket; the arguments are ClientBase's.

    Use it as a context manager (connect on entry, QUIT and close on exit) or
    call connect() and quit()/close() yourself.
    """

    _sock: socket.socket | None = None
    _timeout: float | None = None

    @property
    def _connected(self) -> bool:
        return self._sock is not None

    def _open(self) -> Any:
        sock: socket.socket | None = self._sock_given
        if sock is None and self.proxy is not None:
            sock = self.proxy.connect_sync(
                self._host, self.port, self.connect_timeout, self.source_address
            )
        elif sock is None:
            address = (self._host, self.port)
            sock = socket.create_connection(address, self.connect_timeout, self.source_address)
        self._sock = sock
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # A pipelined group ends in a small write; Nagle would hold it
            # back for the delayed ACK (asyncio and trio set this too).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock.getsockname()

    def _set_timeout(self, sock: socket.socket, seconds: float) -> None:
        if seconds != self._timeout:
            sock.settimeout(seconds)
            self._timeout = seconds

    def _serve(self, request: Request, body: Any) -> Any:
        sock = self._sock
        if sock is None:
            raise ConnectionError("the connection is closed")
        if isinstance(request, Read):
            remaining = self._deadline.remaining(request, time.monotonic())
            if remaining <= 0:
                raise TimeoutError
            self._set_timeout(sock, remaining)
            return sock.recv(READ_SIZE)
        if isinstance(request, Write):
            self._set_timeout(sock, request.timeout)
            sock.sendall(request.data)
            return None
        if isinstance(request, PullBody):
            pieces: Iterator[bytes] = body
            return next(pieces, b"")
        if isinstance(request, Poll):
            return self._poll(sock)
        assert isinstance(request, UpgradeTLS)
        return self._start_tls(sock, request.timeout)

    def _poll(self, sock: socket.socket) -> bytes | None:
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        if not pending and not select.select([sock], [], [], 0)[0]:
            return None
        self._set_timeout(sock, 0.0)
        try:
            return sock.recv(READ_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError):
            # Readable, but only part of a TLS record is in.
            return None

    def _start_tls(self, sock: socket.socket, timeout: float) -> bool:
        if isinstance(sock, ssl.SSLSocket):
            verified = is_verifying(sock.context)
        else:
            self._set_timeout(sock, timeout)
            sock = self.ssl_context.wrap_socket(sock, server_hostname=self.server_hostname)
            self._sock = sock
            verified = is_verifying(self.ssl_context)
        self.tls_info = tls_info(sock, verified)
        return verified

    def _new_lock(self) -> Any:
        # Threads sharing a client take turns, a procedure at a time.
        return threading.Lock()

    def _abort(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (no QUIT); safe to call twice."""
        sock, self._sock = self._sock, None
        self._timeout = None
        if sock is not None:
            sock.close()


send = functools.partial(send_with, SMTPClient)
"""Connect, log in if asked, send one message, QUIT (see send_with for the arguments)."""
