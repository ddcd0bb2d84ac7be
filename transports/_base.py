# smtpbee/transports/_base
#
# ClientBase: what every client is before it does anything. The constructor
# (its arguments checked at once, so a typo fails here and not inside a
# procedure), the TLS mode (resolved by the core), the default SSL context
# (built only when TLS is used), the ClientSession made once the local address
# is known, and the options of testers (stop points, forced pipelining and
# chunking, a PROXY header, a session log) handed to it. The plans behind the
# methods are in _plans.
#
# Invariant: nothing here decides anything about the protocol.
from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from smtpbee._control import Stop, check_controls
from smtpbee._errors import InvalidInputError, LocalProtocolError
from smtpbee._exchange import Transcript
from smtpbee._extensions import Extensions
from smtpbee._procedures import ClientSession
from smtpbee._proxy_header import ProxyHeader
from smtpbee._receivebuffer import ReplyLimits
from smtpbee._requests import Timeouts, TLSMode, resolve_tls_mode
from smtpbee.transports._common import (
    TLSInfo,
    default_ssl_context,
    local_hostname_for,
    logged_transcript,
)
from smtpbee.transports._plans import Plans
from smtpbee.transports._proxy import ProxyURL, parse_proxy
from smtpbee.transports._target import check_target, parse_connection_url

if TYPE_CHECKING:
    from smtpbee._session_log import SessionLog

__all__ = ["ClientBase"]


class ClientBase(Plans):
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
        session_log: a smtpbee.SessionLog recording every byte and event.
        stop: a smtpbee.Stop: end the session at a control point (raises
            SessionStopped there). For testing servers, as are the next three.
        pipelining: True groups commands even when PIPELINING is not
            offered, False never groups them; None: as offered.
        bdat_chunk_size: send the content with BDAT in chunks of exactly
            this many octets, even when CHUNKING is not offered.
        proxy_protocol: a smtpbee.ProxyHeader written before anything else.

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
        session_log: SessionLog | None = None,
        stop: Stop | None = None,
        pipelining: bool | None = None,
        bdat_chunk_size: int | None = None,
        proxy_protocol: ProxyHeader | None = None,
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
        check_controls(stop, bdat_chunk_size)
        if proxy_protocol is not None and not isinstance(proxy_protocol, ProxyHeader):
            raise InvalidInputError("proxy_protocol must be a smtpbee.ProxyHeader")
        self._controls: dict[str, Any] = {
            "session_log": session_log,
            "stop": stop,
            "pipelining": pipelining,
            "bdat_chunk_size": bdat_chunk_size,
            "proxy_header": proxy_protocol,
        }
        self._session: ClientSession | None = None
        self.tls_info: TLSInfo | None = None
        """The TLS layer of the connection, or None while it is plaintext."""

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
            **self._controls,
        )
        return self._session
