# smtpbee/testing/_trio
#
# The scripted server under trio: an async context manager that opens a
# nursery, accepts in one task and serves each connection in a task of its
# own, performing the socket operations of _connection with trio sockets (TLS
# is done there, on memory BIOs). trio is imported only here, when the runner
# is used. Leaving the context lets open connections end for a moment, then
# cancels the nursery; a handler that raised is re-raised then.
from __future__ import annotations

import socket
from types import TracebackType
from typing import TYPE_CHECKING, Any

import trio

from ._connection import READ_SIZE, Abort, Op, Recv, Send, ShutdownWrite, Sleep, serve_connection
from ._engine import ServerSession
from ._running import RunningServer, abort_socket

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

__all__ = ["TrioServer"]


class TrioServer(RunningServer):
    """A scripted server serving in tasks of a trio nursery.

    ``async with server.serve_trio() as running:`` starts it; the block runs
    while it serves, in the task that entered it.
    """

    async def __aenter__(self) -> TrioServer:
        self._listener.setblocking(False)
        self._trio_listener = trio.socket.from_stdlib_socket(self._listener)
        self._manager: AbstractAsyncContextManager[trio.Nursery] = trio.open_nursery()
        self._nursery = await self._manager.__aenter__()
        self._nursery.start_soon(self._accept_loop)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop(kind is None)
        try:
            await self._manager.__aexit__(kind, exc, tb)
        finally:
            self._trio_listener.close()
        self.check()

    async def wait(self, connections: int = 1, timeout: float = 30.0) -> None:
        """Wait until ``done(connections)``, then raise what a handler raised.

        Raises:
            TimeoutError: the connections had not all ended within ``timeout``.
        """
        with trio.fail_after(timeout):
            while not self.done(connections):
                await trio.sleep(0.005)
        self.check()

    async def _stop(self, graceful: bool, grace: float = 1.0) -> None:
        if graceful:
            with trio.move_on_after(grace):
                while self._active:
                    await trio.sleep(0.005)
        self._nursery.cancel_scope.cancel()

    async def _accept_loop(self) -> None:
        while True:
            try:
                trio_sock, peer = await self._trio_listener.accept()
            except (OSError, trio.ClosedResourceError):
                return
            self._accepted += 1
            self._active += 1
            self._nursery.start_soon(self._serve, trio_sock, peer)

    async def _serve(self, sock: trio.socket.SocketType, peer: Any) -> None:
        session = ServerSession(self.server, self._run)
        session.peer = (peer[0], peer[1])
        steps = serve_connection(session)
        result: Any = None
        try:
            while True:
                op = steps.send(result)
                result = await self._perform(sock, op)
        except StopIteration:
            pass
        except trio.Cancelled:
            abort_socket(sock)
            raise
        except BaseException as error:
            self._failed(error, session)
            abort_socket(sock)
        finally:
            steps.close()
            sock.close()
            self._active -= 1

    async def _perform(self, sock: trio.socket.SocketType, op: Op) -> Any:
        try:
            if isinstance(op, Recv):
                with trio.move_on_after(op.timeout):
                    return await sock.recv(READ_SIZE)
                return None
            if isinstance(op, Send):
                with trio.fail_after(self.server.timeout):
                    view = memoryview(op.data)
                    while view:
                        view = view[await sock.send(view) :]
                return None
            if isinstance(op, ShutdownWrite):
                sock.shutdown(socket.SHUT_WR)
                return None
            if isinstance(op, Abort):
                abort_socket(sock)
                return None
            assert isinstance(op, Sleep)
            await trio.sleep(op.seconds)
            return None
        except (OSError, trio.TooSlowError) as error:
            return error if isinstance(error, OSError) else TimeoutError("write timed out")
