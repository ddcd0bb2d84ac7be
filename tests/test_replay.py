"""smtpbee.testing.replay and `smtpbee replay`: a captured session becomes a test server.

* The regression loop: a session captured with smtpbee.SessionLog (against a scripted
  server, and against the real Postfix of .ci/run) is replayed to smtpbee's blocking
  client: no divergence, the same outcome, the server's bytes the same. Then the
  client's behaviour changes, and the replay says where.
* Divergences: a 503 naming the expected command, one record per command; the same
  command with other arguments or content takes the logged one's place (the rest of
  the session still replays), another command is one too many (the position kept: an
  extra command costs one divergence); QUIT out of turn still ends the session;
  contents compared unless asked not to; EHLO's name when asked not to.
* What the log implies: STARTTLS and implicit TLS with a throwaway certificate,
  pipelined groups in one write, LMTP's replies per recipient, a PROXY header before
  the greeting, the server closing; what the scripted server answers itself (a bare
  LF) is named as never replayed.
* The CLI: served on a port until interrupted, divergences printed as they happen;
  --check plays the log's own client side.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import LoopbackCA, PostfixServer
from smtpbee import (
    InvalidInputError,
    PermanentReplyError,
    ReplyError,
    SessionLog,
    SMTPError,
)
from smtpbee.cli import main as cli_main
from smtpbee.testing import (
    Divergence,
    ReplayServer,
    ScriptedServer,
    close,
    replay,
    reply,
)
from smtpbee.testing._replay import load_log
from smtpbee.transports.sync import SMTPClient

BODY = b"From: a@x.test\r\nTo: b@x.test\r\nSubject: replay\r\n\r\nHello.\r\n.dot line\r\n"
USERS = {"alice@x.test": "Wonder-land-42"}


def capture(host: str, port: int, **options: Any) -> tuple[SessionLog, Any]:
    """One session with the blocking client, logged; (the log, what sendmail returned)."""
    log = SessionLog(f"{host}:{port}")
    recipients = options.pop("recipients", ["b@x.test"])
    login = options.pop("login", None)
    body = options.pop("body", BODY)
    options.setdefault("local_hostname", "client.test")
    options.setdefault("timeout", 10)
    with SMTPClient(host, port, session_log=log, **options) as client:
        if login is not None:
            client.login(*login, mechanism="PLAIN")
        outcome: Any
        try:
            outcome = client.sendmail("a@x.test", recipients, body)
        except SMTPError as exc:  # a refusal, a close: an outcome to compare
            outcome = exc
    return log, outcome


def run_against(server: ReplayServer, **options: Any) -> tuple[Any, Any]:
    """The blocking client against a replay; (the outcome, the running server)."""
    with server.serve_in_thread() as running:
        _, outcome = capture(running.host, running.port, **options)
        running.wait(1)
    return outcome, running


def outcome_of(result: Any) -> Any:
    if isinstance(result, ReplyError):
        return ("error", result.reply.code, {k: v.code for k, v in result.recipients.items()})
    if isinstance(result, SMTPError):
        return (type(result).__name__, str(result))
    return (
        {k: (v.code, v.lines) for k, v in result.recipients.items()},
        {k: v.code for k, v in result.refused.items()},
        (result.data.code, result.data.lines),
    )


def server_bytes(log: SessionLog) -> bytes:
    return b"".join(SessionLog.bytes_of(r) or b"" for r in log.records if r["dir"] == "S")


# --------------------------------------------------------------------------------------
# The regression loop against a scripted server


@pytest.fixture
def starttls_capture(trust_ca: LoopbackCA) -> Iterator[tuple[SessionLog, Any]]:
    server = ScriptedServer(
        {"RCPT": lambda c, s: "550 5.1.1 no" if "nobody" in c.argument else s.default(c)},
        tls="starttls",
        tls_context=trust_ca.server_context(),
        users=USERS,
    )
    with server.serve_in_thread() as running:
        yield capture(
            running.host,
            running.port,
            ssl_context=trust_ca.client_context(),
            login=("alice@x.test", USERS["alice@x.test"]),
            recipients=["b@x.test", "nobody@x.test", "c@x.test"],
        )


def test_a_captured_session_replays_without_divergence(
    starttls_capture: tuple[SessionLog, Any], tmp_path: Path
) -> None:
    log, captured = starttls_capture
    path = tmp_path / "session.jsonl"
    path.write_text(log.to_jsonl(), encoding="utf-8")
    server = replay(path)
    assert server.tls == "starttls"
    assert server.ca_pem is not None
    outcome, running = run_against(
        server,
        ssl_context=server.client_context(),
        login=("alice@x.test", "any password: the log has none"),
        recipients=["b@x.test", "nobody@x.test", "c@x.test"],
    )
    assert server.divergences == []
    assert server.missing(running.sessions[0]) == []
    assert outcome_of(outcome) == outcome_of(captured)
    assert outcome_of(captured)[1] == {"nobody@x.test": 550}
    # Byte for byte what the scripted server said, in the same rounds.
    assert running.transcript.server() == server_bytes(log)
    assert running.sessions[0].tls
    assert running.messages[0].content.endswith(b"\r\n.dot line\r\n")


def test_a_changed_client_is_told_where_it_diverged(
    starttls_capture: tuple[SessionLog, Any],
) -> None:
    log, _ = starttls_capture
    server = replay(log)
    outcome, running = run_against(
        server,
        ssl_context=server.client_context(),
        login=("alice@x.test", "pw"),
        recipients=["b@x.test", "someone-else@x.test", "c@x.test"],
    )
    assert server.divergences[0] == Divergence(
        index=6,
        expected="RCPT TO:<nobody@x.test>",
        received="RCPT TO:<someone-else@x.test>",
        tls=True,
    )
    assert str(server.divergences[0]) == (
        "command 7: expected RCPT TO:<nobody@x.test>, received RCPT TO:<someone-else@x.test>"
    )
    assert b"503 5.5.1 replay: expected RCPT TO:<nobody@x.test>\r\n" in running.transcript.server()
    # The changed recipient took the logged one's place: the rest of the session replays.
    assert len(server.divergences) == 1
    assert server.missing(running.sessions[0]) == []
    answered, refused, data = outcome_of(outcome)
    assert refused == {"someone-else@x.test": 503}
    assert {address: code for address, (code, _) in answered.items()} == {
        "b@x.test": 250,
        "someone-else@x.test": 503,
        "c@x.test": 250,
    }
    assert data[0] == 250


# --------------------------------------------------------------------------------------
# The regression loop against the real Postfix


def test_a_postfix_session_becomes_a_regression_test(postfix: PostfixServer) -> None:
    good = postfix.new_address("replay")
    options: dict[str, Any] = {
        "ssl_context": postfix.client_context,
        "login": (postfix.username, postfix.password),
        "recipients": [good, postfix.reject_address],
        "body": BODY.replace(b"b@x.test", good.encode()),
    }
    log, captured = capture(postfix.host, postfix.port, **options)
    assert outcome_of(captured)[1] == {postfix.reject_address: 550}
    text = log.to_jsonl()
    assert postfix.password not in text
    server = replay(SessionLog.from_jsonl(text))
    options["login"] = (postfix.username, "not the password")
    options["ssl_context"] = server.client_context()
    outcome, running = run_against(server, **options)
    assert server.divergences == []
    assert outcome_of(outcome) == outcome_of(captured)
    assert running.transcript.server() == server_bytes(log)
    # The client changes: the refused recipient is left out.
    changed = replay(SessionLog.from_jsonl(text))
    options["ssl_context"] = changed.client_context()
    options["recipients"] = [good]
    outcome, running = run_against(changed, **options)
    assert [d.expected for d in changed.divergences][:1] == [f"RCPT TO:<{postfix.reject_address}>"]
    assert changed.divergences[0].received.startswith("BDAT")
    assert isinstance(outcome, ReplyError) or outcome.data.code == 503


# --------------------------------------------------------------------------------------
# Divergences


def plain_capture(handlers: dict[str, Any] | None = None, **options: Any) -> SessionLog:
    server = ScriptedServer(handlers, **options.pop("server", {}))
    with server.serve_in_thread() as running:
        log, _ = capture(running.host, running.port, tls="none", **options)
    return log


def driven(server: ReplayServer, *commands: bytes) -> tuple[bytes, Any]:
    """Feed the replay's engine lines directly: (what it wrote, the session)."""
    session = server.session()
    written = b"".join(o.data for o in session.start() if hasattr(o, "data"))
    for command in commands:
        written += session.feed(command)
    return written, session


