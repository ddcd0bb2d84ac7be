"""XCLIENT and PROXY headers against the real Postfix of .ci/postfix-start.

The instance lets 127.0.0.1 use XCLIENT on its STARTTLS port (8025) and reads
HAProxy PROXY headers (v1 and v2) on 8029; a client may claim the documentation
ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32). The claimed
client must show in the Received header of the delivered message and in the log.
The hardened and the deliberately permissive listeners are checked too: the audit
relies on what they are.

Skipped locally when Postfix is not running; in CI (CI=true) its absence fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from servers import PostfixServer
from smtpbee import (
    Mail,
    ProxyHeader,
    Rcpt,
    Rset,
    UnsupportedExtensionError,
    Vrfy,
    Xclient,
)
from smtpbee.transports.sync import SMTPClient

ENV = Path(os.environ.get("SMTPBEE_POSTFIX_ENV", "/tmp/smtpbee-postfix/env"))


@dataclass(frozen=True)
class Listeners:
    """The ports .ci/postfix-start adds for XCLIENT, PROXY and the permissive audit target."""

    xclient_port: int
    proxy_port: int
    permissive_port: int
    log: Path


@pytest.fixture
def listeners(postfix: PostfixServer) -> Listeners:
    facts = dict(
        line.split("=", 1) for line in ENV.read_text(encoding="utf-8").splitlines() if "=" in line
    )
    needed = ("XCLIENT_PORT", "PROXY_PORT", "PERMISSIVE_PORT", "LOG")
    missing = [key for key in needed if f"SMTPBEE_POSTFIX_{key}" not in facts]
    if missing:
        reason = f"{ENV} lacks {', '.join(missing)}: run .ci/postfix-start again"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return Listeners(
        xclient_port=int(facts["SMTPBEE_POSTFIX_XCLIENT_PORT"]),
        proxy_port=int(facts["SMTPBEE_POSTFIX_PROXY_PORT"]),
        permissive_port=int(facts["SMTPBEE_POSTFIX_PERMISSIVE_PORT"]),
        log=Path(facts["SMTPBEE_POSTFIX_LOG"]),
    )


def message(postfix: PostfixServer, tag: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"sender@{postfix.domain}"
    msg["To"] = postfix.new_address(tag)
    msg["Subject"] = f"smtpbee {tag} test"
    msg["Message-ID"] = make_msgid(domain="smtpbee.test")
    msg.set_content("claimed\n")
    return msg


def received(delivered: bytes) -> str:
    """The first Received header Postfix added, unfolded."""
    match = re.search(rb"^Received: (.*(?:\n[ \t].*)*)", delivered, re.MULTILINE)
    assert match is not None, delivered[:400]
    return re.sub(r"\s+", " ", match.group(1).decode("ascii"))


def wait_for_log(log: Path, needle: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if needle in line:
                return line
        if time.monotonic() >= deadline:
            raise AssertionError(f"{needle!r} not in {log} after {timeout}s")
        time.sleep(0.1)


# ----------------------------------------------------------------------------
# XCLIENT (XCLIENT_README), on the STARTTLS port, from 127.0.0.1


@pytest.mark.parametrize("tls", ["none", "starttls"])
def test_xclient_claims_a_client_that_the_delivered_message_names(
    postfix: PostfixServer, listeners: Listeners, tls: str
) -> None:
    name = f"xclient-{time.time_ns()}.example.org"
    msg = message(postfix, "xclient")
    with SMTPClient(
        postfix.host,
        listeners.xclient_port,
        tls=tls,
        ssl_context=postfix.client_context,
        timeout=15,
    ) as client:
        assert {"NAME", "ADDR", "HELO", "LOGIN"} <= (client.extensions.xclient_attributes or set())
        reply = client.command(Xclient({"NAME": name, "ADDR": "192.0.2.10"}))
        assert reply.code == 220
        client.ehlo()
        # The claimed client is not an authorized XCLIENT host: the new offer says so,
        # and the client checks against the new offer.
        assert client.extensions.xclient_attributes is None
        with pytest.raises(UnsupportedExtensionError, match="does not offer XCLIENT"):
            client.command(Xclient({"NAME": "again.example.org"}))
        result = client.send_message(msg)
    assert result.accepted == [msg["To"]]
    header = received(postfix.wait_for_message(msg["Message-ID"]))
    assert f"({name} [192.0.2.10])" in header
    assert ("with ESMTPS" in header) is (tls == "starttls")
    queue_id = result.data.text.rsplit(" ", 1)[-1] if result.data else ""
    assert f"{queue_id}: client={name}[192.0.2.10]" in wait_for_log(listeners.log, name)


def test_xclient_claims_an_ipv6_client_and_a_port(
    postfix: PostfixServer, listeners: Listeners
) -> None:
    msg = message(postfix, "xclient6")
    with SMTPClient(
        postfix.host, listeners.xclient_port, tls="starttls", ssl_context=postfix.client_context
    ) as client:
        attributes = {"ADDR": "2001:db8::25", "PORT": "40025", "NAME": "[UNAVAILABLE]"}
        assert client.command(Xclient(attributes)).code == 220
        client.ehlo()
        client.send_message(msg)
    header = received(postfix.wait_for_message(msg["Message-ID"]))
    assert "(unknown [IPv6:2001:db8::25])" in header


def test_an_attribute_the_server_does_not_list_is_refused_before_sending(
    postfix: PostfixServer, listeners: Listeners
) -> None:
    with SMTPClient(
        postfix.host, listeners.permissive_port, tls="none", ssl_context=postfix.client_context
    ) as client:
        # Only the hardened port allows XCLIENT; here it is not even offered.
        assert client.extensions.xclient_attributes is None
        with pytest.raises(UnsupportedExtensionError):
            client.command(Xclient({"ADDR": "192.0.2.10"}))
        assert client.noop().code == 250


# ----------------------------------------------------------------------------
# PROXY headers (smtpd_upstream_proxy_protocol=haproxy reads v1 and v2)


@contextlib.contextmanager
def behind_proxy(
    postfix: PostfixServer, listeners: Listeners, header: ProxyHeader
) -> Iterator[SMTPClient]:
    sock = socket.create_connection((postfix.host, listeners.proxy_port), timeout=15)
    try:
        sock.sendall(header.to_bytes())
        with SMTPClient(
            postfix.host,
            listeners.proxy_port,
            sock=sock,
            tls="starttls",
            ssl_context=postfix.client_context,
            timeout=15,
        ) as client:
            yield client
    finally:
        sock.close()


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize(
    ("source", "shown"),
    [("198.51.100.7", "[198.51.100.7]"), ("2001:db8::7", "[IPv6:2001:db8::7]")],
)
def test_a_proxy_header_names_the_client_in_the_delivered_message(
    postfix: PostfixServer, listeners: Listeners, version: int, source: str, shown: str
) -> None:
    destination = "192.0.2.25" if "." in source else "2001:db8::25"
    port = 40000 + time.time_ns() % 20000
    header = ProxyHeader(version, (source, port), (destination, 25))  # type: ignore[arg-type]
    msg = message(postfix, f"proxy{version}")
    with behind_proxy(postfix, listeners, header) as client:
        assert client.tls_info is not None and client.tls_info.verified
        result = client.send_message(msg)
    assert result.accepted == [msg["To"]]
    assert f"(unknown {shown})" in received(postfix.wait_for_message(msg["Message-ID"]))


def test_a_connection_without_a_proxy_header_gets_no_service(
    postfix: PostfixServer, listeners: Listeners
) -> None:
    with socket.create_connection((postfix.host, listeners.proxy_port), timeout=15) as sock:
        sock.sendall(b"EHLO client.test\r\n")
        answer = sock.recv(1024)
    # Postfix takes the EHLO line for a malformed header: no greeting, no session.
    assert not answer.startswith(b"220")


# ----------------------------------------------------------------------------
# What `smtpbee audit` is to find: the hardened port and the permissive one


def test_the_hardened_port_refuses_vrfy_and_relaying(
    postfix: PostfixServer, listeners: Listeners
) -> None:
    with SMTPClient(
        postfix.host, postfix.port, tls="starttls", ssl_context=postfix.client_context
    ) as client:
        assert "VRFY" not in client.extensions
        assert client.command(Vrfy("postmaster")).code == 502
        assert client.command(Mail(sender=f"sender@{postfix.domain}")).code == 250
        refused = client.command(Rcpt(recipient="someone@relay-target.example"))
        assert refused.code == 554 and b"Relay access denied" in refused.lines[0]
        client.command(Rset())


def test_the_permissive_port_relays_answers_vrfy_and_offers_auth_in_plaintext(
    postfix: PostfixServer, listeners: Listeners
) -> None:
    with SMTPClient(postfix.host, listeners.permissive_port, tls="none") as client:
        assert client.tls_info is None
        assert "STARTTLS" not in client.extensions
        assert "PLAIN" in client.extensions.auth_mechanisms
        assert client.command(Vrfy("postmaster")).code == 252
        assert client.command(Mail(sender=f"sender@{postfix.domain}")).code == 250
        # RCPT only: nothing is sent (and the instance discards foreign mail anyway).
        assert client.command(Rcpt(recipient="someone@relay-target.example")).code == 250
        assert client.command(Rcpt(recipient=postfix.reject_address)).code == 550
        client.command(Rset())
