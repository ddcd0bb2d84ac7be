"""The three transports against real MTAs besides Postfix: Exim, OpenSMTPD, Dovecot LMTP.

The instances are those of .ci/exim-start, .ci/opensmtpd-start and .ci/lmtp-start (see
tests/mtas.py for what each offers here, and why not more). Each test runs once per
transport. Skipped locally when an MTA is not running; in CI (CI=true) its absence fails.

What arrives is read back from the MTA's maildir and compared, byte for byte, with what
was sent, once the trace headers the MTA put in front are taken off.

- Exim: STARTTLS and implicit TLS with the test CA (verified), AUTH PLAIN, LOGIN and
  CRAM-MD5, PIPELINING with CHUNKING (MAIL, RCPT and BDAT LAST in one write), SMTPUTF8,
  DSN (the success notification it sends back carries ENVID and ORCPT).
- OpenSMTPD 6.8: plaintext only. Its TLS fails on Debian 12 (OpenSSL 3), which is
  asserted as a clean ConnectionLostError; without TLS it offers no AUTH. No PIPELINING,
  CHUNKING or SMTPUTF8: DATA in lock-step, and a UTF-8 address is refused before a byte
  is sent, while UTF-8 headers still go as 8BITMIME.
- Dovecot LMTP: one reply per recipient after the content, a mailbox over quota refused
  alone (552) while the others of the same message get it; over TCP, through an
  ``lmtp://`` URL and over its Unix socket.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Literal
from urllib.parse import quote

import pytest
from flavours import Client, Flavour
from mtas import MTA, MTAName, require
from smtpbee import (
    AuthenticationRejected,
    ConnectionLostError,
    SendResult,
    TLSVerificationError,
    UnsupportedExtensionError,
)
from smtpbee.transports._message import prepare_message

pytestmark = [pytest.mark.anyio, pytest.mark.mta]

# What each MTA offers here (after STARTTLS for Exim), and what it must not.
OFFERS: dict[MTAName, frozenset[str]] = {
    "exim": frozenset({"SIZE", "8BITMIME", "PIPELINING", "CHUNKING", "SMTPUTF8", "DSN", "AUTH"}),
    "opensmtpd": frozenset({"SIZE", "8BITMIME", "DSN", "ENHANCEDSTATUSCODES"}),
    "lmtp": frozenset({"8BITMIME", "PIPELINING", "CHUNKING", "ENHANCEDSTATUSCODES"}),
}
LACKS: dict[MTAName, frozenset[str]] = {
    "exim": frozenset({"STARTTLS"}),  # over TLS already
    "opensmtpd": frozenset({"PIPELINING", "CHUNKING", "SMTPUTF8", "STARTTLS", "AUTH"}),
    "lmtp": frozenset({"SMTPUTF8", "DSN", "STARTTLS", "AUTH", "SIZE"}),
}
EXIM_MECHANISMS = frozenset({"PLAIN", "LOGIN", "CRAM-MD5"})
BIG = 50_000_000


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def exim() -> MTA:
    """The Exim of .ci/exim-start (skips locally, fails in CI, if absent)."""
    return require("exim")


@pytest.fixture(scope="session")
def opensmtpd() -> MTA:
    """The OpenSMTPD of .ci/opensmtpd-start (skips locally, fails in CI, if absent)."""
    return require("opensmtpd")


@pytest.fixture(scope="session")
def lmtp() -> MTA:
    """The Dovecot LMTP server of .ci/lmtp-start (skips locally, fails in CI, if absent)."""
    return require("lmtp")


@pytest.fixture(params=["exim", "opensmtpd"])
def smtp_mta(request: pytest.FixtureRequest) -> MTA:
    """Each SMTP server in turn."""
    mta: MTA = request.getfixturevalue(request.param)
    return mta


@pytest.fixture(params=["exim", "opensmtpd", "lmtp"])
def any_mta(request: pytest.FixtureRequest) -> MTA:
    """Each MTA in turn, LMTP included."""
    mta: MTA = request.getfixturevalue(request.param)
    return mta


# -- helpers -------------------------------------------------------------------------------


class Transcript:
    """The ``transcript`` hook: every C:/S: line of a session, in order."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, direction: str, line: str) -> None:
        self.lines.append(f"{direction}: {line}")

    def sent(self, prefix: str) -> list[str]:
        """The client's lines that start with ``prefix``."""
        return [line[3:] for line in self.lines if line.startswith(f"C: {prefix}")]


