"""The smtpbee command-line tool, run as a subprocess (``python -m smtpbee``).

Every exit code of the contract is produced here for real: against aiosmtpd,
scripted hostile servers, a closed port and Postfix; the scenarios that depend on
the transport run once per transport (sync, asyncio, trio).
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import os
import runpy
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import AiosmtpdServer, LoopbackCA, PostfixServer, TLSAiosmtpdServer
from smtpbee import (
    LocalProtocolError,
    MessageTooLargeError,
    OutcomeUnknownError,
    TLSMode,
    UnsupportedExtensionError,
)
from smtpbee.cli import build_parser
from smtpbee.cli._client import make_client, parse_server, parse_source_address, resolve_tls
from smtpbee.cli._client import run as run_job
from smtpbee.cli._output import UsageError, classify
from smtpbee.cli._progress import PROGRESS_THRESHOLD, ProgressBody, wants_progress
from smtpbee.cli._send import deliver, prepare
from smtpbee.testing import Handler, ThreadedServer, stall

TRANSPORTS = ["sync", "asyncio", "trio"]
ALICE_PASSWORD = "wonderland"
# The scripted servers greet as "220 scripted.test ESMTP ..." and offer 8BITMIME only.
PLAIN_EXTENSIONS = ["8BITMIME"]
MESSAGE = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: hi\r\n\r\nHello.\r\n.dot\r\n"


def smtpbee(*args: str, stdin: bytes | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m smtpbee ARGS``; the environment gets ``env`` on top."""
    environ = {k: v for k, v in os.environ.items() if k != "SMTPBEE_PASSWORD"}
    environ.update(env)
    completed = subprocess.run(
        [sys.executable, "-m", "smtpbee", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        env=environ,
        check=False,
    )
    return subprocess.CompletedProcess(
        completed.args,
        completed.returncode,
        completed.stdout.decode("utf-8"),
        completed.stderr.decode("utf-8"),
    )


def as_json(run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = run.stdout.splitlines()
    assert len(lines) == 1, run.stdout + run.stderr
    document: dict[str, Any] = json.loads(lines[0])
    return document


def scripted(
    scripted_server: Any, handlers: dict[str, Handler] | None = None, **options: Any
) -> ThreadedServer:
    """A scripted server named scripted.test that offers 8BITMIME (or ``extensions``)."""
    options.setdefault("extensions", PLAIN_EXTENSIONS)
    server: ThreadedServer = scripted_server(handlers, hostname="scripted.test", **options)
    return server


def plain(server: AiosmtpdServer | ThreadedServer, *args: str) -> list[str]:
    """The send options for a plaintext loopback server."""
    return ["send", "--server", f"127.0.0.1:{server.port}", "--tls", "none", *args]


@pytest.fixture
def message_file(tmp_path: Path) -> Path:
    path = tmp_path / "message.eml"
    path.write_bytes(MESSAGE)
    return path


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- success, per transport --------------------------------------------------------------


def test_send_a_file_with_every_transport(
    aiosmtpd_server: AiosmtpdServer, message_file: Path, transport: str
) -> None:
    run = smtpbee(
        *plain(aiosmtpd_server, "--from", "a@example.test", "--to", "b@example.test"),
        *("--message", str(message_file), "--transport", transport, "--json"),
    )
    assert run.returncode == 0, run.stderr
    result = as_json(run)
    assert result["ok"] is True
    assert result["error"] is None
    assert result["transport"] == transport
    assert result["recipients"] == {"b@example.test": {"code": 250, "enhanced": None, "text": "OK"}}
    assert result["data"]["code"] == 250
    assert result["tls"] is None
    assert "8BITMIME" in result["extensions"]
    [received] = aiosmtpd_server.messages
    assert received.content == MESSAGE
    assert received.mail_from == "a@example.test"


def test_text_output_and_the_null_sender(aiosmtpd_server: AiosmtpdServer) -> None:
    run = smtpbee(
        *plain(aiosmtpd_server, "--from", "", "--to", "b@example.test", "--body", "bounce"),
    )
    assert run.returncode == 0, run.stderr
    assert "accepted  b@example.test: 250 OK" in run.stdout
    assert "sent      message: 250 2.0.0 OK: queued" in run.stdout
    assert "tls       none (--tls none)" in run.stdout
    [received] = aiosmtpd_server.messages
    assert received.mail_from == "<>"
    assert b"From:" not in received.content.split(b"\r\n\r\n")[0]


def test_message_from_stdin(aiosmtpd_server: AiosmtpdServer) -> None:
    run = smtpbee(
        *plain(aiosmtpd_server, "--from", "a@example.test", "--to", "b@example.test"),
        *("--message", "-"),
        stdin=MESSAGE,
    )
    assert run.returncode == 0, run.stderr
    assert aiosmtpd_server.messages[0].content == MESSAGE


def test_a_composed_message_with_attachments(
    aiosmtpd_server: AiosmtpdServer, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("some notes\n")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)))
    run = smtpbee(
        *plain(aiosmtpd_server, "--from", "a@example.test", "--to", "b@example.test"),
        *("--to", "c@example.test", "--subject", "Grüße", "--body", "Hällo"),
        *("--attach", str(tmp_path / "notes.txt"), "--attach", str(tmp_path / "blob.bin")),
    )
    assert run.returncode == 0, run.stderr
    [received] = aiosmtpd_server.messages
    assert received.rcpt_tos == ["b@example.test", "c@example.test"]
    content = received.content
    assert content.isascii()
    headers = content.split(b"\r\n\r\n")[0]
    for name in (b"Date:", b"Message-ID: <", b"To: b@example.test, c@example.test", b"Subject:"):
        assert name in headers
    assert b"@example.test>" in headers
    assert b'Content-Type: text/plain; charset="utf-8"' in content
    assert b'filename="notes.txt"' in content
    assert b"Content-Type: application/octet-stream" in content
    assert b"H=C3=A4llo" in content


