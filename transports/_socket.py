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
#   * Write: the buffers in order, under the request's timeout (counted for
#     all of them): sendmsg() hands them to the kernel as they are, so a
#     large body is never joined to its command lines; a TLS socket, which
#     has no sendmsg(), gets them one by one (pieces_to_send);
#   * Poll: what select() says is already readable, without waiting;
#   * UpgradeTLS: wrap the socket (a socket given already wrapped is reported
#     as it is);
#   * PullBody: the next piece of the body.
#
# Every settimeout() costs system calls, and each phase has a timeout of its
# own (180 s to write content, 300 s for MAIL's reply, 600 s for the final
# one...): setting each exactly would cost several calls per message. So a
# wait only needs the socket timeout to be no longer than what it allows
# (never past it) and not much shorter; a socket call that times out before
# the wait's own deadline is simply made again. The timeout then settles on
# one value, and a stalled server still fails each wait on time.
#
# A Python socket timeout makes every recv() and send() a poll() first and
# the call after it. On Linux a plain TCP or Unix socket is left blocking and
# the kernel keeps the timeout instead (SO_RCVTIMEO, SO_SNDTIMEO): each read
# and write is then one system call, and a wait that runs out fails with
# EAGAIN, taken as the timeout it is. A TLS socket keeps Python's timeout.
#
# Invariant: after a failure the session cannot use, the socket is closed.
from __future__ import annotations

import functools
import select
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from smtpbee._requests import Buffer, Poll, PullBody, Read, Request, UpgradeTLS, Write
from smtpbee.transports._common import is_verifying, tls_info
from smtpbee.transports._message import READ_SIZE
from smtpbee.transports._sync.client import SyncClient
from smtpbee.transports._sync.one_call import send_with
from smtpbee.transports._writes import pieces_to_send, unsent

__all__ = ["SMTPClient", "send"]

# A socket timeout down to 1/_SLACK of a wait's is kept: a silent server then
# costs a few more wake-ups before the wait fails, not a settimeout() per wait.
_SLACK = 8
# Windows sockets have no sendmsg().
_HAS_SENDMSG = hasattr(socket.socket, "sendmsg")
# More buffers than one sendmsg() takes (IOV_MAX is 1024 on Linux) are joined in runs.
_MAX_BUFFERS = 512
# Where a blocking socket's timeouts can be left to the kernel (a struct timeval).
_KERNEL_TIMEOUTS = sys.platform == "linux"
_KERNEL_FAMILIES = (socket.AF_INET, socket.AF_INET6, getattr(socket, "AF_UNIX", -1))


def _timeval(seconds: float) -> bytes:
    # All zeros would mean no timeout at all: the shortest wait is 1 µs.
    micros = max(1, round(seconds * 1_000_000))
    return struct.pack("ll", micros // 1_000_000, micros % 1_000_000)


class SMTPClient(SyncClient):
    """An SMTP client over a blocking socket; the arguments are ClientBase's.

    Use it as a context manager (connect on entry, QUIT and close on exit) or
    call connect() and quit()/close() yourself.
    """

    _sock: socket.socket | None = None
    _timeout: float | None = None
    # Whether the kernel keeps the socket's timeouts (see the top of this file).
    _kernel_timeouts = False

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
        if (
            _KERNEL_TIMEOUTS
            and sock.family in _KERNEL_FAMILIES
            and not isinstance(sock, ssl.SSLSocket)
        ):
            sock.settimeout(None)
            self._kernel_timeouts = True
            self._timeout = None
        return sock.getsockname()

    def _set_timeout(self, sock: socket.socket, seconds: float) -> None:
        """Python's own socket timeout, the kernel's given up (for TLS)."""
        if self._kernel_timeouts:
            self._kernel_timeouts = False
            self._timeout = None
            for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
                sock.setsockopt(socket.SOL_SOCKET, option, bytes(struct.calcsize("ll")))
        if seconds != self._timeout:
            sock.settimeout(seconds)
            self._timeout = seconds

    def _limit_wait(self, sock: socket.socket, seconds: float) -> float:
        """Let the next socket call wait at most ``seconds``; how long it may wait."""
        if seconds <= 0:
            raise TimeoutError
        current = self._timeout
        if current is None or current > seconds or current * _SLACK < seconds:
            if self._kernel_timeouts:
                value = _timeval(seconds)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
            else:
                sock.settimeout(seconds)
            self._timeout = current = seconds
        return current

    def _serve(self, request: Request, body: Any) -> Any:
        sock = self._sock
        if sock is None:
            raise ConnectionError("the connection is closed")
        if isinstance(request, Read):
            deadline = self._deadline
            remaining = deadline.remaining(request, time.monotonic())
            while True:
                whole_wait = self._limit_wait(sock, remaining) >= remaining
                try:
                    return sock.recv(READ_SIZE)
                except (TimeoutError, BlockingIOError):
                    if whole_wait:
                        raise TimeoutError from None
                    remaining = deadline.left(time.monotonic())
        if isinstance(request, Write):
            seconds = request.timeout
            deadline_at = time.monotonic() + seconds
            buffers = request.buffers
            if not _HAS_SENDMSG or isinstance(sock, ssl.SSLSocket):
                for piece in pieces_to_send(buffers):
                    self._send(sock, [piece], deadline_at, seconds)
                    seconds = deadline_at - time.monotonic()
            elif len(buffers) > _MAX_BUFFERS:
                self._send(sock, list(pieces_to_send(buffers)), deadline_at, seconds)
            else:
                self._send(sock, list(buffers), deadline_at, seconds)
            return None
        if isinstance(request, PullBody):
            pieces: Iterator[bytes] = body
            return next(pieces, b"")
        if isinstance(request, Poll):
            return self._poll(sock)
        assert isinstance(request, UpgradeTLS)
        return self._start_tls(sock, request.timeout)

    def _send(
        self, sock: socket.socket, buffers: list[Buffer], deadline_at: float, seconds: float
    ) -> None:
        """Send every buffer, in order, before deadline_at, ``seconds`` from now.

        sendmsg() when there are several buffers, send() for one.
        """
        self._limit_wait(sock, seconds)
        while buffers:
            try:
                sent = sock.sendmsg(buffers) if len(buffers) > 1 else sock.send(buffers[0])
            except (TimeoutError, BlockingIOError):
                # Nothing went out, and the socket's timeout may have been
                # shorter than what is left of the write's: _limit_wait says.
                self._limit_wait(sock, deadline_at - time.monotonic())
                continue
            buffers = unsent(buffers, sent)
            if buffers:
                self._limit_wait(sock, deadline_at - time.monotonic())

    def _poll(self, sock: socket.socket) -> bytes | None:
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        if not pending and not select.select([sock], [], [], 0)[0]:
            return None
        try:
            if self._kernel_timeouts:
                return sock.recv(READ_SIZE, socket.MSG_DONTWAIT)
            self._set_timeout(sock, 0.0)
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
        self._kernel_timeouts = False
        if sock is not None:
            sock.close()


send = functools.partial(send_with, SMTPClient)
"""Connect, log in if asked, send one message, QUIT (see send_with for the arguments)."""
