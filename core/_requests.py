# smtpbee/_requests
#
# What a session procedure asks of its transport, and the timeouts it asks
# with. A procedure (see _procedures) is a generator that yields these
# requests; the transport serves each with its own I/O and sends back the
# result:
#
#     Write(buffers, phase, timeout) -> None (every buffer written, in order)
#     Read(phase, timeout, new_wait) -> bytes (b"" when the server closed)
#     Poll()                         -> the bytes already received, without
#                                       waiting: None if there are none, b""
#                                       if the server closed
#     UpgradeTLS(timeout)            -> bool: whether the certificate was
#                                       verified (True only when the handshake
#                                       proved the server's name)
#     PullBody()                     -> bytes (b"" at the end of the body)
#
# When the I/O fails, the transport throws the error into the procedure as
# SMTPTimeoutError or ConnectionLostError (or TLSVerificationError, a
# ConnectionLostError, for a refused certificate); nothing else is thrown in.
#
# These few value types are the whole contract between the core and any I/O
# world: nothing else crosses it.
from __future__ import annotations

import enum
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

from ._errors import InvalidInputError
from ._state import Phase

__all__ = [
    "Buffer",
    "Poll",
    "Procedure",
    "PullBody",
    "Read",
    "Request",
    "TLSMode",
    "Timeouts",
    "UpgradeTLS",
    "Write",
    "resolve_tls_mode",
]

_T = TypeVar("_T")

Buffer: TypeAlias = bytes | memoryview
"""A piece of what a Write carries: a command line, or content as the caller gave it."""


@dataclass(frozen=True, slots=True)
class Write:
    """Write these bytes (all of them) to the server.

    Attributes:
        buffers: the bytes as the pieces they are held in (command lines, a
            BDAT chunk or message content as the caller handed it over),
            to be written in order. They are not joined first: joining
            would copy a large body once more on its way to the socket.
        phase: what is being written (for the timeout and errors).
        timeout: seconds allowed for the whole write.
    """

    buffers: Sequence[Buffer] = field(repr=False)
    phase: Phase
    timeout: float

    @property
    def data(self) -> bytes:
        """All the bytes in one piece (a copy: for tests and logs, not for the socket)."""
        return b"".join(self.buffers)

    @property
    def size(self) -> int:
        """How many octets the write carries."""
        return sum(map(len, self.buffers))


@dataclass(frozen=True, slots=True)
class Read:
    """Read whatever the server sends next (at least one byte, or b"" at EOF).

    Attributes:
        phase: what is awaited.
        timeout: seconds allowed for the whole reply.
        new_wait: True when a new reply is awaited (start a new deadline);
            False when the reply so far is incomplete (keep the deadline).
    """

    phase: Phase
    timeout: float
    new_wait: bool


@dataclass(frozen=True, slots=True)
class Poll:
    """Hand over what the server has sent already, without waiting for more.

    Asked before a group of commands is written while no reply is pending:
    bytes already there would otherwise be taken as the group's replies.
    """


@dataclass(frozen=True, slots=True)
class UpgradeTLS:
    """Do the TLS handshake on the connection now, within timeout seconds.

    Asked at the start of an implicit-TLS session (a stream that is already
    TLS needs no new handshake: answer with whether it was verified) and
    after a 220 to STARTTLS.
    """

    timeout: float


@dataclass(frozen=True, slots=True)
class PullBody:
    """Hand over the next piece of the message body (b"" at its end)."""


Request: TypeAlias = Write | Read | Poll | UpgradeTLS | PullBody
Procedure: TypeAlias = Generator[Request, Any, _T]
"""A session procedure that returns a _T: ``Procedure[Reply]``."""


class TLSMode(enum.Enum):
    """How the session gets (or does not get) TLS.

    Attributes:
        NONE: no TLS ("none"): for a test server on loopback.
        OPPORTUNISTIC: STARTTLS when the server offers it, plaintext otherwise
            ("opportunistic").
        STARTTLS: STARTTLS, required ("starttls"): a server that does not offer
            it ends the session with TLSRequiredError.
        IMPLICIT: TLS from the first byte, before the greeting ("implicit",
            RFC 8314): port 465.
    """

    NONE = "none"
    OPPORTUNISTIC = "opportunistic"
    STARTTLS = "starttls"
    IMPLICIT = "implicit"


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Seconds allowed for each phase (RFC 5321 §4.5.3.2 defaults).

    ``Timeouts.uniform(30)`` is the one knob that sets them all. Each read
    timeout covers a whole reply, however it arrives.

    Attributes:
        greeting: for the server's greeting (300).
        mail: for the reply to MAIL (300).
        rcpt: for the reply to each RCPT (300).
        data_initiation: for the 354 reply to DATA (120).
        data_block: to write each block of content (180).
        data_termination: for the final reply to the content (600).
        command: for the reply to any other command (300).
        tls_handshake: for a TLS handshake (60; the RFC gives no figure).

    Raises:
        InvalidInputError: a timeout that is not a positive number (a ValueError).
    """

    greeting: float = Phase.GREETING.default_timeout
    mail: float = Phase.MAIL.default_timeout
    rcpt: float = Phase.RCPT.default_timeout
    data_initiation: float = Phase.DATA_INITIATION.default_timeout
    data_block: float = Phase.DATA_BLOCK.default_timeout
    data_termination: float = Phase.DATA_TERMINATION.default_timeout
    command: float = Phase.COMMAND.default_timeout
    tls_handshake: float = Phase.TLS_HANDSHAKE.default_timeout

    @classmethod
    def uniform(cls, seconds: float) -> Timeouts:
        """The same number of seconds for every phase."""
        return cls(**{name: seconds for name in cls.__dataclass_fields__})

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidInputError(f"timeout {name} must be a positive number, not {value!r}")

    def for_phase(self, phase: Phase) -> float:
        """The seconds allowed for a phase."""
        return float(getattr(self, phase.name.lower()))


def resolve_tls_mode(tls: TLSMode | str | None, port: int) -> TLSMode:
    """The TLS mode: implicit on port 465 (RFC 8314), required STARTTLS elsewhere, unless named.

    Raises:
        InvalidInputError: an unknown mode name.
    """
    if tls is None:
        return TLSMode.IMPLICIT if port == 465 else TLSMode.STARTTLS
    try:
        return TLSMode(tls.value if isinstance(tls, TLSMode) else str(tls).lower())
    except ValueError:
        names = ", ".join(m.value for m in TLSMode)
        raise InvalidInputError(f"tls must be one of {names}, not {tls!r}") from None
