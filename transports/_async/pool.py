# smtpbee/transports/_async/pool.py
#
# The connection pool, written once: the source of _sync/pool.py (see
# _async/client.py). Each transport's SMTPPool subclass fills in its
# framework's pieces: the client class, a semaphore of ``size`` slots, the
# clock and sleeping, and running a batch's workers concurrently (an asyncio
# TaskGroup, a trio nursery, a thread pool). The connections it lends are
# managed in _async/connections.py; what needs no I/O is in _pool.
#
# Theory of operation
# -------------------
# A message takes a slot, waits for the rate window, borrows a connection,
# sends, and gives the connection back. A batch runs at most ``size`` workers
# (see _async/sending.py): each takes a slot and a connection once, then the
# batch's messages one after another. A failure that delivered nothing is
# tried once more (see may_retry and Replay in _pool), on a connection that
# answers a NOOP or a new one; it takes the rate window again.
#
# Invariant: no more than ``size`` messages, and so connections, are in use at
# once; send_batch() reports each message's outcome, in the order of the
# items, without one failure stopping the others, and returns only once no
# worker of it is running.
from __future__ import annotations

import abc
import email.message
import functools
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Self

from smtpbee._errors import InvalidInputError, SMTPError
from smtpbee._transaction import SendResult
from smtpbee.transports._async.connections import Pooled
from smtpbee.transports._async.sending import AsyncSending, Mail
from smtpbee.transports._message import AsyncBody, BatchItem
from smtpbee.transports._pool import AsyncJob, AsyncTokenSource, Replay, check_limits, check_login

__all__ = ["AsyncPool"]


