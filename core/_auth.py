# smtpbee/_auth
#
# SASL mechanisms for SMTP AUTH (RFC 4954), as small synchronous step objects
# that never touch the network. The connection owns the wire: it sends
# `AUTH <name> [initial-response]`, base64-decodes each `334` challenge, hands
# the raw bytes to `respond()`, base64-encodes what comes back, sends `*` to
# cancel when `respond()` raises, and calls `success()` on `235`. A mechanism
# only turns decoded challenges into raw responses, so it can be tested with the
# RFC examples alone.
#
# Mechanisms are pluggable: any subclass of SASLMechanism (a name, a
# sends_secret_in_clear flag, initial_response() and respond()) works with the
# connection; MECHANISMS is only the set smtpbee ships.
#
# Contract of a mechanism object:
#   * it serves one exchange and keeps its own step count; build a new one to
#     try again (SCRAM in particular must never reuse its nonce);
#   * initial_response() returns what goes on the AUTH line (None: nothing;
#     b"": an empty response, sent as "="). If the connection cannot send it
#     there (RFC 4954: a line over 512 octets), it may send `AUTH <name>` alone
#     and answer the server's first, empty, challenge by calling respond(b""):
#     a client-first mechanism answers that with its initial response;
#   * respond() raises InvalidChallengeError for a challenge that makes no
#     sense at this step (including one too many), never a bare ValueError;
#   * success() raises AuthenticationIncomplete when a 235 arrives before the
#     mechanism finished: for SCRAM that means the server never proved it knows
#     the password, which is what an impostor looks like;
#   * secrets (passwords, tokens) are fields with repr=False and never appear in
#     a repr, a str or an exception message; bad input is refused with
#     InvalidInputError when the object is built, before any byte is produced.
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
#   * SCRAM refuses iteration counts outside [min_iterations, max_iterations]
#     (4096 and 1,000,000 by default): a hostile server could otherwise pin the
#     CPU, or ask for a count so low that the proof it receives is cheap to
#     attack offline. RFC 7677 asks for at least 4096.
from __future__ import annotations

import abc
import base64
import binascii
import enum
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar

from ._errors import InvalidInputError, RemoteProtocolError, UnsupportedExtensionError
from ._saslprep import saslprep

__all__ = [
    "MECHANISMS",
    "PASSWORD_MECHANISM_PREFERENCE",
    "AuthenticationIncomplete",
    "BearerToken",
    "CramMD5",
    "InvalidChallengeError",
    "Login",
    "OAuthBearer",
    "Plain",
    "SASLMechanism",
    "ScramMechanism",
    "ScramSHA1",
    "ScramSHA256",
    "XOAuth2",
    "choose_mechanism",
]

BearerToken = str | Callable[[], str]
"""An OAuth 2.0 bearer token, or a zero-argument callable that returns a fresh one."""

# C0 controls and DEL: never allowed in the text fields of the OAuth mechanisms,
# where \x01 separates key-value pairs.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# RFC 5802 "printable": visible ASCII except the comma that separates attributes.
_SCRAM_PRINTABLE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
_SCRAM_ITERATIONS = re.compile(r"[1-9][0-9]{0,9}")
# Visible ASCII: wide enough for every RFC 6750 b64token, narrow enough that a
# token can never smuggle a separator into the message.
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
# An error text quoted from the server is bounded, so a hostile server cannot
# make an exception message (and every log line that shows it) huge.
_MAX_QUOTED_SERVER_TEXT = 200


class InvalidChallengeError(RemoteProtocolError):
    """The server sent a challenge that makes no sense for the mechanism at this step.

    The connection answers with ``*`` to cancel the exchange.

    Attributes:
        server_error: the error text the server sent (SCRAM ``e=``), if any; never
            a secret.
    """

    def __init__(self, message: str, *, server_error: str | None = None) -> None:
        super().__init__(message)
        self.server_error = server_error


