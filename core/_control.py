# smtpbee/_control
#
# Session controls for people who test SMTP servers: stop a session at a
# chosen point, politely (QUIT) or not (the connection is dropped), even right
# after a command is written and before its reply.
#
# Theory of operation
# -------------------
# A Stop names a ControlPoint. The session procedures (_procedures) and the
# mail transaction (_transaction) ask the SessionControls at each point:
#
#   * sent(point): the command of that phase was just written. With
#     ``after_send`` the connection is dropped now, before the reply is read.
#   * reached(point, reply): the phase is over (its reply read, whatever it
#     said). The session QUITs or is dropped, and SessionStopped is raised.
#
# Dropping is the core's way of closing: the session is marked failed, so the
# transport aborts the connection as it does after any failure, and nothing
# more is written. QUIT is only written where the session can send it: never
# before the greeting (the greeting is read first) and never after a 354 (QUIT
# would be read as message text: the connection is closed instead).
#
# The points, in the order a session meets them:
#   CONNECT   the connection is open (a PROXY header written), nothing read
#   GREETING  the greeting was read
#   EHLO      the first EHLO (or LHLO) answered, whatever it said (a stop
#             there comes before any HELO fallback)
#   TLS       a TLS handshake completed: after STARTTLS's 220 and before the
#             EHLO that follows it, or, with implicit TLS, before the greeting.
#             after_send: right after STARTTLS is written.
#   AUTH      the AUTH exchange ended (235 or a refusal); after_send: right
#             after the AUTH command line
#   MAIL      MAIL answered
#   RCPT      the last RCPT answered
#   DATA      DATA answered (354, or a refusal)
#   DOT       the content answered (after the terminator, or BDAT LAST)
# With PIPELINING the group is cut at the point: a stop after MAIL writes
# MAIL alone, never the RCPTs behind it.
from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass
from typing import Literal

from ._commands import Quit
from ._errors import InvalidInputError, SMTPError
from ._events import GreetingReceived
from ._exchange import Exchange
from ._replies import Reply
from ._requests import Procedure
from ._state import State, Verb

__all__ = ["ControlPoint", "SessionControls", "SessionStopped", "Stop", "check_controls"]


class ControlPoint(enum.StrEnum):
    """Where a session can be stopped (see Stop); the value is the CLI's name."""

    CONNECT = "CONNECT"
    GREETING = "GREETING"
    EHLO = "EHLO"
    TLS = "TLS"
    AUTH = "AUTH"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    DOT = "DOT"

    @classmethod
    def _missing_(cls, value: object) -> ControlPoint | None:
        # "mail" and "Mail" name the point as well as "MAIL" does.
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        return None


_NO_COMMAND = frozenset({ControlPoint.CONNECT, ControlPoint.GREETING})


@dataclass(frozen=True, slots=True, init=False)
class Stop:
    """Stop the session at a control point.

    Args:
        point: where: a ControlPoint, or its name in any case (``"mail"``,
            the command line's spelling); ``stop.point`` is the ControlPoint.
        action: "quit" (send QUIT where the session can, then close) or
            "drop" (close the connection without a word).
        after_send: close right after the phase's command is written,
            before its reply is read (action must be "drop"; CONNECT and
            GREETING have no command).

    Raises:
        InvalidInputError: an unknown point or action, or after_send where
            it cannot apply.
    """

    point: ControlPoint
    action: Literal["quit", "drop"]
    after_send: bool

    def __init__(
        self,
        point: ControlPoint | str,
        action: Literal["quit", "drop"] = "quit",
        after_send: bool = False,
    ) -> None:
        try:
            where = ControlPoint(point)
        except ValueError:
            names = ", ".join(ControlPoint.__members__)
            raise InvalidInputError(f"a control point is one of {names}, not {point!r}") from None
        if action not in ("quit", "drop"):
            raise InvalidInputError(f'the action is "quit" or "drop", not {action!r}')
        if after_send:
            if action != "drop":
                raise InvalidInputError(
                    'after_send closes before the reply: the action must be "drop"'
                )
            if where in _NO_COMMAND:
                raise InvalidInputError(f"{where.value} has no command to stop after sending")
        # Frozen: the fields are set the way dataclasses' own __init__ sets them.
        object.__setattr__(self, "point", where)
        object.__setattr__(self, "action", action)
        object.__setattr__(self, "after_send", bool(after_send))


