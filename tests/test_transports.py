"""The three transports against aiosmtpd, plus the shared, I/O-free helpers.

Every scenario runs once per transport: the blocking client, the asyncio client
under asyncio and the trio client under trio (anyio's pytest plugin). A small
proxy makes each client's methods awaitable, so one test body serves all three.
"""

from __future__ import annotations

import asyncio
import email.message
import hashlib
import io
import os
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from flavours import ALICE, Flavour
from servers import AiosmtpdServer, TLSAiosmtpdServer
from smtpbee import (
    AuthenticationRejected,
    ConnectionLostError,
    InsecureAuthenticationError,
    InvalidInputError,
    LocalProtocolError,
    PermanentReplyError,
    RemoteProtocolError,
    SMTPTimeoutError,
)
from smtpbee._auth import Plain
from smtpbee._commands import Noop
from smtpbee._extensions import Extensions
from smtpbee._replies import Reply
from smtpbee._requests import Timeouts, TLSMode, resolve_tls_mode
from smtpbee.transports import TLSVerificationError
from smtpbee.transports._base import ClientBase
from smtpbee.transports._common import (
    Deadline,
    as_smtp_error,
    default_ssl_context,
    describe,
    is_verifying,
    local_hostname_for,
    transcript_to,
)
from smtpbee.transports._message import FILE_PIECE_SIZE, body_source, prepare_message


def make_message(**headers: str) -> EmailMessage:
    msg = EmailMessage()
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("Hello.\n.a line with a dot\n")
    return msg


# ------------------------------------------------------------------------------------
# Delivery over plaintext


@pytest.mark.anyio
async def test_plain_delivery_to_several_recipients_is_byte_exact(
    flavour: Flavour, aiosmtpd_server: AiosmtpdServer
) -> None:
    lines: list[str] = []
    body = b"Subject: hi\r\n\r\n.dot first\r\nbare lf\nlone cr\r..\r\n"
    async with flavour.client(aiosmtpd_server, transcript=lambda d, t: lines.append(d + t)) as c:
        assert isinstance(c.extensions, Extensions)
        assert c.tls_info is None
        result = await c.sendmail("a@x.test", ["b@x.test", "c@x.test"], body)
    assert result.accepted == ["b@x.test", "c@x.test"]
    assert result.refused == {}
    [received] = aiosmtpd_server.messages
    assert received.content == b"Subject: hi\r\n\r\n.dot first\r\nbare lf\r\nlone cr\r\n..\r\n"
    assert received.rcpt_tos == ["b@x.test", "c@x.test"]
    assert received.ehlo_name == "[127.0.0.1]"
    assert "CQUIT" in lines and any(t.startswith("S250") for t in lines)


@pytest.mark.anyio
async def test_ipv6_loopback_and_a_chosen_source_address(
    flavour: Flavour, aiosmtpd_factory: Any
) -> None:
    if not socket.has_ipv6:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must be able to test IPv6 on ::1")
        pytest.skip("this machine has no IPv6 stack")
    server = aiosmtpd_factory(host="::1")
    async with flavour.client(server, source_address=("::1", 0)) as c:
        await c.sendmail("a@x.test", ["b@x.test"], b"over IPv6\r\n")
    [received] = server.messages
    assert received.content == b"over IPv6\r\n"
    assert received.ehlo_name == "[IPv6:::1]"


@pytest.mark.anyio
async def test_an_already_connected_stream(
    flavour: Flavour, aiosmtpd_server: AiosmtpdServer
) -> None:
    address = (aiosmtpd_server.host, aiosmtpd_server.port)
    if flavour.name == "trio":
        import trio

        given: Any = await trio.open_tcp_stream(*address)
    else:
        given = socket.create_connection(address, timeout=5)
        given.setblocking(flavour.name == "sync")
        given.settimeout(None if flavour.name == "asyncio" else 5)
    async with flavour.client(aiosmtpd_server, host=None, sock=given) as c:
        await c.sendmail("a@x.test", ["b@x.test"], b"on a given socket\r\n")
    assert aiosmtpd_server.messages[0].content == b"on a given socket\r\n"


