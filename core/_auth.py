# smtpbee/_auth
#
# The SASL mechanisms smtpbee ships for SMTP AUTH (RFC 4954) other than SCRAM
# (PLAIN, LOGIN, CRAM-MD5, XOAUTH2, OAUTHBEARER). The registry of every shipped
# mechanism and choose_mechanism are in _mechanisms, which also loads SCRAM:
# a session that never logs in with a password never imports either.
#
# Every mechanism is a SASLMechanism and keeps the contract written down in
# _sasl: one exchange per object, InvalidChallengeError for a challenge that
# makes no sense, AuthenticationIncomplete for a 235 that comes too early,
# secrets never in a repr or a message. SASLMechanism and both errors are
# re-exported here, where the session procedures and the transports look for them.
#
# Mechanisms are pluggable: any subclass of SASLMechanism works with the
# connection; MECHANISMS is only the set smtpbee ships.
#
# Decisions where the specifications leave room:
#   * LOGIN sends no initial response by default: every server that knows
#     LOGIN then prompts for the user name, while some older ones reject
#     `AUTH LOGIN <user>`. `send_username_early=True` saves a round trip with
#     servers known to accept it. The prompts' text varies between servers, so
#     LOGIN answers by position (user name, then password), not by prompt.
#   * XOAUTH2 and OAUTHBEARER take the token as a str or as a zero-argument
#     callable returning a str; the callable is called each time the initial
#     response is built, so a caller holding a refreshable token gets a fresh
#     one for each attempt without rebuilding anything else.
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from ._errors import InvalidInputError
from ._sasl import (
    AuthenticationIncomplete,
    InvalidChallengeError,
    SASLMechanism,
    escape_saslname,
    refuse_challenge_before_start,
    refuse_empty,
)

__all__ = [
    "PASSWORD_MECHANISM_PREFERENCE",
    "AuthenticationIncomplete",
    "BearerToken",
    "CramMD5",
    "InvalidChallengeError",
    "Login",
    "OAuthBearer",
    "Plain",
    "SASLMechanism",
    "XOAuth2",
]

BearerToken = str | Callable[[], str]
"""An OAuth 2.0 bearer token, or a zero-argument callable that returns a fresh one."""

# C0 controls and DEL: never allowed in the text fields of the OAuth mechanisms,
# where \x01 separates key-value pairs.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Visible ASCII: wide enough for every RFC 6750 b64token, narrow enough that a
# token can never smuggle a separator into the message.
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")


def _refuse_control_characters(mechanism: str, what: str, value: str) -> None:
    if _CONTROL.search(value):
        raise InvalidInputError(f"{mechanism}: the {what} contains a control character")


def _refuse_nul(mechanism: str, what: str, value: str) -> None:
    if "\0" in value:
        raise InvalidInputError(f"{mechanism}: the {what} contains a NUL character")


def _resolve_token(mechanism: str, token: BearerToken) -> str:
    value = token() if callable(token) else token
    if not isinstance(value, str):
        raise InvalidInputError(
            f"{mechanism}: the token callable returned {type(value).__name__}, not str"
        )
    if not _VISIBLE_ASCII.fullmatch(value):
        raise InvalidInputError(
            f"{mechanism}: the bearer token is empty or has a character outside visible ASCII"
        )
    return value


def _parse_json_error(mechanism: str, challenge: bytes, *, require_status: bool) -> str:
    """Check that an OAuth error challenge is a JSON object; return its text."""
    try:
        text = challenge.decode("utf-8")
        import json  # only when a server reports an OAuth error

        document = json.loads(text)
    except (ValueError, RecursionError):
        # RecursionError: a deeply nested document from a hostile server.
        raise InvalidChallengeError(f"{mechanism}: the challenge is not a JSON error") from None
    if not isinstance(document, dict):
        raise InvalidChallengeError(f"{mechanism}: the error challenge is not a JSON object")
    if require_status and "status" not in document:
        raise InvalidChallengeError(f'{mechanism}: the JSON error challenge has no "status"')
    return text


