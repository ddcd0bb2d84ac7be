# smtpbee/_receivebuffer
#
# Turns the server's byte stream into complete Reply values (RFC 5321 §4.2).
#
# Theory of operation
# -------------------
# feed() only stores bytes. next_reply() takes the next complete reply from the
# front of what is stored, in one of two ways:
#
#   * the short way, for the replies nearly every server sends: the reply is
#     complete, every line ends with CRLF, and it is either one "ddd text" line
#     or "ddd-" lines closed by a "ddd " line with the same code. A one-line
#     reply is checked with a few bytes operations (a dictionary of the valid
#     codes, the separator, the CR); a multi-line one with a single regular
#     expression that requires the same code on every line and bounds every
#     line by the line limit (endpos bounds the whole reply by the reply limit).
#     Its possessive repetitions never go back, so a failed match costs no more
#     than the bytes it looked at.
#   * the long way, for everything else: next_reply() walks the buffer one line
#     at a time; every complete line is checked, its text copied out once into
#     the list of pending lines of the reply being assembled, and the consumed
#     bytes are dropped from the front of the buffer when the call returns. So
#     no byte is ever parsed twice, however the stream is chunked. Only this way
#     raises: whatever the short way does not accept at once is handed to it
#     untouched, so a hostile reply meets exactly one set of rules.
#
# The short way accepts a reply only where the long way would return the same
# value: the same code on every line, "-" on all lines but the last, lines and
# reply within the limits, and the text of each line without its CRLF.
#
# The buffer is the bytes object feed() received as long as nothing else is
# held, so the usual read -- one or more whole replies -- is parsed without a
# copy. It becomes a bytearray, which appends and drops from the front in
# amortised constant time, the moment bytes must be appended or a reply leaves
# more than _BYTES_KEPT_AS_BYTES behind.
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
import itertools
import re
from dataclasses import dataclass
from typing import Final

from ._errors import InvalidInputError, RemoteProtocolError
from ._replies import EnhancedStatus, Reply, parsed_reply

__all__ = ["ReplyLimits", "ReplyReader", "parse_enhanced_status"]

_CR: Final = 0x0D
_SPACE: Final = 0x20
_HYPHEN: Final = 0x2D
_ZERO: Final = 0x30

# The rule of a reply code, RFC 5321 §4.2: %x32-35 %x30-35 %x30-39, each
# digit within its range. Every check of a code below is made from it.
_CODE_DIGITS: Final = ((2, 5), (0, 5), (0, 9))
_FIRST_DIGITS, _SECOND_DIGITS, _THIRD_DIGITS = (range(low, high + 1) for low, high in _CODE_DIGITS)
# A code as a character class per digit, for the multi-line pattern: "[2-5][0-5][0-9]".
_CODE_PATTERN: Final = b"".join(b"[%d-%d]" % pair for pair in _CODE_DIGITS)
# Every valid reply code by its three octets. A lookup refuses signs, blanks
# and non-ASCII digits, which int() would accept.
_CODES: Final = {
    b"%d%d%d" % digits: digits[0] * 100 + digits[1] * 10 + digits[2]
    for digits in itertools.product(*(range(low, high + 1) for low, high in _CODE_DIGITS))
}
# The same for the start of a reply's last line, code and space: "250 ".
_FINAL_LINE_CODES: Final = {digits + b" ": code for digits, code in _CODES.items()}
# What separates the texts of two lines of a multi-line reply: "\r\n250-".
_LINE_BREAKS: Final = {code: b"\r\n" + digits + b"-" for digits, code in _CODES.items()}

# What may follow the code in a line whose end has not arrived yet: a CR may
# still turn out to start the line end of a bare code.
_SEPARATORS_SO_FAR = frozenset((_SPACE, _HYPHEN, _CR))

# The most a bytes buffer may still hold after a reply and stay bytes: slicing
# it copies what is left, which costs less than a bytearray for the few replies
# of a pipelined read, and this bound keeps a read of many tiny replies linear.
_BYTES_KEPT_AS_BYTES = 1024

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