@pytest.mark.anyio
async def test_eight_bit_body_goes_with_8bitmime(
    flavour: Flavour, aiosmtpd_server: AiosmtpdServer
) -> None:
    body = "Subject: caf\u00e9\r\n\r\nd\u00e9j\u00e0 vu\r\n".encode()
    async with flavour.client(aiosmtpd_server) as c:
        await c.sendmail("a@x.test", "b@x.test", body)
    [received] = aiosmtpd_server.messages
    assert received.content == body
    assert "BODY=8BITMIME" in received.mail_options


@pytest.mark.anyio
async def test_utf8_addresses_and_headers_go_with_smtputf8(
    flavour: Flavour, aiosmtpd_server: AiosmtpdServer
) -> None:
    msg = make_message(
        From="J\u00f6rg <j\u00f6rg@x.test>", To="z\u00fc@x.test", Subject="gr\u00fc\u00df"
    )
    async with flavour.client(aiosmtpd_server) as c:
        expected = prepare_message(msg, sender=None, recipients=None, server=c.extensions)
        await c.send_message(msg)
    [received] = aiosmtpd_server.messages
    assert "SMTPUTF8" in received.mail_options
    assert received.mail_from == "j\u00f6rg@x.test"
    assert received.rcpt_tos == ["z\u00fc@x.test"]
    assert received.content == expected.data
    assert "Subject: gr\u00fc\u00df".encode() in received.content


@pytest.mark.anyio
async def test_send_message_strips_bcc_and_uses_the_envelope_of_the_headers(
    flavour: Flavour, aiosmtpd_server: AiosmtpdServer
) -> None:
    msg = make_message(From="a@x.test", To="b@x.test", Cc="c@x.test", Bcc="hidden@x.test")
    async with flavour.client(aiosmtpd_server) as c:
        await c.send_message(msg)
        resent = make_message(From="a@x.test", To="b@x.test")
        resent["Resent-From"] = "forwarder@x.test"
        resent["Resent-To"] = "new@x.test"
        resent["Resent-Bcc"] = "secret@x.test"
        await c.send_message(resent)
    first, second = aiosmtpd_server.messages
    assert first.rcpt_tos == ["b@x.test", "c@x.test", "hidden@x.test"]
    assert b"hidden" not in first.content and b"Bcc" not in first.content
    assert second.mail_from == "forwarder@x.test"
    assert second.rcpt_tos == ["new@x.test", "secret@x.test"]
    assert b"secret" not in second.content
    assert msg["Bcc"] == "hidden@x.test"  # the caller's message is untouched


@pytest.mark.anyio
async def test_bodies_from_files_and_iterables(
    flavour: Flavour, aiosmtpd_server: AiosmtpdServer, tmp_path: Path
) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(b"Subject: f\r\n\r\n" + b"line\r\n" * 20000)
    async with flavour.client(aiosmtpd_server) as c:
        with path.open("rb") as handle:
            await c.sendmail("a@x.test", ["b@x.test"], handle)
        await c.sendmail("a@x.test", ["b@x.test"], io.BytesIO(b"Subject: b\r\n\r\nx\r\n"))
        await c.sendmail("a@x.test", ["b@x.test"], [b"Subject: i\r\n", b"\r\n", b"y\r\n"])
    files, buffers, pieces = aiosmtpd_server.messages
    assert files.content == path.read_bytes()
    assert f"SIZE={path.stat().st_size}" in files.mail_options
    assert buffers.content == b"Subject: b\r\n\r\nx\r\n"
    assert pieces.content == b"Subject: i\r\n\r\ny\r\n"


_BIG_LINE = b"0123456789" * 99 + b"abcdefg\r\n"  # 999 octets


def _big_pieces(count: int) -> Iterator[bytes]:
    for _ in range(count):
        yield _BIG_LINE * 50


async def _big_async_pieces(count: int) -> AsyncIterator[bytes]:
    for piece in _big_pieces(count):
        yield piece


