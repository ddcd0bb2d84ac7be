# smtpbee/transports/_trio
#
# The trio transport: one trio Stream and the core's procedures.
#
# Theory of operation
# -------------------
# AsyncClient (_async/client.py) holds the public methods and the request
# loop; this class answers the requests with a trio Stream:
#   * Read: one receive_some() under a deadline of what is left of the
#     reply's Deadline; on a plain TCP stream, bytes already there are read
#     from the socket at once, with no deadline to set up;
#   * Write: on a plain TCP stream, one writev() of the buffers as they are;
#     what the socket did not take, and every write on any other stream,
#     goes by send_all() of each piece pieces_to_send cuts the buffers into
#     (a large body in views, never joined: an SSLStream encrypts a piece
#     at a time instead of the whole body), under the request's timeout;
#   * Poll: a receive only when the stream's socket is readable now. An
#     SSLStream is not polled: its socket turns readable for TLS records that
#     carry no data (TLS 1.3 session tickets), and a receive would then wait;
#     nor is a stream without a socket, such as trio's memory streams. Bytes
#     the server sent unasked are still refused when they are read;
#   * UpgradeTLS: wrap the stream in trio.SSLStream and do the handshake (a
#     stream given as an SSLStream is reported as it is).
# trio's own failures are translated at the edge (TooSlowError is a timeout,
# Broken/ClosedResourceError a lost connection, the ssl error kept as the
# cause) so the shared mapping in _common stays trio-free.
#
# Invariant: a cancellation or failure in the middle of a procedure marks the
# session failed and closes the stream at once (trio.aclose_forcefully), so a
# half-sent command is never followed by anything.
from __future__ import annotations

import contextlib
import functools
import os
import select
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio
from smtpbee._requests import Poll, PullBody, Read, Request, UpgradeTLS, Write
from smtpbee.transports._async.client import AsyncClient
from smtpbee.transports._async.one_call import send_with
from smtpbee.transports._async.pool import AsyncPool
from smtpbee.transports._common import is_verifying, tls_info
from smtpbee.transports._message import READ_SIZE
from smtpbee.transports._pool import AsyncJob
from smtpbee.transports._writes import pieces_to_send, unsent

__all__ = ["SMTPClient", "SMTPPool", "TrioSMTPClient", "send"]

# The most buffers one writev() takes (IOV_MAX is 1024 on Linux).
_MAX_BUFFERS = 512
# A socket's descriptor takes read() and writev() on POSIX, not on Windows.
_FD_IO = os.name == "posix" and hasattr(os, "writev")


