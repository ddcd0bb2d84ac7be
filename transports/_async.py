# smtpbee/transports/_async
#
# What the asyncio and trio clients share: the request loop and every public
# method, written once against four hooks each framework fills in —
# _serve (answer one request), _abort (drop the connection at once), close
# (end it politely) and _connected.
#
# Theory of operation
# -------------------
# Each public method plans a procedure (ClientBase._plan_*) and _run answers
# its requests until it returns. Invariants:
#   * an I/O failure is mapped to smtpbee's own error and thrown into the
#     procedure, which decides what it means (e.g. OutcomeUnknownError after
#     the content);
#   * cancellation, or any failure that is not smtpbee's, in the middle of a
#     procedure marks the session failed and aborts the connection: no
#     half-written command is ever followed by another;
#   * a session that can no longer be used (closing, closed, error) is
#     aborted when its procedure ends.
from __future__ import annotations

import abc
import email.message
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any, Self, cast

from smtpbee._auth import SASLMechanism
from smtpbee._commands import Command
from smtpbee._errors import InvalidInputError, SMTPError
from smtpbee._replies import Reply
from smtpbee._requests import Procedure, Request
from smtpbee._transaction import SendResult
from smtpbee.transports._common import ClientBase, Deadline, as_smtp_error, describe, step

__all__ = ["AsyncClientBase", "Pieces", "send_one"]

Pieces = Iterator[bytes] | AsyncIterator[bytes]
_NO_BODY: Iterator[bytes] = iter(())


