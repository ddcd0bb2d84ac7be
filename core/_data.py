# smtpbee/_data
#
# Message content encoders: what goes on the wire after a 354 (DATA) or after a
# BDAT command line (CHUNKING, RFC 3030).
#
# Theory of operation
# -------------------
# Both encoders turn every line ending of the content into CRLF: CRLF stays as
# it is, and a lone CR or a lone LF becomes CRLF (RFC 5321 §2.3.8 forbids a
# client to send either). DataEncoder also dot-stuffs (§4.5.2): a line that
# starts with "." gets a second one, the first line of the content included.
# Normalising happens *before* stuffing, in the same pass over each chunk, so a
# "\n.\n" in the input becomes "\r\n..\r\n" and can never reach the server as an
# end-of-data mark (the SMTP smuggling family of attacks relies on a client that
# stuffs or normalises only some of the line endings a server recognises).
#
# State between chunks is two flags, never buffered bytes:
#   * at_line_start: the output so far ends a line (or nothing was sent yet), so
#     a "." opening the next chunk must be stuffed;
#   * skip_lf: the last chunk ended with CR. That CR was already sent as CRLF, so
#     an LF opening the next chunk is the second half of the same CRLF and is
#     dropped. Sending the CR at once (instead of holding it back until the next
#     chunk tells CRLF from a lone CR) keeps encode() free of hidden buffers:
#     every input octet is accounted for in the output of the call that got it.
#
# Speed: everything is done by bytes methods (C loops), never a Python loop per
# octet or per line, and content is worked on in windows of _WINDOW octets that
# stay in the CPU cache while several passes go over them. A window is cut after
# an LF, so no CRLF straddles two windows.
#
# Content that already uses CRLF everywhere is the usual case (a message from a
# file, from email.generator with a CRLF policy, from another MTA), and it is
# checked in one pass of cheap C work: the window is translated twice into one
# mark per octet (1 for a CR, resp. an LF, 0 elsewhere), and the CR marks moved
# on by one octet must equal the LF marks -- a single memcmp. It then needs only
# the stuffing: split() at each CRLF "." and join() with CRLF "..", which
# returns the window itself when no line starts with a dot. A chunk of more
# than one window keeps its unchanged runs as views and stuffs each dot-line
# with one search, so the one copy made of it is the final join. Other content
# goes through CRLF->LF, CR->LF, stuffing on LF and LF->CRLF, each skipped when
# a quick search says it has nothing to do. No copy is made of a chunk that
# needs no change.
#
# Invariants (checked by the property tests in tests/test_data.py):
#   * the concatenated output of any chunking equals the output for the whole
#     content, and contains no lone CR and no lone LF;
#   * DataEncoder's output contains CRLF "." CRLF only as its final five octets
#     (or is exactly ".\r\n" for empty content).
from __future__ import annotations

from typing import Final

from ._errors import InvalidInputError

__all__ = [
    "DataEncoder",
    "LineEndingNormalizer",
    "bdat_command",
    "decode_data",
]

_CR: Final = 0x0D
_LF: Final = 0x0A
_DOT: Final = 0x2E

_BytesLike = bytes | bytearray | memoryview

# Content is worked on in windows of about this many octets: each pass over a
# window then reads it from the CPU cache, not the whole of a large chunk from
# memory once per pass. Windows end after an LF (or, in a long run without one,
# where no CRLF can be split), so each is checked and transformed on its own.
_WINDOW = 64 * 1024

# Tables for bytes.translate() that turn a window into a mark per octet: 1 where
# it holds a CR (resp. an LF), 0 elsewhere.
_CR_MARKS: Final = bytes(1 if octet == _CR else 0 for octet in range(256))
_LF_MARKS: Final = bytes(1 if octet == _LF else 0 for octet in range(256))

# Dot-lines of a window stuffed one search each before split() and join() do the
# rest of it: a search is cheaper for the few a text has, the pair for content
# made of them.
_DOT_LINES_SEARCHED = 32


def _crlf_only(window: bytes, *, final: bool) -> bool:
    """Whether every CR in window is followed by an LF and every LF preceded by a CR.

    A CR ending the last window of a chunk counts as followed by its LF (it is
    sent as CRLF, and an LF opening the next chunk is dropped).
    """
    # The CR marks, one octet later, must be exactly the LF marks: an octet of
    # zero in front of the CR marks lines up each CR with the octet after it,
    # and the one after the LF marks stands for what follows the window.
    crs = b"\0" + window.translate(_CR_MARKS)
    lfs = window.translate(_LF_MARKS) + (b"\1" if final and window[-1] == _CR else b"\0")
    return crs == lfs


