# smtpbee/_events
#
# What Connection.next_event() hands back: values describing what the server
# said, each bound to the command it answers, plus two sentinels that are not
# events at all (NEED_DATA: feed more bytes; PAUSED: do the TLS handshake).
#
# Also the Phase of a wait, so that every transport applies the same RFC 5321
# §4.5.3.2 timeouts without keeping its own table.
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ._commands import Command
from ._replies import Reply

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "AuthChallengeReceived",
    "ConnectionClosed",
    "Event",
    "GreetingReceived",
    "Phase",
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


class Phase(enum.Enum):
    """What the client waits for, with the RFC 5321 §4.5.3.2 timeout in seconds."""

    GREETING = ("the 220 greeting", 300.0)
    MAIL = ("the reply to MAIL", 300.0)
    RCPT = ("the reply to RCPT", 300.0)
    DATA_INITIATION = ("the 354 reply to DATA", 120.0)
    DATA_BLOCK = ("a block of content to go out", 180.0)
    DATA_TERMINATION = ("the final reply to the content", 600.0)
    COMMAND = ("the reply to a command", 300.0)

    def __init__(self, description: str, default_timeout: float) -> None:
        self.description = description
        self.default_timeout = default_timeout


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base class of what the server said."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GreetingReceived(Event):
    """The server's opening reply: 220 (welcome), 554 (no service) or 421."""

    reply: Reply


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyReceived(Event):
    """A reply to a command the client sent.

    Attributes:
        command: the command it answers; None for a 421 nobody asked for.
        reply: the reply.
        recipient: with LMTP, the recipient this reply to the content is for.
    """

    command: Command | None
    reply: Reply
    recipient: str | None = None


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


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed(Event):
    """The server closed the connection.

    Attributes:
        unanswered: the commands that were still waiting for a reply.
        partial_reply: whether part of a reply had arrived.
    """

    unanswered: tuple[Command, ...] = ()
    partial_reply: bool = False
