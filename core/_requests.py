# smtpbee/_requests
#
# What a session procedure asks of its transport, and the timeouts it asks
# with. A procedure (see _procedures) is a generator that yields these
# requests; the transport serves each with its own I/O and sends back the
# result:
#
#     Write(data, phase, timeout)    -> None
#     Read(phase, timeout, new_wait) -> bytes (b"" when the server closed)
#     UpgradeTLS()                   -> bool: whether the certificate was verified
#     PullBody()                     -> bytes (b"" at the end of the body)
#
# These few value types are the whole contract between the core and any I/O
# world: nothing else crosses it.
from __future__ import annotations

import enum
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from ._events import Phase

__all__ = [
    "Procedure",
    "PullBody",
    "Read",
    "Request",
    "TLSMode",
    "Timeouts",
    "UpgradeTLS",
    "Write",
]


@dataclass(frozen=True, slots=True)
class Write:
    """Write these bytes (all of them) to the server."""

    data: bytes = field(repr=False)
    phase: Phase
    timeout: float


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
class UpgradeTLS:
    """Do the TLS handshake on the connection now (STARTTLS was accepted)."""


@dataclass(frozen=True, slots=True)
class PullBody:
    """Hand over the next piece of the message body (b"" at its end)."""


Request: TypeAlias = Write | Read | UpgradeTLS | PullBody
Procedure: TypeAlias = Generator[Request, Any, Any]


class TLSMode(enum.Enum):
    """How the session gets (or does not get) TLS."""

    NONE = "none"
    OPPORTUNISTIC = "opportunistic"
    STARTTLS = "starttls"
    IMPLICIT = "implicit"


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Seconds allowed for each phase (RFC 5321 §4.5.3.2 defaults).

    ``Timeouts.uniform(30)`` is the one knob that sets them all.
    """

    greeting: float = Phase.GREETING.default_timeout
    mail: float = Phase.MAIL.default_timeout
    rcpt: float = Phase.RCPT.default_timeout
    data_initiation: float = Phase.DATA_INITIATION.default_timeout
    data_block: float = Phase.DATA_BLOCK.default_timeout
    data_termination: float = Phase.DATA_TERMINATION.default_timeout
    command: float = Phase.COMMAND.default_timeout

    @classmethod
    def uniform(cls, seconds: float) -> Timeouts:
        return cls(**{name: seconds for name in cls.__dataclass_fields__})

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"timeout {name} must be a positive number, not {value!r}")

    def for_phase(self, phase: Phase) -> float:
        return float(getattr(self, phase.name.lower()))
