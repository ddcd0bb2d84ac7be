"""DATA and BDAT content encoding: normalisation, dot-stuffing, framing, chunking."""

from __future__ import annotations

import itertools
import re
from unittest import mock

import pytest
from budget import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from smtpbee import _data
from smtpbee._data import DataEncoder, LineEndingNormalizer, bdat_command, decode_data
from smtpbee._errors import InvalidInputError

LONE_LINE_ENDING = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def crlf_normalised(body: bytes) -> bytes:
    """The reference model: every line ending as CRLF, a final one added if missing."""
    normalised = re.sub(rb"\r\n|\r|\n", b"\r\n", body)
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    return normalised


def encode_in_pieces(encoder: DataEncoder | LineEndingNormalizer, pieces: list[bytes]) -> bytes:
    return b"".join([encoder.encode(piece) for piece in pieces]) + encoder.end()


def split_at(body: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cut % (len(body) + 1) for cut in cuts), len(body)]
    return [body[start:stop] for start, stop in itertools.pairwise(bounds)]


def byte_by_byte(body: bytes) -> list[bytes]:
    return [body[i : i + 1] for i in range(len(body))]


# (content, DATA wire form, BDAT wire form)
CASES = [
    (b"", b".\r\n", b""),
    (b"a", b"a\r\n.\r\n", b"a\r\n"),
    (b"a\r\n", b"a\r\n.\r\n", b"a\r\n"),
    (b".", b"..\r\n.\r\n", b".\r\n"),
    (b".a", b"..a\r\n.\r\n", b".a\r\n"),
    (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n", b"a\r\n.\r\nb\r\n"),
    (b"a\r.\r", b"a\r\n..\r\n.\r\n", b"a\r\n.\r\n"),
    (b"\r\n.\r\n", b"\r\n..\r\n.\r\n", b"\r\n.\r\n"),
    (b"a\r\n.\r\nMAIL FROM:<x@y>\r\n", b"a\r\n..\r\nMAIL FROM:<x@y>\r\n.\r\n", None),
    (b"\n", b"\r\n.\r\n", b"\r\n"),
    (b"\r", b"\r\n.\r\n", b"\r\n"),
    (b"\n\r", b"\r\n\r\n.\r\n", b"\r\n\r\n"),
    (b"\r\r\n", b"\r\n\r\n.\r\n", b"\r\n\r\n"),
    (b"..x\r\n", b"...x\r\n.\r\n", b"..x\r\n"),
    (b"a.b\r\n.", b"a.b\r\n..\r\n.\r\n", b"a.b\r\n.\r\n"),
    (b"\xff\x00\r\n", b"\xff\x00\r\n.\r\n", b"\xff\x00\r\n"),
]


@pytest.mark.parametrize(("content", "data_wire", "bdat_wire"), CASES)
def test_data_encoder_cases_whole_and_byte_by_byte(
    content: bytes, data_wire: bytes, bdat_wire: bytes | None
) -> None:
    assert encode_in_pieces(DataEncoder(), [content]) == data_wire
    assert encode_in_pieces(DataEncoder(), byte_by_byte(content)) == data_wire
    assert decode_data(data_wire) == crlf_normalised(content)
    if bdat_wire is not None:
        assert encode_in_pieces(LineEndingNormalizer(), [content]) == bdat_wire
        assert encode_in_pieces(LineEndingNormalizer(), byte_by_byte(content)) == bdat_wire


def test_cr_at_chunk_end_is_sent_at_once_and_pairs_with_next_lf() -> None:
    encoder = DataEncoder()
    assert encoder.encode(b"a\r") == b"a\r\n"
    assert encoder.encode(b"") == b""
    assert encoder.encode(b"\n.b") == b"..b"
    assert encoder.encode(b"\r") == b"\r\n"
    assert encoder.encode(b"x") == b"x"
    assert encoder.end() == b"\r\n.\r\n"


def test_lf_after_cr_chunk_only_is_swallowed_once() -> None:
    encoder = DataEncoder()
    assert encoder.encode(b"\r") == b"\r\n"
    assert encoder.encode(b"\n") == b""
    assert encoder.encode(b"\n") == b"\r\n"
    assert encoder.end() == b".\r\n"


def test_dot_opening_a_chunk_mid_line_is_not_stuffed() -> None:
    encoder = DataEncoder()
    assert encoder.encode(b"a") == b"a"
    assert encoder.encode(b".b\r\n") == b".b\r\n"
    assert encoder.encode(b".c") == b"..c"
    assert encoder.end() == b"\r\n.\r\n"


def test_clean_chunk_without_leading_dots_is_returned_without_a_copy() -> None:
    chunk = b"Subject: hi\r\n\r\nline one\r\nline two\r\n" * 100
    assert DataEncoder().encode(chunk) is chunk
    assert LineEndingNormalizer().encode(chunk) is chunk
    no_line_end = b"just some text"
    assert DataEncoder().encode(no_line_end) is no_line_end


def test_clean_chunk_of_many_windows_is_returned_without_a_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_data, "_WINDOW", 16)
    chunk = b"Subject: hi\r\n\r\nline one\r\nline two\r\n" * 20 + b"no line end" * 5
    assert DataEncoder().encode(chunk) is chunk
    assert LineEndingNormalizer().encode(chunk) is chunk


