# smtpbee/_receivebuffer
#
# Turns the server's byte stream into complete Reply values (RFC 5321 §4.2).
#
# Theory of operation
# -------------------
# feed() only appends to one bytearray. next_reply() walks the buffer one line
# at a time: every *complete* line is checked, its text copied out once into the
# list of pending lines of the reply being assembled, and the consumed bytes are
# dropped from the front of the buffer when the call returns. So no byte is ever
# parsed twice, however the stream is chunked.
#
# Invariants between calls:
#   * the buffer starts at the beginning of a line (never in the middle of one);
#   * no line end occurs in buffer[:_scan_from], so a search for the next line
#     end resumes there: bytes arriving one at a time cost O(1) each, not O(n);
#   * _pending_lines/_pending_size hold the lines of a reply whose last line has
#     not arrived, all carrying the code _pending_code;
#   * _pending_size plus the incomplete line never exceed the limits: the search
#     for a line end is bounded by the room left under both limits, so a hostile
#     server that never sends a line end makes us fail after at most one read
#     past the limit, and we never scan more than a limit's worth of bytes.
#
# Most replies are one line, and a session sees the same few of them again and
# again ("250 2.1.5 Ok" to every RCPT). A Reply is immutable and a pure function
# of its line, so the reader keeps the ones it built for recent single-line
# replies, keyed by the whole line: a repeat costs a dictionary lookup instead
# of checking the code, parsing the enhanced status and building the value
# again. The cache is per reader and bounded (it is emptied when full).
#
# Rejection is early: the first byte of a line must be 2-5 and the first three
# bytes a valid code; that is checked as soon as those bytes are buffered, so a
# TLS record or an HTTP response is refused at once instead of being buffered.
#
# Leniencies, each seen in the wild: a bare LF ends a line (a CR before it is
# stripped; a lone CR elsewhere is just text); a last line may be a bare code
# with no text (RFC 5321 §4.2 says clients SHOULD accept it); the text may carry
# extra spaces and any bytes at all -- it is never decoded here.
#
# After an error the reader is left as it is: the connection that owns it goes
# to its error state and never calls it again.
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from ._errors import InvalidInputError, RemoteProtocolError
from ._replies import EnhancedStatus, Reply

__all__ = ["ReplyLimits", "ReplyReader", "parse_enhanced_status"]

_CR = 0x0D
_SPACE = 0x20
_HYPHEN = 0x2D
_ZERO = 0x30

# What may follow the code in a line whose end has not arrived yet: a CR may
# still turn out to start the line end of a bare code.
_SEPARATORS_SO_FAR = frozenset((_SPACE, _HYPHEN, _CR))

# Error messages quote at most this many bytes of what the server sent.
_QUOTE_LIMIT = 32

# How many distinct single-line replies a reader remembers. A session meets a
# handful; the bound only matters for servers that put a queue id in every
# reply, whose lines never repeat.
_RECENT_REPLIES = 64

# RFC 3463 §2: status-code = class "." subject "." detail, with
#   class = "2" / "4" / "5";  subject = 1*3digit;  detail = 1*3digit
# RFC 2034 §4 puts it right after the reply code and a space, followed by a
# space before the text; we also accept it as the whole text.
_ENHANCED_STATUS = re.compile(rb"([245]\.[0-9]{1,3}\.[0-9]{1,3})(?: |\Z)")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyLimits:
    """Size limits on what the server may send, in octets.

    RFC 5321 §4.5.3.1.5 limits a reply line to 512 octets, but real servers
    send longer ones (long EHLO lists, verbose rejections), so the defaults are
    generous -- and still bounded, so memory never grows with hostile input.

    Attributes:
        max_line_length: the longest reply line, counting its line end.
        max_reply_size: the largest whole (multi-line) reply.
        max_auth_challenge: the longest line while an AUTH reply is awaited
            (a 334 challenge of a SASL mechanism such as GSSAPI can be large).

    Raises:
        InvalidInputError: a limit is not a positive integer (a ValueError).
    """

    max_line_length: int = 2048
    max_reply_size: int = 65536
    max_auth_challenge: int = 12288

    def __post_init__(self) -> None:
        for name in ("max_line_length", "max_reply_size", "max_auth_challenge"):
            _check_limit(name, getattr(self, name))


