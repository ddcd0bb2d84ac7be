# smtpbee/transports/_trio
#
# The trio transport: one trio Stream and the core's procedures.
#
# Theory of operation
# -------------------
# As in the other transports, each method plans a procedure and _run() answers
# its requests: a read is one receive_some() under fail_after() with what is
# left of the reply's Deadline, a write is send_all() under the request's
# timeout, STARTTLS wraps the stream in trio.SSLStream and does the handshake.
# trio's own failures are translated at the edge of _serve (TooSlowError is a
# timeout, Broken/ClosedResourceError a lost connection, the ssl error kept as
# the cause) so the shared mapping in _common stays trio-free.
#
# Invariants: a cancellation or failure in the middle of a procedure marks the
# session failed and closes the stream at once (trio.aclose_forcefully), so a
# half-sent command is never followed by anything. A SocketStream does not
# read ahead, so no plaintext byte can wait in a user-space buffer at STARTTLS.
from __future__ import annotations

import contextlib
import email.message
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Sequence,
)
from typing import Any, cast

import trio
from smtpbee._errors import LocalProtocolError
from smtpbee._extensions import Extensions
from smtpbee._requests import PullBody, Read, Request, TLSMode, Write
from smtpbee._transaction import SendResult
from smtpbee.transports._async import AsyncClientBase, Pieces, send_one
from smtpbee.transports._common import (
    Deadline,
    as_smtp_error,
    tls_info,
)
from smtpbee.transports._message import READ_SIZE
from smtpbee.transports._pool import PoolBase

__all__ = ["SMTPClient", "SMTPPool", "TrioSMTPClient", "send"]


class TrioSMTPClient(AsyncClientBase):
    """An SMTP client on a trio stream; see ClientBase for the arguments.

    ``sock`` may be a connected trio Stream. Use ``async with`` (connect on
    entry, QUIT and close on exit).
    """

    _stream: trio.abc.Stream | None = None
    _deadline = Deadline()

    @property
    def _connected(self) -> bool:
        return self._stream is not None

    def _plain(self, exc: BaseException) -> BaseException:
        return _as_builtin(exc)

    async def connect(self) -> Extensions:
        """Connect, wrap implicit TLS, read the greeting, EHLO, STARTTLS as the mode says."""
        if self._stream is not None:
            raise LocalProtocolError("already connected")
        local = self.source_address[0] if self.source_address else None
        try:
            with trio.fail_after(self.connect_timeout):
                if self._sock_given is not None:
                    self._stream = self._sock_given
                else:
                    self._stream = await trio.open_tcp_stream(
                        cast(str, self.host),
                        self.port,
                        happy_eyeballs_delay=0.25,
                        local_address=local,
                    )
                socket = getattr(self._stream, "socket", None)
                sockname = socket.getsockname() if socket is not None else None
                if self.tls_mode is TLSMode.IMPLICIT:
                    await self._start_tls()
        except BaseException as exc:
            await self._abort()
            error = as_smtp_error(_as_builtin(exc), f"connecting to {self.host}:{self.port}")
            if error is None:
                raise
            raise error from error.__cause__
        self._new_session(sockname)
        return cast(Extensions, await self._run(self.session.open()))

    async def _start_tls(self) -> bool:
        assert self._stream is not None
        hostname = self.server_hostname
        stream = trio.SSLStream(self._stream, self.ssl_context, server_hostname=hostname)
        self._stream = stream
        await stream.do_handshake()
        self.tls_info = tls_info(stream, self.verified_context)
        return self.verified_context

    async def _serve(self, request: Request, body: Pieces) -> Any:
        stream = self._stream
        if stream is None:
            raise ConnectionError("the connection is closed")
        if isinstance(request, Read):
            remaining = self._deadline.remaining(request, trio.current_time())
            with trio.fail_after(max(remaining, 0)):
                return await stream.receive_some(READ_SIZE)
        if isinstance(request, Write):
            with trio.fail_after(request.timeout):
                await stream.send_all(request.data)
            return None
        if isinstance(request, PullBody):
            if isinstance(body, AsyncIterator):
                return await anext(body, b"")
            return next(body, b"")
        with trio.fail_after(self.timeouts.command):
            return await self._start_tls()

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


class SMTPPool(PoolBase):
    """Up to ``size`` TrioSMTPClient connections to one server; see PoolBase."""

    def __init__(self, host: str, port: int = 25, *, size: int = 4, **kwargs: Any) -> None:
        super().__init__(host, port, size=size, **kwargs)
        self._slots = trio.Semaphore(size)

    def _new_client(self) -> TrioSMTPClient:
        return TrioSMTPClient(self.host, self.port, **self._client_kwargs)

    def _slot(self) -> trio.Semaphore:
        return self._slots

    async def _run_all(self, jobs: list[Callable[[], Awaitable[None]]]) -> None:
        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(job)


async def send(
    message_or_body: email.message.Message | Any,
    *,
    host: str,
    port: int = 25,
    sender: str | None = None,
    recipients: Sequence[str] | None = None,
    username: str | None = None,
    password: str | None = None,
    **client_kwargs: Any,
) -> SendResult:
    """Connect, log in if asked, send one message, QUIT."""
    client = TrioSMTPClient(host, port, **client_kwargs)
    return await send_one(
        client,
        message_or_body,
        sender=sender,
        recipients=recipients,
        username=username,
        password=password,
    )