def test_lf_completing_a_cr_before_a_chunk_of_many_windows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_data, "_WINDOW", 4)
    rest = b"line one\r\nline two\r\n"
    for encoder in (DataEncoder(), LineEndingNormalizer()):
        assert encoder.encode(b"a\r") == b"a\r\n"
        assert encoder.encode(b"\n" + rest) == rest


def test_dot_lines_in_windows_of_crlf_content(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_data, "_WINDOW", 8)
    monkeypatch.setattr(_data, "_DOT_LINES_SEARCHED", 2)
    content = b".a\r\n" + b"b\r\n.c\r\n" * 8 + b"..\r\n" * 5 + b"d\r"
    stuffed = b"..a\r\n" + b"b\r\n..c\r\n" * 8 + b"...\r\n" * 5 + b"d\r\n"
    assert DataEncoder().encode(content) == stuffed
    assert LineEndingNormalizer().encode(content) == content + b"\n"
    # Windows with more dot-lines than are searched one by one.
    monkeypatch.setattr(_data, "_WINDOW", 64)
    content = b"a\r\n.b\r\n" * 40
    assert DataEncoder().encode(content) == b"a\r\n..b\r\n" * 40


def test_bytearray_and_memoryview_are_accepted() -> None:
    encoder = DataEncoder()
    assert encoder.encode(bytearray(b".a\n")) == b"..a\r\n"
    assert encoder.encode(memoryview(b"b\r")) == b"b\r\n"
    assert encoder.end() == b".\r\n"


def test_str_is_refused() -> None:
    with pytest.raises(TypeError, match="bytes-like"):
        DataEncoder().encode("text")  # type: ignore[arg-type]


def test_counters_track_octets_in_and_out() -> None:
    encoder = DataEncoder()
    encoder.encode(b".a\nb")
    assert (encoder.octets_in, encoder.octets_out) == (4, 6)
    encoder.encode(b"\r")
    encoder.encode(b"\n")
    assert encoder.octets_in == 6
    assert not encoder.finished
    encoder.end()
    assert encoder.finished
    assert encoder.octets_out == len(b"..a\r\nb\r\n.\r\n")


@pytest.mark.parametrize("encoder_type", [DataEncoder, LineEndingNormalizer])
def test_encoder_is_spent_after_end(
    encoder_type: type[DataEncoder] | type[LineEndingNormalizer],
) -> None:
    encoder = encoder_type()
    encoder.end()
    with pytest.raises(RuntimeError, match="after end"):
        encoder.encode(b"x")
    with pytest.raises(RuntimeError, match="twice"):
        encoder.end()


def test_normalizer_counts_the_final_crlf() -> None:
    normalizer = LineEndingNormalizer()
    assert normalizer.encode(b".x") == b".x"
    assert normalizer.end() == b"\r\n"
    assert (normalizer.octets_in, normalizer.octets_out) == (2, 4)


@pytest.mark.parametrize(
    ("size", "last", "line"),
    [(0, True, b"BDAT 0 LAST\r\n"), (123, False, b"BDAT 123\r\n"), (7, True, b"BDAT 7 LAST\r\n")],
)
def test_bdat_command(size: int, last: bool, line: bytes) -> None:
    assert bdat_command(size, last=last) == line


@pytest.mark.parametrize("size", [-1, True, 1.0, "5"])
def test_bdat_command_refuses_bad_sizes(size: object) -> None:
    with pytest.raises(InvalidInputError, match="non-negative int"):
        bdat_command(size, last=False)  # type: ignore[arg-type]


def test_decode_data_needs_the_end_mark() -> None:
    with pytest.raises(ValueError, match="no end-of-data mark"):
        decode_data(b"a\r\n")
    with pytest.raises(ValueError, match="no end-of-data mark"):
        decode_data(b"a\n.\n")