class SessionStopped(SMTPError):
    """The session stopped at the control point it was asked to stop at.

    Attributes:
        point: the ControlPoint.
        action: "quit" or "drop".
        reply: the last reply read when the point was reached (the reply
            that ended the phase, not the 221 to QUIT), or None (after_send,
            CONNECT).
    """

    def __init__(self, point: ControlPoint, action: str, reply: Reply | None) -> None:
        self.point = point
        self.action = action
        self.reply = reply
        how = "QUIT" if action == "quit" else "connection dropped"
        said = f" (last reply {reply.code})" if reply is not None else ""
        super().__init__(f"stopped as asked at {point.value}{said}: {how}")


def check_controls(stop: Stop | None, bdat_chunk_size: int | None) -> None:
    """Check the control options of a session before anything is sent.

    Raises:
        InvalidInputError: a stop that is not a Stop, a chunk size that is not
            a positive number, or a stop at DATA with BDAT forced (BDAT has
            no DATA command).
    """
    if stop is not None and not isinstance(stop, Stop):
        raise InvalidInputError(f"stop must be a smtpbee.Stop, not {type(stop).__name__}")
    if bdat_chunk_size is None:
        return
    if isinstance(bdat_chunk_size, bool) or not isinstance(bdat_chunk_size, int):
        raise InvalidInputError(f"bdat_chunk_size must be a number, not {bdat_chunk_size!r}")
    if bdat_chunk_size < 1:
        raise InvalidInputError(f"bdat_chunk_size must be at least 1, not {bdat_chunk_size}")
    if stop is not None and stop.point is ControlPoint.DATA:
        raise InvalidInputError("BDAT has no DATA command to stop at: stop at RCPT or DOT")


class SessionControls:
    """The stop point of one session, as the procedures consult it.

    Attributes:
        stop: the Stop, or None.
        point: the point it names (None without a Stop), for quick checks.
    """

    def __init__(self, exchange: Exchange, stop: Stop | None) -> None:
        self._exchange = exchange
        self.stop = stop
        self.point = None if stop is None else stop.point
        self._after_send = stop is not None and stop.after_send

    def stops_after(self, point: ControlPoint) -> bool:
        """Whether the session ends at ``point`` once its reply is read."""
        return self.point is point and not self._after_send

    def sent(self, point: ControlPoint) -> None:
        """The command of ``point`` was written: drop now if asked to."""
        if self.point is point and self._after_send:
            self._exchange.log("C", f"<stopped after sending: {point.value}, dropped>")
            self._exchange.note("stopped", point=point.value, action="drop", after_send=True)
            self._exchange.conn.send_failed()
            raise SessionStopped(point, "drop", None)

    def reached(self, point: ControlPoint, reply: Reply | None) -> Procedure[None]:
        """The phase of ``point`` is over: stop the session if asked to."""
        if self.point is point and not self._after_send:
            raise (yield from self.end(reply))

    def end(self, reply: Reply | None) -> Procedure[SessionStopped]:
        """QUIT (where the session can) or drop; the SessionStopped to raise."""
        stop = self.stop
        assert stop is not None
        exchange = self._exchange
        conn = exchange.conn
        exchange.log("C", f"<stopped at {stop.point.value}: {stop.action}>")
        exchange.note("stopped", point=stop.point.value, action=stop.action, after_send=False)
        if stop.action == "quit":
            with contextlib.suppress(SMTPError):
                yield from self._quit()
        if conn.open:
            # Dropped, or QUIT was impossible (after a 354 it would be text).
            conn.send_failed()
        return SessionStopped(stop.point, stop.action, reply)

    def _quit(self) -> Procedure[None]:
        exchange = self._exchange
        conn = exchange.conn
        if conn.state is State.GREETING:
            # Nothing may precede the greeting, not even QUIT.
            event = yield from exchange.event()
            if not isinstance(event, GreetingReceived):
                return
        if conn.why_not(Verb.QUIT) is None:
            yield from exchange.command(Quit())
