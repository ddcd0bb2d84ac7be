# smtpbee/transports/_message_bytes
#
# The envelope and bytes of an email.message.Message, as smtplib.send_message
# would send them, read from its headers in one pass.
#
# Theory of operation
# -------------------
#   * The envelope: the sender is Sender or From, the recipients To, Cc and
#     Bcc, unless the latest Resent-* block (RFC 5322 §3.6.6: the topmost run
#     of Resent-* fields) replaces them. Bcc and Resent-Bcc are removed from a
#     copy before it is flattened with CRLF line ends; the user's message is
#     never changed.
#   * SMTPUTF8 only when it has to: a non-ASCII address, or non-ASCII headers
#     that the server can take as UTF-8 (RFC 2047 encoding otherwise): the core
#     decides (wants_smtputf8), this module only serialises. The flag follows
#     the bytes: headers that came out ASCII need no SMTPUTF8.
#   * Cost. Under email.policy.default every read of a header that came from
#     parsed bytes parses it again (an address list costs tens of µs), and the
#     generator refolds every header object through its parse tree. So the
#     headers are read raw, once (raw_items); a value is parsed at most once
#     (ParseOnce, also given to the copy the generator reads Content-Type and
#     Content-Transfer-Encoding from several times); a value that cannot decode
#     to non-ASCII is not parsed to find out; and a header object whose parse
#     tree fits on one line is written as that line, which is what its fold
#     gives. Everything else goes the stdlib's way, so the bytes are the ones
#     email.policy.SMTP (or SMTPUTF8) makes.
from __future__ import annotations

import copy
import email.message
import functools
import io
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smtpbee._errors import InvalidInputError
from smtpbee._extensions import Extensions
from smtpbee._transaction import wants_smtputf8

if TYPE_CHECKING:
    import email.policy

__all__ = ["PreparedMessage", "prepare_message"]

_Headers = list[tuple[str, Any]]
_BCC_FIELDS = frozenset({"bcc", "resent-bcc"})


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """An email message as an envelope and the bytes to send."""

    sender: str
    recipients: list[str]
    data: bytes
    smtputf8: bool


class ParseOnce:
    """A header factory that parses each (name, value) once, for one message."""

    def __init__(self, factory: Callable[[str, str], Any]) -> None:
        self._factory = factory
        self._parsed: dict[tuple[str, str], Any] = {}

    def __call__(self, name: str, value: str) -> Any:
        key = (name, value)
        parsed = self._parsed.get(key)
        if parsed is None:
            parsed = self._parsed[key] = self._factory(name, value)
        return parsed


def _one_line(value: Any, policy: email.policy.EmailPolicy[Any]) -> bytes | None:
    """The header as value.fold(policy=policy) writes it, when that is one line.

    A fold starts with the name, ": " and the parse tree's text, and only
    encodes or wraps what does not fit the line or the charset (or is a bare
    phrase with specials, or holds a line break): None says it might.
    """
    tree = getattr(value, "_parse_tree", None)
    if tree is None or tree.token_type in ("ptext", "mime-parameters"):
        return None
    text = str(tree)
    line = f"{value.name}: {text}" if tree else f"{value.name}:"
    if len(line) > (policy.max_line_length or sys.maxsize) or "\r" in text or "\n" in text:
        return None
    try:
        return (line + policy.linesep).encode("utf-8" if policy.utf8 else "ascii")
    except UnicodeEncodeError:
        return None


@functools.cache
def _generator_policies() -> tuple[email.policy.EmailPolicy[Any], email.policy.EmailPolicy[Any]]:
    """email.policy.SMTP and SMTPUTF8, minus the refold of a header that fits one line."""
    # Loaded here, not at import: a send of raw bytes never needs them.
    import email.headerregistry
    import email.policy

    stdlib_fold = email.headerregistry.BaseHeader.fold

    class OneLinePolicy(email.policy.EmailPolicy):
        def fold_binary(self, name: str, value: Any) -> bytes:
            if hasattr(value, "name") and type(value).fold is stdlib_fold:
                line = _one_line(value, self)
                if line is not None:
                    return line
            return super().fold_binary(name, value)

    smtp = OneLinePolicy(linesep="\r\n")
    return smtp, smtp.clone(utf8=True)


def _resent_block(headers: _Headers) -> dict[str, tuple[str, Any]] | None:
    # RFC 5322 §3.6.6: each resending prepends a block, so the topmost run of
    # Resent-* fields is the latest; a field seen twice starts an older block.
    block: dict[str, tuple[str, Any]] = {}
    for name, value in headers:
        key = name.lower()
        if not key.startswith("resent-"):
            if block:
                break
            continue
        if key in block:
            break
        block[key] = (name, value)
    return block or None


def _addresses(values: Iterable[str]) -> list[str]:
    from email.utils import getaddresses

    return [address for _, address in getaddresses(list(values)) if address]


def _cannot_decode_to_non_ascii(value: Any) -> bool:
    # Only an encoded word (RFC 2047) or an RFC 2231 parameter turns ASCII
    # into non-ASCII text, and each needs "=?" or "*".
    return isinstance(value, str) and value.isascii() and "=?" not in value and "*" not in value


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
    policy: Any = msg.policy
    factory = getattr(policy, "header_factory", None)
    if factory is not None:  # an EmailPolicy: reading a header parses it
        policy = policy.clone(header_factory=ParseOnce(factory))

    def text(name: str, value: Any) -> str:
        return str(policy.header_fetch_parse(name, value))

    headers: _Headers = list(msg.raw_items())
    resent = _resent_block(headers)

    def values(field: str) -> list[str]:
        if resent is None:
            return [text(name, value) for name, value in headers if name.lower() == field]
        found = resent.get(f"resent-{field}")
        return [] if found is None else [text(*found)]

    if sender is None:
        found = _addresses(values("sender") or values("from"))
        if not found:
            raise InvalidInputError("the message has no From or Sender: pass sender=")
        sender = found[0]
    if recipients is None:
        recipients = _addresses([*values("to"), *values("cc"), *values("bcc")])
    stripped = copy.copy(msg)
    if any(name.lower() in _BCC_FIELDS for name, _ in headers):
        del stripped["Bcc"]
        del stripped["Resent-Bcc"]
    international = not all(a.isascii() for a in (sender, *recipients))
    headers_8bit = not all(
        _cannot_decode_to_non_ascii(value) or text(name, value).isascii()
        for name, value in stripped.raw_items()
    )
    utf8 = wants_smtputf8(server, addresses=international, headers=headers_8bit)
    buffer = io.BytesIO()
    import email.generator

    smtp, smtputf8_policy = _generator_policies()
    writing = smtputf8_policy if utf8 else smtp
    # The generator reads headers through its own policy, not the message's.
    writing = writing.clone(header_factory=ParseOnce(writing.header_factory))
    generator: email.generator.BytesGenerator[Any]
    generator = email.generator.BytesGenerator(buffer, policy=writing)
    generator.flatten(stripped)  # the policy's line ends are CRLF
    data = buffer.getvalue()
    header_end = data.find(b"\r\n\r\n")
    smtputf8 = utf8 and not data[: header_end if header_end >= 0 else len(data)].isascii()
    return PreparedMessage(sender, list(recipients), data, smtputf8 or international)
