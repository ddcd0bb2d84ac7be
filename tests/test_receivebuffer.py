"""Tests of the reply reader: framing, codes, limits, enhanced status codes."""

from __future__ import annotations

import pytest
from budget import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from smtpbee import _receivebuffer
from smtpbee._errors import RemoteProtocolError
from smtpbee._receivebuffer import ReplyLimits, ReplyReader, parse_enhanced_status
from smtpbee._replies import EnhancedStatus, Reply


def drain(reader: ReplyReader) -> list[Reply]:
    """Every complete reply the reader holds now."""
    replies = []
    while (reply := reader.next_reply()) is not None:
        replies.append(reply)
    return replies


def read_in_chunks(
    data: bytes, sizes: list[int], limits: ReplyLimits | None = None
) -> tuple[ReplyReader, list[Reply]]:
    """Feed data in pieces of the given sizes (the rest in one piece), draining after each."""
    reader = ReplyReader(limits)
    replies: list[Reply] = []
    position = 0
    for size in [*sizes, len(data)]:
        reader.feed(data[position : position + size])
        position += size
        replies += drain(reader)
    return reader, replies


# Partial data that may follow a case in the same read: it must stay buffered.
TRAILING_DATA = [b"", b"2", b"250", b"250-more\r\n", b"421 4.4.2\r"]


def tr(data: bytes, expected: list[Reply], limits: ReplyLimits | None = None) -> None:
    """Check a case whole, byte by byte and with trailing data (h11's tr())."""
    reader, replies = read_in_chunks(data, [], limits)
    assert replies == expected
    assert reader.buffered == 0

    reader, replies = read_in_chunks(data, [1] * len(data), limits)
    assert replies == expected
    assert reader.buffered == 0

    for trailing in TRAILING_DATA:
        reader, replies = read_in_chunks(data + trailing, [], limits)
        assert replies == expected
        assert reader.buffered == len(trailing)


def R(code: int, *lines: bytes, enhanced: EnhancedStatus | None = None) -> Reply:
    return Reply(code=code, lines=lines, enhanced=enhanced)


VALID_CASES: list[tuple[str, bytes, list[Reply]]] = [
    ("single line", b"250 OK\r\n", [R(250, b"OK")]),
    ("bare code", b"250\r\n", [R(250, b"")]),
    ("bare code, bare LF", b"250\n", [R(250, b"")]),
    ("code and space only", b"250 \r\n", [R(250, b"")]),
    ("bare LF", b"250 OK\n", [R(250, b"OK")]),
    ("lowest code", b"200 x\r\n", [R(200, b"x")]),
    ("highest code", b"559 x\r\n", [R(559, b"x")]),
    ("extra spaces kept", b"250   spaced  out  \r\n", [R(250, b"  spaced  out  ")]),
    ("lone CR is text", b"250 a\rb\r\n", [R(250, b"a\rb")]),
    ("only the CR before LF is stripped", b"250 ok\r\r\n", [R(250, b"ok\r")]),
    ("NUL and DEL are text", b"250 a\x00b\x7f\r\n", [R(250, b"a\x00b\x7f")]),
    ("invalid UTF-8 kept", b"550 \xff\xfe\x80\r\n", [R(550, b"\xff\xfe\x80")]),
    ("UTF-8 text", "250 Grüße, 世界\r\n".encode(), [R(250, "Grüße, 世界".encode())]),
    (
        "multi-line",
        b"250-mx.example.com\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
        [R(250, b"mx.example.com", b"PIPELINING", b"8BITMIME")],
    ),
    (
        "multi-line with mixed line ends",
        b"250-a\n250-b\r\n250 c\n",
        [R(250, b"a", b"b", b"c")],
    ),
    ("empty continuation text", b"250-\r\n250 x\r\n", [R(250, b"", b"x")]),
    ("bare code ends a multi-line reply", b"250-a\r\n250\r\n", [R(250, b"a", b"")]),
    (
        "multi-line 220 greeting",
        b"220-mx.example.com ESMTP Postfix\r\n220-No UBE.\r\n220 Go ahead\r\n",
        [R(220, b"mx.example.com ESMTP Postfix", b"No UBE.", b"Go ahead")],
    ),
    (
        "enhanced status",
        b"550 5.1.1 <bob@example.com>: User unknown\r\n",
        [R(550, b"5.1.1 <bob@example.com>: User unknown", enhanced=EnhancedStatus(5, 1, 1))],
    ),
    (
        "enhanced status on a multi-line reply",
        b"452-4.5.3 Too many recipients\r\n452 4.5.3 Try again later\r\n",
        [
            R(
                452,
                b"4.5.3 Too many recipients",
                b"4.5.3 Try again later",
                enhanced=EnhancedStatus(4, 5, 3),
            )
        ],
    ),
    (
        "enhanced status of a different class is ignored",
        b"550 2.1.0 odd\r\n",
        [R(550, b"2.1.0 odd")],
    ),
    (
        "DATA go-ahead",
        b"354 End data with <CR><LF>.<CR><LF>\r\n",
        [R(354, b"End data with <CR><LF>.<CR><LF>")],
    ),
    ("AUTH challenge", b"334 VXNlcm5hbWU6\r\n", [R(334, b"VXNlcm5hbWU6")]),
    (
        "pipelined replies in one read",
        b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 No\r\n354 Go\r\n",
        [
            R(250, b"2.1.0 Ok", enhanced=EnhancedStatus(2, 1, 0)),
            R(250, b"2.1.5 Ok", enhanced=EnhancedStatus(2, 1, 5)),
            R(550, b"5.1.1 No", enhanced=EnhancedStatus(5, 1, 1)),
            R(354, b"Go"),
        ],
    ),
    (
        "a reply may follow another with a different code",
        b"221-bye\r\n221 bye\r\n421 closing\r\n",
        [R(221, b"bye", b"bye"), R(421, b"closing")],
    ),
]


