"""The three transports against scripted servers: batching, hostile and broken peers.

Each server is a handler table of smtpbee.testing (the defaults of a well-behaved
server for the rest); the assertions are about what the client raised and what the
server received (``transcript.rounds()``: the units read between two of the server's
writes, so one round is one round trip).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import types
from typing import Any

import anyio
import pytest
from flavours import Flavour, finished
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
from smtpbee.testing import (
    DEFAULT,
    Command,
    ServerSession,
    ThreadedServer,
    close,
    drip,
    pause,
    stall,
)

PIPELINING = ["PIPELINING", "8BITMIME"]
CHUNKING = ["PIPELINING", "CHUNKING", "8BITMIME"]
BODY = b"Subject: s\r\n\r\nbody\r\n"


def serve(
    scripted_server: Any,
    handlers: dict[str, Any] | None = None,
    *,
    extensions: list[str] | tuple[str, ...] = (),
    **options: Any,
) -> ThreadedServer:
    """A scripted server named scripted.test; its EHLO offers ``extensions`` (none)."""
    server: ThreadedServer = scripted_server(
        handlers, hostname="scripted.test", extensions=extensions, **options
    )
    return server


def lines(server: ThreadedServer) -> list[bytes]:
    """Every command line the server read, as sent."""
    return [command.line for command in server.commands]


def verbs(server: ThreadedServer) -> list[str]:
    return [command.verb for command in server.commands]


@pytest.mark.anyio
async def test_pipelining_and_chunking_send_the_envelope_and_body_in_one_write(
    flavour: Flavour, scripted_server: Any
) -> None:
    server = serve(scripted_server, extensions=CHUNKING)
    async with flavour.client(server) as c:
        result = await c.sendmail("a@x.test", ["b@x.test", "c@x.test"], BODY)
    await finished(server)
    assert result.accepted == ["b@x.test", "c@x.test"]
    group = server.transcript.rounds()[1]
    assert [unit.split(b" ")[0] for unit in group] == [
        b"MAIL",
        b"RCPT",
        b"RCPT",
        b"BDAT",
        BODY.split(b" ")[0],
    ]
    assert group[:4] == [
        b"MAIL FROM:<a@x.test>\r\n",
        b"RCPT TO:<b@x.test>\r\n",
        b"RCPT TO:<c@x.test>\r\n",
        b"BDAT 20 LAST\r\n",
    ]
    [message] = server.messages
    assert message.chunks == (BODY,) and message.recipients == ("b@x.test", "c@x.test")


@pytest.mark.anyio
async def test_a_batch_overlaps_messages_one_round_trip_each(
    flavour: Flavour, scripted_server: Any
) -> None:
    def rcpt(command: Command, session: ServerSession) -> Any:
        if command.address == "c@x.test":
            return "550 no such user"
        return session.default(command)

    server = serve(scripted_server, {"RCPT": rcpt}, extensions=PIPELINING)
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
    rounds = server.transcript.rounds()
    assert [unit.split(b" ")[0] for unit in rounds[2]] == [
        b"one\r\n.\r\n",
        b"MAIL",
        b"RCPT",
        b"DATA\r\n",
    ]
    assert rounds[3] == [b"RSET\r\n"]
    assert [m.content for m in server.messages] == [b"one\r\n", b"three\r\n"]
    assert [m.recipients for m in server.messages] == [("b@x.test",), ("d@x.test",)]


@pytest.mark.anyio
async def test_pipelining_with_data_sends_mail_rcpt_data_in_one_write(
    flavour: Flavour, scripted_server: Any
) -> None:
    server = serve(scripted_server, extensions=PIPELINING)
    async with flavour.client(server) as c:
        await c.sendmail("a@x.test", ["b@x.test"], b".x\r\n")
        replies = await c.pipeline([Rset(), Noop()])
    await finished(server)
    assert [r.code for r in replies] == [250, 250]
    rounds = server.transcript.rounds()
    assert [unit.split(b" ")[0] for unit in rounds[1]] == [b"MAIL", b"RCPT", b"DATA\r\n"]
    assert [m.wire for m in server.messages] == [b"..x\r\n.\r\n"]
    assert rounds[3] == [b"RSET\r\n", b"NOOP\r\n"]


@pytest.mark.anyio
async def test_421_mid_session_ends_it(flavour: Flavour, scripted_server: Any) -> None:
    server = serve(scripted_server, {"MAIL": ["421 4.3.0 going down", close()]})
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
    assert verbs(server) == ["EHLO", "MAIL"]


@pytest.mark.anyio
async def test_221_to_a_command_other_than_quit_means_closing(
    flavour: Flavour, scripted_server: Any
) -> None:
    server = serve(scripted_server, {"NOOP": ["221 2.0.0 bye", close()]})
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
    # The reply is pushed a moment after the answer to EHLO; then the server says nothing.
    server = serve(scripted_server, {"EHLO": [DEFAULT, pause(0.05), pushed, stall()]})
    client = flavour.client(server)
    await client.connect()
    await anyio.sleep(0.3)  # the pushed reply is there before the next command
    with pytest.raises(error, match=message):
        await client.sendmail("a@x.test", ["b@x.test"], BODY)
    assert not client.usable
    await client.close()
    await finished(server)
    # It was never taken as the reply to MAIL: MAIL was not even written.
    assert verbs(server) == ["EHLO"]
    assert server.sessions[0].unparsed == b""


@pytest.mark.anyio
async def test_a_close_in_the_middle_of_a_reply(flavour: Flavour, scripted_server: Any) -> None:
    server = serve(scripted_server, {"EHLO": [b"250-scripted\r\n250-PI", close()]})
    client = flavour.client(server)
    with pytest.raises(ConnectionLostError):
        await client.connect()
    assert not client.usable
    await finished(server)


@pytest.mark.anyio
async def test_a_close_after_the_content_leaves_the_outcome_unknown(
    flavour: Flavour, scripted_server: Any
) -> None:
    server = serve(scripted_server, {"MESSAGE": close()})
    client = flavour.client(server)
    await client.connect()
    with pytest.raises(OutcomeUnknownError):
        await client.sendmail("a@x.test", ["b@x.test"], BODY)
    assert not client.usable
    await finished(server)
    assert verbs(server) == ["EHLO", "MAIL", "RCPT", "DATA"]
    assert server.messages == []


@pytest.mark.anyio
async def test_a_stalled_server_times_out(flavour: Flavour, scripted_server: Any) -> None:
    server = serve(scripted_server, {"EHLO": stall()})
    client = flavour.client(server, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(SMTPTimeoutError) as caught:
        await client.connect()
    assert time.monotonic() - started < 3
    assert isinstance(caught.value, TimeoutError)
    await finished(server)
    assert server.sessions[0].client_closed


def _stop_reading_after_354(listener: socket.socket, hung_up: threading.Event) -> None:
    """Answer up to the 354 to DATA, then read nothing more until the client hangs up."""
    conn, _ = listener.accept()
    with conn, conn.makefile("rb") as reader:
        conn.sendall(b"220 ready\r\n")
        while line := reader.readline():
            conn.sendall(b"354 go\r\n" if line.upper().startswith(b"DATA") else b"250 ok\r\n")
            if line.upper().startswith(b"DATA"):
                break
        # The client's write fills the buffers and blocks: only its timeout ends it.
        conn.setblocking(False)
        while not hung_up.wait(0.05):
            with contextlib.suppress(BlockingIOError):
                if conn.recv(1, socket.MSG_PEEK) == b"":
                    hung_up.set()


@pytest.mark.anyio
async def test_a_server_that_stops_reading_the_content_times_the_write_out(
    flavour: Flavour,
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    # Small buffers on the server's side: a few MB of content fill them.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    hung_up = threading.Event()
    server = threading.Thread(target=_stop_reading_after_354, args=(listener, hung_up))
    server.start()
    try:
        address = types.SimpleNamespace(host="127.0.0.1", port=listener.getsockname()[1])
        client = flavour.client(address, timeout=0.5)
        await client.connect()
        started = time.monotonic()
        with pytest.raises(OutcomeUnknownError) as caught:
            await client.sendmail("a@x.test", ["b@x.test"], (b"x" * 998 + b"\r\n") * 8_000)
        assert time.monotonic() - started < 5
        # The write itself timed out, not a read after it.
        assert isinstance(caught.value.__cause__, SMTPTimeoutError)
        assert "timed out sending" in str(caught.value.__cause__)
        assert not client.usable
    finally:
        hung_up.set()
        server.join(10)
        listener.close()


@pytest.mark.anyio
async def test_a_dripping_server_still_times_out(flavour: Flavour, scripted_server: Any) -> None:
    reply = b"250-scripted.test\r\n250-" + b"X" * 40 + b"\r\n250 8BITMIME\r\n"
    server = serve(scripted_server, {"EHLO": drip(reply, 0.2)})
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
    server = serve(
        scripted_server,
        {"STARTTLS": [b"220 go\r\n250 injected\r\n", stall()]},
        extensions=["STARTTLS"],
    )
    client = flavour.client(server, tls="starttls")
    with pytest.raises(StartTLSInjectionError):
        await client.connect()
    await finished(server)
    assert verbs(server) == ["EHLO", "STARTTLS"]
    assert server.sessions[0].unparsed == b""  # not a byte of a handshake followed
    assert not client.usable


@pytest.mark.anyio
async def test_tls_required_but_not_offered(flavour: Flavour, scripted_server: Any) -> None:
    server = serve(scripted_server)
    client = flavour.client(server, tls=None)
    with pytest.raises(TLSRequiredError, match='tls="none"') as caught:
        await client.connect()
    # The server may simply run without TLS: that is no protocol violation.
    assert not isinstance(caught.value, RemoteProtocolError)
    await finished(server)
    assert verbs(server) == ["EHLO", "QUIT"]
    assert not client.usable


@pytest.mark.anyio
async def test_a_refused_ehlo_falls_back_to_helo(flavour: Flavour, scripted_server: Any) -> None:
    server = serve(scripted_server, {"EHLO": "502 5.5.2 what?"})
    async with flavour.client(server) as c:
        assert not c.session.conn.esmtp
        await c.sendmail("a@x.test", ["b@x.test"], BODY)
    await finished(server)
    assert lines(server)[:2] == [b"EHLO [127.0.0.1]\r\n", b"HELO [127.0.0.1]\r\n"]
    assert verbs(server)[2:] == ["MAIL", "RCPT", "DATA", "QUIT"]
    assert [m.content for m in server.messages] == [BODY]


@pytest.mark.anyio
async def test_a_refusing_greeting(flavour: Flavour, scripted_server: Any) -> None:
    server = serve(scripted_server, greeting="554 5.3.2 no service")
    client = flavour.client(server)
    with pytest.raises(PermanentReplyError) as caught:
        await client.connect()
    assert caught.value.code == 554
    assert not client.usable
    await finished(server)
    # RFC 5321 §3.1: after a 554 greeting the server waits for QUIT; the client sends it.
    assert lines(server) == [b"QUIT\r\n"]


@pytest.mark.anyio
@pytest.mark.parametrize("greeting", [b"421 4.3.2 busy\r\n", b"450 4.3.2 try later\r\n"])
async def test_a_deferring_greeting_ends_the_session_at_once(
    flavour: Flavour, scripted_server: Any, greeting: bytes
) -> None:
    server = serve(scripted_server, greeting=[greeting, stall()])
    client = flavour.client(server)
    with pytest.raises(TransientReplyError) as caught:
        await client.connect()
    assert caught.value.code == int(greeting[:3])
    assert caught.value.phase == "greeting"
    assert not client.usable
    await client.close()
    await finished(server)
    assert server.commands == []
    assert server.transcript.client() == b""


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
    server = serve(scripted_server, {"MAIL": stall()})
    client = Flavour(anyio_backend).client(server)
    await client.connect()
    with anyio.move_on_after(0.3) as scope:
        await client.sendmail("a@x.test", ["b@x.test"], BODY)
    assert scope.cancelled_caught
    assert not client.usable
    await finished(server)
    assert server.sessions[0].client_closed