# -- 64: usage ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["send", "--server", "127.0.0.1", "--to", "b@example.test"],
        ["send", "--server", "host:0", "--from", "a@x.test", "--to", "b@x.test", "--body", "x"],
        ["send", "--server", "h", "--from", "a@x.test", "--to", "b@x.test"],
        ["send", "--server", "h", "--from", "a@x.test", "--to", "b@x.test", "--body", "x",
         "--message", "f"],
        ["send", "--server", "h", "--from", "a@x.test", "--to", "b@x.test", "--body", "x",
         "--cafile", "f", "--insecure"],
        ["send", "--server", "h", "--from", "a@x.test", "--to", "b@x.test", "--body", "x",
         "--user", "u"],
        ["send", "--server", "h", "--from", "a@x.test", "--to", "b@x.test", "--body", "x",
         "--states"],
        ["send", "--server", "h", "--from", "a@x.test", "--to", "b@x.test", "--body", "x",
         "--user", "u", "--password", "p", "--auth", "GSSAPI"],
        ["probe", "--server", "[::1"],
        ["probe", "--server", "h", "--timeout", "0"],
        ["states", "--format", "svg"],
        ["frobnicate"],
    ],
)  # fmt: skip
def test_usage_errors_are_one_line_and_64(args: list[str]) -> None:
    run = smtpbee(*args)
    assert run.returncode == 64
    assert run.stdout == ""
    assert len(run.stderr.splitlines()) == 1, run.stderr
    assert run.stderr.startswith("smtpbee: error: ")
    assert "Traceback" not in run.stderr


# -- 65: bad input, caught before anything is sent ---------------------------------------


def test_an_address_with_cr_is_65_and_nothing_is_sent(
    aiosmtpd_server: AiosmtpdServer, message_file: Path
) -> None:
    run = smtpbee(
        *plain(aiosmtpd_server, "--from", "a@example.test", "--message", str(message_file)),
        *("--to", "b@example.test\rRCPT TO:<evil@example.test>", "--json"),
    )
    assert run.returncode == 65
    result = as_json(run)
    assert result["ok"] is False
    assert result["error"]["kind"] == "input"
    assert "recipient" in result["error"]["text"]
    assert aiosmtpd_server.connections == 0
    assert aiosmtpd_server.messages == []


@pytest.mark.parametrize(
    "extra",
    [
        ["--message", "/nonexistent/message.eml"],
        ["--body", "x", "--attach", "/nonexistent/file.pdf"],
        ["--body", "x", "--cafile", "/nonexistent/ca.pem"],
        ["--body", "x", "--user", "alice", "--password-file", "/nonexistent/pw"],
        ["--body", "x", "--user", "alice", "--password-env", "SMTPBEE_NO_SUCH_VARIABLE"],
        ["--body", "x", "--helo", "bad name"],
        ["--subject", "two\nlines"],
    ],
)
def test_unusable_input_is_65(aiosmtpd_server: AiosmtpdServer, extra: list[str]) -> None:
    run = smtpbee(*plain(aiosmtpd_server, "--from", "a@example.test", "--to", "b@x.test"), *extra)
    assert run.returncode == 65, run.stderr
    assert run.stderr.startswith("smtpbee: error: ")
    assert len(run.stderr.splitlines()) == 1
    assert aiosmtpd_server.connections == 0


# -- 69: permanent refusals --------------------------------------------------------------