@dataclass(eq=False)
class Plain(SASLMechanism):
    """PLAIN (RFC 4616): the user name and password in one message.

    Sends ``authzid NUL username NUL password`` as the initial response. The
    strings go as typed, in UTF-8: RFC 4616 leaves SASLprep to the server.

    Args:
        username: the authentication identity; not empty.
        password: the password; not empty.
        authzid: the identity to act as, if different; usually "".

    Raises:
        InvalidInputError: a field contains NUL, or the user name or password is empty.
    """

    name: ClassVar[str] = "PLAIN"
    sends_secret_in_clear: ClassVar[bool] = True

    username: str
    password: str = field(repr=False)
    authzid: str = ""
    _sent: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        for what, value in (
            ("user name", self.username),
            ("password", self.password),
            ("authzid", self.authzid),
        ):
            _refuse_nul(self.name, what, value)
        refuse_empty(self.name, "user name", self.username)
        refuse_empty(self.name, "password", self.password)

    def initial_response(self) -> bytes:
        self._sent = True
        return f"{self.authzid}\0{self.username}\0{self.password}".encode()

    def respond(self, challenge: bytes) -> bytes:
        if self._sent:
            raise InvalidChallengeError("PLAIN: the server sent a challenge after the credentials")
        refuse_challenge_before_start(self.name, challenge)
        return self.initial_response()

    def success(self) -> None:
        if not self._sent:
            raise AuthenticationIncomplete("PLAIN: success before the credentials were sent")


@dataclass(eq=False)
class Login(SASLMechanism):
    """LOGIN (draft-murchison-sasl-login): the user name, then the password.

    The server prompts twice ("Username:", "Password:" in most servers, but the
    text varies); the answers go by position, not by prompt. A third challenge is
    refused.

    Args:
        username: the user name; not empty.
        password: the password.
        send_username_early: send the user name as the initial response, which
            saves a round trip but is refused by some older servers.

    Raises:
        InvalidInputError: a field contains NUL (servers parse LOGIN fields as C
            strings), or the user name is empty.
    """

    name: ClassVar[str] = "LOGIN"
    sends_secret_in_clear: ClassVar[bool] = True

    username: str
    password: str = field(repr=False)
    send_username_early: bool = field(default=False, kw_only=True)
    _answers_given: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        _refuse_nul(self.name, "user name", self.username)
        _refuse_nul(self.name, "password", self.password)
        refuse_empty(self.name, "user name", self.username)

    def initial_response(self) -> bytes | None:
        if not self.send_username_early:
            return None
        self._answers_given = max(self._answers_given, 1)
        return self.username.encode()

    def respond(self, challenge: bytes) -> bytes:
        answers = (self.username, self.password)
        if self._answers_given >= len(answers):
            raise InvalidChallengeError("LOGIN: the server sent a third challenge")
        answer = answers[self._answers_given]
        self._answers_given += 1
        return answer.encode()

    def success(self) -> None:
        if self._answers_given < 2:
            raise AuthenticationIncomplete("LOGIN: success before the password was sent")


@dataclass(eq=False)
class CramMD5(SASLMechanism):
    """CRAM-MD5 (RFC 2195): an HMAC-MD5 of the server's challenge, keyed by the password.

    The password does not cross the wire, but a recorded exchange allows an
    offline guessing attack: prefer SCRAM where the server offers it.

    Args:
        username: the user name; not empty.
        password: the password (the HMAC key, in UTF-8).

    Raises:
        InvalidInputError: the user name is empty or contains NUL.
    """

    name: ClassVar[str] = "CRAM-MD5"

    username: str
    password: str = field(repr=False)
    _responded: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        _refuse_nul(self.name, "user name", self.username)
        refuse_empty(self.name, "user name", self.username)

    def respond(self, challenge: bytes) -> bytes:
        if self._responded:
            raise InvalidChallengeError("CRAM-MD5: the server sent a second challenge")
        if not challenge:
            raise InvalidChallengeError("CRAM-MD5: the server sent an empty challenge")
        self._responded = True
        import hmac  # only CRAM-MD5 needs it

        digest = hmac.new(self.password.encode(), challenge, "md5").hexdigest()
        return f"{self.username} {digest}".encode()

    def success(self) -> None:
        if not self._responded:
            raise AuthenticationIncomplete("CRAM-MD5: success before the challenge was answered")


