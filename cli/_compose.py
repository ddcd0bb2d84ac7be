# smtpbee/cli/_compose
#
# The message `smtpbee send` sends, shaped the way swaks users expect.
#
# Theory of operation
# -------------------
# Three sources, one at a time: --message (a prepared message, sent as it is),
# --data (a template: %TOKEN%s replaced by the envelope, see TOKENS) and
# composing (--subject/--body/--attach/--header/--add-header: a default
# message with Date, Message-ID, From, To, Subject "test <date>" and a body
# naming smtpbee, whatever is not given). Then --header (replace every field
# of that name, in the place of the first one, or add it) and --add-header
# (always add) edit the header section.
#
# The header section of a file is parsed with the email package and written
# back field by field with the policy's own folding: fields nobody touched come
# out as they went in (their source is kept unless a line is over 78), and the
# body's bytes are never parsed or rewritten.
#
# Invariant: a header name or value holding CR, LF or NUL is bad input (exit
# 65) before anything is sent; a --header without "Name:" is a usage mistake (64).
from __future__ import annotations

import argparse
import datetime
import email.policy
import email.utils
import mimetypes
import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import EmailPolicy
from pathlib import Path
from typing import Any

from smtpbee import __version__

from ._output import InputError, UsageError

__all__ = [
    "DEFAULT_BODY",
    "TOKENS",
    "Shaping",
    "edit_headers",
    "message_bytes",
    "parse_header",
    "read_file",
    "substitute",
]

DEFAULT_BODY = f"This is a test message sent with smtpbee {__version__}.\n"
"""The body of a composed message when --body is not given."""

TOKENS = {
    "FROM_ADDRESS": "the envelope sender (empty for the null sender)",
    "TO_ADDRESS": "the envelope recipients, comma-separated",
    "DATE": "the date and time, as in a Date header",
    "MESSAGEID": "a new Message-ID, without its angle brackets (write <%MESSAGEID%>)",
    "SUBJECT": '--subject, or "test <date>"',
    "BODY": "--body, or the default body",
    "HELO": "--helo, or the local host name",
    "SMTPBEE_VERSION": "smtpbee's version",
}
"""The %TOKEN%s --data replaces; any other %WORD% is left as it is."""

_TOKEN = re.compile(rb"%([A-Z_]+)%")
# RFC 5322 ftext: printable US-ASCII except the colon.
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_FORBIDDEN = ("\r", "\n", "\0")


def read_file(path: str, what: str) -> bytes:
    """A file's bytes (``-``: stdin); InputError (exit 65) if it cannot be read."""
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{what} {path}: {exc.strerror or exc}") from None


def parse_header(text: str, option: str) -> tuple[str, str]:
    """``"Name: value"`` -> (name, value); CR/LF/NUL is exit 65, no "Name:" exit 64."""
    if any(c in text for c in _FORBIDDEN):
        raise InputError(f"{option} {text!r}: a header may not hold CR, LF or NUL")
    name, colon, value = text.partition(":")
    if not colon or not _FIELD_NAME.fullmatch(name):
        raise UsageError(
            f'{option} {text!r}: expected "Name: value" (a name of printable ASCII,'
            " no space or colon)"
        )
    return name, value.strip(" \t")


@dataclass(frozen=True, slots=True)
class Shaping:
    """What shapes the message: the envelope, the names and the header edits."""

    sender: str
    recipients: Sequence[str]
    helo: str | None
    subject: str | None
    body: str | None
    attach: Sequence[str]
    replace: Sequence[tuple[str, str]]
    add: Sequence[tuple[str, str]]
    now: datetime.datetime

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Shaping:
        if args.subject is not None and any(c in args.subject for c in _FORBIDDEN):
            raise InputError("--subject may not hold CR, LF or NUL")
        return cls(
            sender=args.sender,
            recipients=list(args.recipients),
            helo=args.helo,
            subject=args.subject,
            body=args.body,
            attach=list(args.attach),
            replace=[parse_header(h, "--header") for h in args.header],
            add=[parse_header(h, "--add-header") for h in args.add_header],
            now=datetime.datetime.now(datetime.UTC).astimezone(),
        )

    @property
    def date(self) -> str:
        return email.utils.format_datetime(self.now)

    @property
    def smtputf8(self) -> bool:
        return not all(a.isascii() for a in (self.sender, *self.recipients))

    def message_id(self) -> str:
        """A new ``<...@domain>``: the domain is --helo, the sender's, or this host's name."""
        sender_domain = self.sender.rpartition("@")[2].strip("<>") if "@" in self.sender else ""
        for domain in (self.helo, sender_domain, socket.gethostname()):
            if domain and (_DOT_ATOM.fullmatch(domain) or domain.startswith("[")):
                return email.utils.make_msgid(domain=domain)
        return email.utils.make_msgid(domain="smtpbee.invalid")

    def tokens(self) -> dict[str, str]:
        return {
            "FROM_ADDRESS": "" if self.sender == "<>" else self.sender,
            "TO_ADDRESS": ", ".join(self.recipients),
            "DATE": self.date,
            "MESSAGEID": self.message_id().strip("<>"),
            "SUBJECT": self.subject if self.subject is not None else f"test {self.date}",
            "BODY": self.body if self.body is not None else DEFAULT_BODY,
            "HELO": self.helo or socket.gethostname(),
            "SMTPBEE_VERSION": __version__,
        }