def test_an_extra_command_costs_one_divergence() -> None:
    server = replay(plain_capture())
    written, session = driven(
        server, b"EHLO client.test\r\n", b"NOOP\r\n", b"MAIL FROM:<a@x.test> SIZE=68\r\n"
    )
    assert written.endswith(
        b"503 5.5.1 replay: expected MAIL FROM:<a@x.test> SIZE=68\r\n"
        b"250 2.1.0 Sender <a@x.test> OK\r\n"
    )
    assert [d.received for d in server.divergences] == ["NOOP"]
    assert server.missing(session)[0] == "RCPT TO:<b@x.test>"


def test_quit_out_of_turn_still_ends_the_session() -> None:
    server = replay(plain_capture())
    written, session = driven(server, b"EHLO client.test\r\n", b"QUIT\r\n")
    assert written.endswith(b"221 2.0.0 replay: expected MAIL FROM:<a@x.test> SIZE=68\r\n")
    assert session.ended
    assert server.missing(session)[:2] == ["MAIL FROM:<a@x.test> SIZE=68", "RCPT TO:<b@x.test>"]


def test_a_command_past_the_end_of_the_log() -> None:
    records: list[dict[str, Any]] = [
        {"dir": "S", "tls": False, "data": "220 hi", "bytes_b64": "MjIwIGhpDQo="},
        {"dir": "C", "tls": False, "data": "EHLO c", "bytes_b64": "RUhMTyBjDQo="},
        {"dir": "S", "tls": False, "data": "250 hi", "bytes_b64": "MjUwIGhpDQo="},
    ]
    server = replay(records)
    written, session = driven(server, b"EHLO c\r\n", b"NOOP\r\n")
    assert written == b"220 hi\r\n250 hi\r\n503 5.5.1 replay: the log ends here\r\n"
    assert server.divergences == [Divergence(1, None, "NOOP")]
    assert str(server.divergences[0]) == (
        "command 2: expected nothing more (the log ends), received NOOP"
    )
    assert server.missing(session) == []


