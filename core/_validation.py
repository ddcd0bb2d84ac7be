# smtpbee/_validation
#
# Everything the user hands us is checked here before a single byte is built
# from it: free text that goes into a command, mailboxes, domains, ESMTP
# keywords and values, xtext, and finally whole command lines.
#
# Theory of operation
# -------------------
# Command injection in SMTP needs only one of three things: a line ending (a
# second command), a space (a second parameter) or a character that a server
# may treat as one of those (NUL, other C0 and C1 controls, U+2028/U+2029). So:
#
#   * check_text() refuses every C0 control (TAB included: a TAB separates
#     parameters for some servers), DEL, every C1 control, U+2028, U+2029 and
#     lone surrogates (they cannot be encoded, and would otherwise surface as a
#     UnicodeEncodeError far from the cause);
#   * addresses are parsed by the RFC 5321 §4.1.2 grammar, as extended for UTF-8
#     by RFC 6531 §3.3, and never repaired: anything else around or inside the
#     address (a display name, a second address, a space, a source route, a
#     trailing dot) is refused with a message that says what was found;
#   * a Mailbox is valid by construction: __post_init__ re-checks the wire form,
#     so even a Mailbox built by hand cannot carry a parameter or a line ending;
#   * check_command_line() is the last line of defence: one CRLF, at the end, no
#     NUL, and at most 512 octets (RFC 5321 §4.5.3.1.4) unless the caller names a
#     larger limit that an extension grants.
#
# Domains: non-ASCII domains become A-labels with the standard library's "idna"
# codec (IDNA 2003, nameprep). It is the only IDNA in the standard library, and
# the core has no dependencies. Where IDNA 2003 and IDNA 2008 give *different*
# domains for the same text (the deviation characters ß, ς, ZWJ and ZWNJ, which
# 2003 maps away and 2008 keeps) the domain is refused instead of sending mail
# to a domain the user did not mean. Domains always travel as A-labels, so
# needs_smtputf8 comes from the local part alone.
#
# Messages name the argument ("recipient", "sender", ...) and show addresses
# through ascii(), so that a control character or a bidi override in the input
# cannot rewrite the message that reports it. Free text (check_text) and command
# lines are never echoed: they may hold a password.
from __future__ import annotations

import base64
import functools
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final

from ._errors import InvalidInputError

__all__ = [
    "MAX_COMMAND_LINE",
    "MAX_DOMAIN",
    "MAX_LOCAL_PART",
    "MAX_PATH",
    "NULL_PATH",
    "Mailbox",
    "check_command_line",
    "check_esmtp_keyword",
    "check_esmtp_value",
    "check_text",
    "encode_domain",
    "format_path",
    "parse_mailbox",
    "parse_reverse_path",
    "xtext_decode",
    "xtext_encode",
]

# RFC 5321 §4.5.3.1: sizes in octets (UTF-8 octets for SMTPUTF8 addresses).
MAX_LOCAL_PART: Final = 64
MAX_DOMAIN: Final = 255
MAX_PATH: Final = 256  # "<" local "@" domain ">"
MAX_COMMAND_LINE: Final = 512  # verb, arguments and CRLF

NULL_PATH: Final = None
"""The null reverse-path ``<>`` (MAIL FROM:<> for bounces) is represented by None."""

_FORBIDDEN_TEXT: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")

# RFC 5321 §4.1.2, with RFC 6531 §3.3 adding UTF8-non-ascii to atext and
# qtextSMTP. Non-ASCII white space is kept out of atext: outside quotes it is
# always a copy-and-paste accident, never a mailbox.
#   atext           = ALPHA / DIGIT / "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+"
#                     / "-" / "/" / "=" / "?" / "^" / "_" / "`" / "{" / "|" / "}" / "~"
#   Dot-string      = Atom *("."  Atom)
#   Quoted-string   = DQUOTE *QcontentSMTP DQUOTE
#   qtextSMTP       = %d32-33 / %d35-91 / %d93-126
#   quoted-pairSMTP = %d92 %d32-126
_ATEXT: Final = r"(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]|[^\x00-\x7f\s])"
_DOT_STRING: Final = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_ATOM: Final = re.compile(rf"{_ATEXT}+")
_QUOTED_STRING: Final = re.compile(
    r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e]|[^\x00-\x7f])*"'
)