@pytest.mark.anyio
async def test_a_50_mb_message_is_streamed(
    flavour: Flavour, aiosmtpd_server: AiosmtpdServer, tmp_path: Path
) -> None:
    count = 50_000_000 // (len(_BIG_LINE) * 50)
    expected = hashlib.sha256(b"".join(_big_pieces(count))).hexdigest()
    body: Any
    if flavour.name == "sync":
        path = tmp_path / "big.eml"
        with path.open("wb") as handle:
            handle.writelines(_big_pieces(count))
        body = path.open("rb")
    elif flavour.name == "asyncio":
        body = _big_pieces(count)
    else:
        body = _big_async_pieces(count)
    async with flavour.client(aiosmtpd_server, timeout=60) as c:
        await c.sendmail("a@x.test", ["b@x.test"], body)
    if hasattr(body, "close"):
        body.close()
    [received] = aiosmtpd_server.messages
    assert len(received.content) >= 50_000_000 - len(_BIG_LINE) * 50
    assert hashlib.sha256(received.content).hexdigest() == expected


@pytest.mark.anyio
async def test_a_batch_of_messages_and_tuples_on_one_connection(
    flavour: Flavour, aiosmtpd_server: AiosmtpdServer
) -> None:
    aiosmtpd_server.reject_recipients.add("nobody@x.test")
    first = make_message(From="a@x.test", To="b@x.test", Bcc="hidden@x.test")
    items: list[Any] = [
        first,
        ("a@x.test", ["nobody@x.test"], b"refused\r\n"),
        ("a@x.test", "c@x.test", [b"Subject: t\r\n", b"\r\n", b"tuple\r\n"]),
    ]
    async with flavour.client(aiosmtpd_server) as c:
        results = await c.send_batch(items)
        assert c.usable
    assert len(results) == 3
    assert not isinstance(results[0], Exception)
    assert results[0].accepted == ["b@x.test", "hidden@x.test"]
    assert isinstance(results[1], PermanentReplyError)
    assert results[1].recipients["nobody@x.test"].code == 550
    assert not isinstance(results[2], Exception) and results[2].accepted == ["c@x.test"]
    sent_first, sent_third = aiosmtpd_server.messages
    assert b"hidden" not in sent_first.content and b"Bcc" not in sent_first.content
    assert sent_third.content == b"Subject: t\r\n\r\ntuple\r\n"
    assert aiosmtpd_server.connections == 1


# ------------------------------------------------------------------------------------
# Refusals


@pytest.mark.anyio
async def test_a_refused_recipient_is_a_partial_success(
    flavour: Flavour, aiosmtpd_server: AiosmtpdServer
) -> None:
    aiosmtpd_server.reject_recipients.add("nobody@x.test")
    async with flavour.client(aiosmtpd_server) as c:
        result = await c.sendmail("a@x.test", ["b@x.test", "nobody@x.test"], b"x\r\n")
    assert result.accepted == ["b@x.test"]
    assert result.refused["nobody@x.test"].code == 550
    assert aiosmtpd_server.messages[0].rcpt_tos == ["b@x.test"]


@pytest.mark.anyio
async def test_a_refused_message_raises_and_the_session_goes_on(
    flavour: Flavour, aiosmtpd_server: AiosmtpdServer
) -> None:
    aiosmtpd_server.reject_message = True
    async with flavour.client(aiosmtpd_server) as c:
        with pytest.raises(PermanentReplyError) as caught:
            await c.sendmail("a@x.test", ["b@x.test"], b"x\r\n")
        assert caught.value.code == 554
        assert (await c.noop()).code == 250
        assert c.usable
    assert len(aiosmtpd_server.rejected) == 1


@pytest.mark.anyio
async def test_auth_is_refused_over_plaintext_unless_allowed(
    flavour: Flavour, aiosmtpd_server: AiosmtpdServer
) -> None:
    async with flavour.client(aiosmtpd_server) as c:
        with pytest.raises(InsecureAuthenticationError):
            await c.login(*ALICE)
        reply = await c.login(*ALICE, mechanism="LOGIN", allow_insecure=True)
        assert reply.code == 235


# ------------------------------------------------------------------------------------
# TLS and AUTH


