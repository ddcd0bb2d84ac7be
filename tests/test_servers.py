# tests/test_servers: proof that the real test servers behave as the other tests assume.
#
# The client here is the standard library's smtplib, so a failure points at the servers,
# not at smtpbee. (The scripted server, smtpbee.testing, has tests/test_testing.py.)
"""Tests of the aiosmtpd and Postfix servers in tests/servers.py."""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import AUTH_USERS, AiosmtpdFactory
from servers import AiosmtpdServer, LoopbackCA, PostfixServer, TLSAiosmtpdServer

__all__: list[str] = []

CLIENT_NAME = "client.test"  # smtplib would otherwise ask DNS for our FQDN
MESSAGE = (
    b"From: a@client.test\r\n"
    b"To: b@example.test\r\n"
    b"Subject: servers\r\n"
    b"\r\n"
    b".leading dot is stuffed on the wire\r\n"
    b"\xc3\xa9 8-bit line\r\n"
)


def connect(server: AiosmtpdServer, timeout: float = 5.0) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, local_hostname=CLIENT_NAME, timeout=timeout)


# -- aiosmtpd ----------------------------------------------------------------------------


def test_aiosmtpd_records_the_message_as_received(aiosmtpd_server: AiosmtpdServer) -> None:
    with connect(aiosmtpd_server) as client:
        refused = client.sendmail("a@client.test", ["b@example.test"], MESSAGE, ["BODY=8BITMIME"])
    assert refused == {}
    [message] = aiosmtpd_server.messages
    assert message.mail_from == "a@client.test"
    assert message.rcpt_tos == ["b@example.test"]
    assert message.content == MESSAGE
    assert "BODY=8BITMIME" in message.mail_options
    assert message.tls is False
    assert message.auth_login is None
    assert message.ehlo_name == CLIENT_NAME
    assert aiosmtpd_server.connections == 1


def test_aiosmtpd_accepts_smtputf8(aiosmtpd_server: AiosmtpdServer) -> None:
    with connect(aiosmtpd_server) as client:
        client.ehlo()
        assert client.has_extn("smtputf8")
        client.sendmail("j\u00f6rg@client.test", ["b@example.test"], MESSAGE, ["SMTPUTF8"])
    assert aiosmtpd_server.messages[0].mail_from == "j\u00f6rg@client.test"


def test_aiosmtpd_refuses_listed_recipients(aiosmtpd_server: AiosmtpdServer) -> None:
    aiosmtpd_server.reject_recipients.add("bad@example.test")
    with connect(aiosmtpd_server) as client:
        refused = client.sendmail(
            "a@client.test", ["bad@example.test", "good@example.test"], MESSAGE
        )
    assert refused["bad@example.test"][0] == 550
    assert refused["bad@example.test"][1].startswith(b"5.1.1")
    assert aiosmtpd_server.messages[0].rcpt_tos == ["good@example.test"]


def test_aiosmtpd_refuses_the_message_on_demand(aiosmtpd_server: AiosmtpdServer) -> None:
    aiosmtpd_server.reject_message = True
    with connect(aiosmtpd_server) as client, pytest.raises(smtplib.SMTPDataError) as caught:
        client.sendmail("a@client.test", ["b@example.test"], MESSAGE)
    assert caught.value.smtp_code == 554
    reply_text = caught.value.smtp_error
    assert isinstance(reply_text, bytes) and reply_text.startswith(b"5.6.0")
    assert aiosmtpd_server.messages == []
    assert aiosmtpd_server.rejected[0].content == MESSAGE


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_aiosmtpd_authenticates_known_users(
    aiosmtpd_server: AiosmtpdServer, mechanism: str
) -> None:
    with connect(aiosmtpd_server) as client:
        client.ehlo()
        client.user, client.password = "alice", AUTH_USERS["alice"]
        method = client.auth_plain if mechanism == "PLAIN" else client.auth_login
        code, _ = client.auth(mechanism, method, initial_response_ok=mechanism == "PLAIN")
        assert code == 235
        client.sendmail("a@client.test", ["b@example.test"], MESSAGE)
    assert aiosmtpd_server.messages[0].auth_login == "alice"