def test_contents_are_compared_unless_asked_not_to() -> None:
    log = plain_capture()
    server = replay(log)
    outcome, running = run_against(server, tls="none", body=BODY.replace(b"Hello", b"Howdy"))
    # The refused chunk took the logged one's place; the client's RSET after the
    # refusal is one command too many, and its QUIT the log's own.
    assert [(d.expected, d.received) for d in server.divergences] == [
        ("BDAT 68 LAST", "BDAT 68 LAST (different content)"),
        ("QUIT", "RSET"),
    ]
    assert isinstance(outcome, PermanentReplyError)
    assert outcome.reply.code == 503
    assert server.missing(running.sessions[0]) == []
    lenient = replay(log, compare_content=False)
    outcome, _ = run_against(lenient, tls="none", body=BODY.replace(b"Hello", b"Howdy"))
    assert lenient.divergences == []
    assert outcome.data.code == 250


def test_the_hello_name_can_be_left_out_of_the_comparison() -> None:
    log = plain_capture()
    strict = replay(log)
    with pytest.raises(PermanentReplyError, match=r"503 to HELO other\.test"):
        run_against(strict, tls="none", local_hostname="other.test")
    # The client falls back to HELO after the 503, one command too many.
    assert [(d.expected, d.received) for d in strict.divergences] == [
        ("EHLO client.test", "EHLO other.test"),
        ("MAIL FROM:<a@x.test> SIZE=68", "HELO other.test"),
    ]
    lenient = replay(log, ignore_arguments=["ehlo"])
    outcome, _ = run_against(lenient, tls="none", local_hostname="other.test")
    assert lenient.divergences == []
    assert outcome.data.code == 250


