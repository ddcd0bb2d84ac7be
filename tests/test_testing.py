"""smtpbee.testing: the scripted server in every runner, and its hypothesis strategies.

* The same handler table and the same client actions give the same transcript in each
  runner: a thread (blocking client), asyncio, trio, and the procedure driver (the core
  alone, no socket); with TLS too, the transcript saying which bytes were encrypted.
* The defaults are those of a well-behaved server; overrides, actions and sequences do
  what they say; failures of handlers surface in the test.
* The strategies produce what they promise: valid replies are read as one reply,
  invalid ones are refused with RemoteProtocolError, drawn servers never make smtpbee
  raise anything but its own errors.

The standard library's smtplib (or a raw socket) is the client where the point is the
server, so a failure points at the server, not at smtpbee.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import trio
from budget import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import LoopbackCA
from smtpbee import (
    BodyInfo,
    ClientSession,
    Extensions,
    RemoteProtocolError,
    Reply,
    SMTPError,
    SMTPTimeoutError,
    TLSMode,
)
from smtpbee._receivebuffer import ReplyReader
from smtpbee.testing import (
    DEFAULT,
    Command,
    Entry,
    Handler,
    Inject,
    ProcedureDriver,
    Response,
    ScriptedServer,
    ServerSession,
    Transcript,
    close,
    drip,
    inject,
    pause,
    replies,
    reply,
    reset,
    stall,
    start_tls,
)
from smtpbee.testing import strategies as strategies
from smtpbee.transports.asyncio import AsyncSMTPClient
from smtpbee.transports.sync import SMTPClient
from smtpbee.transports.trio import TrioSMTPClient

CLIENT = "client.test"
BODY = b"Subject: same\r\n\r\n.a dotted line\r\nand one more\r\n"
FAST = settings(
    max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def refuse_bad(command: Command, session: ServerSession) -> Response:
    """RCPT handler: refuse bad@x.test, accept the rest as the server would."""
    if command.address == "bad@x.test":
        return reply(550, "5.1.1 <bad@x.test>: no such user")
    return DEFAULT


# ----------------------------------------------------------------------------
# One table, four runners, one transcript


def run_thread(server: ScriptedServer, options: dict[str, Any]) -> Transcript:
    with server.serve_in_thread() as running:
        with SMTPClient(running.host, running.port, **options) as client:
            client_actions(client)
        running.wait()
    return running.transcript


def client_actions(client: Any) -> None:
    if client.session.conn.extensions.auth_mechanisms:
        client.login("user", "secret", allow_insecure=True)
    client.sendmail("a@x.test", ["b@x.test", "bad@x.test"], BODY)
    client.noop()


async def async_client_actions(client: Any) -> None:
    if client.session.conn.extensions.auth_mechanisms:
        await client.login("user", "secret", allow_insecure=True)
    await client.sendmail("a@x.test", ["b@x.test", "bad@x.test"], BODY)
    await client.noop()


def run_asyncio(server: ScriptedServer, options: dict[str, Any]) -> Transcript:
    async def main() -> Transcript:
        async with server.serve_asyncio() as running:
            async with AsyncSMTPClient(running.host, running.port, **options) as client:
                await async_client_actions(client)
            await running.wait()
        return running.transcript

    return asyncio.run(main())


def run_trio(server: ScriptedServer, options: dict[str, Any]) -> Transcript:
    async def main() -> Transcript:
        async with server.serve_trio() as running:
            async with TrioSMTPClient(running.host, running.port, **options) as client:
                await async_client_actions(client)
            await running.wait()
        return running.transcript

    return trio.run(main)


def run_driver(server: ScriptedServer, options: dict[str, Any]) -> Transcript:
    # What the transports do, without a socket: the same procedures of the core.
    wire = server.driver()
    session = ClientSession(
        local_hostname=CLIENT, tls=TLSMode(options["tls"]), lmtp=options.get("lmtp", False)
    )
    wire.run(session.open())
    if session.conn.extensions.auth_mechanisms:
        wire.run(session.login("user", "secret", allow_insecure=True))
    body = BodyInfo.of_bytes(BODY)
    wire.run(session.sendmail("a@x.test", ["b@x.test", "bad@x.test"], body=body), [BODY])
    wire.run(session.noop())
    wire.run(session.quit())
    return wire.transcript


RUNNERS: dict[str, Callable[[ScriptedServer, dict[str, Any]], Transcript]] = {
    "thread": run_thread,
    "asyncio": run_asyncio,
    "trio": run_trio,
    "driver": run_driver,
}

SCRIPTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "lock step": {"extensions": ["8BITMIME"]},
    "pipelining and DATA": {
        "extensions": ["PIPELINING", "8BITMIME", "AUTH PLAIN"],
        "users": {"user": "secret"},
    },
    "AUTH and CHUNKING": {"users": {"user": "secret"}},
    "LMTP": {"lmtp": True, "extensions": ["PIPELINING"]},
    "slow and sloppy": {
        "handlers": {"NOOP": [pause(0.05), "250 2.0.0 slow Ok"], "HELO": "502 never used"},
    },
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_runner_gives_the_same_transcript(script: str) -> None:
    options = dict(SCRIPTS[script])
    handlers: dict[str, Handler] = {"RCPT": refuse_bad, **options.pop("handlers", {})}
    server = ScriptedServer(handlers, **options)
    client_options = {"tls": "none", "local_hostname": CLIENT, "timeout": 10.0}
    if server.lmtp:
        client_options["lmtp"] = True
    transcripts = {name: run(server, client_options) for name, run in RUNNERS.items()}
    expected = transcripts.pop("thread")
    for name, transcript in transcripts.items():
        assert transcript == expected, name
    assert expected[0].direction == "S" and expected[-2:] == [
        ("C", b"QUIT\r\n", False),
        ("S", b"221 2.0.0 mx.smtpbee.test closing connection\r\n", False),
    ]
    assert not any(entry.tls for entry in expected)


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_every_runner_records_what_went_under_tls(mode: str, trust_ca: LoopbackCA) -> None:
    server = ScriptedServer(
        {"RCPT": refuse_bad},
        tls=mode,  # type: ignore[arg-type]
        tls_context=trust_ca.server_context(),
        users={"user": "secret"},
        auth_requires_tls=True,
    )
    client_options = {
        "tls": mode,
        "local_hostname": CLIENT,
        "timeout": 10.0,
        "ssl_context": trust_ca.client_context(),
        "server_hostname": "localhost",
    }
    transcripts = {name: run(server, client_options) for name, run in RUNNERS.items()}
    expected = transcripts.pop("thread")
    for name, transcript in transcripts.items():
        assert transcript == expected, name
    flags = [entry.tls for entry in expected]
    if mode == "implicit":
        assert all(flags)
    else:
        # Plain up to the 220 to STARTTLS, encrypted from the next EHLO on.
        switch = flags.index(True)
        assert not any(flags[:switch]) and all(flags[switch:])
        assert expected[switch - 2 : switch] == [
            ("C", b"STARTTLS\r\n", False),
            ("S", b"220 2.0.0 Ready to start TLS\r\n", False),
        ]
        assert expected[switch] == ("C", b"EHLO client.test\r\n", True)
        # AUTH was offered only once TLS was on.
        assert b"AUTH" not in b"".join(e.data for e in expected[:switch])
    assert b"AUTH PLAIN " in b"".join(e.data for e in expected if e.tls)


def test_a_message_under_tls_says_so(trust_ca: LoopbackCA) -> None:
    server = ScriptedServer(tls="starttls", tls_context=trust_ca.server_context())
    with server.serve_in_thread() as running:
        with SMTPClient(
            running.host,
            running.port,
            tls="starttls",
            ssl_context=trust_ca.client_context(),
            server_hostname="localhost",
        ) as client:
            client.sendmail("a@x.test", ["b@x.test"], BODY)
        running.wait()
    [message] = running.messages
    assert message.tls and message.content == BODY and message.helo == "[127.0.0.1]"
    assert running.sessions[0].tls


# ----------------------------------------------------------------------------
# The defaults of a well-behaved server, over a socket with smtplib


def smtp(running: Any) -> smtplib.SMTP:
    return smtplib.SMTP(running.host, running.port, local_hostname=CLIENT, timeout=5)


def test_smtplib_round_trip_with_the_defaults() -> None:
    message = b"From: a@client.test\r\nSubject: hi\r\n\r\n.leading dot\r\n\xc3\xa9\r\n"
    server = ScriptedServer()
    with server.serve_in_thread() as running, smtp(running) as client:
        code, text = client.ehlo()
        assert code == 250 and text.startswith(b"mx.smtpbee.test greets client.test")
        assert client.has_extn("pipelining") and client.has_extn("chunking")
        assert client.sendmail("a@client.test", ["b@x.test"], message, ["BODY=8BITMIME"]) == {}
        assert client.noop()[0] == 250
        assert client.verify("postmaster")[0] == 252
        assert client.expn("staff")[0] == 502
        assert client.help().startswith(b"2.0.0 Commands:")
        assert client.docmd("XYZZY")[0] == 502
        assert client.docmd("STARTTLS")[0] == 502  # not offered
        assert client.docmd("AUTH", "PLAIN")[0] == 503  # no users
    running.wait()
    [delivered] = running.messages
    assert delivered.content == message
    assert delivered.wire == message.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    assert delivered.mail.parameters == {"SIZE": str(len(message)), "BODY": "8BITMIME"}
    assert delivered.sender == "a@client.test" and delivered.recipients == ("b@x.test",)
    assert delivered.queue_id == "0000000001" and delivered.chunks == ()
    # One command, one reply: smtplib does not pipeline.
    assert all(len(r) == 1 for r in running.transcript.rounds())


def talk(running: Any, *lines: bytes) -> list[bytes]:
    """Send each line, read one reply after each; return the reply codes and separators."""
    with (
        socket.create_connection(running.address, timeout=5) as sock,
        sock.makefile("rb") as reader,
    ):

        def reply_lines() -> list[bytes]:
            got = []
            while True:
                line = reader.readline()
                got.append(line[:4])
                if len(line) < 4 or line[3:4] != b"-":
                    return got

        received = reply_lines()
        for line in lines:
            sock.sendall(line)
            received += reply_lines()
    return received


def test_commands_out_of_order_get_the_refusals_a_server_gives() -> None:
    with ScriptedServer(max_line_length=100).serve_in_thread() as running:
        got = talk(
            running,
            b"MAIL FROM:<a@x.test>\r\n",  # no EHLO yet
            b"EHLO\r\n",  # no name
            b"HELO me\r\n",
            b"RCPT TO:<b@x.test>\r\n",  # no MAIL
            b"DATA\r\n",  # no MAIL
            b"MAIL FROM:bad\r\n",
            b"MAIL FROM:<a@x.test> SIZE=99999999999\r\n",  # over SIZE
            b"MAIL FROM:<a@x.test>\r\n",
            b"MAIL FROM:<a@x.test>\r\n",  # nested
            b"RCPT TO:bad\r\n",
            b"DATA\r\n",  # no recipient
            b"BDAT x\r\n",
            b"LHLO me\r\n",  # LMTP only
            b"NOOP " + b"x" * 200 + b"\r\n",  # longer than max_line_length
            b"NOOP\n",  # bare LF
            b"\r\n",
            b"RSET\r\n",
            b"QUIT\r\n",
        )
    assert got == [
        b"220 ", b"503 ", b"501 ", b"250 ", b"503 ", b"503 ", b"501 ", b"552 ", b"250 ", b"503 ",
        b"501 ", b"554 ", b"501 ", b"502 ", b"500 ", b"500 ", b"502 ", b"250 ", b"221 ",
    ]  # fmt: skip


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_auth_mechanisms_against_users(mechanism: str) -> None:
    server = ScriptedServer(users={"alice": "wonderland"}, auth_mechanisms=[mechanism])
    with server.serve_in_thread() as running:
        with smtp(running) as client:
            client.ehlo()
            assert client.esmtp_features["auth"].strip() == mechanism
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login("alice", "wrong")
            assert client.login("alice", "wonderland")[0] == 235
            assert client.docmd("AUTH", mechanism)[0] == 503  # already
            client.sendmail("a@x.test", ["b@x.test"], b"hi\r\n")
        running.wait()
    assert running.sessions[0].authenticated and running.sessions[0].user == "alice"
    assert running.messages[0].user == "alice"


def test_auth_edge_cases() -> None:
    server = ScriptedServer(users={"u": "p"}, auth_mechanisms=["PLAIN", "LOGIN", "XOAUTH2"])
    session = server.session()
    session.start()
    session.feed(b"EHLO c\r\n")
    assert session.feed(b"AUTH GSSAPI\r\n").startswith(b"504 ")
    assert session.feed(b"AUTH PLAIN\r\n") == b"334 \r\n"
    assert session.feed(b"*\r\n").startswith(b"501 5.7.0")
    assert session.feed(b"AUTH LOGIN\r\n").startswith(b"334 VXNlcm5hbWU6")
    assert session.feed(b"!!!\r\n").startswith(b"501 5.5.2")
    assert session.feed(b"AUTH PLAIN =\r\n").startswith(b"535 ")
    token = base64.b64encode(b"user=u\x01auth=Bearer p\x01\x01").decode()
    assert session.feed(f"AUTH XOAUTH2 {token}\r\n".encode()).startswith(b"235 ")
    assert session.user == "u"
    continuations = [c.argument for c in session.commands if c.continuation]
    assert continuations == ["*", "!!!"]


def test_lmtp_answers_each_recipient() -> None:
    server = ScriptedServer({"RCPT": refuse_bad}, lmtp=True)
    session = server.session()
    assert b"".join(o.data for o in session.start() if isinstance(o, Inject)).endswith(
        b"LMTP smtpbee.testing\r\n"
    )
    assert session.feed(b"EHLO c\r\n").startswith(b"500 ")
    assert session.feed(b"LHLO c\r\n").startswith(b"250-")
    session.feed(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n")
    session.feed(b"RCPT TO:<bad@x.test>\r\nRCPT TO:<c@x.test>\r\nDATA\r\n")
    finals = session.feed(b"hi\r\n.\r\n").split(b"\r\n")[:-1]
    assert [line[:4] for line in finals] == [b"250 ", b"250 "]
    assert [m.recipients for m in session.messages] == [("b@x.test", "c@x.test")]


# ----------------------------------------------------------------------------
# Handlers: fixed answers, sequences, functions, actions


def test_replies_are_used_in_turn_across_connections() -> None:
    greeting = replies("421 4.3.2 busy, try again", [DEFAULT])
    server = ScriptedServer({"*": "500 nothing today", "QUIT": DEFAULT}, greeting=greeting)
    with server.serve_in_thread() as running:
        with pytest.raises(smtplib.SMTPConnectError):
            smtp(running)
        with smtp(running) as client:
            assert client.noop()[0] == 500
            assert client.ehlo()[0] == 500  # "*" answers every verb without an entry
        running.wait(connections=2)
    assert len(running.sessions) == 2
    assert running.sessions[0].greeting_code == 421 and running.sessions[1].greeting_code == 220


def test_a_handler_sees_the_parsed_command_and_the_session() -> None:
    seen: list[tuple[str, str | None, dict[str, str | None], str | None]] = []

    def rcpt(command: Command, session: ServerSession) -> Response:
        seen.append((command.verb, command.address, command.parameters, session.sender))
        session.state["count"] = session.state.get("count", 0) + 1
        return [DEFAULT, inject(b"")] if session.state["count"] == 1 else "452 4.5.3 enough"

    session = ScriptedServer({"RCPT": rcpt}).session()
    session.start()
    session.feed(b"EHLO c\r\nMAIL FROM:<a@x.test> BODY=8BITMIME\r\n")
    answers = session.feed(b"rcpt to:<b@x.test> NOTIFY=NEVER\r\nRCPT TO: <c@x.test>\r\n")
    assert answers.split(b"\r\n")[1].startswith(b"452 4.5.3")
    assert seen == [
        ("RCPT", "b@x.test", {"NOTIFY": "NEVER"}, "a@x.test"),
        ("RCPT", "c@x.test", {}, "a@x.test"),
    ]
    assert session.recipients == ["b@x.test"]  # the 452 added nobody


def test_the_state_follows_the_codes_written_whoever_chose_them() -> None:
    # MAIL, RCPT and DATA answered by the table, not the defaults: a transaction all the same.
    table: dict[str, Handler] = {"MAIL": "250 fine", "RCPT": "251 forwarding", "DATA": "354 go"}
    session = ScriptedServer(table).session()
    session.start()
    session.feed(b"HELO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n")
    assert session.feed(b"x\r\n.\r\n").startswith(b"250 2.0.0 Ok: queued as")
    assert session.messages[0].recipients == ("b@x.test",)
    # A 250 to DATA starts no content: the next line is a command again.
    session = ScriptedServer({"DATA": "250 sloppy"}).session()
    session.start()
    session.feed(b"HELO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n")
    assert session.feed(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"


def test_bad_answers_and_nested_defaults_are_refused() -> None:
    session = ScriptedServer({"NOOP": 42}).session()  # type: ignore[dict-item]
    session.start()
    with pytest.raises(TypeError, match="a handler answered 42"):
        session.feed(b"NOOP\r\n")
    session = ScriptedServer({"NOOP": lambda c, s: DEFAULT}).session()
    session.start()
    assert session.feed(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"


def test_reply_values() -> None:
    assert reply(250).to_bytes() == b"250 2.0.0 Ok\r\n"
    assert reply(550).to_bytes() == b"550 5.0.0 Refused\r\n"
    assert reply(250, "a", b"b").to_bytes() == b"250-a\r\n250 b\r\n"
    session = ScriptedServer({"NOOP": "250-one\n250 two", "RSET": reply(250, "\u00e9")}).session()
    session.start()
    assert session.feed(b"NOOP\r\nRSET\r\n") == b"250-one\r\n250 two\r\n250 \xc3\xa9\r\n"


def test_a_handler_that_raises_fails_the_test_once(scripted_server: Any) -> None:
    def broken(command: Command, session: ServerSession) -> Response:
        raise ZeroDivisionError("the handler's own bug")

    running = scripted_server({"NOOP": broken})
    with smtp(running) as client, pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    with pytest.raises(ZeroDivisionError) as caught:
        running.wait()
    assert "the transcript ends" in "".join(caught.value.__notes__)
    running.wait()  # raised once; the teardown is quiet too


@pytest.mark.parametrize("runner", ["asyncio", "trio"])
def test_a_handler_that_raises_surfaces_in_async_runners(runner: str) -> None:
    def broken(command: Command, session: ServerSession) -> Response:
        raise ZeroDivisionError("the handler's own bug")

    server = ScriptedServer({"NOOP": broken})

    async def main() -> None:
        running = server.serve_asyncio() if runner == "asyncio" else server.serve_trio()
        async with running:
            stream = await _open(runner, running.port)
            await _send_and_wait(runner, stream, b"NOOP\r\n")

    with pytest.raises(ZeroDivisionError):
        asyncio.run(main()) if runner == "asyncio" else trio.run(main)


async def _open(runner: str, port: int) -> Any:
    if runner == "asyncio":
        return await asyncio.open_connection("127.0.0.1", port)
    return await trio.open_tcp_stream("127.0.0.1", port)


async def _send_and_wait(runner: str, stream: Any, data: bytes) -> None:
    """Send ``data`` after the greeting, then read until the server aborts the connection."""
    if runner == "asyncio":
        reader, writer = stream
        await reader.readline()
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()
    else:
        await stream.receive_some(100)
        await stream.send_all(data)
        with trio.move_on_after(5), contextlib.suppress(trio.BrokenResourceError):
            while await stream.receive_some(100):
                pass
        await stream.aclose()


def test_actions_over_a_socket() -> None:
    table: dict[str, Handler] = {
        "EHLO": drip("250 slow\r\n", 0.001),
        "NOOP": [pause(0.1), "250 late"],
        "RSET": reset(),
    }
    with ScriptedServer(table).serve_in_thread() as running:
        with (
            socket.create_connection(running.address, timeout=5) as sock,
            sock.makefile("rb") as reader,
        ):
            reader.readline()
            sock.sendall(b"EHLO x\r\n")
            assert reader.readline() == b"250 slow\r\n"
            started = time.monotonic()
            sock.sendall(b"NOOP\r\n")
            assert reader.readline() == b"250 late\r\n"
            assert time.monotonic() - started >= 0.1
            sock.sendall(b"RSET\r\n")
            with pytest.raises(ConnectionResetError):
                while sock.recv(10):
                    pass
        running.wait()
    with ScriptedServer(greeting=["554 go away", close()]).serve_in_thread() as running:
        with (
            socket.create_connection(running.address, timeout=5) as sock,
            sock.makefile("rb") as reader,
        ):
            assert reader.readline() == b"554 go away\r\n"
            assert reader.readline() == b""  # FIN
            sock.sendall(b"QUIT\r\n")  # read and recorded, never answered
        running.wait()
    assert running.sessions[0].unparsed == b"QUIT\r\n" and running.commands == []
    assert running.transcript[-1] == ("C", b"QUIT\r\n", False)


def test_a_stall_records_what_arrives_until_the_client_hangs_up() -> None:
    with ScriptedServer({"MAIL": stall()}).serve_in_thread() as running:
        with socket.create_connection(running.address, timeout=5) as sock:
            sock.recv(100)
            sock.sendall(b"EHLO x\r\n")
            sock.recv(1000)
            sock.sendall(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n")
            time.sleep(0.1)
            sock.sendall(b"DATA\r\n")
        running.wait()
    session = running.sessions[0]
    assert [c.verb for c in session.commands] == ["EHLO", "MAIL"]
    assert session.unparsed == b"RCPT TO:<b@x.test>\r\nDATA\r\n"
    assert session.client_closed


def test_a_silent_client_gets_421_after_the_timeout() -> None:
    with ScriptedServer(timeout=0.2).serve_in_thread() as running:
        with (
            socket.create_connection(running.address, timeout=5) as sock,
            sock.makefile("rb") as reader,
        ):
            reader.readline()
            assert reader.readline().startswith(b"421 4.4.2 mx.smtpbee.test Error: timeout")
        running.wait()
    assert running.sessions[0].timed_out


def test_starttls_with_smtplib_and_bytes_behind_the_handshake(trust_ca: LoopbackCA) -> None:
    server = ScriptedServer(tls="starttls", tls_context=trust_ca.server_context())
    with server.serve_in_thread() as running, smtp(running) as client:
        assert client.starttls(context=trust_ca.client_context())[0] == 220
        assert client.ehlo()[0] == 250 and not client.has_extn("starttls")
        assert client.docmd("STARTTLS")[0] == 554  # already on
    running.wait()
    assert [(c.line, c.tls) for c in running.commands][-3:] == [
        (b"ehlo client.test\r\n", True),  # smtplib's spelling, kept as sent
        (b"STARTTLS\r\n", True),
        (b"QUIT\r\n", True),
    ]


def test_a_failed_handshake_is_recorded(trust_ca: LoopbackCA) -> None:
    server = ScriptedServer(tls="implicit", tls_context=trust_ca.server_context())
    untrusting = ssl.create_default_context()
    with server.serve_in_thread() as running:
        with (
            socket.create_connection(running.address, timeout=5) as sock,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            untrusting.wrap_socket(sock, server_hostname="localhost")
        running.wait()
    assert running.sessions[0].tls_error is not None
    assert running.transcript == []


def test_start_tls_needs_a_context() -> None:
    with ScriptedServer({"NOOP": start_tls()}).serve_in_thread() as running:
        with socket.create_connection(running.address, timeout=5) as sock:
            sock.recv(100)
            sock.sendall(b"NOOP\r\n")
            with contextlib.suppress(OSError):
                sock.recv(100)  # the connection is aborted
        with pytest.raises(RuntimeError, match="needs the ScriptedServer's tls_context"):
            running.wait()


def test_listens_on_ipv6_loopback_and_nowhere_else() -> None:
    with ScriptedServer(host="::1").serve_in_thread() as running:
        with smtplib.SMTP("::1", running.port, local_hostname=CLIENT, timeout=5) as client:
            assert client.noop()[0] == 250
        running.wait()
    assert running.host == "::1" and running.sessions[0].peer is not None
    with pytest.raises(ValueError, match=r"127\.0\.0\.1 or ::1 only"):
        ScriptedServer(host="0.0.0.0")
    with pytest.raises(ValueError, match="tls must be"):
        ScriptedServer(tls="sometimes")  # type: ignore[arg-type]


def test_what_a_pipelining_client_sends_is_one_round() -> None:
    with ScriptedServer().serve_in_thread() as running:
        with (
            socket.create_connection(running.address, timeout=5) as sock,
            sock.makefile("rb") as reader,
        ):
            reader.readline()
            sock.sendall(b"EHLO client.test\r\n")
            while reader.readline()[3:4] == b"-":
                pass
            sock.sendall(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nBDAT 5 LAST\r\nhello")
            assert [reader.readline()[:4] for _ in range(3)] == [b"250 "] * 3
            sock.sendall(b"QUIT\r\n")
            assert reader.readline().startswith(b"221 ")
        running.wait()
    rounds = running.transcript.rounds()
    assert rounds[1] == [
        b"MAIL FROM:<a@x.test>\r\n",
        b"RCPT TO:<b@x.test>\r\n",
        b"BDAT 5 LAST\r\n",
        b"hello",
    ]
    assert running.messages[0].chunks == (b"hello",)
    assert running.transcript.server().endswith(b"closing connection\r\n")


# ----------------------------------------------------------------------------
# The procedure driver: a virtual clock, the wire's faults


def opened(server: ScriptedServer, **options: Any) -> tuple[ClientSession, ProcedureDriver]:
    wire = server.driver(**options)
    session = ClientSession(local_hostname=CLIENT, tls=TLSMode.NONE)
    wire.run(session.open())
    return session, wire


def test_the_driver_clock_times_out_a_slow_server() -> None:
    session, wire = opened(ScriptedServer({"NOOP": [pause(400), "250 too late"]}))
    with pytest.raises(SMTPTimeoutError, match="waiting for the reply to a command"):
        wire.run(session.noop())
    assert wire.now == 300  # the default deadline of a command's reply


def test_the_driver_clock_lets_a_dripping_reply_run_out_of_time() -> None:
    server = ScriptedServer({"NOOP": drip(b"250 " + b"x" * 100 + b"\r\n", 4.0)})
    session, wire = opened(server)
    with pytest.raises(SMTPTimeoutError):
        wire.run(session.noop())
    assert 296 <= wire.now <= 300


def test_the_driver_fails_a_handshake_on_demand() -> None:
    from smtpbee import TLSVerificationError

    server = ScriptedServer(tls="starttls")
    wire = server.driver(tls_error=TLSVerificationError("refused"))
    session = ClientSession(local_hostname=CLIENT, tls=TLSMode.STARTTLS)
    with pytest.raises(TLSVerificationError):
        wire.run(session.open())
    assert wire.session.tls_error is not None
    # A server that does not start TLS after its 220: the handshake finds plaintext.
    plaintext: list[Response] = ["220 go", pause(1), b"250 plaintext\r\n"]
    wire = ScriptedServer({"STARTTLS": plaintext}, tls="starttls").driver()
    with pytest.raises(SMTPError, match="TLS handshake failed"):
        wire.run(ClientSession(local_hostname=CLIENT, tls=TLSMode.STARTTLS).open())


def test_the_driver_records_every_request() -> None:
    _, wire = opened(ScriptedServer())
    assert {type(r).__name__ for r in wire.requests} >= {"Read", "Write"}
    assert wire.written == b"EHLO client.test\r\n"
    assert wire.commands[0].verb == "EHLO" and wire.messages == []


# ----------------------------------------------------------------------------
# Records


def test_transcript_helpers() -> None:
    transcript = Transcript(
        [
            Entry("S", b"220 hi\r\n", False),
            Entry("C", b"MAIL\r\n", False),
            Entry("C", b"RCPT\r\n", False),
            Entry("S", b"250\r\n250\r\n", False),
            Entry("C", b"QUIT\r\n", True),
        ]
    )
    assert transcript.client() == b"MAIL\r\nRCPT\r\nQUIT\r\n"
    assert transcript.server() == b"220 hi\r\n250\r\n250\r\n"
    assert transcript.rounds() == [[b"MAIL\r\n", b"RCPT\r\n"], [b"QUIT\r\n"]]
    command = Command("MAIL", "FROM:<> SIZE=10 SMTPUTF8")
    assert command.address == "" and command.parameters == {"SIZE": "10", "SMTPUTF8": None}
    assert Command("NOOP").address is None and Command("NOOP").parameters == {}


# ----------------------------------------------------------------------------
# The strategies


@FAST
@given(data=strategies.valid_replies())
def test_valid_replies_are_read_as_one_reply(data: bytes) -> None:
    reader = ReplyReader()
    reader.feed(data)
    read = reader.next_reply()
    assert isinstance(read, Reply) and read.code == int(data[:3])
    assert reader.next_reply() is None and reader.buffered == 0
    assert len(read.lines) == data.count(b"\n")


@FAST
@given(data=strategies.valid_replies(codes=[250, 251], enhanced=True, bare_lf=False))
def test_valid_replies_take_their_codes_and_enhanced_status(data: bytes) -> None:
    reader = ReplyReader()
    reader.feed(data)
    read = reader.next_reply()
    assert read is not None and read.code in (250, 251)
    assert read.enhanced is not None and read.enhanced.klass == 2
    assert b"\r\n" in data and data.count(b"\n") == data.count(b"\r\n")


@settings(max_examples=examples(500), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=strategies.invalid_replies(), cut=st.integers(0, 100))
def test_invalid_replies_are_refused(data: bytes, cut: int) -> None:
    reader = ReplyReader()
    with pytest.raises(RemoteProtocolError):
        # Whole or in two pieces: refused either way.
        for piece in (data[:cut], data[cut:]):
            reader.feed(piece)
            while reader.next_reply() is not None:
                pass


@pytest.mark.parametrize("code", ["+25", "2_5", " 25", "25 ", "\u0662\u0665\u0660"])
def test_what_int_would_take_is_no_reply_code(code: str) -> None:
    assert int(code) in (25, 250)  # int() takes it...
    reader = ReplyReader()
    reader.feed(code.encode() + b" ok\r\n")
    with pytest.raises(RemoteProtocolError):  # ...a reply code it is not
        reader.next_reply()


@FAST
@given(lines=strategies.ehlo_extensions())
def test_ehlo_extension_lists_are_read_whatever_they_hold(lines: list[str]) -> None:
    session = ScriptedServer(extensions=lines, hostname="mx.test").session()
    session.start()
    ehlo = session.feed(b"EHLO c\r\n")
    reader = ReplyReader()
    reader.feed(ehlo)
    read = reader.next_reply()
    assert read is not None and read.code == 250 and len(read.lines) == len(lines) + 1
    extensions = Extensions.from_reply(read)
    assert extensions.domain == "mx.test"
    if any(line.upper().startswith("PIPELINING") for line in lines):
        assert extensions.pipelining


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(server=strategies.scripted_servers())
def test_any_drawn_server_makes_a_session_raise_only_smtpbee_errors(
    server: ScriptedServer,
) -> None:
    wire = server.driver()
    session = ClientSession(local_hostname=CLIENT, tls=TLSMode.OPPORTUNISTIC, lmtp=server.lmtp)
    try:
        wire.run(session.open())
        if session.conn.extensions.auth_mechanisms & {"PLAIN", "LOGIN"}:
            wire.run(session.login("user", "secret", allow_insecure=True))
        body = BodyInfo.of_bytes(BODY)
        wire.run(session.sendmail("a@x.test", ["b@x.test"], body=body), [BODY])
        wire.run(session.quit())
    except SMTPError:
        pass
    # Whatever happened, the server's records are consistent with its transcript.
    assert all(m.content == BODY for m in wire.messages)
    assert wire.written.startswith(wire.transcript.client())


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=strategies.handler_tables(slow=False), data=st.binary(max_size=200))
def test_drawn_tables_take_any_bytes(table: dict[str, Handler], data: bytes) -> None:
    session = ScriptedServer(table).session()
    session.start()
    session.receive(data)
    session.receive(b"")
    assert session.ended and session.transcript.client() == data


def test_nothing_imports_the_testing_package_and_it_needs_no_hypothesis() -> None:
    code = (
        "import sys, smtpbee, smtpbee.transports.sync, smtpbee.transports.asyncio\n"
        "import smtpbee.transports.trio, smtpbee.cli\n"
        "assert 'smtpbee.testing' not in sys.modules, 'imported by the library'\n"
        "import smtpbee.testing\n"
        "assert 'hypothesis' not in sys.modules, 'hypothesis imported'\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr


def test_bdat_chunks_past_the_size_limit_are_refused() -> None:
    session = ScriptedServer(max_size=10).session()
    session.start()
    session.feed(b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n")
    assert session.feed(b"BDAT 6\r\n123456").startswith(b"250 ")
    assert session.feed(b"BDAT 6 LAST\r\n123456").startswith(b"552 5.3.4")
    assert session.messages == [] and session.mail is None
    session.feed(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n")
    assert session.feed(b"12345678901\r\n.\r\n").startswith(b"552 5.3.4")
