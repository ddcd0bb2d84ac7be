# smtpbee/_commands
#
# What the client can send, as frozen values. Each command checks its own
# arguments when it is built (h11's rule: an invalid event cannot exist), so a
# CR, LF or NUL in an address, or an address that smuggles a parameter, fails
# at construction with InvalidInputError and never reaches the wire.
#
# What a command *cannot* know alone — whether the server offers an extension,
# whether the session is in the right state, whether SMTPUTF8 is on — is the
# connection's job. ``to_bytes`` is only called after those checks pass.
#
# Every command renders a transcript line with ``transcript_line()``; commands
# that carry secrets (AUTH initial responses, AUTH responses) redact them there
# and in their repr.
#
# Mail and Rcpt are built once per message and then rendered for the wire and
# for the transcript: being frozen, they render their line once, on first use,
# and keep it (``_line``, not part of their value: not compared, not shown).
from __future__ import annotations

import base64
import dataclasses
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from ._errors import InvalidInputError
from ._state import Verb
from ._validation import (
    Mailbox,
    check_command_line,
    check_esmtp_keyword,
    check_esmtp_value,
    check_text,
    encode_domain,
    parse_mailbox,
    parse_reverse_path,
    smtp_string,
    xtext_encode,
)

__all__ = [
    "MAIL_OPTIONS",
    "RCPT_OPTIONS",
    "XCLIENT_ATTRIBUTES",
    "Auth",
    "AuthCancel",
    "AuthResponse",
    "Bdat",
    "Command",
    "Data",
    "Ehlo",
    "EndOfData",
    "Expn",
    "Helo",
    "Help",
    "Lhlo",
    "Mail",
    "MessageData",
    "Noop",
    "Quit",
    "Rcpt",
    "Rset",
    "StartTLS",
    "Vrfy",
    "Xclient",
]