def test_one_refused_recipient_is_69_with_the_refusal_in_json(
    aiosmtpd_server: AiosmtpdServer, message_file: Path, transport: str
) -> None:
    aiosmtpd_server.reject_recipients.add("nobody@example.test")
    run = smtpbee(
        *plain(aiosmtpd_server, "--from", "a@example.test", "--message", str(message_file)),
        *("--to", "b@example.test", "--to", "nobody@example.test"),
        *("--transport", transport, "--json"),
    )
    assert run.returncode == 69
    result = as_json(run)
    assert result["ok"] is False
    assert result["recipients"]["b@example.test"]["code"] == 250
    assert result["recipients"]["nobody@example.test"] == {
        "code": 550,
        "enhanced": "5.1.1",
        "text": "<nobody@example.test>: Recipient address rejected",
    }
    assert result["data"]["code"] == 250
    assert "nobody@example.test" in run.stderr
    assert aiosmtpd_server.messages[0].rcpt_tos == ["b@example.test"]


def test_every_recipient_refused_and_a_refused_message(
    aiosmtpd_server: AiosmtpdServer, message_file: Path
) -> None:
    aiosmtpd_server.reject_recipients.add("nobody@example.test")
    run = smtpbee(
        *plain(aiosmtpd_server, "--from", "a@example.test", "--to", "nobody@example.test"),
        *("--message", str(message_file), "--json"),
    )
    assert run.returncode == 69
    result = as_json(run)
    assert result["recipients"]["nobody@example.test"]["code"] == 550
    assert result["error"]["kind"] == "permanent"
    assert result["error"]["code"] == 550
    assert result["data"] is None

    aiosmtpd_server.reject_message = True
    run = smtpbee(
        *plain(aiosmtpd_server, "--from", "a@example.test", "--to", "b@example.test"),
        *("--message", str(message_file)),
    )
    assert run.returncode == 69
    assert "REFUSED   message: 554 5.6.0" in run.stdout
    assert "smtpbee: error: 554" in run.stderr


# -- 75: temporary failures --------------------------------------------------------------


def test_a_4xx_is_75(scripted_server: Any, message_file: Path, transport: str) -> None:
    server = scripted(scripted_server, {"MAIL": "451 4.3.0 Try again later"})
    run = smtpbee(
        *plain(server, "--from", "a@example.test", "--to", "b@example.test"),
        *("--message", str(message_file), "--transport", transport, "--json"),
    )
    assert run.returncode == 75
    result = as_json(run)
    assert result["error"] == {
        "kind": "transient",
        "code": 451,
        "text": "451 to MAIL FROM:<a@example.test>: Try again later",
    }
    server.wait()
    assert [c.line for c in server.commands][1:] == [
        b"MAIL FROM:<a@example.test>\r\n",
        b"RSET\r\n",
        b"QUIT\r\n",
    ]


def test_server_text_is_shown_escaped_and_json_is_ascii(
    scripted_server: Any, transport: str
) -> None:
    hostile = "R\u00e9essayez \x1b[2J\u202eplus tard"
    server = scripted(scripted_server, {"MAIL": f"451 4.3.0 {hostile}"})
    run = smtpbee(
        *plain(server, "--from", "a@example.test", "--to", "b@example.test", "--body", "x"),
        *("--transport", transport, "--json", "--transcript"),
    )
    assert run.returncode == 75
    # JSON is ASCII: the accent travels as \\u00e9 and parses back to itself.
    assert run.stdout.isascii() and "\\u00e9" in run.stdout
    shown = "R\u00e9essayez \\x1b[2J\\u202eplus tard"
    assert as_json(run)["error"]["text"] == f"451 to MAIL FROM:<a@example.test>: {shown}"
    # A person's terminal gets the controls escaped, the accent kept.
    assert "\x1b" not in run.stderr and "\u202e" not in run.stderr
    assert f"S: 451 4.3.0 {shown}" in run.stderr.splitlines()
    assert run.stderr.splitlines()[-1].endswith(shown)
    server.wait()


