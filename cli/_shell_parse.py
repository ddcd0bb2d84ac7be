# smtpbee/cli/_shell_parse
#
# What `smtpbee shell` makes of a typed line: the smtpbee Command it stands
# for, or a ParseError saying, for a person, why it cannot be sent.
#
# The Command constructors have the last word: whatever they refuse (CR, LF
# and every other control character, an address that is not one, a parameter
# outside the RFC grammar) is refused here with their message. This module
# only reads the typed syntax: the verb, FROM:<...> and TO:<...>, and the
# ESMTP parameters, which go to the Command's typed fields (SIZE=, BODY=...)
# or, unknown, to its ``extra``. Values typed in xtext (ENVID=, AUTH=,
# ORCPT=) are decoded, so that the Command, which encodes them, sends exactly
# what was typed.
#
# Also here: the parameters the server's offer allows, as Tab completes them.
from __future__ import annotations

import base64
import binascii
from typing import Any

from smtpbee import (
    Auth,
    Command,
    Data,
    Ehlo,
    Expn,
    Extensions,
    Helo,
    Help,
    InvalidInputError,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTLS,
    Vrfy,
    escape_text,
    xtext_decode,
)

__all__ = ["ParseError", "decode_base64", "mail_parameters", "parse_line", "rcpt_parameters"]


class ParseError(ValueError):
    """A typed line that cannot become a command; the message says why, for a person."""


def parse_line(line: str) -> Command:
    """The smtpbee Command a typed SMTP line stands for.

    Raises:
        ParseError: the line is not a command smtpbee can send safely (unknown
            verb, bad syntax, or an argument a Command refuses: a control
            character, an address that is not one).
    """
    text = line.strip(" ")
    keyword, _, rest = text.partition(" ")
    verb = keyword.upper()
    rest = rest.strip(" ")
    try:
        return _command(verb, rest, text)
    except InvalidInputError as exc:
        raise ParseError(str(exc)) from None


def _command(verb: str, rest: str, text: str) -> Command:
    if verb in ("EHLO", "HELO"):
        if not rest or " " in rest:
            raise ParseError(f"{verb} takes one argument, your name: {verb} client.example")
        return Ehlo(rest) if verb == "EHLO" else Helo(rest)
    if verb == "MAIL":
        address, params = _path(rest, "FROM")
        return _mail(address, params)
    if verb == "RCPT":
        address, params = _path(rest, "TO")
        return _rcpt(address, params)
    if verb in ("DATA", "RSET", "QUIT", "STARTTLS"):
        if rest:
            raise ParseError(f"{verb} takes no argument")
        return {"DATA": Data, "RSET": Rset, "QUIT": Quit, "STARTTLS": StartTLS}[verb]()
    if verb in ("NOOP", "HELP"):
        return Noop(rest) if verb == "NOOP" else Help(rest)
    if verb in ("VRFY", "EXPN"):
        argument, smtputf8 = rest, False
        if rest.upper().endswith(" SMTPUTF8"):
            argument, smtputf8 = rest[: -len(" SMTPUTF8")].rstrip(" "), True
        if not argument:
            raise ParseError(f"{verb} needs an argument: {verb} postmaster")
        kind = Vrfy if verb == "VRFY" else Expn
        return kind(argument, smtputf8=smtputf8)
    if verb == "AUTH":
        return _auth(rest)
    if verb == "BDAT":
        raise ParseError(
            "BDAT is not typed by hand here: its chunk of octets follows the command line"
            " byte for byte. `send` uses BDAT when the server offers CHUNKING."
        )
    if not verb:
        raise ParseError("an empty command")
    raise ParseError(
        f"{escape_text(verb)!r} is not an SMTP command smtpbee sends; ? lists what is legal"
        f" now (`raw {escape_text(text)}` sends it anyway)"
    )


def _path(rest: str, word: str) -> tuple[str, list[tuple[str, str | None]]]:
    """``FROM:<address> params`` -> the address (without brackets) and the parameters."""
    prefix = f"{word}:"
    example = f"{'MAIL' if word == 'FROM' else 'RCPT'} {prefix}<name@example.test>"
    if rest[: len(prefix)].upper() != prefix:
        raise ParseError(f"write it as {example}")
    path = rest[len(prefix) :].lstrip(" ")
    if not path.startswith("<"):
        raise ParseError(f"the address goes in angle brackets: {example}")
    end = _closing_bracket(path)
    if end < 0:
        raise ParseError(f"the address has no closing '>': {example}")
    address, params = path[1:end], path[end + 1 :]
    if params and not params.startswith(" "):
        raise ParseError("a space must separate the address from the parameters")
    return address, _parameters(params.split(" "))