class AsyncPool(AsyncSending):
    """Up to ``size`` connections to one server, reused across messages.

    Safe to use from many tasks (or, blocking, threads) at once. Limits, as
    nodemailer and lettre offer them: ``size`` connections at most;
    ``max_messages`` per connection, after which it is QUIT and a new one
    opened; ``idle_timeout``: an idle connection older than that is QUIT and
    closed rather than reused (checked whenever the pool is used: it runs no
    background task); ``rate=(messages, per_seconds)``: no more than that many
    messages start within any such window, over all connections (callers wait).

    Stale connections: one that idled ``idle_check`` seconds or more gets a
    NOOP before reuse; if that fails, it is closed and another one used (nothing
    was sent). A send that fails before its content went out (a lost
    connection or a timeout, or the server's 421) is tried once more, on an idle
    connection that answers a NOOP or a new one, when its body can be read
    again (bytes, a list, a seekable file, an iterable not yet read). An
    OutcomeUnknownError (the content was out: the message may have been
    delivered) is never retried; nor, under LMTP, a 421. A retry waits for the
    rate window again.

    The arguments are checked at construction (a client is built from them,
    not connected): a misspelt keyword raises TypeError, a bad value
    InvalidInputError.

    Args:
        host: the server, or a connection URL (its credentials log in).
        port: its port (as for the client).
        size: the most connections open (and messages in flight) at once.
        max_messages: messages per connection before it is renewed; None: no limit.
        idle_timeout: seconds an idle connection may wait for reuse; None: forever.
        idle_check: seconds of idling after which a NOOP checks a connection
            before reuse; 0: always; None: never.
        rate: ``(messages, per_seconds)``, e.g. ``(100, 60.0)``; None: no limit.
        username: log in with this user name on every new connection.
        password: and this password.
        mechanism: the SASL mechanism, e.g. "PLAIN" (default: the strongest
            offered; with a token, "XOAUTH2" or "OAUTHBEARER").
        token: instead of a password, a callable returning an OAuth 2.0 bearer
            token (an async pool's may return an awaitable), called for each new
            connection, so a refreshed token is used.
        allow_insecure: allow that login over plaintext or unverified TLS.
        **client_kwargs: passed on to each client (tls, ssl_context, timeout, ...).
    """

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        size: int = 4,
        max_messages: int | None = 100,
        idle_timeout: float | None = 60.0,
        idle_check: float | None = 30.0,
        rate: tuple[int, float] | None = None,
        username: str | None = None,
        password: str | None = None,
        mechanism: str | None = None,
        token: AsyncTokenSource | None = None,
        allow_insecure: bool = False,
        **client_kwargs: Any,
    ) -> None:
        self._rate = check_limits(size, max_messages, idle_timeout, idle_check, rate)
        if client_kwargs.get("sock") is not None:
            raise InvalidInputError("a pool opens its own connections: it takes no sock")
        template = self._client_class(host, port, **client_kwargs)
        if template.credentials is not None and username is None:
            username, password = template.credentials
        self._login = (username, password, check_login(username, password, mechanism, token))
        self._token, self._allow_insecure = token, allow_insecure
        self._target, self._client_kwargs = (host, port), client_kwargs
        self._lmtp = template.lmtp
        self.host, self.port, self.size = template.host, template.port, size
        self.max_messages, self.rate = max_messages, rate
        self.idle_timeout = idle_timeout
        self.idle_check = idle_check
        self._slots = self._new_slots(size)
        self._mutex = threading.Lock()
        self._idle: list[Pooled] = []
        self._closed = False

    # -- what each framework fills in -------------------------------------------------------

    @abc.abstractmethod
    def _new_slots(self, size: int) -> AbstractAsyncContextManager[object]:
        """A semaphore of ``size`` slots."""

    @abc.abstractmethod
    async def _run_all(self, workers: list[AsyncJob], stop: Callable[[], None]) -> None:
        """Run the workers concurrently; on an error, stop or wait for the others, then raise.

        ``stop`` makes the workers take no more messages: for what cannot be
        cancelled (a thread), when this is interrupted.
        """

    # -- the public methods -----------------------------------------------------------------

    async def send_message(
        self,
        msg: email.message.Message,
        *,
        sender: str | None = None,
        recipients: Sequence[str] | None = None,
        mail_options: Mapping[str, Any] | None = None,
        rcpt_options: Mapping[str, Any] | None = None,
    ) -> SendResult:
        """Send an email message over a pooled connection (as the client's send_message)."""
        mail = Mail(msg, sender, recipients, None, mail_options, rcpt_options)
        return await self._send_one(mail)

    async def sendmail(
        self,
        sender: str,
        recipients: str | Sequence[str],
        body: AsyncBody,
        *,
        mail_options: Mapping[str, Any] | None = None,
        rcpt_options: Mapping[str, Any] | None = None,
        smtputf8: bool = False,
    ) -> SendResult:
        """Send a body over a pooled connection (as the client's sendmail)."""
        mail = Mail(None, sender, recipients, Replay(body), mail_options, rcpt_options, smtputf8)
        return await self._send_one(mail)

    async def send_batch(self, items: Sequence[BatchItem]) -> list[SendResult | SMTPError]:
        """Send messages concurrently over the pool (up to ``size`` at once), each on its own.

        Each item is an email message or a ``(sender, recipients, body)`` tuple.
        Returns, per item, its SendResult or the SMTPError that ended it. An
        error that is not an SMTP outcome (a bug, a body that raises) stops the
        batch: no other message starts, those under way are cancelled (a thread
        finishes the message it is sending) and waited for, then it propagates
        in an ExceptionGroup.

        Raises:
            InvalidInputError: an item that is neither, before anything is sent.
        """
        mails = [Mail.of(item) for item in items]
        results: list[SendResult | SMTPError | None] = [None] * len(mails)
        jobs = deque(enumerate(mails))
        worker = functools.partial(self._work, jobs, results)
        await self._run_all([worker] * min(self.size, len(mails)), jobs.clear)
        return [result for result in results if result is not None]

    async def close(self) -> None:
        """Close the pool: QUIT and close the idle connections.

        A connection in use is closed when its message ends; sending afterwards
        raises LocalProtocolError.
        """
        self._closed = True
        await self._close_idle()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