def test_a_refused_connection_is_75(transport: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = smtpbee(
        "send", "--server", f"127.0.0.1:{port}", "--from", "a@x.test", "--to", "b@x.test",
        "--body", "x", "--transport", transport, "--json",
    )  # fmt: skip
    assert run.returncode == 75
    assert as_json(run)["error"]["kind"] == "connection"


def test_a_stalled_server_times_out_with_75(scripted_server: Any, transport: str) -> None:
    server = scripted(scripted_server, {"EHLO": stall()})
    run = smtpbee(
        *plain(server, "--from", "a@example.test", "--to", "b@example.test", "--body", "x"),
        *("--timeout", "1", "--transport", transport, "--json"),
    )
    assert run.returncode == 75
    assert as_json(run)["error"]["kind"] == "timeout"
    server.wait()


def test_silence_after_the_final_dot_is_75_with_the_recipients(
    scripted_server: Any, transport: str
) -> None:
    server = scripted(scripted_server, {"MESSAGE": stall()})
    run = smtpbee(
        *plain(server, "--from", "a@example.test", "--to", "b@example.test", "--body", "x"),
        *("--timeout", "1", "--transport", transport, "--json"),
    )
    assert run.returncode == 75
    result = as_json(run)
    assert result["error"]["kind"] == "outcome_unknown"
    # The message may have been accepted: the JSON says for whom.
    assert result["recipients"]["b@example.test"]["code"] == 250
    server.wait()
    assert server.messages == []


# -- 76: protocol errors -----------------------------------------------------------------


def test_a_garbage_reply_is_76(scripted_server: Any, transport: str) -> None:
    server = scripted(scripted_server, greeting=[b"HTTP/1.1 400 Bad Request\r\n", stall()])
    run = smtpbee(
        *plain(server, "--from", "a@example.test", "--to", "b@example.test", "--body", "x"),
        *("--transport", transport, "--json"),
    )
    assert run.returncode == 76
    assert as_json(run)["error"]["kind"] == "protocol"
    assert "Traceback" not in run.stderr
    server.wait()


def test_starttls_injection_is_76(scripted_server: Any, transport: str) -> None:
    injected = b"220 Go ahead\r\n250-injected.test\r\n250 AUTH PLAIN\r\n"
    server = scripted(scripted_server, {"STARTTLS": [injected, stall()]}, extensions=["STARTTLS"])
    run = smtpbee(
        "send", "--server", f"127.0.0.1:{server.port}", "--from", "a@example.test",
        "--to", "b@example.test", "--body", "x", "--transport", transport, "--json",
    )  # fmt: skip
    assert run.returncode == 76
    assert as_json(run)["error"]["kind"] == "starttls_injection"
    server.wait()


def test_tls_required_but_not_offered_is_76(scripted_server: Any) -> None:
    server = scripted(scripted_server)
    run = smtpbee(
        "send", "--server", f"127.0.0.1:{server.port}", "--from", "a@example.test",
        "--to", "b@example.test", "--body", "x", "--json",
    )  # fmt: skip
    assert run.returncode == 76
    result = as_json(run)
    assert result["error"]["kind"] == "tls_required"
    assert result["tls_mode"] == "starttls"
    server.wait()
    assert [c.verb for c in server.commands] == ["EHLO", "QUIT"]


# -- 77: authentication ------------------------------------------------------------------


def test_rejected_credentials_are_77(aiosmtpd_server: AiosmtpdServer, transport: str) -> None:
    run = smtpbee(
        *plain(aiosmtpd_server, "--from", "a@example.test", "--to", "b@example.test"),
        *("--body", "x", "--user", "alice", "--password", "wrong", "--allow-insecure-auth"),
        *("--transport", transport, "--json"),
    )
    assert run.returncode == 77
    result = as_json(run)
    assert result["error"]["kind"] == "auth_rejected"
    assert result["error"]["code"] == 535
    assert aiosmtpd_server.messages == []


def test_auth_over_plaintext_needs_the_opt_in(aiosmtpd_server: AiosmtpdServer) -> None:
    run = smtpbee(
        *plain(aiosmtpd_server, "--from", "a@example.test", "--to", "b@example.test"),
        *("--body", "x", "--user", "alice", "--json"),
        SMTPBEE_PASSWORD=ALICE_PASSWORD,
    )
    assert run.returncode == 77
    error = as_json(run)["error"]
    assert error["kind"] == "auth_insecure"
    # The advice names the option, not the library's argument.
    assert "not encrypted" in error["text"] and "--allow-insecure-auth" in error["text"]
    assert "allow_insecure" not in error["text"]
    assert "--allow-insecure-auth" in run.stderr
    assert aiosmtpd_server.messages == []


def test_the_transcript_never_shows_the_password(
    aiosmtpd_server: AiosmtpdServer, tmp_path: Path
) -> None:
    secrets = [ALICE_PASSWORD]
    for raw in (f"\0alice\0{ALICE_PASSWORD}", ALICE_PASSWORD, "alice"):
        secrets.append(base64.b64encode(raw.encode()).decode())
    password_file = tmp_path / "password"
    password_file.write_text(ALICE_PASSWORD + "\n")
    for mechanism, source in (
        ("PLAIN", ["--password-env", "MY_PASSWORD"]),
        ("LOGIN", ["--password-file", str(password_file)]),
    ):
        run = smtpbee(
            *plain(aiosmtpd_server, "--from", "a@example.test", "--to", "b@example.test"),
            *("--body", "x", "--user", "alice", *source, "--auth", mechanism),
            *("--allow-insecure-auth", "--transcript", "--states"),
            MY_PASSWORD=ALICE_PASSWORD,
        )
        assert run.returncode == 0, run.stderr
        assert f"C: AUTH {mechanism}" in run.stderr
        assert "<redacted>" in run.stderr
        for secret in secrets:
            assert secret not in run.stderr
            assert secret not in run.stdout
        lines = run.stderr.splitlines()
        assert any(line.startswith("S: 235") and line.endswith("[READY]") for line in lines)
        assert any(line.startswith("C: MAIL FROM:<a@example.test>") for line in lines)
    assert [m.auth_login for m in aiosmtpd_server.messages] == ["alice", "alice"]


# -- TLS: --cafile, --insecure, neither --------------------------------------------------


@pytest.mark.parametrize("fixture", ["aiosmtpd_starttls_server", "aiosmtpd_implicit_tls_server"])
def test_cafile_insecure_and_untrusted(fixture: str, request: pytest.FixtureRequest) -> None:
    server: TLSAiosmtpdServer = request.getfixturevalue(fixture)
    tls = "starttls" if fixture == "aiosmtpd_starttls_server" else "implicit"
    common = [
        "send", "--server", f"localhost:{server.port}", "--tls", tls, "--from",
        "a@example.test", "--to", "b@example.test", "--body", "x", "--json",
    ]  # fmt: skip
    verified = smtpbee(*common, "--cafile", server.cafile)
    assert verified.returncode == 0, verified.stderr
    tls_info = as_json(verified)["tls"]
    assert tls_info["verified"] is True
    assert tls_info["version"] in ("TLSv1.2", "TLSv1.3")
    assert "trustme" in tls_info["subject"]

    insecure = smtpbee(*common, "--insecure")
    assert insecure.returncode == 0, insecure.stderr
    result = as_json(insecure)
    assert result["insecure"] is True
    assert result["tls"]["verified"] is False
    assert "NOT verified" in insecure.stderr

    # No password goes over TLS whose certificate was not checked, unless asked for.
    unverified_login = smtpbee(
        *common, "--insecure", "--user", "alice", SMTPBEE_PASSWORD=ALICE_PASSWORD
    )
    assert unverified_login.returncode == 77
    error = as_json(unverified_login)["error"]
    assert error["kind"] == "auth_insecure"
    assert "not verified" in error["text"] and "--allow-insecure-auth" in error["text"]

    untrusted = smtpbee(*common)
    assert untrusted.returncode == 76
    assert as_json(untrusted)["error"]["kind"] == "certificate"
    assert [m.tls for m in server.messages] == [True, True]


# -- Postfix -----------------------------------------------------------------------------


def test_send_through_postfix_with_starttls(postfix: PostfixServer, tmp_path: Path) -> None:
    recipient = postfix.new_address("cli")
    run = smtpbee(
        "send", "--server", f"{postfix.host}:{postfix.port}", "--cafile", postfix.cafile,
        "--from", f"sender@{postfix.domain}", "--to", recipient, "--to", postfix.reject_address,
        "--subject", f"cli test {recipient}", "--body", "Hello Postfix.\n.leading dot",
        "--json", "--transcript",
    )  # fmt: skip
    assert run.returncode == 69, run.stderr
    result = as_json(run)
    assert result["tls"]["verified"] is True
    assert result["recipients"][recipient]["code"] == 250
    assert result["recipients"][postfix.reject_address]["code"] == 550
    assert result["data"]["code"] == 250
    assert "C: STARTTLS" in run.stderr
    assert "S: 220 2.0.0 Ready to start TLS" in run.stderr
    delivered = postfix.wait_for_message(lambda content: recipient.encode() in content)
    assert b"\n.leading dot\n" in delivered


# -- probe -------------------------------------------------------------------------------


def test_probe_text_and_json(aiosmtpd_starttls_server: TLSAiosmtpdServer, transport: str) -> None:
    server = aiosmtpd_starttls_server
    args = ["probe", "--server", f"localhost:{server.port}", "--cafile", server.cafile]
    run = smtpbee(*args, "--transport", transport, "--json")
    assert run.returncode == 0, run.stderr
    result = as_json(run)
    assert result["greeting"]["code"] == 220
    assert "STARTTLS" in result["extensions_before_tls"]
    assert "STARTTLS" not in result["extensions"]
    assert any(e.startswith("AUTH") for e in result["extensions"])
    assert result["tls"]["verified"] is True
    assert result["error"] is None

    text = smtpbee(*args)
    assert text.returncode == 0, text.stderr
    assert "greeting    220 " in text.stdout
    assert "extensions before STARTTLS:\n" in text.stdout
    assert "  STARTTLS\n" in text.stdout
    assert "certificate verified, subject" in text.stdout
    assert server.messages == []


def test_probe_shows_what_it_saw_before_failing(scripted_server: Any) -> None:
    server = scripted(scripted_server)
    run = smtpbee("probe", "--server", f"127.0.0.1:{server.port}", "--insecure")
    assert run.returncode == 76
    assert "greeting    220 scripted.test ESMTP" in run.stdout
    assert "tls         none" in run.stdout
    assert "  8BITMIME" in run.stdout
    assert "STARTTLS" in run.stderr
    server.wait()


# -- states and python -m ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "start"),
    [("text", "States:\n"), ("mermaid", "stateDiagram-v2\n"), ("dot", "digraph smtp_client {\n")],
)
def test_states(fmt: str, start: str) -> None:
    run = smtpbee("states", "--format", fmt)
    assert run.returncode == 0
    assert run.stdout.startswith(start)
    assert "TLS_HANDSHAKE" in run.stdout


