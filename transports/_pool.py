# smtpbee/transports/_pool
#
# What the connection pool (_async/pool.py, and _sync/pool.py generated from
# it) and the one-call send() share that touches no I/O and no framework: the
# checks of their arguments, the rate window, which failures may be sent again,
# and whether a body can be read again for that.
#
# Decisions:
#   * A failure is retried only when nothing of the message can have been
#     delivered: a lost connection or a timeout before the content went out
#     (OutcomeUnknownError is never retried), or the server's 421. Under LMTP a
#     421 may follow other recipients' deliveries, so it is not retried there.
#   * A body is sent again only when it can be read again from its start:
#     bytes, a collection of pieces, a seekable file (rewound), or an iterable
#     no piece was taken from yet.
#   * The rate window is a sliding log of start times: never more than
#     ``messages`` starts within any ``seconds``; a full window says how long
#     to wait, so callers sleep instead of polling.
from __future__ import annotations

import math
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Iterator,
)
from typing import Any, TypeAlias

from smtpbee._auth import PASSWORD_MECHANISM_PREFERENCE
from smtpbee._errors import (
    ConnectionLostError,
    InvalidInputError,
    OutcomeUnknownError,
    SMTPError,
    SMTPTimeoutError,
    TLSVerificationError,
    TransientReplyError,
)

__all__ = [
    "OAUTH_MECHANISMS",
    "AsyncJob",
    "AsyncTokenSource",
    "RateWindow",
    "Replay",
    "SyncJob",
    "SyncTokenSource",
    "check_limits",
    "check_login",
    "checked_token",
    "may_retry",
]

AsyncJob: TypeAlias = Callable[[], Coroutine[Any, Any, None]]
"""One job of an async pool's batch."""

SyncJob: TypeAlias = Callable[[], None]
"""One job of the blocking pool's batch."""

AsyncTokenSource: TypeAlias = Callable[[], str | Awaitable[str]]
"""Returns an OAuth 2.0 bearer token (or an awaitable of one), called per new connection."""

SyncTokenSource: TypeAlias = Callable[[], str]
"""Returns an OAuth 2.0 bearer token, called for each new connection."""

OAUTH_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")
"""The mechanisms that take a bearer token (token=) instead of a password."""


