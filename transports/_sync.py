# smtpbee/transports/_sync
#
# The blocking transport: one socket, one thread, the core's procedures.
#
# Theory of operation
# -------------------
# Every public method builds a procedure (ClientBase._plan_*) and hands it to
# _run(), which answers each request with the socket and throws I/O failures
# into the procedure as SMTPTimeoutError / ConnectionLostError; the procedure
# decides what they mean. The socket timeout is set before every call: a
# write gets the request's timeout (sendall counts it for the whole buffer),
# a read gets what is left of the reply's Deadline.
#
# Invariants: after a failure the session cannot use, the socket is closed;
# at STARTTLS nothing already received is left unread (it goes to the core,
# which refuses it), so no plaintext byte can pass for a TLS-protected one.
from __future__ import annotations

import email.message
import socket
import time
from collections.abc import AsyncIterable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, cast

from smtpbee._auth import SASLMechanism
from smtpbee._commands import Command
from smtpbee._errors import InvalidInputError, LocalProtocolError, SMTPError
from smtpbee._extensions import Extensions
from smtpbee._replies import Reply
from smtpbee._requests import Procedure, PullBody, Read, Request, TLSMode, Write
from smtpbee._transaction import SendResult
from smtpbee.transports._common import (
    ClientBase,
    Deadline,
    as_smtp_error,
    describe,
    step,
    tls_info,
)
from smtpbee.transports._message import READ_SIZE

__all__ = ["SMTPClient", "send"]

_NO_BODY: Iterator[bytes] = iter(())