#   sub-domain = Let-dig [Ldh-str]   ; at most 63 octets (RFC 1035 §2.3.4)
_LABEL: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

# IDNA 2003 maps these away; IDNA 2008 keeps them: the two name different domains.
_IDNA_DEVIATIONS: Final = re.compile("[\u00df\u03c2\u200c\u200d]")
# Label separators that the idna codec recognises besides ".".
_DOTS: Final = ".\u3002\uff0e\uff61"

#   esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
#   esmtp-value   = 1*(%d33-60 / %d62-126)   ; RFC 6531 adds UTF8-non-ascii
_ESMTP_KEYWORD: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_ESMTP_VALUE_ASCII: Final = re.compile(r"[!-<>-~]+")
_ESMTP_VALUE_UTF8: Final = re.compile(r"(?:[!-<>-~]|[^\x00-\x7f])+")

# RFC 4648 §4 base64, written out: Python's strict mode still takes padding
# after a complete quantum ("AAAA==") before 3.13 (CPython gh-118314).
_BASE64: Final = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")

# RFC 3461 §4: xchar is "!".."~" except "+" and "="; hexchar is "+" and two hex
# digits (uppercase when we write them; either case is read).
_XTEXT: Final = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})*")
_XTEXT_HEXCHAR: Final = re.compile(rb"\+([0-9A-Fa-f]{2})")
_XTEXT_BY_OCTET: Final = tuple(
    chr(octet) if 0x21 <= octet <= 0x7E and octet not in b"+=" else f"+{octet:02X}"
    for octet in range(256)
)


def _require_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    return value


def _check_text(value: str, what: str, *, shown: str = "") -> None:
    found = _FORBIDDEN_TEXT.search(value)
    if found is not None:
        raise InvalidInputError(
            f"{what}{shown} contains the control character U+{ord(found.group()):04X} at index "
            f"{found.start()}; control characters, line and paragraph separators are never sent"
        )