def _count(name: str, value: object, *, optional: bool = True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a whole number of at least 1, not {value!r}")


def _seconds(name: str, value: object, *, zero: bool = False) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        least = "0 or more" if zero else "more than 0"
        raise InvalidInputError(f"{name} must be a finite number of seconds, {least}: {value!r}")


def check_limits(
    size: object, max_messages: object, idle_timeout: object, idle_check: object, rate: object
) -> RateWindow | None:
    """Check a pool's limits; return its rate window, if it has one.

    Raises:
        InvalidInputError: a limit that cannot work (size 0, a negative time,
            a rate that is not ``(messages, per_seconds)``).
    """
    _count("size", size, optional=False)
    _count("max_messages", max_messages)
    _seconds("idle_timeout", idle_timeout)
    _seconds("idle_check", idle_check, zero=True)
    if rate is None:
        return None
    if not isinstance(rate, tuple) or len(rate) != 2:
        raise InvalidInputError(f"rate is (messages, per_seconds), e.g. (100, 60.0), not {rate!r}")
    _count("rate's messages", rate[0], optional=False)
    _seconds("rate's seconds", rate[1])
    return RateWindow(rate[0], float(rate[1]))


def check_login(username: object, password: object, mechanism: object, token: object) -> str | None:
    """Check how to log in; return the SASL mechanism's name (None: the strongest offered).

    Raises:
        InvalidInputError: a password, token or mechanism without a user name, a
            token that is not callable, a password and a token, or a mechanism
            that does not go with what was given (XOAUTH2 and OAUTHBEARER take a
            token; the others a password).
    """
    if username is None:
        if password is not None or token is not None or mechanism is not None:
            raise InvalidInputError("password=, token= and mechanism= go with username=")
        return None
    if not isinstance(username, str):
        raise InvalidInputError(f"username must be a str, not {type(username).__name__}")
    if mechanism is not None and not isinstance(mechanism, str):
        raise InvalidInputError(f"mechanism is a SASL name such as 'PLAIN', not {mechanism!r}")
    name = mechanism.upper() if mechanism else None
    if token is not None:
        if not callable(token):
            raise InvalidInputError("token= is a callable that returns the bearer token")
        if password is not None:
            raise InvalidInputError("give password= or token=, not both")
        if name is not None and name not in OAUTH_MECHANISMS:
            raise InvalidInputError(f"a token goes with XOAUTH2 or OAUTHBEARER, not {mechanism!r}")
        return name or OAUTH_MECHANISMS[0]
    if name is not None and name not in PASSWORD_MECHANISM_PREFERENCE:
        hint = " (it takes token=)" if name in OAUTH_MECHANISMS else ""
        known = ", ".join(PASSWORD_MECHANISM_PREFERENCE)
        raise InvalidInputError(f"mechanism={mechanism!r}{hint}: a password goes with {known}")
    return name


def checked_token(value: object) -> str:
    """What a token source returned, if it is a str."""
    if not isinstance(value, str):
        raise InvalidInputError(f"the token source returned {type(value).__name__}, not str")
    return value


def may_retry(exc: SMTPError, *, lmtp: bool) -> bool:
    """Whether a failed send can be made again elsewhere: nothing of it was delivered."""
    if isinstance(exc, OutcomeUnknownError | TLSVerificationError):
        return False
    if isinstance(exc, ConnectionLostError | SMTPTimeoutError):
        return True
    closing = isinstance(exc, TransientReplyError) and exc.phase.startswith("service closing")
    return closing and not lmtp


class RateWindow:
    """No more than ``messages`` starts within any ``seconds`` (a sliding log)."""

    def __init__(self, messages: int, seconds: float) -> None:
        self.messages = messages
        self.seconds = seconds
        self._starts: deque[float] = deque()

    def reserve(self, now: float) -> float:
        """Record a start at ``now`` and return 0, or return the seconds to wait first."""
        starts = self._starts
        while starts and now - starts[0] >= self.seconds:
            starts.popleft()
        if len(starts) < self.messages:
            starts.append(now)
            return 0.0
        # Never a zero wait: a clock that has not moved must not spin the caller.
        return max(starts[0] + self.seconds - now, 1e-3)


class Replay:
    """A body as a pool sends it, and the way to send it again after a failure."""

    def __init__(self, body: Any) -> None:
        self.body = body
        self._start: int | None = None
        self._touched = False
        self._replayable = isinstance(body, bytes | bytearray | memoryview)
        if self._replayable:
            return  # the usual body, told apart without the ABC checks below
        self._replayable = isinstance(body, Collection)
        if hasattr(body, "read"):
            # A file is not watched: only a seekable one is sent again (rewound).
            self._replayable, self._touched = False, True
            try:
                if body.seekable():
                    self._start = body.tell()
            except (AttributeError, OSError, ValueError):
                pass
        elif isinstance(body, AsyncIterable):
            self.body = self._tracked_async(body)
        elif isinstance(body, Iterable) and not self._replayable:
            self.body = self._tracked(body)

    def _tracked(self, pieces: Iterable[Any]) -> Iterator[Any]:
        self._touched = True
        yield from pieces

    async def _tracked_async(self, pieces: AsyncIterable[Any]) -> AsyncIterator[Any]:
        self._touched = True
        async for piece in pieces:
            yield piece

    def rewind(self) -> bool:
        """Make the body ready to be sent again from its start; False if it cannot be."""
        if self._start is not None:
            self.body.seek(self._start)
            return True
        return self._replayable or not self._touched
