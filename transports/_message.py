# smtpbee/transports/_message
#
# What the transports send, made from the user's Python values: the envelope
# and bytes of an email.message.Message, and the pieces of a body.
#
# Theory of operation
# -------------------
#   * prepare_message() (in _message_bytes) makes the envelope and bytes of an
#     email message.
#   * body_source() turns any body into the BodyInfo the procedures plan with
#     and the pieces PullBody hands out: a bytes-like body goes whole in the
#     BodyInfo (no PullBody is asked for it), a binary file is read in
#     FILE_PIECE_SIZE pieces (its size known when it is a regular or seekable
#     file), any other iterable or async iterable of bytes is streamed as given.
#   * batch_source() makes the MailJobs of a batch (email messages or
#     (sender, recipients, body) tuples) and one stream of the bodies not held
#     whole, each ended by b"".
#
# Invariant: an empty piece never reaches PullBody from inside a body, since
# b"" is how a body ends there; only batch_source() puts it between bodies.
from __future__ import annotations

import email.message
import io
import os
import stat
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from typing import IO, Any, TypeAlias

from smtpbee._errors import InvalidInputError
from smtpbee._extensions import Extensions
from smtpbee._transaction import BDAT_CHUNK_SIZE, BodyInfo, MailJob
from smtpbee.transports._message_bytes import PreparedMessage, prepare_message

__all__ = [
    "FILE_PIECE_SIZE",
    "READ_SIZE",
    "AsyncBody",
    "BatchItem",
    "Body",
    "PreparedMessage",
    "batch_source",
    "body_source",
    "prepare_message",
]

READ_SIZE = 64 * 1024
"""Bytes asked of the socket per read."""

FILE_PIECE_SIZE = BDAT_CHUNK_SIZE
"""Bytes read from a file body at a time: one BDAT chunk, sent as read, never joined."""

Body: TypeAlias = bytes | bytearray | memoryview | IO[bytes] | Iterable[bytes]
"""A message body: bytes, a binary file, or an iterable of bytes (streamed)."""

AsyncBody: TypeAlias = Body | AsyncIterable[bytes]
"""What the async clients take as a body: also an async iterable of bytes."""

BatchItem: TypeAlias = email.message.Message | tuple[str, str | Sequence[str], Body]
"""One message of a batch: an email message, or (sender, recipients, body)."""


def _known_size(body: Any) -> int | None:
    try:
        mode = os.fstat(body.fileno()).st_mode
        if stat.S_ISREG(mode):
            return int(os.fstat(body.fileno()).st_size - body.tell())
    except (AttributeError, OSError, ValueError):
        pass
    try:
        if body.seekable():
            here = body.tell()
            end = body.seek(0, io.SEEK_END)
            body.seek(here)
            return int(end - here)
    except (AttributeError, OSError, ValueError):
        pass
    return None


def _file_pieces(body: IO[bytes]) -> Iterator[bytes]:
    while piece := body.read(FILE_PIECE_SIZE):
        yield bytes(piece)


def body_source(body: Any) -> tuple[BodyInfo, Iterator[bytes] | AsyncIterable[bytes]]:
    """The BodyInfo of a body and the pieces to hand to PullBody.

    Bytes-like bodies go whole in the BodyInfo (no pieces); a binary file is
    read in FILE_PIECE_SIZE pieces (its size known when it is a regular or
    seekable file); any other iterable (or, for the async transports, async
    iterable) of bytes is streamed as given.
    """
    if isinstance(body, bytes | bytearray | memoryview):
        # Handed over with the plan: the procedure asks no PullBody for it.
        return BodyInfo.whole(bytes(body)), iter(())
    if isinstance(body, str):
        raise InvalidInputError("the body must be bytes, not str: encode it first")
    if hasattr(body, "read"):
        return BodyInfo(size=_known_size(body)), _file_pieces(body)
    if isinstance(body, AsyncIterable):
        return BodyInfo(), _non_empty_async(body)
    if isinstance(body, Iterable):
        return BodyInfo(), (bytes(piece) for piece in body if piece)
    raise InvalidInputError(f"cannot send a body of type {type(body).__name__}")


async def _non_empty_async(pieces: AsyncIterable[Any]) -> AsyncIterator[bytes]:
    # To PullBody b"" means the end: an empty piece must not cut a body short.
    async for piece in pieces:
        if piece:
            yield bytes(piece)


def batch_source(
    items: Iterable[BatchItem], server: Extensions
) -> tuple[list[MailJob], Iterator[bytes]]:
    """The MailJobs of a batch and one stream of the bodies not held whole, each ended by b"".

    Raises:
        InvalidInputError: an item that is neither a message nor a
            (sender, recipients, body) tuple, or an async body.
    """
    mail_jobs: list[MailJob] = []
    sources: list[Iterator[bytes]] = []
    for item in items:
        body: Body
        if isinstance(item, email.message.Message):
            prepared = prepare_message(item, sender=None, recipients=None, server=server)
            sender, rcpts, body = prepared.sender, prepared.recipients, prepared.data
            smtputf8 = prepared.smtputf8
        elif isinstance(item, tuple) and len(item) == 3:
            sender, recipients, body = item
            rcpts = [recipients] if isinstance(recipients, str) else list(recipients)
            smtputf8 = False
        else:
            raise InvalidInputError(
                "a batch item is an email message or a (sender, recipients, body) tuple,"
                f" not {type(item).__name__}"
            )
        info, pieces = body_source(body)
        if not isinstance(pieces, Iterator):
            raise InvalidInputError("a batch takes bytes, files or iterables of bytes as bodies")
        mail_jobs.append(MailJob(sender=sender, recipients=rcpts, body=info, smtputf8=smtputf8))
        if info.content is None:
            sources.append(pieces)

    def bodies() -> Iterator[bytes]:
        for pieces in sources:
            yield from pieces
            yield b""

    return mail_jobs, bodies()
