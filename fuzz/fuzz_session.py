# fuzz/fuzz_session
#
# Coverage-guided fuzzing of a whole client session: ClientSession.open(),
# login() when AUTH is offered, send_mail() and quit(), driven with the fuzz
# input as everything the server says.
#
# Input layout (read with a FuzzedDataProvider): one byte of options (TLS mode,
# LMTP, which body), one byte seeding the sizes of the reads, then the server's
# byte stream. Each Read request gets the next 1..N bytes of that stream
# (N from the options), and b"" (EOF) once it is used up. Seed files are two
# header bytes followed by a readable server transcript.
#
# Invariant: whatever the server sends, only SMTPError subclasses escape the
# procedures, and a session never asks for more requests than a bound (no
# endless loop on a hostile stream).
"""Atheris harness: a full client session against fuzzed server bytes."""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Iterator
from typing import Any

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports():
    from smtpbee._errors import SMTPError
    from smtpbee._procedures import ClientSession
    from smtpbee._requests import PullBody, Read, TLSMode, UpgradeTLS, Write
    from smtpbee._transaction import BodyInfo

__all__ = ["BODIES", "main", "run_session", "test_one_input"]

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


def _serve(proc: Any, reads: Iterator[bytes], body: bytes) -> Any:
    """Serve a procedure's requests as a transport would, with no real I/O."""
    pieces = iter([body[: len(body) // 2], body[len(body) // 2 :]])
    result: Any = None
    for _ in range(_MAX_REQUESTS):
        try:
            request = proc.send(result)
        except StopIteration as stop:
            return stop.value
        result = None
        if isinstance(request, Read):
            result = next(reads, b"")
        elif isinstance(request, UpgradeTLS):
            result = True
        elif isinstance(request, PullBody):
            result = next((p for p in pieces if p), b"")
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
    reads = _reads(stream, random.Random(read_seed), _READ_SIZES[(options >> 5) & 3])
    _serve(session.open(), reads, body)
    if session.conn.extensions.auth_mechanisms:
        _serve(session.login("user", "secret", allow_insecure=True), reads, body)
    _serve(
        session.send_mail(
            "a@fuzz.test", ["b@fuzz.test", "c@fuzz.test"], body=BodyInfo.of_bytes(body)
        ),
        reads,
        body,
    )
    _serve(session.quit(), reads, body)


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    options = provider.ConsumeInt(1) & 0xFF
    read_seed = provider.ConsumeInt(1) & 0xFF
    stream = provider.ConsumeBytes(provider.remaining_bytes())
    with contextlib.suppress(SMTPError):
        run_session(options, read_seed, stream)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