BodyType = Literal["7BIT", "8BITMIME", "BINARYMIME"]
NotifyCondition = Literal["SUCCESS", "FAILURE", "DELAY"]
_NOTIFY_CONDITIONS = frozenset({"SUCCESS", "FAILURE", "DELAY"})
# RFC 6710 §3: MT-PRIORITY is an integer from -9 to 9.
_MT_PRIORITY_RANGE = range(-9, 10)
# The parameters Mail and Rcpt build from their own fields.
_MAIL_KEYWORDS = frozenset(
    {"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "REQUIRETLS", "MT-PRIORITY", "AUTH"}
)
_RCPT_KEYWORDS = frozenset({"NOTIFY", "ORCPT"})


def _utf8_addr_xtext(address: str) -> str:
    """RFC 6533 §3 utf-8-addr-xtext: "\\x{HEX}" for anything outside QCHAR.

    QCHAR is "!".."~" except "+", "=" and "\\"; the "+HH" of plain xtext has
    no place in this form.
    """
    return "".join(
        char if "!" <= char <= "~" and char not in "+=\\" else f"\\x{{{ord(char):X}}}"
        for char in address
    )


class Command:
    """Base class of everything the client sends."""

    __slots__ = ()
    _VERB: ClassVar[Verb]
    is_command_line: ClassVar[bool] = True
    """Whether to_bytes() is one command line (bounded by RFC 5321 §4.5.3.1.4)."""

    @property
    def verb(self) -> Verb:
        """The state machine's name for this command."""
        return self._VERB

    def to_bytes(self, *, smtputf8: bool = False) -> bytes:
        """The bytes on the wire. ``smtputf8`` allows UTF-8 in arguments."""
        raise NotImplementedError

    def checked_bytes(self, *, smtputf8: bool = False) -> bytes:
        """to_bytes(), a command line checked as one (check_command_line), as it goes out.

        Raises:
            InvalidInputError: the command line is too long, or not one line.
        """
        data = self.to_bytes(smtputf8=smtputf8)
        if self.is_command_line:
            check_command_line(data)
        return data

    def transcript_line(self) -> str:
        """The command as a person should see it in a transcript (secrets redacted)."""
        return self.to_bytes(smtputf8=True).decode("utf-8").rstrip("\r\n")

    @property
    def needs_smtputf8(self) -> bool:
        """Whether the arguments cannot go on the wire without SMTPUTF8."""
        return False


def _octets(value: object, what: str) -> bytes:
    """value as bytes; bytearray and memoryview are copied, anything else refused.

    Checked when the command is built, so a group never fails half-way
    through encoding (send_all is all or nothing).
    """
    if type(value) is bytes:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise InvalidInputError(f"{what} must be bytes, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class _Hello(Command):
    hostname: str

    keyword: ClassVar[str] = "EHLO"

    def __post_init__(self) -> None:
        check_text(self.hostname, "hostname")
        if not self.hostname:
            raise InvalidInputError("the hostname must not be empty")
        object.__setattr__(self, "hostname", encode_domain(self.hostname))

    def to_bytes(self, *, smtputf8: bool = False) -> bytes:
        return f"{self.keyword} {self.hostname}\r\n".encode("ascii")


@dataclass(frozen=True, slots=True)
class Ehlo(_Hello):
    """``EHLO hostname``: introduce the client and ask for the extensions."""

    _VERB: ClassVar[Verb] = Verb.EHLO
    keyword: ClassVar[str] = "EHLO"


@dataclass(frozen=True, slots=True)
class Helo(_Hello):
    """``HELO hostname``: the pre-ESMTP greeting (no extensions)."""

    _VERB: ClassVar[Verb] = Verb.HELO
    keyword: ClassVar[str] = "HELO"


@dataclass(frozen=True, slots=True)
class Lhlo(_Hello):
    """``LHLO hostname``: EHLO's counterpart in LMTP (RFC 2033)."""

    _VERB: ClassVar[Verb] = Verb.LHLO
    keyword: ClassVar[str] = "LHLO"


def _check_extra(
    extra: Mapping[str, str | None], typed: frozenset[str]
) -> tuple[tuple[str, str | None], ...]:
    for keyword, value in extra.items():
        check_esmtp_keyword(keyword)
        # A typed parameter given again as extra would go out twice, and
        # would slip past the checks made on the typed field (SIZE, BODY...).
        if keyword.upper() in typed:
            raise InvalidInputError(f"{keyword} has its own argument: do not pass it in extra")
        if value is not None:
            check_esmtp_value(value)
    return tuple(extra.items())


def _render_parameters(parameters: list[tuple[str, str | None]]) -> str:
    return "".join([f" {k}={v}" if v is not None else f" {k}" for k, v in parameters])


_NO_EXTRA: Mapping[str, str | None] = MappingProxyType({})


def _frozen_extra(
    extra: Mapping[str, str | None], typed: frozenset[str]
) -> Mapping[str, str | None]:
    # Nearly every command has no extra parameter: the empty default needs no
    # checking and can share one read-only mapping.
    if type(extra) is dict and not extra:
        return _NO_EXTRA
    return MappingProxyType(dict(_check_extra(extra, typed)))


class _PathCommand(Command):
    """MAIL and RCPT: a path and parameters, rendered once.

    Procedures ask for the line twice (wire and transcript) and bulk senders
    send the same envelope often: the rendered line is kept in ``_line``,
    its checked bytes in ``_wire``.
    """

    __slots__ = ()
    _line: str | None
    _wire: bytes | None

    def _render(self) -> str:
        raise NotImplementedError

    def _wire_line(self) -> str:
        line = self._line
        if line is None:
            line = self._render()
            object.__setattr__(self, "_line", line)
        return line

    def to_bytes(self, *, smtputf8: bool = False) -> bytes:
        return self._wire_line().encode("utf-8" if smtputf8 else "ascii")

    def checked_bytes(self, *, smtputf8: bool = False) -> bytes:
        # Checked once: the line cannot change. A line in UTF-8 is checked
        # in that form; without SMTPUTF8 it takes the usual way (and fails).
        wire = self._wire
        if wire is None:
            wire = self._wire_line().encode("utf-8")
            check_command_line(wire)
            object.__setattr__(self, "_wire", wire)
        if not smtputf8 and not wire.isascii():
            return Command.checked_bytes(self, smtputf8=smtputf8)
        return wire

    def transcript_line(self) -> str:
        # The line holds no lone surrogate (every part was checked), so this
        # is what decoding its UTF-8 form would give.
        return self._wire_line().rstrip("\r\n")


@dataclass(frozen=True, slots=True, kw_only=True)
class Mail(_PathCommand):
    """``MAIL FROM:<sender> [parameters]``: open a mail transaction.

    Args:
        sender: the reverse path; ``""`` is the null sender ``<>`` (bounces).
        size: the message size in octets (SIZE, RFC 1870).
        body: BODY=7BIT, 8BITMIME (RFC 6152) or BINARYMIME (RFC 3030).
        smtputf8: ask for SMTPUTF8 (RFC 6531); required for a non-ASCII address.
        ret: DSN RET=FULL or HDRS (RFC 3461).
        envid: DSN ENVID, sent as xtext.
        requiretls: REQUIRETLS (RFC 8689).
        mt_priority: MT-PRIORITY, -9 to 9 (RFC 6710).
        auth: the AUTH= submitter (RFC 4954 §5), sent as xtext; ``"<>"`` for none.
        extra: further ESMTP parameters (keyword -> value or None), checked
            against the RFC 5321 grammar.
    """

    sender: str
    size: int | None = None
    body: BodyType | None = None
    smtputf8: bool = False
    ret: Literal["FULL", "HDRS"] | None = None
    envid: str | None = None
    requiretls: bool = False
    mt_priority: int | None = None
    auth: str | None = None
    extra: Mapping[str, str | None] = field(default_factory=dict)
    mailbox: Mailbox | None = field(init=False, repr=False, compare=False)
    _line: str | None = field(default=None, init=False, repr=False, compare=False)
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False)

    _VERB: ClassVar[Verb] = Verb.MAIL

    def __post_init__(self) -> None:
        object.__setattr__(self, "mailbox", parse_reverse_path(self.sender))
        if self.size is not None and (type(self.size) is not int or self.size < 0):
            raise InvalidInputError(f"SIZE must be a non-negative integer, not {self.size!r}")
        if self.body not in (None, "7BIT", "8BITMIME", "BINARYMIME"):
            raise InvalidInputError(f"BODY must be 7BIT, 8BITMIME or BINARYMIME, not {self.body!r}")
        if self.ret not in (None, "FULL", "HDRS"):
            raise InvalidInputError(f"RET must be FULL or HDRS, not {self.ret!r}")
        # An empty value would go out as "ENVID=", which esmtp-value forbids.
        if self.envid is not None:
            check_text(self.envid, "ENVID")
            if not self.envid:
                raise InvalidInputError("ENVID must not be empty")
        if self.auth is not None:
            check_text(self.auth, "AUTH=")
            if not self.auth:
                raise InvalidInputError('AUTH= must not be empty (use "<>" for no submitter)')
        # type() rather than isinstance(): True and 1.0 are no priorities.
        if self.mt_priority is not None and (
            type(self.mt_priority) is not int or self.mt_priority not in _MT_PRIORITY_RANGE
        ):
            raise InvalidInputError(f"MT-PRIORITY must be -9..9, not {self.mt_priority!r}")
        object.__setattr__(self, "extra", _frozen_extra(self.extra, _MAIL_KEYWORDS))

    @property
    def needs_smtputf8(self) -> bool:
        return self.mailbox is not None and self.mailbox.needs_smtputf8

    @property
    def required_extensions(self) -> tuple[str, ...]:
        """The EHLO keywords the server must offer for these parameters, in a fixed order."""
        needed: list[str] = []
        if self.size is not None:
            needed.append("SIZE")
        if self.body == "8BITMIME":
            needed.append("8BITMIME")
        elif self.body == "BINARYMIME":
            needed += ("BINARYMIME", "CHUNKING")
        if self.smtputf8:
            needed.append("SMTPUTF8")
        if self.ret is not None or self.envid is not None:
            needed.append("DSN")
        if self.requiretls:
            needed.append("REQUIRETLS")
        if self.mt_priority is not None:
            needed.append("MT-PRIORITY")
        if self.auth is not None:
            needed.append("AUTH")
        return tuple(needed)

    @property
    def parameters(self) -> list[tuple[str, str | None]]:
        """The ESMTP parameters in the order they are sent."""
        params: list[tuple[str, str | None]] = []
        if self.size is not None:
            params.append(("SIZE", str(self.size)))
        if self.body is not None:
            params.append(("BODY", self.body))
        if self.smtputf8:
            params.append(("SMTPUTF8", None))
        if self.ret is not None:
            params.append(("RET", self.ret))
        if self.envid is not None:
            params.append(("ENVID", xtext_encode(self.envid)))
        if self.requiretls:
            params.append(("REQUIRETLS", None))
        if self.mt_priority is not None:
            params.append(("MT-PRIORITY", str(self.mt_priority)))
        if self.auth is not None:
            params.append(("AUTH", "<>" if self.auth == "<>" else xtext_encode(self.auth)))
        params.extend(self.extra.items())
        return params

    def _render(self) -> str:
        path = "" if self.mailbox is None else str(self.mailbox)
        params = self.parameters
        return f"MAIL FROM:<{path}>{_render_parameters(params) if params else ''}\r\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rcpt(_PathCommand):
    """``RCPT TO:<recipient> [parameters]``: add a recipient.

    Args:
        recipient: the forward path.
        notify: DSN NOTIFY (RFC 3461): ``"NEVER"`` or a set of SUCCESS, FAILURE, DELAY.
        orcpt: DSN ORCPT: the original recipient, sent as ``rfc822;`` + xtext
            (or ``utf-8;`` + xtext when it is not ASCII, RFC 6533).
        extra: further ESMTP parameters.
    """

    recipient: str
    notify: Literal["NEVER"] | frozenset[NotifyCondition] | None = None
    orcpt: str | None = None
    extra: Mapping[str, str | None] = field(default_factory=dict)
    mailbox: Mailbox = field(init=False, repr=False, compare=False)
    _line: str | None = field(default=None, init=False, repr=False, compare=False)
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False)

    _VERB: ClassVar[Verb] = Verb.RCPT

    def __post_init__(self) -> None:
        object.__setattr__(self, "mailbox", parse_mailbox(self.recipient, what="recipient"))
        if self.notify is not None and self.notify != "NEVER":
            conditions = frozenset(self.notify)
            if not conditions or not conditions <= _NOTIFY_CONDITIONS:
                raise InvalidInputError(
                    f"NOTIFY must be NEVER or a non-empty set of {sorted(_NOTIFY_CONDITIONS)}"
                )
            object.__setattr__(self, "notify", conditions)
        if self.orcpt is not None:
            check_text(self.orcpt, "ORCPT")
            if not self.orcpt:
                raise InvalidInputError("ORCPT must not be empty")
        object.__setattr__(self, "extra", _frozen_extra(self.extra, _RCPT_KEYWORDS))

    @property
    def needs_smtputf8(self) -> bool:
        return self.mailbox.needs_smtputf8

    @property
    def parameters(self) -> list[tuple[str, str | None]]:
        params: list[tuple[str, str | None]] = []
        if self.notify == "NEVER":
            params.append(("NOTIFY", "NEVER"))
        elif self.notify is not None:
            order = ("SUCCESS", "FAILURE", "DELAY")
            params.append(("NOTIFY", ",".join(c for c in order if c in self.notify)))
        if self.orcpt is not None:
            if self.orcpt.isascii():
                params.append(("ORCPT", f"rfc822;{xtext_encode(self.orcpt)}"))
            else:
                params.append(("ORCPT", f"utf-8;{_utf8_addr_xtext(self.orcpt)}"))
        params.extend(self.extra.items())
        return params

    def _render(self) -> str:
        params = self.parameters
        return f"RCPT TO:<{self.mailbox}>{_render_parameters(params) if params else ''}\r\n"


