"""The runnable examples keep working: each is run as a newcomer would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_the_sans_io_session_example_runs_a_whole_session() -> None:
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "sans_io_session.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = run.stdout.splitlines()
    assert lines[0] == "[state GREETING]"
    assert "C: RCPT TO:<nobody@example.test>" in lines
    assert "C: ..a line starting with a dot gets stuffed" in lines
    assert "  -> 'RCPT TO:<bob@example.test>' got 250 2.1.5 Recipient ok (accepted)" in lines
    assert (
        "  -> 'RCPT TO:<nobody@example.test>' got 550 5.1.1 No such user here"
        " (refused: permanent refusal)"
    ) in lines
    assert (
        "  -> 'DATA' got 354 End data with <CR><LF>.<CR><LF>: the server asks for the content"
    ) in lines
    assert "[state DATA; accepted ('bob@example.test',)]" in lines
    assert "[the message was accepted]" in lines
    assert lines[-1] == "[state CLOSED]"