def test_python_dash_m_hands_over_to_the_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["smtpbee", "states", "--format", "mermaid"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("smtpbee", run_name="__main__")
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("stateDiagram-v2")


def test_importing_smtpbee_main_runs_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module("smtpbee.__main__")
    assert module.__all__ == []
    assert capsys.readouterr() == ("", "")


# -- the pieces, in process ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mx.example.test", ("mx.example.test", 25)),
        ("mx.example.test:587", ("mx.example.test", 587)),
        ("[::1]", ("::1", 25)),
        ("[::1]:2525", ("::1", 2525)),
        ("::1", ("::1", 25)),
        ("host:99999", None),
        ("[::1]x", None),
        (":25", None),
    ],
)
def test_parse_server(text: str, expected: tuple[str, int] | None) -> None:
    if expected is None:
        with pytest.raises(UsageError):
            parse_server(text)
    else:
        assert parse_server(text) == expected


def test_the_default_tls_mode_follows_the_port() -> None:
    assert resolve_tls(None, 465) is TLSMode.IMPLICIT
    assert resolve_tls(None, 25) is TLSMode.STARTTLS
    assert resolve_tls("none", 465) is TLSMode.NONE


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_counts_what_the_transport_reads() -> None:
    terminal = _Terminal()
    assert not wants_progress(PROGRESS_THRESHOLD + 1, io.StringIO())
    assert not wants_progress(PROGRESS_THRESHOLD, terminal)
    assert wants_progress(PROGRESS_THRESHOLD + 1, terminal)
    data = b"x" * (3 << 20)
    body = ProgressBody(data, terminal)
    pieces = list(iter(lambda: body.read(1 << 20), b""))
    assert b"".join(pieces) == data
    drawn = terminal.getvalue()
    assert drawn.count("\r") == 4
    assert "  33% 1.0/3.0 MiB" in drawn
    assert drawn.endswith("[" + "#" * 30 + "] 100% 3.0/3.0 MiB\n")