class _LineEndingEncoder:
    """Shared machinery of both encoders: CRLF normalisation, optional stuffing."""

    __slots__ = ("_at_line_start", "_finished", "_octets_in", "_octets_out", "_skip_lf")

    # Set by each subclass: whether lines starting with "." are stuffed.
    _STUFF_DOTS: bool = False

    def __init__(self) -> None:
        self._at_line_start = True
        self._skip_lf = False
        self._finished = False
        self._octets_in = 0
        self._octets_out = 0

    @property
    def octets_in(self) -> int:
        """How many content octets were passed to encode() so far."""
        return self._octets_in

    @property
    def octets_out(self) -> int:
        """How many octets encode() and end() have returned so far."""
        return self._octets_out

    @property
    def finished(self) -> bool:
        """True once end() has been called; encode() is then refused."""
        return self._finished

    def encode(self, chunk: _BytesLike) -> bytes:
        """Encode the next piece of content.

        Args:
            chunk: any number of octets (empty is fine); bytes are used as they
                are, a bytearray or memoryview is copied once.

        Returns:
            The octets to send for this chunk. They never include a trailing
            part of the end-of-content mark, whatever the chunk holds.

        Raises:
            RuntimeError: end() was already called.
            TypeError: chunk is not bytes-like (for example a str).
        """
        if self._finished:
            raise RuntimeError(f"{type(self).__name__}.encode() called after end()")
        if type(chunk) is bytes:
            data = chunk
        elif isinstance(chunk, bytes | bytearray | memoryview):
            data = bytes(chunk)
        else:
            raise TypeError(f"message content must be bytes-like, not {type(chunk).__name__}")
        size = len(data)
        self._octets_in += size
        start = 0
        if self._skip_lf and size:
            self._skip_lf = False
            if data[0] == _LF:
                start = 1
        if start == size:
            return b""
        if size - start <= _WINDOW:
            out = self._encode_window(data[start:] if start else data, self._at_line_start, True)
        else:
            out = self._encode_windows(data, start)
        last = data[-1]
        self._at_line_start = last in (_LF, _CR)
        self._skip_lf = last == _CR
        self._octets_out += len(out)
        return out

    def _encode_window(self, window: bytes, at_line_start: bool, final: bool) -> bytes:
        """The encoding of a window, or the window itself when nothing changes.

        Args:
            window: at least one octet, with no CRLF split at its end.
            at_line_start: whether the output so far ends a line.
            final: whether the window ends the chunk; only then may it end with
                a CR that an LF opening the next chunk completes.
        """
        stuff = self._STUFF_DOTS
        if b"\r" in window and _crlf_only(window, final=final):
            # The usual content: only dot-lines change, and a final CR gets its LF.
            out = b"\r\n..".join(window.split(b"\r\n.")) if stuff else window
            if final and window[-1] == _CR:
                out += b"\n"
        else:
            out = self._transform(window)
        if stuff and at_line_start and window[0] == _DOT:
            out = b"." + out
        return out

    def _encode_windows(self, data: bytes, start: int) -> bytes:
        """The encoding of data[start:], more than one window of it.

        What stays as it is goes into the output as views of data, so the one
        copy made of it is the final join.
        """
        size = len(data)
        stuff = self._STUFF_DOTS
        at_line_start = self._at_line_start
        view = memoryview(data)
        # The output is pieces followed by data[kept_from:pos].
        pieces: list[bytes | memoryview] = []
        kept_from = pos = start
        while pos < size:
            stop = pos + _WINDOW
            if stop >= size:
                stop = size
            else:
                line_end = data.find(b"\n", stop - 1, stop + _WINDOW)
                if line_end >= 0:
                    stop = line_end + 1
            window = data[pos:stop]
            final = stop == size
            if not (b"\r" in window and _crlf_only(window, final=final)):
                out = self._transform(window)
                if stuff and at_line_start and window[0] == _DOT:
                    pieces += (view[kept_from:pos], b".", out)
                    kept_from = stop
                elif out is not window:
                    pieces += (view[kept_from:pos], out)
                    kept_from = stop
            else:
                if stuff:
                    # Already CRLF: one search per dot-line, and a view up to it.
                    if at_line_start and window[0] == _DOT:
                        pieces += (view[kept_from:pos], b".")
                        kept_from = pos
                    dot_line = data.find(b"\r\n.", pos, stop)
                    stuffed = 0
                    while dot_line >= 0:
                        if stuffed == _DOT_LINES_SEARCHED:
                            rest = b"\r\n..".join(data[dot_line:stop].split(b"\r\n."))
                            pieces += (view[kept_from:dot_line], rest)
                            kept_from = stop
                            break
                        dot = dot_line + 2
                        pieces += (view[kept_from:dot], b".")
                        kept_from = dot
                        stuffed += 1
                        dot_line = data.find(b"\r\n.", dot, stop)
                if final and window[-1] == _CR:
                    pieces += (view[kept_from:size], b"\n")
                    kept_from = size
            at_line_start = window[-1] in (_LF, _CR)
            pos = stop
        if not pieces:
            return data[start:] if start else data
        pieces.append(view[kept_from:size])
        return b"".join(pieces)

    def _transform(self, window: bytes) -> bytes:
        """window with every line ending as CRLF and, when stuffing, its dot-lines stuffed.

        The dot at the start of the window is left to the caller.
        """
        if b"\r" in window:
            window = window.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        elif b"\n" not in window:
            return window
        if self._STUFF_DOTS:
            window = window.replace(b"\n.", b"\n..")
        return window.replace(b"\n", b"\r\n")

    def _finish(self) -> None:
        if self._finished:
            raise RuntimeError(f"{type(self).__name__}.end() called twice")
        self._finished = True