def substitute(template: bytes, tokens: Mapping[str, str]) -> bytes:
    """Replace each ``%NAME%`` of ``tokens`` (UTF-8); other ``%WORD%``s stay as they are."""

    def value(match: re.Match[bytes]) -> bytes:
        known = tokens.get(match.group(1).decode("ascii"))
        return match.group(0) if known is None else known.encode("utf-8")

    return _TOKEN.sub(value, template)


def _header_value(policy: EmailPolicy[Any], name: str, value: str) -> Any:
    # ASCII is kept as the user wrote it; anything else becomes a header object,
    # which the policy folds (RFC 2047 encoded words unless the policy is UTF-8).
    if value.isascii():
        return value
    try:
        return policy.header_store_parse(name, value)[1]
    except (ValueError, TypeError) as exc:
        raise InputError(f"header {name}: {exc}") from None


def edit_headers(
    msg: Message[Any, Any],
    policy: EmailPolicy[Any],
    replace: Sequence[tuple[str, str]],
    add: Sequence[tuple[str, str]],
) -> None:
    """--header: every field of that name goes, the new one takes the first's place
    (or comes last); --add-header: one more field, even of a name already there."""
    fields: list[tuple[str, Any]] = list(msg.raw_items())
    for name, value in replace:
        new = (name, _header_value(policy, name, value))
        same = [i for i, (n, _) in enumerate(fields) if n.lower() == name.lower()]
        if same:
            fields[same[0]] = new
            fields = [f for i, f in enumerate(fields) if i not in same[1:]]
        else:
            fields.append(new)
    fields += [(name, _header_value(policy, name, value)) for name, value in add]
    for name in {n.lower() for n in msg}:
        del msg[name]
    for name, value in fields:
        msg.set_raw(name, value)


def _split(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(header section, line ending, body): the body's bytes are not touched."""
    if data.startswith((b"\r\n", b"\n")):
        eol = b"\r\n" if data.startswith(b"\r\n") else b"\n"
        return b"", eol, data[len(eol) :]
    ends = [(i, sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := data.find(sep)) >= 0]
    if not ends:
        eol = b"\n" if b"\n" in data and b"\r\n" not in data else b"\r\n"
        head = data if data.endswith(b"\n") or not data else data + eol
        return head, eol, b""
    index, sep = min(ends)
    eol = sep[: len(sep) // 2]
    return data[: index + len(eol)], eol, data[index + len(sep) :]


def _edit_message_bytes(
    data: bytes, replace: Sequence[tuple[str, str]], add: Sequence[tuple[str, str]]
) -> bytes:
    head, eol, body = _split(data)
    policy = email.policy.SMTP.clone(linesep=eol.decode("ascii"))
    msg = BytesParser(policy=policy).parsebytes(head, headersonly=True)
    if msg.get_payload() or msg.get_unixfrom():
        raise InputError(
            "--header/--add-header: the message's header section holds a line"
            " that is not a header field"
        )
    edit_headers(msg, policy, replace, add)
    fields = b"".join(policy.fold_binary(name, value) for name, value in msg.raw_items())
    return fields + eol + body


def compose(shape: Shaping) -> bytes:
    """The default message, with what --subject/--body/--attach give, and the edits."""
    tokens = shape.tokens()
    msg = EmailMessage()
    try:
        if shape.sender not in ("", "<>"):
            msg["From"] = shape.sender
        msg["To"] = tokens["TO_ADDRESS"]
        msg["Subject"] = tokens["SUBJECT"]
        msg["Date"] = tokens["DATE"]
        msg["Message-ID"] = f"<{tokens['MESSAGEID']}>"
        msg["X-Mailer"] = f"smtpbee {__version__}"
    except (ValueError, TypeError) as exc:
        raise InputError(f"cannot build the message headers: {exc}") from None
    text = tokens["BODY"]
    if text and not text.endswith("\n"):
        text += "\n"
    # Quoted-printable keeps non-ASCII text 7-bit: no need for 8BITMIME.
    msg.set_content(text, cte=None if text.isascii() else "quoted-printable")
    for path in shape.attach:
        content = read_file(path, "--attach")
        kind, encoding = mimetypes.guess_type(path)
        if kind is None or encoding is not None:
            kind = "application/octet-stream"
        maintype, subtype = kind.split("/", 1)
        msg.add_attachment(
            content, maintype=maintype, subtype=subtype, filename=os.path.basename(path)
        )
    policy = email.policy.SMTPUTF8 if shape.smtputf8 else email.policy.SMTP
    edit_headers(msg, policy, shape.replace, shape.add)
    return msg.as_bytes(policy=policy)


def message_bytes(args: argparse.Namespace) -> bytes:
    """The message to send: --message as it is, --data with its tokens, or composed."""
    shape = Shaping.from_args(args)
    if args.message is None and args.data is None:
        return compose(shape)
    if args.message is not None:
        data = read_file(args.message, "--message")
    else:
        data = substitute(read_file(args.data, "--data"), shape.tokens())
    if shape.replace or shape.add:
        data = _edit_message_bytes(data, shape.replace, shape.add)
    return data
