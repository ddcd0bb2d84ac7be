"""SMTP AUTH against the real Postfix of .ci/postfix-start, over implicit TLS and STARTTLS.

Postfix offers AUTH (Cyrus SASL: PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256) only
once TLS is on: at once on its implicit-TLS port (RFC 8314), after STARTTLS on the other.
Each scenario runs over the three transports; the CLI one through ``--transport``.
Skipped locally when Postfix is not running; in CI (CI=true) its absence fails.
A login over TLS whose certificate was verified needs no ``allow_insecure``.
"""

from __future__ import annotations

import re
import ssl
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Literal

import pytest
from flavours import Client, Flavour
from servers import PostfixServer
from smtpbee import AuthenticationRejected, InsecureAuthenticationError
from test_cli import as_json, smtpbee

# Every mechanism the instance's smtpd.conf lists; PLAIN and LOGIN are the ones required.
OFFERED = frozenset({"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"})


def client(
    flavour: Flavour, postfix: PostfixServer, tls: Literal["implicit", "starttls", "none"]
) -> Client:
    """A client of the implicit-TLS port (``tls="implicit"``) or of the STARTTLS one."""
    port = postfix.smtps_port if tls == "implicit" else postfix.port
    return flavour.client(host=postfix.host, port=port, tls=tls, ssl_context=postfix.client_context)


def message(postfix: PostfixServer, recipient: str, text: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"sender@{postfix.domain}"
    msg["To"] = recipient
    msg["Subject"] = "smtpbee postfix auth test"
    msg["Message-ID"] = make_msgid(domain="smtpbee.test")
    msg.set_content(text)
    return msg


def received_with(delivered: bytes) -> bytes:
    """The protocol Postfix wrote in its Received header (RFC 3848: ESMTPSA, ESMTPS ...)."""
    headers = delivered.split(b"\n\n", 1)[0]
    match = re.search(rb"^Received:(?:.|\n[ \t])*?\(Postfix\) with (\S+)", headers, re.M | re.I)
    assert match is not None, headers
    return match.group(1)


async def login_and_deliver(
    c: Client, postfix: PostfixServer, mechanism: str | None, text: str
) -> None:
    """Log in, send one message, QUIT; check it arrived from an authenticated session."""
    assert c.tls_info is not None and c.tls_info.verified
    assert c.session.tls_verified
    assert c.tls_info.version in ("TLSv1.2", "TLSv1.3")
    assert c.extensions.auth_mechanisms == OFFERED
    reply = await c.login(postfix.username, postfix.password, mechanism=mechanism)
    assert reply.code == 235
    recipient = postfix.new_address("auth")
    msg = message(postfix, recipient, text)
    result = await c.send_message(msg)
    assert result.accepted == [recipient]
    assert (await c.quit()).code == 221
    delivered = postfix.wait_for_message(msg["Message-ID"])
    # "SA": TLS and AUTH, as Postfix saw the session that delivered it.
    assert received_with(delivered) == b"ESMTPSA"
    assert text.encode() in delivered


# -- implicit TLS (RFC 8314) -------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("mechanism", [None, "PLAIN", "LOGIN"])
async def test_implicit_tls_login_then_delivery(
    flavour: Flavour, postfix: PostfixServer, mechanism: str | None
) -> None:
    async with client(flavour, postfix, "implicit") as c:
        await login_and_deliver(c, postfix, mechanism, f"implicit TLS, {mechanism}\n")


# -- STARTTLS ----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("mechanism", [None, *sorted(OFFERED)])
async def test_starttls_login_then_delivery(
    flavour: Flavour, postfix: PostfixServer, mechanism: str | None
) -> None:
    async with client(flavour, postfix, "starttls") as c:
        await login_and_deliver(c, postfix, mechanism, f"STARTTLS, {mechanism}\n")


@pytest.mark.anyio
async def test_no_auth_is_offered_before_starttls(flavour: Flavour, postfix: PostfixServer) -> None:
    async with client(flavour, postfix, "none") as c:
        assert c.tls_info is None
        assert "STARTTLS" in c.extensions
        assert "AUTH" not in c.extensions
        assert c.extensions.auth_mechanisms == frozenset()


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("tls", ["implicit", "starttls"])
@pytest.mark.parametrize("mechanism", [None, "PLAIN", "LOGIN"])
async def test_a_wrong_password_is_rejected(
    flavour: Flavour,
    postfix: PostfixServer,
    tls: Literal["implicit", "starttls"],
    mechanism: str | None,
) -> None:
    wrong = postfix.password + "-not"
    async with client(flavour, postfix, tls) as c:
        assert c.tls_info is not None and c.tls_info.verified
        with pytest.raises(AuthenticationRejected) as caught:
            await c.login(postfix.username, wrong, mechanism=mechanism)
        assert caught.value.code == 535
        assert wrong not in str(caught.value)
        # The refusal ends the attempt, not the session.
        assert (await c.noop()).code == 250


@pytest.mark.anyio
@pytest.mark.parametrize("tls", ["implicit", "starttls"])
async def test_no_password_goes_over_unverified_tls(
    flavour: Flavour, postfix: PostfixServer, tls: Literal["implicit", "starttls"]
) -> None:
    unchecked = ssl.create_default_context()
    unchecked.check_hostname = False
    unchecked.verify_mode = ssl.CERT_NONE
    port = postfix.smtps_port if tls == "implicit" else postfix.port
    sent: list[str] = []

    def transcript(direction: str, line: str) -> None:
        if direction == "C":
            sent.append(line)

    async with flavour.client(
        host=postfix.host, port=port, tls=tls, ssl_context=unchecked, transcript=transcript
    ) as c:
        assert c.tls_info is not None and not c.tls_info.verified
        assert not c.session.tls_verified
        assert c.extensions.auth_mechanisms == OFFERED
        with pytest.raises(InsecureAuthenticationError, match="not verified") as caught:
            await c.login(postfix.username, postfix.password)
        assert caught.value.over == "unverified TLS"
        assert postfix.password not in str(caught.value)
        # Refused before anything was sent: the session goes on.
        assert (await c.noop()).code == 250
    assert not any(line.startswith("AUTH") for line in sent)
    assert sent[-2:] == ["NOOP", "QUIT"]


# -- the command-line tool -----------------------------------------------------------------


def test_cli_send_over_implicit_tls_with_login(flavour: Flavour, postfix: PostfixServer) -> None:
    recipient = postfix.new_address("cli-auth")
    args = [
        "send", "--server", f"{postfix.host}:{postfix.smtps_port}", "--tls", "implicit",
        "--cafile", postfix.cafile, "--user", postfix.username,
        "--password-env", "POSTFIX_PASSWORD",
        "--from", f"sender@{postfix.domain}", "--to", recipient,
        "--subject", f"cli auth {recipient}", "--body", "Hello over implicit TLS.",
        "--transport", flavour.name, "--json",
    ]  # fmt: skip
    # The password goes through the environment variable --password-env names.
    run = smtpbee(*args, POSTFIX_PASSWORD=postfix.password)
    assert run.returncode == 0, run.stdout + run.stderr
    result = as_json(run)
    assert result["ok"] is True
    assert result["error"] is None
    assert result["tls"]["verified"] is True
    assert result["recipients"][recipient]["code"] == 250
    assert postfix.password not in run.stdout + run.stderr
    delivered = postfix.wait_for_message(lambda content: recipient.encode() in content)
    assert received_with(delivered) == b"ESMTPSA"