def test_aiosmtpd_takes_utf8_passwords(aiosmtpd_server: AiosmtpdServer) -> None:
    # smtplib cannot encode a non-ASCII password, so the PLAIN response is built here.
    token = base64.b64encode(b"\0bob\0" + AUTH_USERS["bob"].encode()).decode()
    with connect(aiosmtpd_server) as client:
        client.ehlo()
        assert client.docmd("AUTH", f"PLAIN {token}")[0] == 235


def test_aiosmtpd_refuses_a_wrong_password(aiosmtpd_server: AiosmtpdServer) -> None:
    with connect(aiosmtpd_server) as client, pytest.raises(smtplib.SMTPAuthenticationError):
        client.login("alice", "not-the-password")


def test_starttls_server_verifies_with_the_test_ca(
    aiosmtpd_starttls_server: TLSAiosmtpdServer,
) -> None:
    server = aiosmtpd_starttls_server
    with connect(server) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")  # only offered once encrypted
        client.starttls(context=server.client_context)
        client.ehlo()
        client.login("alice", AUTH_USERS["alice"])
        client.sendmail("a@client.test", ["b@example.test"], MESSAGE)
    assert server.messages[0].tls is True
    assert server.messages[0].auth_login == "alice"
    assert server.cafile.endswith(".pem")


def test_starttls_server_can_require_tls(aiosmtpd_factory: AiosmtpdFactory) -> None:
    server = aiosmtpd_factory(tls_mode="starttls", require_starttls=True)
    with connect(server) as client:
        client.ehlo()
        code, _ = client.mail("a@client.test")
    assert code == 530


def test_starttls_certificate_fails_without_the_ca(
    aiosmtpd_starttls_server: TLSAiosmtpdServer,
) -> None:
    with connect(aiosmtpd_starttls_server) as client, pytest.raises(ssl.SSLCertVerificationError):
        client.starttls(context=ssl.create_default_context(cafile=None, cadata=None))


def test_implicit_tls_server(aiosmtpd_implicit_tls_server: TLSAiosmtpdServer) -> None:
    server = aiosmtpd_implicit_tls_server
    with smtplib.SMTP_SSL(
        server.host, server.port, local_hostname=CLIENT_NAME, context=server.client_context
    ) as client:
        client.login("alice", AUTH_USERS["alice"])
        client.sendmail("a@client.test", ["b@example.test"], MESSAGE)
    assert server.messages[0].tls is True
    assert server.messages[0].auth_login == "alice"


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "::1"])
def test_trust_ca_certificate_names_the_loopback(trust_ca: LoopbackCA, name: str) -> None:
    assert _handshake(trust_ca, name) == "TLSv1.3"


def test_trust_ca_certificate_names_nothing_else(trust_ca: LoopbackCA) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(trust_ca, "example.test")


def _handshake(ca: LoopbackCA, server_hostname: str) -> str | None:
    # Both ends of a TLS handshake over a socket pair, stepped by hand (bounded).
    server_side, client_side = socket.socketpair()
    with (
        ca.server_context().wrap_socket(
            server_side, server_side=True, do_handshake_on_connect=False
        ) as server_tls,
        ca.client_context().wrap_socket(
            client_side, server_hostname=server_hostname, do_handshake_on_connect=False
        ) as client_tls,
    ):
        server_tls.setblocking(False)
        client_tls.setblocking(False)
        pending = [client_tls, server_tls]
        for _ in range(1000):
            for sock in list(pending):
                try:
                    sock.do_handshake()
                    pending.remove(sock)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
            if not pending:
                break
            time.sleep(0.001)
        return client_tls.version()


# -- Postfix -----------------------------------------------------------------------------


def _message_with_id(message_id: str) -> bytes:
    return (
        f"From: a@client.test\r\nTo: x@example.test\r\nSubject: postfix\r\n"
        f"Message-ID: <{message_id}>\r\n\r\n.dot\r\nbody\r\n"
    ).encode()


