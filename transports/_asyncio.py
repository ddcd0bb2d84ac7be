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
    AsyncIterator,
    Awaitable,
    Callable,
    Sequence,
)
from typing import Any, cast

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

__all__ = ["AsyncSMTPClient", "SMTPClient", "SMTPPool", "send"]

_WRITE_SLICE = 1 << 20


class AsyncSMTPClient(AsyncClientBase):
    """An SMTP client on asyncio streams; see ClientBase for the arguments.

    ``sock`` may be a connected socket or a (StreamReader, StreamWriter) pair.
    Use ``async with`` (connect on entry, QUIT and close on exit).
    """

    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _deadline = Deadline()

    @property
    def _connected(self) -> bool:
        return self._writer is not None

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
            await self._abort()
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

    async def _serve(self, request: Request, body: Pieces) -> Any:
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

    async def _abort(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.transport.abort()

    async def close(self) -> None:
        """Close the connection (no QUIT); safe to call twice."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()


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
    client = AsyncSMTPClient(host, port, **client_kwargs)
    return await send_one(
        client,
        message_or_body,
        sender=sender,
        recipients=recipients,
        username=username,
        password=password,
    )