def _check_limit(name: str, value: object) -> None:
    # bool is an int subclass, but True is no size.
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidInputError(f"{name} must be a positive integer, not {value!r}")


def _quote(buf: bytearray, start: int, stop: int) -> str:
    """A short, escaped excerpt of buf[start:stop] for an error message."""
    excerpt = ascii(bytes(buf[start : min(stop, start + _QUOTE_LIMIT)]))
    return excerpt + ("..." if stop - start > _QUOTE_LIMIT else "")


def _reply_code(buf: bytearray, start: int, stop: int) -> int:
    """The reply code at buf[start:], checking only the bytes before stop.

    Returns -1 when fewer than three bytes are available and those present are
    a valid start of a code. Digits are checked by hand: int() would accept
    signs, blanks, underscores and non-ASCII digits.

    Raises:
        RemoteProtocolError: the available bytes cannot start a valid code.
    """
    available = min(stop - start, 3)
    first = buf[start] - _ZERO
    second = buf[start + 1] - _ZERO if available > 1 else 0
    third = buf[start + 2] - _ZERO if available > 2 else 0
    if not (2 <= first <= 5 and 0 <= second <= 5 and 0 <= third <= 9):
        raise RemoteProtocolError(
            f"invalid reply code at the start of {_quote(buf, start, stop)}"
            " (expected three digits, 200-559)"
        )
    if available < 3:
        return -1
    return first * 100 + second * 10 + third


def parse_enhanced_status(text: bytes, code: int) -> EnhancedStatus | None:
    """The RFC 3463 enhanced status code at the start of a reply's text.

    Args:
        text: the text of the reply's first line (after ``ddd-`` or ``ddd ``).
        code: the reply code; the status class must equal its first digit.

    Returns:
        The status, or None when the text does not start with one (servers
        that do not advertise ENHANCEDSTATUSCODES send none; that is no error).
    """
    match = _ENHANCED_STATUS.match(text)
    if match is None or text[0] - _ZERO != code // 100:
        return None
    return _enhanced_status(match.group(1))


@functools.lru_cache(maxsize=256)
def _enhanced_status(status: bytes) -> EnhancedStatus:
    # A handful of statuses make up nearly all replies, and EnhancedStatus is
    # immutable, so one shared instance each saves parsing every reply again.
    klass, subject, detail = status.split(b".")
    # Validated as one to three ASCII digits each: int() is safe here.
    return EnhancedStatus(int(klass), int(subject), int(detail))