@dataclass(eq=False)
class XOAuth2(SASLMechanism):
    """XOAUTH2 (Google, Microsoft): an OAuth 2.0 bearer token.

    Sends ``user=<username>\\x01auth=Bearer <token>\\x01\\x01``. On failure the
    server sends a JSON error as a challenge: it is kept in ``failure_details``
    and answered with an empty response, after which the server sends its
    final failure reply.

    Args:
        username: the account's user name (usually an email address).
        token: the access token, or a zero-argument callable returning one; a
            callable is called each time ``initial_response()`` runs.

    Raises:
        InvalidInputError: the user name is empty or has a control character, or
            the token is empty or not visible ASCII.
    """

    name: ClassVar[str] = "XOAUTH2"
    sends_secret_in_clear: ClassVar[bool] = True

    username: str
    token: BearerToken = field(repr=False)
    _sent: bool = field(default=False, init=False, repr=False)
    _failure_details: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        _refuse_control_characters(self.name, "user name", self.username)
        refuse_empty(self.name, "user name", self.username)
        if not callable(self.token):
            _resolve_token(self.name, self.token)

    def initial_response(self) -> bytes:
        token = _resolve_token(self.name, self.token)
        self._sent = True
        return f"user={self.username}\x01auth=Bearer {token}\x01\x01".encode()

    def respond(self, challenge: bytes) -> bytes:
        if not self._sent:
            refuse_challenge_before_start(self.name, challenge)
            return self.initial_response()
        if self._failure_details is not None:
            raise InvalidChallengeError("XOAUTH2: the server sent a second error challenge")
        self._failure_details = _parse_json_error(self.name, challenge, require_status=False)
        return b""

    def success(self) -> None:
        if not self._sent:
            raise AuthenticationIncomplete("XOAUTH2: success before the token was sent")
        if self._failure_details is not None:
            raise AuthenticationIncomplete("XOAUTH2: success after the server reported an error")

    @property
    def failure_details(self) -> str | None:
        """The JSON error the server sent, as text, if it sent one."""
        return self._failure_details


@dataclass(eq=False)
class OAuthBearer(SASLMechanism):
    """OAUTHBEARER (RFC 7628): an OAuth 2.0 bearer token in a GS2 frame.

    Sends ``n,a=<username>,\\x01host=<host>\\x01port=<port>\\x01auth=Bearer
    <token>\\x01\\x01`` (host and port only when given). On failure the server
    sends a JSON error with a "status" member as a challenge: it is kept in
    ``failure_details`` and answered with ``\\x01``, after which the server sends
    its final failure reply.

    Args:
        username: the authorization identity; "" to leave it out of the header.
        token: the access token, or a zero-argument callable returning one; a
            callable is called each time ``initial_response()`` runs.
        host: the server's host name, as the client connected to it.
        port: the server's port.

    Raises:
        InvalidInputError: a control character in the user name or host, a port
            outside 1-65535, or a token that is empty or not visible ASCII.
    """

    name: ClassVar[str] = "OAUTHBEARER"
    sends_secret_in_clear: ClassVar[bool] = True

    username: str
    token: BearerToken = field(repr=False)
    host: str | None = None
    port: int | None = None
    _sent: bool = field(default=False, init=False, repr=False)
    _failure_details: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        _refuse_control_characters(self.name, "user name", self.username)
        if self.host is not None:
            _refuse_control_characters(self.name, "host", self.host)
        if self.port is not None and (
            isinstance(self.port, bool)
            or not isinstance(self.port, int)
            or not 0 < self.port < 65536
        ):
            raise InvalidInputError(f"{self.name}: the port must be an integer from 1 to 65535")
        if not callable(self.token):
            _resolve_token(self.name, self.token)

    def initial_response(self) -> bytes:
        token = _resolve_token(self.name, self.token)
        authzid = f"a={escape_saslname(self.username)}" if self.username else ""
        pairs = []
        if self.host is not None:
            pairs.append(f"host={self.host}\x01")
        if self.port is not None:
            pairs.append(f"port={self.port}\x01")
        pairs.append(f"auth=Bearer {token}\x01")
        self._sent = True
        return f"n,{authzid},\x01{''.join(pairs)}\x01".encode()

    def respond(self, challenge: bytes) -> bytes:
        if not self._sent:
            refuse_challenge_before_start(self.name, challenge)
            return self.initial_response()
        if self._failure_details is not None:
            raise InvalidChallengeError("OAUTHBEARER: the server sent a second error challenge")
        self._failure_details = _parse_json_error(self.name, challenge, require_status=True)
        # RFC 7628 §3.2.3: the client ends a failed exchange with a lone %x01.
        return b"\x01"

    def success(self) -> None:
        if not self._sent:
            raise AuthenticationIncomplete("OAUTHBEARER: success before the token was sent")
        if self._failure_details is not None:
            raise AuthenticationIncomplete(
                "OAUTHBEARER: success after the server reported an error"
            )

    @property
    def failure_details(self) -> str | None:
        """The JSON error the server sent, as text, if it sent one."""
        return self._failure_details


PASSWORD_MECHANISM_PREFERENCE: tuple[str, ...] = (
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
    "CRAM-MD5",
    "PLAIN",
    "LOGIN",
)
"""The mechanisms usable with a user name and password, strongest first."""
