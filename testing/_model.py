# smtpbee/testing/_model
#
# The values a scripted server is made of and what it records: the parsed
# Command a handler sees, the delivered Message, the Transcript of the wire,
# the actions a handler may return (close, reset, stall, pause, start TLS,
# drip, inject), and the reply()/replies() helpers that build a handler
# table. No I/O here; the engine (_engine) interprets these values and the
# runners perform the actions.
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple, TypeAlias

from smtpbee import Reply

if TYPE_CHECKING:
    from ._engine import ServerSession

__all__ = [
    "DEFAULT",
    "Action",
    "Close",
    "Command",
    "Drip",
    "Entry",
    "Handler",
    "HandlerFunction",
    "Inject",
    "Message",
    "Pause",
    "Replies",
    "Reset",
    "Response",
    "Stall",
    "StartTLS",
    "Transcript",
    "close",
    "drip",
    "inject",
    "pause",
    "replies",
    "reply",
    "reset",
    "stall",
    "start_tls",
]

# "FROM:<path> params" / "TO:<path> params", with or without a space after the colon.
_PATH = re.compile(r"(?i)(?:FROM|TO):\s*<([^<>]*)>(.*)")


@dataclass(frozen=True, slots=True)
class Command:
    """One thing the client said, as a handler sees it.

    Besides the client's commands there are two events a handler table can
    answer: ``GREETING`` (the connection opened; ``line`` is empty) and
    ``MESSAGE`` (the content of a message is complete, after the final dot of
    DATA or with ``BDAT ... LAST``; ``message`` holds it).

    Attributes:
        verb: the command word, upper-cased (``"MAIL"``), or ``GREETING`` or
            ``MESSAGE``. For an answer to a 334 challenge it is the verb of the
            command that started the exchange (``"AUTH"``).
        argument: the rest of the line after the verb and one space, decoded
            as UTF-8 (undecodable bytes kept as surrogates).
        line: the line as received, with its line end (for BDAT, the command
            line only; the chunk is in ``data``).
        tls: whether it arrived under TLS.
        continuation: True for a line that answers a 334 challenge (an AUTH
            response); ``argument`` is then the whole line.
        data: the chunk of a BDAT command; the whole content for ``MESSAGE``.
        message: for ``MESSAGE`` (and ``BDAT ... LAST``): the message the
            server is about to accept or refuse.
    """

    verb: str
    argument: str = ""
    line: bytes = b""
    tls: bool = False
    continuation: bool = False
    data: bytes = field(default=b"", repr=False)
    message: Message | None = field(default=None, repr=False)

    @property
    def address(self) -> str | None:
        """The path of ``MAIL FROM:<path>`` or ``RCPT TO:<path>`` (None if malformed)."""
        match = _PATH.match(self.argument)
        return match.group(1) if match else None

    @property
    def parameters(self) -> dict[str, str | None]:
        """The ESMTP parameters after the path, keys upper-cased (``{"SIZE": "12"}``)."""
        match = _PATH.match(self.argument)
        words = match.group(2).split() if match else []
        found: dict[str, str | None] = {}
        for word in words:
            key, sep, value = word.partition("=")
            found[key.upper()] = value if sep else None
        return found


@dataclass(frozen=True, slots=True)
class Message:
    """A message the server accepted (``MESSAGE`` answered with a 2xx).

    Attributes:
        sender: the reverse path of MAIL FROM (``""`` for the null sender).
        recipients: the accepted recipients (for LMTP, those whose own reply
            was a success).
        content: the message as the server stores it: DATA content with the
            dot-stuffing undone and the final dot removed, or the BDAT chunks
            joined.
        wire: the content as it came off the wire: for DATA, dot-stuffed and
            with the final ``.\\r\\n``; for BDAT, the chunks joined.
        chunks: each BDAT chunk, in order (empty for DATA).
        mail: the MAIL command (its ``parameters`` hold SIZE=, BODY= ...).
        queue_id: the identifier the default final reply names.
        tls: whether the content arrived under TLS.
        user: the login that authenticated the session, or None.
        helo: the name the client gave in EHLO, HELO or LHLO.
    """

    sender: str
    recipients: tuple[str, ...]
    content: bytes = field(repr=False)
    wire: bytes = field(repr=False)
    chunks: tuple[bytes, ...] = field(repr=False)
    mail: Command
    queue_id: str
    tls: bool
    user: str | None
    helo: str | None


class Entry(NamedTuple):
    """One entry of a transcript: who wrote it, the bytes, and whether under TLS.

    Client entries are units the server read: a command line, a DATA content
    with its final dot, a BDAT chunk, an AUTH response, or bytes that arrived
    after the server stopped reading commands. Server entries are what it
    wrote in one go: every reply to what it read at once, or a drip.
    """

    direction: Literal["C", "S"]
    data: bytes
    tls: bool


class Transcript(list[Entry]):
    """The wire of one or more sessions: ``(direction, data, tls)`` entries in order."""

    def client(self) -> bytes:
        """Every byte the client wrote, joined."""
        return b"".join(e.data for e in self if e.direction == "C")

    def server(self) -> bytes:
        """Every byte the server wrote, joined."""
        return b"".join(e.data for e in self if e.direction == "S")

    def rounds(self) -> list[list[bytes]]:
        """The client's units between two writes of the server, one list per stretch.

        A pipelining client's MAIL, RCPT and DATA arrive in one round; a client
        in lock step sends one unit per round. Stretches with no client entry
        are left out.
        """
        found: list[list[bytes]] = []
        current: list[bytes] = []
        for entry in self:
            if entry.direction == "C":
                current.append(entry.data)
            elif current:
                found.append(current)
                current = []
        if current:
            found.append(current)
        return found