def test_data_content_and_the_dot_replay() -> None:
    log = plain_capture(server={"extensions": ["PIPELINING", "8BITMIME"]})
    assert any(r["data"].startswith("<") and "octets of content" in r["data"] for r in log.records)
    server = replay(log)
    outcome, running = run_against(server, tls="none")
    assert server.divergences == []
    assert outcome.data.code == 250
    # MAIL, RCPT and DATA arrived as one group and were answered in one write.
    assert running.transcript.rounds()[1] == [
        b"MAIL FROM:<a@x.test>\r\n",
        b"RCPT TO:<b@x.test>\r\n",
        b"DATA\r\n",
    ]
    writes = [e.data for e in running.transcript if e.direction == "S"]
    assert writes[2].count(b"\r\n") == 3


# --------------------------------------------------------------------------------------
# TLS, LMTP, PROXY, closes


def test_implicit_tls_with_a_throwaway_certificate(trust_ca: LoopbackCA) -> None:
    server = ScriptedServer(tls="implicit", tls_context=trust_ca.server_context())
    with server.serve_in_thread() as running:
        log, captured = capture(
            running.host, running.port, tls="implicit", ssl_context=trust_ca.client_context()
        )
    replayed = replay(log)
    assert replayed.tls == "implicit"
    outcome, running = run_against(replayed, tls="implicit", ssl_context=replayed.client_context())
    assert replayed.divergences == []
    assert outcome_of(outcome) == outcome_of(captured)


def test_a_server_context_of_ones_own(trust_ca: LoopbackCA) -> None:
    server = ScriptedServer(tls="implicit", tls_context=trust_ca.server_context())
    with server.serve_in_thread() as running:
        log, _ = capture(
            running.host, running.port, tls="implicit", ssl_context=trust_ca.client_context()
        )
    replayed = replay(log, tls_context=trust_ca.server_context())
    assert replayed.ca_pem is None
    with pytest.raises(ValueError, match="no certificate of its own"):
        replayed.client_context()
    outcome, _ = run_against(replayed, tls="implicit", ssl_context=trust_ca.client_context())
    assert replayed.divergences == []
    assert outcome.data.code == 250


def test_lmtp_replies_per_recipient() -> None:
    server = ScriptedServer(
        {"MESSAGE": [reply(250, "2.0.0 b ok"), reply(452, "4.2.2 c over quota")]}, lmtp=True
    )
    with server.serve_in_thread() as running:
        log, captured = capture(
            running.host, running.port, tls="none", lmtp=True, recipients=["b@x.test", "c@x.test"]
        )
    replayed = replay(log)
    assert replayed.lmtp
    outcome, _ = run_against(replayed, tls="none", lmtp=True, recipients=["b@x.test", "c@x.test"])
    assert replayed.divergences == []
    assert outcome_of(outcome) == outcome_of(captured)


def test_a_proxy_header_before_the_greeting_gets_no_answer() -> None:
    log = plain_capture()
    proxy = {
        "dir": "C",
        "tls": False,
        "data": "PROXY TCP4 192.0.2.1 192.0.2.2 5 25",
        "bytes_b64": "UFJPWFkgVENQNCAxOTIuMC4yLjEgMTkyLjAuMi4yIDUgMjUNCg==",
    }
    records = [log.header, proxy, *log.records]
    server = replay(records)
    assert server.expected[0] == "PROXY TCP4 192.0.2.1 192.0.2.2 5 25"
    written, _ = driven(server, b"PROXY TCP4 192.0.2.1 192.0.2.2 5 25\r\n", b"EHLO client.test\r\n")
    assert written.startswith(b"220 ")
    assert written.count(b"220 ") == 1 and b"250-" in written
    assert server.divergences == []