@pytest.mark.anyio
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_starttls_then_auth(
    flavour: Flavour, aiosmtpd_starttls_server: TLSAiosmtpdServer, mechanism: str
) -> None:
    server = aiosmtpd_starttls_server
    async with flavour.client(server, tls=None) as c:
        assert c.tls_info is not None and c.tls_info.verified
        assert c.tls_info.version in ("TLSv1.2", "TLSv1.3")
        assert (await c.login(*ALICE, mechanism=mechanism)).code == 235
        await c.sendmail("a@x.test", ["b@x.test"], b"Subject: s\r\n\r\nsecret\r\n")
    [received] = server.messages
    assert received.tls and received.auth_login == "alice"


@pytest.mark.anyio
async def test_explicit_starttls_then_a_mechanism_object(
    flavour: Flavour, aiosmtpd_starttls_server: TLSAiosmtpdServer
) -> None:
    server = aiosmtpd_starttls_server
    async with flavour.client(server, tls="none") as c:
        assert c.tls_info is None and "STARTTLS" in c.extensions
        assert "AUTH" not in c.extensions  # this server offers AUTH only over TLS
        reply = await c.starttls()
        assert reply.code == 250 and "AUTH" in c.extensions and "STARTTLS" not in c.extensions
        assert c.tls_info is not None and c.tls_info.verified
        assert (await c.authenticate(Plain(*ALICE))).code == 235
        await c.sendmail("a@x.test", ["b@x.test"], b"after starttls\r\n")
    [received] = server.messages
    assert received.tls and received.auth_login == "alice"


@pytest.mark.anyio
async def test_wrong_password_is_rejected(
    flavour: Flavour, aiosmtpd_starttls_server: TLSAiosmtpdServer
) -> None:
    async with flavour.client(aiosmtpd_starttls_server, tls="starttls") as c:
        with pytest.raises(AuthenticationRejected) as caught:
            await c.login("alice", "not-it")
        assert caught.value.code == 535
        assert "not-it" not in str(caught.value)


@pytest.mark.anyio
async def test_implicit_tls(
    flavour: Flavour, aiosmtpd_implicit_tls_server: TLSAiosmtpdServer
) -> None:
    server = aiosmtpd_implicit_tls_server
    async with flavour.client(server) as c:
        info = c.tls_info
        assert info is not None and info.verified
        assert info.version in ("TLSv1.2", "TLSv1.3") and info.cipher
        await c.sendmail("a@x.test", ["b@x.test"], b"x\r\n")
    assert server.messages[0].tls


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_a_certificate_from_an_unknown_ca_is_refused(
    flavour: Flavour, aiosmtpd_factory: Any, mode: str
) -> None:
    server = aiosmtpd_factory(tls_mode=mode)
    client = flavour.client(server, tls=mode, ssl_context=default_ssl_context())
    with pytest.raises(TLSVerificationError) as caught:
        await client.connect()
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    assert isinstance(caught.value, ConnectionLostError)
    assert not client.usable
    assert server.messages == []


@pytest.mark.anyio
async def test_one_call_send(flavour: Flavour, aiosmtpd_starttls_server: TLSAiosmtpdServer) -> None:
    server = aiosmtpd_starttls_server
    options = {"host": server.host, "port": server.port, "ssl_context": server.client_context}
    result = await flavour.send(make_message(From="a@x.test", To="b@x.test"), **options)
    assert result.accepted == ["b@x.test"]
    raw = b"Subject: raw\r\n\r\nraw\r\n"
    await flavour.send(
        raw,
        sender="a@x.test",
        recipients=["c@x.test"],
        username="alice",
        password="wonderland",
        **options,
    )
    assert [m.rcpt_tos for m in server.messages] == [["b@x.test"], ["c@x.test"]]
    assert server.messages[1].auth_login == "alice"
    with pytest.raises(InvalidInputError):
        await flavour.send(raw, **options)


