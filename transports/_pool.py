# smtpbee/transports/_pool
#
# The connection pool the asyncio and trio transports share, written once
# against the async client protocol; each transport's SMTPPool subclass only
# adds its framework's pieces: the client class (_new_client), a semaphore of
# ``size`` slots (_slot) and a way to run jobs concurrently (_run_all).
#
# Theory of operation
# -------------------
# A message takes a slot, then borrows a connection: an idle one that is still
# usable, or a new one (connected, and logged in when the pool has
# credentials). After the message the connection goes back to the idle list if
# its session can go on (the procedures reset a refused transaction) and is
# closed otherwise, so the next message opens a fresh one.
#
# Invariants: no more than ``size`` messages, and so connections, are in
# flight at once; an idle connection that can no longer be used is closed,
# never handed out; send_batch() reports each message's outcome (a SendResult
# or the SMTPError) without one failure stopping the others.
from __future__ import annotations

import email.message
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, Self

from smtpbee._errors import InvalidInputError, SMTPError
from smtpbee._extensions import Extensions
from smtpbee._transaction import SendResult
from smtpbee.transports._message import BatchItem

__all__ = ["PoolBase"]


class _AsyncClient(Protocol):
    @property
    def usable(self) -> bool: ...
    async def connect(self) -> Extensions: ...
    async def login(self, *args: Any, **kwargs: Any) -> Any: ...
    async def send_message(self, *args: Any, **kwargs: Any) -> SendResult: ...
    async def sendmail(self, *args: Any, **kwargs: Any) -> SendResult: ...
    async def quit(self) -> Any: ...
    async def close(self) -> None: ...


class PoolBase:
    """Up to ``size`` connections to one server, reused across messages.

    A connection goes back to the pool after each message while its session
    can go on (a refusal is reset by the procedures); one the server or an
    error ended is dropped, and the next message opens a new one.

    Args:
        host: the server.
        port: its port.
        size: the most connections open (and messages in flight) at once.
        username: log in with this user name on every new connection.
        password: and this password.
        allow_insecure: allow that login over plaintext or unverified TLS.
        **client_kwargs: passed on to each client.
    """

    def __init__(
        self,
        host: str,
        port: int = 25,
        *,
        size: int = 4,
        username: str | None = None,
        password: str | None = None,
        allow_insecure: bool = False,
        **client_kwargs: Any,
    ) -> None:
        if size < 1:
            raise InvalidInputError("a pool needs at least one connection")
        self.host = host
        self.port = port
        self.size = size
        self._login = (username, password or "", allow_insecure)
        self._client_kwargs = client_kwargs
        self._idle: list[_AsyncClient] = []

    def _new_client(self) -> _AsyncClient:
        raise NotImplementedError

    def _slot(self) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    async def _run_all(self, jobs: list[Callable[[], Coroutine[Any, Any, None]]]) -> None:
        raise NotImplementedError

    async def _borrow(self) -> _AsyncClient:
        while self._idle:
            client = self._idle.pop()
            if client.usable:
                return client
            await client.close()
        client = self._new_client()
        await client.connect()
        username, password, allow_insecure = self._login
        if username is not None:
            await client.login(username, password, allow_insecure=allow_insecure)
        return client

    async def _with_client(
        self, job: Callable[[_AsyncClient], Awaitable[SendResult]]
    ) -> SendResult:
        async with self._slot():
            client = await self._borrow()
            try:
                return await job(client)
            finally:
                if client.usable:
                    self._idle.append(client)
                else:
                    await client.close()

    async def send_message(self, msg: email.message.Message, **options: Any) -> SendResult:
        """Send one message over a pooled connection (options as for send_message)."""
        return await self._with_client(lambda client: client.send_message(msg, **options))

    async def sendmail(
        self, sender: str, recipients: str | Sequence[str], body: Any, **options: Any
    ) -> SendResult:
        """Send one body over a pooled connection (arguments as for sendmail)."""
        return await self._with_client(
            lambda client: client.sendmail(sender, recipients, body, **options)
        )

    async def send_batch(self, items: Sequence[BatchItem]) -> list[SendResult | SMTPError]:
        """Send messages concurrently over the pool, each on its own.

        Each item is an email message or a ``(sender, recipients, body)`` tuple.
        Returns, per item, its SendResult or the SMTPError that ended it; an
        error that is not an SMTP outcome (a bug, a wrong type) propagates.
        """
        results: list[SendResult | SMTPError | None] = [None] * len(items)

        def job(index: int, item: BatchItem) -> Callable[[], Coroutine[Any, Any, None]]:
            async def run() -> None:
                try:
                    if isinstance(item, email.message.Message):
                        results[index] = await self.send_message(item)
                    else:
                        results[index] = await self.sendmail(*item)
                except SMTPError as exc:
                    results[index] = exc

            return run

        await self._run_all([job(i, item) for i, item in enumerate(items)])
        return [result for result in results if result is not None]

    async def aclose(self) -> None:
        """QUIT and close every idle connection."""
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit()
            except SMTPError:
                pass
            finally:
                await client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