class AsyncClientBase(ClientBase, abc.ABC):
    """The public methods of the async clients; see ClientBase for the arguments."""

    _deadline = Deadline()

    # -- the hooks each framework fills in ------------------------------------------------

    @property
    @abc.abstractmethod
    def _connected(self) -> bool:
        """Whether a connection is open."""

    @abc.abstractmethod
    async def connect(self) -> Any:
        """Connect, greet, EHLO and STARTTLS as the TLS mode says."""

    @abc.abstractmethod
    async def _serve(self, request: Request, body: Pieces) -> Any:
        """Answer one request of a procedure with the framework's I/O."""

    @abc.abstractmethod
    async def _abort(self) -> None:
        """Drop the connection at once."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection (no QUIT); safe to call twice."""

    def _plain(self, exc: BaseException) -> BaseException:
        """The framework's I/O failure as the builtin one as_smtp_error maps."""
        return exc

    # -- the loop ---------------------------------------------------------------------------

    async def _run(
        self, proc: Procedure, body: Iterator[bytes] | AsyncIterable[bytes] = _NO_BODY
    ) -> Any:
        pieces: Pieces = aiter(body) if isinstance(body, AsyncIterable) else body
        self._deadline = Deadline()
        try:
            done, item = step(proc)
            while not done:
                try:
                    result = await self._serve(item, pieces)
                except Exception as exc:
                    error = as_smtp_error(self._plain(exc), describe(item))
                    if error is None:
                        raise
                    done, item = step(proc, error=error)
                else:
                    done, item = step(proc, result)
        except BaseException as exc:
            if not isinstance(exc, SMTPError) and self._session is not None:
                # Cancelled or interrupted mid-procedure: the server's view is unknown.
                self._session.conn.send_failed()
                proc.close()
            if not self.usable:
                await self._abort()
            raise
        if not self.usable:
            await self._abort()
        return item

    # -- the public methods: plan, then run ---------------------------------------------

    async def ehlo(self) -> Reply:
        """EHLO again (HELO if refused); returns the reply."""
        return cast(Reply, await self._run(self.session.hello()))

    async def starttls(self) -> Reply:
        """STARTTLS now (for tls="none"); returns the reply to the new EHLO."""
        return cast(Reply, await self._run(self.session.starttls()))

    async def login(
        self,
        username: str,
        password: str,
        *,
        mechanism: str | None = None,
        allow_insecure: bool = False,
    ) -> Reply:
        """AUTH with a password, the strongest offered mechanism unless one is named."""
        plan = self._plan_login(username, password, mechanism, allow_insecure)
        return cast(Reply, await self._run(plan))

    async def authenticate(
        self, mechanism: SASLMechanism, *, allow_insecure: bool = False
    ) -> Reply:
        """AUTH with a SASL mechanism object."""
        return cast(Reply, await self._run(self._plan_auth(mechanism, allow_insecure)))

    async def send_message(
        self,
        msg: email.message.Message,
        *,
        sender: str | None = None,
        recipients: Sequence[str] | None = None,
        mail_options: Mapping[str, Any] | None = None,
        rcpt_options: Mapping[str, Any] | None = None,
    ) -> SendResult:
        """Send an email message; the envelope comes from its headers unless given."""
        proc, body = self._plan_message(msg, sender, recipients, mail_options, rcpt_options)
        return cast(SendResult, await self._run(proc, body))

    async def sendmail(
        self,
        sender: str,
        recipients: str | Sequence[str],
        body: Any,
        *,
        mail_options: Mapping[str, Any] | None = None,
        rcpt_options: Mapping[str, Any] | None = None,
        smtputf8: bool = False,
    ) -> SendResult:
        """Send a body (bytes, a binary file, an iterable or async iterable of bytes)."""
        proc, pieces = self._plan_sendmail(
            sender, recipients, body, mail_options, rcpt_options, smtputf8
        )
        return cast(SendResult, await self._run(proc, pieces))

    async def sendmail_many(
        self, jobs: Iterable[tuple[str, str | Sequence[str], Any]]
    ) -> list[SendResult | SMTPError | None]:
        """Send several messages, overlapping them where the server allows.

        Each job is ``(sender, recipients, body)``. With PIPELINING, one message's
        terminator and the next one's envelope share a write: one round trip per
        message. Returns, per job, its SendResult, the SMTPError that ended it,
        or None if the session ended before it was tried.
        """
        proc, bodies = self._plan_sendmail_many(jobs)
        return cast("list[SendResult | SMTPError | None]", await self._run(proc, bodies))

    async def command(self, command: Command) -> Reply:
        """Send one command object; returns its reply, refusals included."""
        return cast(Reply, await self._run(self._plan_command(command)))

    async def pipeline(self, commands: Sequence[Command]) -> list[Reply]:
        """Send commands in one write; returns their replies in order."""
        return cast("list[Reply]", await self._run(self.session.pipeline(commands)))

    async def noop(self) -> Reply:
        return cast(Reply, await self._run(self.session.noop()))

    async def rset(self) -> Reply:
        return cast(Reply, await self._run(self.session.rset()))

    async def vrfy(self, address: str) -> Reply:
        return cast(Reply, await self._run(self.session.vrfy(address)))

    async def expn(self, address: str) -> Reply:
        return cast(Reply, await self._run(self.session.expn(address)))

    async def help(self, topic: str = "") -> Reply:
        return cast(Reply, await self._run(self.session.help(topic)))

    async def quit(self) -> Reply:
        """QUIT, then close the connection."""
        try:
            return cast(Reply, await self._run(self.session.quit()))
        finally:
            await self.close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if self.usable and self._connected:
                await self.quit()
        except SMTPError:
            pass
        finally:
            await self.close()


async def send_one(
    client: AsyncClientBase,
    message_or_body: email.message.Message | Any,
    *,
    sender: str | None,
    recipients: Sequence[str] | None,
    username: str | None,
    password: str | None,
) -> SendResult:
    """Connect, log in if asked, send one message, QUIT: the one-call send()."""
    is_message = isinstance(message_or_body, email.message.Message)
    if not is_message and (sender is None or recipients is None):
        raise InvalidInputError("a raw body needs sender= and recipients=")
    async with client:
        if username is not None:
            await client.login(username, password or "")
        if is_message:
            return await client.send_message(message_or_body, sender=sender, recipients=recipients)
        assert sender is not None and recipients is not None
        return await client.sendmail(sender, recipients, message_or_body)