@pytest.mark.anyio
async def test_small_commands(flavour: Flavour, aiosmtpd_server: AiosmtpdServer) -> None:
    lines: list[str] = []
    client = flavour.client(aiosmtpd_server, transcript=lambda d, t: lines.append(d + t))
    with pytest.raises(LocalProtocolError):
        client.session  # noqa: B018 - not connected yet
    await client.connect()
    with pytest.raises(LocalProtocolError):
        await client.connect()
    assert (await client.ehlo()).code == 250
    assert (await client.rset()).code == 250
    assert (await client.vrfy("postmaster")).code == 252
    assert (await client.vrfy("a@x.test")).code == 252
    assert (await client.expn("list")).code == 502
    assert isinstance(await client.command(Noop()), Reply)
    # VRFY takes an RFC 5321 String: an Atom as is, anything else quoted.
    assert "CVRFY postmaster" in lines and 'CVRFY "a@x.test"' in lines
    assert client.usable
    assert (await client.quit()).code == 221
    assert not client.usable
    await client.close()
    await client.close()


@pytest.mark.anyio
async def test_a_reply_code_the_rfc_does_not_allow_ends_the_session(
    flavour: Flavour, aiosmtpd_server: AiosmtpdServer
) -> None:
    client = flavour.client(aiosmtpd_server)
    await client.connect()
    # aiosmtpd answers HELP with 250; RFC 5321 §4.3.2 allows only 211 or 214.
    with pytest.raises(RemoteProtocolError, match="250 is not a valid reply to HELP"):
        await client.help()
    assert not client.usable
    with pytest.raises(LocalProtocolError):
        await client.noop()
    await client.close()


# ------------------------------------------------------------------------------------
# The shared helpers, without I/O


def test_tls_mode_follows_the_port_unless_named() -> None:
    assert resolve_tls_mode(None, 465) is TLSMode.IMPLICIT
    assert resolve_tls_mode(None, 25) is TLSMode.STARTTLS
    assert resolve_tls_mode(None, 587) is TLSMode.STARTTLS
    assert resolve_tls_mode("NONE", 465) is TLSMode.NONE
    assert resolve_tls_mode(TLSMode.OPPORTUNISTIC, 25) is TLSMode.OPPORTUNISTIC
    with pytest.raises(InvalidInputError, match="tls must be one of"):
        resolve_tls_mode("maybe", 25)


def test_the_default_context_verifies() -> None:
    context = default_ssl_context()
    assert is_verifying(context)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    assert not is_verifying(context)


@pytest.mark.parametrize(
    ("sockname", "expected"),
    [
        (("127.0.0.1", 5000), "[127.0.0.1]"),
        (("::1", 5000, 0, 0), "[IPv6:::1]"),
        (("fe80::1%eth0", 5000, 0, 2), "[IPv6:fe80::1]"),
        (("::ffff:192.0.2.1", 5000, 0, 0), "[192.0.2.1]"),
        (None, "localhost"),
        ("/tmp/sock", "localhost"),
    ],
)
def test_local_hostname_is_an_address_literal(sockname: Any, expected: str) -> None:
    assert local_hostname_for(sockname) == expected


def test_transcript_to_a_stream() -> None:
    stream = io.StringIO()
    write = transcript_to(stream)
    write("C", "EHLO x")
    write("S", "250 ok")
    # What the server wrote cannot reach the terminal raw: controls come escaped.
    write("S", "250 \x1b[2Jgr\u00fc\u00df\rfake")
    assert stream.getvalue() == ("C: EHLO x\nS: 250 ok\nS: 250 \\x1b[2Jgr\u00fc\u00df\\rfake\n")


def test_body_sources(tmp_path: Path) -> None:
    info, pieces = body_source(memoryview(b"abc\xe9"))
    assert (info.size, info.eight_bit) == (4, True)
    # Held whole: it goes with the plan, and nothing is left to pull.
    assert info.content == b"abc\xe9" and type(info.content) is bytes
    assert list(pieces) == []  # type: ignore[arg-type]
    assert body_source(b"")[0].content == b""
    buffer = io.BytesIO(b"0123456789")
    buffer.seek(4)
    assert body_source(buffer)[0].size == 6
    path = tmp_path / "f"
    size = FILE_PIECE_SIZE + 70000
    path.write_bytes(b"x" * size)
    with path.open("rb") as handle:
        info, pieces = body_source(handle)
        assert info.size == size and info.eight_bit is None
        # A piece per BDAT chunk, as read: the chunk is never a join of smaller ones.
        assert [len(p) for p in pieces] == [FILE_PIECE_SIZE, 70000]  # type: ignore[union-attr]
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as pipe, os.fdopen(write_end, "wb"):
        assert body_source(pipe)[0].size is None
    assert body_source([b"a", bytearray(b"b")])[0].size is None
    with pytest.raises(InvalidInputError, match="not str"):
        body_source("text")
    with pytest.raises(InvalidInputError, match="int"):
        body_source(42)


