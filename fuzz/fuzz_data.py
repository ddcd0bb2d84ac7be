# fuzz/fuzz_data
#
# Coverage-guided fuzzing of the message content encoders (DataEncoder for
# DATA, LineEndingNormalizer for BDAT) and of decode_data, their inverse.
#
# Input layout: byte 0 holds the number of cuts (low 3 bits: 0-7) and the
# kind of the first five pieces (bits 3-7, one per piece: 0 bytes, 1 a
# bytearray or, for odd pieces, a memoryview); the next <cuts> bytes place
# the cuts (each a fraction of the content, as in fuzz_replies' split); the
# rest is the message content. The
# same bytes are also handed to decode_data as if they were DATA content
# arriving at a server.
#
# Invariants:
#   * the content encoded in pieces gives exactly the octets of the content
#     encoded whole, for both encoders;
#   * DataEncoder's output has no lone CR and no lone LF, holds CRLF "." CRLF
#     only as its last five octets (or is ".\r\n" for empty content), and
#     decode_data gives back the content with every line ending as CRLF and a
#     final CRLF added if it was missing, and the output is exactly that with
#     every line that starts with "." given a second one, then the mark
#     (the reference models below);
#   * LineEndingNormalizer's output is that same normalised content;
#   * octets_in and octets_out count what went in and came out;
#   * decode_data on any bytes returns bytes or raises ValueError, and what it
#     returns, once encoded, decodes to the same thing when it is normalised.
"""Atheris harness: DATA and BDAT content encoding, chunked, against a reference model."""

from __future__ import annotations

import itertools
import re

from _harness import instrumented, main

with instrumented():
    from smtpbee._data import DataEncoder, LineEndingNormalizer, decode_data

__all__ = ["normalised", "stuffed", "test_one_input"]

_LINE_ENDING = re.compile(rb"\r\n|\r|\n")


def normalised(content: bytes) -> bytes:
    """The reference model: every line ending as CRLF, a final one added if missing."""
    result = _LINE_ENDING.sub(b"\r\n", content)
    if result and not result.endswith(b"\r\n"):
        result += b"\r\n"
    return result


def stuffed(lines: bytes) -> bytes:
    """The reference model of dot-stuffing, for normalised content."""
    return (b"\r\n" + lines).replace(b"\r\n.", b"\r\n..")[2:]


def _piece(piece: bytes, index: int, kinds: int) -> bytes | bytearray | memoryview:
    if not (kinds >> index) & 1:
        return piece
    return memoryview(piece) if index & 1 else bytearray(piece)


def _encode(encoder: DataEncoder | LineEndingNormalizer, pieces: list[bytes], kinds: int) -> bytes:
    out = [encoder.encode(_piece(piece, index, kinds)) for index, piece in enumerate(pieces)]
    out.append(encoder.end())
    wire = b"".join(out)
    content_octets = sum(len(piece) for piece in pieces)
    assert encoder.octets_in == content_octets, (encoder.octets_in, content_octets)
    assert encoder.octets_out == len(wire), (encoder.octets_out, len(wire))
    assert encoder.finished
    return wire


def _no_lone_line_ending(wire: bytes) -> bool:
    crs = wire.count(b"\r")
    return crs == wire.count(b"\n") == wire.count(b"\r\n")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    cuts = data[0] & 7
    kinds = data[0] >> 3
    content = data[1 + cuts :]
    bounds = sorted(cut * len(content) // 255 for cut in data[1 : 1 + cuts])
    pieces = [content[a:b] for a, b in itertools.pairwise([0, *bounds, len(content)])]
    expected = normalised(content)

    wire = _encode(DataEncoder(), pieces, kinds)
    assert wire == _encode(DataEncoder(), [content], 0), "chunking changed the DATA output"
    assert _no_lone_line_ending(wire), wire
    end = (b"\r\n" + wire).find(b"\r\n.\r\n")
    assert end == len(wire) - 3, ("the end-of-data mark appears early", wire)
    assert wire == stuffed(expected) + b".\r\n", (wire, expected)
    assert decode_data(wire) == expected, (wire, expected)

    bdat = _encode(LineEndingNormalizer(), pieces, kinds)
    assert bdat == expected, (bdat, expected)

    # The same bytes as a server would read them after a 354.
    try:
        decoded = decode_data(data)
    except ValueError:
        return
    assert type(decoded) is bytes
    if decoded == normalised(decoded):
        encoder = DataEncoder()
        assert decode_data(encoder.encode(decoded) + encoder.end()) == decoded, decoded


if __name__ == "__main__":
    main(test_one_input)
