"""Hypothesis strategies for testing SMTP clients: replies, EHLO lists, whole servers.

Needs hypothesis: ``pip install 'smtpbee[testing]'``.

* `valid_replies` -- replies any client must accept: any code 200-559, one or
  several lines of any text, with or without an enhanced status code, CRLF or
  bare LF line ends.
* `invalid_replies` -- replies a client must refuse: codes that are not three
  ASCII digits (including what ``int()`` would take: ``_``, signs, blanks,
  non-ASCII digits), codes outside 2xx-5xx, a multi-line reply whose code
  changes, a bare CR or a control character after the code, lines and replies
  past the limits, empty lines.
* `ehlo_extensions` -- the lines of an EHLO reply after the first.
* `handler_tables` and `scripted_servers` -- whole scripted servers, well
  behaved, sloppy or hostile, to run against a client.

Every invalid reply is refused by smtpbee's reader with `RemoteProtocolError`
(with the default limits), and every valid one is read as one reply; smtpbee's
own tests check both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "smtpbee.testing.strategies needs hypothesis: pip install 'smtpbee[testing]'"
    ) from exc

from ._model import Handler, Replies, close, pause, reset, stall
from ._server import ScriptedServer

__all__ = [
    "VERBS",
    "ehlo_extensions",
    "enhanced_statuses",
    "handler_tables",
    "invalid_replies",
    "reply_codes",
    "reply_texts",
    "scripted_servers",
    "valid_replies",
]

VERBS = (
    "GREETING", "EHLO", "HELO", "LHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "BDAT",
    "MESSAGE", "RSET", "NOOP", "VRFY", "EXPN", "HELP", "QUIT",
)  # fmt: skip
"""The keys `handler_tables` draws from: every verb, plus GREETING and MESSAGE."""

# Longest line and largest reply smtpbee's reader accepts by default.
_LINE_LIMIT = 2048
_REPLY_LIMIT = 65536


def reply_codes() -> st.SearchStrategy[int]:
    """Valid reply codes: first digit 2-5, second 0-5, third 0-9 (RFC 5321 §4.2)."""
    return st.builds(lambda a, b, c: a * 100 + b * 10 + c, st.integers(2, 5),
                     st.integers(0, 5), st.integers(0, 9))  # fmt: skip


def reply_texts(max_size: int = 80) -> st.SearchStrategy[bytes]:
    """The text of a reply line: any bytes but CR and LF, any language, possibly empty."""
    return st.one_of(
        st.binary(max_size=max_size).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
        st.text(max_size=max_size // 4)
        .map(lambda t: t.encode("utf-8", "surrogatepass"))
        .map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
        st.sampled_from([b"", b"Ok", b" extra  spaces ", b"mx.example.test ESMTP"]),
    )


def enhanced_statuses(klass: int) -> st.SearchStrategy[str]:
    """RFC 3463 codes ``class.subject.detail`` for a class (2, 4 or 5)."""
    return st.builds(lambda s, d: f"{klass}.{s}.{d}", st.integers(0, 999), st.integers(0, 999))


def _code_strategy(codes: st.SearchStrategy[int] | int | Iterable[int] | None) -> Any:
    if codes is None:
        return reply_codes()
    if isinstance(codes, int):
        return st.just(codes)
    if isinstance(codes, st.SearchStrategy):
        return codes
    return st.sampled_from(sorted(codes))


@st.composite
def valid_replies(
    draw: st.DrawFn,
    codes: st.SearchStrategy[int] | int | Iterable[int] | None = None,
    *,
    max_lines: int = 4,
    enhanced: bool | None = None,
    bare_lf: bool = True,
) -> bytes:
    """One complete reply that every client must accept.

    Args:
        codes: the code (an int), the codes to pick from, or a strategy;
            any valid code by default.
        max_lines: the most lines the reply has.
        enhanced: whether lines start with an enhanced status code of the
            code's class (by default: drawn; never for 3xx).
        bare_lf: whether lines may end with a bare LF instead of CRLF.
    """
    code = draw(_code_strategy(codes))
    texts = draw(st.lists(reply_texts(), min_size=1, max_size=max_lines))
    with_status = draw(st.booleans()) if enhanced is None else enhanced
    if with_status and code // 100 != 3:
        status = draw(enhanced_statuses(code // 100)).encode()
        texts = [status + (b" " + t if t else b"") for t in texts]
    lines = []
    for index, text in enumerate(texts):
        last = index == len(texts) - 1
        end = b"\n" if bare_lf and draw(st.booleans()) else b"\r\n"
        if last and not text and draw(st.booleans()):
            lines.append(b"%d%s" % (code, end))  # a bare code: RFC 5321 §4.2 says accept it
        else:
            lines.append(b"%d%s%s%s" % (code, b" " if last else b"-", text, end))
    return b"".join(lines)


# What int() accepts but a reply code is not: blanks, signs, underscores,
# non-ASCII digits (Arabic-Indic, fullwidth, Devanagari), plus near misses.
_BAD_CODES = (
    b" 25", b"25 ", b"\t25", b"+25", b"-25", b"2_5", b"2 5", b"25_",
    "\u0662\u0665\u0660".encode(), "\uff12\uff15\uff10".encode(), "\u0968\u096b\u0966".encode(),
    b"0x2", b"2.5", b"25", b"2", b"", b"abc", b"\xff25", b"2\x0050",
)  # fmt: skip


@st.composite
def _bad_code_lines(draw: st.DrawFn) -> bytes:
    code = draw(st.one_of(st.sampled_from(_BAD_CODES), st.binary(min_size=1, max_size=3)))
    separator = draw(st.sampled_from([b" ", b"-", b""]))
    line = code + separator + draw(reply_texts()) + b"\r\n"
    if line[:1] in b"2345" and line[1:2] in b"012345" and line[2:3].isdigit():
        line = b"+" + line  # a valid code by chance (the text made it one): break it
    return line


@st.composite
def _out_of_range(draw: st.DrawFn) -> bytes:
    first = draw(st.integers(0, 9))
    second = draw(st.integers(0, 9))
    if 2 <= first <= 5 and second <= 5:
        second = draw(st.integers(6, 9))
    code = b"%d%d%d" % (first, second, draw(st.integers(0, 9)))
    return code + b" " + draw(reply_texts()) + b"\r\n"


@st.composite
def _mixed_codes(draw: st.DrawFn) -> bytes:
    first = draw(reply_codes())
    second = draw(reply_codes().filter(lambda c: c != first))
    head = draw(st.integers(1, 3))
    lines = b"".join(b"%d-%s\r\n" % (first, draw(reply_texts())) for _ in range(head))
    return lines + b"%d %s\r\n" % (second, draw(reply_texts()))


@st.composite
def _bad_separator(draw: st.DrawFn) -> bytes:
    code = draw(reply_codes())
    controls = [b"\r", b"\t", b"\x00", b"\x1b", b"\x7f", b"\x0b", b"\x0c", b"x", b"_", b"\xc2\x85"]
    separator = draw(st.sampled_from(controls))
    # After a CR, some text must follow: "250\r\n" is a bare code, which is valid.
    text = draw(reply_texts().filter(bool)) if separator == b"\r" else draw(reply_texts())
    return b"%d%s%s\r\n" % (code, separator, text)


@st.composite
def _control_first(draw: st.DrawFn) -> bytes:
    control = draw(st.sampled_from([b"\x00", b"\x1b", b"\r", b"\x7f", b"\x0c", b" "]))
    return control + b"%d ok\r\n" % draw(reply_codes())


@st.composite
def _overlong(draw: st.DrawFn) -> bytes:
    code = draw(reply_codes())
    if draw(st.booleans()):
        size = draw(st.integers(_LINE_LIMIT, _LINE_LIMIT + 100))
        return b"%d " % code + b"x" * size + b"\r\n"
    line = b"%d-" % code + b"y" * 1990 + b"\r\n"
    count = _REPLY_LIMIT // len(line) + draw(st.integers(1, 3))
    return line * count + b"%d end\r\n" % code


def invalid_replies() -> st.SearchStrategy[bytes]:
    """Replies a client must refuse (smtpbee raises RemoteProtocolError for each).

    Each is complete (it ends with a line end) or long enough to be refused
    before its end; a valid continuation line may come first.
    """
    broken: st.SearchStrategy[bytes] = st.one_of(
        _bad_code_lines(),
        _out_of_range(),
        _mixed_codes(),
        _bad_separator(),
        _control_first(),
        _overlong(),
        st.sampled_from([b"\r\n", b"\n", b"25\r\n", b"2\r\n", b"\r\r\n", b"HTTP/1.1 400 Bad\r\n"]),
    )

    @st.composite
    def with_prefix(draw: st.DrawFn) -> bytes:
        bad: bytes = draw(broken)
        if bad[:3].isdigit() and len(bad) < _LINE_LIMIT and draw(st.booleans()):
            # A continuation line of the same code first: still one reply, still broken.
            return bad[:3] + b"-" + draw(reply_texts()) + b"\r\n" + bad
        return bad

    return with_prefix()


_KEYWORDS = (
    "PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "BINARYMIME",
    "DSN", "STARTTLS", "REQUIRETLS", "HELP", "ETRN", "VRFY", "DELIVERBY 3600", "MT-PRIORITY",
    "X-EXPS LOGIN", "XCLIENT NAME ADDR", "X-LINK2STATE", "AUTH=LOGIN PLAIN",
)  # fmt: skip
_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER", "SCRAM-SHA-256", "GSSAPI")


@st.composite
def ehlo_extensions(draw: st.DrawFn, *, odd: bool = True) -> list[str]:
    """The lines of an EHLO reply after the first: keywords with their parameters.

    Args:
        odd: also draw what real servers send that the RFCs do not bless:
            lower case, extra spaces, SIZE without a number, unknown keywords.
    """
    lines = draw(st.lists(st.sampled_from(_KEYWORDS), unique=True, max_size=8))
    if draw(st.booleans()):
        size = draw(st.one_of(st.integers(0, 10**9).map(str), st.just("")))
        lines.append(f"SIZE {size}".rstrip())
    if draw(st.booleans()):
        mechanisms = draw(st.lists(st.sampled_from(_MECHANISMS), min_size=1, unique=True))
        lines.append("AUTH " + " ".join(mechanisms))
    if odd:
        extra = st.one_of(
            st.sampled_from(["pipelining", "Size  100", "SIZE abc", "AUTH", "auth plain"]),
            st.from_regex(r"\AX-[A-Z0-9]{1,8}( [!-~]{1,10})?\Z"),
        )
        lines += draw(st.lists(extra, max_size=3))
    return draw(st.permutations(lines))


def _answers(slow: bool) -> st.SearchStrategy[Any]:
    # A long pause or a stall is meant for the procedure driver, whose time is virtual.
    actions: st.SearchStrategy[Any] = st.sampled_from(
        [close(), reset(), stall(), pause(0.5), pause(5000.0)] if slow else [close(), reset()]
    )
    single = st.one_of(
        valid_replies(max_lines=3),
        valid_replies(max_lines=2).map(lambda r: [r, close()]),
        invalid_replies(),
        actions,
        st.none(),
    )
    return single


@st.composite
def handler_tables(
    draw: st.DrawFn, verbs: Iterable[str] = VERBS, *, max_entries: int = 4, slow: bool = True
) -> dict[str, Handler]:
    """Handler tables: a few entries, each a reply (valid or not), an action, or a sequence.

    The other verbs keep the defaults of a well-behaved server, so most drawn
    servers get a session some way before they misbehave.

    Args:
        verbs: the keys to draw from.
        max_entries: the most entries a table has.
        slow: also draw stalls and long pauses (fine for the procedure driver,
            whose clock is virtual; leave them out for a socket runner).
    """
    keys = draw(st.lists(st.sampled_from(sorted(verbs)), unique=True, max_size=max_entries))
    table: dict[str, Handler] = {}
    for key in keys:
        if draw(st.booleans()):
            table[key] = draw(_answers(slow))
        else:
            table[key] = Replies(*draw(st.lists(_answers(slow), min_size=1, max_size=3)))
    return table


@st.composite
def scripted_servers(
    draw: st.DrawFn, *, lmtp: bool | None = None, slow: bool = True
) -> ScriptedServer:
    """Whole scripted servers: an EHLO list, a handler table, maybe AUTH and STARTTLS.

    Run one with ``server.driver()`` against a session's procedures (no socket,
    no real time), or with a socket runner (give it a ``tls_context`` first if
    it offers STARTTLS, and draw it with ``slow=False``).

    Args:
        lmtp: whether it speaks LMTP (drawn by default).
        slow: also draw stalls and long pauses (see `handler_tables`).
    """
    extensions = draw(st.one_of(st.none(), ehlo_extensions()))
    return ScriptedServer(
        draw(handler_tables(slow=slow)),
        extensions=extensions,
        tls=draw(st.sampled_from(["none", "starttls"])),
        users=draw(st.sampled_from([None, {"user": "secret"}])),
        lmtp=draw(st.booleans()) if lmtp is None else lmtp,
    )