def test_io_errors_become_smtp_errors() -> None:
    assert as_smtp_error(ValueError("x"), "w") is None
    timeout = as_smtp_error(TimeoutError(), "waiting")
    assert isinstance(timeout, SMTPTimeoutError) and "timed out waiting" in str(timeout)
    lost = as_smtp_error(ConnectionResetError("reset"), "reading")
    assert isinstance(lost, ConnectionLostError) and "reset" in str(lost)
    refusal = ssl.SSLCertVerificationError("bad cert")
    wrapped = ConnectionError("broken")
    wrapped.__cause__ = refusal
    assert isinstance(as_smtp_error(wrapped, "x"), TLSVerificationError)
    already = ConnectionLostError("x")
    assert as_smtp_error(already, "x") is already


def test_deadline_is_kept_while_a_reply_is_incomplete() -> None:
    from smtpbee._events import Phase
    from smtpbee._requests import Poll, Read, UpgradeTLS, Write

    deadline = Deadline()
    assert deadline.remaining(Read(Phase.MAIL, 5.0, True), 100.0) == 5.0
    assert deadline.remaining(Read(Phase.MAIL, 5.0, False), 103.0) == 2.0
    assert deadline.remaining(Read(Phase.MAIL, 5.0, True), 103.0) == 5.0
    assert "the reply to MAIL" in describe(Read(Phase.MAIL, 5.0, True))
    assert "3 bytes" in describe(Write((b"a", b"bc"), Phase.COMMAND, 1.0))
    assert describe(UpgradeTLS(60.0)) == "during the TLS handshake (60 s)"
    assert "nothing asked for" in describe(Poll())


def _server() -> Extensions:
    return Extensions.from_reply(Reply(code=250, lines=(b"x", b"SMTPUTF8", b"8BITMIME")))


def test_prepare_message_envelope_rules() -> None:
    msg = make_message(From="a@x.test", Sender="s@x.test", To="b@x.test, c@x.test")
    prepared = prepare_message(msg, sender=None, recipients=None, server=Extensions())
    assert (prepared.sender, prepared.recipients) == ("s@x.test", ["b@x.test", "c@x.test"])
    assert not prepared.smtputf8
    assert prepared.data.endswith(b"\r\n") and b"\n" not in prepared.data.replace(b"\r\n", b"")
    given = prepare_message(msg, sender="z@x.test", recipients=["y@x.test"], server=Extensions())
    assert (given.sender, given.recipients) == ("z@x.test", ["y@x.test"])
    with pytest.raises(InvalidInputError, match="no From"):
        prepare_message(
            make_message(To="b@x.test"), sender=None, recipients=None, server=Extensions()
        )


def test_prepare_message_takes_the_latest_resent_block() -> None:
    msg = email.message.Message()
    # RFC 5322 §3.6.6: the newest block is on top; a repeated field starts an older one.
    for name, value in [
        ("Resent-Sender", "newest-sender@x.test"),
        ("Resent-From", "newest@x.test"),
        ("Resent-To", "n1@x.test"),
        ("Resent-Cc", "n2@x.test"),
        ("Resent-From", "older@x.test"),
        ("Resent-To", "o1@x.test"),
        ("Received", "by somewhere"),
        ("From", "a@x.test"),
        ("To", "b@x.test"),
    ]:
        msg[name] = value
    msg.set_payload("hi\n")
    prepared = prepare_message(msg, sender=None, recipients=None, server=Extensions())
    assert prepared.sender == "newest-sender@x.test"
    assert prepared.recipients == ["n1@x.test", "n2@x.test"]
    separated = email.message.Message()
    separated["Resent-From"] = "r@x.test"
    separated["Received"] = "x"
    separated["Resent-From"] = "old@x.test"
    prepared = prepare_message(separated, sender=None, recipients=["t@x.test"], server=Extensions())
    assert prepared.sender == "r@x.test"