def _options(command: type[Any], path: str) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(command) if f.init and f.name != path)


MAIL_OPTIONS = _options(Mail, "sender")
"""The keyword arguments of Mail besides the sender (what ``mail_options`` may hold)."""

RCPT_OPTIONS = _options(Rcpt, "recipient")
"""The keyword arguments of Rcpt besides the recipient (what ``rcpt_options`` may hold)."""


@dataclass(frozen=True, slots=True)
class Data(Command):
    """``DATA``: ask to send the content; the server answers 354."""

    _VERB: ClassVar[Verb] = Verb.DATA

    def to_bytes(self, *, smtputf8: bool = False) -> bytes:
        return b"DATA\r\n"


@dataclass(frozen=True, slots=True)
class MessageData(Command):
    """A piece of the message content after the 354 (any size, any split).

    The connection dot-stuffs it and normalises line ends; send EndOfData last.
    """

    data: bytes = field(repr=False)

    _VERB: ClassVar[Verb] = Verb.MESSAGE_DATA

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", _octets(self.data, "message content"))

    def transcript_line(self) -> str:
        return f"<{len(self.data)} octets of content>"


@dataclass(frozen=True, slots=True)
class EndOfData(Command):
    """The end of the content: the connection adds the ``CRLF.CRLF`` terminator."""

    _VERB: ClassVar[Verb] = Verb.END_OF_DATA

    def transcript_line(self) -> str:
        return "."