class AuthenticationIncomplete(RemoteProtocolError):
    """The server said 235 before the mechanism finished.

    For SCRAM this means the server did not prove that it knows the password (its
    signature was missing or wrong): treat the connection as an attack, not as an
    authenticated session.
    """


class SASLMechanism(abc.ABC):
    """One SASL exchange, as a synchronous step object without I/O.

    Subclass it to add a mechanism: set ``name`` and ``sends_secret_in_clear``,
    override ``initial_response()`` if the client speaks first, and implement
    ``respond()``.

    Attributes:
        name: the mechanism name as SMTP AUTH sends it, e.g. "PLAIN".
        sends_secret_in_clear: True when a listener on the connection learns the
            secret (PLAIN, LOGIN, XOAUTH2, OAUTHBEARER); the connection refuses such
            mechanisms over plaintext unless the user opts in.
    """

    name: ClassVar[str]
    sends_secret_in_clear: ClassVar[bool] = False

    def initial_response(self) -> bytes | None:
        """The raw bytes to send with the AUTH command.

        Returns:
            None for no initial response; b"" for an empty one (sent as "=").
        """
        return None

    @abc.abstractmethod
    def respond(self, challenge: bytes) -> bytes:
        """Answer one 334 challenge.

        Args:
            challenge: the challenge, already base64-decoded.

        Returns:
            The raw response, which the connection base64-encodes.

        Raises:
            InvalidChallengeError: the challenge makes no sense at this step.
        """

    def success(self) -> None:
        """Called when the server replies 235.

        Raises:
            AuthenticationIncomplete: the mechanism had not finished.
        """
        return None

    @property
    def failure_details(self) -> str | None:
        """The error the server explained itself with during the exchange, if any."""
        return None


def _refuse_control_characters(mechanism: str, what: str, value: str) -> None:
    if _CONTROL.search(value):
        raise InvalidInputError(f"{mechanism}: the {what} contains a control character")


def _refuse_nul(mechanism: str, what: str, value: str) -> None:
    if "\0" in value:
        raise InvalidInputError(f"{mechanism}: the {what} contains a NUL character")


def _refuse_empty(mechanism: str, what: str, value: str) -> None:
    if not value:
        raise InvalidInputError(f"{mechanism}: the {what} is empty")


def _refuse_challenge_before_start(mechanism: str, challenge: bytes) -> None:
    # A client-first mechanism whose initial response was deferred gets one
    # empty challenge first (RFC 4422 §5); anything else is nonsense.
    if challenge:
        raise InvalidChallengeError(
            f"{mechanism}: the server sent a non-empty challenge before the client's first message"
        )


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


def _escape_saslname(name: str) -> str:
    """Escape a name for a GS2 header or SCRAM ``n=`` (RFC 5801 §4, RFC 5802 §5.1)."""
    return name.replace("=", "=3D").replace(",", "=2C")


def _printable_server_text(raw: str) -> str:
    """Server-supplied text made safe to put in an exception message."""
    shown = "".join(char if char.isprintable() else "\N{REPLACEMENT CHARACTER}" for char in raw)
    if len(shown) > _MAX_QUOTED_SERVER_TEXT:
        return shown[:_MAX_QUOTED_SERVER_TEXT] + "..."
    return shown


