"""What a hostile-server case is made of: the server, the client, what it does, what must happen.

A `Case` is one row of the table in `hostile.cases`: a scripted server (a
`smtpbee.testing` handler table and its options), a client (TLS mode,
timeouts, trust), the steps it takes after connecting, the expected outcome
(a typed smtpbee error class, or success, with checks on the result and on
what the server recorded), and the byte patterns that must never appear in
what the client wrote. Everything here is plain data, so other tools (the
comparison script in bench/, the renderer of RELIABILITY.md) read the same
table the tests run.
"""

from __future__ import annotations

import email.message
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, TypeAlias

import smtpbee
from smtpbee.testing import Handler

from .certs import Cert, Trust

if TYPE_CHECKING:
    from .runners import Run

__all__ = [
    "CATEGORIES",
    "FATAL",
    "Batch",
    "Body",
    "Case",
    "Category",
    "Client",
    "Driver",
    "Expect",
    "Forbidden",
    "Login",
    "Send",
    "Server",
    "Small",
    "Step",
]

Category = Literal[
    "malformed replies",
    "oversized and slow input",
    "STARTTLS",
    "AUTH",
    "DATA and SMTP smuggling",
    "TLS verification",
    "timeouts and faults",
]
CATEGORIES: tuple[Category, ...] = (
    "malformed replies",
    "oversized and slow input",
    "STARTTLS",
    "AUTH",
    "DATA and SMTP smuggling",
    "TLS verification",
    "timeouts and faults",
)

SENDER = "sender@client.hostile.test"
RECIPIENT = "rcpt@mx.hostile.test"

FATAL: tuple[type[smtpbee.SMTPError], ...] = (
    smtpbee.RemoteProtocolError,
    smtpbee.SMTPTimeoutError,
    smtpbee.ConnectionLostError,
    smtpbee.OutcomeUnknownError,
    smtpbee.TLSRequiredError,
)
"""Errors after which the session is over (a 421 is one too, see Expect.usable)."""


# ----------------------------------------------------------------------------
# The server


@dataclass(frozen=True)
class Server:
    """A scripted server: the handler table and the options of smtpbee.testing.ScriptedServer.

    Attributes:
        handlers: the handler table (verbs, GREETING, MESSAGE, "*").
        extensions: the EHLO lines after the first, exactly (None: the defaults).
        tls: "none", "starttls" (offered; put STARTTLS in ``extensions``) or "implicit".
        cert: which certificate a TLS handshake presents (see hostile.certs).
        users: login -> password; AUTH is checked against it.
        auth_mechanisms: what the default AUTH handler understands.
    """

    handlers: Mapping[str, Handler] = field(default_factory=dict)
    extensions: tuple[str, ...] | None = ("PIPELINING",)
    tls: Literal["none", "starttls", "implicit"] = "none"
    cert: Cert = "good"
    users: Mapping[str, str] | None = None
    auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")

    def describe(self) -> str:
        """A short text of the handler table, for reports."""
        parts = [f"{key}: {_short(value)}" for key, value in self.handlers.items()]
        if self.tls != "none":
            parts.append(f"tls={self.tls}" + (f" cert={self.cert}" if self.cert != "good" else ""))
        return "; ".join(parts) or "well-behaved"


def _short(value: object, limit: int = 70) -> str:
    text = value.__name__ if callable(value) and hasattr(value, "__name__") else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------
# The client and what it does


@dataclass(frozen=True)
class Client:
    """How the client is built.

    Attributes:
        tls: the TLS mode ("none", "starttls", "opportunistic", "implicit").
        timeout: seconds for every phase (at most 0.5 in this suite).
        timeouts: per-phase overrides (names of smtpbee.Timeouts).
        trust: "ca" (verifies against the suite's CA) or "unverified" (checks nothing).
        limits: reply size limits, if not the defaults.
    """

    tls: Literal["none", "starttls", "opportunistic", "implicit"] = "none"
    timeout: float = 0.5
    timeouts: Mapping[str, float] = field(default_factory=dict)
    trust: Trust = "ca"
    limits: smtpbee.ReplyLimits | None = None

    def all_timeouts(self) -> smtpbee.Timeouts:
        return replace(smtpbee.Timeouts.uniform(self.timeout), **self.timeouts)


