# smtpbee/testing/_server
#
# ScriptedServer: what a scripted server does, as data (a handler table and a
# few settings), and the ways to run it. It holds no state of its own: each
# runner keeps the state of its connections, so one ScriptedServer can be run
# any number of times, in any runner, and behave the same.
from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Literal

from ._driver import ProcedureDriver
from ._engine import ServerSession, _Run
from ._model import Handler
from ._running import ThreadedServer

if TYPE_CHECKING:
    from ._asyncio import AsyncioServer
    from ._trio import TrioServer

__all__ = ["DEFAULT_HOSTNAME", "ScriptedServer"]

DEFAULT_HOSTNAME = "mx.smtpbee.test"
DEFAULT_MAX_SIZE = 32 * 1024 * 1024


class ScriptedServer:
    """An SMTP (or LMTP) server whose every answer can be scripted.

    Its behaviour is a table of handlers keyed by command verb; every verb
    without an entry gets the answer of a well-behaved server (a strict,
    Postfix-like one: EHLO with extensions, MAIL/RCPT/DATA/BDAT delivering
    into ``messages``, AUTH against ``users``, STARTTLS, QUIT...).

    ``ScriptedServer({"RCPT": "550 5.1.1 No such user"})`` refuses every
    recipient; ``{"MAIL": [reply(421, "4.3.2 bye"), close()]}`` closes on MAIL;
    ``{"DATA": replies("451 4.3.0 later", "354 go")}`` defers the first DATA.

    A handler table entry is one of:

    * a fixed answer: ``bytes`` (written as they are: garbage, half a reply,
      several replies), a ``str`` reply (``"250 2.0.0 Ok"``, lines split on
      newlines), a `reply()`, an action (`close`, `reset`, `stall`, `pause`,
      `start_tls`, `drip`, `inject`), None (say nothing), or a list of these,
      done in order;
    * `replies(a, b, ...)`: ``a`` the first time, ``b`` the second..., then
      the default;
    * a function ``(command, session) -> answer`` that sees the parsed
      `Command` and the `ServerSession` (``session.default(command)`` is the
      well-behaved answer).

    Besides the verbs (``"EHLO"``, ``"MAIL"``, ``"AUTH"``, ``"XCLIENT"``...),
    three keys are special: ``"GREETING"`` answers the connection,
    ``"MESSAGE"`` gives the final reply to a complete message (after DATA's
    final dot, or ``BDAT ... LAST``; a 2xx delivers it, a content over
    ``max_size`` gets 552 without asking), and ``"*"`` answers every verb that
    has no entry of its own. A line that answers a 334 challenge goes to the
    entry of the command that got the 334 (``Command.continuation`` is True).

    The session follows the codes written, whoever chose them: a 250 to MAIL
    opens a transaction, a 354 to DATA starts the content, a 334 awaits a
    response, a 2xx to MESSAGE delivers.

    Args:
        handlers: the handler table (keys are upper-cased).
        greeting: the ``GREETING`` entry (default: ``220 <hostname> ESMTP ...``).
        hostname: the name the default replies give.
        extensions: the EHLO lines after the first, exactly (STARTTLS is left
            out once TLS is on). By default: PIPELINING, SIZE, 8BITMIME,
            SMTPUTF8, ENHANCEDSTATUSCODES, CHUNKING, DSN, then STARTTLS and
            AUTH when offered.
        tls: ``"none"``; ``"starttls"`` (offered, done with ``tls_context``);
            or ``"implicit"`` (TLS from the first byte, before the greeting).
        tls_context: the server-side `ssl.SSLContext` the socket runners
            use for TLS (the procedure driver only pretends).
        users: login -> password; AUTH is offered (and checked) only with it.
        auth_mechanisms: the mechanisms offered and understood by default
            (PLAIN, LOGIN, CRAM-MD5 and XOAUTH2, whose token is the password).
        auth_requires_tls: offer AUTH only under TLS; refuse it before with 530.
        lmtp: speak LMTP: LHLO instead of EHLO, one final reply per recipient.
        max_size: the SIZE offered and enforced, in octets (None: no limit).
        max_line_length: the longest command line accepted (longer: 500).
        timeout: seconds a socket runner waits for the client (then 421 and
            close) and for each write.
        drain_timeout: after the server closes, seconds it still reads (and
            records) what the client sends, until the client closes too.
        host: where a socket runner listens: ``"127.0.0.1"`` or ``"::1"``.

    Raises:
        ValueError: ``tls`` is unknown, or ``host`` is not loopback.
    """

    def __init__(
        self,
        handlers: Mapping[str, Handler] | None = None,
        *,
        greeting: Handler | None = None,
        hostname: str = DEFAULT_HOSTNAME,
        extensions: Iterable[str] | None = None,
        tls: Literal["none", "starttls", "implicit"] = "none",
        tls_context: ssl.SSLContext | None = None,
        users: Mapping[str, str] | None = None,
        auth_mechanisms: Iterable[str] = ("PLAIN", "LOGIN"),
        auth_requires_tls: bool = False,
        lmtp: bool = False,
        max_size: int | None = DEFAULT_MAX_SIZE,
        max_line_length: int = 2048,
        timeout: float = 10.0,
        drain_timeout: float = 1.0,
        host: str = "127.0.0.1",
    ) -> None:
        if tls not in ("none", "starttls", "implicit"):
            raise ValueError(f"tls must be 'none', 'starttls' or 'implicit', not {tls!r}")
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"a scripted server listens on 127.0.0.1 or ::1 only, not {host!r}")
        self.handlers: dict[str, Handler] = {k.upper(): v for k, v in (handlers or {}).items()}
        if greeting is not None:
            self.handlers["GREETING"] = greeting
        self.hostname = hostname
        self.extensions = list(extensions) if extensions is not None else None
        self.tls = tls
        self.tls_context = tls_context
        self.users = dict(users) if users is not None else None
        self.auth_mechanisms = tuple(m.upper() for m in auth_mechanisms)
        self.auth_requires_tls = auth_requires_tls
        self.lmtp = lmtp
        self.max_size = max_size
        self.max_line_length = max_line_length
        self.timeout = timeout
        self.drain_timeout = drain_timeout
        self.host = host

    def __repr__(self) -> str:
        keys = ", ".join(sorted(self.handlers))
        return f"<ScriptedServer {self.hostname} tls={self.tls} handlers: {keys or 'defaults'}>"

    def session(self) -> ServerSession:
        """A new session without I/O: feed it the client's bytes, perform what it returns."""
        return ServerSession(self, _Run(self))

    def serve_in_thread(self) -> ThreadedServer:
        """Listen on loopback and serve each connection in a thread.

        Use as ``with server.serve_in_thread() as running:``, or call
        ``start()`` and ``stop()``; ``running.host`` and ``running.port`` are
        where to connect.
        """
        return ThreadedServer(self)

    def serve_asyncio(self) -> AsyncioServer:
        """Listen on loopback and serve in tasks of the running asyncio loop.

        Use as ``async with server.serve_asyncio() as running:``.
        """
        from ._asyncio import AsyncioServer

        return AsyncioServer(self)

    def serve_trio(self) -> TrioServer:
        """Listen on loopback and serve in a trio nursery (trio is imported now).

        Use as ``async with server.serve_trio() as running:``.
        """
        from ._trio import TrioServer

        return TrioServer(self)

    def driver(
        self, *, tls_verified: bool = True, tls_error: BaseException | None = None
    ) -> ProcedureDriver:
        """One connection served to a ClientSession's procedures, without a socket.

        Args:
            tls_verified: what a TLS handshake reports.
            tls_error: an exception to throw into the procedure at a handshake instead.
        """
        return ProcedureDriver(self, tls_verified=tls_verified, tls_error=tls_error)