@dataclass(frozen=True, slots=True)
class Bdat(Command):
    """``BDAT size [LAST]`` followed by exactly that chunk (CHUNKING, RFC 3030)."""

    data: bytes = field(repr=False)
    last: bool = False

    is_command_line: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", _octets(self.data, "a BDAT chunk"))

    @property
    def verb(self) -> Verb:
        return Verb.BDAT_LAST if self.last else Verb.BDAT

    def header(self) -> bytes:
        return b"BDAT %d%s\r\n" % (len(self.data), b" LAST" if self.last else b"")

    def to_bytes(self, *, smtputf8: bool = False) -> bytes:
        return self.header() + self.data

    def transcript_line(self) -> str:
        return self.header().decode("ascii").rstrip("\r\n") + f" <{len(self.data)} octets>"


@dataclass(frozen=True, slots=True)
class Rset(Command):
    """``RSET``: abort the mail transaction."""

    _VERB: ClassVar[Verb] = Verb.RSET

    def to_bytes(self, *, smtputf8: bool = False) -> bytes:
        return b"RSET\r\n"


@dataclass(frozen=True, slots=True)
class _StringCommand(Command):
    """A command whose one argument is an RFC 5321 String: NOOP, VRFY, EXPN, HELP.

    The argument is sent as an Atom when it is one, else as a Quoted-string
    (§4.1.1.6-9), so it can never add a parameter of its own.
    """

    argument: str = ""
    _ARGUMENT_REQUIRED: ClassVar[bool] = False

    def __post_init__(self) -> None:
        what = f"{self._VERB.value} argument"
        if self._ARGUMENT_REQUIRED and not self.argument.strip():
            raise InvalidInputError(f"{self._VERB.value} needs an argument")
        smtp_string(self.argument, what)  # checks it before anything is rendered

    def _parameters(self) -> str:
        return ""

    def to_bytes(self, *, smtputf8: bool = False) -> bytes:
        verb = self._VERB.value
        if self.argument:
            line = f"{verb} {smtp_string(self.argument, verb)}{self._parameters()}\r\n"
        else:
            line = f"{verb}\r\n"
        return line.encode("utf-8" if smtputf8 else "ascii")

    @property
    def needs_smtputf8(self) -> bool:
        return not self.argument.isascii()


