# smtpbee/_offers
#
# Whether a command fits what the server offered. The state table says which
# commands make sense *where* the session is; these checks say which ones the
# server's EHLO reply and the session's mode (LMTP, TLS, authenticated) allow:
# STARTTLS only when offered and not yet done, AUTH once and only with an
# offered mechanism, BDAT only with CHUNKING, XCLIENT only when offered and
# with the attributes it lists, each MAIL parameter only with its
# extension, non-ASCII arguments only with SMTPUTF8, 8-bit content only with
# 8BITMIME (or BINARYMIME, or SMTPUTF8), nothing over the SIZE limit.
#
# Two tables, keyed by verb, are the whole list: VERB_CHECKS (is this kind of
# command possible at all now?) and ARGUMENT_CHECKS (does this command's
# argument fit?). A verb absent from a table needs no such check; the
# connection looks the verb up and never keeps a list of its own.
#
# SessionFacts holds what the checks read: the connection updates it as
# replies teach it (EHLO, STARTTLS, AUTH, MAIL) and as commands go out. A
# check never changes anything, so a refusal leaves the session as it was.
from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from ._commands import Auth, Bdat, Command, Mail, MessageData, Rcpt, Xclient
from ._errors import (
    InvalidInputError,
    LocalProtocolError,
    MessageTooLargeError,
    UnsupportedExtensionError,
)
from ._extensions import EMPTY_EXTENSIONS, Extensions
from ._state import Verb

__all__ = ["ARGUMENT_CHECKS", "VERB_CHECKS", "SessionFacts"]


class SessionFacts:
    """What the server offers and what the session is, as the checks need it.

    Attributes:
        extensions: the last EHLO/LHLO reply's extensions (empty after HELO).
        lmtp: the session speaks LMTP.
        tls: the connection is encrypted.
        authenticated: AUTH succeeded.
        sent_mail: the MAIL of the transaction being written, if one is.
        content_octets: the content octets written in that transaction.
    """

    __slots__ = (
        "authenticated",
        "content_octets",
        "extensions",
        "lmtp",
        "pipelining",
        "sent_mail",
        "size_limit",
        "smtputf8",
        "tls",
    )

    def __init__(self, *, lmtp: bool, tls: bool) -> None:
        self.lmtp = lmtp
        self.tls = tls
        self.authenticated = False
        self.sent_mail: Mail | None = None
        self.content_octets = 0
        self.set_extensions(EMPTY_EXTENSIONS)

    def set_extensions(self, extensions: Extensions) -> None:
        # Read from the Extensions once: its properties look keywords up (SIZE
        # parses a number) on each call, and every command consults these.
        self.extensions = extensions
        self.pipelining = self.lmtp or extensions.pipelining
        self.smtputf8 = extensions.smtputf8
        self.size_limit = extensions.size_limit


# ---------------------------------------------------------------------------
# Is a command of this verb possible now?


def _data(facts: SessionFacts) -> LocalProtocolError | None:
    mail = facts.sent_mail
    if mail is not None and mail.body == "BINARYMIME":
        return LocalProtocolError("BODY=BINARYMIME content must go with BDAT, not DATA")
    return None


def _smtp_hello(facts: SessionFacts) -> LocalProtocolError | None:
    return LocalProtocolError("LMTP uses LHLO, not EHLO or HELO") if facts.lmtp else None


def _lmtp_hello(facts: SessionFacts) -> LocalProtocolError | None:
    return None if facts.lmtp else LocalProtocolError("LHLO is only for LMTP")


def _starttls(facts: SessionFacts) -> LocalProtocolError | None:
    if facts.tls:
        return LocalProtocolError("TLS is already active")
    if not facts.extensions.starttls:
        return UnsupportedExtensionError("the server does not offer STARTTLS")
    return None


def _auth(facts: SessionFacts) -> LocalProtocolError | None:
    if facts.authenticated:
        return LocalProtocolError("already authenticated (RFC 4954 §4: AUTH only once)")
    if not facts.extensions.auth_mechanisms:
        return UnsupportedExtensionError("the server does not offer AUTH")
    return None


def _chunking(facts: SessionFacts) -> LocalProtocolError | None:
    if not facts.extensions.chunking:
        return UnsupportedExtensionError("the server does not offer CHUNKING (BDAT)")
    return None


def _xclient(facts: SessionFacts) -> LocalProtocolError | None:
    if facts.extensions.xclient_attributes is None:
        return UnsupportedExtensionError("the server does not offer XCLIENT")
    return None


VERB_CHECKS: Mapping[Verb, Callable[[SessionFacts], LocalProtocolError | None]] = MappingProxyType(
    {
        Verb.DATA: _data,
        Verb.EHLO: _smtp_hello,
        Verb.HELO: _smtp_hello,
        Verb.LHLO: _lmtp_hello,
        Verb.STARTTLS: _starttls,
        Verb.AUTH: _auth,
        Verb.BDAT: _chunking,
        Verb.BDAT_LAST: _chunking,
        Verb.XCLIENT: _xclient,
    }
)
"""Verb -> why a command of that verb does not fit the session now (or None)."""


