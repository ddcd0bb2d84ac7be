"""smtpbee.SessionLog: a session as JSON lines, recorded by the Exchange.

* Every field of every record: time, direction, TLS, unsafe, text, exact bytes, the
  parsed reply, the state, the event.
* Secrets never reach the log, in any encoding: the AUTH PLAIN, LOGIN and XOAUTH2
  payloads are redacted (no bytes kept), and the challenges of a mechanism whose
  challenges could help guess the password are hidden too.
* The exact bytes of every reply are kept, however the server chunked them, bare LF
  line ends included; the JSON lines round-trip.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Callable, Generator, Iterator
from datetime import datetime
from typing import Any

import pytest
from budget import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smtpbee import (
    Auth,
    AuthenticationRejected,
    BodyInfo,
    ClientSession,
    Connection,
    ConnectionLostError,
    Ehlo,
    InvalidInputError,
    Noop,
    Phase,
    Poll,
    Read,
    RemoteProtocolError,
    Reply,
    Rset,
    SessionLog,
    SMTPError,
    SMTPTimeoutError,
    Timeouts,
    TLSMode,
    TransientReplyError,
    Write,
    XOAuth2,
)
from smtpbee._exchange import Exchange
from smtpbee.testing import Command, Response, ScriptedServer, close, inject, reply
from smtpbee.testing.strategies import valid_replies

FORMAT_KEYS = ["t", "dir", "tls", "unsafe", "data", "bytes_b64", "reply", "state"]


def ticking(step: float = 0.25) -> Callable[[], float]:
    """A clock that moves by ``step`` each time it is read (from 100.0)."""
    now = [100.0 - step]

    def clock() -> float:
        now[0] += step
        return now[0]

    return clock


def new_log(server: str = "mx.test:25") -> SessionLog:
    return SessionLog(server, clock=ticking(), started="2030-01-02T03:04:05.000+00:00")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------------------
# The recorder alone


def test_the_header_and_the_time_since_the_start() -> None:
    log = new_log()
    assert log.header == {
        "smtpbee_log": 1,
        "server": "mx.test:25",
        "started": "2030-01-02T03:04:05.000+00:00",
    }
    log.sent(b"NOOP\r\n", tls=False, state="READY")
    log.sent(b"NOOP\r\n", tls=False, state="READY")
    assert [r["t"] for r in log.records] == [0.25, 0.5]
    assert len(log) == 2
    assert list(log) == log.records
    assert repr(log) == "<SessionLog mx.test:25: 2 records>"


def test_the_default_start_is_now_in_utc() -> None:
    log = SessionLog()
    started = datetime.fromisoformat(log.header["started"])
    assert started.utcoffset() is not None
    assert started.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert repr(log) == "<SessionLog ?: 0 records>"


def test_a_write_record_has_every_field_in_order() -> None:
    log = new_log()
    record = log.sent(b"EHLO client.test\r\n", "EHLO client.test", tls=True, state="CONNECTED")
    assert list(record) == FORMAT_KEYS
    assert record == {
        "t": 0.25,
        "dir": "C",
        "tls": True,
        "unsafe": False,
        "data": "EHLO client.test",
        "bytes_b64": b64(b"EHLO client.test\r\n"),
        "reply": None,
        "state": "CONNECTED",
    }


def test_an_unsafe_write_is_marked_and_its_text_escaped() -> None:
    log = new_log()
    raw = b"MAIL FROM:<a@b>\x1b[31m\nRCPT\r\n"
    record = log.sent(raw, tls=False, state="READY", unsafe=True)
    assert record["unsafe"] is True
    assert record["data"] == "MAIL FROM:<a@b>\\x1b[31m\\nRCPT"
    assert SessionLog.bytes_of(record) == raw


def test_a_redacted_write_keeps_no_bytes() -> None:
    log = new_log()
    record = log.sent(None, "AUTH PLAIN <redacted>", tls=True, state="READY")
    assert "bytes_b64" not in record
    assert record["data"] == "AUTH PLAIN <redacted>"
    assert SessionLog.bytes_of(record) is None


def test_a_reply_record_has_its_bytes_and_its_parsed_form() -> None:
    log = new_log()
    raw = b"250-mx.test greets you\r\n250-PIPE\x1bLINING\n250 2.0.0 ok\r\n"
    parsed = Reply(code=250, lines=(b"mx.test greets you", b"PIPE\x1bLINING", b"2.0.0 ok"))
    record = log.received(raw, parsed, tls=False, state="READY")
    assert list(record) == FORMAT_KEYS
    assert record["dir"] == "S"
    assert record["data"] == "250-mx.test greets you\n250-PIPE\\x1bLINING\n250 2.0.0 ok"
    assert record["reply"] == {
        "code": 250,
        "enhanced": None,
        "lines": ["mx.test greets you", "PIPE\\x1bLINING", "2.0.0 ok"],
    }
    assert SessionLog.bytes_of(record) == raw


def test_a_reply_with_an_enhanced_status_and_a_bare_code() -> None:
    log = new_log()
    from smtpbee._receivebuffer import ReplyReader

    reader = ReplyReader()
    reader.feed(b"550 5.1.1 no such user\r\n250\r\n")
    refused, bare = reader.next_reply(), reader.next_reply()
    assert refused is not None and bare is not None
    first = log.received(b"550 5.1.1 no such user\r\n", refused, tls=False, state="RCPT")
    second = log.received(b"250\r\n", bare, tls=False, state="READY")
    assert first["reply"]["enhanced"] == "5.1.1"
    assert SessionLog.reply_of(first) == refused
    assert second["data"] == "250"
    assert SessionLog.reply_of(second) == bare


def test_a_redacted_challenge_keeps_neither_text_nor_bytes() -> None:
    log = new_log()
    challenge = Reply(code=334, lines=(b"cj1zZWNyZXQtc2FsdA==",))
    record = log.received(
        b"334 cj1zZWNyZXQtc2FsdA==\r\n", challenge, tls=True, state="AUTH", redacted=True
    )
    assert "bytes_b64" not in record
    assert record["data"] == "334 <challenge>"
    assert record["reply"] == {"code": 334, "enhanced": None, "lines": ["<challenge>"]}


def test_an_event_record_and_its_details() -> None:
    log = new_log()
    record = log.event(
        "close",
        tls=True,
        state="CLOSED",
        data="bye",
        raw=b"250-cut",
        details={"by": "server", "dir": "C", "t": -1},
    )
    assert record["dir"] == "event"
    assert record["event"] == "close"
    assert record["by"] == "server"
    assert record["t"] == 0.25  # details never replace the format's own keys
    assert record["data"] == "bye"
    assert SessionLog.bytes_of(record) == b"250-cut"
    assert log.event("connect", tls=False, state="GREETING")["data"] == ""


def test_the_json_lines_round_trip() -> None:
    log = new_log()
    log.header["client"] = "tests"
    log.event("connect", tls=False, state="GREETING")
    log.received(
        b"220 \xc3\xa9t\xc3\xa9\r\n",
        Reply(code=220, lines=("été".encode(),)),
        tls=False,
        state="CONNECTED",
    )
    log.sent(b"QUIT\r\n", tls=False, state="CONNECTED")
    text = log.to_jsonl()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == 4
    assert json.loads(lines[0]) == log.header
    assert [json.loads(line) for line in lines[1:]] == log.records
    again = SessionLog.from_jsonl(text + "\n  \n")
    assert again.header == log.header
    assert again.records == log.records
    assert again.to_jsonl() == text


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "not an smtpbee session log"),
        ('{"smtpbee_log": 2}\n', "not an smtpbee session log"),
        ('{"dir": "C"}\n', "not an smtpbee session log"),
        ("{nope\n", "line 1: not JSON"),
        ('{"smtpbee_log": 1}\n[1, 2]\n', "line 2: not a JSON object"),
        ('{"smtpbee_log": 1}\n{"dir": "X"}\n', "record 0: not a session log record"),
    ],
)
def test_what_is_not_a_session_log(text: str, complaint: str) -> None:
    with pytest.raises(InvalidInputError, match=complaint):
        SessionLog.from_jsonl(text)


def test_records_without_a_header() -> None:
    log = SessionLog.from_records([{"dir": "C", "data": "NOOP"}])
    assert log.header["smtpbee_log"] == 1
    assert log.records == [{"dir": "C", "data": "NOOP"}]
    with pytest.raises(InvalidInputError, match="record 0"):
        SessionLog.from_records(["not a mapping"])  # type: ignore[list-item]


def test_bytes_and_replies_of_malformed_records() -> None:
    assert SessionLog.bytes_of({"dir": "event"}) is None
    assert SessionLog.reply_of({"dir": "C", "reply": None}) is None
    with pytest.raises(InvalidInputError, match="not base64"):
        SessionLog.bytes_of({"bytes_b64": "!!!"})
    for broken in (
        {"code": "x", "lines": []},
        {"lines": ["a"]},
        {"code": 250, "enhanced": "5.x.1", "lines": ["a"]},
        "250 ok",
    ):
        with pytest.raises(InvalidInputError, match="not a reply"):
            SessionLog.reply_of({"reply": broken})


# --------------------------------------------------------------------------------------
# Recorded by the Exchange, for a whole session


def logged_session(
    server: ScriptedServer, tls: TLSMode = TLSMode.NONE, transcript: list[Any] | None = None
) -> tuple[ClientSession, SessionLog, Any]:
    log = new_log()
    record: Callable[[str, str], None] | None = None
    if transcript is not None:
        record = lambda d, line: transcript.append((d, line))  # noqa: E731
    session = ClientSession(
        local_hostname="client.test", tls=tls, session_log=log, transcript=record
    )
    return session, log, server.driver()


def shape(log: SessionLog) -> list[tuple[str, bool, str, str]]:
    return [
        (r["dir"], r["tls"], r["state"], r.get("event") or r["data"].split("\n")[0])
        for r in log.records
    ]


def test_a_starttls_session_is_recorded_event_by_event() -> None:
    server = ScriptedServer(tls="starttls", users={"alice": "pw"})
    session, log, driver = logged_session(server, TLSMode.STARTTLS)
    driver.run(session.open())
    driver.run(session.login("alice", "pw", mechanism="PLAIN"))
    driver.run(
        session.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(size=12)),
        body=[b"Subject: x\r\n", b""],
    )
    driver.run(session.quit())
    assert shape(log) == [
        ("event", False, "GREETING", "connect"),
        ("S", False, "CONNECTED", "220 mx.smtpbee.test ESMTP smtpbee.testing"),
        ("C", False, "CONNECTED", "EHLO client.test"),
        ("S", False, "READY", "250-mx.smtpbee.test greets client.test"),
        ("C", False, "READY", "STARTTLS"),
        ("S", False, "TLS_HANDSHAKE", "220 2.0.0 Ready to start TLS"),
        ("event", True, "TLS_HANDSHAKE", "tls-handshake"),
        ("C", True, "CONNECTED", "EHLO client.test"),
        ("S", True, "READY", "250-mx.smtpbee.test greets client.test"),
        ("C", True, "READY", "AUTH PLAIN <redacted>"),
        ("S", True, "READY", "235 2.7.0 Authentication successful"),
        ("C", True, "READY", "MAIL FROM:<a@x.test> SIZE=12 BODY=8BITMIME"),
        ("S", True, "MAIL", "250 2.1.0 Sender <a@x.test> OK"),
        ("S", True, "RCPT", "250 2.1.5 Recipient <b@x.test> OK"),
        ("S", True, "READY", "250 2.0.0 Ok: queued as 0000000001"),
        ("C", True, "READY", "QUIT"),
        ("S", True, "CLOSING", "221 2.0.0 mx.smtpbee.test closing connection"),
    ]
    handshake = log.records[6]
    assert handshake["verified"] is True
    group = log.records[11]
    assert group["data"] == (
        "MAIL FROM:<a@x.test> SIZE=12 BODY=8BITMIME\nRCPT TO:<b@x.test>\nBDAT 12 LAST <12 octets>"
    )
    assert all(r["unsafe"] is False for r in log.records)
    # The exact bytes: the server's writes and the client's, as the server saw them
    # (the one redacted write aside).
    sent = b"".join(SessionLog.bytes_of(r) or b"" for r in log.records if r["dir"] == "C")
    assert sent == driver.transcript.client().replace(b"AUTH PLAIN AGFsaWNlAHB3\r\n", b"")
    answered = b"".join(SessionLog.bytes_of(r) or b"" for r in log.records if r["dir"] == "S")
    assert answered == driver.transcript.server()


def test_implicit_tls_is_recorded_from_the_first_byte() -> None:
    server = ScriptedServer(tls="implicit")
    session, log, driver = logged_session(server, TLSMode.IMPLICIT)
    driver.run(session.open())
    assert shape(log)[:3] == [
        ("event", True, "GREETING", "connect"),
        ("event", True, "GREETING", "tls-handshake"),
        ("S", True, "CONNECTED", "220 mx.smtpbee.test ESMTP smtpbee.testing"),
    ]


PASSWORD = "S3cret-pass/word+X"
TOKEN = "ya29.a0-TOKEN_value-9876543210"


def secret_encodings(secret: bytes) -> Iterator[bytes]:
    yield secret
    for offset in range(3):  # base64 of the secret at every alignment inside a payload
        encoded = base64.b64encode(b"\0" * offset + secret)
        yield encoded[4 : len(encoded) - 4] if len(encoded) > 12 else encoded


def assert_never_in(log: SessionLog, secret: str) -> None:
    text = log.to_jsonl()
    raw = secret.encode()
    for encoded in secret_encodings(raw):
        assert encoded.decode("ascii", "replace") not in text
    # Every base64-looking run of the log, decoded at every alignment.
    for token in re.findall(r"[A-Za-z0-9+/=]{8,}", text):
        for start in range(4):
            chunk = token[start:].rstrip("=")
            chunk = chunk[: len(chunk) - len(chunk) % 4]
            try:
                decoded = base64.b64decode(chunk, validate=True)
            except ValueError:
                continue
            assert raw not in decoded
    for record in log.records:
        assert raw not in (SessionLog.bytes_of(record) or b"")


@pytest.mark.parametrize(
    ("mechanism", "secret"),
    [("PLAIN", PASSWORD), ("LOGIN", PASSWORD), ("XOAUTH2", TOKEN), ("CRAM-MD5", PASSWORD)],
)
def test_auth_secrets_never_reach_the_log(mechanism: str, secret: str) -> None:
    server = ScriptedServer(
        users={"alice@x.test": secret}, auth_mechanisms=(mechanism,), tls="implicit"
    )
    transcript: list[Any] = []
    session, log, driver = logged_session(server, TLSMode.IMPLICIT, transcript)
    driver.run(session.open())
    if mechanism == "XOAUTH2":
        driver.run(session.authenticate(XOAuth2("alice@x.test", secret)))
    else:
        driver.run(session.login("alice@x.test", secret, mechanism=mechanism))
    assert session.conn.authenticated  # so the secret went over the wire
    assert_never_in(log, secret)
    secret_writes = [r for r in log.records if r["dir"] == "C" and "redacted" in r["data"]]
    assert secret_writes
    assert all("bytes_b64" not in r for r in secret_writes)


def test_a_failed_xoauth2_keeps_its_error_challenge_and_hides_the_token() -> None:
    error = base64.b64encode(b'{"status":"401","schemes":"Bearer"}')

    def xoauth2(command: Command, _: object) -> Response:
        return "535 5.7.8 bad token" if command.continuation else reply(334, error)

    server = ScriptedServer(
        {"AUTH": xoauth2},
        users={"alice@x.test": TOKEN},
        auth_mechanisms=("XOAUTH2",),
        tls="implicit",
    )
    session, log, driver = logged_session(server, TLSMode.IMPLICIT)
    driver.run(session.open())
    with pytest.raises(AuthenticationRejected, match="535"):
        driver.run(session.authenticate(XOAuth2("alice@x.test", TOKEN + "-wrong")))
    challenge = next(r for r in log.records if r["dir"] == "S" and r["reply"]["code"] == 334)
    assert "bytes_b64" in challenge  # an XOAUTH2 error says nothing of the token
    assert_never_in(log, TOKEN)


def exchange_on(
    server: ScriptedServer, transcript: list[Any] | None = None
) -> tuple[Exchange, SessionLog, Any]:
    log = new_log()
    record = (lambda d, line: transcript.append((d, line))) if transcript is not None else None
    exchange = Exchange(Connection(), Timeouts(), record, log)
    return exchange, log, server.driver()


def test_the_challenges_of_other_mechanisms_are_hidden() -> None:
    # A SCRAM server-first message carries the salt, its server-final the signature:
    # with them a captured log would allow an offline guess of the password.
    salt = b"r=nonce,s=c2FsdHNhbHQ=,i=4096"
    server = ScriptedServer(
        {"AUTH": [reply(334, base64.b64encode(salt))], "EHLO": "250-mx\n250 AUTH X-SCRAMLIKE"}
    )
    exchange, log, driver = exchange_on(server)
    driver.run(exchange.event())
    driver.run(exchange.command(Ehlo("client.test")))
    event = driver.run(exchange.command(Auth("X-SCRAMLIKE")))
    assert event.reply.code == 334
    record = log.records[-1]
    assert record["data"] == "334 <challenge>"
    assert "bytes_b64" not in record
    assert "c2FsdHNhbHQ" not in log.to_jsonl()


def test_an_unsafe_write_through_the_exchange() -> None:
    transcript: list[Any] = []
    exchange, log, driver = exchange_on(ScriptedServer(), transcript)
    driver.run(exchange.event())
    driver.run(exchange.write(b"NOOP \x00\r\n", Phase.COMMAND, unsafe=True))
    exchange.log("C!", "NOOP \\x00")
    assert transcript[-1] == ("C!", "NOOP \\x00")
    record = log.records[-1]
    assert record["unsafe"] is True
    assert record["data"] == "NOOP \\x00"
    assert SessionLog.bytes_of(record) == b"NOOP \x00\r\n"
    assert driver.written == b"NOOP \x00\r\n"
    driver.run(exchange.write(b"RSET\r\n", Phase.COMMAND))
    assert log.records[-1]["unsafe"] is False


def test_a_broken_reply_ends_in_an_error_record_with_its_bytes() -> None:
    exchange, log, driver = exchange_on(ScriptedServer({"EHLO": b"hello there\r\n"}))
    driver.run(exchange.event())
    with pytest.raises(RemoteProtocolError):
        driver.run(exchange.command(Ehlo("client.test")))
    error = log.records[-1]
    assert error["dir"] == "event"
    assert error["event"] == "error"
    assert error["error"] == "RemoteProtocolError"
    assert error["state"] == "ERROR"
    assert SessionLog.bytes_of(error) == b"hello there\r\n"


def test_a_close_by_the_server_keeps_the_cut_reply() -> None:
    exchange, log, driver = exchange_on(ScriptedServer({"EHLO": [inject(b"250-half"), close()]}))
    driver.run(exchange.event())
    with pytest.raises(ConnectionLostError):
        driver.run(exchange.command(Ehlo("client.test")))
    closed, failed = log.records[-2:]
    assert (closed["event"], closed["by"], closed["state"]) == ("close", "server", "CLOSED")
    assert SessionLog.bytes_of(closed) == b"250-half"
    assert (failed["event"], failed["error"]) == ("error", "ConnectionLostError")
    assert "bytes_b64" not in failed


def test_a_reply_fed_around_the_exchange_is_logged_in_its_wire_form() -> None:
    exchange, log, driver = exchange_on(ScriptedServer())
    exchange.conn.receive_data(b"220 fed\n")
    driver.run(exchange.event())
    assert SessionLog.bytes_of(log.records[-1]) == b"220 fed\r\n"


def test_without_a_log_notes_are_nothing_and_the_handshake_a_transcript_line() -> None:
    transcript: list[Any] = []
    exchange = Exchange(Connection(), Timeouts(), lambda d, line: transcript.append((d, line)))
    assert exchange.session_log is None
    exchange.note("connect")
    exchange.handshake_done(True)
    assert transcript == [("C", "<TLS handshake done>")]


def test_notes_are_recorded_with_their_details() -> None:
    exchange, log, _ = exchange_on(ScriptedServer())
    assert exchange.session_log is log
    exchange.note("stopped", data="after RCPT", point="RCPT", action="quit")
    assert log.records[-1] == {
        "t": 0.25,
        "dir": "event",
        "tls": False,
        "unsafe": False,
        "data": "after RCPT",
        "reply": None,
        "state": "GREETING",
        "event": "stopped",
        "point": "RCPT",
        "action": "quit",
    }


# --------------------------------------------------------------------------------------
# Any reply bytes, any chunking


def serve(
    procedure: Generator[Any, Any, Any], chunks: Iterator[bytes], polled: bytes | None = None
) -> Any:
    """Run a procedure: writes vanish, reads take the next chunk, polls find ``polled``."""
    result: Any = None
    while True:
        try:
            request = procedure.send(result)
        except StopIteration as stop:
            return stop.value
        if isinstance(request, Read):
            result = next(chunks, b"")
        elif isinstance(request, Poll):
            result = polled
        elif isinstance(request, Write):
            result = None
        else:  # pragma: no cover - nothing else is asked here
            raise AssertionError(request)


def test_a_reply_nobody_asked_for_is_logged_before_the_session_ends() -> None:
    log = new_log()
    exchange = Exchange(Connection(), Timeouts(), None, log)
    serve(exchange.event(), iter([b"220 mx\r\n"]))
    with pytest.raises(TransientReplyError, match="421"):
        serve(exchange.command(Ehlo("c.test")), iter([]), polled=b"421 4.3.2 going down\r\n")
    assert SessionLog.bytes_of(log.records[-1]) == b"421 4.3.2 going down\r\n"
    assert log.records[-1]["state"] == "CLOSING"


def test_a_raw_write_that_fails_ends_the_session_and_is_logged() -> None:
    log = new_log()
    exchange = Exchange(Connection(), Timeouts(), None, log)
    write = exchange.write(b"RAW\r\n", Phase.COMMAND, unsafe=True)
    request = next(write)
    assert isinstance(request, Write) and request.data == b"RAW\r\n"
    with pytest.raises(SMTPTimeoutError, match="stalled"):
        write.throw(SMTPTimeoutError("the write stalled"))
    assert exchange.conn.state.name == "ERROR"
    assert log.records[-1]["event"] == "error"
    assert log.records[-1]["error"] == "SMTPTimeoutError"


def transcript_into(lines: list[tuple[str, str]]) -> Callable[[str, str], None]:
    return lambda direction, line: lines.append((direction, line))


def test_a_log_changes_nothing_the_client_sees() -> None:
    # A reply that cannot be parsed, and a reply nobody asked for: the same errors,
    # the same transcript and the same state, with a log or without one.
    scenarios: list[tuple[list[bytes], bytes | None]] = [
        ([b"hello there\r\n"], None),
        ([], b"421 4.3.2 going down\r\n"),
    ]

    def failures(log: Callable[[], SessionLog | None]) -> list[tuple[Any, ...]]:
        seen: list[tuple[Any, ...]] = []
        for replies, polled in scenarios:
            transcript: list[tuple[str, str]] = []
            exchange = Exchange(Connection(), Timeouts(), transcript_into(transcript), log())
            serve(exchange.event(), iter([b"220 mx\r\n"]))
            with pytest.raises(SMTPError) as failure:
                serve(exchange.command(Ehlo("c.test")), iter(replies), polled=polled)
            error = failure.value
            seen.append((type(error), str(error), transcript, exchange.conn.state))
        return seen

    logs: list[SessionLog] = []

    def logged() -> SessionLog:
        logs.append(new_log())
        return logs[-1]

    without = failures(lambda: None)
    assert [kind for kind, *_ in without] == [RemoteProtocolError, TransientReplyError]
    assert failures(logged) == without
    assert [(log.records[-1]["dir"], log.records[-1].get("event")) for log in logs] == [
        ("event", "error"),
        ("S", None),
    ]
    assert SessionLog.bytes_of(logs[0].records[-1]) == b"hello there\r\n"
    assert SessionLog.bytes_of(logs[1].records[-1]) == b"421 4.3.2 going down\r\n"


def failing(
    procedure: Generator[Any, Any, Any], at: type, error: SMTPError, chunks: list[bytes]
) -> SMTPError:
    """Run a procedure: reads take the chunks; once they are gone, ``error`` is thrown
    in at the first ``at`` request. Returns what the procedure raised."""
    pending = list(chunks)
    request = procedure.send(None)
    while True:
        try:
            if isinstance(request, at) and not pending:
                request = procedure.throw(error)
            else:
                request = procedure.send(pending.pop(0) if isinstance(request, Read) else None)
        except SMTPError as exc:
            return exc


@pytest.mark.parametrize(
    ("at", "error", "chunks", "cut"),
    [
        (Write, SMTPTimeoutError("writing EHLO timed out"), [], None),
        (Poll, ConnectionLostError("reset while polling"), [], None),
        (Read, ConnectionLostError("reset while reading"), [b"250-mx.test"], b"250-mx.test"),
    ],
    ids=["write", "poll", "read"],
)
def test_a_failing_transport_ends_the_log_with_an_error_record(
    at: type, error: SMTPError, chunks: list[bytes], cut: bytes | None
) -> None:
    log = new_log()
    exchange = Exchange(Connection(), Timeouts(), None, log)
    serve(exchange.event(), iter([b"220 mx\r\n"]))
    raised = failing(exchange.command(Ehlo("c.test")), at, error, chunks)
    assert raised is error
    last = log.records[-1]
    assert (last["dir"], last["event"], last["state"]) == ("event", "error", "ERROR")
    assert (last["error"], last["data"]) == (type(error).__name__, str(error))
    # Bytes of a reply cut short go with the error; a write is logged before it fails.
    assert SessionLog.bytes_of(last) == cut
    written = [] if at is Poll else ["C"]
    assert [r["dir"] for r in log.records] == ["S", *written, "event"]


def test_replies_that_share_a_segment_keep_their_own_bytes() -> None:
    log = new_log()
    exchange = Exchange(Connection(), Timeouts(), None, log)
    serve(exchange.event(), iter([b"220 mx\r\n"]))
    serve(exchange.command(Ehlo("c.test")), iter([b"250-mx\r\n250 PIPELINING\r\n"]))
    serve(exchange.send([Rset()]), iter([]))
    serve(exchange.send([Noop()]), iter([]))  # a second group, the first unanswered
    segment = iter([b"250 2.0.0 reset\r\n250 2.0.0 ok\n421 4.3.2 bye\r\n"])
    serve(exchange.reply(), segment)
    serve(exchange.reply(), segment)
    # The 421 came with the replies before it: judged before the next group is written.
    with pytest.raises(TransientReplyError, match="421"):
        serve(exchange.send([Rset()]), iter([]))
    assert [r["data"] for r in log.records if r["dir"] == "C"][1:] == ["RSET", "NOOP"]
    replies = [SessionLog.bytes_of(r) for r in log.records if r["dir"] == "S"][2:]
    assert replies == [b"250 2.0.0 reset\r\n", b"250 2.0.0 ok\n", b"421 4.3.2 bye\r\n"]


def test_a_write_without_a_log_is_just_a_write() -> None:
    exchange = Exchange(Connection(), Timeouts())
    serve(exchange.write(b"NOOP\r\n", Phase.COMMAND, unsafe=True), iter([]))
    assert exchange.session_log is None


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    replies=st.lists(valid_replies(250), min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=8),
)
def test_the_exact_bytes_of_any_reply_survive_the_log(
    replies: list[bytes], cuts: list[int]
) -> None:
    log = new_log()
    exchange = Exchange(Connection(), Timeouts(), None, log)
    serve(exchange.event(), iter([b"220 mx\r\n"]))
    serve(exchange.command(Ehlo("c.test")), iter([b"250-mx\r\n250 PIPELINING\r\n"]))
    stream = b"".join(replies)
    points = sorted({min(cut, len(stream)) for cut in cuts} | {0, len(stream)})
    chunks = iter([stream[a:b] for a, b in itertools.pairwise(points) if b > a])
    serve(exchange.send([Rset()] * len(replies)), chunks)
    events = [serve(exchange.reply(), chunks) for _ in replies]
    again = SessionLog.from_jsonl(log.to_jsonl())
    logged = [r for r in again.records if r["dir"] == "S"][2:]
    assert [SessionLog.bytes_of(r) for r in logged] == replies
    assert [e.reply.code for e in events] == [250] * len(replies)
    for record, event in zip(logged, events, strict=True):
        rebuilt = SessionLog.reply_of(record)
        assert rebuilt is not None
        assert (rebuilt.code, rebuilt.enhanced) == (250, event.reply.enhanced)
