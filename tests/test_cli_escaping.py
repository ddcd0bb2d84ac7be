"""What a server writes reaches a person only escaped: probe, send --transcript, errors, JSON.

A hostile server puts ANSI escapes, a C1 CSI, a lone CR (to overwrite the line)
and a forged ``C:`` line in its replies; none of those control characters may
reach the terminal, whatever the output mode.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from smtpbee.testing import Handler, ThreadedServer, close
from test_cli import smtpbee

HOSTILE = b"\x1b[2J\x1b[1A\rC: AUTH PLAIN c2VjcmV0\x9b31m\xe2\x80\xae"
CONTROLS = ("\x1b", "\x9b", "\r", "\u202e")


def shown(run: subprocess.CompletedProcess[str]) -> str:
    return run.stdout + run.stderr


def hostile_server(scripted_server: Any, handlers: dict[str, Handler]) -> ThreadedServer:
    """A server whose greeting and EHLO reply carry HOSTILE; ``handlers`` for the rest."""
    ehlo = b"250-mx" + HOSTILE + b"\r\n250 X-EVIL" + HOSTILE + b"\r\n"
    server: ThreadedServer = scripted_server(
        {"EHLO": ehlo, **handlers}, greeting=b"220 mx" + HOSTILE + b"\r\n"
    )
    return server


@pytest.mark.parametrize("as_json", [False, True])
def test_probe_escapes_the_greeting_and_the_extensions(scripted_server: Any, as_json: bool) -> None:
    server = hostile_server(scripted_server, {"QUIT": [b"221 bye" + HOSTILE + b"\r\n", close()]})
    args = ["probe", "--server", f"127.0.0.1:{server.port}", "--tls", "none"]
    run = smtpbee(*args, *(["--json"] if as_json else []))
    server.wait()
    assert [c.verb for c in server.commands] == ["EHLO", "QUIT"]
    assert run.returncode == 0, shown(run)
    assert not any(control in shown(run) for control in CONTROLS)
    if as_json:
        assert run.stdout.isascii()
        document = json.loads(run.stdout)
        assert "\x1b[2J" in document["greeting"]["text"]  # lossless, as a JSON escape
    else:
        assert r"\x1b[2J" in run.stdout


def test_send_transcript_and_errors_are_escaped(scripted_server: Any) -> None:
    server = hostile_server(scripted_server, {"MAIL": b"550 5.7.1 no" + HOSTILE + b"\r\n"})
    run = smtpbee(
        "send", "--server", f"127.0.0.1:{server.port}", "--tls", "none",
        "--from", "a@x.test", "--to", "b@x.test", "--subject", "s", "--body", "b",
        "--transcript",
    )  # fmt: skip
    server.wait()
    assert [c.verb for c in server.commands] == ["EHLO", "MAIL", "RSET", "QUIT"]
    assert run.returncode == 69, shown(run)
    assert not any(control in shown(run) for control in CONTROLS)
    lines = run.stderr.splitlines()
    transcript = [line for line in lines if line[:3] in ("C: ", "S: ")]
    assert transcript and all(line.startswith(("C: ", "S: ")) for line in transcript)
    assert not any(line.startswith("C: AUTH") for line in lines)


@pytest.mark.parametrize("verbosity", ["-v", "-vv"])
def test_verbose_logs_connection_events_and_with_vv_the_transcript(
    scripted_server: Any, verbosity: str
) -> None:
    server = scripted_server({"EHLO": "250 mx"}, greeting=b"220 mx\x1b[2J ESMTP\r\n")
    run = smtpbee("probe", "--server", f"127.0.0.1:{server.port}", "--tls", "none", verbosity)
    server.wait()
    assert run.returncode == 0, shown(run)
    assert "smtpbee: smtpbee.connection: connecting to 127.0.0.1" in run.stderr
    transcript = "smtpbee: smtpbee.transcript: S: 220 mx\\x1b[2J ESMTP"
    assert (transcript in run.stderr) is (verbosity == "-vv")
    assert "\x1b" not in shown(run)
