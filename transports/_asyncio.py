# smtpbee/transports/_asyncio
#
# The asyncio transport: a small Protocol of its own and the core's procedures.
#
# Theory of operation
# -------------------
# AsyncClient (_async/client.py) holds the public methods and the request
# loop; this class answers the requests with an asyncio transport:
#   * Read: what ByteStream has received, waiting (under what is left of the
#     reply's Deadline) when it has nothing;
#   * Write: the pieces of pieces_to_send (a large body in views, never
#     joined), each once the transport has room, under the request's timeout;
#   * Poll: what ByteStream holds already, without waiting;
#   * UpgradeTLS: loop.start_tls() on the same transport;
#   * PullBody: the next piece of a body (iterable or async iterable).
# ByteStream (_asyncio_stream) holds what the transport delivered; its reads
# share one loop timer, armed again only when a deadline comes earlier. A
# Write that waits for nothing has no timer.
#
# Invariant: cancellation (or any failure) in the middle of a procedure marks
# the session failed and aborts the transport, so nothing more goes out on
# that connection.
from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

from smtpbee._requests import Poll, PullBody, Read, Request, UpgradeTLS, Write
from smtpbee.transports._async.client import AsyncClient
from smtpbee.transports._async.one_call import send_with
from smtpbee.transports._async.pool import AsyncPool
from smtpbee.transports._asyncio_stream import ByteStream
from smtpbee.transports._common import is_verifying, tls_info
from smtpbee.transports._pool import AsyncJob
from smtpbee.transports._writes import pieces_to_send

__all__ = ["AsyncSMTPClient", "SMTPClient", "SMTPPool", "send"]


class AsyncSMTPClient(AsyncClient):
    """An SMTP client on asyncio; the arguments are ClientBase's.

    ``sock`` may be a connected socket. Use ``async with`` (connect on entry,
    QUIT and close on exit).
    """

    _stream: ByteStream | None = None
    _takes_async_bodies = True

    @property
    def _connected(self) -> bool:
        return self._stream is not None

    async def _open(self) -> Any:
        loop = asyncio.get_running_loop()
        stream = ByteStream()
        async with asyncio.timeout(self.connect_timeout):
            if self._sock_given is not None:
                await loop.create_connection(lambda: stream, sock=self._sock_given)
            elif self.proxy is not None:
                sock = await self.proxy.connect_asyncio(
                    self._host, self.port, self.connect_timeout, self.source_address
                )
                await loop.create_connection(lambda: stream, sock=sock)
            else:
                await loop.create_connection(
                    lambda: stream,
                    self._host,
                    self.port,
                    local_addr=self.source_address,
                    happy_eyeballs_delay=0.25,
                )
        self._stream = stream
        assert stream.transport is not None
        return stream.transport.get_extra_info("sockname")

    async def _serve(self, request: Request, body: Any) -> Any:
        stream = self._stream
        if stream is None or stream.transport is None:
            raise ConnectionError("the connection is closed")
        if isinstance(request, Read):
            remaining = self._deadline.remaining(request, asyncio.get_running_loop().time())
            return await stream.read(remaining)
        if isinstance(request, Write):
            pieces = pieces_to_send(request.buffers)
            if not stream.write(pieces):
                async with asyncio.timeout(request.timeout):
                    await stream.drain()
                    while not stream.write(pieces):
                        await stream.drain()
            return None
        if isinstance(request, PullBody):
            if isinstance(body, AsyncIterator):
                return await anext(body, b"")
            return next(body, b"")
        if isinstance(request, Poll):
            return stream.take()
        assert isinstance(request, UpgradeTLS)
        return await self._start_tls(stream, request.timeout)

    async def _start_tls(self, stream: ByteStream, timeout: float) -> bool:
        assert stream.transport is not None
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            transport = await loop.start_tls(
                stream.transport,
                stream,
                self.ssl_context,
                server_hostname=self.server_hostname,
                ssl_handshake_timeout=timeout,
            )
        assert isinstance(transport, asyncio.Transport)
        stream.transport = transport
        verified = is_verifying(self.ssl_context)
        self.tls_info = tls_info(transport.get_extra_info("ssl_object"), verified)
        return verified

    def _new_lock(self) -> Any:
        return asyncio.Lock()

    async def _abort(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None and stream.transport is not None:
            stream.transport.abort()

    async def close(self) -> None:
        """Close the connection (no QUIT); safe to call twice."""
        stream, self._stream = self._stream, None
        if stream is None or stream.transport is None:
            return
        stream.transport.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await asyncio.shield(stream.closed)


SMTPClient = AsyncSMTPClient

send = functools.partial(send_with, AsyncSMTPClient)
"""Connect, log in if asked, send one message, QUIT (see send_with for the arguments)."""


class SMTPPool(AsyncPool):
    """Up to ``size`` AsyncSMTPClient connections to one server; see AsyncPool."""

    _client_class = AsyncSMTPClient

    def _new_slots(self, size: int) -> asyncio.Semaphore:
        return asyncio.Semaphore(size)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def _run_all(self, workers: list[AsyncJob], stop: Callable[[], None]) -> None:
        # A task group, not gather(): if one worker fails, the others are
        # cancelled and awaited before this returns, like trio's nursery.
        async with asyncio.TaskGroup() as group:
            for worker in workers:
                group.create_task(worker())

    async def aclose(self) -> None:
        """The same as close()."""
        await self.close()