def _closing_bracket(path: str) -> int:
    """The index of the '>' that closes the path (one inside a quoted local part is not it)."""
    quoted = escaped = False
    for index, char in enumerate(path):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index
    return -1


def _parameters(words: list[str]) -> list[tuple[str, str | None]]:
    params: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for word in words:
        if not word:
            continue
        keyword, equals, value = word.partition("=")
        if keyword.upper() in seen:
            raise ParseError(f"{keyword.upper()} is given twice")
        seen.add(keyword.upper())
        params.append((keyword, value if equals else None))
    return params


def _number(keyword: str, value: str | None) -> int:
    text = value or ""
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isdigit():
        raise ParseError(f"{keyword}= takes a number, e.g. {keyword}=1000")
    return int(text)


def _mail(sender: str, params: list[tuple[str, str | None]]) -> Mail:
    options: dict[str, Any] = {}
    extra: dict[str, str | None] = {}
    for keyword, value in params:
        name = keyword.upper()
        if name == "SIZE":
            options["size"] = _number(name, value)
        elif name in ("BODY", "RET"):
            options[name.lower()] = (value or "").upper()
        elif name in ("SMTPUTF8", "REQUIRETLS"):
            if value is not None:
                raise ParseError(f"{name} takes no value")
            options[name.lower()] = True
        elif name == "ENVID":
            options["envid"] = xtext_decode(value or "")
        elif name == "MT-PRIORITY":
            options["mt_priority"] = _number(name, value)
        elif name == "AUTH":
            options["auth"] = "<>" if value == "<>" else xtext_decode(value or "")
        else:
            extra[keyword] = value
    return Mail(sender=sender, extra=extra, **options)


def _rcpt(recipient: str, params: list[tuple[str, str | None]]) -> Rcpt:
    options: dict[str, Any] = {}
    extra: dict[str, str | None] = {}
    for keyword, value in params:
        name = keyword.upper()
        if name == "NOTIFY":
            conditions = (value or "").upper()
            options["notify"] = (
                "NEVER" if conditions == "NEVER" else frozenset(conditions.split(","))
            )
        elif name == "ORCPT":
            kind, semicolon, address = (value or "").partition(";")
            if not semicolon or kind.lower() != "rfc822":
                raise ParseError("write ORCPT=rfc822;ADDRESS (the address in xtext)")
            options["orcpt"] = xtext_decode(address)
        else:
            extra[keyword] = value
    return Rcpt(recipient=recipient, extra=extra, **options)


def _auth(rest: str) -> Auth:
    words = rest.split()
    if not words or len(words) > 2:
        raise ParseError("AUTH MECHANISM [initial-response in base64], e.g. AUTH PLAIN")
    if len(words) == 1:
        return Auth(words[0])
    return Auth(words[0], decode_base64(words[1]))


def decode_base64(text: str) -> bytes:
    """A typed base64 argument (``=`` is empty); ParseError if it is not base64."""
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ParseError("not valid base64") from None


def mail_parameters(extensions: Extensions) -> list[str]:
    """The MAIL FROM parameters the server's offer allows, as Tab completes them."""
    offered: list[str] = []
    if extensions.supports_size:
        offered.append("SIZE=")
    if extensions.eightbitmime:
        offered += ["BODY=7BIT ", "BODY=8BITMIME "]
    if extensions.smtputf8:
        offered.append("SMTPUTF8 ")
    if extensions.dsn:
        offered += ["RET=FULL ", "RET=HDRS ", "ENVID="]
    if extensions.requiretls:
        offered.append("REQUIRETLS ")
    if extensions.mt_priority:
        offered.append("MT-PRIORITY=")
    if extensions.auth_mechanisms:
        offered.append("AUTH=")
    return offered


def rcpt_parameters(extensions: Extensions) -> list[str]:
    """The RCPT TO parameters the server's offer allows (DSN's), as Tab completes them."""
    if not extensions.dsn:
        return []
    notify = ("NEVER", "SUCCESS", "FAILURE", "DELAY", "SUCCESS,FAILURE", "SUCCESS,FAILURE,DELAY")
    return [f"NOTIFY={conditions} " for conditions in notify] + ["ORCPT=rfc822;"]
