# smtpbee/transports/_async/client
#
# The public methods of every client and the loop that runs the core's
# procedures, written once: _sync/ is generated from _async/ without async and
# await (tools/generate_sync.py), so a method lands in all three clients.
#
# Theory of operation
# -------------------
# Each public method plans a procedure (ClientBase._plan_*, or a session
# method) and _run() answers its requests through the hooks (_async/hooks.py)
# each framework fills in. Invariants:
#   * one procedure at a time: _run holds the client's lock, so tasks (or
#     threads) sharing a client take turns instead of interleaving commands;
#   * an I/O failure becomes smtpbee's own error (as_smtp_error), thrown into
#     the procedure, which decides what it means (OutcomeUnknownError...);
#   * cancellation, or any failure that is not smtpbee's, in the middle of a
#     procedure marks the session failed and aborts the connection: no
#     half-written command is ever followed by another;
#   * a session that can no longer be used (closing, closed, failed) is
#     aborted when its procedure ends.
from __future__ import annotations

import email.message
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self, TypeVar, cast

from smtpbee._auth import SASLMechanism
from smtpbee._commands import Command
from smtpbee._errors import LocalProtocolError, SMTPError
from smtpbee._extensions import Extensions
from smtpbee._replies import Reply
from smtpbee._requests import Procedure
from smtpbee._transaction import SendResult
from smtpbee.transports._async.hooks import AsyncHooks
from smtpbee.transports._common import Deadline, as_smtp_error, describe
from smtpbee.transports._message import AsyncBody, BatchItem

__all__ = ["AsyncClient"]

_T = TypeVar("_T")
_log = logging.getLogger("smtpbee.connection")


