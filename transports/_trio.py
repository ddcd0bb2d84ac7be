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
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, cast

import trio
from smtpbee._auth import SASLMechanism
from smtpbee._commands import Command
from smtpbee._errors import InvalidInputError, LocalProtocolError, SMTPError
from smtpbee._extensions import Extensions
from smtpbee._replies import Reply
from smtpbee._requests import Procedure, PullBody, Read, Request, TLSMode, Write
from smtpbee._transaction import SendResult
from smtpbee.transports._common import (
    ClientBase,
    Deadline,
    as_smtp_error,
    describe,
    step,
    tls_info,
)
from smtpbee.transports._message import READ_SIZE
from smtpbee.transports._pool import PoolBase

__all__ = ["SMTPClient", "SMTPPool", "TrioSMTPClient", "send"]

_Pieces = Iterator[bytes] | AsyncIterator[bytes]
_NO_BODY: Iterator[bytes] = iter(())


class TrioSMTPClient(ClientBase):
    """An SMTP client on a trio stream; see ClientBase for the arguments.

    ``sock`` may be a connected trio Stream. Use ``async with`` (connect on
    entry, QUIT and close on exit).
    """

    _stream: trio.abc.Stream | None = None
    _deadline = Deadline()

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
            error = as_smtp_error(_plain(exc), f"connecting to {self.host}:{self.port}")
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

    async def _serve(self, request: Request, body: _Pieces) -> Any:
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

    async def _run(
        self, proc: Procedure, body: Iterator[bytes] | AsyncIterable[bytes] = _NO_BODY
    ) -> Any:
        pieces: _Pieces = aiter(body) if isinstance(body, AsyncIterable) else body
        self._deadline = Deadline()
        try:
            done, item = step(proc)
            while not done:
                try:
                    result = await self._serve(item, pieces)
                except Exception as exc:
                    error = as_smtp_error(_plain(exc), describe(item))
                    if error is None:
                        raise
                    done, item = step(proc, error=error)
                else:
                    done, item = step(proc, result)
        except BaseException as exc:
            if not isinstance(exc, SMTPError) and self._session is not None:
                # Cancelled or interrupted mid-procedure: the server's view is unknown.
                self._session.conn.send_failed()
                proc.close()
            if not self.usable:
                await self._abort()
            raise
        if not self.usable:
            await self._abort()
        return item

    async def _abort(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await trio.aclose_forcefully(stream)

    # -- the public methods: plan, then run ---------------------------------------------

    async def ehlo(self) -> Reply:
        """EHLO again (HELO if refused); returns the reply."""
        return cast(Reply, await self._run(self.session.hello()))

    async def starttls(self) -> Reply:
        """STARTTLS now (for tls="none"); returns the reply to the new EHLO."""
        return cast(Reply, await self._run(self.session.starttls()))

    async def login(
        self,
        username: str,
        password: str,
        *,
        mechanism: str | None = None,
        allow_insecure: bool = False,
    ) -> Reply:
        """AUTH with a password, the strongest offered mechanism unless one is named."""
        plan = self._plan_login(username, password, mechanism, allow_insecure)
        return cast(Reply, await self._run(plan))

    async def authenticate(
        self, mechanism: SASLMechanism, *, allow_insecure: bool = False
    ) -> Reply:
        """AUTH with a SASL mechanism object."""
        return cast(Reply, await self._run(self._plan_auth(mechanism, allow_insecure)))

    async def send_message(
        self,
        msg: email.message.Message,
        *,
        sender: str | None = None,
        recipients: Sequence[str] | None = None,
        mail_options: Mapping[str, Any] | None = None,
        rcpt_options: Mapping[str, Any] | None = None,
    ) -> SendResult:
        """Send an email message; the envelope comes from its headers unless given."""
        proc, body = self._plan_message(msg, sender, recipients, mail_options, rcpt_options)
        return cast(SendResult, await self._run(proc, body))

    async def sendmail(
        self,
        sender: str,
        recipients: str | Sequence[str],
        body: Any,
        *,
        mail_options: Mapping[str, Any] | None = None,
        rcpt_options: Mapping[str, Any] | None = None,
        smtputf8: bool = False,
    ) -> SendResult:
        """Send a body (bytes, a binary file, an iterable or async iterable of bytes)."""
        proc, pieces = self._plan_sendmail(
            sender, recipients, body, mail_options, rcpt_options, smtputf8
        )
        return cast(SendResult, await self._run(proc, pieces))

    async def sendmail_many(
        self, jobs: Iterable[tuple[str, str | Sequence[str], Any]]
    ) -> list[SendResult | SMTPError | None]:
        """Send several messages, overlapping them where the server allows.

        Each job is ``(sender, recipients, body)``. With PIPELINING, one message's
        terminator and the next one's envelope share a write: one round trip per
        message. Returns, per job, its SendResult, the SMTPError that ended it,
        or None if the session ended before it was tried.
        """
        proc, bodies = self._plan_sendmail_many(jobs)
        return cast("list[SendResult | SMTPError | None]", await self._run(proc, bodies))

    async def command(self, command: Command) -> Reply:
        """Send one command object; returns its reply, refusals included."""
        return cast(Reply, await self._run(self._plan_command(command)))

    async def pipeline(self, commands: Sequence[Command]) -> list[Reply]:
        """Send commands in one write; returns their replies in order."""
        return cast("list[Reply]", await self._run(self.session.pipeline(commands)))

    async def noop(self) -> Reply:
        return cast(Reply, await self._run(self.session.noop()))

    async def rset(self) -> Reply:
        return cast(Reply, await self._run(self.session.rset()))

    async def vrfy(self, address: str) -> Reply:
        return cast(Reply, await self._run(self.session.vrfy(address)))

    async def expn(self, address: str) -> Reply:
        return cast(Reply, await self._run(self.session.expn(address)))

    async def help(self, topic: str = "") -> Reply:
        return cast(Reply, await self._run(self.session.help(topic)))

    async def quit(self) -> Reply:
        """QUIT, then close the connection."""
        try:
            return cast(Reply, await self._run(self.session.quit()))
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the connection (no QUIT); safe to call twice."""
        stream, self._stream = self._stream, None
        if stream is not None:
            with trio.move_on_after(1.0) as scope:
                scope.shield = True
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.aclose()

    async def __aenter__(self) -> TrioSMTPClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if self.usable and self._stream is not None:
                await self.quit()
        except SMTPError:
            pass
        finally:
            await self.close()


def _plain(exc: BaseException) -> BaseException:
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
    is_message = isinstance(message_or_body, email.message.Message)
    if not is_message and (sender is None or recipients is None):
        raise InvalidInputError("a raw body needs sender= and recipients=")
    async with TrioSMTPClient(host, port, **client_kwargs) as client:
        if username is not None:
            await client.login(username, password or "")
        if is_message:
            return await client.send_message(message_or_body, sender=sender, recipients=recipients)
        assert sender is not None and recipients is not None
        return await client.sendmail(sender, recipients, message_or_body)
