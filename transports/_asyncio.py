# smtpbee/transports/_asyncio
#
# The asyncio transport: a StreamReader/StreamWriter pair and the core's procedures.
#
# Theory of operation
# -------------------
# As in the blocking transport, each method plans a procedure and _run()
# answers its requests; here with awaits under asyncio.timeout(). A write is
# write() plus drain() within the request's timeout; a read is one read() within
# what is left of the reply's Deadline; STARTTLS is StreamWriter.start_tls().
#
# Invariants:
#   * cancellation (or any failure) in the middle of a procedure leaves no
#     half-written command behind: the session is marked failed and the
#     transport aborted, so nothing more goes out on that connection;
#   * StreamReader buffers ahead: at STARTTLS whatever it holds is handed to the
#     core first, which refuses it (StartTLSInjectionError) before any handshake.
from __future__ import annotations

import asyncio
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

__all__ = ["AsyncSMTPClient", "SMTPClient", "SMTPPool", "send"]

_Pieces = Iterator[bytes] | AsyncIterator[bytes]
_NO_BODY: Iterator[bytes] = iter(())
_WRITE_SLICE = 1 << 20


class AsyncSMTPClient(ClientBase):
    """An SMTP client on asyncio streams; see ClientBase for the arguments.

    ``sock`` may be a connected socket or a (StreamReader, StreamWriter) pair.
    Use ``async with`` (connect on entry, QUIT and close on exit).
    """

    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _deadline = Deadline()

    async def connect(self) -> Extensions:
        """Connect, wrap implicit TLS, read the greeting, EHLO, STARTTLS as the mode says."""
        if self._writer is not None:
            raise LocalProtocolError("already connected")
        given = self._sock_given
        try:
            async with asyncio.timeout(self.connect_timeout):
                if isinstance(given, tuple):
                    self._reader, self._writer = given
                elif given is not None:
                    self._reader, self._writer = await asyncio.open_connection(sock=given)
                else:
                    self._reader, self._writer = await asyncio.open_connection(
                        self.host,
                        self.port,
                        local_addr=self.source_address,
                        happy_eyeballs_delay=0.25,
                    )
                sockname = self._writer.get_extra_info("sockname")
                if self.tls_mode is TLSMode.IMPLICIT:
                    await self._start_tls(self.connect_timeout)
        except Exception as exc:
            self._abort()
            error = as_smtp_error(exc, f"connecting to {self.host}:{self.port}")
            if error is None:
                raise
            raise error from error.__cause__
        self._new_session(sockname)
        return cast(Extensions, await self._run(self.session.open()))

    async def _start_tls(self, timeout: float) -> bool:
        assert self._writer is not None
        await self._writer.start_tls(
            self.ssl_context, server_hostname=self.server_hostname, ssl_handshake_timeout=timeout
        )
        self.tls_info = tls_info(self._writer.get_extra_info("ssl_object"), self.verified_context)
        return self.verified_context

    async def _serve(self, request: Request, body: _Pieces) -> Any:
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            raise ConnectionError("the connection is closed")
        if isinstance(request, Read):
            remaining = self._deadline.remaining(request, asyncio.get_running_loop().time())
            async with asyncio.timeout(max(remaining, 0)):
                return await reader.read(READ_SIZE)
        if isinstance(request, Write):
            # In slices: the transport copies what it cannot send at once, so a
            # large body written whole would be held twice.
            data = memoryview(request.data)
            async with asyncio.timeout(request.timeout):
                for start in range(0, len(data), _WRITE_SLICE):
                    writer.write(data[start : start + _WRITE_SLICE])
                    await writer.drain()
            return None
        if isinstance(request, PullBody):
            if isinstance(body, AsyncIterator):
                return await anext(body, b"")
            return next(body, b"")
        # The reader's buffer is not public API; reading it is the only way to
        # see bytes that arrived after the 220 and were not yet asked for.
        self._refuse_early_bytes(bytes(getattr(reader, "_buffer", b"")))
        return await self._start_tls(self.timeouts.command)

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
                    error = as_smtp_error(exc, describe(item))
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
                self._abort()
            raise
        if not self.usable:
            self._abort()
        return item

    def _abort(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.transport.abort()

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
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def __aenter__(self) -> AsyncSMTPClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if self.usable and self._writer is not None:
                await self.quit()
        except SMTPError:
            pass
        finally:
            await self.close()


SMTPClient = AsyncSMTPClient


class SMTPPool(PoolBase):
    """Up to ``size`` AsyncSMTPClient connections to one server; see PoolBase."""

    def __init__(self, host: str, port: int = 25, *, size: int = 4, **kwargs: Any) -> None:
        super().__init__(host, port, size=size, **kwargs)
        self._slots = asyncio.Semaphore(size)

    def _new_client(self) -> AsyncSMTPClient:
        return AsyncSMTPClient(self.host, self.port, **self._client_kwargs)

    def _slot(self) -> asyncio.Semaphore:
        return self._slots

    async def _run_all(self, jobs: list[Callable[[], Awaitable[None]]]) -> None:
        await asyncio.gather(*(job() for job in jobs))


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
    async with AsyncSMTPClient(host, port, **client_kwargs) as client:
        if username is not None:
            await client.login(username, password or "")
        if is_message:
            return await client.send_message(message_or_body, sender=sender, recipients=recipients)
        assert sender is not None and recipients is not None
        return await client.sendmail(sender, recipients, message_or_body)