@pytest.mark.parametrize(
    "extensions",
    [["8BITMIME"], ["PIPELINING", "CHUNKING", "8BITMIME"]],
    ids=["lock-step", "pipelined"],
)
def test_the_server_closing_is_replayed(extensions: list[str]) -> None:
    server = ScriptedServer({"MAIL": [reply(554, "5.7.1 go away"), close()]}, extensions=extensions)
    with server.serve_in_thread() as running:
        log, captured = capture(running.host, running.port, tls="none")
    assert isinstance(captured, SMTPError)
    assert [r["by"] for r in log.records if r.get("event") == "close"] == ["server"]
    replayed = replay(log)
    outcome, running = run_against(replayed, tls="none")
    assert replayed.divergences == []
    assert running.sessions[0].ended
    # Whatever the client made of the close, it makes the same of the replayed one.
    assert outcome_of(outcome) == outcome_of(captured)
    assert running.transcript.server() == server_bytes(log)


def test_a_421_nobody_asked_for_follows_the_last_answer() -> None:
    records: list[dict[str, Any]] = [
        {"dir": "S", "tls": False, "data": "220 hi", "bytes_b64": "MjIwIGhpDQo="},
        {"dir": "C", "tls": False, "data": "EHLO c", "bytes_b64": "RUhMTyBjDQo="},
        {"dir": "S", "tls": False, "data": "250 hi", "bytes_b64": "MjUwIGhpDQo="},
        {
            "dir": "S",
            "tls": False,
            "data": "421 bye",
            "reply": {"code": 421, "enhanced": None, "lines": ["bye"]},
        },
    ]
    server = replay(records)
    written, session = driven(server, b"EHLO c\r\n")
    assert written == b"220 hi\r\n250 hi\r\n421 bye\r\n"
    assert session.ended


def wire(direction: str, raw: bytes, **extra: Any) -> dict[str, Any]:
    """A record as a log holds it: the exact bytes, and the text a person reads."""
    text = raw.decode("utf-8", "replace").removesuffix("\r\n")
    record = {"dir": direction, "tls": False, "data": text, **extra}
    return record | {"bytes_b64": base64.b64encode(raw).decode("ascii")}


def test_an_auth_cancel_and_a_response_are_told_apart() -> None:
    records = [
        wire("S", b"220 hi\r\n"),
        wire("C", b"AUTH LOGIN\r\n"),
        wire("S", b"334 VXNlcm5hbWU6\r\n"),
        wire("C", b"*\r\n"),
        wire("S", b"501 5.7.0 cancelled\r\n"),
    ]
    server = replay(records)
    assert server.expected == ["AUTH LOGIN", "*"]
    written, _ = driven(server, b"AUTH LOGIN\r\n", b"*\r\n")
    assert written.endswith(b"334 VXNlcm5hbWU6\r\n501 5.7.0 cancelled\r\n")
    assert server.divergences == []
    # An answer where the log cancelled: the secret is never shown, only its place.
    written, _ = driven(server, b"AUTH LOGIN\r\n", b"YWxpY2U=\r\n")
    assert written.endswith(b"503 5.5.1 replay: expected *\r\n")
    assert server.divergences == [Divergence(1, "*", "<redacted>")]


def test_a_reply_with_neither_bytes_nor_a_parsed_form_is_refused() -> None:
    records = [wire("S", b"220 hi\r\n"), wire("C", b"NOOP\r\n"), {"dir": "S", "data": "250"}]
    with pytest.raises(InvalidInputError, match="neither bytes_b64 nor reply"):
        replay(records)


SMUGGLING_PROBE = [
    wire("S", b"220 hi\r\n"),
    wire("C", b"EHLO c\r\n"),
    wire("S", b"250 hi\r\n"),
    wire("C", b"MAIL FROM:<a@x.test>\r\n"),
    wire("S", b"250 ok\r\n"),
    wire("C", b"RCPT TO:<b@x.test>\r\n"),
    wire("S", b"250 ok\r\n"),
    wire("C", b"DATA\r\n"),
    wire("S", b"354 go ahead\r\n"),
    # A content ended by LF.LF, not CRLF.CRLF: a server that takes it for the end
    # answers it; the scripted server reads on (and takes the QUIT for content).
    wire("C", b"Subject: x\r\n\r\nhi\n.\n", unsafe=True),
    wire("S", b"250 queued\r\n"),
    wire("C", b"QUIT\r\n"),
    wire("S", b"221 bye\r\n"),
]


