# smtpbee/transports/_async/connections
#
# The connections a pool lends (see _async/pool.py): opening and logging in,
# checking an idle one before reuse, renewing and expiring, the rate window,
# and a message to send on one (Mail, send_on); written once, the source of
# _sync/connections.py (see _async/client.py).
#
# Theory of operation
# -------------------
# _borrow() takes the idle connection used last, after a NOOP when it idled
# idle_check seconds or more (or when asked to check), or opens a new one
# (connected, logged in). Idle connections past idle_timeout are QUIT and
# closed whenever the pool borrows; _give_back() QUITs and closes a connection
# that carried max_messages, closes one whose session ended, and keeps the rest.
#
# Invariants: a new connection is opened only while no idle one is left, by
# the holder of a slot, so at most ``size`` are open; the idle list is only
# touched under a plain lock held across no await, so the blocking pool's
# threads share it safely and an async pool never waits on it; a connection in
# doubt (its NOOP failed, its procedure was interrupted) is closed, never lent.
from __future__ import annotations

import abc
import email.message
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from smtpbee._errors import InvalidInputError, SMTPError
from smtpbee._transaction import SendResult
from smtpbee.transports._async.client import AsyncClient
from smtpbee.transports._async.one_call import log_in
from smtpbee.transports._message import BatchItem
from smtpbee.transports._pool import AsyncTokenSource, RateWindow, Replay

__all__ = ["AsyncConnections"]  # and Mail, Pooled, send_on for the pool

_log = logging.getLogger("smtpbee.pool")


@dataclass(eq=False)
class Pooled:
    """A connection of the pool: its client, when it was last used, how many it sent."""

    client: AsyncClient
    last_used: float
    sent: int = 0


@dataclass(eq=False)
class Mail:
    """One message to send: an email message, or an envelope and a body."""

    message: email.message.Message | None
    sender: str | None
    recipients: str | Sequence[str] | None
    body: Replay | None
    mail_options: Mapping[str, Any] | None = None
    rcpt_options: Mapping[str, Any] | None = None
    smtputf8: bool = False

    @classmethod
    def of(cls, item: BatchItem) -> Mail:
        """The Mail of a batch item."""
        if isinstance(item, email.message.Message):
            return cls(item, None, None, None)
        if isinstance(item, tuple) and len(item) == 3:
            return cls(None, item[0], item[1], Replay(item[2]))
        raise InvalidInputError(
            "a batch item is an email message or a (sender, recipients, body) tuple,"
            f" not {type(item).__name__}"
        )


async def send_on(client: AsyncClient, mail: Mail) -> SendResult:
    """Send a Mail on a client."""
    if mail.message is not None:
        return await client.send_message(
            mail.message,
            sender=mail.sender,
            recipients=mail.recipients,
            mail_options=mail.mail_options,
            rcpt_options=mail.rcpt_options,
        )
    assert mail.sender is not None and mail.recipients is not None and mail.body is not None
    return await client.sendmail(
        mail.sender,
        mail.recipients,
        mail.body.body,
        mail_options=mail.mail_options,
        rcpt_options=mail.rcpt_options,
        smtputf8=mail.smtputf8,
    )


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

    def _expired(self, pooled: Pooled, now: float) -> bool:
        timeout = self.idle_timeout
        return not pooled.client.usable or (
            timeout is not None and now - pooled.last_used >= timeout
        )

    async def _borrow(self, *, check: bool) -> Pooled:
        """An idle connection (checked by a NOOP if asked or it idled long), or a new one."""
        while True:
            now = self._now()
            with self._mutex:
                expired = [pooled for pooled in self._idle if self._expired(pooled, now)]
                self._idle = [pooled for pooled in self._idle if pooled not in expired]
                pooled = self._idle.pop() if self._idle else None
            for old in expired:
                await self._retire(old)
            if pooled is None:
                return await self._connect()
            idle_check = self.idle_check
            if check or (idle_check is not None and now - pooled.last_used >= idle_check):
                try:
                    await pooled.client.noop()
                except SMTPError as exc:
                    _log.info("an idle connection failed its NOOP, closed: %s", exc)
                    await pooled.client.close()
                    continue
            return pooled

    async def _give_back(self, pooled: Pooled) -> None:
        """Keep a connection after a message, or renew or close it."""
        pooled.sent += 1
        pooled.last_used = self._now()
        renew = self.max_messages is not None and pooled.sent >= self.max_messages
        if not pooled.client.usable:
            await pooled.client.close()
        elif renew or self._closed:
            await self._retire(pooled)
        else:
            with self._mutex:
                self._idle.append(pooled)

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
        try:
            for pooled in idle:
                await self._retire(pooled)
        finally:
            for pooled in idle:
                await pooled.client.close()
