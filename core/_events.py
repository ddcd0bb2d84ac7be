# smtpbee/_events
#
# What Connection.next_event() hands back: values describing what the server
# said, each bound to the command it answers, plus two sentinels that are not
# events at all (NEED_DATA: feed more bytes; PAUSED: do the TLS handshake).
#
# Every reply event says what the reply means (its ReplyKind, from the rules
# in _state), so no layer above the connection reads reply codes to decide.
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ._commands import Command
from ._replies import Reply
from ._state import Phase, ReplyKind

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "AuthChallengeReceived",
    "ConnectionClosed",
    "ContentRequested",
    "Event",
    "GreetingReceived",
    "Phase",
    "ReplyKind",
    "ReplyReceived",
    "Sentinel",
]


class Sentinel(enum.Enum):
    """Answers of next_event() that are not events."""

    NEED_DATA = "need data"
    PAUSED = "paused"

    def __repr__(self) -> str:
        return self.name


NEED_DATA = Sentinel.NEED_DATA
"""No complete reply is buffered: receive more bytes, then ask again."""

PAUSED = Sentinel.PAUSED
"""STARTTLS was accepted: do the TLS handshake, then call tls_established()."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base class of what the server said."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GreetingReceived(Event):
    """The server's opening reply.

    Attributes:
        reply: the reply.
        kind: SUCCESS (220), PERMANENT (554: no service, only QUIT is left),
            TRANSIENT or CLOSING (the server will not serve this session).
    """

    reply: Reply
    kind: ReplyKind = ReplyKind.SUCCESS

    @property
    def accepted(self) -> bool:
        return self.kind is ReplyKind.SUCCESS


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyReceived(Event):
    """A reply to a command the client sent.

    Attributes:
        command: the command it answers; None for a 421 nobody asked for.
        reply: the reply.
        kind: SUCCESS, TRANSIENT or PERMANENT (a refusal), or CLOSING (421,
            or 221 to anything but QUIT: nothing more can be sent).
        recipient: with LMTP, the recipient this reply to the content is for.
    """

    command: Command | None
    reply: Reply
    kind: ReplyKind = ReplyKind.SUCCESS
    recipient: str | None = None

    @property
    def accepted(self) -> bool:
        """The command succeeded (the code is one its rule lists as success)."""
        return self.kind is ReplyKind.SUCCESS

    @property
    def closing(self) -> bool:
        """The server is closing the connection."""
        return self.kind is ReplyKind.CLOSING


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentRequested(Event):
    """The 354 to DATA: send the content now, then EndOfData.

    Attributes:
        command: the DATA command it answers.
        reply: the 354 reply.
    """

    command: Command
    reply: Reply

    @property
    def accepted(self) -> bool:
        """False: a request to go on is not the command's final success."""
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthChallengeReceived(Event):
    """A 334 during AUTH.

    Attributes:
        reply: the 334 reply.
        challenge: the decoded challenge, or None if it was not valid base64
            (answer with AuthCancel).
    """

    reply: Reply
    challenge: bytes | None = field(repr=False)

    @property
    def accepted(self) -> bool:
        """False: a challenge is not the exchange's final success."""
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed(Event):
    """The server closed the connection.

    Attributes:
        unanswered: the commands that were still waiting for a reply.
        partial_reply: whether part of a reply had arrived.
    """

    unanswered: tuple[Command, ...] = ()
    partial_reply: bool = False