class SMTPClient(ClientBase):
    """An SMTP client over a blocking socket; see ClientBase for the arguments.

    Use it as a context manager (connect on entry, QUIT and close on exit) or
    call connect() and quit()/close() yourself.
    """

    _sock: socket.socket | None = None
    _deadline = Deadline()

    def connect(self) -> Extensions:
        """Connect, wrap implicit TLS, read the greeting, EHLO, STARTTLS as the mode says."""
        if self._sock is not None:
            raise LocalProtocolError("already connected")
        sock: socket.socket | None = self._sock_given
        try:
            if sock is None:
                address = (self.host, self.port)
                sock = socket.create_connection(address, self.connect_timeout, self.source_address)
            self._sock = sock
            sockname = sock.getsockname()
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                # A pipelined group ends in a small write; Nagle would hold it
                # back for the delayed ACK (asyncio and trio set this too).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls_mode is TLSMode.IMPLICIT:
                self._start_tls()
        except Exception as exc:
            self.close()
            error = as_smtp_error(exc, f"connecting to {self.host}:{self.port}")
            if error is None:
                raise
            raise error from error.__cause__
        self._new_session(sockname)
        return cast(Extensions, self._run(self.session.open()))

    def _start_tls(self) -> bool:
        sock = self._sock
        assert sock is not None
        sock.settimeout(self.connect_timeout)
        wrapped = self.ssl_context.wrap_socket(sock, server_hostname=self.server_hostname)
        self._sock = wrapped
        self.tls_info = tls_info(wrapped, self.verified_context)
        return self.verified_context

    def _serve(self, request: Request, body: Iterator[bytes]) -> Any:
        sock = self._sock
        if sock is None:
            raise ConnectionError("the connection is closed")
        if isinstance(request, Read):
            remaining = self._deadline.remaining(request, time.monotonic())
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            return sock.recv(READ_SIZE)
        if isinstance(request, Write):
            sock.settimeout(request.timeout)
            sock.sendall(request.data)
            return None
        if isinstance(request, PullBody):
            return next(body, b"")
        sock.setblocking(False)
        try:
            early = sock.recv(READ_SIZE)
        except BlockingIOError:
            early = b""
        self._refuse_early_bytes(early)
        return self._start_tls()

    def _run(self, proc: Procedure, body: Iterator[bytes] = _NO_BODY) -> Any:
        self._deadline = Deadline()
        try:
            done, item = step(proc)
            while not done:
                try:
                    result = self._serve(item, body)
                except Exception as exc:
                    error = as_smtp_error(exc, describe(item))
                    if error is None:
                        raise
                    done, item = step(proc, error=error)
                else:
                    done, item = step(proc, result)
        except BaseException as exc:
            if not isinstance(exc, SMTPError) and self._session is not None:
                # Interrupted mid-procedure: what the server has seen is unknown.
                self._session.conn.send_failed()
                proc.close()
            if not self.usable:
                self.close()
            raise
        if not self.usable:
            self.close()
        return item

    # -- the public methods: plan, then run ---------------------------------------------

    def ehlo(self) -> Reply:
        """EHLO again (HELO if refused); returns the reply."""
        return cast(Reply, self._run(self.session.hello()))

    def starttls(self) -> Reply:
        """STARTTLS now (for tls="none"); returns the reply to the new EHLO."""
        return cast(Reply, self._run(self.session.starttls()))

    def login(
        self,
        username: str,
        password: str,
        *,
        mechanism: str | None = None,
        allow_insecure: bool = False,
    ) -> Reply:
        """AUTH with a password, the strongest offered mechanism unless one is named."""
        plan = self._plan_login(username, password, mechanism, allow_insecure)
        return cast(Reply, self._run(plan))

    def authenticate(self, mechanism: SASLMechanism, *, allow_insecure: bool = False) -> Reply:
        """AUTH with a SASL mechanism object (e.g. smtpbee._auth.XOAuth2)."""
        return cast(Reply, self._run(self._plan_auth(mechanism, allow_insecure)))

    def send_message(
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
        return cast(SendResult, self._run(proc, _blocking(body)))

    def sendmail(
        self,
        sender: str,
        recipients: str | Sequence[str],
        body: Any,
        *,
        mail_options: Mapping[str, Any] | None = None,
        rcpt_options: Mapping[str, Any] | None = None,
        smtputf8: bool = False,
    ) -> SendResult:
        """Send a body (bytes, a binary file, or an iterable of bytes) to recipients."""
        proc, pieces = self._plan_sendmail(
            sender, recipients, body, mail_options, rcpt_options, smtputf8
        )
        return cast(SendResult, self._run(proc, _blocking(pieces)))

    def sendmail_many(
        self, jobs: Iterable[tuple[str, str | Sequence[str], Any]]
    ) -> list[SendResult | SMTPError | None]:
        """Send several messages, overlapping them where the server allows.

        Each job is ``(sender, recipients, body)``. With PIPELINING, one message's
        terminator and the next one's envelope share a write: one round trip per
        message. Returns, per job, its SendResult, the SMTPError that ended it,
        or None if the session ended before it was tried.
        """
        proc, bodies = self._plan_sendmail_many(jobs)
        return cast("list[SendResult | SMTPError | None]", self._run(proc, bodies))

    def command(self, command: Command) -> Reply:
        """Send one command object; returns its reply, refusals included."""
        return cast(Reply, self._run(self._plan_command(command)))

    def pipeline(self, commands: Sequence[Command]) -> list[Reply]:
        """Send commands in one write; returns their replies in order."""
        return cast("list[Reply]", self._run(self.session.pipeline(commands)))

    def noop(self) -> Reply:
        return cast(Reply, self._run(self.session.noop()))

    def rset(self) -> Reply:
        return cast(Reply, self._run(self.session.rset()))

    def vrfy(self, address: str) -> Reply:
        return cast(Reply, self._run(self.session.vrfy(address)))

    def expn(self, address: str) -> Reply:
        return cast(Reply, self._run(self.session.expn(address)))

    def help(self, topic: str = "") -> Reply:
        return cast(Reply, self._run(self.session.help(topic)))

    def quit(self) -> Reply:
        """QUIT, then close the connection."""
        try:
            return cast(Reply, self._run(self.session.quit()))
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection (no QUIT); safe to call twice."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> SMTPClient:
        self.connect()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self.usable and self._sock is not None:
                self.quit()
        except SMTPError:
            pass
        finally:
            self.close()


def _blocking(pieces: Iterator[bytes] | AsyncIterable[bytes]) -> Iterator[bytes]:
    if isinstance(pieces, AsyncIterable):
        raise InvalidInputError("an async iterable body needs the asyncio or trio transport")
    return pieces


def send(
    message_or_body: email.message.Message | Any,
    *,
    host: str,
    port: int = 25,
    sender: str | None = None,
    recipients: Sequence[str] | None = None,
    username: str | None = None,
    password: str | None = None,
    **client_kwargs: Any,
) -> SendResult:
    """Connect, log in if asked, send one message, QUIT."""
    is_message = isinstance(message_or_body, email.message.Message)
    if not is_message and (sender is None or recipients is None):
        raise InvalidInputError("a raw body needs sender= and recipients=")
    with SMTPClient(host, port, **client_kwargs) as client:
        if username is not None:
            client.login(username, password or "")
        if is_message:
            return client.send_message(message_or_body, sender=sender, recipients=recipients)
        assert sender is not None and recipients is not None
        return client.sendmail(sender, recipients, message_or_body)
