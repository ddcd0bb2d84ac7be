# smtpbee/_extensions
#
# The server's EHLO (or LHLO) reply as an immutable, typed view: which service
# extensions it offers and with which parameters (RFC 5321 §4.1.1.1):
#
#   ehlo-ok-rsp  = ( "250" SP Domain [ SP ehlo-greet ] CRLF )
#                / ( "250-" Domain [ SP ehlo-greet ] CRLF
#                    *( "250-" ehlo-line CRLF )
#                    "250" SP ehlo-line CRLF )
#   ehlo-line    = ehlo-keyword *( SP ehlo-param )
#   ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
#
# Parsing never raises, whatever the server sent: this is a description of the
# server, and a server that garbles one line should still be usable for the
# extensions it did advertise properly. So:
#   * keywords are matched case-insensitively and stored upper-cased;
#   * words are split on any run of ASCII whitespace (extra spaces, tabs);
#   * a line whose first word is not a valid ehlo-keyword is ignored, except the
#     pre-RFC 2554 form "AUTH=LOGIN PLAIN", still sent by some servers next to
#     the standard "AUTH LOGIN PLAIN", whose mechanisms are merged into AUTH;
#   * parameters are kept as given, decoded as UTF-8 with undecodable bytes
#     replaced (they are ASCII when the server follows the RFC);
#   * a keyword that appears twice keeps one entry: the parameters of later
#     lines are appended, skipping any already present. The typed properties
#     read the first parameter, so for a one-valued keyword such as SIZE the
#     first line wins;
#   * a SIZE parameter that is not a plain decimal number means "limit unknown".
#
# Unknown keywords are kept, so callers (and conformance testers) can look up
# extensions this module has no property for.
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ._replies import Reply

__all__ = ["EMPTY_EXTENSIONS", "Extensions"]

_EHLO_KEYWORD = re.compile(rb"[A-Za-z0-9][A-Za-z0-9-]*")
_LEGACY_AUTH_PREFIX = b"AUTH="

# RFC 4422 §3.1: sasl-mech = 1*20mech-char; mech-char = UPPER-ALPHA / DIGIT / "-" / "_".
# Anything else could not be sent back in an AUTH command, so it is not offered.
_SASL_MECHANISM = re.compile(r"[A-Z0-9_-]{1,20}")

# RFC 1870 §4: "SIZE" [SP 1*20DIGIT]. More digits than that is no real limit.
_SIZE_VALUE = re.compile(r"[0-9]{1,20}")


def _no_keywords() -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({})


def _add(found: dict[str, dict[str, None]], keyword: str, params: Iterable[str]) -> None:
    """Record keyword's params in found, after an earlier entry's, each once.

    A dict keeps the order and finds a repeat in constant time: a reply of
    thousands of parameters costs linear time, never quadratic.
    """
    known = found.setdefault(keyword, {})
    for param in params:
        known.setdefault(param)


def _decode(word: bytes) -> str:
    return word.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True, repr=False)
