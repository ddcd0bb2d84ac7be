# smtpbee/testing/_driver
#
# The scripted server against the core alone: ProcedureDriver plays the
# transport for a ClientSession procedure (Write, Read, Poll, UpgradeTLS,
# PullBody; see smtpbee's I/O contract) and answers from a ServerSession, with
# no socket, no thread and no real time.
#
# Theory of operation
# -------------------
# What the server writes goes into a queue of (time, item) on a virtual
# clock: bytes, or the marks of its actions (it closed, it reset, it stalled,
# it awaits a handshake). pause() and drip() put later times on what follows.
# A Read takes everything already there at once (as a recv would), or waits
# on the clock for the next item; past the Read's deadline (a new deadline per
# reply, as the transports keep it) the driver throws SMTPTimeoutError into
# the procedure, as a transport would. A stalled server, or one that waits
# for the client, is a timeout; a close is b""; a reset throws
# ConnectionLostError into the next Read, Poll or Write. So a script runs the
# same here as over a socket, only without waiting.
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from smtpbee import ConnectionLostError, Poll, PullBody, Read, SMTPTimeoutError, UpgradeTLS, Write

from ._engine import Output, ServerSession
from ._model import Close, Command, Drip, Inject, Message, Pause, Reset, Stall, StartTLS, Transcript

if TYPE_CHECKING:
    from ._server import ScriptedServer

__all__ = ["ProcedureDriver"]

_T = TypeVar("_T")


class _Mark:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_CLOSED = _Mark("server closed")
_RESET = _Mark("server reset")
_SILENT = _Mark("server stalled")
_TLS = _Mark("server awaits the TLS handshake")