# ---------------------------------------------------------------------------
# Does this command's argument fit?


def _wrong_type(command: Command, kind: type[Command]) -> LocalProtocolError:
    return LocalProtocolError(
        f"a {command.verb.value} command must be a {kind.__name__}, not a {type(command).__name__}"
    )


def _mail(facts: SessionFacts, command: Command) -> None:
    if not isinstance(command, Mail):
        raise _wrong_type(command, Mail)
    ext = facts.extensions
    for keyword in command.required_extensions:
        if keyword not in ext:
            raise UnsupportedExtensionError(
                f"MAIL parameter needs {keyword}, which the server does not offer"
            )
    if command.needs_smtputf8 and not command.smtputf8:
        raise UnsupportedExtensionError(
            "a non-ASCII sender needs SMTPUTF8"
            + (" (pass smtputf8=True)" if ext.smtputf8 else ", which the server does not offer")
        )
    if command.requiretls and not facts.tls:
        raise LocalProtocolError("REQUIRETLS can only be used over TLS (RFC 8689)")
    limit = facts.size_limit
    if command.size is not None and limit is not None and command.size > limit:
        raise MessageTooLargeError(
            f"the message is {command.size} octets; the server accepts at most {limit}"
        )


def _rcpt(facts: SessionFacts, command: Command) -> None:
    if not isinstance(command, Rcpt):
        raise _wrong_type(command, Rcpt)
    if (command.notify is not None or command.orcpt is not None) and not facts.extensions.dsn:
        raise UnsupportedExtensionError("NOTIFY/ORCPT need DSN, which the server does not offer")
    mail = facts.sent_mail
    if command.needs_smtputf8 and not (mail is not None and mail.smtputf8):
        raise UnsupportedExtensionError(
            "a non-ASCII recipient needs a transaction opened with SMTPUTF8"
        )


def _auth_mechanism(facts: SessionFacts, command: Command) -> None:
    if not isinstance(command, Auth):
        raise _wrong_type(command, Auth)
    offered = facts.extensions.auth_mechanisms
    if command.mechanism not in offered:
        raise UnsupportedExtensionError(
            f"the server does not offer AUTH {command.mechanism}"
            f" (it offers {', '.join(sorted(offered))})"
        )


def _xclient_attributes(facts: SessionFacts, command: Command) -> None:
    if not isinstance(command, Xclient):
        raise _wrong_type(command, Xclient)
    offered = facts.extensions.xclient_attributes or frozenset()
    refused = [name for name in command.attributes if name not in offered]
    if refused:
        raise UnsupportedExtensionError(
            f"the server's XCLIENT does not take {', '.join(refused)}"
            f" (it takes {', '.join(sorted(offered)) or 'nothing'})"
        )


def _content(facts: SessionFacts, data: bytes) -> None:
    mail = facts.sent_mail
    body = mail.body if mail is not None else None
    eight_bit_ok = body in ("8BITMIME", "BINARYMIME") or (mail is not None and mail.smtputf8)
    if not eight_bit_ok and not data.isascii():
        raise InvalidInputError(
            "the content has 8-bit octets: open the transaction with BODY=8BITMIME (or SMTPUTF8)"
        )
    limit = facts.size_limit
    if limit is not None and facts.content_octets + len(data) > limit:
        raise MessageTooLargeError(f"the content exceeds the server's SIZE limit of {limit}")


def _chunk(facts: SessionFacts, command: Command) -> None:
    if not isinstance(command, Bdat):
        raise _wrong_type(command, Bdat)
    _content(facts, command.data)


def _message_data(facts: SessionFacts, command: Command) -> None:
    if not isinstance(command, MessageData):
        raise _wrong_type(command, MessageData)
    _content(facts, command.data)


def _text_argument(facts: SessionFacts, command: Command) -> None:
    if command.needs_smtputf8 and not facts.smtputf8:
        raise UnsupportedExtensionError(
            f"{command.verb.value} with a non-ASCII argument (or SMTPUTF8) needs SMTPUTF8,"
            " which the server does not offer"
        )


ARGUMENT_CHECKS: Mapping[Verb, Callable[[SessionFacts, Command], None]] = MappingProxyType(
    {
        Verb.MAIL: _mail,
        Verb.RCPT: _rcpt,
        Verb.AUTH: _auth_mechanism,
        Verb.BDAT: _chunk,
        Verb.BDAT_LAST: _chunk,
        Verb.MESSAGE_DATA: _message_data,
        Verb.VRFY: _text_argument,
        Verb.EXPN: _text_argument,
        Verb.HELP: _text_argument,
        Verb.NOOP: _text_argument,
        Verb.XCLIENT: _xclient_attributes,
    }
)
"""Verb -> the check of a command's arguments against the session (raises LocalProtocolError)."""