@dataclass(frozen=True, slots=True)
class Noop(_StringCommand):
    """``NOOP [String]``: ask the server to say 250."""

    _VERB: ClassVar[Verb] = Verb.NOOP


@dataclass(frozen=True, slots=True)
class _LookupCommand(_StringCommand):
    """VRFY and EXPN: a String, and the SMTPUTF8 parameter on request (RFC 6531 §3.7.4)."""

    smtputf8: bool = False
    _ARGUMENT_REQUIRED: ClassVar[bool] = True

    def _parameters(self) -> str:
        return " SMTPUTF8" if self.smtputf8 else ""

    @property
    def needs_smtputf8(self) -> bool:
        return self.smtputf8 or not self.argument.isascii()


@dataclass(frozen=True, slots=True)
class Vrfy(_LookupCommand):
    """``VRFY String [SMTPUTF8]``: ask whether a user or mailbox exists."""

    _VERB: ClassVar[Verb] = Verb.VRFY


@dataclass(frozen=True, slots=True)
class Expn(_LookupCommand):
    """``EXPN String [SMTPUTF8]``: ask for the members of a mailing list."""

    _VERB: ClassVar[Verb] = Verb.EXPN


@dataclass(frozen=True, slots=True)
class Help(_StringCommand):
    """``HELP [String]``."""

    _VERB: ClassVar[Verb] = Verb.HELP


@dataclass(frozen=True, slots=True)
class Quit(Command):
    """``QUIT``: end the session; the server answers 221 and closes."""

    _VERB: ClassVar[Verb] = Verb.QUIT

    def to_bytes(self, *, smtputf8: bool = False) -> bytes:
        return b"QUIT\r\n"