class ProcedureDriver:
    """Serves a `smtpbee.ClientSession` procedure's I/O requests from a scripted server.

    One driver is one connection: run the procedures of a session one after
    another (``open()``, ``sendmail()``, ``quit()``) with `run`.

    Args:
        server: the `ScriptedServer` to answer as.
        tls_verified: what a TLS handshake reports (was the certificate verified?).
        tls_error: an exception to throw into the procedure at the handshake
            instead (e.g. `smtpbee.TLSVerificationError`).

    Attributes:
        session: the server's `ServerSession` (transcript, commands, messages).
        requests: every request the procedures made, in order.
        now: the virtual clock, in seconds since the connection opened.
        write_error: None, or a function that sees the bytes of each Write and
            returns an exception to throw into the procedure instead (the
            connection broke while writing; the server gets nothing). A fault
            of the wire, not of the server, so it is not in the handler table.
    """

    def __init__(
        self,
        server: ScriptedServer,
        *,
        tls_verified: bool = True,
        tls_error: BaseException | None = None,
    ) -> None:
        self.session = ServerSession(server)
        self.tls_verified = tls_verified
        self.tls_error = tls_error
        self.requests: list[Any] = []
        self.write_error: Callable[[bytes], BaseException | None] | None = None
        self.now = 0.0
        self._deadline = 0.0
        self._server_time = 0.0
        self._queue: deque[tuple[float, bytes | _Mark]] = deque()
        self._schedule(self.session.start(), 0.0)

    # -- records ---------------------------------------------------------------------

    @property
    def transcript(self) -> Transcript:
        """The session's transcript (what the server read and wrote)."""
        return self.session.transcript

    @property
    def commands(self) -> list[Command]:
        """Every command the server read, in order."""
        return self.session.commands

    @property
    def messages(self) -> list[Message]:
        """Every message the server accepted, in order."""
        return self.session.messages

    @property
    def written(self) -> bytes:
        """Every byte the procedures wrote (delivered or not), joined."""
        return b"".join(r.data for r in self.requests if isinstance(r, Write))

    # -- serving ---------------------------------------------------------------------

    def run(self, procedure: Generator[Any, Any, _T], body: Iterable[bytes] = ()) -> _T:
        """Serve ``procedure`` to its end and return its result (or raise its error).

        Args:
            procedure: a generator of I/O requests, e.g. ``session.sendmail(...)``.
            body: the pieces PullBody hands over, in order (b"" ends a message).
        """
        pieces = iter(body)
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                request = procedure.throw(error) if error is not None else procedure.send(result)
            except StopIteration as stop:
                value: _T = stop.value
                return value
            self.requests.append(request)
            result, error = None, None
            try:
                result = self._serve(request, pieces)
            except (SMTPTimeoutError, ConnectionLostError) as failure:
                error = failure
            except BaseException as failure:
                if not isinstance(request, Write) or self.write_error is None:
                    raise
                error = failure  # what write_error chose, whatever it is

    def _serve(self, request: Any, pieces: Iterator[bytes]) -> Any:
        if isinstance(request, Write):
            return self._write(request.data)
        if isinstance(request, Read):
            if request.new_wait:
                self._deadline = self.now + request.timeout
            return self._read(request.phase.description)
        if isinstance(request, Poll):
            return self._poll()
        if isinstance(request, UpgradeTLS):
            return self._handshake(request.timeout)
        if isinstance(request, PullBody):
            return next(pieces, b"")
        raise TypeError(f"not an I/O request of smtpbee: {request!r}")

    def _write(self, data: bytes) -> None:
        if self._reached(_RESET):
            raise ConnectionLostError("connection reset by the server while writing")
        failure = self.write_error(data) if self.write_error is not None else None
        if failure is not None:
            raise failure
        self._schedule(self.session.receive(data), self.now)

    def _read(self, awaited: str) -> bytes:
        taken = self._take(self._deadline)
        if taken is not None:
            return taken
        self.now = max(self.now, self._deadline)
        raise SMTPTimeoutError(f"timed out waiting for {awaited}")

    def _poll(self) -> bytes | None:
        return self._take(self.now)

    def _take(self, until: float) -> bytes | None:
        """What has arrived by ``until`` (then the clock moves there), b"" at a close."""
        if not self._queue or self._queue[0][0] > until:
            return None
        at, item = self._queue[0]
        if item is _CLOSED or item is _RESET:
            self.now = max(self.now, at)
            if item is _RESET:
                raise ConnectionLostError("connection reset by the server")
            return b""
        if not isinstance(item, bytes):
            return None  # stalled, or waiting for a handshake: nothing will come
        self.now = max(self.now, at)
        taken = bytearray()
        while self._queue and self._queue[0][0] <= self.now:
            piece = self._queue[0][1]
            if not isinstance(piece, bytes):
                break
            taken += piece
            self._queue.popleft()
        return bytes(taken)

    def _handshake(self, timeout: float) -> bool:
        deadline = self.now + timeout
        if not self._queue or self._queue[0][0] > deadline or self._queue[0][1] is _SILENT:
            self.now = deadline
            raise SMTPTimeoutError("timed out during the TLS handshake")
        at, item = self._queue[0]
        self.now = max(self.now, at)
        if item is not _TLS:
            raise ConnectionLostError(f"TLS handshake failed: the server sent {item!r}")
        self._queue.popleft()
        if self.tls_error is not None:
            self.session.tls_failed(self.tls_error)
            raise self.tls_error
        self._schedule(self.session.tls_started(), self.now)
        return self.tls_verified

    def _reached(self, mark: _Mark) -> bool:
        return any(item is mark and at <= self.now for at, item in self._queue)

    def _schedule(self, outputs: list[Output], start: float) -> None:
        at = max(start, self._server_time)
        for output in outputs:
            if isinstance(output, Inject):
                self._queue.append((at, output.data))
            elif isinstance(output, Drip):
                for index in range(len(output.data)):
                    self._queue.append((at, output.data[index : index + 1]))
                    at += output.interval
            elif isinstance(output, Pause):
                at += output.seconds
            elif isinstance(output, StartTLS):
                self._queue.append((at, _TLS))
            elif isinstance(output, Close):
                self._queue.append((at, _CLOSED))
            elif isinstance(output, Reset):
                self._queue.append((at, _RESET))
            elif isinstance(output, Stall):
                self._queue.append((at, _SILENT))
        self._server_time = at