def test_postfix_delivers_to_the_maildir(postfix: PostfixServer) -> None:
    recipient = postfix.new_address()
    message_id = recipient.replace("@", ".") + "@client.test"
    sent = _message_with_id(message_id)
    with smtplib.SMTP(postfix.host, postfix.port, local_hostname=CLIENT_NAME, timeout=10) as c:
        c.ehlo()
        assert c.has_extn("pipelining") and c.has_extn("chunking")
        refused = c.sendmail("a@client.test", [recipient, postfix.reject_address], sent)
    assert refused[postfix.reject_address][0] == 550
    delivered = postfix.wait_for_message(message_id, timeout=10)
    assert f"Delivered-To: {recipient}".encode() in delivered
    assert postfix.original_bytes(delivered) == sent
    by_predicate = postfix.wait_for_message(lambda m: recipient.encode() in m, timeout=1)
    assert by_predicate == delivered


def test_postfix_starttls_verifies_with_its_ca(postfix: PostfixServer) -> None:
    recipient = postfix.new_address("tls")
    message_id = recipient.replace("@", ".") + "@client.test"
    with smtplib.SMTP(postfix.host, postfix.port, local_hostname=CLIENT_NAME, timeout=10) as c:
        c.starttls(context=postfix.client_context)
        c.sendmail("a@client.test", [recipient], _message_with_id(message_id))
    delivered = postfix.wait_for_message(f"<{message_id}>", timeout=10)
    assert b"with ESMTPS" in delivered


def test_postfix_implicit_tls_port_offers_auth_at_once(postfix: PostfixServer) -> None:
    with smtplib.SMTP_SSL(
        postfix.host,
        postfix.smtps_port,
        local_hostname=CLIENT_NAME,
        timeout=10,
        context=postfix.client_context,
    ) as c:
        c.ehlo()
        assert not c.has_extn("starttls")
        assert {"PLAIN", "LOGIN"} <= set(c.esmtp_features["auth"].upper().split())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login(postfix.username, postfix.password + "-not")
        assert c.login(postfix.username, postfix.password)[0] == 235
    with smtplib.SMTP(postfix.host, postfix.port, local_hostname=CLIENT_NAME, timeout=10) as c:
        c.ehlo()
        assert not c.has_extn("auth")  # on the STARTTLS port only after STARTTLS


def test_postfix_facts_file_must_be_complete(trust_ca: LoopbackCA, tmp_path: Path) -> None:
    facts = [
        "SMTPBEE_POSTFIX_HOST=127.0.0.1",
        "SMTPBEE_POSTFIX_PORT=8025",
        "SMTPBEE_POSTFIX_SMTPS_PORT=8465",
        "SMTPBEE_POSTFIX_USER=smtpbee@example.test",
        "SMTPBEE_POSTFIX_PASSWORD=not-shown",
        f"SMTPBEE_POSTFIX_MAILDIR={tmp_path / 'maildir'}",
        f"SMTPBEE_POSTFIX_CAFILE={trust_ca.cafile}",
    ]
    env = tmp_path / "env"
    env.write_text("\n".join(facts) + "\n", encoding="utf-8")
    read = PostfixServer.from_env_file(env)
    assert (read.host, read.port, read.smtps_port) == ("127.0.0.1", 8025, 8465)
    assert (read.username, read.password) == ("smtpbee@example.test", "not-shown")
    assert read.maildir == tmp_path / "maildir"
    assert "not-shown" not in repr(read)
    # A file from an older start script, without the implicit-TLS port or the account.
    env.write_text("\n".join(facts[:2] + facts[5:]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"SMTPBEE_POSTFIX_SMTPS_PORT.*SMTPBEE_POSTFIX_PASSWORD"):
        PostfixServer.from_env_file(env)


def test_postfix_wait_is_bounded(postfix: PostfixServer) -> None:
    never: Callable[[bytes], bool] = lambda message: False  # noqa: E731
    with pytest.raises(TimeoutError, match="no delivered message matched"):
        postfix.wait_for_message(never, timeout=0.1)


def test_servers_listen_on_ipv6_loopback_and_nowhere_else(
    aiosmtpd_factory: AiosmtpdFactory,
) -> None:
    aiosmtpd = aiosmtpd_factory(host="::1")
    with smtplib.SMTP("::1", aiosmtpd.port, local_hostname=CLIENT_NAME, timeout=5) as client:
        assert client.noop()[0] == 250
    with pytest.raises(ValueError, match="or ::1 only"):
        AiosmtpdServer(host="0.0.0.0")