@dataclass(frozen=True, slots=True)
class StartTLS(Command):
    """``STARTTLS`` (RFC 3207): after the 220, the TLS handshake must follow."""

    _VERB: ClassVar[Verb] = Verb.STARTTLS

    def to_bytes(self, *, smtputf8: bool = False) -> bytes:
        return b"STARTTLS\r\n"


@dataclass(frozen=True, slots=True)
class Auth(Command):
    """``AUTH mechanism [initial-response]`` (RFC 4954).

    Args:
        mechanism: the SASL mechanism name, e.g. ``"PLAIN"``.
        initial_response: raw bytes to send base64-encoded on the AUTH line
            (``b""`` is sent as ``=``), or None for none. Never shown in reprs
            or transcripts.
    """

    mechanism: str
    initial_response: bytes | None = field(default=None, repr=False)
    _VERB: ClassVar[Verb] = Verb.AUTH

    def __post_init__(self) -> None:
        check_esmtp_keyword(self.mechanism)
        object.__setattr__(self, "mechanism", self.mechanism.upper())
        if self.initial_response is not None:
            response = _octets(self.initial_response, "an AUTH initial response")
            object.__setattr__(self, "initial_response", response)

    def to_bytes(self, *, smtputf8: bool = False) -> bytes:
        line = b"AUTH " + self.mechanism.encode("ascii")
        if self.initial_response is not None:
            response = self.initial_response
            line += b" " + (base64.b64encode(response) if response else b"=")
        return line + b"\r\n"

    def without_initial_response(self) -> Auth:
        """The same AUTH with no initial response (when the line would be too long)."""
        return Auth(self.mechanism)

    def transcript_line(self) -> str:
        redacted = " <redacted>" if self.initial_response is not None else ""
        return f"AUTH {self.mechanism}{redacted}"


@dataclass(frozen=True, slots=True)
class AuthResponse(Command):
    """The answer to a 334 challenge: raw bytes, sent base64-encoded."""

    data: bytes = field(repr=False)
    _VERB: ClassVar[Verb] = Verb.AUTH_RESPONSE
    is_command_line: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", _octets(self.data, "an AUTH response"))

    def to_bytes(self, *, smtputf8: bool = False) -> bytes:
        return base64.b64encode(self.data) + b"\r\n"

    def transcript_line(self) -> str:
        return "<redacted>"


@dataclass(frozen=True, slots=True)
class AuthCancel(Command):
    """``*``: abandon the AUTH exchange; the server answers 501."""

    _VERB: ClassVar[Verb] = Verb.AUTH_CANCEL

    def to_bytes(self, *, smtputf8: bool = False) -> bytes:
        return b"*\r\n"


XCLIENT_ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN", "DESTADDR", "DESTPORT")
"""The XCLIENT attribute names Postfix documents (XCLIENT_README), in its order."""

_UNAVAILABLE = "[UNAVAILABLE]"
_TEMPUNAVAIL = "[TEMPUNAVAIL]"
_IPV6_PREFIX = "IPV6:"
# XCLIENT_README: NAME and HELO values are host names, at most 255 characters.
_MAX_NAME_LENGTH = 255


def _xclient_address(name: str, value: str) -> str:
    """ADDR and DESTADDR: IPv4, or IPv6 with the "IPV6:" prefix (added when missing)."""
    prefixed = value[: len(_IPV6_PREFIX)].upper() == _IPV6_PREFIX
    text = value[len(_IPV6_PREFIX) :] if prefixed else value
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidInputError(
            f"XCLIENT {name} must be an IPv4 or IPv6 address or {_UNAVAILABLE}"
        ) from None
    if address.version == 4:
        if prefixed:
            raise InvalidInputError(f"XCLIENT {name}: the IPV6: prefix names an IPv4 address")
        return str(address)
    # A scope ("%eth0") means nothing to the server: it names an interface here.
    if "%" in text:
        raise InvalidInputError(f"XCLIENT {name} must not carry an IPv6 scope")
    return _IPV6_PREFIX + str(address)


def _xclient_port(name: str, value: str) -> str:
    if not (value.isascii() and value.isdigit() and len(value) <= 5 and int(value) <= 65535):
        raise InvalidInputError(f"XCLIENT {name} must be a port number 0-65535 or {_UNAVAILABLE}")
    return str(int(value))


