# smtpbee/_replies
#
# The value types for what the server says: a Reply (one complete, possibly
# multi-line, SMTP reply) and its optional EnhancedStatus (RFC 3463).
#
# The reply text is untrusted: any language, any bytes. It is kept as the bytes
# the server sent (``lines``), and offered decoded leniently (``text``) and with
# control characters escaped (``printable_text``) for showing to people.
#
# The reply reader builds every Reply through parsed_reply(), not Reply(...): a
# frozen dataclass's __init__ stores each field through object.__setattr__,
# which costs more than the rest of parsing a short reply. parsed_reply() fills
# the same slots directly; the value is the same in every respect.
from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["EnhancedStatus", "Reply", "ReplyClass", "escape_text", "parsed_reply"]


def escape_text(text: str) -> str:
    """text with everything a terminal could act on escaped: safe to show a person.

    Controls (C0, DEL, C1: ANSI escapes, a lone CR that would overwrite the
    line), line and paragraph separators and format characters (bidi
    overrides) are written as Python escapes (``\\x1b``); everything else,
    any language, is kept.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


class ReplyClass(enum.IntEnum):
    """What the first digit of a reply code means (RFC 5321 §4.2.1)."""

    POSITIVE_COMPLETION = 2
    POSITIVE_INTERMEDIATE = 3
    TRANSIENT_NEGATIVE = 4
    PERMANENT_NEGATIVE = 5


@dataclass(frozen=True, slots=True)
class EnhancedStatus:
    """An RFC 3463 enhanced status code, ``class.subject.detail`` (e.g. 5.1.1)."""

    klass: int
    subject: int
    detail: int

    def __str__(self) -> str:
        return f"{self.klass}.{self.subject}.{self.detail}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """One complete reply from the server.

    Attributes:
        code: the three-digit reply code, 200-599.
        lines: the text of each line as sent (after ``ddd-`` / ``ddd ``), without
            the line ending. A bare ``250`` line has the text ``b""``.
        enhanced: the enhanced status code at the start of the text, when the
            server sent one whose class agrees with the reply code.
    """

    code: int
    lines: tuple[bytes, ...]
    enhanced: EnhancedStatus | None = None

    @property
    def reply_class(self) -> ReplyClass:
        return ReplyClass(self.code // 100)

    @property
    def is_success(self) -> bool:
        """2xx."""
        return 200 <= self.code < 300

    @property
    def is_intermediate(self) -> bool:
        """3xx: the server waits for more (354 after DATA, 334 during AUTH)."""
        return 300 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        """4xx."""
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        """5xx."""
        return self.code >= 500

    @property
    def text(self) -> str:
        """The text of all lines joined by newlines, the enhanced code left out.

        Decoded as UTF-8 with undecodable bytes replaced; never raises.
        """
        lines = [line.decode("utf-8", "replace") for line in self.lines]
        if self.enhanced is not None:
            prefix = str(self.enhanced)
            lines = [
                line[len(prefix) :].lstrip(" ") if line.startswith(prefix) else line
                for line in lines
            ]
        return "\n".join(lines)

    @property
    def printable_text(self) -> str:
        """``text`` with control characters escaped, safe to print in one line."""
        return escape_text(self.text.replace("\n", " / "))

    def to_bytes(self) -> bytes:
        """The reply as it looked on the wire (CRLF line ends)."""
        code = b"%d" % self.code
        last = len(self.lines) - 1
        return b"".join(
            code + (b" " if i == last else b"-") + line + b"\r\n"
            for i, line in enumerate(self.lines)
        )

    def __str__(self) -> str:
        status = f" {self.enhanced}" if self.enhanced else ""
        return f"{self.code}{status} {self.printable_text}".rstrip()


def _slot_setter(name: str) -> Callable[[Reply, object], None]:
    setter: Callable[[Reply, object], None] = Reply.__dict__[name].__set__
    return setter


_new_instance = object.__new__
_set_code = _slot_setter("code")
_set_lines = _slot_setter("lines")
_set_enhanced = _slot_setter("enhanced")


def parsed_reply(code: int, lines: tuple[bytes, ...], enhanced: EnhancedStatus | None) -> Reply:
    """The Reply of parts the reader has already checked, equal to Reply(...) with them."""
    reply: Reply = _new_instance(Reply)
    _set_code(reply, code)
    _set_lines(reply, lines)
    _set_enhanced(reply, enhanced)
    return reply
