"""One test body for three I/O worlds: each transport's client behind an awaitable proxy.

``Flavour`` names a transport (sync, asyncio under asyncio, trio under trio) and
builds its clients the same way for every test; the ``flavour`` and
``anyio_backend`` fixtures in conftest.py run a test once per transport.
"""

from __future__ import annotations

import importlib
import inspect
import time
from typing import Any

import anyio
from servers import TLSAiosmtpdServer
from smtpbee.testing import ThreadedServer

__all__ = ["ALICE", "FLAVOURS", "Client", "Flavour", "finished"]

FLAVOURS = ["sync", "asyncio", "trio"]
ALICE = ("alice", "wonderland")


class Client:
    """A transport's client whose every method can be awaited."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if not callable(value):
            return value

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = value(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        return call

    async def __aenter__(self) -> Client:
        if hasattr(self.inner, "__aenter__"):
            await self.inner.__aenter__()
        else:
            self.inner.__enter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if hasattr(self.inner, "__aexit__"):
            await self.inner.__aexit__(*exc_info)
        else:
            self.inner.__exit__(*exc_info)


class Flavour:
    """One transport: its module, and clients built the same way for every test."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.module = importlib.import_module(f"smtpbee.transports.{name}")

    def client(self, server: Any = None, **kwargs: Any) -> Client:
        if server is not None:
            kwargs.setdefault("host", server.host)
            kwargs.setdefault("port", server.port)
            if isinstance(server, TLSAiosmtpdServer) and server.tls_mode == "implicit":
                kwargs.setdefault("tls", "implicit")
            if hasattr(server, "client_context"):
                kwargs.setdefault("ssl_context", server.client_context)
        kwargs.setdefault("tls", "none")
        kwargs.setdefault("timeout", 10.0)
        host = kwargs.pop("host")
        return Client(self.module.SMTPClient(host, kwargs.pop("port", 25), **kwargs))

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        result = self.module.send(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result


async def finished(server: ThreadedServer, connections: int = 1) -> None:
    """Wait until a scripted server's connections have ended; raise what a handler raised.

    Poll, not block: asyncio closes a transport on its next loop iteration, so the
    loop must keep running while the server waits for the close.
    """
    deadline = time.monotonic() + 30
    while not server.done(connections) and time.monotonic() < deadline:
        await anyio.sleep(0.01)
    server.wait(connections, timeout=0)
