"""Logging: connection events at INFO, the transcript at DEBUG, escaped; nothing by default."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from smtpbee.testing import ThreadedServer
from smtpbee.transports.sync import SMTPClient


def session(scripted_server: Any) -> ThreadedServer:
    """A server that greets with an ANSI escape, offers nothing, and says bye to QUIT."""
    server: ThreadedServer = scripted_server(
        {"EHLO": "250 mx"}, greeting=b"220 mx\x1b[2J ESMTP\r\n"
    )
    return server


def test_the_library_only_adds_a_null_handler() -> None:
    handlers = logging.getLogger("smtpbee").handlers
    assert [type(h) for h in handlers] == [logging.NullHandler]


def test_info_logs_connection_events_and_debug_the_escaped_transcript(
    scripted_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = session(scripted_server)
    with (
        caplog.at_level(logging.DEBUG, logger="smtpbee"),
        SMTPClient(server.host, server.port, tls="none", timeout=10),
    ):
        pass
    server.wait()
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(m.startswith(f"connecting to {server.host} port {server.port}") for m in info)
    assert any(m.startswith("session open with") and "no TLS" in m for m in info)
    assert "S: 220 mx\\x1b[2J ESMTP" in debug and "C: QUIT" in debug
    assert all("\x1b" not in m for m in info + debug)
    assert {r.name for r in caplog.records} == {"smtpbee.connection", "smtpbee.transcript"}


def test_no_transcript_work_when_debug_is_off(
    scripted_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = session(scripted_server)
    with (
        caplog.at_level(logging.INFO, logger="smtpbee"),
        SMTPClient(server.host, server.port, tls="none", timeout=10) as client,
    ):
        assert client.session.exchange._transcript is None
    server.wait()
    assert not [r for r in caplog.records if r.name == "smtpbee.transcript"]