def test_non_ascii_headers_use_utf8_only_when_the_server_offers_it() -> None:
    msg = make_message(From="a@x.test", To="b@x.test", Subject="gr\u00fc\u00df")
    legacy = prepare_message(msg, sender=None, recipients=None, server=Extensions())
    assert legacy.data.isascii() and b"=?utf-8?" in legacy.data and not legacy.smtputf8
    modern = prepare_message(msg, sender=None, recipients=None, server=_server())
    assert modern.smtputf8 and "gr\u00fc\u00df".encode() in modern.data


def test_client_arguments_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="host"):
        ClientBase()
    with pytest.raises(InvalidInputError, match="server_hostname"):
        ClientBase(sock=socket.socket())
    base = ClientBase("mx.x.test", 465, timeout=3)
    assert base.tls_mode is TLSMode.IMPLICIT
    assert base.timeouts == Timeouts.uniform(3) and base.connect_timeout == 3
    assert base.server_hostname == "mx.x.test" and is_verifying(base.ssl_context)
    assert not base.usable
    assert ClientBase("h", tls="none", connect_timeout=5).connect_timeout == 5
    # A socket that is already TLS is implicit TLS; another explicit mode cannot apply.
    wrapped = default_ssl_context().wrap_socket(
        socket.socket(), server_hostname="mx.x.test", do_handshake_on_connect=False
    )
    with wrapped:
        assert ClientBase(sock=wrapped, server_hostname="mx.x.test").tls_mode is TLSMode.IMPLICIT
        implicit = ClientBase(sock=wrapped, server_hostname="mx.x.test", tls="implicit")
        assert implicit.tls_mode is TLSMode.IMPLICIT
        with pytest.raises(InvalidInputError, match="already TLS"):
            ClientBase(sock=wrapped, server_hostname="mx.x.test", tls="starttls")
        with pytest.raises(InvalidInputError, match="already TLS"):
            ClientBase(sock=wrapped, server_hostname="mx.x.test", tls="none")


def test_importing_the_package_does_not_import_trio() -> None:
    import subprocess
    import sys

    code = (
        "import sys, smtpbee.transports as t, smtpbee.transports.sync as s;"
        "assert 'trio' not in sys.modules;"
        "assert t.SMTPClient is s.SMTPClient; t.AsyncSMTPClient; t.TrioSMTPClient;"
        "assert 'trio' in sys.modules\n"
        "try:\n t.Nothing\nexcept AttributeError: print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_the_sync_transport_refuses_async_bodies(aiosmtpd_server: AiosmtpdServer) -> None:
    from smtpbee.transports.sync import SMTPClient

    async def pieces() -> AsyncIterator[bytes]:
        yield b"x"

    with SMTPClient(aiosmtpd_server.host, aiosmtpd_server.port, tls="none") as client:
        body = pieces()
        with pytest.raises(InvalidInputError, match="async"):
            client.sendmail("a@x.test", ["b@x.test"], body)  # type: ignore[arg-type]
        assert client.noop().code == 250
        assert client.pipeline([Noop()])[0].code == 250


def test_an_asyncio_read_times_out_at_its_own_deadline_whatever_timer_is_armed() -> None:
    # A read keeps the timer an earlier one armed when that fires no later: the
    # early firing finds time left and arms again; a shorter wait arms earlier.
    from smtpbee.transports._asyncio_stream import ByteStream

    async def main() -> None:
        stream = ByteStream()
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, stream.data_received, b"250 ok\r\n")
        assert await stream.read(10) == b"250 ok\r\n"  # a timer armed 10 s ahead
        started = loop.time()
        with pytest.raises(TimeoutError):
            await stream.read(0.2)
        assert 0.19 <= loop.time() - started < 2
        loop.call_later(0.01, stream.data_received, b"x")
        assert await stream.read(0.1) == b"x"  # its timer, 0.1 s ahead, stays armed
        started = loop.time()
        with pytest.raises(TimeoutError):
            await stream.read(0.4)
        assert 0.39 <= loop.time() - started < 2
        stream.data_received(b"late")
        assert await stream.read(0.01) == b"late"

    asyncio.run(main())