# ----------------------------------------------------------------------------
# Actions


class Action:
    """Something a handler asks the server to do besides writing a reply."""

    __slots__ = ()


class _Default(Action):
    __slots__ = ()

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Action = _Default()
"""The answer of a well-behaved server, as a value: ``[DEFAULT, stall()]`` answers, then stalls.

It can stand wherever an answer can: in a list, in `replies`, or returned by a
handler function (which is the same as returning ``session.default(command)``).
"""


@dataclass(frozen=True, slots=True)
class Inject(Action):
    """Write these bytes as they are (any bytes: half a reply, garbage, TLS junk)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Close(Action):
    """Close the connection: FIN, then read (and record) until the client closes too."""


@dataclass(frozen=True, slots=True)
class Reset(Action):
    """Abort the connection with a TCP RST; what the client sends next fails."""


@dataclass(frozen=True, slots=True)
class Stall(Action):
    """Say nothing more: record what arrives until the client closes the connection."""


@dataclass(frozen=True, slots=True)
class Pause(Action):
    """Wait this many seconds, then go on."""

    seconds: float


@dataclass(frozen=True, slots=True)
class StartTLS(Action):
    """Run the server side of a TLS handshake now (after what was written before)."""


@dataclass(frozen=True, slots=True)
class Drip(Action):
    """Write these bytes one at a time, ``interval`` seconds apart."""

    data: bytes
    interval: float


def close() -> Close:
    """Close the connection (orderly: FIN), as after ``221`` or ``421``."""
    return Close()


def reset() -> Reset:
    """Abort the connection with a TCP RST."""
    return Reset()


def stall() -> Stall:
    """Go silent for good: answer nothing, record what arrives until the client hangs up."""
    return Stall()


def pause(seconds: float) -> Pause:
    """Wait ``seconds`` before the rest of the response (a slow server)."""
    return Pause(float(seconds))


def start_tls() -> StartTLS:
    """Start TLS now: the server side of the handshake, with the server's context."""
    return StartTLS()


def drip(data: bytes | str | Reply, interval: float) -> Drip:
    """Write ``data`` one byte at a time, ``interval`` seconds apart (a dripping server)."""
    return Drip(to_bytes(data), float(interval))


def inject(data: bytes) -> Inject:
    """Write ``data`` exactly as given: a reply nobody asked for, garbage, half a line."""
    return Inject(bytes(data))


# ----------------------------------------------------------------------------
# Replies and handler values

_DEFAULT_TEXT = {2: "2.0.0 Ok", 3: "Go ahead", 4: "4.0.0 Try again later", 5: "5.0.0 Refused"}


def reply(code: int, *lines: str | bytes) -> Reply:
    """A reply: ``reply(250, "2.1.0 Ok")``; several lines make a multi-line reply.

    Args:
        code: the reply code, written as three digits.
        *lines: the text of each line (str is encoded as UTF-8). None gives a
            short text for the code's class (``"2.0.0 Ok"``, ``"5.0.0 Refused"``).

    Returns:
        A `smtpbee.Reply`; as a handler's answer it is written with CRLF line ends.
    """
    texts = lines or (_DEFAULT_TEXT.get(code // 100, ""),)
    encoded = tuple(t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in texts)
    return Reply(code=code, lines=encoded)


@dataclass(frozen=True, slots=True, init=False)
class Replies:
    """Answers used in turn: the first time the first, then the next...

    When they are used up, the server answers as a well-behaved server would
    (its default). The count is kept per running server, shared by its
    connections: ``replies("421 busy", "220 ok")`` as the greeting refuses the
    first connection and greets the second.
    """

    items: tuple[Handler, ...]

    def __init__(self, *items: Handler) -> None:
        object.__setattr__(self, "items", items)


def replies(*items: Handler) -> Replies:
    """Answers to use in turn, then the default: ``replies("451 4.3.0 later", "250 ok")``."""
    return Replies(*items)


Response: TypeAlias = "bytes | str | Reply | Action | Sequence[Response] | None"
"""What a handler answers: bytes as they are, a reply, an action, nothing, or a list of those.

A str is reply text with its code (``"550 5.1.1 No such user"``); a newline in
it separates the lines of a multi-line reply (``"250-a\\n250 b"``). A sequence
is a list or a tuple, done in order.
"""

HandlerFunction: TypeAlias = "Callable[[Command, ServerSession], Response]"
"""A handler that decides: called with the command and the session, returns a Response."""

Handler: TypeAlias = "Response | Replies | HandlerFunction"
"""An entry of a handler table: a fixed Response, `Replies` in turn, or a function."""


def to_bytes(value: bytes | str | Reply) -> bytes:
    """The wire form of a reply value."""
    if isinstance(value, Reply):
        return value.to_bytes()
    if isinstance(value, str):
        lines = value.replace("\r\n", "\n").removesuffix("\n").split("\n")
        return b"".join(line.encode("utf-8") + b"\r\n" for line in lines)
    return bytes(value)


def flatten(response: Response, default: Callable[[], Response]) -> Iterable[bytes | Action]:
    """The writes and actions of a response, in order (bytes for replies and injections).

    ``default`` gives the answer DEFAULT stands for.
    """
    if response is None:
        return
    if isinstance(response, list | tuple):
        for item in response:
            yield from flatten(item, default)
    elif response is DEFAULT:
        yield from flatten(default(), _no_default)
    elif isinstance(response, Inject):
        yield response.data
    elif isinstance(response, Action):
        yield response
    elif isinstance(response, bytes | bytearray | str | Reply):
        yield to_bytes(response)
    else:
        raise TypeError(f"a handler answered {response!r}: not bytes, str, Reply or an action")


def _no_default() -> Response:
    raise TypeError("the default answer cannot itself be DEFAULT")
