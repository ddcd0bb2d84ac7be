# smtpbee/testing/_running
#
# What every running scripted server offers (the records of its sessions),
# the loopback listener they share, and the runner that serves in threads.
#
# Invariants of the threaded runner: every socket operation has a deadline
# (the server's timeout), so a connection never hangs a test; stop() lets
# connections end on their own for a moment, then shuts their sockets down
# (which wakes a thread blocked in recv) and joins every thread; a handler
# that raised is re-raised by stop() (and by check()), once.
from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._connection import READ_SIZE, Abort, Op, Recv, Send, ShutdownWrite, Sleep, serve_connection
from ._engine import ServerSession, _Run
from ._model import Command, Message, Transcript

if TYPE_CHECKING:
    from ._server import ScriptedServer

__all__ = ["RunningServer", "ThreadedServer", "bind_loopback"]

_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def bind_loopback(host: str) -> socket.socket:
    """A listening TCP socket on a free port of 127.0.0.1 or ::1."""
    if host not in _LOOPBACK:
        raise ValueError(f"a scripted server listens on 127.0.0.1 or ::1 only, not {host!r}")
    if host == "localhost":
        host = "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        sock.listen(16)
    except BaseException:
        sock.close()
        raise
    return sock


def abort_socket(sock: Any) -> None:
    """Make close() send a RST and drop what is unsent (SO_LINGER on, 0 seconds).

    ``sock`` is a socket of the standard library or of trio.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class RunningServer:
    """A scripted server that is serving: where it listens and what it recorded.

    Attributes:
        server: the `ScriptedServer` it follows.
        host: the address it listens on (127.0.0.1 or ::1).
        port: the port it listens on.
    """

    def __init__(self, server: ScriptedServer) -> None:
        self.server = server
        self._run = _Run(server)
        self._listener = bind_loopback(server.host)
        self.host: str = self._listener.getsockname()[0]
        self.port: int = self._listener.getsockname()[1]
        self._accepted = 0
        self._active = 0

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, to connect to."""
        return (self.host, self.port)

    @property
    def sessions(self) -> list[ServerSession]:
        """One `ServerSession` per accepted connection, in order."""
        return self._run.sessions

    @property
    def transcript(self) -> Transcript:
        """The transcripts of every session, one after the other."""
        return Transcript(entry for s in self.sessions for entry in s.transcript)

    @property
    def commands(self) -> list[Command]:
        """Every command of every session, in order."""
        return [command for s in self.sessions for command in s.commands]

    @property
    def messages(self) -> list[Message]:
        """Every message accepted, in order."""
        return [message for s in self.sessions for message in s.messages]

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by handlers (each ended its connection), not yet raised here."""
        return self._run.errors

    def done(self, connections: int = 1) -> bool:
        """Whether at least ``connections`` were accepted and every one has ended."""
        return self._accepted >= connections and self._active == 0

    def check(self) -> None:
        """Raise the first exception a handler raised (once), if any."""
        if self._run.errors:
            error = self._run.errors[0]
            self._run.errors.clear()
            raise error

    def _failed(self, error: BaseException, session: ServerSession) -> None:
        tail = session.transcript[-4:]
        error.add_note(f"scripted server: a handler failed; the transcript ends {tail}")
        self._run.errors.append(error)


class ThreadedServer(RunningServer):
    """A scripted server serving each connection in a thread of its own.

    Blocking clients use it directly; asyncio and trio clients too (it is a
    real socket on loopback). Use it as a context manager, or ``start()`` and
    ``stop()``.
    """

    def __init__(self, server: ScriptedServer) -> None:
        super().__init__(server)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"scripted-smtp-{self.port}", daemon=True
        )

    def start(self) -> ThreadedServer:
        """Start accepting connections; returns self."""
        self._acceptor.start()
        return self

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def wait(self, connections: int = 1, timeout: float = 30.0) -> None:
        """Block until ``done(connections)``, then raise what a handler raised.

        Raises:
            TimeoutError: the connections had not all ended within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while not self.done(connections):
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self._accepted} connection(s) accepted, {self._active} still open"
                    f" after {timeout}s (waiting for {connections} to end)"
                )
            time.sleep(0.005)
        self.check()

    def stop(self, grace: float = 1.0) -> None:
        """Let open connections end for ``grace`` seconds, abort the rest, join every thread.

        Raises:
            BaseException: what a handler raised, if not raised yet.
        """
        self._stopping.set()
        self._listener.close()
        if self._acceptor.ident is not None:
            self._acceptor.join()
        deadline = time.monotonic() + grace
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join()
        self.check()

    def _accept_loop(self) -> None:
        self._listener.settimeout(0.05)
        while not self._stopping.is_set():
            try:
                sock, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._accepted += 1
                self._active += 1
                self._sockets.add(sock)
            thread = threading.Thread(
                target=self._serve,
                args=(sock, peer),
                name=f"scripted-smtp-{self.port}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, peer: Any) -> None:
        session = ServerSession(self.server, self._run)
        session.peer = (peer[0], peer[1])
        steps = serve_connection(session)
        result: Any = None
        try:
            while True:
                op = steps.send(result)
                result = self._perform(sock, op)
        except StopIteration:
            pass
        except BaseException as error:
            self._failed(error, session)
            abort_socket(sock)
        finally:
            steps.close()
            sock.close()
            with self._lock:
                self._sockets.discard(sock)
                self._active -= 1

    def _perform(self, sock: socket.socket, op: Op) -> Any:
        try:
            if isinstance(op, Recv):
                if self._stopping.is_set() and op.timeout > 0.2:
                    sock.settimeout(0.2)
                else:
                    sock.settimeout(op.timeout)
                try:
                    return sock.recv(READ_SIZE)
                except TimeoutError:
                    return None
            if isinstance(op, Send):
                sock.settimeout(self.server.timeout)
                sock.sendall(op.data)
                return None
            if isinstance(op, ShutdownWrite):
                sock.shutdown(socket.SHUT_WR)
                return None
            if isinstance(op, Abort):
                abort_socket(sock)
                return None
            assert isinstance(op, Sleep)
            if self._stopping.wait(op.seconds):
                return InterruptedError("the scripted server is stopping")
            return None
        except OSError as error:
            return error