@pytest.mark.parametrize(
    ("data", "expected"), [c[1:] for c in VALID_CASES], ids=[c[0] for c in VALID_CASES]
)
def test_valid_replies(data: bytes, expected: list[Reply]) -> None:
    tr(data, expected)


ERROR_CASES: list[tuple[str, bytes, str]] = [
    ("empty line", b"\r\n", "invalid reply code"),
    ("bare LF line", b"\n", "invalid reply code"),
    ("text instead of a reply", b"hello\r\n", "invalid reply code"),
    ("first digit 1", b"150 x\r\n", "invalid reply code"),
    ("first digit 6", b"600 x\r\n", "invalid reply code"),
    ("first digit 0", b"050 x\r\n", "invalid reply code"),
    ("second digit 6", b"260 x\r\n", "invalid reply code"),
    ("second digit 9", b"590 x\r\n", "invalid reply code"),
    ("letter as third digit", b"25a x\r\n", "invalid reply code"),
    ("letter as second digit", b"2x0 x\r\n", "invalid reply code"),
    ("one digit", b"2\r\n", "invalid reply code"),
    ("two digits", b"25\r\n", "invalid reply code"),
    ("two digits, bare LF", b"25\n", "invalid reply code"),
    ("leading space", b" 250 x\r\n", "invalid reply code"),
    ("sign", b"+25 x\r\n", "invalid reply code"),
    ("non-ASCII digit", "2\u06650 x\r\n".encode(), "invalid reply code"),
    ("full-width digit", "\uff1250 x\r\n".encode(), "invalid reply code"),
    ("TLS record", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "invalid reply code"),
    ("HTTP", b"HTTP/1.1 400 Bad Request\r\n", "invalid reply code"),
    ("four digits", b"2500 x\r\n", "not followed by"),
    ("letter after code", b"250x\r\n", "not followed by"),
    ("tab after code", b"250\tx\r\n", "not followed by"),
    ("CR then text after code", b"250\rx\r\n", "not followed by"),
    ("CR CR LF after code", b"250\r\r\n", "not followed by"),
    ("continuation with another code", b"250-a\r\n251 b\r\n", "continues a reply with code 250"),
    ("continuation, other class", b"250-a\r\n550-b\r\n550 c\r\n", "continues a reply"),
    ("empty line inside a reply", b"250-a\r\n\r\n250 b\r\n", "invalid reply code"),
    ("garbage after a good reply", b"250 ok\r\nxyz\r\n", "invalid reply code"),
]