@dataclass(frozen=True)
class Body:
    """A message body, as the caller hands it to the client.

    Attributes:
        data: the content: bytes, or a str (refused: bodies are bytes), or for
            ``kind="message"`` the text of an EmailMessage made around it.
        kind: "bytes" (given whole), "str", "message" (an EmailMessage: From,
            To and Subject headers, ``data`` as its text) or "pieces" (an
            iterable of bytes, ``piece`` octets each, streamed).
        piece: the size of each piece for "pieces".
        repeat: ``data`` is repeated this many times (large bodies, small tables).
        wait: (index, seconds): before handing out piece ``index``, the caller
            waits (the driver moves its virtual clock instead).
    """

    data: bytes | str
    kind: Literal["bytes", "str", "message", "pieces"] = "bytes"
    piece: int = 0
    repeat: int = 1
    wait: tuple[int, float] | None = None

    def whole(self) -> bytes:
        """The content as bytes (for "message": the text, not the flattened message)."""
        data = self.data.encode("utf-8") if isinstance(self.data, str) else self.data
        return data * self.repeat

    def message(self) -> email.message.EmailMessage:
        msg = email.message.EmailMessage()
        msg["From"] = SENDER
        msg["To"] = RECIPIENT
        msg["Subject"] = "hostile"
        text = self.data if isinstance(self.data, str) else self.data.decode("utf-8")
        msg.set_content(text * self.repeat)
        return msg

    def pieces(self, sleep: Callable[[float], None]) -> Iterator[bytes]:
        """The pieces of a "pieces" body; ``sleep`` is called where the caller waits."""
        data = self.whole()
        size = self.piece or len(data) or 1
        for index, start in enumerate(range(0, len(data), size)):
            if self.wait is not None and self.wait[0] == index:
                sleep(self.wait[1])
            yield data[start : start + size]

    async def apieces(self, sleep: Callable[[float], Awaitable[None]]) -> AsyncIterator[bytes]:
        """The same pieces, for the async clients (which must not block their loop)."""
        data = self.whole()
        size = self.piece or len(data) or 1
        for index, start in enumerate(range(0, len(data), size)):
            if self.wait is not None and self.wait[0] == index:
                await sleep(self.wait[1])
            yield data[start : start + size]

    def describe(self) -> str:
        data = self.whole()
        shown = repr(data[:48]) + ("..." if len(data) > 48 else "")
        if self.kind == "pieces":
            return f"{len(data)} octets in pieces of {self.piece or len(data)}: {shown}"
        if self.kind == "str":
            return f"a str body: {self.data!r}"[:80]
        if self.kind == "message":
            return f"an EmailMessage whose text is {shown}"
        return f"{len(data)} octets: {shown}"


DEFAULT_BODY = Body(b"Subject: hostile\r\n\r\nThe body of a hostile test.\r\n")
"""A small message; its marker text, BODY_MARKER, shows where content went."""
BODY_MARKER = b"The body of a hostile test."


@dataclass(frozen=True)
class Login:
    """AUTH with a user name and password (or SCRAM-SHA-256 with a fixed nonce)."""

    username: str = "user"
    password: str = "secret"
    mechanism: str | None = None
    allow_insecure: bool = True
    scram_nonce: str | None = None

    def describe(self) -> str:
        how = "SCRAM-SHA-256" if self.scram_nonce else (self.mechanism or "best offered")
        return f"login ({how}{', allow_insecure' if self.allow_insecure else ''})"


@dataclass(frozen=True)
class Send:
    """One message: sendmail (bytes, str, pieces) or send_message (an EmailMessage)."""

    body: Body = DEFAULT_BODY
    sender: str = SENDER
    recipients: tuple[str, ...] = (RECIPIENT,)

    def describe(self) -> str:
        verb = "send_message" if self.body.kind == "message" else "sendmail"
        return f"{verb}: {self.body.describe()}"


@dataclass(frozen=True)
class Batch:
    """send_batch of several (sender, recipients, body) messages."""

    bodies: tuple[bytes, ...]

    def describe(self) -> str:
        return f"send_batch of {len(self.bodies)} messages"


@dataclass(frozen=True)
class Small:
    """A small command: NOOP, RSET, VRFY, HELP or QUIT."""

    verb: Literal["NOOP", "RSET", "VRFY", "HELP", "QUIT"]
    argument: str = ""

    def describe(self) -> str:
        return f"{self.verb} {self.argument}".strip()