def test_bytes_the_scripted_server_never_reads_to_an_end() -> None:
    server = replay(SMUGGLING_PROBE)
    label = "<25 octets the scripted server never reads to an end>"  # the content and QUIT
    assert server.expected == [
        "EHLO c",
        "MAIL FROM:<a@x.test>",
        "RCPT TO:<b@x.test>",
        "DATA",
        label,
    ]
    assert server.unreplayable == [label]
    written, session = driven(
        server, b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"
    )
    # DATA gets its own reply, not the ones the scripted server never asked for.
    assert written.endswith(b"250 ok\r\n354 go ahead\r\n")
    assert session.feed(b"Subject: x\r\n\r\nhi\n.\nQUIT\r\n") == b""
    assert server.missing(session) == []
    assert server.divergences == []


def test_what_replay_reads(tmp_path: Path) -> None:
    log = plain_capture()
    path = tmp_path / "log.jsonl"
    path.write_text(log.to_jsonl(), encoding="utf-8")
    assert load_log(log) is log
    empty = replay([log.header])  # a header alone: a greeting of nothing, no TLS
    assert (empty.tls, empty.expected, empty.unreplayable) == ("none", [], [])
    for source in (path, str(path), [log.header, *log.records], log.records):
        assert load_log(source).records == log.records
    assert repr(replay(path)).startswith("<ReplayServer of 127.0.0.1:")
    with pytest.raises(IsADirectoryError):
        replay(tmp_path)  # a path that cannot be read: the OSError, as documented
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"hello": 1}\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match="not an smtpbee session log"):
        replay(bad)


# --------------------------------------------------------------------------------------
# The command line


def saved(log: SessionLog, tmp_path: Path) -> Path:
    path = tmp_path / "session.jsonl"
    path.write_text(log.to_jsonl(), encoding="utf-8")
    return path