@pytest.mark.parametrize(
    ("data", "message"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
@pytest.mark.parametrize("piece", [0, 1, 2])
def test_malformed_replies(data: bytes, message: str, piece: int) -> None:
    """Each error is found whole, byte by byte and in pairs of bytes."""
    sizes = [piece] * (len(data) // piece) if piece else []
    with pytest.raises(RemoteProtocolError, match=message):
        read_in_chunks(data, sizes)


def test_garbage_after_a_good_reply_keeps_the_good_reply() -> None:
    reader = ReplyReader()
    reader.feed(b"250 ok\r\n150 no\r\n")
    assert reader.next_reply() == R(250, b"ok")
    with pytest.raises(RemoteProtocolError):
        reader.next_reply()


@pytest.mark.parametrize(
    "prefix",
    [b"1", b"6", b"\x16", b"\x00", b" ", b"-", b"H", b"26", b"2x", b"25x", b"599", b"2\r"],
)
def test_invalid_code_is_rejected_without_waiting_for_the_line_end(prefix: bytes) -> None:
    reader = ReplyReader()
    reader.feed(prefix)
    with pytest.raises(RemoteProtocolError, match="invalid reply code"):
        reader.next_reply()


@pytest.mark.parametrize("prefix", [b"250x", b"250\t", b"250\x00", b"2500"])
def test_bad_separator_is_rejected_without_waiting_for_the_line_end(prefix: bytes) -> None:
    reader = ReplyReader()
    reader.feed(prefix)
    with pytest.raises(RemoteProtocolError, match="not followed by"):
        reader.next_reply()


def test_changed_code_is_rejected_without_waiting_for_the_line_end() -> None:
    reader = ReplyReader()
    reader.feed(b"250-a\r\n251")
    with pytest.raises(RemoteProtocolError, match="code 251 continues a reply with code 250"):
        reader.next_reply()


@pytest.mark.parametrize(
    "prefix", [b"2", b"25", b"250", b"250-", b"250 ", b"250\r", b"250-a\r\n25"]
)
def test_valid_prefixes_wait_for_more(prefix: bytes) -> None:
    reader = ReplyReader()
    reader.feed(prefix)
    assert reader.next_reply() is None
    assert reader.buffered == len(prefix)


# --- limits -----------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [b"250 " + b"a" * 10 + b"\r\n", b"250 " + b"a" * 11 + b"\n", b"250-" + b"a" * 10 + b"\r\n"],
)
def test_line_of_exactly_the_limit_passes(line: bytes) -> None:
    assert len(line) == 16
    limits = ReplyLimits(max_line_length=16)
    if line[3:4] == b"-":
        tr(line + b"250\r\n", [R(250, b"a" * 10, b"")], limits)
    else:
        tr(line, [R(250, line[4:].rstrip(b"\r\n"))], limits)


@pytest.mark.parametrize("line", [b"250 " + b"a" * 11 + b"\r\n", b"250 " + b"a" * 12 + b"\n"])
@pytest.mark.parametrize("piece", [0, 1, 5])
def test_line_over_the_limit_fails(line: bytes, piece: int) -> None:
    limits = ReplyLimits(max_line_length=16)
    sizes = [piece] * (len(line) // piece) if piece else []
    with pytest.raises(RemoteProtocolError, match="reply line longer than 16 octets"):
        read_in_chunks(line, sizes, limits)


def test_long_line_fails_as_soon_as_the_buffer_proves_it() -> None:
    reader = ReplyReader(ReplyLimits(max_line_length=16))
    reader.feed(b"250 " + b"a" * 11)  # 15 octets: a LF could still end it in time
    assert reader.next_reply() is None
    reader.feed(b"a")  # 16 octets without a line end: the line needs at least 17
    with pytest.raises(RemoteProtocolError, match="longer than 16"):
        reader.next_reply()


def test_reply_of_exactly_the_limit_passes() -> None:
    data = b"250-ab\r\n" * 3 + b"250 ab\r\n"
    assert len(data) == 32
    tr(data, [R(250, b"ab", b"ab", b"ab", b"ab")], ReplyLimits(max_reply_size=32))


@pytest.mark.parametrize("piece", [0, 1, 3])
def test_reply_over_the_limit_fails(piece: int) -> None:
    data = b"250-ab\r\n" * 3 + b"250 abc\r\n"
    sizes = [piece] * (len(data) // piece) if piece else []
    with pytest.raises(RemoteProtocolError, match="reply larger than 32 octets"):
        read_in_chunks(data, sizes, ReplyLimits(max_reply_size=32))


def test_large_reply_fails_as_soon_as_the_buffer_proves_it() -> None:
    reader = ReplyReader(ReplyLimits(max_reply_size=32))
    reader.feed(b"250-ab\r\n" * 3 + b"250 ab\r")
    assert reader.next_reply() is None
    reader.feed(b"\r")  # 32 octets held and the reply is still not complete
    with pytest.raises(RemoteProtocolError, match=r"larger than 32 .*3 complete lines"):
        reader.next_reply()


def test_continuation_that_fills_the_reply_limit_fails_at_once() -> None:
    """A continuation line promises another line, which cannot fit."""
    reader = ReplyReader(ReplyLimits(max_reply_size=32))
    reader.feed(b"250-ab\r\n" * 4)
    with pytest.raises(RemoteProtocolError, match="larger than 32"):
        reader.next_reply()


def test_reply_limit_below_the_line_limit_applies_to_a_single_line() -> None:
    reader = ReplyReader(ReplyLimits(max_line_length=100, max_reply_size=10))
    reader.feed(b"250 " + b"a" * 10)
    with pytest.raises(RemoteProtocolError, match="reply larger than 10 octets"):
        reader.next_reply()


def test_limits_count_each_reply_separately() -> None:
    data = b"250-ab\r\n" * 3 + b"250 ab\r\n"
    tr(data * 5, [R(250, b"ab", b"ab", b"ab", b"ab")] * 5, ReplyLimits(max_reply_size=32))


def test_large_complete_reply_within_the_limits_passes() -> None:
    lines = [b"%04d " % i + b"x" * 2000 for i in range(30)]
    data = b"".join(b"250-" + line + b"\r\n" for line in lines[:-1]) + b"250 " + lines[-1] + b"\r\n"
    _, replies = read_in_chunks(data, [4096] * (len(data) // 4096))
    assert replies == [R(250, *lines)]


def test_raised_line_limit_admits_a_long_auth_challenge() -> None:
    limits = ReplyLimits()
    challenge = b"334 " + b"Q" * 10000 + b"\r\n"
    reader = ReplyReader(limits)
    assert reader.line_limit == limits.max_line_length == 2048
    reader.line_limit = limits.max_auth_challenge
    reader.feed(challenge)
    assert reader.next_reply() == R(334, b"Q" * 10000)
    reader.line_limit = limits.max_line_length
    assert reader.line_limit == 2048
    reader.feed(challenge)
    with pytest.raises(RemoteProtocolError, match="longer than 2048"):
        reader.next_reply()


def test_lowering_the_line_limit_applies_to_bytes_already_scanned() -> None:
    reader = ReplyReader()
    reader.feed(b"250 " + b"a" * 100)
    assert reader.next_reply() is None
    reader.line_limit = 50
    with pytest.raises(RemoteProtocolError, match="longer than 50"):
        reader.next_reply()


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "10", None])
def test_line_limit_must_be_a_positive_int(value: object) -> None:
    reader = ReplyReader()
    with pytest.raises(ValueError, match="line_limit must be a positive integer"):
        reader.line_limit = value  # type: ignore[assignment]
    assert reader.line_limit == 2048


@pytest.mark.parametrize("name", ["max_line_length", "max_reply_size", "max_auth_challenge"])
@pytest.mark.parametrize("value", [0, -5, False, 2.0, "512"])
def test_limits_must_be_positive_ints(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
        ReplyLimits(**{name: value})  # type: ignore[arg-type]


def test_default_limits() -> None:
    limits = ReplyLimits()
    assert (limits.max_line_length, limits.max_reply_size, limits.max_auth_challenge) == (
        2048,
        65536,
        12288,
    )
    assert ReplyReader().limits == limits
    assert ReplyReader(ReplyLimits(max_line_length=600)).line_limit == 600


def test_error_messages_quote_only_a_short_escaped_prefix() -> None:
    reader = ReplyReader(ReplyLimits(max_line_length=100_000, max_reply_size=200_000))
    reader.feed(b"250 " + b"\xff\x1b[2J" * 30_000)
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_reply()
    message = str(info.value)
    assert len(message) < 160
    assert "\\xff\\x1b[2J" in message
    assert "\x1b" not in message
    assert message.endswith("...")


def test_error_message_quotes_a_short_line_whole() -> None:
    reader = ReplyReader()
    reader.feed(b"6\r\n")
    with pytest.raises(RemoteProtocolError, match=r"b'6\\r\\n'( |$)"):
        reader.next_reply()


# --- buffering --------------------------------------------------------------


def test_buffered_counts_bytes_not_yet_returned() -> None:
    reader = ReplyReader()
    assert reader.buffered == 0
    reader.feed(b"250-first\r\n250-sec")
    assert reader.buffered == 18
    assert reader.next_reply() is None
    assert reader.buffered == 18  # the complete line is held as part of the pending reply
    reader.feed(b"ond\r\n250 last\r\n220 next")
    assert reader.next_reply() == R(250, b"first", b"second", b"last")
    assert reader.buffered == 8
    assert reader.next_reply() is None
    assert reader.buffered == 8


def test_feed_accepts_any_bytes_like() -> None:
    reader = ReplyReader()
    reader.feed(bytearray(b"250 a\r\n"))
    reader.feed(memoryview(b"251 b\r\n"))
    assert drain(reader) == [R(250, b"a"), R(251, b"b")]


def test_feeding_nothing_changes_nothing() -> None:
    reader = ReplyReader()
    reader.feed(b"")
    assert reader.next_reply() is None
    reader.feed(b"250 ok")
    reader.feed(b"")
    assert reader.next_reply() is None
    reader.feed(b"\r\n")
    assert reader.next_reply() == R(250, b"ok")


def test_search_for_the_line_end_resumes_where_it_stopped() -> None:
    """Bytes arriving one at a time are each searched once (O(n) overall)."""
    reader = ReplyReader()
    for count, byte in enumerate(b"250-abcdef", start=1):
        reader.feed(bytes([byte]))
        assert reader.next_reply() is None
        assert reader._scan_from == count
    reader.feed(b"\r\n250 x")
    assert reader.next_reply() is None
    # The complete line was consumed; the search resumes after "250 x".
    assert reader._scan_from == reader.buffered - len(b"250-abcdef\r\n") == 5


# --- enhanced status codes --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code", "expected"),
    [
        (b"2.0.0 Ok", 250, EnhancedStatus(2, 0, 0)),
        (b"5.7.1 Relaying denied", 550, EnhancedStatus(5, 7, 1)),
        (b"4.4.2", 421, EnhancedStatus(4, 4, 2)),
        (b"5.123.999 x", 554, EnhancedStatus(5, 123, 999)),
        (b"5.01.001 x", 554, EnhancedStatus(5, 1, 1)),
        (b"2.1.5 \xff", 250, EnhancedStatus(2, 1, 5)),
        (b"", 250, None),
        (b"Ok", 250, None),
        (b"2.0.0Ok", 250, None),
        (b"2.0.0\tOk", 250, None),
        (b"2.0.0\n", 250, None),
        (b" 2.0.0 Ok", 250, None),
        (b"2.0 Ok", 250, None),
        (b"2.0.", 250, None),
        (b"2..0 x", 250, None),
        (b"2.1234.0 x", 250, None),
        (b"2.0.1234 x", 250, None),
        (b"3.0.0 x", 354, None),
        (b"5.1.1 x", 250, None),
        (b"4.1.1 x", 550, None),
        ("2.\u0660.\u0660 x".encode(), 250, None),
        (b"2.0.0.0 x", 250, None),
    ],
)
def test_parse_enhanced_status(text: bytes, code: int, expected: EnhancedStatus | None) -> None:
    assert parse_enhanced_status(text, code) == expected


# --- properties -------------------------------------------------------------

SMALL_LIMITS = ReplyLimits(max_line_length=24, max_reply_size=64, max_auth_challenge=48)

codes = st.builds(
    lambda a, b, c: a * 100 + b * 10 + c,
    st.integers(2, 5),
    st.integers(0, 5),
    st.integers(0, 9),
)
# Any bytes but LF, and no CR at the end (it would be taken as part of the line end).
texts = st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"").rstrip(b"\r"))
line_ends = st.sampled_from([b"\r\n", b"\n"])


@st.composite
def reply_streams(draw: st.DrawFn) -> tuple[bytes, list[Reply]]:
    """A byte stream of several valid replies and the replies it stands for."""
    stream = bytearray()
    replies = []
    for _ in range(draw(st.integers(1, 5))):
        code = draw(codes)
        lines = draw(st.lists(texts, min_size=1, max_size=4))
        for text in lines[:-1]:
            stream += b"%d-%s%s" % (code, text, draw(line_ends))
        last = lines[-1]
        bare = not last and draw(st.booleans())
        stream += b"%d%s%s" % (code, b"" if bare else b" " + last, draw(line_ends))
        enhanced = parse_enhanced_status(lines[0], code)
        replies.append(Reply(code=code, lines=tuple(lines), enhanced=enhanced))
    return bytes(stream), replies


chunk_sizes = st.lists(st.integers(0, 20), max_size=30)


@settings(max_examples=examples(300))
@given(reply_streams(), chunk_sizes)
def test_any_chunking_of_valid_replies_gives_the_same_replies(
    case: tuple[bytes, list[Reply]], sizes: list[int]
) -> None:
    data, expected = case
    whole_reader, whole = read_in_chunks(data, [])
    split_reader, split = read_in_chunks(data, sizes)
    assert whole == split == expected
    assert whole_reader.buffered == split_reader.buffered == 0


def outcome(data: bytes, sizes: list[int]) -> tuple[list[Reply], bool, int]:
    """The replies read, whether an error ended the stream, and what stayed buffered."""
    reader = ReplyReader(SMALL_LIMITS)
    replies: list[Reply] = []
    position = 0
    try:
        for size in [*sizes, len(data)]:
            reader.feed(data[position : position + size])
            position += size
            while (reply := reader.next_reply()) is not None:
                replies.append(reply)
    except RemoteProtocolError as exc:
        assert len(str(exc)) < 200
        return replies, True, -1
    return replies, False, reader.buffered


# Fragments that make random input look like replies often enough to reach deep paths.
fragments = st.sampled_from(
    [b"250", b"251", b"550", b"2", b"-", b" ", b"\r", b"\n", b"\r\n", b"x", b"5.1.1", b"\xff"]
)


@st.composite
def damaged_reply_streams(draw: st.DrawFn) -> bytes:
    """Valid replies with a few fragments spliced in: errors deep inside a stream."""
    data, _ = draw(reply_streams())
    for _ in range(draw(st.integers(0, 3))):
        position = draw(st.integers(0, len(data)))
        data = data[:position] + draw(fragments) + data[position:]
    return data


hostile_bytes = st.one_of(
    st.binary(max_size=100),
    st.lists(st.one_of(fragments, st.binary(max_size=3)), max_size=40).map(b"".join),
    damaged_reply_streams(),
)


@settings(max_examples=examples(500))
@given(hostile_bytes, chunk_sizes)
def test_arbitrary_bytes_only_raise_remote_protocol_error(data: bytes, sizes: list[int]) -> None:
    """Garbage parses or raises RemoteProtocolError, the same way whatever the chunking."""
    assert outcome(data, sizes) == outcome(data, [])


@settings(max_examples=examples(100))
@given(
    st.integers(1, 300),
    st.sampled_from([ReplyLimits(max_line_length=200), ReplyLimits(max_line_length=1000)]),
    st.sampled_from([b"250 ", b"250-", b"334 "]),
    st.binary(min_size=1, max_size=8).map(lambda b: b.replace(b"\n", b"")).filter(bool),
)
def test_a_line_without_end_never_grows_the_buffer_past_the_limit(
    chunk: int, limits: ReplyLimits, start: bytes, filler: bytes
) -> None:
    reader = ReplyReader(limits)
    flood = start + filler * (3 * limits.max_line_length // len(filler) + 1)
    with pytest.raises(RemoteProtocolError, match="longer than"):
        for position in range(0, len(flood), chunk):
            reader.feed(flood[position : position + chunk])
            assert reader.next_reply() is None
            assert reader.buffered < limits.max_line_length + chunk


@settings(max_examples=examples(50))
@given(st.integers(1, 300), st.integers(0, 40))
def test_endless_continuation_lines_never_grow_past_the_reply_limit(
    chunk: int, text_length: int
) -> None:
    limits = ReplyLimits(max_reply_size=1000)
    reader = ReplyReader(limits)
    flood = (b"250-" + b"t" * text_length + b"\r\n") * 1000
    with pytest.raises(RemoteProtocolError, match="reply larger than 1000"):
        for position in range(0, len(flood), chunk):
            reader.feed(flood[position : position + chunk])
            assert reader.next_reply() is None
            assert reader.buffered < limits.max_reply_size + chunk


# --- the short way and the long way -----------------------------------------


class WalkingReader(ReplyReader):
    """The reader with its short way turned off: every reply read line by line."""

    __slots__ = ()

    def next_reply(self) -> Reply | None:
        return self._walk() if self._buffer else None


def transcript(reader: ReplyReader, data: bytes, sizes: list[int]) -> list[object]:
    """All the reader says of data fed in pieces: replies, what it holds, its error."""
    said: list[object] = []
    position = 0
    try:
        for size in [*sizes, len(data)]:
            reader.feed(data[position : position + size])
            position += size
            while (reply := reader.next_reply()) is not None:
                said.append(reply)
            said.append(reader.buffered)
    except RemoteProtocolError as exc:
        said.append(str(exc))
    return said


@settings(max_examples=examples(500))
@given(
    st.one_of(hostile_bytes, reply_streams().map(lambda case: case[0])),
    chunk_sizes,
    st.sampled_from(
        [
            None,
            SMALL_LIMITS,
            ReplyLimits(max_line_length=12, max_reply_size=40),
            ReplyLimits(max_line_length=5),
        ]
    ),
)
def test_the_short_way_says_what_the_long_way_says(
    data: bytes, sizes: list[int], limits: ReplyLimits | None
) -> None:
    """Same replies, same errors, same bytes held, whatever the input and chunking."""
    assert transcript(ReplyReader(limits), data, sizes) == transcript(
        WalkingReader(limits), data, sizes
    )


@pytest.mark.parametrize(
    "data",
    [
        b"250-a\r\n250-b\r\n250 c\r\n",
        b"250-a\r\n250 c\r\n220 next\r\n",
        b"250-a\r\n250-b\r\n250 c\r\n250-x\r\n",
        b"250-\r\n250-\r\n250 \r\n",
        b"250-5.1.1 a\r\n250 b\r\n",
        b"250-a\n250 b\r\n",
        b"250-a\r\n250\r\n",
        b"250-a\rb\r\n250 c\r\n",
        b"250-a\r\n251 c\r\n",
        b"250-a\r\n250 " + b"c" * 2042 + b"\r\n",
        b"250-a\r\n250 " + b"c" * 2043 + b"\r\n",
        b"250 a\r\n250 b\r\n250 a\r\n",
        b"250 a\n",
        b"250 \n",
    ],
)
@pytest.mark.parametrize("pieces", [1, 2, 3])
def test_short_way_cases_against_the_long_way(data: bytes, pieces: int) -> None:
    cut = len(data) // pieces
    sizes = [cut] * (pieces - 1)
    assert transcript(ReplyReader(), data, sizes) == transcript(WalkingReader(), data, sizes)


def test_a_known_status_prefix_of_another_class_is_no_status() -> None:
    reader = ReplyReader()
    reader.feed(b"550 5.1.1 unknown\r\n250 5.1.1 unknown\r\n")
    assert drain(reader) == [
        R(550, b"5.1.1 unknown", enhanced=EnhancedStatus(5, 1, 1)),
        R(250, b"5.1.1 unknown"),
    ]


def test_many_status_prefixes_are_forgotten_and_parsed_again() -> None:
    for number in range(600):
        assert parse_enhanced_status(b"2.0.%d %d" % (number % 1000, number), 250) == (
            EnhancedStatus(2, 0, number % 1000)
        )


def test_a_line_limit_too_small_for_any_line_with_text_walks() -> None:
    reader = ReplyReader(ReplyLimits(max_line_length=5))
    reader.feed(b"250\r\n")
    assert drain(reader) == [R(250, b"")]
    reader.feed(b"250-\r\n")
    with pytest.raises(RemoteProtocolError, match="longer than 5"):
        reader.next_reply()


def test_a_huge_line_limit_walks() -> None:
    limits = ReplyLimits(max_line_length=2**33, max_reply_size=2**34)
    reader = ReplyReader(limits)
    reader.feed(b"250-a\r\n250 b\r\n")
    assert drain(reader) == [R(250, b"a", b"b")]


def test_line_limits_past_the_patterns_kept_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_receivebuffer, "_multiline_replies", {})
    for line_limit in range(100, 140):
        reader = ReplyReader(ReplyLimits(max_line_length=line_limit))
        reader.feed(b"250-a\r\n250 b\r\n")
        assert drain(reader) == [R(250, b"a", b"b")]
    assert len(_receivebuffer._multiline_replies) == _receivebuffer._MULTILINE_PATTERNS_KEPT


def test_limits_can_be_replaced() -> None:
    reader = ReplyReader()
    reader.limits = ReplyLimits(max_line_length=10, max_reply_size=20)
    assert reader.limits.max_reply_size == 20
    reader.feed(b"250-abcd\r\n250-efgh\r\n250 ijkl\r\n")
    with pytest.raises(RemoteProtocolError, match="reply larger than 20"):
        reader.next_reply()


def test_a_remainder_after_a_reply_is_kept_for_the_next() -> None:
    reader = ReplyReader()
    reader.feed(b"250-a\r\n250 b\r\n25")
    assert reader.next_reply() == R(250, b"a", b"b")
    assert reader.peek(5) == b"25"
    reader.feed(b"0 c\r\n250-d\r\n")
    reader.feed(b"250 e\r\n")
    assert drain(reader) == [R(250, b"c"), R(250, b"d", b"e")]
    assert reader.buffered == 0


def test_the_fed_bytes_are_not_aliased_when_mutable() -> None:
    reader = ReplyReader()
    data = bytearray(b"250 a\r\n")
    reader.feed(data)
    data[:3] = b"xyz"
    assert drain(reader) == [R(250, b"a")]


def test_feed_refuses_what_is_not_bytes_like() -> None:
    reader = ReplyReader()
    with pytest.raises(TypeError):
        reader.feed(5)  # type: ignore[arg-type]
    reader.feed(b"250")
    with pytest.raises(TypeError):
        reader.feed(" ok")  # type: ignore[arg-type]


def test_peek_shows_the_code_of_a_pending_reply() -> None:
    reader = ReplyReader()
    reader.feed(b"421-closing\r\n421 soon")
    assert reader.next_reply() is None
    assert reader.peek(3) == b"421"
    assert reader.peek(10) == b"421-"


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"])
def test_single_line_replies_are_remembered_within_a_bound(line_end: bytes) -> None:
    # Bare LF line ends take the long way; it remembers single-line replies too.
    reader = ReplyReader()
    lines = [b"250 ok %d%s" % (number, line_end) for number in range(100)]
    reader.feed(b"".join(lines * 2))
    texts = [line[4 : -len(line_end)] for line in lines * 2]
    assert [reply.lines[0] for reply in drain(reader)] == texts


@pytest.mark.parametrize("rest", [10, 1100])
def test_what_a_reply_leaves_is_read_next_short_or_long(rest: int) -> None:
    reader = ReplyReader()
    following = b"250 " + b"x" * (rest - 6) + b"\r\n"
    reader.feed(b"250 a\r\n" + following + b"25")
    assert reader.next_reply() == R(250, b"a")
    assert reader.buffered == rest + 2
    assert reader.next_reply() == R(250, following[4:-2])
    reader.feed(b"0 b\r\n")
    assert drain(reader) == [R(250, b"b")]
