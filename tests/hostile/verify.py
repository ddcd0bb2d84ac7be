"""Check a `Run` against its case: the outcome, and the bytes the client must never write.

`verify` raises AssertionError naming what differs; `forbidden_hits` is the
part that needs only the server's transcript, which bench/hostile_compare.py
also applies to other libraries.
"""

from __future__ import annotations

import re

from smtpbee import LocalProtocolError
from smtpbee.testing import Transcript

from .model import Case, Forbidden
from .runners import PROBE, Run

__all__ = ["ALWAYS_FORBIDDEN", "forbidden_hits", "same_across_feeds", "verify"]

ALWAYS_FORBIDDEN = (
    Forbidden(
        PROBE.encode(),
        "the probe sent after the session ended must be refused before a byte is written",
    ),
    Forbidden(
        re.compile(rb"(?<!\r)\n"),
        "a bare LF: RFC 5321 §2.3.8 forbids it (and it is half of every smuggling sequence)",
        scope="parsed",
    ),
    Forbidden(
        re.compile(rb"\r(?!\n)"),
        "a bare CR: RFC 5321 §2.3.8 forbids it",
        scope="parsed",
    ),
)
"""What no client may write in any case."""


def forbidden_hits(
    case: Case,
    transcript: Transcript,
    unparsed: bytes = b"",
    written: bytes | None = None,
    *,
    always: bool = True,
) -> list[Forbidden]:
    """The case's forbidden patterns (and ALWAYS_FORBIDDEN) found in what the client wrote.

    ``unparsed`` is what the server recorded without reading it as commands
    (a suffix of its transcript); ``written`` is the driver's record of every write.
    """
    everything = transcript.client()
    parsed = everything[: len(everything) - len(unparsed)]
    plaintext = b"".join(e.data for e in transcript if e.direction == "C" and not e.tls)
    scopes = {"all": [everything], "plaintext": [plaintext], "parsed": [parsed]}
    if written is not None:
        scopes["all"].append(written)
    patterns = (*case.forbidden, *(ALWAYS_FORBIDDEN if always else ()))
    return [p for p in patterns if any(p.found_in(data) for data in scopes[p.scope])]


def _expected_errors(case: Case, runner: str) -> tuple[type[BaseException] | None, ...]:
    """The classes a runner may raise: a split feed gives split_error (a random one either)."""
    expect = case.expect
    if expect.split_error is not None:
        if runner == "driver-bytes":
            return (expect.split_error,)
        if runner == "driver-random":
            return (expect.error, expect.split_error)
    return (expect.error,)


def verify(case: Case, run: Run) -> None:
    """Raise AssertionError if ``run`` is not what ``case`` expects."""
    expect = case.expect
    wanted = _expected_errors(case, run.runner)
    error = run.error
    context = f"{case.id} on {run.runner}: "
    if wanted == (None,):
        if error is not None:
            raise AssertionError(
                f"{context}expected success, got {type(error).__name__}: {error}"
            ) from error
    else:
        if type(error) not in wanted:
            got = "success" if error is None else f"{type(error).__name__}: {error}"
            names = " or ".join(w.__name__ for w in wanted if w is not None)
            raise AssertionError(f"{context}expected {names}, got {got}") from error
        assert error is not None
        if expect.cause is not None and type(error.__cause__) is not expect.cause:
            raise AssertionError(
                f"{context}expected a cause of {expect.cause.__name__},"
                f" got {type(error.__cause__).__name__}: {error.__cause__}"
            )
        if expect.match is not None and not re.search(expect.match, str(error)):
            raise AssertionError(f"{context}{str(error)!r} does not match {expect.match!r}")
    if expect.batch:
        assert isinstance(run.result, list), f"{context}send_batch returned {run.result!r}"
        got_batch = tuple(type(item).__name__ for item in run.result)
        assert got_batch == expect.batch, f"{context}batch outcomes {got_batch} != {expect.batch}"
    usable = expect.session_usable()
    assert run.usable is usable, f"{context}usable is {run.usable}, expected {usable}"
    if not usable:
        assert isinstance(run.probe, LocalProtocolError), (
            f"{context}a command after the session ended raised {run.probe!r},"
            " not LocalProtocolError"
        )
    if expect.delivered is not None:
        assert len(run.messages) == expect.delivered, (
            f"{context}{len(run.messages)} message(s) delivered, expected {expect.delivered}"
        )
    if expect.content is not None:
        assert run.messages, f"{context}no message was delivered"
        assert run.messages[0].content == expect.content, (
            f"{context}the server stored {run.messages[0].content[:200]!r},"
            f" expected {expect.content[:200]!r}"
        )
    hits = forbidden_hits(case, run.transcript, run.unparsed, run.written)
    if hits:
        listed = "; ".join(hit.describe() for hit in hits)
        tail = run.client_bytes[-300:]
        raise AssertionError(f"{context}the client wrote forbidden bytes: {listed}; ...{tail!r}")
    for pattern in expect.required:
        data = run.client_bytes
        found = pattern in data if isinstance(pattern, bytes) else pattern.search(data)
        assert found, f"{context}the client never wrote {pattern!r}"
    if expect.check is not None:
        expect.check(run)


def same_across_feeds(case: Case, runs: dict[str, Run]) -> None:
    """The driver's three feeds: the same outcome (but a documented split_error) and bytes."""
    whole = runs["driver-whole"]
    for feed, other in runs.items():
        if feed == "driver-whole":
            continue
        kinds = {type(whole.error), type(other.error)}
        if case.expect.split_error is None:
            assert type(other.error) is type(whole.error), (
                f"{case.id}: {feed} raised {other.error!r}, driver-whole {whole.error!r}"
            )
        else:
            assert kinds <= {case.expect.error, case.expect.split_error}, kinds
        assert other.written == whole.written, (
            f"{case.id}: the client wrote differently on {feed}:"
            f" {other.written!r} != {whole.written!r}"
        )
        assert other.usable is whole.usable, f"{case.id}: usable differs on {feed}"