class TrioSMTPClient(AsyncClient):
    """An SMTP client on a trio stream; the arguments are ClientBase's.

    ``sock`` may be a connected trio Stream (a trio.SSLStream means implicit
    TLS). Use ``async with`` (connect on entry, QUIT and close on exit).
    """

    _stream: trio.abc.Stream | None = None
    _takes_async_bodies = True

    @staticmethod
    def _is_tls(sock: Any) -> bool:
        return isinstance(sock, trio.SSLStream)

    @property
    def _connected(self) -> bool:
        return self._stream is not None

    def _plain(self, exc: BaseException) -> BaseException:
        return _as_builtin(exc)

    async def _open(self) -> Any:
        local = self.source_address[0] if self.source_address else None
        with trio.fail_after(self.connect_timeout):
            if self._sock_given is not None:
                self._stream = self._sock_given
            elif self.proxy is not None:
                sock = await self.proxy.connect_trio(
                    self._host, self.port, self.connect_timeout, self.source_address
                )
                self._stream = trio.SocketStream(sock)
            else:
                self._stream = await trio.open_tcp_stream(
                    self._host, self.port, happy_eyeballs_delay=0.25, local_address=local
                )
        socket = _socket_of(self._stream)
        return socket.getsockname() if socket is not None else None

    async def _serve(self, request: Request, body: Any) -> Any:
        stream = self._stream
        if stream is None:
            raise ConnectionError("the connection is closed")
        # On a plain TCP stream, what can be done at once is done on the socket
        # itself, with no CancelScope (entering one costs more than the
        # write): only a wait needs one. A CancelScope of our own rather than
        # trio.fail_after(), a context manager around one.
        fd = stream.socket.fileno() if _FD_IO and type(stream) is trio.SocketStream else None
        if isinstance(request, Read):
            now = trio.current_time()
            remaining = self._deadline.remaining(request, now)
            if fd is not None:
                await trio.lowlevel.checkpoint_if_cancelled()
                with contextlib.suppress(BlockingIOError):
                    data = os.read(fd, READ_SIZE)
                    # As trio's receive: other tasks get their turn.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return data
            with trio.CancelScope(deadline=now + max(remaining, 0)):
                return await stream.receive_some(READ_SIZE)
            raise trio.TooSlowError  # reached only when the deadline cancelled the read
        if isinstance(request, Write):
            buffers = request.buffers
            if fd is not None and len(buffers) <= _MAX_BUFFERS:
                # The read that follows is the schedule point.
                await trio.lowlevel.checkpoint_if_cancelled()
                with contextlib.suppress(BlockingIOError):
                    buffers = unsent(buffers, os.writev(fd, buffers))
                if not buffers:
                    return None
            with trio.CancelScope(deadline=trio.current_time() + request.timeout) as scope:
                for piece in pieces_to_send(buffers):
                    await stream.send_all(piece)
            if scope.cancelled_caught:
                raise trio.TooSlowError
            return None
        if isinstance(request, PullBody):
            if isinstance(body, AsyncIterator):
                return await anext(body, b"")
            return next(body, b"")
        if isinstance(request, Poll):
            socket = getattr(stream, "socket", None)
            if socket is None or not select.select([socket.fileno()], [], [], 0)[0]:
                return None
            return await stream.receive_some(READ_SIZE)
        assert isinstance(request, UpgradeTLS)
        with trio.fail_after(request.timeout):
            return await self._start_tls(stream)

    async def _start_tls(self, stream: trio.abc.Stream) -> bool:
        if isinstance(stream, trio.SSLStream):
            verified = is_verifying(stream.context)
        else:
            hostname = self.server_hostname
            stream = trio.SSLStream(stream, self.ssl_context, server_hostname=hostname)
            self._stream = stream
            await stream.do_handshake()
            verified = is_verifying(self.ssl_context)
        self.tls_info = tls_info(stream, verified)
        return verified

    def _new_lock(self) -> Any:
        return _TakenAtOnce(trio.Lock())

    async def _abort(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await trio.aclose_forcefully(stream)

    async def close(self) -> None:
        """Close the connection (no QUIT); safe to call twice."""
        stream, self._stream = self._stream, None
        if stream is not None:
            with trio.move_on_after(1.0) as scope:
                scope.shield = True
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.aclose()


def _socket_of(stream: Any) -> Any:
    """The trio socket under a SocketStream or an SSLStream over one, or None."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return getattr(stream, "socket", None)


def _as_builtin(exc: BaseException) -> BaseException:
    # trio's failures as the builtin ones _common maps; the original is the cause.
    if isinstance(exc, trio.TooSlowError):
        plain: BaseException = TimeoutError()
    elif isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError):
        plain = ConnectionError(str(exc.__cause__ or exc) or type(exc).__name__)
    else:
        return exc
    plain.__cause__ = exc
    return plain


SMTPClient = TrioSMTPClient

send = functools.partial(send_with, TrioSMTPClient)
"""Connect, log in if asked, send one message, QUIT (see send_with for the arguments)."""


class _TakenAtOnce:
    """A trio Lock or Semaphore that is taken at once when it is free.

    Their acquire() yields to the scheduler even then: once per message for
    the client's lock, and again for a pool's slot. The write that follows
    checks for a cancellation first, so one is still seen before anything is
    written.
    """

    def __init__(self, primitive: trio.Lock | trio.Semaphore) -> None:
        self._primitive = primitive

    async def __aenter__(self) -> None:
        try:
            self._primitive.acquire_nowait()
        except trio.WouldBlock:
            await self._primitive.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self._primitive.release()


class SMTPPool(AsyncPool):
    """Up to ``size`` TrioSMTPClient connections to one server; see AsyncPool."""

    _client_class = TrioSMTPClient

    def _new_slots(self, size: int) -> _TakenAtOnce:
        return _TakenAtOnce(trio.Semaphore(size))

    def _now(self) -> float:
        return trio.current_time()

    async def _sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    async def _run_all(self, workers: list[AsyncJob], stop: Callable[[], None]) -> None:
        async with trio.open_nursery() as nursery:
            for worker in workers:
                nursery.start_soon(worker)

    async def aclose(self) -> None:
        """The same as close()."""
        await self.close()