def _parse_json_error(mechanism: str, challenge: bytes, *, require_status: bool) -> str:
    """Check that an OAuth error challenge is a JSON object; return its text."""
    try:
        text = challenge.decode("utf-8")
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
        _refuse_empty(self.name, "user name", self.username)
        _refuse_empty(self.name, "password", self.password)

    def initial_response(self) -> bytes:
        self._sent = True
        return f"{self.authzid}\0{self.username}\0{self.password}".encode()

    def respond(self, challenge: bytes) -> bytes:
        if self._sent:
            raise InvalidChallengeError("PLAIN: the server sent a challenge after the credentials")
        _refuse_challenge_before_start(self.name, challenge)
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
        _refuse_empty(self.name, "user name", self.username)

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
        _refuse_empty(self.name, "user name", self.username)

    def respond(self, challenge: bytes) -> bytes:
        if self._responded:
            raise InvalidChallengeError("CRAM-MD5: the server sent a second challenge")
        if not challenge:
            raise InvalidChallengeError("CRAM-MD5: the server sent an empty challenge")
        self._responded = True
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
        _refuse_empty(self.name, "user name", self.username)
        if not callable(self.token):
            _resolve_token(self.name, self.token)

    def initial_response(self) -> bytes:
        token = _resolve_token(self.name, self.token)
        self._sent = True
        return f"user={self.username}\x01auth=Bearer {token}\x01\x01".encode()

    def respond(self, challenge: bytes) -> bytes:
        if not self._sent:
            _refuse_challenge_before_start(self.name, challenge)
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
        authzid = f"a={_escape_saslname(self.username)}" if self.username else ""
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
            _refuse_challenge_before_start(self.name, challenge)
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


class _ScramStep(enum.Enum):
    START = enum.auto()
    CLIENT_FIRST_SENT = enum.auto()
    CLIENT_FINAL_SENT = enum.auto()
    VERIFIED = enum.auto()
    FAILED = enum.auto()


# SCRAM without channel binding: the client does not support it (RFC 5802 §6).
_GS2_HEADER = b"n,,"
_CHANNEL_BINDING = base64.b64encode(_GS2_HEADER)


