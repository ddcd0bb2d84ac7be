"""The three transports against scripted servers: batching, hostile and broken peers.

Each script is what a server does on the wire; the assertions are about what the
client raised and what the server received (``received_groups``: the units read
between two of the server's writes, so one group is one round trip).
"""

from __future__ import annotations

import socket
import time
from typing import Any

import anyio
import pytest
from flavours import Flavour, finished
from servers import (
    close,
    drip,
    expect,
    expect_bdat,
    expect_close,
    expect_data,
    send,
    send_then_close,
)
from smtpbee import (
    ConnectionLostError,
    OutcomeUnknownError,
    PermanentReplyError,
    RemoteProtocolError,
    SMTPTimeoutError,
    StartTLSInjectionError,
    TLSRequiredError,
    TransientReplyError,
)
from smtpbee._commands import Noop, Rset

GREETING = send(b"220 scripted.test ESMTP\r\n")
PLAIN_EHLO = b"250 scripted.test\r\n"
PIPELINING_EHLO = b"250-scripted.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
CHUNKING_EHLO = b"250-scripted.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 8BITMIME\r\n"
BODY = b"Subject: s\r\n\r\nbody\r\n"


def hello(ehlo: bytes = PLAIN_EHLO) -> list[Any]:
    return [GREETING, expect(b"EHLO "), send(ehlo)]


@pytest.mark.anyio
async def test_pipelining_and_chunking_send_the_envelope_and_body_in_one_write(
    flavour: Flavour, scripted_server: Any
) -> None:
    server = scripted_server(
        [
            *hello(CHUNKING_EHLO),
            expect(b"MAIL FROM:<a@x.test>"),
            expect(b"RCPT TO:<b@x.test>"),
            expect(b"RCPT TO:<c@x.test>"),
            expect_bdat(),
            send(b"250 ok\r\n250 ok\r\n250 ok\r\n250 queued\r\n"),
            expect(b"QUIT"),
            send(b"221 bye\r\n"),
        ]
    )
    async with flavour.client(server) as c:
        result = await c.sendmail("a@x.test", ["b@x.test", "c@x.test"], BODY)
    await finished(server)
    assert result.accepted == ["b@x.test", "c@x.test"]
    group = server.received_groups[1]
    assert [unit.split(b" ")[0] for unit in group] == [
        b"MAIL",
        b"RCPT",
        b"RCPT",
        b"BDAT",
        BODY.split(b" ")[0],
    ]
    assert server.bdat_chunks == [(BODY, True)]


