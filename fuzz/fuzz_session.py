# fuzz/fuzz_session
#
# Coverage-guided fuzzing of a whole client session: ClientSession.open(),
# login() when AUTH is offered, sendmail() (or send_batch() of two messages)
# and quit(), driven with the fuzz input as everything the server says.
#
# Input layout (read with a FuzzedDataProvider): one byte of options (TLS mode,
# LMTP, which body, the largest read, whether the server speaks unasked), one
# byte seeding the sizes of the reads (its low bit picks send_batch), then the
# server's byte stream. Each Read request gets the next 1..N bytes of that
# stream (N from the options), and b"" (EOF) once it is used up. A Poll (what
# arrived while nothing was asked) gets None, or, when the options say the
# server speaks unasked, now and then the next piece of the stream. Seed files
# are two header bytes followed by a readable server transcript.
#
# Invariants: whatever the server sends, only SMTPError subclasses escape the
# procedures; send_batch settles every message (one SendResult or SMTPError
# each, never None); and a session never asks for more requests than a bound
# (no endless loop on a hostile stream).
"""Atheris harness: a full client session against fuzzed server bytes."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import atheris  # type: ignore[import-untyped]
from _harness import instrumented, main

with instrumented():
    from smtpbee._errors import SMTPError
    from smtpbee._procedures import ClientSession
    from smtpbee._requests import Poll, PullBody, Read, TLSMode, UpgradeTLS, Write
    from smtpbee._transaction import BodyInfo, MailJob, SendResult

__all__ = ["BODIES", "run_session", "test_one_input"]

BODIES = (
    b"Subject: hi\r\n\r\nHello.\r\n",
    b"Subject: dots\n\n.\n..\r\n.\r\nend",
    "Subject: caf\u00e9\r\n\r\n8-bit body\r\n".encode(),
    b"",
)
_TLS_MODES = (TLSMode.NONE, TLSMode.OPPORTUNISTIC, TLSMode.STARTTLS, TLSMode.IMPLICIT)
_READ_SIZES = (1, 7, 64, 4096)
# A session sends a handful of commands; far more requests than this means a loop.
_MAX_REQUESTS = 10_000


def _reads(stream: bytes, rng: random.Random, largest: int) -> Iterator[bytes]:
    position = 0
    while position < len(stream):
        size = rng.randint(1, largest)
        yield stream[position : position + size]
        position += size


class _Wire:
    """The server's side as a transport sees it: reads, polls, and the bodies to pull."""

    def __init__(self, reads: Iterator[bytes], rng: random.Random, *, unasked: bool) -> None:
        self.reads = reads
        self.rng = rng
        self.unasked = unasked
        self.pieces: Iterator[bytes] = iter(())

    def bodies(self, body: bytes, count: int) -> None:
        """The pieces PullBody hands over: each body in two halves, then b"" to end it."""
        halves = [p for p in (body[: len(body) // 2], body[len(body) // 2 :]) if p]
        self.pieces = iter([*halves, b""] * count)

    def poll(self) -> bytes | None:
        # A server that speaks unasked has its next bytes waiting now and then.
        if self.unasked and self.rng.random() < 0.125:
            return next(self.reads, b"")
        return None


def _serve(proc: Any, wire: _Wire) -> Any:
    """Serve a procedure's requests as a transport would, with no real I/O."""
    result: Any = None
    for _ in range(_MAX_REQUESTS):
        try:
            request = proc.send(result)
        except StopIteration as stop:
            return stop.value
        result = None
        if isinstance(request, Read):
            result = next(wire.reads, b"")
        elif isinstance(request, Poll):
            result = wire.poll()
        elif isinstance(request, UpgradeTLS):
            result = True
        elif isinstance(request, PullBody):
            result = next(wire.pieces, b"")
        else:
            assert isinstance(request, Write), request
    raise AssertionError(f"the procedure made more than {_MAX_REQUESTS} requests")


def run_session(options: int, read_seed: int, stream: bytes) -> None:
    """One session; raises only SMTPError (or AssertionError for a broken invariant)."""
    session = ClientSession(
        local_hostname="client.test",
        tls=_TLS_MODES[options & 3],
        lmtp=bool(options & 4),
    )
    body = BODIES[(options >> 3) & 3]
    rng = random.Random(read_seed)
    reads = _reads(stream, rng, _READ_SIZES[(options >> 5) & 3])
    wire = _Wire(reads, rng, unasked=bool(options & 0x80))
    _serve(session.open(), wire)
    if session.conn.extensions.auth_mechanisms:
        _serve(session.login("user", "secret", allow_insecure=True), wire)
    info = BodyInfo.of_bytes(body)
    if read_seed & 1:
        jobs = [
            MailJob(sender="a@fuzz.test", recipients=["b@fuzz.test", "c@fuzz.test"], body=info),
            MailJob(sender="a@fuzz.test", recipients=["d@fuzz.test"], body=info),
        ]
        wire.bodies(body, len(jobs))
        results = _serve(session.send_batch(jobs), wire)
        # Every message is settled, each on its own.
        assert len(results) == len(jobs), results
        assert all(isinstance(r, SendResult | SMTPError) for r in results), results
    else:
        wire.bodies(body, 1)
        _serve(
            session.sendmail("a@fuzz.test", ["b@fuzz.test", "c@fuzz.test"], body=info),
            wire,
        )
    _serve(session.quit(), wire)


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    options = provider.ConsumeInt(1) & 0xFF
    read_seed = provider.ConsumeInt(1) & 0xFF
    stream = provider.ConsumeBytes(provider.remaining_bytes())
    with contextlib.suppress(SMTPError):
        run_session(options, read_seed, stream)


if __name__ == "__main__":
    main(test_one_input)
