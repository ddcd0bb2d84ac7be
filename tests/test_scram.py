import base64
import hashlib
import hmac
from collections.abc import Callable
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smtpbee._errors import InvalidInputError
from smtpbee._sasl import AuthenticationIncomplete, InvalidChallengeError
from smtpbee._scram import ScramMechanism, ScramSHA1, ScramSHA256

SECRET = "s3cr3t-Pa55w0rd"

# RFC 5802 §5
SHA1_NONCE = "fyko+d2lbbFgONRv9qkxdawL"
SHA1_SERVER_FIRST = b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
SHA1_CLIENT_FINAL = (
    b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
)
SHA1_SERVER_FINAL = b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="

# RFC 7677 §3
SHA256_NONCE = "rOprNGfwEbeRWgbNEkqO"
SHA256_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
SHA256_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
SHA256_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def unescape_saslname(escaped: str) -> str:
    return escaped.replace("=2C", ",").replace("=3D", "=")


def sha1_at_client_final() -> ScramSHA1:
    mechanism = ScramSHA1("user", "pencil", nonce=SHA1_NONCE)
    mechanism.initial_response()
    mechanism.respond(SHA1_SERVER_FIRST)
    return mechanism


def sha1_after_client_first() -> ScramSHA1:
    mechanism = ScramSHA1("user", "pencil", nonce=SHA1_NONCE)
    mechanism.initial_response()
    return mechanism


def test_scram_sha1_rfc5802_example() -> None:
    mechanism = ScramSHA1("user", "pencil", nonce=SHA1_NONCE)
    assert mechanism.initial_response() == b"n,,n=user,r=" + SHA1_NONCE.encode()
    assert mechanism.respond(SHA1_SERVER_FIRST) == SHA1_CLIENT_FINAL
    assert mechanism.respond(SHA1_SERVER_FINAL) == b""
    mechanism.success()


def test_scram_sha256_rfc7677_example() -> None:
    mechanism = ScramSHA256("user", "pencil", nonce=SHA256_NONCE)
    assert mechanism.initial_response() == b"n,,n=user,r=" + SHA256_NONCE.encode()
    assert mechanism.respond(SHA256_SERVER_FIRST) == SHA256_CLIENT_FINAL
    assert mechanism.respond(SHA256_SERVER_FINAL) == b""
    mechanism.success()


def test_scram_deferred_initial_response() -> None:
    mechanism = ScramSHA1("user", "pencil", nonce=SHA1_NONCE)
    assert mechanism.respond(b"") == b"n,,n=user,r=" + SHA1_NONCE.encode()
    assert mechanism.respond(SHA1_SERVER_FIRST) == SHA1_CLIENT_FINAL
    with pytest.raises(InvalidChallengeError, match="non-empty"):
        ScramSHA1("user", "pencil").respond(b"r=abc")


def test_scram_password_is_saslprepped() -> None:
    # U+2168 ROMAN NUMERAL NINE prepares to "IX": both give the same proof.
    typed = ScramSHA256("user", "\u2168", nonce=SHA256_NONCE)
    plain = ScramSHA256("user", "IX", nonce=SHA256_NONCE)
    typed.initial_response()
    plain.initial_response()
    assert typed.respond(SHA256_SERVER_FIRST) == plain.respond(SHA256_SERVER_FIRST)


def test_scram_username_is_saslprepped_and_escaped() -> None:
    mechanism = ScramSHA256("I\u00adX,a=b", "pencil", nonce="abc")
    assert mechanism.initial_response() == b"n,,n=IX=2Ca=3Db,r=abc"


def test_scram_username_may_hold_unassigned_code_points() -> None:
    mechanism = ScramSHA256("d\u0221", "pencil", nonce="abc")
    assert mechanism.initial_response() == "n,,n=d\u0221,r=abc".encode()


def test_scram_refuses_a_password_saslprep_prohibits() -> None:
    with pytest.raises(InvalidInputError, match="password") as caught:
        ScramSHA256("user", SECRET + "\x07")
    assert SECRET not in str(caught.value)
    with pytest.raises(InvalidInputError, match=r"A\.1"):
        ScramSHA256("user", "p\u0221")


@pytest.mark.parametrize("username", ["", "\u00ad", "bell\x07"])
def test_scram_refuses_bad_usernames(username: str) -> None:
    with pytest.raises(InvalidInputError, match="user name"):
        ScramSHA256(username, "pencil")


@pytest.mark.parametrize("nonce", ["", "a,b", "caf\u00e9", "sp ace"])
def test_scram_refuses_a_bad_nonce_argument(nonce: str) -> None:
    with pytest.raises(InvalidInputError, match="nonce"):
        ScramSHA256("user", "pencil", nonce=nonce)


@pytest.mark.parametrize(("low", "high"), [(0, 10), (10, 9)])
def test_scram_refuses_a_bad_iteration_range(low: int, high: int) -> None:
    with pytest.raises(InvalidInputError, match="iterations"):
        ScramSHA256("user", "pencil", min_iterations=low, max_iterations=high)


