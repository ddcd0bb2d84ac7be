# smtpbee/_offers
#
# Whether a command fits what the server offered. The state table says which
# commands make sense *where* the session is; these checks say which ones the
# server's EHLO reply (and the session's mode: LMTP, TLS, authenticated)
# allows: STARTTLS only when offered and not yet done, AUTH once and only with
# an offered mechanism, BDAT only with CHUNKING, each MAIL parameter only with
# its extension, non-ASCII addresses only with SMTPUTF8, 8-bit content only
# with 8BITMIME (or BINARYMIME, or SMTPUTF8), nothing over the SIZE limit.
#
# Pure functions of their arguments: the connection calls them before a byte is
# produced, and a refusal leaves it unchanged.
from __future__ import annotations

from ._commands import Auth, Mail, Rcpt
from ._errors import (
    InvalidInputError,
    LocalProtocolError,
    MessageTooLargeError,
    UnsupportedExtensionError,
)
from ._extensions import Extensions
from ._state import Verb

__all__ = ["check_auth", "check_content", "check_mail", "check_rcpt", "offer_problem"]

_DATA = Verb.DATA
_CHUNK_VERBS = frozenset({Verb.BDAT, Verb.BDAT_LAST})


def offer_problem(
    verb: Verb,
    ext: Extensions,
    *,
    lmtp: bool,
    tls: bool,
    authenticated: bool,
    sent_mail: Mail | None,
) -> LocalProtocolError | None:
    """Why a command with this verb does not fit the server's offer, or None."""
    if verb is _DATA:
        # The one offer-dependent verb of every DATA transaction: answered
        # first, as none of the checks below concern it.
        if sent_mail is not None and sent_mail.body == "BINARYMIME":
            return LocalProtocolError("BODY=BINARYMIME content must go with BDAT, not DATA")
        return None
    if lmtp and verb in (Verb.EHLO, Verb.HELO):
        return LocalProtocolError("LMTP uses LHLO, not EHLO or HELO")
    if not lmtp and verb is Verb.LHLO:
        return LocalProtocolError("LHLO is only for LMTP")
    if verb is Verb.STARTTLS:
        if tls:
            return LocalProtocolError("TLS is already active")
        if not ext.starttls:
            return UnsupportedExtensionError("the server does not offer STARTTLS")
    if verb is Verb.AUTH:
        if authenticated:
            return LocalProtocolError("already authenticated (RFC 4954 §4: AUTH only once)")
        if not ext.auth_mechanisms:
            return UnsupportedExtensionError("the server does not offer AUTH")
    if verb in _CHUNK_VERBS and not ext.chunking:
        return UnsupportedExtensionError("the server does not offer CHUNKING (BDAT)")
    return None


def check_mail(mail: Mail, ext: Extensions, *, tls: bool, size_limit: int | None) -> None:
    """Refuse MAIL parameters the server does not offer, or a size over its limit."""
    for keyword in mail.required_extensions:
        if keyword not in ext:
            raise UnsupportedExtensionError(
                f"MAIL parameter needs {keyword}, which the server does not offer"
            )
    if mail.needs_smtputf8 and not mail.smtputf8:
        raise UnsupportedExtensionError(
            "a non-ASCII sender needs SMTPUTF8"
            + (" (pass smtputf8=True)" if ext.smtputf8 else ", which the server does not offer")
        )
    if mail.requiretls and not tls:
        raise LocalProtocolError("REQUIRETLS can only be used over TLS (RFC 8689)")
    if mail.size is not None and size_limit is not None and mail.size > size_limit:
        raise MessageTooLargeError(
            f"the message is {mail.size} octets; the server accepts at most {size_limit}"
        )


def check_rcpt(rcpt: Rcpt, ext: Extensions, *, sent_mail: Mail | None) -> None:
    """Refuse DSN parameters without DSN, a non-ASCII recipient without SMTPUTF8."""
    if (rcpt.notify is not None or rcpt.orcpt is not None) and not ext.dsn:
        raise UnsupportedExtensionError("NOTIFY/ORCPT need DSN, which the server does not offer")
    if rcpt.needs_smtputf8 and not (sent_mail is not None and sent_mail.smtputf8):
        raise UnsupportedExtensionError(
            "a non-ASCII recipient needs a transaction opened with SMTPUTF8"
        )


def check_auth(auth: Auth, ext: Extensions) -> None:
    """Refuse a SASL mechanism the server does not offer."""
    if auth.mechanism not in ext.auth_mechanisms:
        offered = ", ".join(sorted(ext.auth_mechanisms))
        raise UnsupportedExtensionError(
            f"the server does not offer AUTH {auth.mechanism} (it offers {offered})"
        )


def check_content(
    data: bytes, *, sent_mail: Mail | None, octets_so_far: int, size_limit: int | None
) -> None:
    """Refuse 8-bit content the transaction did not declare, or content past SIZE."""
    body = sent_mail.body if sent_mail is not None else None
    eight_bit_ok = body in ("8BITMIME", "BINARYMIME") or (
        sent_mail is not None and sent_mail.smtputf8
    )
    if not eight_bit_ok and not data.isascii():
        raise InvalidInputError(
            "the content has 8-bit octets: open the transaction with BODY=8BITMIME (or SMTPUTF8)"
        )
    if size_limit is not None and octets_so_far + len(data) > size_limit:
        raise MessageTooLargeError(f"the content exceeds the server's SIZE limit of {size_limit}")
