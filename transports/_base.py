# smtpbee/transports/_base
#
# ClientBase: what every client is before it does anything. The constructor
# (its arguments checked at once, so a typo fails here and not inside a
# procedure), the TLS mode (resolved by the core), the default SSL context
# (built only when TLS is used), the ClientSession made once the local address
# is known, and the plans behind the methods that translate the user's Python
# values (a message, a body, a batch) into a procedure and its body pieces.
#
# Invariant: nothing here decides anything about the protocol.
from __future__ import annotations

import email.message
import ssl
from collections.abc import AsyncIterable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from smtpbee._errors import InvalidInputError, LocalProtocolError, SMTPError
from smtpbee._exchange import Transcript
from smtpbee._extensions import Extensions
from smtpbee._procedures import ClientSession
from smtpbee._receivebuffer import ReplyLimits
from smtpbee._requests import Procedure, Timeouts, TLSMode, resolve_tls_mode
from smtpbee._transaction import SendResult
from smtpbee.transports._common import (
    TLSInfo,
    default_ssl_context,
    local_hostname_for,
    logged_transcript,
)
from smtpbee.transports._message import BatchItem, batch_source, body_source, prepare_message
from smtpbee.transports._proxy import ProxyURL, parse_proxy
from smtpbee.transports._target import check_target, parse_connection_url

__all__ = ["ClientBase"]