def client(
    flavour: Flavour,
    mta: MTA,
    tls: Literal["starttls", "implicit", "none"] | None = None,
    **kwargs: Any,
) -> Client:
    """A client of the MTA: over STARTTLS for Exim, in plaintext for the others.

    ``tls="implicit"`` connects to the implicit-TLS port.
    """
    if tls is None:
        tls = "starttls" if mta.name == "exim" else "none"
    port = mta.smtps_port if tls == "implicit" else mta.port
    assert port is not None
    if mta.client_context is not None:
        kwargs.setdefault("ssl_context", mta.client_context)
    return flavour.client(host=mta.host, port=port, tls=tls, lmtp=mta.lmtp, **kwargs)


def raw_message(
    mta: MTA, sender: str, recipients: list[str], body: str, *, subject: str = "smtpbee"
) -> tuple[str, bytes]:
    """A message as bytes with CRLF line ends, and its Message-ID.

    Date and Message-ID are always there: OpenSMTPD adds them when missing, and the
    comparison is of everything after the trace headers.
    """
    message_id = make_msgid(domain="smtpbee.test")
    head = (
        f"From: <{sender}>\r\nTo: {', '.join(f'<{r}>' for r in recipients)}\r\n"
        f"Subject: {subject} ({mta.name})\r\nDate: {format_datetime(_now())}\r\n"
        f"Message-ID: {message_id}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    )
    text = body.replace("\r\n", "\n").replace("\n", "\r\n")
    return message_id, (head + text).encode("utf-8")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


# Lines that dot-stuffing, line-length handling or mbox-style escaping could change.
AWKWARD_BODY = "".join(
    f"{line}\n"
    for line in (
        "Hello.",
        ".",
        "..",
        ".leading dot",
        "From the start of a line (no mbox escaping in a maildir)",
        "trailing spaces   ",
        "\ttab first",
        "x" * 998,
        "",
        "last line",
    )
)


def assert_delivered(mta: MTA, message_id: str, sent: bytes, count: int) -> list[bytes]:
    """Wait for ``count`` copies; each must be ``sent`` once the trace headers are off."""
    copies = [content for _, content in mta.wait_for_messages(message_id, count)]
    for content in copies:
        assert MTA.original_bytes(content) == sent
    return copies


def assert_offers(mta: MTA, c: Client) -> None:
    for keyword in OFFERS[mta.name]:
        assert keyword in c.extensions, (mta.name, keyword, c.extensions)
    for keyword in LACKS[mta.name]:
        assert keyword not in c.extensions, (mta.name, keyword, c.extensions)


def received_with(delivered: bytes) -> str:
    """The protocol Exim wrote in its Received header (RFC 3848: esmtps, esmtpsa ...)."""
    match = re.search(rb"^Received:(?:.|\r?\n[ \t])*?\bwith (\S+)", delivered, re.M | re.I)
    assert match is not None, delivered[:500]
    return match.group(1).decode().lower()


# -- every SMTP server: extensions, content, recipients --------------------------------------


async def test_what_each_server_offers(flavour: Flavour, any_mta: MTA) -> None:
    async with client(flavour, any_mta) as c:
        assert_offers(any_mta, c)
        if any_mta.name == "exim":
            assert c.extensions.auth_mechanisms == EXIM_MECHANISMS
            assert c.extensions.size_limit == 64 * 1024 * 1024
        if any_mta.name == "opensmtpd":
            assert c.extensions.size_limit == 64 * 1024 * 1024
        assert (await c.noop()).code == 250


async def test_byte_exact_delivery_to_several_recipients(flavour: Flavour, smtp_mta: MTA) -> None:
    sender = smtp_mta.new_address("sender")
    recipients = [smtp_mta.new_address(tag) for tag in ("one", "two", "three")]
    message_id, body = raw_message(smtp_mta, sender, recipients, AWKWARD_BODY)
    transcript = Transcript()
    async with client(flavour, smtp_mta, transcript=transcript) as c:
        result = await c.sendmail(sender, recipients, body)
    assert result.accepted == recipients
    assert result.refused == {}
    assert result.data is not None and result.data.code == 250
    [start] = [i for i, line in enumerate(transcript.lines) if line.startswith("C: MAIL")]
    if "CHUNKING" in OFFERS[smtp_mta.name]:
        # PIPELINING and CHUNKING: MAIL, every RCPT and the whole message as one BDAT
        # LAST chunk go out before the first reply is read.
        group = transcript.lines[start : start + len(recipients) + 2]
        assert all(line.startswith("C: ") for line in group), transcript.lines
        assert group[-1] == f"C: BDAT {len(body)} LAST <{len(body)} octets>"
        assert transcript.sent("DATA") == []
    else:
        # No PIPELINING: each command waits for its reply.
        assert transcript.lines[start + 1].startswith("S: 250")
        assert transcript.lines[start + 2].startswith("C: RCPT")
        assert transcript.sent("DATA") == ["DATA"]
        assert transcript.sent("BDAT") == []
    # One copy per recipient in the one maildir.
    assert_delivered(smtp_mta, message_id, body, count=len(recipients))


async def test_send_message_is_delivered_as_prepared(flavour: Flavour, smtp_mta: MTA) -> None:
    recipients = [smtp_mta.new_address("to"), smtp_mta.new_address("cc")]
    msg = EmailMessage()
    msg["From"] = smtp_mta.new_address("from")
    msg["To"] = recipients[0]
    msg["Cc"] = recipients[1]
    msg["Bcc"] = smtp_mta.new_address("bcc")
    msg["Subject"] = "send_message"
    msg["Date"] = format_datetime(_now())
    msg["Message-ID"] = make_msgid(domain="smtpbee.test")
    msg.set_content("Hello.\n.leading dot\n")
    async with client(flavour, smtp_mta) as c:
        expected = prepare_message(msg, sender=None, recipients=None, server=c.extensions).data
        result = await c.send_message(msg)
    assert len(result.accepted) == 3
    copies = assert_delivered(smtp_mta, msg["Message-ID"], expected, count=3)
    assert all(b"Bcc:" not in content for content in copies)


async def test_a_refused_recipient_is_a_partial_success(flavour: Flavour, smtp_mta: MTA) -> None:
    sender = smtp_mta.new_address("sender")
    good = [smtp_mta.new_address("good"), smtp_mta.new_address("also")]
    message_id, body = raw_message(smtp_mta, sender, good, "partial\n")
    async with client(flavour, smtp_mta) as c:
        result = await c.sendmail(sender, [good[0], smtp_mta.reject_address, good[1]], body)
        # The session goes on after the partial success.
        assert (await c.noop()).code == 250
    assert result.accepted == good
    assert list(result.refused) == [smtp_mta.reject_address]
    assert result.refused[smtp_mta.reject_address].code == 550
    assert result.data is not None and result.data.code == 250
    assert_delivered(smtp_mta, message_id, body, count=2)


async def test_a_batch_with_a_refused_recipient_in_the_middle(
    flavour: Flavour, smtp_mta: MTA
) -> None:
    sender = smtp_mta.new_address("batch")
    items: list[tuple[str, list[str], bytes]] = []
    expected: list[tuple[str, bytes, int]] = []
    for index in range(3):
        recipients = [smtp_mta.new_address(f"batch{index}")]
        if index == 1:
            recipients.append(smtp_mta.reject_address)
        message_id, body = raw_message(smtp_mta, sender, recipients, f"message {index}\n")
        items.append((sender, recipients, body))
        expected.append((message_id, body, 1))
    async with client(flavour, smtp_mta) as c:
        results = await c.send_batch(items)
    assert all(isinstance(r, SendResult) for r in results), results
    assert [sorted(r.refused) for r in results if isinstance(r, SendResult)] == [
        [],
        [smtp_mta.reject_address],
        [],
    ]
    for message_id, body, count in expected:
        assert_delivered(smtp_mta, message_id, body, count)


# -- a 50 MB message, streamed ----------------------------------------------------------------


def big_body(head: bytes) -> tuple[Callable[[], Iterator[bytes]], str, int]:
    """A generator of a ~50 MB message, its SHA-256 and its size.

    Every other line starts with a dot, so dot-stuffing runs across the piece
    boundaries of a DATA stream.
    """
    lines = b".0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n"
    lines += b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n"
    piece = lines * 4096  # about 540 KB
    count = (BIG - len(head)) // len(piece)
    digest = hashlib.sha256(head)
    for _ in range(count):
        digest.update(piece)

    def pieces() -> Iterator[bytes]:
        yield head
        for _ in range(count):
            yield piece

    return pieces, digest.hexdigest(), len(head) + count * len(piece)


@pytest.mark.timeout(300)
async def test_a_50_mb_message_streamed(flavour: Flavour, any_mta: MTA) -> None:
    sender = any_mta.new_address("big-sender")
    recipient = any_mta.new_address("big")
    message_id, head = raw_message(any_mta, sender, [recipient], "")
    pieces, digest, size = big_body(head)
    async with client(flavour, any_mta, timeout=120) as c:
        result = await c.sendmail(sender, [recipient], pieces())
    assert result.accepted == [recipient]
    if any_mta.lmtp:
        assert result.delivery[recipient].code == 250
    [(path, content)] = any_mta.wait_for_messages(
        message_id, recipient=recipient if any_mta.lmtp else None, timeout=120
    )
    original = MTA.original_bytes(content)
    assert len(original) == size
    assert hashlib.sha256(original).hexdigest() == digest
    path.unlink()  # 50 MB less in /tmp for the rest of the run


# -- SMTPUTF8 ----------------------------------------------------------------------------------


async def test_utf8_addresses_and_headers(flavour: Flavour, any_mta: MTA) -> None:
    ascii_sender = any_mta.new_address("sender")
    ascii_rcpt = any_mta.new_address("rcpt")
    utf8_sender = any_mta.new_address("sénder")
    utf8_rcpt = any_mta.new_address("empfänger-用户")
    transcript = Transcript()
    async with client(flavour, any_mta, transcript=transcript) as c:
        if c.extensions.smtputf8:
            assert "SMTPUTF8" in OFFERS[any_mta.name]
            message_id, body = raw_message(
                any_mta, utf8_sender, [utf8_rcpt], "Grüße, 你好\n", subject="Grüße 🐝"
            )
            result = await c.sendmail(utf8_sender, [utf8_rcpt], body)
            assert result.accepted == [utf8_rcpt]
            [mail] = transcript.sent("MAIL")
            assert mail.startswith(f"MAIL FROM:<{utf8_sender}>") and "SMTPUTF8" in mail
            assert_delivered(any_mta, message_id, body, count=1)
            return
        assert "SMTPUTF8" in LACKS[any_mta.name]
        # Not offered: a UTF-8 address is refused before anything is sent ...
        _, body = raw_message(any_mta, utf8_sender, [utf8_rcpt], "Grüße\n")
        with pytest.raises(UnsupportedExtensionError, match="SMTPUTF8"):
            await c.sendmail(utf8_sender, [utf8_rcpt], body)
        assert transcript.sent("MAIL") == []
        # ... while UTF-8 header text still goes, as 8BITMIME, between ASCII addresses.
        message_id, body = raw_message(
            any_mta, ascii_sender, [ascii_rcpt], "Grüße, 你好\n", subject="Grüße 🐝"
        )
        result = await c.sendmail(ascii_sender, [ascii_rcpt], body)
        assert result.accepted == [ascii_rcpt]
        [mail] = transcript.sent("MAIL")
        assert "BODY=8BITMIME" in mail and "SMTPUTF8" not in mail
    if any_mta.lmtp:
        delivered = any_mta.wait_for_message(message_id, recipient=ascii_rcpt)
        assert MTA.original_bytes(delivered) == body
    else:
        assert_delivered(any_mta, message_id, body, count=1)


# -- DSN ---------------------------------------------------------------------------------------


async def test_dsn_parameters(flavour: Flavour, any_mta: MTA) -> None:
    sender = any_mta.new_address("dsn-sender")
    recipient = any_mta.new_address("dsn-rcpt")
    envid = f"smtpbee-envid-{recipient.split('@')[0]}"
    message_id, body = raw_message(any_mta, sender, [recipient], "with DSN parameters\n")
    mail_options = {"ret": "HDRS", "envid": envid}
    rcpt_options = {"notify": frozenset({"SUCCESS", "FAILURE"}), "orcpt": recipient}
    transcript = Transcript()
    async with client(flavour, any_mta, transcript=transcript) as c:
        if not c.extensions.dsn:
            assert "DSN" in LACKS[any_mta.name]
            with pytest.raises(UnsupportedExtensionError, match="DSN"):
                await c.sendmail(
                    sender, [recipient], body, mail_options=mail_options, rcpt_options={}
                )
            with pytest.raises(UnsupportedExtensionError, match="DSN"):
                await c.sendmail(sender, [recipient], body, rcpt_options=rcpt_options)
            assert transcript.sent("MAIL") == []
            assert (await c.noop()).code == 250
            return
        result = await c.sendmail(
            sender, [recipient], body, mail_options=mail_options, rcpt_options=rcpt_options
        )
    assert result.accepted == [recipient]
    [mail] = transcript.sent("MAIL")
    assert f"RET=HDRS ENVID={envid}" in mail
    [rcpt] = transcript.sent("RCPT")
    assert "NOTIFY=SUCCESS,FAILURE" in rcpt or "NOTIFY=FAILURE,SUCCESS" in rcpt
    assert f"ORCPT=rfc822;{recipient}" in rcpt
    assert_delivered(any_mta, message_id, body, count=1)
    # NOTIFY=SUCCESS honoured: the MTA reports the delivery to the sender, with the
    # headers only (RET=HDRS).
    report = any_mta.wait_for_message(
        lambda content: (
            b"message/delivery-status" in content and f"To: {sender}".encode() in content
        )
    )
    assert re.search(rb"^Action: delivered", report, re.M)
    assert recipient.encode() in report
    assert b"text/rfc822-headers" in report
    assert message_id.encode() in report
    assert b"with DSN parameters" not in report
    if any_mta.name == "exim":  # OpenSMTPD 6.8 reports neither
        assert f"Original-Envelope-ID: {envid}".encode() in report
        assert f"Original-Recipient: rfc822;{recipient}".encode() in report


# -- Exim: TLS and AUTH ------------------------------------------------------------------------


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_exim_tls_is_verified(
    flavour: Flavour, exim: MTA, tls: Literal["starttls", "implicit"]
) -> None:
    sender = exim.new_address("tls-sender")
    recipient = exim.new_address("tls")
    message_id, body = raw_message(exim, sender, [recipient], f"over {tls}\n")
    async with client(flavour, exim, tls) as c:
        assert c.tls_info is not None and c.tls_info.verified
        assert c.session.tls_verified
        assert c.tls_info.version in ("TLSv1.2", "TLSv1.3")
        assert c.tls_info.peer_subject == "commonName=localhost"
        assert_offers(exim, c)
        await c.sendmail(sender, [recipient], body)
    [delivered] = assert_delivered(exim, message_id, body, count=1)
    assert received_with(delivered) == "esmtps"


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_exim_certificate_from_another_ca_is_refused(
    flavour: Flavour, exim: MTA, tls: Literal["starttls", "implicit"]
) -> None:
    # The system's CAs only: the test CA is not among them.
    with pytest.raises(TLSVerificationError):
        async with client(flavour, exim, tls, ssl_context=ssl.create_default_context()):
            pass


async def test_exim_offers_no_auth_before_starttls(flavour: Flavour, exim: MTA) -> None:
    async with client(flavour, exim, "none") as c:
        assert c.tls_info is None
        assert "STARTTLS" in c.extensions
        assert c.extensions.auth_mechanisms == frozenset()
        assert (await c.starttls()).code == 250
        assert c.tls_info is not None and c.tls_info.verified
        assert c.extensions.auth_mechanisms == EXIM_MECHANISMS


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
@pytest.mark.parametrize("mechanism", [None, *sorted(EXIM_MECHANISMS)])
async def test_exim_login_then_delivery(
    flavour: Flavour, exim: MTA, tls: Literal["starttls", "implicit"], mechanism: str | None
) -> None:
    assert exim.username is not None and exim.password is not None
    sender = exim.new_address("auth-sender")
    recipient = exim.new_address("auth")
    message_id, body = raw_message(exim, sender, [recipient], f"{tls}, {mechanism}\n")
    async with client(flavour, exim, tls) as c:
        reply = await c.login(exim.username, exim.password, mechanism=mechanism)
        assert reply.code == 235
        await c.sendmail(sender, [recipient], body)
        assert (await c.quit()).code == 221
    [delivered] = assert_delivered(exim, message_id, body, count=1)
    # "sa": TLS and AUTH, as Exim saw the session that delivered it.
    assert received_with(delivered) == "esmtpsa"


@pytest.mark.parametrize("mechanism", [None, *sorted(EXIM_MECHANISMS)])
async def test_exim_refuses_a_wrong_password(
    flavour: Flavour, exim: MTA, mechanism: str | None
) -> None:
    assert exim.username is not None and exim.password is not None
    wrong = exim.password + "-not"
    async with client(flavour, exim) as c:
        with pytest.raises(AuthenticationRejected) as caught:
            await c.login(exim.username, wrong, mechanism=mechanism)
        assert caught.value.code == 535
        assert wrong not in str(caught.value)
        assert (await c.noop()).code == 250


async def test_exim_smtps_url_logs_in_on_connect(flavour: Flavour, exim: MTA) -> None:
    assert exim.username is not None and exim.password is not None
    url = f"smtps://{quote(exim.username, safe='')}:{quote(exim.password, safe='')}@"
    url += f"{exim.host}:{exim.smtps_port}"
    sender = exim.new_address("url-sender")
    recipient = exim.new_address("url")
    message_id, body = raw_message(exim, sender, [recipient], "by URL\n")
    transcript = Transcript()
    async with flavour.client(
        host=url, port=None, tls=None, ssl_context=exim.client_context, transcript=transcript
    ) as c:
        assert c.tls_info is not None and c.tls_info.verified
        await c.sendmail(sender, [recipient], body)
    assert len(transcript.sent("AUTH")) == 1
    [delivered] = assert_delivered(exim, message_id, body, count=1)
    assert received_with(delivered) == "esmtpsa"


# -- OpenSMTPD: TLS -----------------------------------------------------------------------------


async def test_opensmtpd_starttls(flavour: Flavour, opensmtpd: MTA) -> None:
    """OpenSMTPD 6.8 built with OpenSSL 3 fails every handshake: a clean, typed error.

    Should a later package fix it (the start script then writes TLS=ok), the same
    test checks a verified STARTTLS delivery instead.
    """
    assert opensmtpd.tls_port is not None
    sender = opensmtpd.new_address("tls-sender")
    recipient = opensmtpd.new_address("tls")
    message_id, body = raw_message(opensmtpd, sender, [recipient], "over STARTTLS\n")
    tls_client = flavour.client(
        host=opensmtpd.host,
        port=opensmtpd.tls_port,
        tls="starttls",
        ssl_context=opensmtpd.client_context,
    )
    if opensmtpd.starttls:
        async with tls_client as c:
            assert c.tls_info is not None and c.tls_info.verified
            await c.sendmail(sender, [recipient], body)
        assert_delivered(opensmtpd, message_id, body, count=1)
        return
    with pytest.raises(ConnectionLostError) as caught:
        async with tls_client:
            pass
    # The server's alert, not a certificate the client refused.
    assert not isinstance(caught.value, TLSVerificationError)
    assert "internal error" in str(caught.value).lower() or "alert" in str(caught.value).lower()


# -- LMTP: one reply per recipient ----------------------------------------------------------------


async def test_lmtp_replies_per_recipient(flavour: Flavour, lmtp: MTA) -> None:
    assert lmtp.full_address is not None
    sender = lmtp.new_address("sender")
    one, two = lmtp.new_address("one"), lmtp.new_address("two")
    recipients = [one, lmtp.full_address, lmtp.reject_address, two]
    # Over the full mailbox's 1 KiB quota.
    message_id, body = raw_message(lmtp, sender, [one, two], "x" * 2000 + "\n")
    transcript = Transcript()
    async with client(flavour, lmtp, transcript=transcript) as c:
        assert c.inner.lmtp
        result = await c.sendmail(sender, recipients, body)
        assert (await c.noop()).code == 250
    assert transcript.sent("LHLO")
    assert transcript.sent("BDAT") == [f"BDAT {len(body)} LAST <{len(body)} octets>"]
    # Refused at RCPT: no delivery reply for it.
    assert result.recipients[lmtp.reject_address].code == 550
    assert lmtp.reject_address not in result.delivery
    # One reply per accepted recipient after the content, in RCPT order.
    assert list(result.delivery) == [one, lmtp.full_address, two]
    assert result.delivery[one].code == 250
    assert result.delivery[two].code == 250
    assert result.delivery[lmtp.full_address].code == 552
    assert str(result.delivery[lmtp.full_address].enhanced) == "5.2.2"
    assert result.accepted == [one, two]
    assert set(result.refused) == {lmtp.full_address, lmtp.reject_address}
    for recipient in (one, two):
        delivered = lmtp.wait_for_message(message_id, recipient=recipient)
        assert MTA.original_bytes(delivered) == body
    assert not any(
        message_id.encode() in path.read_bytes() for path in lmtp.delivered(lmtp.full_address)
    )


async def test_lmtp_url_and_a_batch(flavour: Flavour, lmtp: MTA) -> None:
    assert lmtp.full_address is not None
    sender = lmtp.new_address("sender")
    items: list[tuple[str, list[str], bytes]] = []
    ids: list[tuple[str, str, bytes]] = []
    for index in range(3):
        recipient = lmtp.new_address(f"batch{index}")
        rcpts = [recipient, lmtp.full_address] if index == 1 else [recipient]
        message_id, body = raw_message(lmtp, sender, [recipient], f"{index}\n" + "y" * 2000 + "\n")
        items.append((sender, rcpts, body))
        ids.append((recipient, message_id, body))
    async with flavour.client(host=f"lmtp://{lmtp.host}:{lmtp.port}", port=None) as c:
        assert c.inner.lmtp and c.inner.tls_mode.value == "none"
        results = await c.send_batch(items)
    for (recipient, message_id, body), result in zip(ids, results, strict=True):
        assert isinstance(result, SendResult), result
        assert result.accepted == [recipient]
        assert result.delivery[recipient].code == 250
        delivered = lmtp.wait_for_message(message_id, recipient=recipient)
        assert MTA.original_bytes(delivered) == body
    second = results[1]
    assert isinstance(second, SendResult)
    assert second.delivery[lmtp.full_address].code == 552


async def test_lmtp_over_the_unix_socket(flavour: Flavour, lmtp: MTA) -> None:
    assert lmtp.socket_path is not None
    sender = lmtp.new_address("sender")
    recipient = lmtp.new_address("unix")
    message_id, body = raw_message(lmtp, sender, [recipient], "over a Unix socket\n")
    if flavour.name == "trio":
        import trio

        sock: Any = await trio.open_unix_socket(lmtp.socket_path)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(lmtp.socket_path)
        if flavour.name == "asyncio":
            sock.setblocking(False)
    async with flavour.client(host=None, sock=sock, lmtp=True) as c:
        result = await c.sendmail(sender, [recipient], body)
    assert result.delivery[recipient].code == 250
    delivered = lmtp.wait_for_message(message_id, recipient=recipient)
    assert MTA.original_bytes(delivered) == body
