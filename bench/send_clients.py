"""The clients the sending benchmarks compare, each behind one signature, and their sinks.

``CLIENTS[name](port, count, recipients, body, chunking)`` sends ``count`` copies of
``body`` from ``SENDER`` to ``recipients`` on one connection to 127.0.0.1:``port`` and
checks every outcome: an exception, or a recipient refused where the client returns
the refusals rather than raising, ends the benchmark (a refused message is an error,
not a figure). ``body`` is bytes, or a ``Path`` to read the message from: smtpbee and
the minimal clients stream the file, smtplib and aiosmtplib read it whole first (they
take nothing else). ``chunking`` says the server offers CHUNKING: the minimal clients
then use their BDAT variant; smtpbee chooses BDAT by itself, smtplib and aiosmtplib
know only DATA.

``FLOOR[name]`` is the minimal client with the same I/O (blocking, asyncio, trio) that
a client's figure is set beside. ``smtp_sink()`` and ``chunking_sink()`` start the two
servers (Postfix's smtp-sink, and bench_send.py's CHUNKING sink). Nothing here is a
test.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import bench_send
import reference_clients

SENDER = "bench@x.test"
RECIPIENT = "sink@x.test"
SMTP_SINK = "Postfix smtp-sink"
CHUNKING_SINK = "bench_send.py's CHUNKING sink"

Body: TypeAlias = bytes | Path
Runner: TypeAlias = Callable[[int, int, Sequence[str], Body, bool], None]


def message(size: int) -> bytes:
    """A message of exactly ``size`` bytes (at least 100): headers, then 80-byte lines."""
    head = b"From: bench@x.test\r\nTo: sink@x.test\r\nSubject: bench\r\n\r\n"
    line = b"A line of text in a message of the benchmark, as long as most lines are.....\r\n"
    if size < 100:
        raise ValueError("a message of at least 100 bytes")
    lines, pad = divmod(size - len(head) - 2, len(line))
    return head + line * lines + b"x" * pad + b"\r\n"


def recipients(count: int) -> list[str]:
    return [RECIPIENT] if count == 1 else [f"rcpt{number}@x.test" for number in range(count)]


def _refused(result: Any) -> None:
    # smtpbee returns a SendResult when some recipients were refused.
    if result.refused:
        raise AssertionError(f"recipients refused: {result.refused}")


@contextlib.contextmanager
def _bodies(body: Body, count: int) -> Iterator[list[Any]]:
    """``count`` bodies for smtpbee: the bytes, or each an open file."""
    if isinstance(body, bytes):
        yield [body] * count
        return
    with contextlib.ExitStack() as files:
        yield [files.enter_context(body.open("rb")) for _ in range(count)]


def _whole(body: Body) -> bytes:
    return body if isinstance(body, bytes) else body.read_bytes()


# -- smtpbee ----------------------------------------------------------------------------


def smtpbee_sync(port: int, count: int, rcpts: Sequence[str], body: Body, _chunking: bool) -> None:
    from smtpbee.transports.sync import SMTPClient

    with SMTPClient("127.0.0.1", port, tls="none") as client, _bodies(body, count) as bodies:
        for one in bodies:
            _refused(client.sendmail(SENDER, rcpts, one))


def smtpbee_sync_batch(
    port: int, count: int, rcpts: Sequence[str], body: Body, _chunking: bool
) -> None:
    from smtpbee import SMTPError
    from smtpbee.transports.sync import SMTPClient

    with SMTPClient("127.0.0.1", port, tls="none") as client, _bodies(body, count) as bodies:
        results = client.send_batch([(SENDER, rcpts, one) for one in bodies])
    for result in results:
        if isinstance(result, SMTPError):
            raise result
        _refused(result)


def smtpbee_asyncio(
    port: int, count: int, rcpts: Sequence[str], body: Body, _chunking: bool
) -> None:
    from smtpbee.transports.asyncio import AsyncSMTPClient

    async def main() -> None:
        async with AsyncSMTPClient("127.0.0.1", port, tls="none") as client:
            with _bodies(body, count) as bodies:
                for one in bodies:
                    _refused(await client.sendmail(SENDER, rcpts, one))

    asyncio.run(main())


def smtpbee_trio(port: int, count: int, rcpts: Sequence[str], body: Body, _chunking: bool) -> None:
    import trio
    from smtpbee.transports.trio import TrioSMTPClient

    async def main() -> None:
        async with TrioSMTPClient("127.0.0.1", port, tls="none") as client:
            with _bodies(body, count) as bodies:
                for one in bodies:
                    _refused(await client.sendmail(SENDER, rcpts, one))

    trio.run(main)


# -- the peers --------------------------------------------------------------------------


def stdlib_smtplib(
    port: int, count: int, rcpts: Sequence[str], body: Body, _chunking: bool
) -> None:
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, local_hostname="localhost") as client:
        for _ in range(count):
            # Raises when every recipient is refused, returns the refused ones otherwise.
            refused = client.sendmail(SENDER, list(rcpts), _whole(body))
            if refused:
                raise AssertionError(f"recipients refused: {refused}")


def aiosmtplib_client(
    port: int, count: int, rcpts: Sequence[str], body: Body, _chunking: bool
) -> None:
    import aiosmtplib

    async def main() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        async with client:
            for _ in range(count):
                refused, _reply = await client.sendmail(SENDER, list(rcpts), _whole(body))
                if refused:
                    raise AssertionError(f"recipients refused: {refused}")

    asyncio.run(main())


# -- the minimal clients ----------------------------------------------------------------


@contextlib.contextmanager
def _messages(
    rcpts: Sequence[str], body: Body, count: int
) -> Iterator[Iterator[reference_clients.Message]]:
    if isinstance(body, bytes):
        yield itertools.repeat((SENDER, rcpts, body), count)
        return
    with _bodies(body, count) as files:
        yield ((SENDER, rcpts, one) for one in files)


def _sent(sent: int, count: int) -> None:
    if sent != count:
        raise AssertionError(f"{sent} of {count} messages sent")


def minimal_blocking(
    port: int, count: int, rcpts: Sequence[str], body: Body, chunking: bool
) -> None:
    with _messages(rcpts, body, count) as messages:
        _sent(reference_clients.send_blocking(port, messages, chunking=chunking), count)


def minimal_asyncio(
    port: int, count: int, rcpts: Sequence[str], body: Body, chunking: bool
) -> None:
    with _messages(rcpts, body, count) as messages:
        send = reference_clients.send_asyncio(port, messages, chunking=chunking)
        _sent(asyncio.run(send), count)


def minimal_trio(port: int, count: int, rcpts: Sequence[str], body: Body, chunking: bool) -> None:
    import trio

    with _messages(rcpts, body, count) as messages:
        send = functools.partial(reference_clients.send_trio, port, messages, chunking=chunking)
        _sent(trio.run(send), count)


CLIENTS: dict[str, Runner] = {
    "smtpbee sync": smtpbee_sync,
    "smtpbee sync batch": smtpbee_sync_batch,
    "smtpbee asyncio": smtpbee_asyncio,
    "smtpbee trio": smtpbee_trio,
    "smtplib": stdlib_smtplib,
    "aiosmtplib": aiosmtplib_client,
    "minimal blocking": minimal_blocking,
    "minimal asyncio": minimal_asyncio,
    "minimal trio": minimal_trio,
}
FLOOR: dict[str, str] = {
    "smtpbee sync": "minimal blocking",
    "smtpbee sync batch": "minimal blocking",
    "smtpbee asyncio": "minimal asyncio",
    "smtpbee trio": "minimal trio",
    "smtplib": "minimal blocking",
    "aiosmtplib": "minimal asyncio",
    "minimal blocking": "minimal blocking",
    "minimal asyncio": "minimal asyncio",
    "minimal trio": "minimal trio",
}
DATA_ONLY = frozenset({"smtplib", "aiosmtplib"})
"""Clients that send DATA even where the server offers CHUNKING."""


# -- the sinks --------------------------------------------------------------------------


def postfix_tool(name: str) -> str | None:
    """Postfix's tools live in /usr/sbin, often not on an ordinary user's PATH."""
    found = shutil.which(name) or f"/usr/sbin/{name}"
    return found if os.access(found, os.X_OK) else None


@contextlib.contextmanager
def smtp_sink(backlog: int = 1024) -> Iterator[int | None]:
    """Postfix's smtp-sink on a free loopback port (None when it is not installed)."""
    program = postfix_tool("smtp-sink")
    if program is None:
        yield None
        return
    port = bench_send.free_port()
    # smtp-sink refuses to run as root without a user to drop to.
    as_user = ["-u", "nobody"] if os.geteuid() == 0 else []
    command = [program, *as_user, "-c", f"127.0.0.1:{port}", str(backlog)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        bench_send._wait_for(port)
        yield port
    finally:
        process.terminate()
        process.wait(5)


chunking_sink = bench_send.chunking_sink