def test_scram_random_nonces_are_fresh_and_printable() -> None:
    first = ScramSHA256("user", "pencil").initial_response()
    second = ScramSHA256("user", "pencil").initial_response()
    assert first != second
    nonce = first.removeprefix(b"n,,n=user,r=")
    assert len(nonce) >= 24
    assert b"," not in nonce
    assert all(0x21 <= byte <= 0x7E for byte in nonce)


def test_scram_base_class_cannot_be_used_directly() -> None:
    with pytest.raises(TypeError, match="abstract"):
        ScramMechanism("user", "pencil")


def test_scram_is_extensible_with_another_hash() -> None:
    class ScramSHA512(ScramMechanism):
        name: ClassVar[str] = "SCRAM-SHA-512"
        hash_name: ClassVar[str] = "sha512"

    # The server side, written from RFC 5802 §3.
    salt, iterations, server_nonce = b"salty", 4096, "clientNONCEserver"
    mechanism = ScramSHA512("user", "pencil", nonce="clientNONCE")
    client_first_bare = mechanism.initial_response().removeprefix(b"n,,")
    server_first = f"r={server_nonce},s={base64.b64encode(salt).decode()},i={iterations}".encode()
    client_final = mechanism.respond(server_first)
    without_proof, proof_text = client_final.rsplit(b",p=", 1)
    auth_message = b",".join((client_first_bare, server_first, without_proof))
    salted = hashlib.pbkdf2_hmac("sha512", b"pencil", salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha512")
    stored_key = hashlib.sha512(client_key).digest()
    signature = hmac.digest(stored_key, auth_message, "sha512")
    proof = base64.b64decode(proof_text)
    recovered_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
    assert hashlib.sha512(recovered_key).digest() == stored_key
    server_signature = hmac.digest(
        hmac.digest(salted, b"Server Key", "sha512"), auth_message, "sha512"
    )
    assert mechanism.respond(b"v=" + base64.b64encode(server_signature)) == b""
    mechanism.success()


@pytest.mark.parametrize(
    ("server_first", "complaint"),
    [
        (b"r=someoneelse123,s=QSXCR+Q6sek8bf92,i=4096", "nonce"),
        (b"r=" + SHA1_NONCE.encode() + b",s=QSXCR+Q6sek8bf92,i=4096", "nonce"),
        (b"r=" + SHA1_NONCE.encode() + b"ab cd,s=QSXCR+Q6sek8bf92,i=4096", "nonce"),
        (b"r=" + SHA1_NONCE.encode() + b"x,s=!!notbase64!!,i=4096", "base64"),
        (b"r=" + SHA1_NONCE.encode() + b"x,s=QSXCR+Q6sek8bf9,i=4096", "base64"),
        (b"r=" + SHA1_NONCE.encode() + b"x,s=,i=4096", "empty"),
        (b"r=" + SHA1_NONCE.encode() + b"x,s=QSXCR+Q6sek8bf92,i=0", "positive integer"),
        (b"r=" + SHA1_NONCE.encode() + b"x,s=QSXCR+Q6sek8bf92,i=-1", "positive integer"),
        (b"r=" + SHA1_NONCE.encode() + b"x,s=QSXCR+Q6sek8bf92,i=04096", "positive integer"),
        (b"r=" + SHA1_NONCE.encode() + b"x,s=QSXCR+Q6sek8bf92,i=many", "positive integer"),
        (b"r=" + SHA1_NONCE.encode() + b"x,s=QSXCR+Q6sek8bf92,i=" + b"9" * 5000, "positive"),
        (b"r=" + SHA1_NONCE.encode() + b"x,s=QSXCR+Q6sek8bf92,i=1000001", "range"),
        (b"r=" + SHA1_NONCE.encode() + b"x,s=QSXCR+Q6sek8bf92,i=4095", "range"),
        (b"m=must-know,r=" + SHA1_NONCE.encode() + b"x,s=QSXCR+Q6sek8bf92,i=4096", "m="),
        (b"r=" + SHA1_NONCE.encode() + b"x,s=QSXCR+Q6sek8bf92", "lacks"),
        (b"s=QSXCR+Q6sek8bf92,r=" + SHA1_NONCE.encode() + b"x,i=4096", "r="),
        (b"r=" + SHA1_NONCE.encode() + b"x,i=4096,s=QSXCR+Q6sek8bf92", "s="),
        (b"\xffr=abc,s=QSXCR+Q6sek8bf92,i=4096", "UTF-8"),
        (b"", "lacks"),
    ],
)
def test_scram_refuses_a_bad_server_first(server_first: bytes, complaint: str) -> None:
    mechanism = sha1_after_client_first()
    with pytest.raises(InvalidChallengeError, match=complaint):
        mechanism.respond(server_first)
    with pytest.raises(InvalidChallengeError, match="after its final"):
        mechanism.respond(SHA1_SERVER_FINAL)
    with pytest.raises(AuthenticationIncomplete):
        mechanism.success()


def test_scram_iteration_bounds_are_configurable() -> None:
    mechanism = ScramSHA1("user", "pencil", nonce="abc", min_iterations=1, max_iterations=2)
    mechanism.initial_response()
    client_final = mechanism.respond(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=2")
    assert client_final.startswith(b"c=biws,r=abcdef,p=")


def test_scram_ignores_extensions_after_the_iteration_count() -> None:
    mechanism = sha1_after_client_first()
    client_final = mechanism.respond(SHA1_SERVER_FIRST + b",x=unknown-extension")
    assert client_final.startswith(b"c=biws,r=" + SHA1_NONCE.encode())
    assert client_final != SHA1_CLIENT_FINAL  # the extension is part of the AuthMessage


def test_scram_wrong_server_signature_is_refused() -> None:
    mechanism = sha1_at_client_final()
    wrong = b"v=" + base64.b64encode(b"\0" * 20)
    with pytest.raises(InvalidChallengeError, match="impostor"):
        mechanism.respond(wrong)
    with pytest.raises(AuthenticationIncomplete, match="impostor"):
        mechanism.success()


def test_scram_server_signature_of_another_exchange_is_refused() -> None:
    mechanism = sha1_at_client_final()
    with pytest.raises(InvalidChallengeError, match="signature is wrong"):
        mechanism.respond(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def test_scram_server_error_is_reported() -> None:
    mechanism = sha1_at_client_final()
    with pytest.raises(InvalidChallengeError, match="invalid-proof") as caught:
        mechanism.respond(b"e=invalid-proof")
    assert caught.value.server_error == "invalid-proof"
    with pytest.raises(AuthenticationIncomplete):
        mechanism.success()


def test_scram_server_error_text_is_bounded_and_printable() -> None:
    mechanism = sha1_at_client_final()
    with pytest.raises(InvalidChallengeError) as caught:
        mechanism.respond(b"e=bad\x1b[31m" + b"x" * 1000)
    error = caught.value.server_error
    assert error is not None
    assert "\x1b" not in error
    assert len(error) < 250
    assert error.endswith("...")


@pytest.mark.parametrize(
    ("server_final", "complaint"),
    [
        (b"v=!!!", "base64"),
        (b"x=whatever", "v="),
        (b"", "v="),
        (b"\xff", "UTF-8"),
    ],
)
def test_scram_refuses_a_bad_server_final(server_final: bytes, complaint: str) -> None:
    mechanism = sha1_at_client_final()
    with pytest.raises(InvalidChallengeError, match=complaint):
        mechanism.respond(server_final)


def test_scram_server_final_with_an_extension_still_verifies() -> None:
    mechanism = sha1_at_client_final()
    assert mechanism.respond(SHA1_SERVER_FINAL + b",x=ext") == b""
    mechanism.success()


def test_scram_missing_server_final_is_incomplete() -> None:
    mechanism = sha1_at_client_final()
    with pytest.raises(AuthenticationIncomplete, match="server signature"):
        mechanism.success()
    with pytest.raises(AuthenticationIncomplete):
        ScramSHA256("user", "pencil").success()


def test_scram_refuses_a_challenge_after_the_server_final() -> None:
    mechanism = sha1_at_client_final()
    mechanism.respond(SHA1_SERVER_FINAL)
    with pytest.raises(InvalidChallengeError, match="after its final"):
        mechanism.respond(b"")


@given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1))
def test_scram_username_round_trips_through_the_client_first(username: str) -> None:
    client_first = ScramSHA256(username, "pencil", nonce="abc").initial_response().decode()
    gs2_flag, authzid, name_attribute, nonce_attribute = client_first.split(",")
    assert (gs2_flag, authzid, nonce_attribute) == ("n", "", "r=abc")
    assert unescape_saslname(name_attribute.removeprefix("n=")) == username


# --- secrets never shown -------------------------------------------------------------


def _after_the_client_first(mechanism: ScramMechanism) -> ScramMechanism:
    mechanism.initial_response()
    return mechanism


@pytest.mark.parametrize(
    "factory",
    [
        lambda: _after_the_client_first(ScramSHA1("tim", SECRET, nonce=SHA1_NONCE)),
        lambda: _after_the_client_first(ScramSHA256("tim", SECRET, nonce=SHA256_NONCE)),
    ],
)
def test_repr_and_str_never_show_the_secret(factory: Callable[[], ScramMechanism]) -> None:
    mechanism = factory()
    assert SECRET not in repr(mechanism)
    assert SECRET not in str(mechanism)
    assert "tim" in repr(mechanism)


def test_scram_repr_hides_derived_secrets_too() -> None:
    mechanism = sha1_at_client_final()
    shown = repr(mechanism)
    assert "pencil" not in shown
    assert "rmF9pqV8S7suAoZWja4dJRkFsKQ" not in shown
    assert "b'" not in shown  # no derived key, signature or prepared password
    assert shown == "ScramSHA1(username='user', min_iterations=4096, max_iterations=1000000)"
