"""The safety promises on every transport, against scripted servers and aiosmtpd.

Each scenario runs with the blocking client, the asyncio client under asyncio and
the trio client under trio; each asserts what the client raised AND what the
server received (a command that must never have been written).
"""

from __future__ import annotations

import io
import socket
import ssl
import time
from typing import Any

import anyio
import pytest
from flavours import ALICE, Flavour, finished
from servers import AiosmtpdServer, LoopbackCA, TLSAiosmtpdServer
from smtpbee import (
    AuthenticationIncomplete,
    InsecureAuthenticationError,
    InvalidInputError,
    LocalProtocolError,
    OutcomeUnknownError,
    RemoteProtocolError,
    SendResult,
    SMTPTimeoutError,
    TransientReplyError,
)
from smtpbee.testing import DEFAULT, ThreadedServer, close, pause, replies, reply, stall, start_tls
from smtpbee.transports import transcript_to

STARTTLS = ["PIPELINING", "STARTTLS"]
AUTH = ["PIPELINING", "AUTH LOGIN PLAIN"]
CHUNKING = ["PIPELINING", "CHUNKING"]
PIPELINING = ["PIPELINING"]
BODY = b"Subject: s\r\n\r\nbody\r\n"


def serve(scripted_server: Any, handlers: dict[str, Any], extensions: list[str], **kw: Any) -> Any:
    """A scripted server named scripted.test whose EHLO offers exactly ``extensions``."""
    return scripted_server(handlers, hostname="scripted.test", extensions=extensions, **kw)


def client_of(flavour: Flavour, server: Any, **kwargs: Any) -> Any:
    return flavour.client(host=server.host, port=server.port, **kwargs)


def received(server: ThreadedServer) -> bytes:
    return server.transcript.client()


# ----------------------------------------------------------------------------
# AUTH over verified implicit TLS


@pytest.mark.anyio
async def test_auth_over_verified_implicit_tls_goes_ahead(
    flavour: Flavour, aiosmtpd_implicit_tls_server: TLSAiosmtpdServer
) -> None:
    server = aiosmtpd_implicit_tls_server
    async with flavour.client(server) as client:
        assert client.tls_info is not None and client.tls_info.verified
        assert (await client.login(*ALICE)).code == 235
        result = await client.sendmail("a@x.test", ["b@x.test"], BODY)
    assert result.accepted == ["b@x.test"]
    assert server.messages[0].content == BODY


@pytest.mark.anyio
async def test_auth_over_unverified_implicit_tls_names_the_reason(
    flavour: Flavour, aiosmtpd_implicit_tls_server: TLSAiosmtpdServer
) -> None:
    unchecked = ssl.create_default_context()
    unchecked.check_hostname = False
    unchecked.verify_mode = ssl.CERT_NONE
    async with flavour.client(aiosmtpd_implicit_tls_server, ssl_context=unchecked) as client:
        with pytest.raises(InsecureAuthenticationError, match="not verified") as caught:
            await client.login(*ALICE)
        assert caught.value.over == "unverified TLS"
        assert client.usable


def test_a_socket_given_already_wrapped_is_implicit_verified_tls(
    aiosmtpd_implicit_tls_server: TLSAiosmtpdServer, trust_ca: LoopbackCA
) -> None:
    from smtpbee.transports.sync import SMTPClient

    server = aiosmtpd_implicit_tls_server
    context = trust_ca.client_context()
    raw = socket.create_connection((server.host, server.port), timeout=10)
    wrapped = context.wrap_socket(raw, server_hostname="localhost")
    with SMTPClient(sock=wrapped, server_hostname="localhost", ssl_context=context) as client:
        assert client.session.tls_verified and client.session.conn.tls_active
        assert client.login(*ALICE).code == 235


# ----------------------------------------------------------------------------
# STARTTLS: closing answers, pushed replies, the handshake's own deadline


@pytest.mark.anyio
async def test_221_to_starttls_starts_no_handshake(flavour: Flavour, scripted_server: Any) -> None:
    server = serve(scripted_server, {"STARTTLS": ["221 2.0.0 bye", stall()]}, STARTTLS)
    client = client_of(flavour, server, tls="starttls")
    with pytest.raises(TransientReplyError, match="221"):
        await client.connect()
    await client.close()
    await finished(server)
    assert server.sessions[0].unparsed == b""  # no ClientHello followed the 221
    assert not client.usable


