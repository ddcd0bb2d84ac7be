# smtpbee/transports/_async/sending
#
# How a pool sends (see _async/pool.py), written once: the source of
# _sync/sending.py (see _async/client.py). Mail is one message to send and
# send_on() sends it on a client; AsyncSending sends a Mail on a connection of
# the pool (_async/connections.py), tries it once more when that may be done,
# and runs the workers of a batch.
#
# Theory of operation
# -------------------
# A sender holds a slot, and a connection from one message to its next: a
# single message (sendmail, send_message) holds them for itself; a worker of a
# batch holds them while the batch has messages left, taking one after another
# from a queue that all its workers share. So a message of a batch costs no
# task, slot, pool lock or borrowing of its own; the limits still apply to the
# connection a worker holds (see _fit and _after_message). Before each
# message, and before a retry, the rate window is waited for.
#
# Invariant: a connection is held by one sender at a time, and a worker that
# ends gives its connection back (or, when interrupted, closes it); when a
# worker fails with an error that is not an SMTP outcome, the queue is
# emptied, so no worker starts another message of that batch.
from __future__ import annotations

import email.message
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeAlias

from smtpbee._errors import InvalidInputError, LocalProtocolError, SMTPError
from smtpbee._transaction import SendResult
from smtpbee.transports._async.client import AsyncClient
from smtpbee.transports._async.connections import AsyncConnections, Pooled
from smtpbee.transports._message import BatchItem
from smtpbee.transports._pool import Replay, may_retry

__all__ = ["AsyncSending"]  # and Mail, send_on for the pool

_log = logging.getLogger("smtpbee.pool")


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
        if isinstance(item, tuple) and len(item) == 3:
            return cls(None, item[0], item[1], Replay(item[2]))
        if isinstance(item, email.message.Message):
            return cls(item, None, None, None)
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


Jobs: TypeAlias = deque[tuple[int, Mail]]
"""A batch's messages that no worker has taken yet, each with its place in the batch."""


class AsyncSending(AsyncConnections):
    """Sending over the pool's connections; the pool's constructor sets the attributes."""

    _slots: AbstractAsyncContextManager[object]
    _lmtp: bool

    async def _send_one(self, mail: Mail) -> SendResult:
        """Send a message on its own: a slot and a connection for it alone."""
        if self._closed:
            raise LocalProtocolError("the pool is closed")
        async with self._slots:
            outcome, pooled = await self._deliver(mail, None)
            if pooled is not None:
                await self._park(pooled)
        if isinstance(outcome, SMTPError):
            raise outcome
        return outcome

    async def _work(self, jobs: Jobs, results: list[SendResult | SMTPError | None]) -> None:
        """One worker of a batch: send messages taken from ``jobs`` until none is left."""
        async with self._slots:
            held: Pooled | None = None
            try:
                while jobs:
                    try:
                        index, mail = jobs.popleft()  # atomic, for threads too
                    except IndexError:  # another worker took the last one
                        break
                    results[index], held = await self._deliver(mail, held)
            except BaseException:
                jobs.clear()  # the batch ends: no worker starts another message
                if held is not None:
                    await held.client.close()
                raise
            if held is not None:
                await self._park(held)

    async def _deliver(
        self, mail: Mail, held: Pooled | None
    ) -> tuple[SendResult | SMTPError, Pooled | None]:
        """Send a message on ``held`` if it is fit, else on another connection.

        The caller holds a slot. Returns the outcome and the connection to hold
        for the next message (None: it was closed or renewed). An error that is
        not an SMTP outcome closes the connection and propagates.
        """
        retried = False
        while True:
            if self._closed:
                return LocalProtocolError("the pool is closed"), held
            if self._rate is not None:
                await self._wait_for_rate()
            try:
                pooled = await self._ready(held, check=retried)
            except SMTPError as exc:
                # Opening a connection read nothing of the body.
                if retried or not may_retry(exc, lmtp=self._lmtp):
                    return exc, None
                _log.info("sending once more, on another connection, after: %s", exc)
                held, retried = None, True
                continue
            try:
                result = await send_on(pooled.client, mail)
            except SMTPError as exc:
                held = await self._after_message(pooled)
                again = mail.body is None or mail.body.rewind()
                if retried or not again or not may_retry(exc, lmtp=self._lmtp):
                    return exc, held
                _log.info("sending once more, on another connection, after: %s", exc)
                retried = True
                continue
            except BaseException:
                await pooled.client.close()
                raise
            return result, await self._after_message(pooled)