class DataEncoder(_LineEndingEncoder):
    """DATA content (RFC 5321 §4.5.2, §2.3.8), streamed in chunks of any size.

    Every lone CR and lone LF becomes CRLF and every line starting with "." is
    dot-stuffed, the first line included; end() adds the CRLF "." CRLF mark.
    The end-of-data mark can never appear earlier in the output, however the
    content is split into chunks and whatever it contains.

    Nothing is held back between calls: a CR that ends a chunk is sent as CRLF
    at once, and an LF that opens the next chunk is then taken as its second half.
    Once end() was called the encoder is spent: encode() and end() raise
    RuntimeError.

    Attributes:
        octets_in: content octets received by encode().
        octets_out: octets returned by encode() and end(), the mark included.
    """

    __slots__ = ()
    _STUFF_DOTS = True

    def end(self) -> bytes:
        """Finish the content.

        Returns:
            CRLF "." CRLF when the content did not end a line (a missing final
            line ending is added), else "." CRLF. Empty content gives "." CRLF:
            an empty message, not a message of one empty line.

        Raises:
            RuntimeError: end() was already called.
        """
        self._finish()
        out = b".\r\n" if self._at_line_start else b"\r\n.\r\n"
        self._octets_out += len(out)
        return out


class LineEndingNormalizer(_LineEndingEncoder):
    """BDAT content (RFC 3030) that is not BINARYMIME: lone CR and LF become CRLF.

    No dot-stuffing and no end mark: BDAT frames content by its length. As in
    DataEncoder nothing is held back between calls, and end() adds a final CRLF
    to content that does not end a line, so a message reaches the server the
    same whether it travels by DATA or by BDAT.
    """

    __slots__ = ()
    _STUFF_DOTS = False

    def end(self) -> bytes:
        """Finish the content.

        Returns:
            CRLF when the content is not empty and does not end a line, else
            b"" (so empty content stays empty: BDAT 0 LAST).

        Raises:
            RuntimeError: end() was already called.
        """
        self._finish()
        out = b"" if self._at_line_start else b"\r\n"
        self._octets_out += len(out)
        return out


def bdat_command(size: int, *, last: bool) -> bytes:
    """The BDAT command line for a chunk of ``size`` octets (RFC 3030 §2).

    Args:
        size: the exact number of octets that follow the command; 0 is legal
            (``BDAT 0 LAST`` ends a transaction whose content was already sent).
        last: whether this chunk ends the message.

    Returns:
        For example b"BDAT 123 LAST\\r\\n" or b"BDAT 123\\r\\n".

    Raises:
        InvalidInputError: size is not a non-negative int.
    """
    if type(size) is not int or size < 0:
        raise InvalidInputError(f"BDAT size must be a non-negative int, not {size!r}")
    return b"BDAT %d LAST\r\n" % size if last else b"BDAT %d\r\n" % size


def decode_data(wire: bytes) -> bytes:
    """What a server makes of DATA content: the inverse of DataEncoder.

    The content ends at the first line that holds only "."; the mark is
    stripped and one leading "." is removed from every other line that starts
    with one (RFC 5321 §4.5.2). Meant for tests, fuzzing and the tour.

    Args:
        wire: everything sent after the 354 reply, the end mark included.

    Returns:
        The content, each line with its CRLF (b"" for ".\\r\\n").

    Raises:
        ValueError: there is no end mark, or octets follow it.
    """
    # A virtual CRLF in front lets the first line match the same pattern as
    # every other one ("the first CRLF of the mark ends the previous line").
    framed = b"\r\n" + wire
    mark = framed.find(b"\r\n.\r\n")
    if mark < 0:
        raise ValueError("no end-of-data mark (CRLF . CRLF) in DATA content")
    if mark + 5 != len(framed):
        raise ValueError(
            f"{len(framed) - mark - 5} octets follow the end-of-data mark in DATA content"
        )
    return framed[: mark + 2].replace(b"\r\n.", b"\r\n")[2:]