class ReplyReader:
    """Assembles complete replies from the bytes the server sends.

    Feed it bytes as they arrive, then call next_reply() until it returns None:
    several replies may arrive in one read when commands are pipelined.

    Attributes:
        limits: the size limits in force.
        line_limit: the longest line accepted now, counting its line end. It
            starts at ``limits.max_line_length``; the connection raises it to
            ``limits.max_auth_challenge`` while it awaits an AUTH reply.
    """

    __slots__ = (
        "_buffer",
        "_line_limit",
        "_pending_code",
        "_pending_lines",
        "_pending_size",
        "_recent",
        "_scan_from",
        "limits",
    )

    def __init__(self, limits: ReplyLimits | None = None) -> None:
        self.limits = limits if limits is not None else ReplyLimits()
        self._line_limit = self.limits.max_line_length
        self._buffer = bytearray()
        self._scan_from = 0
        self._pending_lines: list[bytes] = []
        self._pending_size = 0
        self._pending_code = 0
        self._recent: dict[bytes, Reply] = {}

    @property
    def line_limit(self) -> int:
        return self._line_limit

    @line_limit.setter
    def line_limit(self, value: int) -> None:
        _check_limit("line_limit", value)
        self._line_limit = value

    @property
    def buffered(self) -> int:
        """How many octets are held that are not yet part of a returned reply."""
        return len(self._buffer) + self._pending_size

    def peek(self, size: int) -> bytes:
        """The first octets (at most size) of what is held and not yet returned."""
        if self._pending_lines:
            return (b"%d-" % self._pending_code)[:size]
        return bytes(self._buffer[:size])

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Store bytes received from the server; parsing waits for next_reply()."""
        self._buffer += data

    def next_reply(self) -> Reply | None:
        """The next complete reply, or None if more bytes are needed.

        Raises:
            RemoteProtocolError: the server sent something that is not a valid
                reply, or a line or reply larger than the limits. The reader
                must not be used after that.
        """
        buf = self._buffer
        if not buf:
            # The usual question after the last reply of a read: nothing to parse.
            return None
        start = 0  # where the current line begins; bytes before it are consumed
        try:
            while True:
                # Searching no further than the room left means a line found is
                # within both limits, and a flood is never scanned past them.
                room = self.limits.max_reply_size - self._pending_size
                if self._line_limit < room:
                    room = self._line_limit
                line_end = buf.find(b"\n", self._scan_from, start + room)
                if line_end < 0:
                    self._check_incomplete_line(start, room)
                    self._scan_from = len(buf)
                    return None
                line_start = start
                start = self._scan_from = line_end + 1
                if not self._pending_lines:
                    # Only a reply's first line can be a whole reply seen before.
                    line = bytes(buf[line_start:start])
                    known = self._recent.get(line)
                    if known is not None:
                        return known
                # The line end is inside the checked range: a line shorter than
                # three octets puts a CR or LF where a digit must be.
                code = _reply_code(buf, line_start, start)
                if self._pending_lines and code != self._pending_code:
                    raise self._changed_code(code, buf, line_start)
                text_end = line_end - 1 if buf[line_end - 1] == _CR else line_end
                separator = buf[line_start + 3] if text_end - line_start > 3 else _SPACE
                text = bytes(buf[line_start + 4 : text_end])
                if separator == _SPACE:
                    if self._pending_lines:
                        lines = (*self._pending_lines, text)
                        self._pending_lines = []
                        self._pending_size = 0
                        return Reply(
                            code=code, lines=lines, enhanced=parse_enhanced_status(lines[0], code)
                        )
                    reply = Reply(
                        code=code, lines=(text,), enhanced=parse_enhanced_status(text, code)
                    )
                    if len(self._recent) >= _RECENT_REPLIES:
                        self._recent.clear()
                    self._recent[line] = reply
                    return reply
                if separator != _HYPHEN:
                    raise self._bad_separator(buf, line_start, line_end)
                self._pending_code = code
                self._pending_lines.append(text)
                self._pending_size += start - line_start
        finally:
            if start:
                del buf[:start]
                self._scan_from -= start

    def _check_incomplete_line(self, start: int, room: int) -> None:
        """Fail as soon as the partial line at buf[start:] proves to be bad."""
        buf = self._buffer
        held = len(buf) - start
        if held:
            code = _reply_code(buf, start, len(buf))
            if code >= 0:
                if self._pending_lines and code != self._pending_code:
                    raise self._changed_code(code, buf, start)
                if held > 3 and buf[start + 3] not in _SEPARATORS_SO_FAR:
                    raise self._bad_separator(buf, start, len(buf))
        if held >= room:
            # No line end within the room left, so the line needs at least one
            # more octet than is allowed.
            if room == self._line_limit:
                raise RemoteProtocolError(
                    f"reply line longer than {self._line_limit} octets:"
                    f" {_quote(buf, start, len(buf))}"
                )
            raise RemoteProtocolError(
                f"reply larger than {self.limits.max_reply_size} octets"
                f" ({len(self._pending_lines)} complete lines so far)"
            )

    def _changed_code(self, code: int, buf: bytearray, start: int) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"reply line with code {code} continues a reply with code"
            f" {self._pending_code}: {_quote(buf, start, len(buf))}"
        )

    @staticmethod
    def _bad_separator(buf: bytearray, start: int, stop: int) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"reply code not followed by '-', ' ' or the line end: {_quote(buf, start, stop)}"
        )