# A status is at most nine octets ("5.123.456") and must be followed by a space
# or the end of the text, so the first ten octets of a text decide whether it
# starts with one. The statuses found are kept by those ten octets: replies of
# one kind share them ("2.0.0 Ok: queued as ..."), whatever follows.
_STATUS_PREFIX = 10
_STATUS_PREFIXES_KEPT = 256
_statuses_by_prefix: dict[bytes, EnhancedStatus | None] = {}
# Marks a prefix not met yet; no status has class 0.
_NOT_SEEN: Final = EnhancedStatus(0, 0, 0)

# The multi-line reply the short way accepts: "ddd-" lines, then a "ddd " line,
# the same code on each, every line ending with CRLF. Group 2 is where the last
# line starts. The longest text a line may carry is filled in from the line limit.
_MULTILINE_REPLY = (
    rb"(%(code)s)-[^\r\n]{0,%(text)d}+\r\n"
    rb"(?:\1-[^\r\n]{0,%(text)d}+\r\n)*+"
    rb"(\1) [^\r\n]{0,%(text)d}+\r\n"
)
# A line's octets besides its text: the code, the separator and CRLF.
_LINE_FRAME = 6
# The regular expression engine counts repetitions up to 2**32 - 1; a line limit
# beyond this is left to the long way.
_LONGEST_COUNTED_TEXT = 2**31
# The compiled patterns by the longest text they allow. Readers hold that length,
# a plain int, so anything that copies a reader shares the patterns. A session
# uses two line limits; the bound only matters for a program that keeps
# choosing new ones, whose further limits take the long way.
_multiline_replies: dict[int, re.Pattern[bytes]] = {}
_MULTILINE_PATTERNS_KEPT = 16
# The key a reader holds when no pattern serves its line limit: every
# multi-line reply then takes the long way.
_NO_MULTILINE_PATTERN = -1


def _multiline_text_limit(line_limit: int) -> int:
    """The key of the compiled multi-line reply for line_limit, compiled if need be."""
    text = line_limit - _LINE_FRAME
    if text in _multiline_replies:
        return text
    if not 0 <= text < _LONGEST_COUNTED_TEXT:
        return _NO_MULTILINE_PATTERN
    if len(_multiline_replies) >= _MULTILINE_PATTERNS_KEPT:
        return _NO_MULTILINE_PATTERN
    _multiline_replies[text] = re.compile(
        _MULTILINE_REPLY % {b"code": _CODE_PATTERN, b"text": text}
    )
    return text


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


def _quote(buf: bytes | bytearray, start: int, stop: int) -> str:
    """A short, escaped excerpt of buf[start:stop] for an error message."""
    excerpt = ascii(bytes(buf[start : min(stop, start + _QUOTE_LIMIT)]))
    return excerpt + ("..." if stop - start > _QUOTE_LIMIT else "")


