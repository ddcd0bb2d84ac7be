"""Regression tests for what the fuzzing campaign (fuzz/campaign.sh) found.

Each test is the minimal reproduction of one finding, kept after its fix.
"""

from __future__ import annotations

import pytest
from smtpbee._sasl import InvalidChallengeError
from smtpbee._scram import ScramSHA256

# Finding 1 (fuzz/fuzz_auth.py, 2026-12-01; crash input b"\x00\x01r=fuzz+,s=AAQQ...QQ==,i=64,x=y").
#
# SCRAM takes the salt of the server-first message (RFC 5802 §5.1: s=<base64>) with
# binascii.a2b_base64(strict_mode=True). On CPython before 3.13 strict mode does not
# refuse padding after a complete quantum (CPython gh-118314), so "s=AAAA==" and "s=AAAA="
# are accepted as the salt b"\0\0\0", though RFC 5802's grammar (base64 = *(4base64-char)
# [base64-3 / base64-2]) has no such form and the code means to refuse bad base64 ("the
# salt is not valid base64"). No security impact (the salt is the server's choice anyway;
# a server signature with extra padding is refused, since SHA-1 and SHA-256 signatures
# always end in a padded quantum), but a malformed message is taken as valid. Fix in
# core/_scram.py: match the RFC 4648 alphabet and padding before decoding, e.g.
# re.fullmatch(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?", text).
#
# Fixed by smtpbee._validation.strict_b64decode, which SCRAM (salt, server signature)
# and the AUTH challenges of the connection use.


@pytest.mark.parametrize("salt", [b"AAAA==", b"AAAA=", b"QSXCR+Q6sek8bf92=="])
def test_scram_refuses_a_salt_with_excess_base64_padding(salt: bytes) -> None:
    mechanism = ScramSHA256("user", "pencil", nonce="fuzz")
    mechanism.initial_response()
    with pytest.raises(InvalidChallengeError, match="salt"):
        mechanism.respond(b"r=fuzz+server,s=" + salt + b",i=4096")


@pytest.mark.parametrize(
    "challenge", [b"VXNlcm5hbWU6==", b"VXNlcm5hbWU6=", b"VXNlcm5hbWU", b"VX Nl"]
)
def test_an_auth_challenge_with_bad_base64_is_refused(challenge: bytes) -> None:
    from smtpbee import Auth, AuthChallengeReceived, Connection, Ehlo

    conn = Connection()
    conn.receive_data(b"220 mx\r\n")
    conn.next_event()
    conn.send(Ehlo("c.test"))
    conn.receive_data(b"250-mx\r\n250 AUTH LOGIN\r\n")
    conn.next_event()
    conn.send(Auth("LOGIN"))
    conn.receive_data(b"334 " + challenge + b"\r\n")
    event = conn.next_event()
    assert isinstance(event, AuthChallengeReceived) and event.challenge is None
