# smtpbee/_scram
#
# The SCRAM family of SASL mechanisms (RFC 5802; SCRAM-SHA-256 from RFC 7677),
# without channel binding, as a SASLMechanism (see _sasl for the contract).
#
# Theory of operation
# -------------------
# SCRAM is a challenge-response exchange of four messages, which the object
# walks as a small state machine (_ScramStep):
#
#   START -> CLIENT_FIRST_SENT      initial_response(), or respond(b"") when deferred:
#                                   client-first  n,,n=<user>,r=<client nonce>
#   CLIENT_FIRST_SENT -> CLIENT_FINAL_SENT
#                                   respond(server-first  r=<nonce>,s=<salt>,i=<count>):
#                                   client-final  c=biws,r=<nonce>,p=<proof>
#   CLIENT_FINAL_SENT -> VERIFIED   respond(server-final  v=<server signature>): b""
#   CLIENT_FIRST_SENT or CLIENT_FINAL_SENT -> FAILED
#                                   a server message refused (InvalidChallengeError)
#
# The password never crosses the wire: the proof shows that the client knows
# the salted password, and the server signature (computed from the same
# AuthMessage when the client-final is built, compared in constant time) shows
# that the server knows it too. The exchange is mutual, so success() accepts a
# 235 only in VERIFIED.
#
# Invariants:
#   * the user name (as a query string) and the password (as a stored string)
#     go through SASLprep when the object is built, so a refusal comes before
#     any byte is produced;
#   * VERIFIED and FAILED are terminal: every later challenge is refused; an
#     object serves one exchange, so a nonce is never reused;
#   * the password, everything derived from it (the prepared password, the
#     expected server signature) and the nonce are fields with repr=False.
#
# Decisions where the specifications leave room:
#   * SCRAM refuses iteration counts outside [min_iterations, max_iterations]
#     (4096 and 1,000,000 by default): a hostile server could otherwise pin the
#     CPU, or ask for a count so low that the proof it receives is cheap to
#     attack offline. RFC 7677 asks for at least 4096.
#   * Attributes after the iteration count (server-first) or the signature
#     (server-final) are extensions that RFC 5802 tells a client to ignore; a
#     mandatory extension (m=) is refused.
from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import ClassVar

from ._errors import InvalidInputError
from ._sasl import (
    AuthenticationIncomplete,
    InvalidChallengeError,
    SASLMechanism,
    escape_saslname,
    printable_server_text,
    refuse_challenge_before_start,
    refuse_empty,
)
from ._saslprep import saslprep
from ._validation import strict_b64decode

__all__ = ["ScramMechanism", "ScramSHA1", "ScramSHA256"]

# RFC 5802 "printable": visible ASCII except the comma that separates attributes.
_SCRAM_PRINTABLE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
_SCRAM_ITERATIONS = re.compile(r"[1-9][0-9]{0,9}")


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
        refuse_empty(self.name, "user name", username)
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
        self._client_first_bare = f"n={escape_saslname(username)},r={self._client_nonce}".encode()

    def initial_response(self) -> bytes:
        self._step = _ScramStep.CLIENT_FIRST_SENT
        return _GS2_HEADER + self._client_first_bare

    def respond(self, challenge: bytes) -> bytes:
        step = self._step
        if step is _ScramStep.START:
            refuse_challenge_before_start(self.name, challenge)
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
        salt = strict_b64decode(salt_text)
        if salt is None:
            raise self._fail("the salt is not valid base64")
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
            error = printable_server_text(first[2:])
            raise self._fail(f"the server reported an error: {error}", server_error=error)
        signature_text = self._attribute(first, "v")
        signature = strict_b64decode(signature_text)
        if signature is None:
            raise self._fail("the server signature is not valid base64")
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