@pytest.mark.anyio
async def test_replies_pushed_after_the_handshake_never_answer_auth(
    flavour: Flavour, scripted_server: Any, trust_ca: LoopbackCA
) -> None:
    pushed = b"250-x\r\n250 AUTH PLAIN\r\n235 2.7.0 ok\r\n"
    server = serve(
        scripted_server,
        {"STARTTLS": ["220 go", start_tls(), pushed, stall()]},
        STARTTLS,
        tls="starttls",
        tls_context=trust_ca.server_context(),
    )
    client = client_of(flavour, server, tls="starttls", ssl_context=trust_ca.client_context())
    with pytest.raises(RemoteProtocolError, match="nothing asked for"):
        await client.connect()
        await client.login(*ALICE)
    await client.close()
    await finished(server)
    assert b"AUTH" not in received(server)
    assert ("S", pushed, True) in server.transcript  # pushed under TLS, right after the handshake
    assert not client.usable


@pytest.mark.anyio
async def test_a_stalled_handshake_times_out_on_its_own_deadline(
    flavour: Flavour, scripted_server: Any, trust_ca: LoopbackCA
) -> None:
    server = serve(scripted_server, {"STARTTLS": ["220 go", pause(5), close()]}, STARTTLS)
    client = client_of(flavour, server, tls="starttls", ssl_context=trust_ca.client_context())
    client.inner.timeouts = client.inner.timeouts.__class__(tls_handshake=0.5)
    started = time.monotonic()
    with pytest.raises(SMTPTimeoutError, match="TLS handshake"):
        await client.connect()
    assert time.monotonic() - started < 4
    assert not client.usable
    await client.close()


@pytest.mark.anyio
@pytest.mark.parametrize("flavour", ["asyncio", "trio"], indirect=True)
async def test_cancelling_connect_during_implicit_tls_leaves_it_closed(
    flavour: Flavour, scripted_server: Any
) -> None:
    server = scripted_server(greeting=[pause(3), close()])
    client = client_of(flavour, server, tls="implicit", server_hostname="localhost")
    with anyio.move_on_after(0.3):
        await client.connect()
    assert not client.usable
    assert not client.inner._connected
    server.stop(grace=0)


# ----------------------------------------------------------------------------
# Every RemoteProtocolError ends the session


@pytest.mark.anyio
async def test_a_235_before_login_is_done_ends_the_session(
    flavour: Flavour, scripted_server: Any
) -> None:
    # 334 to AUTH LOGIN, then 235 to the user name: before the password was asked for.
    auth = replies("334 VXNlcm5hbWU6", ["235 2.7.0 ok", stall()])
    server = serve(scripted_server, {"AUTH": auth}, AUTH)
    client = client_of(flavour, server)
    await client.connect()
    with pytest.raises(AuthenticationIncomplete):
        await client.login(*ALICE, mechanism="LOGIN", allow_insecure=True)
    assert not client.usable
    with pytest.raises(LocalProtocolError):
        await client.sendmail("a@x.test", ["b@x.test"], BODY)
    await client.close()
    await finished(server)
    assert b"MAIL" not in received(server)
    assert [(c.verb, c.continuation) for c in server.commands] == [
        ("EHLO", False),
        ("AUTH", False),
        ("AUTH", True),
    ]


# ----------------------------------------------------------------------------
# Content out, results kept


@pytest.mark.anyio
async def test_a_drop_after_a_chunked_group_is_outcome_unknown(
    flavour: Flavour, scripted_server: Any
) -> None:
    # The MAIL, RCPT and BDAT LAST group arrives whole; the server closes without a word.
    server = serve(scripted_server, {"MAIL": close()}, CHUNKING)
    client = client_of(flavour, server)
    await client.connect()
    with pytest.raises(OutcomeUnknownError):
        await client.sendmail("a@x.test", ["b@x.test"], BODY)
    await client.close()
    await finished(server)
    assert server.transcript.rounds()[1][0] == b"MAIL FROM:<a@x.test>\r\n"
    assert server.sessions[0].unparsed.endswith(b"BDAT 20 LAST\r\n" + BODY)


