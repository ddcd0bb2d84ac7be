# smtpbee/transports/_asyncio_stream
#
# The bytes an asyncio transport delivers, as the asyncio client reads them:
# a plain asyncio.Protocol rather than a StreamReader, so that what arrived
# and was not asked for (a Poll) can be handed to the core through public
# API, and a read waits under one loop timer of its own.
from __future__ import annotations

import asyncio
from collections.abc import Iterator

from smtpbee._requests import Buffer

__all__ = ["ByteStream"]


class ByteStream(asyncio.Protocol):
    """The bytes an asyncio transport delivers, and its flow control."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._received = bytearray()
        self._eof = False
        self._lost: BaseException | None = None
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._received += data
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._lost = exc or ConnectionResetError("the connection was closed")
        self._wake_reader()
        if not self.closed.done():
            self.closed.set_result(None)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def _wake_reader(self) -> None:
        if self._readable is not None and not self._readable.done():
            self._readable.set_result(None)

    def take(self) -> bytes | None:
        """What arrived and was not taken yet; b"" at the end; None if nothing."""
        if self._received:
            data = bytes(self._received)
            self._received.clear()
            return data
        return b"" if self._eof else None

    async def read(self, seconds: float) -> bytes:
        """What arrives within ``seconds``; TimeoutError when nothing does."""
        # One timer on the loop, not asyncio.timeout(): that one also counts
        # cancellations of the task, and a read is waited for twice a message.
        loop = asyncio.get_running_loop()
        expires = loop.time() + seconds
        while (data := self.take()) is None:
            readable = self._readable = loop.create_future()
            timer = loop.call_at(expires, _expire, readable)
            try:
                await readable
            finally:
                timer.cancel()
        return data

    def write(self, pieces: Iterator[Buffer]) -> bool:
        """Hand pieces to the transport until it asks for a pause; whether all went."""
        transport = self.transport
        if transport is None or self._lost is not None or transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        for piece in pieces:
            transport.write(piece)
            if self._writable is not None:
                return False
        return True

    async def drain(self) -> None:
        """Wait until the transport has room again (a pause ends)."""
        if self._writable is not None:
            await self._writable
            if self._lost is not None:
                raise ConnectionResetError("the connection was closed") from self._lost


def _expire(readable: asyncio.Future[None]) -> None:
    if not readable.done():
        readable.set_exception(TimeoutError())
