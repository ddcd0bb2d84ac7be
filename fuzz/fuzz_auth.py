# fuzz/fuzz_auth
#
# Coverage-guided fuzzing of the SASL mechanisms' challenge handling (what a
# server's 334 challenges, base64-decoded, are turned into): SCRAM-SHA-256,
# SCRAM-SHA-1, CRAM-MD5, PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER, with an
# independent reference of RFC 5802 for SCRAM.
#
# Input layout: byte 0 picks the mechanism (byte % 7, in the order above),
# byte 1 holds flags, the rest is the server's challenges separated by LF (at
# most four are used). Flags:
#   bit 0  the initial response is deferred: the exchange starts with an empty
#          challenge (LOGIN: the user name is sent early instead);
#   bit 1  SCRAM: the first challenge is not sent as it is but built into a
#          well-formed server-first message (its comma-separated parts give
#          the server's nonce, the salt, the iteration count and extensions);
#   bit 2  SCRAM: the second challenge is the true server-final message (the
#          server signature the reference computes) followed by the fuzzed
#          bytes, which it must accept exactly when they are empty or start
#          a new attribute (",").
#
# Invariants:
#   * respond() returns bytes or raises InvalidChallengeError; success()
#     returns or raises AuthenticationIncomplete; nothing else escapes;
#   * the password and the token never appear in an exception message or a
#     repr;
#   * SCRAM accepts a server-first message exactly when the RFC 5802 grammar
#     of its nonce, salt and iteration count (checked here independently, with
#     the client's nonce and iteration range) does; what it sends back is the
#     client-final message the reference computes; it accepts a server-final
#     message exactly when its v= holds the reference's server signature;
#     success() passes only after that; a refused challenge ends the exchange
#     for good (every later challenge is refused);
#   * CRAM-MD5 answers "<user> <hex HMAC-MD5 of the challenge>"; PLAIN, LOGIN,
#     XOAUTH2 and OAUTHBEARER send what their specifications say, and an
#     OAuth error challenge is accepted only as a JSON object (OAUTHBEARER:
#     with "status") and kept as failure_details.
"""Atheris harness: SASL challenges (SCRAM against an RFC 5802 reference), all mechanisms."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable

from _harness import instrumented, main

with instrumented():
    from smtpbee._auth import CramMD5, Login, OAuthBearer, Plain, XOAuth2
    from smtpbee._sasl import AuthenticationIncomplete, InvalidChallengeError, SASLMechanism
    from smtpbee._scram import ScramMechanism, ScramSHA1, ScramSHA256

__all__ = ["MECHANISMS", "ScramReference", "test_one_input"]

USERNAME = "us=er,1"  # "=" and "," must be escaped in SCRAM's n=
PASSWORD = "pencil-S3CRET"
TOKEN = "ya29.T0KEN-S3CRET"
CLIENT_NONCE = "fuzz"
ITERATIONS = (1, 64)  # cheap PBKDF2; the range check is the same code for any bounds
_SECRETS = (PASSWORD, TOKEN)


def _scram256() -> SASLMechanism:
    return ScramSHA256(
        USERNAME,
        PASSWORD,
        nonce=CLIENT_NONCE,
        min_iterations=ITERATIONS[0],
        max_iterations=ITERATIONS[1],
    )


def _scram1() -> SASLMechanism:
    return ScramSHA1(
        USERNAME,
        PASSWORD,
        nonce=CLIENT_NONCE,
        min_iterations=ITERATIONS[0],
        max_iterations=ITERATIONS[1],
    )


MECHANISMS: tuple[Callable[[], SASLMechanism], ...] = (
    _scram256,
    _scram1,
    lambda: CramMD5(USERNAME, PASSWORD),
    lambda: Plain(USERNAME, PASSWORD),
    lambda: Login(USERNAME, PASSWORD),
    lambda: XOAuth2(USERNAME, TOKEN),
    lambda: OAuthBearer(USERNAME, TOKEN, host="mx.fuzz.test", port=587),
)

_PRINTABLE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_POSITIVE = re.compile(r"[1-9][0-9]*")


class ScramReference:
    """RFC 5802 §3, §5.1 and §7, written independently of smtpbee._scram."""

    def __init__(self, hash_name: str) -> None:
        self.hash_name = hash_name
        escaped = USERNAME.replace("=", "=3D").replace(",", "=2C")
        self.client_first_bare = f"n={escaped},r={CLIENT_NONCE}".encode()
        self.server_signature = b""

    def parse_server_first(self, message: bytes) -> tuple[str, bytes, int] | None:
        """(nonce, salt, iterations) if the client must accept the message, else None."""
        try:
            parts = message.decode("utf-8").split(",")
        except UnicodeDecodeError:
            return None
        # reserved-mext (m=) first means a mandatory extension nobody knows.
        if len(parts) < 3 or parts[0].startswith("m="):
            return None
        nonce, salt, count = parts[0], parts[1], parts[2]
        if not (nonce.startswith("r=") and salt.startswith("s=") and count.startswith("i=")):
            return None
        nonce, salt, count = nonce[2:], salt[2:], count[2:]
        if not (_PRINTABLE.fullmatch(nonce) and nonce.startswith(CLIENT_NONCE)):
            return None
        if nonce == CLIENT_NONCE or not salt or not _BASE64.fullmatch(salt):
            return None
        if not _POSITIVE.fullmatch(count) or len(count) > 10:
            return None
        iterations = int(count)
        if not ITERATIONS[0] <= iterations <= ITERATIONS[1]:
            return None
        return nonce, base64.b64decode(salt), iterations

    def client_final(self, server_first: bytes, nonce: str, salt: bytes, count: int) -> bytes:
        name = self.hash_name
        salted = hashlib.pbkdf2_hmac(name, PASSWORD.encode(), salt, count)
        client_key = hmac.new(salted, b"Client Key", name).digest()
        stored_key = hashlib.new(name, client_key).digest()
        without_proof = b"c=biws,r=" + nonce.encode()
        auth_message = self.client_first_bare + b"," + server_first + b"," + without_proof
        signature = hmac.new(stored_key, auth_message, name).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", name).digest()
        self.server_signature = hmac.new(server_key, auth_message, name).digest()
        return without_proof + b",p=" + base64.b64encode(proof)

    def server_final_ok(self, message: bytes) -> bool:
        try:
            first = message.decode("utf-8").split(",")[0]
        except UnicodeDecodeError:
            return False
        if not first.startswith("v=") or not _BASE64.fullmatch(first[2:]):
            return False
        return base64.b64decode(first[2:]) == self.server_signature


def _built_server_first(material: bytes) -> bytes:
    """A well-formed server-first message made from fuzzed material."""
    parts = material.split(b",")
    suffix = "".join(chr(0x21 + b % 94) for b in parts[0]).replace(",", "-") or "x"
    salt = parts[1] if len(parts) > 1 and parts[1] else b"\x00"
    count_bytes = parts[2] if len(parts) > 2 else b""
    count = ITERATIONS[0] + int.from_bytes(count_bytes[:2]) % ITERATIONS[1]
    extensions = b"".join(
        b",%c=%s" % (0x61 + part[0] % 26, part[1:].replace(b"=", b"3D") or b"1")
        for part in parts[3:]
        if part
    )
    nonce = f"r={CLIENT_NONCE}{suffix}".encode()
    return b"%s,s=%s,i=%d%s" % (nonce, base64.b64encode(salt), count, extensions)


def _check_secrets(*texts: str) -> None:
    for text in texts:
        for secret in _SECRETS:
            assert secret not in text, "a secret leaked into an exception message or a repr"


def _respond(mechanism: SASLMechanism, challenge: bytes) -> bytes | None:
    """The response, or None when the challenge was refused (as it may be)."""
    try:
        response = mechanism.respond(challenge)
    except InvalidChallengeError as exc:
        _check_secrets(str(exc), repr(exc))
        return None
    assert type(response) is bytes, response
    return response


def _success(mechanism: SASLMechanism) -> bool:
    try:
        mechanism.success()
    except AuthenticationIncomplete as exc:
        _check_secrets(str(exc))
        return False
    return True


def _scram(mechanism: ScramMechanism, flags: int, challenges: list[bytes]) -> None:
    reference = ScramReference(mechanism.hash_name)
    client_first = b"n,," + reference.client_first_bare
    if flags & 1:
        assert _respond(mechanism, b"") == client_first
    else:
        assert mechanism.initial_response() == client_first
    if not challenges:
        assert not _success(mechanism), "SCRAM succeeded before the server-first message"
        return
    server_first = _built_server_first(challenges[0]) if flags & 2 else challenges[0]
    expected = reference.parse_server_first(server_first)
    response = _respond(mechanism, server_first)
    if expected is None:
        assert response is None, ("SCRAM accepted a bad server-first message", server_first)
        _check_refuses_everything(mechanism, challenges[1:])
        return
    assert response is not None, ("SCRAM refused a good server-first message", server_first)
    assert response == reference.client_final(server_first, *expected), (server_first, response)
    if len(challenges) < 2:
        assert not _success(mechanism), "SCRAM succeeded before the server-final message"
        return
    server_final = challenges[1]
    if flags & 4:
        server_final = b"v=" + base64.b64encode(reference.server_signature) + challenges[1]
    verified = reference.server_final_ok(server_final)
    response = _respond(mechanism, server_final)
    assert (response == b"") if verified else (response is None), (server_final, response)
    assert _success(mechanism) == verified, server_final
    _check_refuses_everything(mechanism, challenges[2:])


def _check_refuses_everything(mechanism: SASLMechanism, challenges: list[bytes]) -> None:
    for challenge in challenges or [b""]:
        assert _respond(mechanism, challenge) is None, "a finished SCRAM exchange went on"


def _json_error(challenge: bytes, *, need_status: bool) -> bool:
    try:
        document = json.loads(challenge.decode("utf-8"))
    except (ValueError, RecursionError):
        return False
    return isinstance(document, dict) and (not need_status or "status" in document)


def _other(mechanism: SASLMechanism, flags: int, challenges: list[bytes]) -> None:
    deferred = bool(flags & 1)
    if isinstance(mechanism, Login):
        mechanism.send_username_early = deferred
        answers = [USERNAME.encode(), PASSWORD.encode()]
        expected_first = answers.pop(0) if deferred else None
        assert mechanism.initial_response() == expected_first
        for challenge in challenges:
            response = _respond(mechanism, challenge)
            assert response == (answers.pop(0) if answers else None), response
        assert _success(mechanism) == (not answers)
        return
    if isinstance(mechanism, CramMD5):
        assert mechanism.initial_response() is None
        for index, challenge in enumerate(challenges):
            response = _respond(mechanism, challenge)
            if index or not challenge:
                assert response is None, response
                if not index:
                    return  # an empty challenge: refused, and nothing was answered
            else:
                digest = hmac.new(PASSWORD.encode(), challenge, "md5").hexdigest()
                assert response == f"{USERNAME} {digest}".encode(), response
        assert _success(mechanism) == bool(challenges and challenges[0])
        return
    if isinstance(mechanism, Plain):
        first = f"\0{USERNAME}\0{PASSWORD}".encode()
    elif isinstance(mechanism, XOAuth2):
        first = f"user={USERNAME}\x01auth=Bearer {TOKEN}\x01\x01".encode()
    else:
        assert isinstance(mechanism, OAuthBearer)
        first = (
            f"n,a=us=3Der=2C1,\x01host=mx.fuzz.test\x01port=587\x01auth=Bearer {TOKEN}\x01\x01"
        ).encode()
    if deferred:
        if challenges and challenges[0]:
            assert _respond(mechanism, challenges[0]) is None, "a challenge before the start"
            return
        assert _respond(mechanism, b"") == first
        challenges = challenges[1:]
    else:
        assert mechanism.initial_response() == first
    failed = False
    for index, challenge in enumerate(challenges):
        response = _respond(mechanism, challenge)
        if isinstance(mechanism, Plain) or index:
            assert response is None, response
            break
        need_status = isinstance(mechanism, OAuthBearer)
        if not _json_error(challenge, need_status=need_status):
            assert response is None, response
            break
        assert response == (b"\x01" if need_status else b""), response
        assert mechanism.failure_details == challenge.decode()
        failed = True
    assert _success(mechanism) == (not failed)


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    mechanism = MECHANISMS[data[0] % len(MECHANISMS)]()
    flags = data[1]
    challenges = data[2:].split(b"\n")[:4] if len(data) > 2 else []
    try:
        if isinstance(mechanism, ScramMechanism):
            _scram(mechanism, flags, challenges)
        else:
            _other(mechanism, flags, challenges)
    finally:
        _check_secrets(repr(mechanism))


if __name__ == "__main__":
    main(test_one_input)
