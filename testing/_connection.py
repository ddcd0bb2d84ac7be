# smtpbee/testing/_connection
#
# One connection of a socket runner, written once as a generator of socket
# operations, so the thread, asyncio and trio runners are short loops that
# perform them (the same shape as the core's session procedures).
#
#     Recv(timeout)   -> bytes (b"" at EOF), None on timeout, or the OSError
#     Send(data)      -> None, or the OSError
#     ShutdownWrite() -> None, or the OSError (TCP FIN: no more writes)
#     Abort()         -> None (RST: SO_LINGER 0, then close)
#     Sleep(seconds)  -> None, or an exception if the server is stopping
#
# TLS is done here too, on ssl.MemoryBIO: the runners only move raw bytes, so
# STARTTLS and implicit TLS behave the same in every I/O world, and the bytes
# the client sent right behind STARTTLS (its ClientHello, or plaintext it
# should not have sent) go into the handshake, as on a real server.
#
# The runner closes the socket when the generator returns. A handler that
# raises propagates out of the generator: the runner keeps the error (it is
# raised when the server stops) and aborts the connection.
from __future__ import annotations

import contextlib
import ssl
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeAlias

from ._engine import Output, ServerSession
from ._model import Close, Drip, Inject, Pause, Reset, Stall, StartTLS

__all__ = ["Abort", "Op", "Recv", "Send", "ShutdownWrite", "Sleep", "serve_connection"]

READ_SIZE = 256 * 1024


@dataclass(frozen=True, slots=True)
class Recv:
    timeout: float


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes


@dataclass(frozen=True, slots=True)
class ShutdownWrite:
    pass


@dataclass(frozen=True, slots=True)
class Abort:
    pass


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Op: TypeAlias = Recv | Send | ShutdownWrite | Abort | Sleep
_Steps: TypeAlias = Generator[Op, Any, Any]


def serve_connection(session: ServerSession) -> Generator[Op, Any, None]:
    """Serve one accepted connection to its end."""
    yield from _Connection(session).run()


class _Connection:
    def __init__(self, session: ServerSession) -> None:
        self.session = session
        self.timeout = session.server.timeout
        self._tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()

    def run(self) -> _Steps:
        session = self.session
        outputs = session.start()
        while (yield from self._perform(outputs)):
            data = yield from self._receive(self.timeout)
            if isinstance(data, BaseException):
                session.connection_lost()
                return
            outputs = session.timeout() if data is None else session.receive(data)
            if data == b"":
                return

    def _perform(self, outputs: list[Output]) -> _Steps:
        """Do the outputs in order; False once the connection is over."""
        session = self.session
        for output in outputs:
            if isinstance(output, Inject):
                if (yield from self._send(output.data)) is not None:
                    session.connection_lost()
                    return False
            elif isinstance(output, Drip):
                for index in range(len(output.data)):
                    if (yield from self._send(output.data[index : index + 1])) is not None:
                        session.connection_lost()  # the client gave up: what drip is for
                        return False
                    if (yield Sleep(output.interval)) is not None:
                        return False
            elif isinstance(output, Pause):
                if (yield Sleep(output.seconds)) is not None:
                    return False
            elif isinstance(output, StartTLS):
                if not (yield from self._handshake()):
                    return False
                return (yield from self._perform(session.tls_started()))
            elif isinstance(output, Close):
                yield from self._close()
                return False
            elif isinstance(output, Reset):
                yield Abort()
                return False
            elif isinstance(output, Stall):
                yield from self._drain(self.timeout)
                return False
        return not session.ended

    # -- bytes, through TLS when it is on ------------------------------------------

    def _send(self, data: bytes) -> _Steps:
        if self._tls is None:
            return (yield Send(data))
        try:
            self._tls.write(data)
        except ssl.SSLError as error:
            return error
        return (yield from self._flush())

    def _flush(self) -> _Steps:
        pending = self._outgoing.read()
        if pending:
            return (yield Send(pending))
        return None

    def _receive(self, timeout: float) -> _Steps:
        if self._tls is None:
            return (yield Recv(timeout))
        while True:
            try:
                data = self._tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            except ssl.SSLError as error:
                return error
            else:
                failed = yield from self._flush()
                return failed if failed is not None else data
            failed = yield from self._flush()
            if failed is not None:
                return failed
            raw = yield Recv(timeout)
            if raw is None or isinstance(raw, BaseException):
                return raw
            if raw:
                self._incoming.write(raw)
            else:
                self._incoming.write_eof()

    def _handshake(self) -> _Steps:
        context = self.session.server.tls_context
        if context is None:
            raise RuntimeError("start_tls() needs the ScriptedServer's tls_context")
        tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._incoming.write(self.session.take_buffered())
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as error:
                yield from self._flush()  # the alert, so the client knows why
                self.session.tls_failed(error)
                return False
            failed = yield from self._flush()
            raw = failed if failed is not None else (yield Recv(self.timeout))
            if not raw or isinstance(raw, BaseException):
                reason = raw or ConnectionError("the client closed during the TLS handshake")
                self.session.tls_failed(reason if raw is not None else TimeoutError())
                return False
            self._incoming.write(raw)
        self._tls = tls
        return (yield from self._flush()) is None

    def _close(self) -> _Steps:
        # FIN first, then read until the client closes too (bounded): closing with
        # unread bytes queued would make the kernel send a RST, which can destroy the
        # last reply before the client has read it.
        if self._tls is not None:
            with contextlib.suppress(ssl.SSLError):
                self._tls.unwrap()  # close_notify
            yield from self._flush()
        if (yield ShutdownWrite()) is None:
            yield from self._drain(self.session.server.drain_timeout)

    def _drain(self, timeout: float) -> _Steps:
        """Record what arrives until the client closes, or ``timeout`` passes quietly."""
        while True:
            data = yield from self._receive(timeout)
            if data is None:
                return
            if isinstance(data, BaseException):
                self.session.connection_lost()
                return
            self.session.receive(data)
            if not data:
                return