def _xclient_proto(name: str, value: str) -> str:
    if value.upper() not in ("SMTP", "ESMTP"):
        raise InvalidInputError(f"XCLIENT {name} must be SMTP or ESMTP")
    return value.upper()


def _xclient_host_name(name: str, value: str) -> str:
    if len(value) > _MAX_NAME_LENGTH:
        raise InvalidInputError(f"XCLIENT {name} must be at most {_MAX_NAME_LENGTH} characters")
    return value


def _xclient_text(name: str, value: str) -> str:
    return value


_UNAVAILABLE_ONLY = frozenset({_UNAVAILABLE})
# attribute -> (the check of an ordinary value, the special values sent as is).
# XCLIENT_README: only a name lookup can fail transiently ([TEMPUNAVAIL]), and
# PROTO is always known.
_XCLIENT_FORMS: dict[str, tuple[Callable[[str, str], str], frozenset[str]]] = {
    "NAME": (_xclient_host_name, frozenset({_UNAVAILABLE, _TEMPUNAVAIL})),
    "ADDR": (_xclient_address, _UNAVAILABLE_ONLY),
    "PORT": (_xclient_port, _UNAVAILABLE_ONLY),
    "PROTO": (_xclient_proto, frozenset()),
    "HELO": (_xclient_host_name, _UNAVAILABLE_ONLY),
    "LOGIN": (_xclient_text, _UNAVAILABLE_ONLY),
    "DESTADDR": (_xclient_address, _UNAVAILABLE_ONLY),
    "DESTPORT": (_xclient_port, _UNAVAILABLE_ONLY),
}


def _xclient_value(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"XCLIENT {name} must be a str, not {type(value).__name__}")
    check_text(value, f"XCLIENT {name}")
    if not value.isascii():
        raise InvalidInputError(f"XCLIENT {name} must be ASCII")
    if not value:
        raise InvalidInputError(f"XCLIENT {name} must not be empty (use {_UNAVAILABLE})")
    check, specials = _XCLIENT_FORMS[name]
    return value if value in specials else check(name, value)


@dataclass(frozen=True, slots=True)
class Xclient(Command):
    """``XCLIENT NAME=value ...``: Postfix's XCLIENT (XCLIENT_README).

    An authorized client (a proxy, a test harness) tells the server which
    client it speaks for; the server answers 220 and starts the session
    over, so EHLO must follow.

    Args:
        attributes: attribute name (NAME, ADDR, PORT, PROTO, HELO, LOGIN,
            DESTADDR, DESTPORT; any case) -> value, sent in the order given.
            "[UNAVAILABLE]" (and, for NAME, "[TEMPUNAVAIL]") goes as is;
            ADDR and DESTADDR are IPv4 or IPv6 addresses (IPv6 goes with the
            "IPV6:" prefix, added when missing); PORT and DESTPORT 0-65535;
            PROTO SMTP or ESMTP. Values are ASCII and sent as xtext.

    Raises:
        InvalidInputError: no attribute, an unknown or repeated name, or a
            value that is not ASCII text of its attribute's form.
    """

    attributes: Mapping[str, str]

    _VERB: ClassVar[Verb] = Verb.XCLIENT

    def __post_init__(self) -> None:
        if not isinstance(self.attributes, Mapping):
            raise InvalidInputError("XCLIENT attributes must be a mapping of name to value")
        checked: dict[str, str] = {}
        for name, value in self.attributes.items():
            upper = name.upper() if isinstance(name, str) else name
            if upper not in _XCLIENT_FORMS:
                raise InvalidInputError(
                    f"XCLIENT takes {', '.join(XCLIENT_ATTRIBUTES)}, not {name!r}"
                )
            if upper in checked:
                raise InvalidInputError(f"XCLIENT {upper} is given twice")
            checked[upper] = _xclient_value(upper, value)
        if not checked:
            raise InvalidInputError("XCLIENT needs at least one attribute")
        object.__setattr__(self, "attributes", MappingProxyType(checked))

    def to_bytes(self, *, smtputf8: bool = False) -> bytes:
        pairs = "".join(
            [f" {name}={xtext_encode(value)}" for name, value in self.attributes.items()]
        )
        return f"XCLIENT{pairs}\r\n".encode("ascii")
