"""`smtpbee tour` end to end, and its teaching server on its own."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from smtpbee.cli._tour import MESSAGE
from smtpbee.cli._tour_server import DOMAIN, TourServer


def run_tour(*args: str, tmpdir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m smtpbee tour ARGS``, with TMPDIR set to ``tmpdir`` if given."""
    env = dict(os.environ)
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run(
        [sys.executable, "-m", "smtpbee", "tour", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


def written_path(out: str) -> Path:
    """The file the tour says the server wrote."""
    match = re.search(r"^  (/\S+\.eml)$", out, re.MULTILINE)
    assert match is not None, out
    return Path(match.group(1))


def test_the_tour_runs_and_its_message_arrives(tmp_path: Path) -> None:
    started = time.monotonic()
    kept = tmp_path / "kept" / "here"
    run = run_tour("--keep", str(kept))
    assert run.returncode == 0, run.stderr
    assert time.monotonic() - started < 5
    out = run.stdout
    # Every step of the session, in order, with its state.
    expected = [
        "S: 220-tour.smtpbee.test ESMTP",
        "S: 220 Hello",
        "[state CONNECTED: greeted",
        "C: EHLO client.smtpbee.test",
        "S: 250-8BITMIME",
        "S: 250 HELP",
        "[state READY: introduced",
        "C: MAIL FROM:<you@client.smtpbee.test> SIZE=",
        "[state MAIL:",
        "C: RCPT TO:<alice@tour.smtpbee.test>",
        "S: 250 2.1.5",
        "[state RCPT:",
        "S: 251 2.1.5 User not local; will forward",
        "S: 550 5.1.1 <nobody@tour.smtpbee.test>",
        "C: DATA",
        "S: 354 ",
        "[state DATA:",
        "      | .\n",
        "C: .\n",
        "S: 250 2.0.0 Ok: queued as ",
        "      | ..  <- dot-stuffed",
        "      | .  <- the end of the content",
        "C: QUIT",
        "S: 221 ",
        "[state CLOSING:",
    ]
    position = 0
    for fragment in expected:
        found = out.find(fragment, position)
        assert found >= 0, f"{fragment!r} missing after position {position}"
        position = found
    assert "PIPELINING" in out  # explained as deliberately absent
    # --keep DIR: the message is kept where asked (DIR created), and the tour says nothing
    # about removing it.
    path = written_path(out)
    assert path.parent == kept.resolve()
    assert list(kept.iterdir()) == [path]
    assert path.read_bytes() == MESSAGE.replace(b"\n", b"\r\n")
    queue_id = re.search(r"queued as (\w+)", out)
    assert queue_id is not None and path.stem == queue_id.group(1)
    assert "removed when the tour ends" not in out


def test_the_tour_leaves_nothing_behind(tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    run = run_tour(tmpdir=tmpdir)
    assert run.returncode == 0, run.stderr
    # It wrote the message in a temporary directory (under TMPDIR), said so, and removed it.
    path = written_path(run.stdout)
    assert path.parent.parent == tmpdir
    assert path.parent.name.startswith("smtpbee-tour-")
    assert "removed when the tour ends" in " ".join(run.stdout.split())
    assert "Its content, dot-stuffing undone" in run.stdout
    assert list(tmpdir.iterdir()) == []


def test_keep_into_a_directory_that_cannot_be_made_is_65(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    run = run_tour("--keep", str(blocker / "sub"), tmpdir=tmp_path)
    assert run.returncode == 65
    assert run.stdout == ""
    assert run.stderr.startswith("smtpbee: error: --keep ")
    assert len(run.stderr.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def talk(port: int, lines: list[bytes]) -> bytes:
    """Send each line, reading one reply after each; return everything received."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        reader = sock.makefile("rb")

        def reply() -> bytes:
            text = b""
            while True:
                line = reader.readline()
                text += line
                if len(line) < 4 or line[3:4] != b"-":
                    return text

        received += reply()
        for line in lines:
            sock.sendall(line)
            received += reply()
    return received


def test_the_tour_server_speaks_enough_smtp(tmp_path: Path) -> None:
    with TourServer(tmp_path) as server:
        assert server.server_address[0] == "127.0.0.1"
        transcript = talk(
            server.port,
            [
                b"HELO me\r\n",
                b"RCPT TO:<alice@tour.smtpbee.test>\r\n",
                b"MAIL FROM:bad\r\n",
                b"DATA\r\n",
                b"MAIL FROM:<a@b.test>\r\n",
                b"RCPT TO:bad\r\n",
                b"DATA\r\n",
                b"RSET\r\n",
                b"NOOP\r\n",
                b"HELP\r\n",
                b"VRFY alice\r\n",
                b"QUIT\r\n",
            ],
        )
        too_long = talk(server.port, [b"NOOP " + b"x" * 2000 + b"\r\n"])
    replies = [line[:4] for line in transcript.split(b"\r\n") if line]
    assert replies == [
        b"220-",
        b"220 ",
        b"250 ",
        b"503 ",  # RCPT before MAIL
        b"501 ",
        b"503 ",  # DATA before MAIL
        b"250 ",
        b"501 ",
        b"554 ",  # DATA without a valid recipient
        b"250 ",
        b"250 ",
        b"214-",
        b"214 ",
        b"252 ",  # VRFY: no answer, but mail would be tried
        b"221 ",
    ]
    assert f"250 {DOMAIN}".encode() in transcript
    assert b"500 5.5.2 Line too long" in too_long
    assert server.deliveries == []


def test_the_tour_server_refuses_an_oversized_message(tmp_path: Path) -> None:
    with TourServer(tmp_path) as server:
        envelope = [b"EHLO me\r\n", b"MAIL FROM:<a@b.test>\r\n", b"RCPT TO:<postmaster@" +
                    DOMAIN.encode() + b">\r\n", b"DATA\r\n"]  # fmt: skip
        line = b"x" * 998 + b"\r\n"
        body = line * 1100 + b".\r\n"
        transcript = talk(server.port, [*envelope, body])
    assert b"552 5.3.4 Message too big" in transcript
    assert server.deliveries == []
    assert list(tmp_path.iterdir()) == []