@dataclass(eq=False)
class ScramMechanism(SASLMechanism):
    """The SCRAM family (RFC 5802), without channel binding.

    Subclass it with ``name`` and ``hash_name`` (a hashlib name) for a new member;
    use ScramSHA256 or ScramSHA1 otherwise. The user name (as a query string)
    and the password (as a stored string) are prepared with SASLprep when the
    object is built. The exchange is mutual: the server's final message proves
    that it knows the password, and ``success()`` refuses a 235 without that proof.

    Args:
        username: the user name; not empty after SASLprep.
        password: the password.
        nonce: the client nonce (visible ASCII without ","); random by default.
            Give one only to reproduce a known exchange.
        min_iterations: the lowest PBKDF2 iteration count accepted from the server.
        max_iterations: the highest one, which bounds the work a server can impose.

    Raises:
        InvalidInputError: SASLprep refuses the user name or password, the user
            name is empty, or the nonce is not printable.
    """

    hash_name: ClassVar[str]

    username: str
    password: str = field(repr=False)
    nonce: str | None = field(default=None, kw_only=True, repr=False)
    min_iterations: int = field(default=4096, kw_only=True)
    max_iterations: int = field(default=1_000_000, kw_only=True)
    _step: _ScramStep = field(default=_ScramStep.START, init=False, repr=False)
    _password_bytes: bytes = field(default=b"", init=False, repr=False)
    _client_nonce: str = field(default="", init=False, repr=False)
    _client_first_bare: bytes = field(default=b"", init=False, repr=False)
    _server_signature: bytes = field(default=b"", init=False, repr=False)

    def __post_init__(self) -> None:
        if type(self) is ScramMechanism:
            raise TypeError("ScramMechanism is abstract; use ScramSHA256, ScramSHA1 or a subclass")
        try:
            username = saslprep(self.username, allow_unassigned=True)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{self.name}: the user name is refused: {exc}") from exc
        _refuse_empty(self.name, "user name", username)
        try:
            self._password_bytes = saslprep(self.password).encode()
        except InvalidInputError as exc:
            raise InvalidInputError(f"{self.name}: the password is refused: {exc}") from exc
        if self.nonce is None:
            self._client_nonce = secrets.token_urlsafe(24)
        elif _SCRAM_PRINTABLE.fullmatch(self.nonce):
            self._client_nonce = self.nonce
        else:
            raise InvalidInputError(f"{self.name}: the nonce must be visible ASCII without ','")
        if not 0 < self.min_iterations <= self.max_iterations:
            raise InvalidInputError(f"{self.name}: need 0 < min_iterations <= max_iterations")
        self._client_first_bare = f"n={_escape_saslname(username)},r={self._client_nonce}".encode()

    def initial_response(self) -> bytes:
        self._step = _ScramStep.CLIENT_FIRST_SENT
        return _GS2_HEADER + self._client_first_bare

    def respond(self, challenge: bytes) -> bytes:
        step = self._step
        if step is _ScramStep.START:
            _refuse_challenge_before_start(self.name, challenge)
            return self.initial_response()
        if step is _ScramStep.CLIENT_FIRST_SENT:
            return self._client_final(challenge)
        if step is _ScramStep.CLIENT_FINAL_SENT:
            self._verify_server_final(challenge)
            return b""
        raise InvalidChallengeError(
            f"{self.name}: the server sent a challenge after its final message"
        )

    def success(self) -> None:
        if self._step is not _ScramStep.VERIFIED:
            raise AuthenticationIncomplete(
                f"{self.name}: the server reported success without proving that it knows the"
                " password (no valid server signature): it may be an impostor"
            )

    def _fail(self, message: str, *, server_error: str | None = None) -> InvalidChallengeError:
        self._step = _ScramStep.FAILED
        return InvalidChallengeError(f"{self.name}: {message}", server_error=server_error)

    def _decode(self, challenge: bytes, which: str) -> list[str]:
        try:
            return challenge.decode("utf-8").split(",")
        except UnicodeDecodeError:
            raise self._fail(f"the {which} message is not UTF-8") from None

    def _client_final(self, server_first: bytes) -> bytes:
        attributes = self._decode(server_first, "server-first")
        if attributes[0].startswith("m="):
            raise self._fail("the server requires an extension (m=) this client does not know")
        if len(attributes) < 3:
            raise self._fail("the server-first message lacks r=, s= or i=")
        server_nonce = self._attribute(attributes[0], "r")
        salt_text = self._attribute(attributes[1], "s")
        iterations_text = self._attribute(attributes[2], "i")
        # Later attributes are extensions that RFC 5802 tells a client to ignore.

        if not (
            server_nonce.startswith(self._client_nonce)
            and len(server_nonce) > len(self._client_nonce)
            and _SCRAM_PRINTABLE.fullmatch(server_nonce)
        ):
            raise self._fail("the server nonce does not extend the client nonce")
        try:
            salt = binascii.a2b_base64(salt_text, strict_mode=True)
        except ValueError:
            raise self._fail("the salt is not valid base64") from None
        if not salt:
            raise self._fail("the salt is empty")
        if not _SCRAM_ITERATIONS.fullmatch(iterations_text):
            raise self._fail("the iteration count is not a positive integer")
        iterations = int(iterations_text)
        if not self.min_iterations <= iterations <= self.max_iterations:
            raise self._fail(
                f"the iteration count {iterations} is outside the accepted range"
                f" {self.min_iterations}..{self.max_iterations}"
            )

        digest = self.hash_name
        salted_password = hashlib.pbkdf2_hmac(digest, self._password_bytes, salt, iterations)
        client_key = hmac.digest(salted_password, b"Client Key", digest)
        stored_key = hashlib.new(digest, client_key).digest()
        without_proof = b"c=" + _CHANNEL_BINDING + b",r=" + server_nonce.encode()
        auth_message = b",".join((self._client_first_bare, server_first, without_proof))
        client_signature = hmac.digest(stored_key, auth_message, digest)
        proof = (int.from_bytes(client_key) ^ int.from_bytes(client_signature)).to_bytes(
            len(client_key)
        )
        server_key = hmac.digest(salted_password, b"Server Key", digest)
        self._server_signature = hmac.digest(server_key, auth_message, digest)
        self._step = _ScramStep.CLIENT_FINAL_SENT
        return without_proof + b",p=" + base64.b64encode(proof)

    def _verify_server_final(self, server_final: bytes) -> None:
        first = self._decode(server_final, "server-final")[0]
        if first.startswith("e="):
            error = _printable_server_text(first[2:])
            raise self._fail(f"the server reported an error: {error}", server_error=error)
        signature_text = self._attribute(first, "v")
        try:
            signature = binascii.a2b_base64(signature_text, strict_mode=True)
        except ValueError:
            raise self._fail("the server signature is not valid base64") from None
        if not hmac.compare_digest(signature, self._server_signature):
            raise self._fail(
                "the server signature is wrong: the server does not know the password"
                " and may be an impostor"
            )
        self._step = _ScramStep.VERIFIED

    def _attribute(self, part: str, key: str) -> str:
        if not part.startswith(key + "="):
            raise self._fail(f"expected the attribute {key}= in the server's message")
        return part[len(key) + 1 :]


