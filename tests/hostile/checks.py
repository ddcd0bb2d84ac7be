"""Checks on a run that a case can ask for besides its outcome (Expect.check)."""

from __future__ import annotations

import base64
import re
import traceback
from collections.abc import Callable

from .runners import Run

__all__ = [
    "all_of",
    "bdat_counts_exact",
    "commands_count",
    "driver_clock",
    "encrypted_after_starttls",
    "escaped",
    "secrets_absent",
    "sni_sent",
]

Check = Callable[[Run], None]


def all_of(*checks: Check) -> Check:
    def check(run: Run) -> None:
        for each in checks:
            each(run)

    return check


def driver_clock(seconds: float) -> Check:
    """On the driver's virtual clock, the run ended exactly when the phase's deadline passed."""

    def check(run: Run) -> None:
        if run.clock is not None:
            assert abs(run.clock - seconds) < 1e-9, (
                f"the driver's clock is at {run.clock}, expected the deadline {seconds}"
            )

    return check


def commands_count(verb: str, count: int, *, at_most: bool = False) -> Check:
    """The server read ``verb`` exactly (or at most) ``count`` times."""

    def check(run: Run) -> None:
        got = sum(
            1 for command in run.commands if command.verb == verb and not command.continuation
        )
        if at_most:
            assert got <= count, f"{verb} was read {got} times, at most {count} expected"
        else:
            assert got == count, f"{verb} was read {got} times, {count} expected"

    return check


def bdat_counts_exact(run: Run) -> None:
    """Every BDAT announced exactly the octets that followed it (RFC 3030 §2)."""
    chunks = [command for command in run.commands if command.verb == "BDAT"]
    assert chunks, "no BDAT was sent"
    for command in chunks:
        declared = int(command.argument.split()[0])
        assert declared == len(command.data), f"BDAT {declared} carried {len(command.data)} octets"


_RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x9b]")


def escaped(run: Run) -> None:
    """No raw control character of the server's reaches an error, a transcript or the log."""
    texts = [*run.lines, *run.log]
    if run.error is not None:
        texts += [str(run.error), repr(run.error)]
    for text in texts:
        assert not _RAW_CONTROL.search(text), f"a raw control character is shown: {text!r}"


def secrets_absent(password: str, username: str = "user") -> Check:
    """The password (and the PLAIN/LOGIN encodings of it) are in no message, repr, traceback or log.

    It must have gone to the server, though (under TLS): otherwise the check proves nothing.
    """
    forms = {
        password,
        base64.b64encode(password.encode()).decode(),
        base64.b64encode(f"\0{username}\0{password}".encode()).decode(),
    }

    def check(run: Run) -> None:
        assert any(form.encode() in run.client_bytes for form in forms), (
            "the credentials never reached the server: the check would prove nothing"
        )
        texts = [*run.lines, *run.log]
        error = run.error
        if error is not None:
            texts += [str(error), repr(error), "".join(traceback.format_exception(error))]
            texts += [repr(vars(error))]
        for text in texts:
            for form in forms:
                assert form not in text, f"a secret shows in {text[:200]!r}"

    return check


def sni_sent(name: str) -> Check:
    """The client named the server in its ClientHello (sockets only: the driver has no TLS)."""

    def check(run: Run) -> None:
        if run.sni is not None:
            assert run.sni == [name], f"the handshake asked for {run.sni}, expected [{name!r}]"

    return check


def encrypted_after_starttls(run: Run) -> None:
    """Everything the client wrote after its STARTTLS went under TLS."""
    seen = False
    for entry in run.transcript:
        if entry.direction != "C":
            continue
        if seen:
            assert entry.tls, f"written in plaintext after STARTTLS: {entry.data[:80]!r}"
        seen = seen or entry.data == b"STARTTLS\r\n"
    assert seen, "STARTTLS was never sent"
