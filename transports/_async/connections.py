# smtpbee/transports/_async/connections
#
# The connections a pool lends (see _async/pool.py): opening and logging in,
# checking one before reuse, renewing and expiring, and the rate window;
# written once, the source of _sync/connections.py (see _async/client.py).
#
# Theory of operation
# -------------------
# A sender (one message, or a worker of a batch) holds a connection while it
# sends: the one it held for its previous message, or one _borrow() gives it:
# the idle connection used last, or a new one (connected, logged in). Before
# reuse, _fit() applies the idle limits to it: past idle_timeout it is QUIT and
# closed, after idle_check seconds (or when asked) it must answer a NOOP.
# _after_message() QUITs one that carried max_messages and closes one whose
# session ended; _park() puts the others among the idle ones.
#
# Invariants: a new connection is opened only while no idle one is left, by
# the holder of a slot, so at most ``size`` are open; the idle list, kept in
# order of last use (the stale ones at its front, so expiring them costs
# nothing while none is), is only touched under a plain lock held across no
# await, so the blocking pool's threads share it safely and an async pool never
# waits on it; a connection in doubt (its NOOP failed, its procedure was
# interrupted) is closed, never lent.
from __future__ import annotations

import abc
import bisect
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smtpbee._errors import SMTPError
from smtpbee.transports._async.client import AsyncClient
from smtpbee.transports._async.one_call import log_in
from smtpbee.transports._pool import AsyncTokenSource, RateWindow

__all__ = ["AsyncConnections"]  # and Pooled, for the pool

_log = logging.getLogger("smtpbee.pool")


@dataclass(eq=False)
class Pooled:
    """A connection of the pool: its client, when it was last used, how many it sent."""

    client: AsyncClient
    last_used: float
    sent: int = 0


def _last_used(pooled: Pooled) -> float:
    return pooled.last_used


class AsyncConnections(abc.ABC):
    """The connections of a pool; the pool's constructor sets the attributes."""

    _client_class: type[AsyncClient]
    _target: tuple[str, int | None]
    _client_kwargs: Mapping[str, Any]
    _login: tuple[str | None, str | None, str | None]
    _token: AsyncTokenSource | None
    _allow_insecure: bool
    _rate: RateWindow | None
    _mutex: threading.Lock
    _idle: list[Pooled]
    _closed: bool
    max_messages: int | None
    idle_timeout: float | None
    idle_check: float | None

    @abc.abstractmethod
    def _now(self) -> float:
        """The framework's monotonic clock, in seconds."""

    @abc.abstractmethod
    async def _sleep(self, seconds: float) -> None:
        """Sleep (cancellably, where the framework cancels)."""

    async def _connect(self) -> Pooled:
        host, port = self._target
        client = self._client_class(host, port, **self._client_kwargs)
        client.credentials = None  # the pool logs in itself, as _login says
        username, password, mechanism = self._login
        try:
            await client.connect()
            await log_in(client, username, password, mechanism, self._token, self._allow_insecure)
        except BaseException:
            await client.close()
            raise
        return Pooled(client, last_used=self._now())

    async def _retire(self, pooled: Pooled) -> None:
        try:
            if pooled.client.usable:
                await pooled.client.quit()
        except SMTPError:
            pass
        finally:
            await pooled.client.close()

    async def _fit(self, pooled: Pooled, *, check: bool) -> bool:
        """Whether a connection may carry the next message; if not, it is closed."""
        idled = self._now() - pooled.last_used
        idle_timeout, idle_check = self.idle_timeout, self.idle_check
        if not pooled.client.usable:
            await pooled.client.close()
            return False
        if idle_timeout is not None and idled >= idle_timeout:
            await self._retire(pooled)
            return False
        if check or (idle_check is not None and idled >= idle_check):
            try:
                await pooled.client.noop()
            except SMTPError as exc:
                _log.info("an idle connection failed its NOOP, closed: %s", exc)
                await pooled.client.close()
                return False
        return True

    async def _borrow(self, *, check: bool) -> Pooled:
        """An idle connection that is fit (see _fit), or a new one."""
        while True:
            now, timeout = self._now(), self.idle_timeout
            with self._mutex:
                idle = self._idle
                stale = 0
                if timeout is not None:
                    while stale < len(idle) and now - idle[stale].last_used >= timeout:
                        stale += 1
                expired = idle[:stale]
                del idle[:stale]
                pooled = idle.pop() if idle and not expired else None
            if expired:
                # None is taken until these are closed: an interruption leaks none.
                await self._retire_all(expired)
            elif pooled is None:
                return await self._connect()
            elif await self._fit(pooled, check=check):
                return pooled

    async def _ready(self, held: Pooled | None, *, check: bool) -> Pooled:
        """``held`` if it is fit for the next message, or a borrowed connection."""
        if held is not None and await self._fit(held, check=check):
            return held
        return await self._borrow(check=check)

    async def _after_message(self, pooled: Pooled) -> Pooled | None:
        """Count a message a connection carried: it, if fit for another; else None (closed)."""
        pooled.sent += 1
        if not pooled.client.usable:
            await pooled.client.close()
        elif self._closed or (self.max_messages is not None and pooled.sent >= self.max_messages):
            await self._retire(pooled)
        else:
            pooled.last_used = self._now()
            return pooled
        return None

    async def _park(self, pooled: Pooled) -> None:
        """Put a connection a sender no longer needs among the idle ones (QUIT it if closed)."""
        with self._mutex:
            if not self._closed:
                # Usually the last used: an append, unless a worker held it a while.
                bisect.insort(self._idle, pooled, key=_last_used)
                return
        await self._retire(pooled)

    async def _wait_for_rate(self) -> None:
        """Return once the rate window lets one more message start."""
        window = self._rate
        while window is not None:
            with self._mutex:
                delay = window.reserve(self._now())
            if not delay:
                return
            await self._sleep(delay)

    async def _close_idle(self) -> None:
        """QUIT and close every idle connection."""
        with self._mutex:
            idle, self._idle = self._idle, []
        await self._retire_all(idle)

    async def _retire_all(self, connections: list[Pooled]) -> None:
        """QUIT and close each connection; if interrupted, close the others without QUIT."""
        try:
            for pooled in connections:
                await self._retire(pooled)
        finally:
            for pooled in connections:
                await pooled.client.close()
