"""Minimal pipelined SMTP clients in pure Python: the floor for the benchmarks.

Each sends messages on one connection with nothing but what a correct pipelined client
cannot do without: commands built with f-strings, the server's bytes split on LF with
the code of each reply's last line taken by ``int``, every code checked against the
exact success code RFC 5321 (and RFC 3030 for BDAT) lists for its command, and, for
DATA, dot-stuffing with ``bytes.replace`` (a dot after every LF; the body's line ends
go as given, CRLF expected). PIPELINING (and, for BDAT, CHUNKING) must be in the EHLO
reply; no other extension, no limits, no TLS, no timeouts but the blocking socket's.
Whatever a full client does on top of this is what its figure shows beside these.

Two variants, each with three I/O styles (blocking sockets, asyncio streams, trio):

* pipelined DATA: ``MAIL``, every ``RCPT`` and ``DATA`` in one write; once their replies
  are in (the 354 last), the stuffed content and the terminator; then the final reply.
  Two round trips per message.
* PIPELINING+CHUNKING: ``MAIL``, every ``RCPT``, ``BDAT <size> LAST`` and the content in
  one write; then all their replies. One round trip per message. A body read from a
  file goes as BDAT chunks of ``chunk_size`` bytes, one chunk in flight while the
  reply to the one before is read.

The protocol is written once, as a generator (``session``) that yields what to write
(bytes) or how many replies to wait for (an int) and is sent the codes that came; each
I/O style is a short loop that serves it. A reply other than the exact success code
raises ``RefusedError``: a refused message is an error, never a figure.

Usage::

    messages = [("a@x.test", ["b@x.test"], b"Subject: hi\\r\\n\\r\\nHello.\\r\\n")] * 100
    send_blocking(port, messages, chunking=False)           # returns 100
    await send_asyncio(port, messages, chunking=True)
    trio.run(functools.partial(send_trio, port, messages, chunking=True))

Nothing here is a test, and nothing here is smtpbee.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import BinaryIO, TypeAlias

__all__ = [
    "CHUNK_SIZE",
    "Body",
    "Message",
    "RefusedError",
    "Replies",
    "send_asyncio",
    "send_blocking",
    "send_trio",
    "session",
]

Body: TypeAlias = bytes | BinaryIO
"""The message: bytes in memory, or a binary file read ``chunk_size`` bytes at a time."""
Message: TypeAlias = tuple[str, Sequence[str], Body]
"""``(sender, recipients, body)``; a file body is read from where it stands."""
Request: TypeAlias = bytes | int
"""What ``session`` asks for: bytes to write, or the number of replies to wait for."""

CHUNK_SIZE = 1 << 20
READ_SIZE = 1 << 16
# Below this a command and the content it introduces are joined into one write (one
# segment); above it they go as two writes rather than a copy of the content.
JOIN_BELOW = 1 << 16


class RefusedError(Exception):
    """A reply other than the exact success code the command has; the session is over."""


class Replies:
    """Reply codes out of the server's bytes: split on LF, ``int`` of each last line."""

    __slots__ = ("buffer", "codes", "lines", "multiline")

    def __init__(self) -> None:
        self.buffer = b""
        self.codes: list[int] = []
        self.lines: list[bytes] = []  # the continuation lines of the reply being read
        self.multiline: list[bytes] = []  # every line of the last multi-line reply (EHLO's)

    def feed(self, data: bytes) -> None:
        if not data:
            raise ConnectionError("the server closed the connection")
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        for line in lines:
            if line[3:4] == b"-":
                self.lines.append(line)
            else:
                self.codes.append(int(line[:3]))
                if self.lines:
                    self.multiline, self.lines = [*self.lines, line], []

    def take(self, count: int) -> list[int]:
        """The first ``count`` codes that came; any later ones stay for the next take."""
        codes = self.codes
        if len(codes) == count:
            self.codes = []
            return codes
        self.codes = codes[count:]
        return codes[:count]


def _refused(what: str, codes: list[int]) -> RefusedError:
    return RefusedError(f"{what}: {codes}")