def test_cli_check_of_a_good_log(
    starttls_capture: tuple[SessionLog, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = saved(starttls_capture[0], tmp_path)
    assert cli_main(["replay", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert "10 commands, 0 divergence(s)" in out
    assert "divergence:" not in out
    assert "never replayed" not in out


def test_cli_check_of_a_log_the_replay_cannot_reproduce(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A command ending in a bare LF is answered by the scripted server itself (500),
    # not from the log: the replay says so.
    records = [
        {"smtpbee_log": 1, "server": "mx:25", "started": "2030-01-01T00:00:00Z"},
        {"dir": "S", "tls": False, "data": "220 hi", "bytes_b64": "MjIwIGhpDQo="},
        {"dir": "C", "tls": False, "unsafe": True, "data": "NOOP\\n", "bytes_b64": "Tk9PUAo="},
        {"dir": "S", "tls": False, "data": "250 ok", "bytes_b64": "MjUwIG9rDQo="},
        {"dir": "C", "tls": False, "data": "QUIT", "bytes_b64": "UVVJVA0K"},
        {"dir": "S", "tls": False, "data": "221 bye", "bytes_b64": "MjIxIGJ5ZQ0K"},
    ]
    path = tmp_path / "odd.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    assert cli_main(["replay", str(path), "--check"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "never replayed: NOOP\\n (the scripted server handles it itself)",
        "2 commands, 0 divergence(s)",
    ]
    server = replay(path)
    assert server.expected == ["NOOP\\n", "QUIT"]
    assert server.unreplayable == ["NOOP\\n"]
    # The engine's own 500 goes out; QUIT still gets the log's 221.
    written, session = driven(server, b"NOOP\n", b"QUIT\r\n")
    assert written == b"220 hi\r\n500 5.5.2 Error: bare <LF> received\r\n221 bye\r\n"
    assert server.divergences == []
    assert server.missing(session) == []


def test_cli_check_of_a_smuggling_probe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "probe.jsonl"
    header = {"smtpbee_log": 1, "server": "mx:25", "started": "2030-01-01T00:00:00Z"}
    records = [header, *SMUGGLING_PROBE]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    assert cli_main(["replay", str(path), "--check", "--timeout", "0.5"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "never replayed: <25 octets the scripted server never reads to an end>"
        " (the scripted server handles it itself)",
        # The log's client waits for the reply to its content: none comes.
        "problem: the replay failed: timed out",
        "5 commands, 0 divergence(s)",
    ]


@pytest.mark.parametrize(
    ("records", "report"),
    [
        (
            # The reply to MAIL is missing: MAIL gets the 221 and the close, QUIT nothing.
            [
                wire("S", b"220 hi\r\n"),
                wire("C", b"EHLO c\r\n"),
                wire("S", b"250 hi\r\n"),
                wire("C", b"MAIL FROM:<a@x.test>\r\n"),
                wire("C", b"QUIT\r\n"),
                wire("S", b"221 bye\r\n"),
            ],
            ["never replayed: QUIT", "3 commands, 0 divergence(s)"],
        ),
        (
            # A reply after the server said it was closing: the replay closes first.
            [
                wire("S", b"220 hi\r\n"),
                wire("C", b"NOOP\r\n"),
                wire("S", b"421 bye\r\n"),
                wire("S", b"250 ok\r\n"),
            ],
            [
                "problem: the replay closed the connection with 1 replies to come",
                "1 commands, 0 divergence(s)",
            ],
        ),
    ],
    ids=["a reply missing", "a reply after the close"],
)
def test_cli_check_of_an_inconsistent_log(
    records: list[dict[str, Any]],
    report: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "inconsistent.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [{"smtpbee_log": 1}, *records]))
    assert cli_main(["replay", str(path), "--check", "--timeout", "5"]) == 1
    assert capsys.readouterr().out.splitlines() == report


def test_cli_check_of_an_implicit_tls_log(
    trust_ca: LoopbackCA, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ScriptedServer(tls="implicit", tls_context=trust_ca.server_context())
    with server.serve_in_thread() as running:
        log, _ = capture(
            running.host, running.port, tls="implicit", ssl_context=trust_ca.client_context()
        )
    assert cli_main(["replay", str(saved(log, tmp_path)), "--check"]) == 0
    assert capsys.readouterr().out.splitlines() == ["5 commands, 0 divergence(s)"]


def test_cli_usage_and_input_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["replay", str(tmp_path / "missing.jsonl")]) == 65
    assert "cannot replay" in capsys.readouterr().err
    assert cli_main(["replay", "x.jsonl", "--port", "70000"]) == 64
    assert cli_main(["replay"]) == 64


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_serving_on_a_chosen_port() -> None:
    server = replay(plain_capture())
    port = free_port()
    with server.serve_in_thread(port) as running:
        assert running.port == port
        _, outcome = capture(running.host, port, tls="none")
        running.wait(1)
    assert outcome.data.code == 250
    assert server.divergences == []


def test_cli_serves_on_a_port_until_interrupted(tmp_path: Path) -> None:
    log = plain_capture()
    path = saved(log, tmp_path)
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "smtpbee", "replay", str(path), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"listening on 127.0.0.1:{port}"
        assert "commands to replay" in process.stdout.readline()
        with SMTPClient(
            "127.0.0.1", port, tls="none", local_hostname="client.test", timeout=10
        ) as c:
            result = c.sendmail("a@x.test", ["b@x.test"], BODY)
        assert result.data is not None and result.data.code == 250
        with (
            pytest.raises(PermanentReplyError, match=r"503 to HELO changed\.test"),
            SMTPClient("127.0.0.1", port, tls="none", local_hostname="changed.test", timeout=10),
        ):
            pass  # the greeting and EHLO are exchanged on entering
        assert process.stdout.readline() == (
            "divergence: command 1: expected EHLO client.test, received EHLO changed.test\n"
        )
        assert process.stdout.readline() == (
            "divergence: command 2: expected MAIL FROM:<a@x.test> SIZE=68,"
            " received HELO changed.test\n"
        )
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 1, err
    assert out.splitlines()[-1] == "stopped: 2 divergence(s)"


def test_cli_reports_a_port_it_cannot_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = saved(plain_capture(), tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert cli_main(["replay", str(path), "--port", str(port)]) == 75
    assert "cannot listen" in capsys.readouterr().err