Step: TypeAlias = Login | Send | Batch | Small


# ----------------------------------------------------------------------------
# What must happen


@dataclass(frozen=True)
class Forbidden:
    """A byte pattern that must never appear in what the client wrote.

    Attributes:
        pattern: bytes (found anywhere) or a compiled bytes regex.
        why: what it would mean, for the report.
        scope: where to look: "all" the client wrote (plain and TLS, and for
            the driver every write), only what went in "plaintext", or only
            what the server "parsed" as commands and content (not the bytes
            it recorded unread after it closed or stalled, such as a
            ClientHello sent to a server that never started TLS).
    """

    pattern: bytes | re.Pattern[bytes]
    why: str
    scope: Literal["all", "plaintext", "parsed"] = "all"

    def found_in(self, data: bytes) -> bool:
        if isinstance(self.pattern, bytes):
            return self.pattern in data
        return self.pattern.search(data) is not None

    def describe(self) -> str:
        shown = self.pattern if isinstance(self.pattern, bytes) else self.pattern.pattern
        where = {"all": "", "plaintext": " in plaintext", "parsed": " in commands"}[self.scope]
        return f"{shown!r}{where}: {self.why}"


@dataclass(frozen=True)
class Expect:
    """The outcome every runner must give.

    Attributes:
        error: the exact smtpbee error class raised, or None for success.
        split_error: the class when the server's bytes arrive in pieces, where
            that legitimately differs (documented by the case).
        cause: the class of the error's ``__cause__``, if checked.
        match: a regex that ``str(error)`` must match.
        usable: whether the client can take another command afterwards
            (default: no after a fatal error or a 421, yes otherwise).
        batch: for a Batch step, the class name of each item's outcome.
        delivered: how many messages the server accepted (None: not checked).
        content: the content of the one message the server accepted.
        required: patterns that must appear in what the client wrote.
        check: more checks on the run (raise AssertionError).
    """

    error: type[smtpbee.SMTPError] | None = None
    split_error: type[smtpbee.SMTPError] | None = None
    cause: type[BaseException] | None = None
    match: str | None = None
    usable: bool | None = None
    batch: tuple[str, ...] = ()
    delivered: int | None = None
    content: bytes | None = None
    required: tuple[bytes | re.Pattern[bytes], ...] = ()
    check: Callable[[Run], None] | None = None

    @property
    def outcome(self) -> str:
        return "success" if self.error is None else self.error.__name__

    def session_usable(self) -> bool:
        if self.usable is not None:
            return self.usable
        if self.error is None:
            return True
        return not issubclass(self.error, FATAL)


@dataclass(frozen=True)
class Driver:
    """How the procedure driver stands in for what only a socket shows.

    Attributes:
        tls_error: thrown into the procedure at the TLS handshake (a refused
            certificate, a protocol version the client refuses).
        tls_verified: what a successful handshake reports.
        write_stall_after: octets of content the wire takes before a write
            times out (a server that stops reading).
    """

    tls_error: smtpbee.SMTPError | None = None
    tls_verified: bool = True
    write_stall_after: int | None = None


@dataclass(frozen=True)
class Case:
    """One hostile behaviour, one row of the table.

    Attributes:
        id: a short unique name (the pytest id).
        category: one of CATEGORIES.
        description: one line: what the server does and what the client must do.
        source: where the behaviour comes from: an RFC section, an advisory, a
            paper, or "smtpbee design".
        server: the scripted server.
        steps: what the client does after connecting (connect alone: none).
        expect: the outcome.
        forbidden: patterns that must never appear in what the client wrote.
        client: how the client is built.
        driver: how the procedure driver emulates socket-only faults.
        peers: whether smtplib and aiosmtplib can run it (bench/hostile_compare.py).
    """

    id: str
    category: Category
    description: str
    source: str
    server: Server
    expect: Expect
    steps: tuple[Step, ...] = ()
    forbidden: tuple[Forbidden, ...] = ()
    client: Client = field(default_factory=Client)
    driver: Driver = field(default_factory=Driver)
    peers: bool = True

    def action(self) -> str:
        """The client's action, in words."""
        tls = f"tls={self.client.tls}" if self.client.tls != "none" else "plaintext"
        steps = ", ".join(step.describe() for step in self.steps) or "connect only"
        return f"{steps} ({tls}, timeout {self.client.timeout:g}s)"