def test_decode_data_refuses_octets_after_the_end_mark() -> None:
    with pytest.raises(ValueError, match="4 octets follow"):
        decode_data(b"a\r\n.\r\nRSET")
    with pytest.raises(ValueError, match="follow"):
        decode_data(b".\r\n.\r\n")


# Bodies rich in the octets that matter, plus arbitrary binary.
interesting = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"a", b"\xff", b"\x00", b" "]),
    max_size=60,
).map(b"".join)


@st.composite
def mostly_crlf(draw: st.DrawFn) -> bytes:
    """CRLF text with dot-lines, sometimes with one lone CR or LF and a ragged end."""
    lines = draw(st.lists(st.sampled_from([b"", b".", b"..", b"a", b".a", b"a.b"]), max_size=40))
    text = b"\r\n".join(lines)
    if draw(st.booleans()):
        position = draw(st.integers(0, len(text)))
        text = text[:position] + draw(st.sampled_from([b"\r", b"\n"])) + text[position:]
    return text + draw(st.sampled_from([b"", b"\r", b"\n", b"\r\n"]))


bodies = st.one_of(interesting, st.binary(max_size=200), mostly_crlf())
cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=12)


@settings(max_examples=examples(300), deadline=None)
@given(body=bodies, cut_points=cuts)
def test_data_encoder_round_trips_for_any_chunking(body: bytes, cut_points: list[int]) -> None:
    pieces = split_at(body, cut_points)
    wire = encode_in_pieces(DataEncoder(), pieces)
    assert wire == encode_in_pieces(DataEncoder(), [body])
    assert decode_data(wire) == crlf_normalised(body)


@settings(max_examples=examples(300), deadline=None)
@given(body=bodies, cut_points=cuts)
def test_data_end_mark_never_appears_early(body: bytes, cut_points: list[int]) -> None:
    encoder = DataEncoder()
    content = b"".join(encoder.encode(piece) for piece in split_at(body, cut_points))
    wire = content + encoder.end()
    # The CRLF that ended the DATA command line stands in front: a first line of
    # "." alone would end the data just as well.
    assert (b"\r\n" + content).find(b"\r\n.\r\n") == -1
    assert (b"\r\n" + wire).find(b"\r\n.\r\n") == len(wire) - 3
    assert LONE_LINE_ENDING.search(wire) is None
    assert encoder.octets_in == len(body)
    assert encoder.octets_out == len(wire)


@settings(max_examples=examples(300), deadline=None)
@given(body=bodies, cut_points=cuts)
def test_line_ending_normalizer_for_any_chunking(body: bytes, cut_points: list[int]) -> None:
    normalizer = LineEndingNormalizer()
    wire = encode_in_pieces(normalizer, split_at(body, cut_points))
    assert wire == crlf_normalised(body)
    assert wire == encode_in_pieces(LineEndingNormalizer(), [body])
    assert LONE_LINE_ENDING.search(wire) is None
    assert normalizer.octets_out == len(wire)


@settings(max_examples=examples(300), deadline=None)
@given(
    body=bodies,
    cut_points=cuts,
    window=st.integers(1, 16),
    searched=st.sampled_from([0, 1, 2]),
)
def test_windows_of_any_size_give_the_same_wire(
    body: bytes, cut_points: list[int], window: int, searched: int
) -> None:
    """A chunk of many windows is encoded as if it were one."""
    pieces = split_at(body, cut_points)
    data_wire = encode_in_pieces(DataEncoder(), [body])
    bdat_wire = encode_in_pieces(LineEndingNormalizer(), [body])
    with (
        mock.patch.object(_data, "_WINDOW", window),
        mock.patch.object(_data, "_DOT_LINES_SEARCHED", searched),
    ):
        assert encode_in_pieces(DataEncoder(), pieces) == data_wire
        assert encode_in_pieces(LineEndingNormalizer(), pieces) == bdat_wire
    assert decode_data(data_wire) == crlf_normalised(body)
    assert bdat_wire == crlf_normalised(body)


@settings(max_examples=examples(300))
@given(window=st.one_of(interesting, mostly_crlf()).filter(bool), final=st.booleans())
def test_crlf_only_finds_every_lone_line_ending(window: bytes, final: bool) -> None:
    # A CR that ends the chunk is completed by the LF that opens the next one.
    completed = window + b"\n" if final and window.endswith(b"\r") else window
    assert _data._crlf_only(window, final=final) == (LONE_LINE_ENDING.search(completed) is None)