@pytest.mark.anyio
async def test_a_421_in_a_batch_keeps_what_was_settled(
    flavour: Flavour, scripted_server: Any
) -> None:
    # The first message is queued; then 421 to the second MAIL, and the server goes quiet.
    mail = replies(DEFAULT, [reply(421, "4.3.2 closing"), stall()])
    server = serve(scripted_server, {"MAIL": mail}, PIPELINING)
    client = client_of(flavour, server)
    await client.connect()
    jobs = [("a@x.test", ["b@x.test"], BODY), ("a@x.test", ["c@x.test"], BODY)]
    jobs.append(("a@x.test", ["d@x.test"], BODY))
    results = await client.send_batch(jobs)
    await client.close()
    await finished(server)
    assert isinstance(results[0], SendResult) and results[0].accepted == ["b@x.test"]
    assert isinstance(results[1], TransientReplyError) and results[1].code == 421
    assert isinstance(results[2], TransientReplyError)
    assert [m.recipients for m in server.messages] == [("b@x.test",)]


# ----------------------------------------------------------------------------
# Server text is escaped


@pytest.mark.anyio
async def test_the_transcript_escapes_what_the_server_wrote(
    flavour: Flavour, scripted_server: Any
) -> None:
    server = scripted_server(
        {"EHLO": b"250 mx\x9b1m\r\n"}, greeting=b"220 mx\x1b[2J\rC: RCPT TO:<evil@x.test>\r\n"
    )
    shown = io.StringIO()
    async with client_of(flavour, server, transcript=transcript_to(shown)):
        pass
    await finished(server)
    text = shown.getvalue()
    assert "\x1b" not in text and "\x9b" not in text
    assert all(line[:3] in ("C: ", "S: ") for line in text.splitlines())
    assert r"\x1b[2J\rC: RCPT" in text


# ----------------------------------------------------------------------------
# Bad input leaves the session unharmed


@pytest.mark.anyio
async def test_a_wrong_mail_option_is_refused_before_anything_is_sent(
    flavour: Flavour, aiosmtpd_server: AiosmtpdServer
) -> None:
    async with flavour.client(aiosmtpd_server) as client:
        with pytest.raises(InvalidInputError, match=r"'RET'.*the keys are"):
            await client.sendmail("a@x.test", ["b@x.test"], BODY, mail_options={"RET": "HDRS"})
        assert client.usable
        result = await client.sendmail(
            "a@x.test", ["b@x.test"], BODY, mail_options={"size": len(BODY)}
        )
    assert result.accepted == ["b@x.test"]
    assert len(aiosmtpd_server.messages) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_the_pool_logs_in_over_verified_implicit_tls(
    anyio_backend: str, aiosmtpd_implicit_tls_server: TLSAiosmtpdServer
) -> None:
    server = aiosmtpd_implicit_tls_server
    module = __import__(f"smtpbee.transports.{anyio_backend}", fromlist=["SMTPPool"])
    pool = module.SMTPPool(
        server.host,
        server.port,
        size=2,
        tls="implicit",
        ssl_context=server.client_context,
        username=ALICE[0],
        password=ALICE[1],
    )
    async with pool:
        results = await pool.send_batch([("a@x.test", ["b@x.test"], BODY)] * 3)
    assert all(isinstance(r, SendResult) for r in results)
    assert len(server.messages) == 3


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_trio_ssl_stream_given_is_implicit_verified_tls(
    anyio_backend: str, aiosmtpd_implicit_tls_server: TLSAiosmtpdServer, trust_ca: LoopbackCA
) -> None:
    import trio
    from smtpbee.transports.trio import TrioSMTPClient

    server = aiosmtpd_implicit_tls_server
    context = trust_ca.client_context()
    tcp = await trio.open_tcp_stream(server.host, server.port)
    stream = trio.SSLStream(tcp, context, server_hostname="localhost")
    await stream.do_handshake()
    async with TrioSMTPClient(sock=stream, server_hostname="localhost", ssl_context=context) as c:
        assert c.session.tls_verified and c.session.conn.tls_active
        assert (await c.login(*ALICE)).code == 235