def _reply_code(buf: bytes | bytearray, start: int, stop: int) -> int:
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
    if not (first in _FIRST_DIGITS and second in _SECOND_DIGITS and third in _THIRD_DIGITS):
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
    prefix = text[:_STATUS_PREFIX]
    status = _statuses_by_prefix.get(prefix, _NOT_SEEN)
    if status is _NOT_SEEN:
        match = _ENHANCED_STATUS.match(prefix)
        status = None if match is None else _enhanced_status(match.group(1))
        if len(_statuses_by_prefix) >= _STATUS_PREFIXES_KEPT:
            _statuses_by_prefix.clear()
        _statuses_by_prefix[prefix] = status
    if status is None or status.klass != code // 100:
        return None
    return status


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
        "_first_line_room",
        "_limits",
        "_line_limit",
        "_multiline_text",
        "_pending_code",
        "_pending_lines",
        "_pending_size",
        "_recent",
        "_scan_from",
    )

    def __init__(self, limits: ReplyLimits | None = None) -> None:
        self._limits = limits if limits is not None else ReplyLimits()
        self._line_limit = self._limits.max_line_length
        self._buffer: bytes | bytearray = b""
        self._scan_from = 0
        self._pending_lines: list[bytes] = []
        self._pending_size = 0
        self._pending_code = 0
        self._recent: dict[bytes, Reply] = {}
        self._apply_limits()

    def _apply_limits(self) -> None:
        # What the short way needs of the limits, worked out once per change.
        self._first_line_room = min(self._line_limit, self._limits.max_reply_size)
        self._multiline_text = _multiline_text_limit(self._line_limit)

    @property
    def limits(self) -> ReplyLimits:
        return self._limits

    @limits.setter
    def limits(self, value: ReplyLimits) -> None:
        self._limits = value
        self._apply_limits()

    @property
    def line_limit(self) -> int:
        return self._line_limit

    @line_limit.setter
    def line_limit(self, value: int) -> None:
        _check_limit("line_limit", value)
        self._line_limit = value
        self._apply_limits()

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
        buffer = self._buffer
        if not buffer:
            # Kept as it is: bytes cannot change under us (anything else is copied).
            self._buffer = data if type(data) is bytes else bytes(memoryview(data))
        elif type(buffer) is bytes:
            self._buffer = bytearray(buffer) + data
        else:
            buffer += data

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
        if self._pending_lines:
            return self._walk()
        line_end = buf.find(b"\n", self._scan_from, self._first_line_room)
        if line_end < 0:
            self._check_incomplete_line(0, self._first_line_room)
            self._scan_from = len(buf)
            return None
        size = line_end + 1
        whole = size == len(buf)
        line = buf if whole and type(buf) is bytes else bytes(buf[:size])
        recent = self._recent
        reply = recent.get(line)
        if reply is None:
            code = _FINAL_LINE_CODES.get(line[:4])
            if code is not None:
                if line[-2] != _CR:
                    return self._walk()
                text = line[4:-2]
                # parse_enhanced_status() without the call when the prefix is known.
                status = _statuses_by_prefix.get(text[:_STATUS_PREFIX], _NOT_SEEN)
                if status is _NOT_SEEN:
                    status = parse_enhanced_status(text, code)
                elif status is not None and status.klass != code // 100:
                    status = None
                reply = parsed_reply(code, (text,), status)
                if len(recent) >= _RECENT_REPLIES:
                    recent.clear()
                recent[line] = reply
            else:
                # Anything but the usual multi-line reply fails to match at once.
                pattern = _multiline_replies.get(self._multiline_text)
                if pattern is None:
                    return self._walk()
                reply_match = pattern.match(buf, 0, self._limits.max_reply_size)
                if reply_match is None:
                    return self._walk()
                size = reply_match.end()
                whole = size == len(buf)
                block = buf if whole and type(buf) is bytes else bytes(buf[:size])
                code = _CODES[block[:3]]
                last_line = reply_match.start(2)
                # No text holds a CRLF, so each one followed by "ddd-" starts a line.
                lines = block[4 : last_line - 2].split(_LINE_BREAKS[code])
                lines.append(block[last_line + 4 : -2])
                reply = parsed_reply(code, tuple(lines), parse_enhanced_status(lines[0], code))
        self._scan_from = 0
        if whole:
            self._buffer = b""
        else:
            self._drop(size)
        return reply

    def _drop(self, size: int) -> None:
        """Remove the first size octets of the buffer."""
        buf = self._buffer
        if size == len(buf):
            self._buffer = b""
        elif isinstance(buf, bytearray):
            del buf[:size]
        elif len(buf) - size <= _BYTES_KEPT_AS_BYTES:
            self._buffer = buf[size:]
        else:
            self._buffer = bytearray(memoryview(buf)[size:])

    def _walk(self) -> Reply | None:
        """next_reply() the long way: line by line, every rule checked on the way."""
        buf = self._buffer
        start = 0  # where the current line begins; bytes before it are consumed
        try:
            while True:
                # Searching no further than the room left means a line found is
                # within both limits, and a flood is never scanned past them.
                room = self._limits.max_reply_size - self._pending_size
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
                        return parsed_reply(code, lines, parse_enhanced_status(lines[0], code))
                    reply = parsed_reply(code, (text,), parse_enhanced_status(text, code))
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
                self._drop(start)
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
                f"reply larger than {self._limits.max_reply_size} octets"
                f" ({len(self._pending_lines)} complete lines so far)"
            )

    def _changed_code(self, code: int, buf: bytes | bytearray, start: int) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"reply line with code {code} continues a reply with code"
            f" {self._pending_code}: {_quote(buf, start, len(buf))}"
        )

    @staticmethod
    def _bad_separator(buf: bytes | bytearray, start: int, stop: int) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"reply code not followed by '-', ' ' or the line end: {_quote(buf, start, stop)}"
        )
