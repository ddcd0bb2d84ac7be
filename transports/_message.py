# smtpbee/transports/_message
#
# What the transports send, made from the user's Python values: the envelope
# and bytes of an email.message.Message, and the pieces of a body.
#
# Theory of operation
# -------------------
#   * prepare_message() follows smtplib.send_message: the sender is Sender or
#     From, the recipients To, Cc and Bcc, unless the latest Resent-* block
#     (RFC 5322 §3.6.6: the topmost run of Resent-* fields) replaces them. Bcc
#     and Resent-Bcc are removed from a copy before it is flattened with CRLF
#     line ends; the user's message is never changed. The message goes as
#     SMTPUTF8 only when it has to: a non-ASCII address, or non-ASCII headers
#     that the server can take as UTF-8 (RFC 2047 encoding otherwise): the
#     core decides (wants_smtputf8), this module only serialises.
#   * body_source() turns any body into the BodyInfo the procedures plan with
#     and the pieces PullBody hands out: a bytes-like body is known whole, a
#     binary file is read in READ_SIZE pieces (its size known when it is a
#     regular or seekable file), any other iterable or async iterable of bytes
#     is streamed as given.
#   * batch_source() makes the MailJobs of a batch (email messages or
#     (sender, recipients, body) tuples) and one stream of their bodies, each
#     ended by b"".
#
# Invariant: an empty piece never reaches PullBody from inside a body, since
# b"" is how a body ends there; only batch_source() puts it between bodies.
from __future__ import annotations

import copy
import email.message
import io
import os
import stat
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, TypeAlias

from smtpbee._errors import InvalidInputError
from smtpbee._extensions import Extensions
from smtpbee._transaction import BodyInfo, MailJob, wants_smtputf8

__all__ = [
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
"""Bytes asked of the socket per read, and per piece of a file body."""

Body: TypeAlias = bytes | bytearray | memoryview | IO[bytes] | Iterable[bytes]
"""A message body: bytes, a binary file, or an iterable of bytes (streamed)."""

AsyncBody: TypeAlias = Body | AsyncIterable[bytes]
"""What the async clients take as a body: also an async iterable of bytes."""

BatchItem: TypeAlias = email.message.Message | tuple[str, str | Sequence[str], Body]
"""One message of a batch: an email message, or (sender, recipients, body)."""


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """An email message as an envelope and the bytes to send."""

    sender: str
    recipients: list[str]
    data: bytes
    smtputf8: bool


def _resent_block(msg: email.message.Message) -> dict[str, list[str]] | None:
    # RFC 5322 §3.6.6: each resending prepends a block, so the topmost run of
    # Resent-* fields is the latest; a field seen twice starts an older block.
    block: dict[str, list[str]] = {}
    for name, value in msg.items():
        key = name.lower()
        if not key.startswith("resent-"):
            if block:
                break
            continue
        if key in block:
            break
        block[key] = [str(value)]
    return block or None


def _addresses(values: Iterable[str]) -> list[str]:
    from email.utils import getaddresses

    return [address for _, address in getaddresses(list(values)) if address]


def prepare_message(
    msg: email.message.Message,
    *,
    sender: str | None,
    recipients: Sequence[str] | None,
    server: Extensions,
) -> PreparedMessage:
    """The envelope and bytes of a message, as smtplib.send_message would send them.

    The sender is Sender or From, the recipients To, Cc and Bcc; the latest
    Resent-* block replaces them when present. Bcc and Resent-Bcc are not sent.
    Non-ASCII headers go as UTF-8 when the server offers SMTPUTF8 (RFC 2047
    encoded otherwise); a non-ASCII address needs SMTPUTF8.
    """
    resent = _resent_block(msg)

    def values(name: str) -> list[str]:
        if resent is None:
            return [str(v) for v in msg.get_all(name, [])]
        return resent.get(f"resent-{name}", [])

    if sender is None:
        found = _addresses(values("sender") or values("from"))
        if not found:
            raise InvalidInputError("the message has no From or Sender: pass sender=")
        sender = found[0]
    if recipients is None:
        recipients = _addresses([*values("to"), *values("cc"), *values("bcc")])
    stripped = copy.copy(msg)
    del stripped["Bcc"]
    del stripped["Resent-Bcc"]
    international = not all(a.isascii() for a in (sender, *recipients))
    headers_8bit = any(not str(v).isascii() for v in stripped.values())
    utf8 = wants_smtputf8(server, addresses=international, headers=headers_8bit)
    buffer = io.BytesIO()
    # Loaded here, not at import: a send of raw bytes never needs them.
    import email.generator
    import email.policy

    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    generator: email.generator.BytesGenerator[Any]
    generator = email.generator.BytesGenerator(buffer, policy=policy)
    generator.flatten(stripped, linesep="\r\n")
    data = buffer.getvalue()
    header_end = data.find(b"\r\n\r\n")
    smtputf8 = utf8 and not data[: header_end if header_end >= 0 else len(data)].isascii()
    return PreparedMessage(sender, list(recipients), data, smtputf8 or international)


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
    while piece := body.read(READ_SIZE):
        yield bytes(piece)


def body_source(body: Any) -> tuple[BodyInfo, Iterator[bytes] | AsyncIterable[bytes]]:
    """The BodyInfo of a body and the pieces to hand to PullBody.

    Bytes-like bodies are known whole; a binary file is read in READ_SIZE
    pieces (its size known when it is a regular or seekable file); any other
    iterable (or, for the async transports, async iterable) of bytes is
    streamed as given.
    """
    if isinstance(body, bytes | bytearray | memoryview):
        data = bytes(body)
        return BodyInfo.of_bytes(data), iter((data,) if data else ())
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
    """The MailJobs of a batch and one stream of their bodies, each ended by b"".

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
        sources.append(pieces)

    def bodies() -> Iterator[bytes]:
        for pieces in sources:
            yield from pieces
            yield b""

    return mail_jobs, bodies()