def check_text(value: str, what: str) -> None:
    """Refuse text that could break out of the command it is part of.

    C0 controls (CR, LF, NUL and TAB included), DEL, C1 controls (U+0080 to
    U+009F), U+2028, U+2029 and lone surrogates are refused. The value itself
    is never quoted in the error: it may be a secret.

    Args:
        value: the text to check.
        what: names the argument in the error message, e.g. "EHLO name".

    Raises:
        InvalidInputError: a forbidden character was found.
        TypeError: value is not a str.
    """
    _check_text(_require_str(value, what), what)


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A mailbox in the form it goes on the wire (RFC 5321 §4.1.2).

    Build one with parse_mailbox(), which accepts user input (U-label domains,
    surrounding angle brackets). The constructor takes the wire form only and
    checks it, so no Mailbox can carry a space, a line ending or a parameter.

    Attributes:
        local_part: the local part as given, quotes and backslashes included for
            a quoted local part; may be UTF-8 (RFC 6531).
        domain: an ASCII domain (non-ASCII domains as A-labels) or an address
            literal such as ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]``.
        needs_smtputf8: the local part is not ASCII, so the server must offer
            SMTPUTF8 and MAIL must carry the SMTPUTF8 parameter.
    """

    local_part: str
    domain: str
    needs_smtputf8: bool = field(init=False)
    # The text form, built once: a mailbox is parsed once (parse_mailbox keeps
    # it) and then rendered into every command and result that names it.
    _text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        shown = ascii(f"{self.local_part}@{self.domain}")
        _check_local_part(self.local_part, f"mailbox {shown}")
        check_text(self.domain, f"domain of mailbox {shown}")
        if not self.domain.isascii() or encode_domain(self.domain) != self.domain:
            raise InvalidInputError(
                f"mailbox {shown}: the domain must be in wire form (A-labels); "
                "parse_mailbox() converts it"
            )
        _check_path_length(self.local_part, self.domain, f"mailbox {shown}")
        object.__setattr__(self, "needs_smtputf8", not self.local_part.isascii())
        object.__setattr__(self, "_text", f"{self.local_part}@{self.domain}")

    def __str__(self) -> str:
        return self._text


def format_path(path: Mailbox | None) -> str:
    """A reverse- or forward-path as it follows ``MAIL FROM:`` or ``RCPT TO:``.

    Args:
        path: a mailbox, or None (NULL_PATH) for the null reverse-path.

    Returns:
        ``<local@domain>``, or ``<>`` for None.
    """
    return "<>" if path is None else f"<{path}>"


def _octets(text: str) -> int:
    return len(text.encode("utf-8"))


def _check_local_part(local_part: str, where: str) -> None:
    check_text(local_part, f"local part of {where}")
    if not local_part or local_part == '""':
        raise InvalidInputError(f"{where}: the local part is empty")
    if local_part.startswith('"'):
        if _QUOTED_STRING.fullmatch(local_part) is None:
            raise InvalidInputError(
                f"{where}: the quoted local part is not closed, or holds a '\"' or '\\' "
                "that is not escaped with '\\'"
            )
    elif _DOT_STRING.fullmatch(local_part) is None:
        raise InvalidInputError(f"{where}: {_explain_unquoted(local_part)}")
    if _octets(local_part) > MAX_LOCAL_PART:
        raise InvalidInputError(
            f"{where}: the local part is {_octets(local_part)} octets, "
            f"over the limit of {MAX_LOCAL_PART} (RFC 5321 §4.5.3.1.1)"
        )


def _check_path_length(local_part: str, domain: str, where: str) -> None:
    # "<" + local + "@" + domain + ">"
    size = _octets(local_part) + len(domain) + 3
    if size > MAX_PATH:
        raise InvalidInputError(
            f"{where}: the path is {size} octets, over the limit of {MAX_PATH} "
            "(RFC 5321 §4.5.3.1.3)"
        )


def _unquoted_problem(text: str, ats: int) -> str | None:
    """What marks text outside quotes as not a single address, if anything."""
    if "<" in text or ">" in text:
        return (
            "angle brackets may only surround the whole address; "
            "display names and nested brackets are not accepted"
        )
    if "," in text or ";" in text:
        return "one address per argument: ',' and ';' do not separate addresses here"
    if any(char.isspace() for char in text):
        return "a space outside a quoted local part (an address cannot carry parameters)"
    if text.count("@") > ats:
        return "a second '@' outside quotes"
    return None


def _explain_unquoted(text: str) -> str:
    """Why text outside quotes is not a dot-string, the most telling reason first."""
    problem = _unquoted_problem(text, 0)
    if problem is not None:
        return problem
    if '"' in text:
        return "quotes must enclose the whole local part"
    if text.startswith(".") or text.endswith(".") or ".." in text:
        return "a leading, trailing or doubled dot (quote the local part if it really has one)"
    bad = next(char for char in text if _DOT_STRING.fullmatch(char) is None)
    return f"{bad!a} is not allowed outside quotes"


def parse_mailbox(address: str, *, what: str = "address") -> Mailbox:
    """Parse a mailbox given by the user: ``local@domain`` or ``<local@domain>``.

    The RFC 5321 grammar decides (RFC 6531 for UTF-8); nothing is repaired.
    Refused: display names, several addresses, spaces or '@' outside quotes,
    source routes, empty parts, trailing dots, over-long parts, control
    characters. A non-ASCII domain is converted to A-labels; a non-ASCII local
    part sets needs_smtputf8.

    Args:
        address: the address, optionally in one pair of angle brackets.
        what: names the argument in error messages, e.g. "recipient".

    Returns:
        The mailbox in wire form.

    Raises:
        InvalidInputError: the address is not a single valid mailbox.
        TypeError: address is not a str.
    """
    # Parsing is pure and costs tens of microseconds; bulk senders repeat the
    # same few addresses, so recent results are kept (errors are not cached).
    return _parse_mailbox(_require_str(address, what), what)


@functools.lru_cache(maxsize=1024)
def _parse_mailbox(address: str, what: str) -> Mailbox:
    where = f"{what} {_require_str(address, what)!a}"
    _check_text(address, what, shown=f" {address!a}")
    text = address
    if len(text) >= 2 and text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if not text:
        raise InvalidInputError(
            f"{where}: empty address (the null path <> is only allowed as a sender)"
        )
    if text.startswith("@"):
        if ":" in text:
            raise InvalidInputError(f"{where}: source routes (@host:...) are not supported")
        raise InvalidInputError(f"{where}: the local part is empty")

    if text.startswith('"'):
        quoted = _QUOTED_STRING.match(text)
        if quoted is None:
            raise InvalidInputError(
                f"{where}: the quoted local part is not closed, or holds a '\"' or '\\' "
                "that is not escaped with '\\'"
            )
        local_part, rest = quoted.group(), text[quoted.end() :]
        if not rest.startswith("@"):
            reason = _unquoted_problem(rest, 1) or "the closing quote must be followed by '@'"
            raise InvalidInputError(f"{where}: {reason}")
    else:
        at = text.find("@")
        if at < 0:
            raise InvalidInputError(f"{where}: no '@' (a mailbox is local-part@domain)")
        local_part, rest = text[:at], text[at:]
    # A display name, a second address or a parameter shows in the text outside
    # quotes; saying so beats a complaint about whichever part it landed in.
    problem = _unquoted_problem(rest if local_part.startswith('"') else text, 1)
    if problem is not None:
        raise InvalidInputError(f"{where}: {problem}")
    domain = rest[1:]
    if not domain:
        raise InvalidInputError(f"{where}: the domain is empty")
    _check_local_part(local_part, where)
    try:
        wire_domain = encode_domain(domain)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where}: {exc}") from None
    _check_path_length(local_part, wire_domain, where)
    return Mailbox(local_part, wire_domain)


def parse_reverse_path(address: str, *, what: str = "sender") -> Mailbox | None:
    """Parse the sender of MAIL FROM; ``""`` and ``"<>"`` are the null path.

    Args:
        address: the sender address, or "" / "<>" for the null reverse-path.
        what: names the argument in error messages.

    Returns:
        The mailbox, or None (NULL_PATH) for the null reverse-path.

    Raises:
        InvalidInputError: the address is not a single valid mailbox.
        TypeError: address is not a str.
    """
    if address in ("", "<>"):
        return NULL_PATH
    return parse_mailbox(address, what=what)


def _check_address_literal(literal: str) -> str:
    #   address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
    #                           General-address-literal ) "]"
    if not literal.endswith("]"):
        raise InvalidInputError(f"address literal {literal!a} is not closed with ']'")
    inner = literal[1:-1]
    if inner[:5].lower() == "ipv6:":
        address = inner[5:]
        # ipaddress accepts a "%scope" suffix that the RFC 5321 grammar does not.
        if "%" not in address:
            try:
                ipaddress.IPv6Address(address)
            except ValueError:
                pass
            else:
                return literal
        raise InvalidInputError(f"address literal {literal!a} is not a valid IPv6 address")
    if ":" in inner:
        raise InvalidInputError(
            f"address literal {literal!a}: only IPv4 and IPv6: literals are supported"
        )
    try:
        ipaddress.IPv4Address(inner)
    except ValueError:
        raise InvalidInputError(
            f"address literal {literal!a} is not a dotted-quad IPv4 address"
        ) from None
    return literal


def encode_domain(domain: str) -> str:
    """A domain as it goes on the wire: A-labels, or a checked address literal.

    ASCII domains must follow the RFC 5321 sub-domain grammar (letters, digits
    and inner hyphens, labels of 1 to 63 octets). Non-ASCII domains are
    converted with IDNA 2003 (the standard library's "idna" codec), except that
    the characters IDNA 2003 and IDNA 2008 treat differently (ß, ς, ZWJ, ZWNJ)
    are refused. Address literals ``[192.0.2.1]`` and ``[IPv6:2001:db8::1]``
    are checked with the ipaddress module and returned unchanged.

    Args:
        domain: the domain or address literal given by the user.

    Returns:
        The wire form; at most 255 octets.

    Raises:
        InvalidInputError: empty, a trailing dot, a bad label, a bare IP
            address, an invalid literal, or text that IDNA refuses.
        TypeError: domain is not a str.
    """
    check_text(domain, "domain")
    if not domain:
        raise InvalidInputError("the domain is empty")
    if domain.startswith("["):
        return _check_address_literal(domain)
    if domain[-1] in _DOTS:
        raise InvalidInputError(f"domain {domain!a} ends with a dot")
    if domain.isascii():
        wire = domain
    else:
        deviation = _IDNA_DEVIATIONS.search(domain)
        if deviation is not None:
            raise InvalidInputError(
                f"domain {domain!a} contains U+{ord(deviation.group()):04X}, which "
                "IDNA 2003 and IDNA 2008 map to different domains; give the A-label form"
            )
        try:
            wire = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise InvalidInputError(
                f"domain {domain!a} cannot be converted to A-labels ({exc})"
            ) from None
    for label in wire.split("."):
        if _LABEL.fullmatch(label) is None:
            raise InvalidInputError(
                f"domain {domain!a}: label {label!a} is not letters, digits and "
                "inner hyphens of 1 to 63 octets"
            )
    if len(wire) > MAX_DOMAIN:
        raise InvalidInputError(
            f"domain {domain!a} is {len(wire)} octets, over the limit of {MAX_DOMAIN}"
        )
    try:
        ipaddress.IPv4Address(wire)
    except ValueError:
        return wire
    raise InvalidInputError(
        f"domain {domain!a} is an IP address: write it as an address literal, [{wire}]"
    )


def xtext_encode(value: str) -> str:
    """Encode text as RFC 3461 §4 xtext (ENVID, ORCPT, AUTH= on MAIL).

    "+", "=" and every octet outside "!".."~" of the UTF-8 form become "+HH"
    with uppercase hex digits; any text can be encoded.

    Raises:
        InvalidInputError: value holds a lone surrogate (it has no UTF-8 form).
        TypeError: value is not a str.
    """
    _require_str(value, "xtext value")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            "xtext value holds a lone surrogate; it has no UTF-8 form"
        ) from None
    return "".join(map(_XTEXT_BY_OCTET.__getitem__, raw))


def xtext_decode(value: str) -> str:
    """Decode RFC 3461 §4 xtext; the inverse of xtext_encode().

    Raises:
        InvalidInputError: a character outside "!".."~", a bare "=", a "+" not
            followed by two hex digits, or octets that are not UTF-8.
        TypeError: value is not a str.
    """
    _require_str(value, "xtext value")
    if _XTEXT.fullmatch(value) is None:
        raise InvalidInputError(f"{value!a} is not valid xtext (RFC 3461 §4)")
    raw = _XTEXT_HEXCHAR.sub(lambda hexchar: bytes.fromhex(hexchar[1].decode()), value.encode())
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"xtext {value!a} does not decode to UTF-8") from None


def smtp_string(value: str, what: str) -> str:
    """value as an RFC 5321 String: itself when it is an Atom, else a Quoted-string.

    ``String = Atom / Quoted-string`` is the one argument of VRFY, EXPN, HELP
    and NOOP (§4.1.1.6-9). Quoting keeps a space from starting a parameter:
    ``"postmaster SMTPUTF8"`` stays one string.

    Raises:
        InvalidInputError: a control character (checked by check_text).
        TypeError: value is not a str.
    """
    check_text(value, what)
    if _ATOM.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def strict_b64decode(text: bytes | str) -> bytes | None:
    """The octets of RFC 4648 base64 text, or None when it is not exactly that.

    No white space, no missing or excess padding, no other alphabet: what a
    server sends in an AUTH challenge or a SCRAM message must be exact.
    """
    data = text.encode("ascii", "replace") if isinstance(text, str) else text
    if _BASE64.fullmatch(data) is None:
        return None
    return base64.b64decode(data)


def check_esmtp_keyword(keyword: str) -> None:
    """Check an ESMTP parameter or extension keyword (RFC 5321 §4.1.2).

    ``esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")``

    Raises:
        InvalidInputError: keyword does not match the grammar.
        TypeError: keyword is not a str.
    """
    _require_str(keyword, "ESMTP keyword")
    if _ESMTP_KEYWORD.fullmatch(keyword) is None:
        raise InvalidInputError(
            f"ESMTP keyword {keyword!a} must be ASCII letters, digits and '-', "
            "starting with a letter or digit"
        )


def check_esmtp_value(value: str, *, utf8: bool = False) -> None:
    """Check an ESMTP parameter value (RFC 5321 §4.1.2, RFC 6531 §3.3).

    ``esmtp-value = 1*(%d33-60 / %d62-126)``: printable ASCII except "=" and
    space. RFC 6531 adds UTF-8 non-ASCII characters; they are accepted only with
    ``utf8=True``, which the caller passes when the transaction uses SMTPUTF8.

    Args:
        value: the value, already encoded (for example as xtext) where the
            parameter's own definition requires it.
        utf8: allow non-ASCII characters (never controls or separators).

    Raises:
        InvalidInputError: empty, or a character the grammar does not allow.
        TypeError: value is not a str.
    """
    check_text(value, "ESMTP parameter value")
    pattern = _ESMTP_VALUE_UTF8 if utf8 else _ESMTP_VALUE_ASCII
    if pattern.fullmatch(value) is None:
        allowed = "printable ASCII (UTF-8 with SMTPUTF8)" if not utf8 else "printable"
        raise InvalidInputError(
            f"ESMTP parameter value {value!a} must be non-empty {allowed} characters "
            "other than '=' and space"
        )


def check_command_line(line: bytes, *, limit: int = MAX_COMMAND_LINE) -> None:
    """Check a complete command line just before it is sent.

    Args:
        line: the command line, CRLF included.
        limit: the most octets allowed, CRLF included: 512 by RFC 5321
            §4.5.3.1.4, more where an extension in use raises it.

    Raises:
        InvalidInputError: longer than limit, or not exactly one line ending
            in CRLF with no NUL. The line is not quoted: it may hold a secret.
    """
    size = len(line)
    one_line = (
        size >= 2
        and line.find(b"\r") == size - 2
        and line.find(b"\n") == size - 1
        and b"\0" not in line
    )
    if one_line and size <= limit:
        # Every command passes through here: the name for an error message is
        # only worth working out when there is an error.
        return
    verb = line[:16].split(b" ", 1)[0].rstrip(b"\r\n")
    name = f"{verb.decode('ascii')} command line" if verb.isalpha() else "command line"
    if size > limit:
        raise InvalidInputError(
            f"{name} is {size} octets, over the limit of {limit} (RFC 5321 §4.5.3.1.4)"
        )
    raise InvalidInputError(f"{name} must be a single line ending in CRLF, without NUL")
