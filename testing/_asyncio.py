# smtpbee/testing/_asyncio
#
# The scripted server under asyncio: an async context manager that accepts in
# a task and serves each connection in a task of its own, performing the
# socket operations of _connection with the loop's sock_* calls (TLS is done
# there, on memory BIOs). Leaving the context lets open connections end for a
# moment, then cancels them; a handler that raised is re-raised then.
from __future__ import annotations

import asyncio
import contextlib
import socket
from types import TracebackType
from typing import Any

from ._connection import READ_SIZE, Abort, Op, Recv, Send, ShutdownWrite, Sleep, serve_connection
from ._engine import ServerSession
from ._running import RunningServer, abort_socket

__all__ = ["AsyncioServer"]


class AsyncioServer(RunningServer):
    """A scripted server serving in tasks of the running asyncio loop.

    ``async with server.serve_asyncio() as running:`` starts it; the block
    runs while it serves.
    """

    _acceptor: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncioServer:
        self._listener.setblocking(False)
        self._tasks: set[asyncio.Task[None]] = set()
        self._acceptor = asyncio.create_task(self._accept_loop())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def wait(self, connections: int = 1, timeout: float = 30.0) -> None:
        """Wait until ``done(connections)``, then raise what a handler raised.

        Raises:
            TimeoutError: the connections had not all ended within ``timeout``.
        """
        async with asyncio.timeout(timeout):
            while not self.done(connections):
                await asyncio.sleep(0.005)
        self.check()

    async def aclose(self, grace: float = 1.0) -> None:
        """Stop accepting, let connections end for ``grace`` seconds, cancel the rest.

        Raises:
            BaseException: what a handler raised, if not raised yet.
        """
        if self._acceptor is not None:
            self._acceptor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._acceptor
            self._acceptor = None
        self._listener.close()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self.check()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sock, peer = await loop.sock_accept(self._listener)
            sock.setblocking(False)
            self._accepted += 1
            self._active += 1
            task = asyncio.create_task(self._serve(sock, peer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, sock: socket.socket, peer: Any) -> None:
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
        except asyncio.CancelledError:
            abort_socket(sock)
            raise
        except BaseException as error:
            self._failed(error, session)
            abort_socket(sock)
        finally:
            steps.close()
            sock.close()
            self._active -= 1

    async def _perform(self, sock: socket.socket, op: Op) -> Any:
        loop = asyncio.get_running_loop()
        try:
            if isinstance(op, Recv):
                try:
                    async with asyncio.timeout(op.timeout):
                        return await loop.sock_recv(sock, READ_SIZE)
                except TimeoutError:
                    return None
            if isinstance(op, Send):
                async with asyncio.timeout(self.server.timeout):
                    await loop.sock_sendall(sock, op.data)
                return None
            if isinstance(op, ShutdownWrite):
                sock.shutdown(socket.SHUT_WR)
                return None
            if isinstance(op, Abort):
                abort_socket(sock)
                return None
            assert isinstance(op, Sleep)
            await asyncio.sleep(op.seconds)
            return None
        except OSError as error:  # TimeoutError (a write that never ends) included
            return error