@pytest.mark.anyio
async def test_a_batch_overlaps_messages_one_round_trip_each(
    flavour: Flavour, scripted_server: Any
) -> None:
    server = scripted_server(
        [
            *hello(PIPELINING_EHLO),
            expect(b"MAIL FROM:<a@x.test>"),
            expect(b"RCPT TO:<b@x.test>"),
            expect(b"DATA"),
            send(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            expect_data(),
            expect(b"MAIL FROM:<a@x.test>"),
            expect(b"RCPT TO:<c@x.test>"),
            expect(b"DATA"),
            send(b"250 queued 1\r\n250 ok\r\n550 no such user\r\n503 no recipients\r\n"),
            expect(b"RSET"),
            send(b"250 reset\r\n"),
            expect(b"MAIL FROM:<a@x.test>"),
            expect(b"RCPT TO:<d@x.test>"),
            expect(b"DATA"),
            send(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            expect_data(),
            send(b"250 queued 3\r\n"),
            expect(b"QUIT"),
            send(b"221 bye\r\n"),
        ]
    )
    jobs = [
        ("a@x.test", ["b@x.test"], b"one\r\n"),
        ("a@x.test", "c@x.test", [b"two\r\n"]),
        ("a@x.test", ["d@x.test"], [b"thr", b"", b"ee\r\n"]),
    ]
    async with flavour.client(server) as c:
        results = await c.send_batch(jobs)
    await finished(server)
    assert results[0].data.code == 250 and results[2].data.code == 250
    assert (
        isinstance(results[1], PermanentReplyError)
        and results[1].recipients["c@x.test"].code == 550
    )
    # Message 1's content and terminator went with message 2's envelope.
    assert [unit.split(b" ")[0] for unit in server.received_groups[2]] == [
        b"one\r\n.\r\n",
        b"MAIL",
        b"RCPT",
        b"DATA\r\n",
    ]
    assert server.data_bodies == [b"one\r\n", b"three\r\n"]


@pytest.mark.anyio
async def test_pipelining_with_data_sends_mail_rcpt_data_in_one_write(
    flavour: Flavour, scripted_server: Any
) -> None:
    server = scripted_server(
        [
            *hello(PIPELINING_EHLO),
            expect(b"MAIL"),
            expect(b"RCPT"),
            expect(b"DATA"),
            send(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            expect_data(),
            send(b"250 queued\r\n"),
            expect(b"RSET"),
            expect(b"NOOP"),
            send(b"250 ok\r\n250 ok\r\n"),
            expect(b"QUIT"),
            send(b"221 bye\r\n"),
        ]
    )
    async with flavour.client(server) as c:
        await c.sendmail("a@x.test", ["b@x.test"], b".x\r\n")
        replies = await c.pipeline([Rset(), Noop()])
    await finished(server)
    assert [r.code for r in replies] == [250, 250]
    assert len(server.received_groups[1]) == 3
    assert server.data_bodies == [b"..x\r\n"]
    assert len(server.received_groups[3]) == 2


@pytest.mark.anyio
async def test_421_mid_session_ends_it(flavour: Flavour, scripted_server: Any) -> None:
    server = scripted_server(
        [*hello(), expect(b"MAIL"), send_then_close(b"421 4.3.0 going down\r\n")]
    )
    client = flavour.client(server)
    await client.connect()
    with pytest.raises(TransientReplyError) as caught:
        await client.sendmail("a@x.test", ["b@x.test"], BODY)
    assert caught.value.code == 421
    # Not a refusal of MAIL: the server is closing, whatever the command was.
    assert caught.value.phase == "service closing (in answer to MAIL FROM:<a@x.test>)"
    assert str(caught.value).startswith("421 during service closing")
    assert not client.usable
    await finished(server)
    assert [line.split()[0] for line in server.lines] == [b"EHLO", b"MAIL"]


@pytest.mark.anyio
async def test_221_to_a_command_other_than_quit_means_closing(
    flavour: Flavour, scripted_server: Any
) -> None:
    server = scripted_server([*hello(), expect(b"NOOP"), send_then_close(b"221 2.0.0 bye\r\n")])
    client = flavour.client(server)
    await client.connect()
    with pytest.raises(TransientReplyError) as caught:
        await client.noop()
    assert caught.value.code == 221
    assert caught.value.phase.startswith("service closing (in answer to NOOP")
    assert not client.usable
    await finished(server)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("pushed", "error", "message"),
    [
        (b"250 2.0.0 unasked\r\n", RemoteProtocolError, r"reply \(250\) nothing asked for"),
        (b"421 4.3.2 shutting down\r\n", TransientReplyError, "421 during service closing"),
    ],
)
async def test_a_reply_nothing_asked_for_stops_the_next_command(
    flavour: Flavour, scripted_server: Any, pushed: bytes, error: type[Exception], message: str
) -> None:
    server = scripted_server([*hello(), send(pushed), expect_close()])
    client = flavour.client(server)
    await client.connect()
    await anyio.sleep(0.3)  # the pushed reply is there before the next command
    with pytest.raises(error, match=message):
        await client.sendmail("a@x.test", ["b@x.test"], BODY)
    assert not client.usable
    await client.close()
    await finished(server)
    # It was never taken as the reply to MAIL: MAIL was not even written.
    assert [line.split()[0] for line in server.lines] == [b"EHLO"]


@pytest.mark.anyio
async def test_a_close_in_the_middle_of_a_reply(flavour: Flavour, scripted_server: Any) -> None:
    server = scripted_server(
        [GREETING, expect(b"EHLO"), send_then_close(b"250-scripted\r\n250-PI")]
    )
    client = flavour.client(server)
    with pytest.raises(ConnectionLostError):
        await client.connect()
    assert not client.usable
    await finished(server)


@pytest.mark.anyio
async def test_a_close_after_the_content_leaves_the_outcome_unknown(
    flavour: Flavour, scripted_server: Any
) -> None:
    server = scripted_server(
        [
            *hello(),
            expect(b"MAIL"),
            send(b"250 ok\r\n"),
            expect(b"RCPT"),
            send(b"250 ok\r\n"),
            expect(b"DATA"),
            send(b"354 go\r\n"),
            expect_data(),
            close(),
        ]
    )
    client = flavour.client(server)
    await client.connect()
    with pytest.raises(OutcomeUnknownError):
        await client.sendmail("a@x.test", ["b@x.test"], BODY)
    assert not client.usable
    await finished(server)


@pytest.mark.anyio
async def test_a_stalled_server_times_out(flavour: Flavour, scripted_server: Any) -> None:
    server = scripted_server([GREETING, expect(b"EHLO"), expect_close()])
    client = flavour.client(server, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(SMTPTimeoutError) as caught:
        await client.connect()
    assert time.monotonic() - started < 3
    assert isinstance(caught.value, TimeoutError)
    await finished(server)
    assert server.peer_closed


@pytest.mark.anyio
async def test_a_dripping_server_still_times_out(flavour: Flavour, scripted_server: Any) -> None:
    reply = b"250-scripted.test\r\n250-" + b"X" * 40 + b"\r\n250 8BITMIME\r\n"
    server = scripted_server([GREETING, expect(b"EHLO"), drip(reply, 0.2)])
    client = flavour.client(server, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(SMTPTimeoutError):
        await client.connect()
    assert time.monotonic() - started < 3
    await finished(server)


@pytest.mark.anyio
async def test_starttls_response_injection_is_refused(
    flavour: Flavour, scripted_server: Any
) -> None:
    server = scripted_server(
        [
            *hello(b"250-scripted.test\r\n250 STARTTLS\r\n"),
            expect(b"STARTTLS"),
            send(b"220 go\r\n250 injected\r\n"),
            expect_close(),
        ]
    )
    client = flavour.client(server, tls="starttls")
    with pytest.raises(StartTLSInjectionError):
        await client.connect()
    await finished(server)
    assert [line.split()[0] for line in server.lines] == [b"EHLO", b"STARTTLS"]
    assert server.unconsumed == b""
    assert not client.usable


@pytest.mark.anyio
async def test_tls_required_but_not_offered(flavour: Flavour, scripted_server: Any) -> None:
    server = scripted_server([*hello(), expect(b"QUIT"), send(b"221 bye\r\n")])
    client = flavour.client(server, tls=None)
    with pytest.raises(TLSRequiredError, match='tls="none"') as caught:
        await client.connect()
    # The server may simply run without TLS: that is no protocol violation.
    assert not isinstance(caught.value, RemoteProtocolError)
    await finished(server)
    assert [line.split()[0] for line in server.lines] == [b"EHLO", b"QUIT"]
    assert not client.usable


@pytest.mark.anyio
async def test_a_refused_ehlo_falls_back_to_helo(flavour: Flavour, scripted_server: Any) -> None:
    server = scripted_server(
        [
            GREETING,
            expect(b"EHLO"),
            send(b"502 5.5.2 what?\r\n"),
            expect(b"HELO [127.0.0.1]"),
            send(b"250 scripted.test\r\n"),
            expect(b"MAIL"),
            send(b"250 ok\r\n"),
            expect(b"RCPT"),
            send(b"250 ok\r\n"),
            expect(b"DATA"),
            send(b"354 go\r\n"),
            expect_data(),
            send(b"250 queued\r\n"),
            expect(b"QUIT"),
            send(b"221 bye\r\n"),
        ]
    )
    async with flavour.client(server) as c:
        assert not c.session.conn.esmtp
        await c.sendmail("a@x.test", ["b@x.test"], BODY)
    await finished(server)
    assert server.data_bodies == [BODY]


@pytest.mark.anyio
async def test_a_refusing_greeting(flavour: Flavour, scripted_server: Any) -> None:
    server = scripted_server(
        [send(b"554 5.3.2 no service\r\n"), expect(b"QUIT"), send(b"221 bye\r\n")]
    )
    client = flavour.client(server)
    with pytest.raises(PermanentReplyError) as caught:
        await client.connect()
    assert caught.value.code == 554
    assert not client.usable
    await finished(server)
    # RFC 5321 §3.1: after a 554 greeting the server waits for QUIT; the client sends it.
    assert server.lines == [b"QUIT\r\n"]


@pytest.mark.anyio
@pytest.mark.parametrize("greeting", [b"421 4.3.2 busy\r\n", b"450 4.3.2 try later\r\n"])
async def test_a_deferring_greeting_ends_the_session_at_once(
    flavour: Flavour, scripted_server: Any, greeting: bytes
) -> None:
    server = scripted_server([send(greeting), expect_close()])
    client = flavour.client(server)
    with pytest.raises(TransientReplyError) as caught:
        await client.connect()
    assert caught.value.code == int(greeting[:3])
    assert caught.value.phase == "greeting"
    assert not client.usable
    await client.close()
    await finished(server)
    assert server.lines == []


@pytest.mark.anyio
async def test_connection_refused(flavour: Flavour) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = flavour.client(host="127.0.0.1", port=port)
    with pytest.raises(ConnectionLostError, match=r"connecting to 127\.0\.0\.1"):
        await client.connect()
    assert not client.usable


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_cancelling_a_send_closes_the_connection(
    anyio_backend: str, scripted_server: Any
) -> None:
    server = scripted_server([*hello(), expect(b"MAIL"), expect_close()])
    client = Flavour(anyio_backend).client(server)
    await client.connect()
    with anyio.move_on_after(0.3) as scope:
        await client.sendmail("a@x.test", ["b@x.test"], BODY)
    assert scope.cancelled_caught
    assert not client.usable
    await finished(server)
    assert server.peer_closed
