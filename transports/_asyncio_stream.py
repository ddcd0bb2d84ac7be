# smtpbee/transports/_asyncio_stream
#
# The bytes an asyncio transport delivers, as the asyncio client reads them:
# a plain asyncio.Protocol rather than a StreamReader, so that what arrived
# and was not asked for (a Poll) can be handed to the core through public
# API, and reads share one loop timer that is armed again only when a
# deadline comes earlier than the one it watches.
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
        # When the waiting read runs out, and the timer that checks it.
        self._expires = 0.0
        self._timer: asyncio.TimerHandle | None = None

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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
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
        data = self.take()
        if data is not None:
            return data
        loop = asyncio.get_running_loop()
        self._expires = expires = loop.time() + seconds
        # The timer armed for an earlier read is kept when it fires no later
        # than this read may wait: it then finds time left and arms itself
        # again. Each phase waits minutes, so a message arms no timer at all.
        timer = self._timer
        if timer is None or timer.when() > expires:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(expires, self._check_expiry)
        while (data := self.take()) is None:
            self._readable = loop.create_future()
            await self._readable
        return data

    def _check_expiry(self) -> None:
        readable = self._readable
        self._timer = None
        if readable is None or readable.done():
            return  # no read is waiting: the next one arms its own timer
        loop = asyncio.get_running_loop()
        if loop.time() >= self._expires:
            readable.set_exception(TimeoutError())
        else:
            self._timer = loop.call_at(self._expires, self._check_expiry)

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