def _check_envelope(codes: list[int], recipients: int, then: int) -> None:
    # MAIL's 250, each RCPT's 250 or 251, then every later reply is `then` (DATA's 354,
    # or BDAT's 250 for each chunk).
    if codes[0] != 250:
        raise _refused("MAIL refused", codes)
    for code in codes[1 : recipients + 1]:
        if code != 250 and code != 251:
            raise _refused("a recipient refused", codes)
    for code in codes[recipients + 1 :]:
        if code != then:
            raise _refused("refused", codes)


def _envelope(sender: str, recipients: Sequence[str]) -> str:
    return f"MAIL FROM:<{sender}>\r\n" + "".join(f"RCPT TO:<{r}>\r\n" for r in recipients)


def session(
    messages: Iterable[Message],
    replies: Replies,
    *,
    chunking: bool,
    chunk_size: int = CHUNK_SIZE,
    helo: str = "client.test",
) -> Generator[Request, list[int], int]:
    """The whole session as requests: greeting, EHLO, each message, QUIT.

    Yields bytes to write or the number of replies to read; is sent the list of their
    codes (for bytes, an empty list), which the I/O loop reads with ``replies``.
    Returns the number of messages accepted.
    """
    if (yield 1) != [220]:
        raise RefusedError("no 220 greeting")
    yield f"EHLO {helo}\r\n".encode("ascii")
    codes = yield 1
    if codes != [250]:
        raise _refused("EHLO", codes)
    keywords = {line[4:].split(b" ", 1)[0].strip().upper() for line in replies.multiline}
    wanted = {b"PIPELINING", b"CHUNKING"} if chunking else {b"PIPELINING"}
    if not wanted <= keywords:
        raise RefusedError(f"the server does not offer {b' and '.join(sorted(wanted)).decode()}")
    sent = 0
    for sender, recipients, body in messages:
        if replies.codes:  # nothing is unanswered between two messages
            raise RefusedError(f"replies nobody asked for: {replies.codes}")
        envelope = _envelope(sender, recipients)
        if not isinstance(body, bytes):
            if chunking:
                yield from _bdat_file(envelope.encode(), len(recipients), body, chunk_size)
            else:
                yield from _data(envelope, len(recipients), _stuffed_file(body, chunk_size))
        elif chunking:
            head = (envelope + f"BDAT {len(body)} LAST\r\n").encode()
            if len(body) < JOIN_BELOW:
                yield head + body
            else:
                yield head
                yield body
            _check_envelope((yield len(recipients) + 2), len(recipients), 250)
        else:
            yield from _data(envelope, len(recipients), _stuffed_bytes(body))
        sent += 1
    yield b"QUIT\r\n"
    if (yield 1) != [221]:
        raise RefusedError("QUIT not answered with 221")
    return sent


def _data(
    envelope: str, recipients: int, content: Iterable[bytes]
) -> Generator[Request, list[int], None]:
    yield (envelope + "DATA\r\n").encode()
    _check_envelope((yield recipients + 2), recipients, 354)
    # Not `yield from`: that would send the loop's [] on into a plain iterator.
    for piece in content:  # noqa: UP028
        yield piece
    codes = yield 1
    if codes[0] != 250:
        raise _refused("content refused", codes)


def _stuffed_bytes(body: bytes) -> Iterator[bytes]:
    stuffed = body.replace(b"\n.", b"\n..")
    if stuffed[:1] == b".":
        stuffed = b"." + stuffed
    end = b".\r\n" if not body or body.endswith(b"\r\n") else b"\r\n.\r\n"
    if len(stuffed) < JOIN_BELOW:
        yield stuffed + end
    else:
        yield stuffed
        yield end