class Extensions:
    """What the server's EHLO (or LHLO) reply says it supports.

    Build it with from_reply(); the constructor is for tests and tools. The
    keyword lookups are case-insensitive.

    Attributes:
        domain: the first word of the reply's first line (the server's name).
        keywords: each advertised keyword, upper-cased, mapped to its
            parameters as given. Read-only.
    """

    domain: str = ""
    keywords: Mapping[str, tuple[str, ...]] = field(default_factory=_no_keywords)

    def __post_init__(self) -> None:
        found: dict[str, dict[str, None]] = {}
        for keyword, params in self.keywords.items():
            if isinstance(params, str):
                raise TypeError(f"parameters of {keyword!r} must be a sequence of str, not a str")
            _add(found, keyword.upper(), params)
        frozen = {keyword: tuple(params) for keyword, params in found.items()}
        object.__setattr__(self, "keywords", MappingProxyType(frozen))

    @classmethod
    def from_reply(cls, reply: Reply) -> Extensions:
        """Read the extensions from the server's reply to EHLO or LHLO.

        The reply code is not checked: deciding whether EHLO succeeded (or HELO
        is needed instead) is the caller's business. Never raises.

        Args:
            reply: the reply; its first line names the server, each further
                line advertises one extension.
        """
        if not reply.lines:
            return cls()
        greeting = reply.lines[0].split(maxsplit=1)
        domain = _decode(greeting[0]) if greeting else ""
        found: dict[str, dict[str, None]] = {}
        for line in reply.lines[1:]:
            words = line.split()
            if not words:
                continue
            keyword, params = words[0], words[1:]
            if keyword[: len(_LEGACY_AUTH_PREFIX)].upper() == _LEGACY_AUTH_PREFIX:
                # "AUTH=LOGIN PLAIN": the first mechanism is glued to the keyword.
                first_mechanism = keyword[len(_LEGACY_AUTH_PREFIX) :]
                params = [first_mechanism, *params] if first_mechanism else params
                keyword = b"AUTH"
            elif not _EHLO_KEYWORD.fullmatch(keyword):
                continue
            _add(found, keyword.upper().decode("ascii"), map(_decode, params))
        return cls(domain, {keyword: tuple(params) for keyword, params in found.items()})

    def __contains__(self, keyword: object) -> bool:
        return isinstance(keyword, str) and keyword.upper() in self.keywords

    def __hash__(self) -> int:
        return hash((self.domain, frozenset(self.keywords.items())))

    def __repr__(self) -> str:
        advertised = ", ".join(
            " ".join((keyword, *params)) for keyword, params in self.keywords.items()
        )
        return f"<Extensions of {self.domain!r}: {advertised or 'none'}>"

    def params(self, keyword: str) -> tuple[str, ...]:
        """The parameters of keyword (any case), or () if it was not advertised."""
        return self.keywords.get(keyword.upper(), ())

    @property
    def supports_size(self) -> bool:
        """SIZE (RFC 1870) was advertised, with or without a limit."""
        return "SIZE" in self.keywords

    @property
    def size_limit(self) -> int | None:
        """The largest message the server accepts, in octets (RFC 1870).

        None when SIZE is absent, has no number or a malformed one, or is 0
        (which RFC 1870 defines as "no fixed limit").
        """
        params = self.keywords.get("SIZE", ())
        if not params or not _SIZE_VALUE.fullmatch(params[0]):
            return None
        # Validated as 1-20 ASCII digits: int() is safe and cheap here.
        return int(params[0]) or None

    @property
    def auth_mechanisms(self) -> frozenset[str]:
        """The SASL mechanisms offered (RFC 4954), upper-cased.

        Includes those of the old ``AUTH=LOGIN PLAIN`` form; names that are not
        valid SASL mechanism names are left out.
        """
        mechanisms = (param.upper() for param in self.keywords.get("AUTH", ()))
        return frozenset(name for name in mechanisms if _SASL_MECHANISM.fullmatch(name))

    @property
    def pipelining(self) -> bool:
        """PIPELINING (RFC 2920)."""
        return "PIPELINING" in self.keywords

    @property
    def chunking(self) -> bool:
        """CHUNKING: the BDAT command (RFC 3030)."""
        return "CHUNKING" in self.keywords

    @property
    def eightbitmime(self) -> bool:
        """8BITMIME (RFC 6152)."""
        return "8BITMIME" in self.keywords

    @property
    def binarymime(self) -> bool:
        """BINARYMIME (RFC 3030); usable only together with CHUNKING."""
        return "BINARYMIME" in self.keywords

    @property
    def smtputf8(self) -> bool:
        """SMTPUTF8 (RFC 6531)."""
        return "SMTPUTF8" in self.keywords

    @property
    def dsn(self) -> bool:
        """DSN: delivery status notifications (RFC 3461)."""
        return "DSN" in self.keywords

    @property
    def enhanced_status_codes(self) -> bool:
        """ENHANCEDSTATUSCODES (RFC 2034)."""
        return "ENHANCEDSTATUSCODES" in self.keywords

    @property
    def starttls(self) -> bool:
        """STARTTLS (RFC 3207)."""
        return "STARTTLS" in self.keywords

    @property
    def requiretls(self) -> bool:
        """REQUIRETLS (RFC 8689)."""
        return "REQUIRETLS" in self.keywords

    @property
    def xclient_attributes(self) -> frozenset[str] | None:
        """The attribute names Postfix's XCLIENT takes here, upper-cased.

        The XCLIENT keyword lists them (``250-XCLIENT NAME ADDR PROTO HELO``);
        None when XCLIENT is not offered at all.
        """
        params = self.keywords.get("XCLIENT")
        return None if params is None else frozenset(name.upper() for name in params)

    @property
    def mt_priority(self) -> bool:
        """MT-PRIORITY (RFC 6710)."""
        return "MT-PRIORITY" in self.keywords


EMPTY_EXTENSIONS = Extensions()
"""What is known before EHLO succeeds, after HELO, and after STARTTLS: nothing."""