def test_a_large_message_goes_as_a_file_with_a_bar(
    aiosmtpd_server: AiosmtpdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    data = b"Subject: big\r\n\r\n" + (b"caf\xc3\xa9 " * 20 + b"\r\n") * 20000
    args = build_parser().parse_args(
        [*plain(aiosmtpd_server, "--from", "a@example.test", "--to", "b@x.test"), "--message", "-"]
    )
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    job = prepare(args)
    outcome = run_job("sync", lambda: deliver(make_client(job.connection, None), job))
    assert outcome.exit_code == 0
    assert aiosmtpd_server.messages[0].content == data
    assert aiosmtpd_server.messages[0].rcpt_tos == ["b@x.test"]
    assert "BODY=8BITMIME" in aiosmtpd_server.messages[0].mail_options
    assert terminal.getvalue().endswith("100% 2.3/2.3 MiB\n")


@pytest.mark.parametrize(
    ("error", "during_auth", "kind", "code"),
    [
        (OutcomeUnknownError("lost after the dot"), False, "outcome_unknown", 75),
        (MessageTooLargeError("too big"), False, "too_large", 69),
        (UnsupportedExtensionError("no SMTPUTF8"), False, "unsupported", 69),
        (UnsupportedExtensionError("no AUTH"), True, "auth_unavailable", 77),
        (LocalProtocolError("misuse"), False, "input", 65),
        (ConnectionRefusedError(111, "refused"), False, "connection", 75),
    ],
)
def test_classify(error: Exception, during_auth: bool, kind: str, code: int) -> None:
    failure = classify(error, during_auth=during_auth)
    assert (failure.kind, failure.exit_code) == (kind, code)
    assert failure.code is None


def test_classify_reraises_what_it_does_not_know() -> None:
    with pytest.raises(KeyError):
        classify(KeyError("a bug"))


# -- the usage error is one line, prefixed once ------------------------------------------


@pytest.mark.parametrize(
    ("args", "command"),
    [
        ([], "smtpbee"),
        (["frobnicate"], "smtpbee"),
        (["send", "--server", "h"], "smtpbee send"),
        (["probe", "--server", "h", "--tls", "sometimes"], "smtpbee probe"),
        (["states", "--format", "svg"], "smtpbee states"),
        (["tour", "--keep"], "smtpbee tour"),
    ],
)
def test_an_argparse_error_is_prefixed_once(args: list[str], command: str) -> None:
    run = smtpbee(*args)
    assert run.returncode == 64
    [line] = run.stderr.splitlines()
    assert line.startswith("smtpbee: error: ")
    assert line.count("error:") == 1
    assert "smtpbee: error: smtpbee" not in line
    # The parser's name only points at the right help.
    assert line.endswith(f"(see {command} --help)")


# -- --source-address --------------------------------------------------------------------


def free_port(host: str) -> int:
    """A port nothing listens on or is bound to at ``host`` (for a moment)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, 0))
        except OSError as exc:
            pytest.skip(f"cannot bind {host} here: {exc}")
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize("command", ["send", "probe"])
def test_source_address_is_where_the_connection_comes_from(
    scripted_server: Any, transport: str, command: str
) -> None:
    # 127.0.0.2 is loopback too (Linux routes all of 127/8 to lo), and not what the system
    # would pick by itself to reach 127.0.0.1: seeing it proves the option was used.
    source = "127.0.0.2"
    port = free_port(source)
    server = scripted(scripted_server)
    # trio binds a local host only, so its source port stays the system's choice.
    wanted = source if transport == "trio" else f"{source}:{port}"
    args = ["--server", f"127.0.0.1:{server.port}", "--tls", "none", "--source-address", wanted]
    if command == "send":
        args += ["--from", "a@example.test", "--to", "b@example.test", "--body", "x"]
    run = smtpbee(command, *args, "--transport", transport, "--json")
    assert run.returncode == 0, run.stderr
    server.wait()
    peer = server.sessions[0].peer
    assert peer is not None
    assert peer[0] == source
    if transport != "trio":
        assert peer[1] == port
    expected = ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"] if command == "send" else ["EHLO", "QUIT"]
    assert [c.verb for c in server.commands] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 0)),
        ("127.0.0.1:2525", ("127.0.0.1", 2525)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]", ("::1", 0)),
        ("[::1]:2525", ("::1", 2525)),
        ("::1", ("::1", 0)),
        ("127.0.0.1:65536", None),
        ("127.0.0.1:x", None),
        (":25", None),
        ("[::1", None),
    ],
)
def test_parse_source_address(text: str, expected: tuple[str, int] | None) -> None:
    if expected is None:
        with pytest.raises(UsageError, match="--source-address"):
            parse_source_address(text)
    else:
        assert parse_source_address(text) == expected


@pytest.mark.parametrize(
    "extra",
    [
        ["--source-address", "127.0.0.1:99999"],
        ["--source-address", "[::1"],
        ["--source-address", "127.0.0.2:2525", "--transport", "trio"],
    ],
)
def test_a_bad_source_address_is_64(aiosmtpd_server: AiosmtpdServer, extra: list[str]) -> None:
    run = smtpbee(
        *plain(aiosmtpd_server, "--from", "a@example.test", "--to", "b@x.test", "--body", "x"),
        *extra,
    )
    assert run.returncode == 64, run.stderr
    assert run.stderr.startswith("smtpbee: error: --source-address")
    assert len(run.stderr.splitlines()) == 1
    assert aiosmtpd_server.connections == 0


# -- --tls-cert / --tls-key --------------------------------------------------------------


@pytest.fixture
def client_cert(trust_ca: LoopbackCA, tmp_path: Path) -> dict[str, Path]:
    """A client certificate from the test CA: separate cert and key files, and both in one."""
    leaf = trust_ca.ca.issue_cert("client.smtpbee.test")
    paths = {
        "cert": tmp_path / "client-cert.pem",
        "key": tmp_path / "client-key.pem",
        "both": tmp_path / "client.pem",
    }
    leaf.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    leaf.private_key_pem.write_to_path(str(paths["key"]))
    leaf.private_key_and_cert_chain_pem.write_to_path(str(paths["both"]))
    return paths


@pytest.fixture
def cert_requiring_server(trust_ca: LoopbackCA) -> Iterator[AiosmtpdServer]:
    """An implicit-TLS aiosmtpd that refuses a client without a certificate from the test CA."""
    context = trust_ca.server_context()
    context.verify_mode = ssl.CERT_REQUIRED
    trust_ca.ca.configure_trust(context)
    server = AiosmtpdServer(tls_mode="implicit", server_context=context)
    server.start()
    yield server
    server.stop()


def test_a_client_certificate_is_presented(
    cert_requiring_server: AiosmtpdServer,
    client_cert: dict[str, Path],
    trust_ca: LoopbackCA,
    transport: str,
) -> None:
    server = cert_requiring_server
    common = [
        "send", "--server", f"localhost:{server.port}", "--tls", "implicit",
        "--cafile", trust_ca.cafile,
        "--from", "a@example.test", "--to", "b@example.test", "--body", "x",
        "--transport", transport, "--json",
    ]  # fmt: skip
    pair = smtpbee(*common, "--tls-cert", str(client_cert["cert"]), "--tls-key",
                   str(client_cert["key"]))  # fmt: skip
    assert pair.returncode == 0, pair.stderr
    assert as_json(pair)["tls"]["verified"] is True
    one_file = smtpbee(*common, "--tls-cert", str(client_cert["both"]))
    assert one_file.returncode == 0, one_file.stderr
    assert [m.tls for m in server.messages] == [True, True]

    # Without one the server ends the handshake: the option is what made the difference.
    without = smtpbee(*common)
    assert without.returncode != 0
    assert as_json(without)["ok"] is False
    assert "Traceback" not in without.stderr
    assert len(server.messages) == 2


def test_a_client_certificate_also_works_with_starttls(
    aiosmtpd_starttls_server: TLSAiosmtpdServer, client_cert: dict[str, Path]
) -> None:
    # A server that does not ask for a certificate: loading one changes nothing.
    server = aiosmtpd_starttls_server
    run = smtpbee(
        "send", "--server", f"localhost:{server.port}", "--cafile", server.cafile,
        "--from", "a@example.test", "--to", "b@example.test", "--body", "x",
        "--tls-cert", str(client_cert["cert"]), "--tls-key", str(client_cert["key"]),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert [m.tls for m in server.messages] == [True]


@pytest.mark.parametrize(
    ("cert", "key", "says"),
    [
        ("missing", None, "No such file"),
        ("cert", "missing", "No such file"),
        ("garbage", None, "not a PEM certificate"),
        ("cert", None, "not a PEM certificate"),  # no key in that file
        ("cert", "other_key", "not a PEM certificate"),  # not the certificate's key
        ("cert", "encrypted_key", "encrypted"),
    ],
)
def test_an_unusable_client_certificate_is_65(
    aiosmtpd_starttls_server: TLSAiosmtpdServer,
    client_cert: dict[str, Path],
    trust_ca: LoopbackCA,
    tmp_path: Path,
    cert: str,
    key: str | None,
    says: str,
) -> None:
    from cryptography.hazmat.primitives import serialization

    files = dict(client_cert)
    files["missing"] = tmp_path / "nonexistent.pem"
    files["garbage"] = tmp_path / "garbage.pem"
    files["garbage"].write_text("not a certificate\n")
    files["other_key"] = tmp_path / "other-key.pem"
    trust_ca.ca.issue_cert("other.smtpbee.test").private_key_pem.write_to_path(
        str(files["other_key"])
    )
    private = serialization.load_pem_private_key(client_cert["key"].read_bytes(), None)
    files["encrypted_key"] = tmp_path / "encrypted-key.pem"
    files["encrypted_key"].write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    server = aiosmtpd_starttls_server
    args = ["send", "--server", f"localhost:{server.port}", "--cafile", server.cafile,
            "--from", "a@example.test", "--to", "b@example.test", "--body", "x",
            "--tls-cert", str(files[cert])]  # fmt: skip
    if key is not None:
        args += ["--tls-key", str(files[key])]
    # No standard input: an encrypted key must never make OpenSSL prompt for a passphrase.
    run = smtpbee(*args, stdin=b"")
    assert run.returncode == 65, run.stderr
    [line] = run.stderr.splitlines()
    assert line.startswith("smtpbee: error: --tls-")
    assert says in line
    assert server.connections == 0

    as_json_run = smtpbee(*args, "--json", stdin=b"")
    assert as_json_run.returncode == 65
    assert as_json(as_json_run)["error"]["kind"] == "input"


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--tls-key", "key.pem"], "--tls-key goes with --tls-cert"),
        (["--tls-cert", "cert.pem", "--tls", "none"], "--tls-cert needs TLS"),
    ],
)
def test_client_certificate_usage_errors_are_64(extra: list[str], says: str) -> None:
    for command in (["send", "--from", "a@x.test", "--to", "b@x.test", "--body", "x"], ["probe"]):
        run = smtpbee(command[0], "--server", "127.0.0.1:9", *command[1:], *extra)
        assert run.returncode == 64, run.stderr
        [line] = run.stderr.splitlines()
        assert says in line