class ClientBase:
    """The configuration every client shares; the methods are in _async/client.py.

    Args:
        host: the server's name or address (its name is checked against the
            certificate unless ``server_hostname`` says otherwise), or a
            connection URL: ``smtps://user:pass@host:465`` (implicit TLS),
            ``smtp://user:pass@host:587`` (STARTTLS required) or
            ``lmtp://host:24``; credentials in a URL are percent-decoded and
            used to log in when connecting. Arguments given explicitly win
            over what the URL says.
        port: 25 by default (the scheme's default for a URL); 465 means
            implicit TLS (RFC 8314) unless ``tls`` names another mode, 587 is
            submission with STARTTLS.
        tls: "starttls" (required: no TLS, no session), "implicit" (TLS from
            the first byte), "opportunistic" (STARTTLS when offered) or "none".
            Default: implicit on port 465, required STARTTLS elsewhere.
        ssl_context: the context for TLS; default: the system's roots, TLS
            1.2 or later, host names checked. AUTH is refused over TLS whose
            context does not verify the certificate, unless the caller allows it.
        server_hostname: the name to check the certificate against (and send
            as SNI); default: ``host``.
        local_hostname: the name to give in EHLO; default: the address literal
            of the local end, e.g. ``[192.0.2.1]`` (never a DNS lookup).
        source_address: ``(host, port)`` to connect from (with a proxy: the
            local end of the connection to the proxy).
        proxy: connect through a proxy: ``socks5://user:pass@host:port``,
            ``socks4://host:port`` or ``http://host:port`` (HTTP CONNECT);
            needs ``smtpbee[proxy]``. TLS and its certificate check are the
            server's, as without a proxy; the credentials are never shown.
        sock: an already-connected socket (trio: a Stream) to use instead of
            connecting; one that is already TLS means implicit TLS.
        timeout: seconds for every phase (and at most that to connect);
            default: the RFC 5321 §4.5.3.2 timeouts, 30 s to connect.
        timeouts: per-phase seconds, as a Timeouts (overrides ``timeout``).
        connect_timeout: seconds to open the TCP connection.
        lmtp: speak LMTP (RFC 2033): LHLO, and one result per recipient.
        limits: size limits for the server's replies (ReplyLimits).
        transcript: called with ("C" or "S", line) for every line of the
            session, secrets redacted and server text escaped; see transcript_to.

    Raises:
        InvalidInputError: an argument that cannot work (an unknown TLS mode,
            a bad URL, proxy URL or port, a timeout that is not a positive number, TLS
            with name checking but no name, an already-TLS socket with a mode
            other than implicit).
        TypeError: an argument of the wrong type (a misspelt keyword is one).
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        tls: TLSMode | str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        local_hostname: str | None = None,
        source_address: tuple[str, int] | None = None,
        proxy: str | None = None,
        sock: Any = None,
        timeout: float | None = None,
        timeouts: Timeouts | None = None,
        connect_timeout: float = 30.0,
        lmtp: bool | None = None,
        limits: ReplyLimits | None = None,
        transcript: Transcript | None = None,
    ) -> None:
        if host is None and sock is None:
            raise InvalidInputError("give a host (or a connected sock)")
        self.credentials: tuple[str, str] | None = None
        """The user name and password of a connection URL, used to log in on connect."""
        if host is not None and "://" in host:
            url = parse_connection_url(host)
            host, port = url.host, url.port if port is None else port
            tls = url.tls if tls is None else tls
            lmtp = url.lmtp if lmtp is None else lmtp
            if url.username is not None:
                self.credentials = (url.username, url.password or "")
        port = 25 if port is None else port
        check_target(host, port, timeout, connect_timeout)
        self.host = host
        self.port = port
        self.tls_mode = resolve_tls_mode(tls, port)
        if sock is not None and self._is_tls(sock):
            if tls is not None and self.tls_mode is not TLSMode.IMPLICIT:
                raise InvalidInputError(
                    f"the socket is already TLS: tls={self.tls_mode.value!r} cannot apply"
                    ' (leave tls unset, or use "implicit")'
                )
            self.tls_mode = TLSMode.IMPLICIT
        # Building the default context loads the system's CA store (tens of
        # milliseconds): only done when TLS is actually used.
        self._ssl_context = ssl_context
        self.server_hostname = server_hostname or host
        checks_name = ssl_context is None or ssl_context.check_hostname
        needs_name = self.tls_mode is not TLSMode.NONE and checks_name
        if needs_name and self.server_hostname is None:
            raise InvalidInputError("TLS with host name checking needs server_hostname")
        self.local_hostname = local_hostname
        self.source_address = source_address
        self.proxy: ProxyURL | None = parse_proxy(proxy, sock)
        self._sock_given = sock
        self.timeouts = timeouts or (Timeouts.uniform(timeout) if timeout else Timeouts())
        self.connect_timeout = min(connect_timeout, timeout) if timeout else connect_timeout
        self.lmtp = bool(lmtp)
        self.limits = limits
        self.transcript = transcript
        self._session: ClientSession | None = None
        self.tls_info: TLSInfo | None = None
        """The TLS layer of the connection, or None while it is plaintext."""

    _takes_async_bodies = False
    """Whether bodies may be async iterables (the async clients say yes)."""

    @staticmethod
    def _is_tls(sock: Any) -> bool:
        """Whether a given socket or stream is already TLS."""
        return isinstance(sock, ssl.SSLSocket)

    @property
    def _host(self) -> str:
        """The host to connect to (checked at construction when no sock is given)."""
        if self.host is None:
            raise InvalidInputError("no host to connect to")
        return self.host

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The context for TLS: the one given, or a verifying default."""
        if self._ssl_context is None:
            self._ssl_context = default_ssl_context()
        return self._ssl_context

    @property
    def session(self) -> ClientSession:
        """The core session (for low-level use); exists once connected."""
        if self._session is None:
            raise LocalProtocolError("not connected: call connect() first")
        return self._session

    @property
    def extensions(self) -> Extensions:
        """What the server advertised in its last EHLO."""
        return self.session.conn.extensions

    @property
    def usable(self) -> bool:
        """Whether the session can take another command."""
        return self._session is not None and self._session.conn.open

    def _new_session(self, sockname: Any) -> ClientSession:
        self._session = ClientSession(
            local_hostname=self.local_hostname or local_hostname_for(sockname),
            tls=self.tls_mode,
            lmtp=self.lmtp,
            timeouts=self.timeouts,
            limits=self.limits,
            transcript=logged_transcript(self.transcript),
        )
        return self._session

    def _plan_sendmail(
        self,
        sender: str,
        recipients: str | Sequence[str],
        body: Any,
        mail_options: Mapping[str, Any] | None,
        rcpt_options: Mapping[str, Any] | None,
        smtputf8: bool,
    ) -> tuple[Procedure[SendResult], Iterator[bytes] | AsyncIterable[bytes]]:
        info, pieces = body_source(body)
        if isinstance(pieces, AsyncIterable) and not self._takes_async_bodies:
            raise InvalidInputError("an async iterable body needs the asyncio or trio transport")
        if isinstance(recipients, str):
            recipients = [recipients]
        proc = self.session.sendmail(
            sender,
            recipients,
            body=info,
            smtputf8=smtputf8,
            mail_options=mail_options,
            rcpt_options=rcpt_options,
        )
        return proc, pieces

    def _plan_batch(
        self, items: Iterable[BatchItem]
    ) -> tuple[Procedure[list[SendResult | SMTPError]], Iterator[bytes]]:
        jobs, bodies = batch_source(items, self.extensions)
        return self.session.send_batch(jobs), bodies

    def _plan_message(
        self,
        msg: email.message.Message,
        sender: str | None,
        recipients: Sequence[str] | None,
        mail_options: Mapping[str, Any] | None,
        rcpt_options: Mapping[str, Any] | None,
    ) -> tuple[Procedure[SendResult], Iterator[bytes] | AsyncIterable[bytes]]:
        server = self.extensions
        prepared = prepare_message(msg, sender=sender, recipients=recipients, server=server)
        return self._plan_sendmail(
            prepared.sender,
            prepared.recipients,
            prepared.data,
            mail_options,
            rcpt_options,
            prepared.smtputf8,
        )