class AsyncClient(AsyncHooks):
    """What every client can do; the arguments are ClientBase's."""

    _deadline = Deadline()

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self, proc: Procedure[_T], body: Any = ()) -> _T:
        async with self._lock:
            return await self._drive(proc, body)

    async def _drive(self, proc: Procedure[_T], body: Any) -> _T:
        self._deadline = Deadline()
        try:
            request = next(proc)
            while True:
                try:
                    result = await self._serve(request, body)
                except Exception as exc:
                    error = as_smtp_error(self._plain(exc), describe(request))
                    if error is None:
                        raise
                    request = proc.throw(error)
                else:
                    request = proc.send(result)
        except StopIteration as stop:
            if not self.usable:
                await self._abort()
            # Where the typed procedure hands its result over.
            return cast(_T, stop.value)
        except BaseException as exc:
            if not isinstance(exc, SMTPError) and self._session is not None:
                # Cancelled or interrupted mid-procedure: the server's view is unknown.
                self._session.conn.send_failed()
                proc.close()
            if not self.usable:
                await self._abort()
            raise

    # -- the public methods -----------------------------------------------------------------

    async def connect(self) -> Extensions:
        """Connect: TLS as the mode says, the greeting, EHLO, STARTTLS.

        Returns the server's extensions (after STARTTLS, the ones offered over TLS).
        """
        if self._connected:
            raise LocalProtocolError("already connected")
        _log.info("connecting to %s port %s (TLS: %s)", self.host, self.port, self.tls_mode.value)
        try:
            sockname = await self._open()
        except Exception as exc:
            await self._abort()
            error = as_smtp_error(self._plain(exc), f"connecting to {self.host}:{self.port}")
            if error is None:
                raise
            _log.info("connecting to %s port %s failed: %s", self.host, self.port, error)
            raise error from error.__cause__
        extensions = await self._run(self._new_session(sockname).open())
        _log.info(
            "session open with %s port %s: %s", self.host, self.port, self.tls_info or "no TLS"
        )
        if self.credentials is not None:
            await self.login(*self.credentials)
        return extensions

    async def ehlo(self) -> Reply:
        """EHLO again (HELO if refused); returns the reply."""
        return await self._run(self.session.hello())

    async def starttls(self) -> Reply:
        """STARTTLS now (for tls="none"); returns the reply to the new EHLO."""
        return await self._run(self.session.starttls())

    async def xclient(self, attributes: Mapping[str, str]) -> Reply:
        """XCLIENT (Postfix), then EHLO again; returns XCLIENT's 220 (a new greeting)."""
        return await self._run(self.session.xclient(attributes))

    async def login(
        self,
        username: str,
        password: str,
        *,
        mechanism: str | None = None,
        allow_insecure: bool = False,
    ) -> Reply:
        """AUTH with a password: the strongest offered mechanism unless one is named.

        Refused locally unless the connection is TLS with a verified
        certificate, or ``allow_insecure`` is given.
        """
        proc = self.session.login(
            username, password, mechanism=mechanism, allow_insecure=allow_insecure
        )
        return await self._run(proc)

    async def authenticate(
        self, mechanism: SASLMechanism, *, allow_insecure: bool = False
    ) -> Reply:
        """AUTH with a SASL mechanism object (e.g. ``smtpbee.XOAuth2``)."""
        return await self._run(self.session.authenticate(mechanism, allow_insecure=allow_insecure))

    async def send_message(
        self,
        msg: email.message.Message,
        *,
        sender: str | None = None,
        recipients: Sequence[str] | None = None,
        mail_options: Mapping[str, Any] | None = None,
        rcpt_options: Mapping[str, Any] | None = None,
    ) -> SendResult:
        """Send an email message; the envelope comes from its headers unless given.

        The sender is Sender or From, the recipients To, Cc and Bcc (or the latest
        Resent-* block's); Bcc is not sent. ``mail_options`` and ``rcpt_options``
        are as for sendmail().
        """
        proc, body = self._plan_message(msg, sender, recipients, mail_options, rcpt_options)
        return await self._run(proc, body)

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
        """Send a body (bytes, a binary file, an iterable of bytes) to recipients.

        The body is streamed, never held whole.

        ``mail_options`` holds keyword arguments of smtpbee.Mail besides
        ``sender`` (size, body, smtputf8, ret, envid, requiretls, mt_priority,
        auth, extra); size, body and smtputf8 are filled in when absent.
        ``rcpt_options`` holds those of smtpbee.Rcpt besides ``recipient``
        (notify, orcpt, extra), applied to every recipient. An unknown key
        raises InvalidInputError, a parameter the server does not offer
        UnsupportedExtensionError, before anything is sent.
        """
        proc, pieces = self._plan_sendmail(
            sender, recipients, body, mail_options, rcpt_options, smtputf8
        )
        return await self._run(proc, pieces)

    async def send_batch(self, items: Iterable[BatchItem]) -> list[SendResult | SMTPError]:
        """Send several messages on this connection, overlapped where the server allows.

        Each item is an email message or a ``(sender, recipients, body)`` tuple.
        With PIPELINING one message's terminator and the next one's envelope
        share a write; with CHUNKING several whole transactions are in flight.
        Returns, per item, its SendResult or the SMTPError that
        ended it; results settled before a session-ending failure are kept.
        """
        proc, bodies = self._plan_batch(items)
        return await self._run(proc, bodies)

    async def command(self, command: Command) -> Reply:
        """Send one command object; returns its reply, refusals included."""
        return await self._run(self.session.command(command))

    async def pipeline(self, commands: Sequence[Command]) -> list[Reply]:
        """Send commands in one write; returns their replies in order."""
        return await self._run(self.session.pipeline(commands))

    async def noop(self) -> Reply:
        """NOOP; a refusal raises ReplyError."""
        return await self._run(self.session.noop())

    async def rset(self) -> Reply:
        """RSET; a refusal raises ReplyError."""
        return await self._run(self.session.rset())

    async def vrfy(self, address: str) -> Reply:
        """VRFY; returns the reply, refusals included."""
        return await self._run(self.session.vrfy(address))

    async def expn(self, address: str) -> Reply:
        """EXPN; returns the reply, refusals included."""
        return await self._run(self.session.expn(address))

    async def help(self, topic: str = "") -> Reply:
        """HELP; returns the reply, refusals included."""
        return await self._run(self.session.help(topic))

    async def quit(self) -> Reply:
        """QUIT, then close the connection."""
        try:
            return await self._run(self.session.quit())
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