def _stuffed_file(body: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    tail = b"\r\n"  # the last two bytes so far: the start counts as a line start
    while chunk := body.read(chunk_size):
        stuffed = chunk.replace(b"\n.", b"\n..")
        if chunk[:1] == b"." and tail[-1:] == b"\n":
            stuffed = b"." + stuffed
        tail = (tail + chunk[-2:])[-2:]
        yield stuffed
    yield b".\r\n" if tail == b"\r\n" else b"\r\n.\r\n"


def _bdat_file(
    envelope: bytes, recipients: int, body: BinaryIO, chunk_size: int
) -> Generator[Request, list[int], None]:
    # One chunk in flight: after writing chunk k, read every reply due but chunk k's
    # (the envelope's with chunk 0, chunk k-1's after).
    head, due, first = envelope, recipients + 1, True
    chunk = body.read(chunk_size)
    while True:
        following = body.read(chunk_size)
        last = not following
        head += f"BDAT {len(chunk)}{' LAST' if last else ''}\r\n".encode()
        if len(chunk) < JOIN_BELOW:
            yield head + chunk
        else:
            yield head
            yield chunk
        due += 1
        if last:
            break
        _check_chunks((yield due - 1), recipients if first else None)
        head, due, first, chunk = b"", 1, False, following
    _check_chunks((yield due), recipients if first else None)


def _check_chunks(codes: list[int], recipients: int | None) -> None:
    # With the envelope's replies first (recipients given), or chunks' replies only.
    if recipients is not None:
        _check_envelope(codes, recipients, 250)
    elif any(code != 250 for code in codes):
        raise _refused("a chunk refused", codes)


# -- the I/O loops ---------------------------------------------------------------------


def send_blocking(
    port: int,
    messages: Iterable[Message],
    *,
    chunking: bool,
    host: str = "127.0.0.1",
    chunk_size: int = CHUNK_SIZE,
    timeout: float = 60.0,
) -> int:
    """Send the messages on one blocking socket; the number sent."""
    replies = Replies()
    proc = session(messages, replies, chunking=chunking, chunk_size=chunk_size)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sendall, recv, feed = sock.sendall, sock.recv, replies.feed
            request = next(proc)
            while True:
                if isinstance(request, int):
                    while len(replies.codes) < request:
                        feed(recv(READ_SIZE))
                    request = proc.send(replies.take(request))
                else:
                    sendall(request)
                    request = proc.send([])
    except StopIteration as done:
        sent: int = done.value
        return sent


async def send_asyncio(
    port: int,
    messages: Iterable[Message],
    *,
    chunking: bool,
    host: str = "127.0.0.1",
    chunk_size: int = CHUNK_SIZE,
) -> int:
    """Send the messages on one asyncio stream (TCP_NODELAY is asyncio's default)."""
    replies = Replies()
    proc = session(messages, replies, chunking=chunking, chunk_size=chunk_size)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        read, write, drain, feed = reader.read, writer.write, writer.drain, replies.feed
        request = next(proc)
        while True:
            if isinstance(request, int):
                while len(replies.codes) < request:
                    feed(await read(READ_SIZE))
                request = proc.send(replies.take(request))
            else:
                write(request)
                await drain()
                request = proc.send([])
    except StopIteration as done:
        sent: int = done.value
        return sent
    finally:
        writer.close()
        await writer.wait_closed()


async def send_trio(
    port: int,
    messages: Iterable[Message],
    *,
    chunking: bool,
    host: str = "127.0.0.1",
    chunk_size: int = CHUNK_SIZE,
) -> int:
    """Send the messages on one trio stream (TCP_NODELAY is trio's default)."""
    import trio

    replies = Replies()
    proc = session(messages, replies, chunking=chunking, chunk_size=chunk_size)
    stream = await trio.open_tcp_stream(host, port)
    try:
        send_all, receive_some, feed = stream.send_all, stream.receive_some, replies.feed
        request = next(proc)
        while True:
            if isinstance(request, int):
                while len(replies.codes) < request:
                    feed(await receive_some(READ_SIZE))
                request = proc.send(replies.take(request))
            else:
                await send_all(request)
                request = proc.send([])
    except StopIteration as done:
        sent: int = done.value
        return sent
    finally:
        await stream.aclose()