@dataclass(eq=False)
class ScramSHA1(ScramMechanism):
    """SCRAM-SHA-1 (RFC 5802). See ScramMechanism for the arguments."""

    name: ClassVar[str] = "SCRAM-SHA-1"
    hash_name: ClassVar[str] = "sha1"


@dataclass(eq=False)
class ScramSHA256(ScramMechanism):
    """SCRAM-SHA-256 (RFC 7677). See ScramMechanism for the arguments."""

    name: ClassVar[str] = "SCRAM-SHA-256"
    hash_name: ClassVar[str] = "sha256"


MECHANISMS: Mapping[str, type[SASLMechanism]] = MappingProxyType(
    {
        mechanism.name: mechanism
        for mechanism in (
            ScramSHA256,
            ScramSHA1,
            CramMD5,
            Plain,
            Login,
            XOAuth2,
            OAuthBearer,
        )
    }
)
"""The mechanisms smtpbee ships, by SASL name."""

PASSWORD_MECHANISM_PREFERENCE: tuple[str, ...] = (
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
    "CRAM-MD5",
    "PLAIN",
    "LOGIN",
)
"""The mechanisms usable with a user name and password, strongest first."""

_PASSWORD_MECHANISMS: Mapping[str, Callable[[str, str], SASLMechanism]] = MappingProxyType(
    {
        "SCRAM-SHA-256": ScramSHA256,
        "SCRAM-SHA-1": ScramSHA1,
        "CRAM-MD5": CramMD5,
        "PLAIN": Plain,
        "LOGIN": Login,
    }
)


def choose_mechanism(
    offered: Iterable[str], username: str, password: str, *, allow_cleartext: bool = True
) -> SASLMechanism:
    """The strongest offered mechanism that can authenticate with a password.

    Mechanisms are tried in PASSWORD_MECHANISM_PREFERENCE order; one that
    refuses the credentials (e.g. SCRAM when SASLprep prohibits a character of the
    password) is passed over for the next.

    Args:
        offered: the mechanism names the server advertised (case-insensitive).
        username: the user name.
        password: the password.
        allow_cleartext: False to pass over the mechanisms that send the password
            itself (PLAIN, LOGIN).

    Returns:
        A fresh mechanism object, ready for one exchange.

    Raises:
        UnsupportedExtensionError: no offered mechanism fits; the message names
            what was offered and why each candidate was passed over.
    """
    offered_names = [name.upper() for name in offered]
    reasons: list[str] = []
    last_refusal: InvalidInputError | None = None
    for name in PASSWORD_MECHANISM_PREFERENCE:
        if name not in offered_names:
            continue
        factory = _PASSWORD_MECHANISMS[name]
        if MECHANISMS[name].sends_secret_in_clear and not allow_cleartext:
            reasons.append(f"{name} would send the password in clear")
            continue
        try:
            return factory(username, password)
        except InvalidInputError as exc:
            reasons.append(str(exc))
            last_refusal = exc
    shown = ", ".join(_printable_server_text(name) for name in offered_names) or "none"
    message = (
        f"no usable AUTH mechanism: the server offers {shown}; with a password smtpbee can"
        f" use {', '.join(PASSWORD_MECHANISM_PREFERENCE)}"
    )
    if reasons:
        message += " (" + "; ".join(reasons) + ")"
    raise UnsupportedExtensionError(message) from last_refusal
