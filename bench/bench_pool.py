"""Messages per second over N concurrent connections: smtpbee's pools beside N plain clients.

Run with ``python bench/bench_pool.py [--messages N] [--connections 8,32] [--rounds R]
[--clients a,b] [--json PATH]``. N small messages (1 KB, one recipient) go to Postfix's
smtp-sink on loopback (it serves many connections from one process; its backlog is set
high) over C connections at once:

* smtpbee's ``SMTPPool`` (asyncio, trio, and the blocking one on threads) with
  ``size=C`` and ``send_batch`` of all N messages (``max_messages=None``: each
  connection is kept for the whole batch);
* C plain smtpbee clients (asyncio, trio) in C tasks, each sending its share with
  ``sendmail``;
* aiosmtplib in C tasks, and the minimal asyncio and trio clients of
  reference_clients.py in C tasks (pipelined DATA).

Each figure is the median over R rounds (every client once per round, in turn) of
messages per second (wall clock, opening the connections included) and of this
process's CPU µs per message (``time.process_time``). Every outcome is checked: a
refused message ends the run. Nothing here is a test, and nothing asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import reference_clients
import send_clients
from bench_args import chosen_clients
from send_clients import RECIPIENT, SENDER

MESSAGE_BYTES = 1024
Runner: TypeAlias = Callable[[int, int, int, bytes], None]  # port, connections, count, body


def _shares(count: int, connections: int) -> list[int]:
    share, extra = divmod(count, connections)
    return [share + (1 if index < extra else 0) for index in range(connections)]


def _check(results: Sequence[Any]) -> None:
    from smtpbee import SMTPError

    for result in results:
        if isinstance(result, SMTPError):
            raise result
        if result.refused:
            raise AssertionError(f"recipients refused: {result.refused}")


def smtpbee_asyncio_pool(port: int, connections: int, count: int, body: bytes) -> None:
    from smtpbee.transports.asyncio import SMTPPool

    async def main() -> None:
        pool = SMTPPool("127.0.0.1", port, size=connections, max_messages=None, tls="none")
        async with pool:
            _check(await pool.send_batch([(SENDER, [RECIPIENT], body)] * count))

    asyncio.run(main())


def smtpbee_trio_pool(port: int, connections: int, count: int, body: bytes) -> None:
    import trio
    from smtpbee.transports.trio import SMTPPool

    async def main() -> None:
        pool = SMTPPool("127.0.0.1", port, size=connections, max_messages=None, tls="none")
        async with pool:
            _check(await pool.send_batch([(SENDER, [RECIPIENT], body)] * count))

    trio.run(main)


def smtpbee_sync_pool(port: int, connections: int, count: int, body: bytes) -> None:
    from smtpbee.transports.sync import SMTPPool

    with SMTPPool("127.0.0.1", port, size=connections, max_messages=None, tls="none") as pool:
        _check(pool.send_batch([(SENDER, [RECIPIENT], body)] * count))


async def _asyncio_tasks(
    send: Callable[[int], Coroutine[Any, Any, None]], shares: list[int]
) -> None:
    async with asyncio.TaskGroup() as tasks:
        for share in shares:
            tasks.create_task(send(share))


def smtpbee_asyncio_clients(port: int, connections: int, count: int, body: bytes) -> None:
    from smtpbee.transports.asyncio import AsyncSMTPClient

    async def one(share: int) -> None:
        async with AsyncSMTPClient("127.0.0.1", port, tls="none") as client:
            for _ in range(share):
                _check([await client.sendmail(SENDER, [RECIPIENT], body)])

    asyncio.run(_asyncio_tasks(one, _shares(count, connections)))


def smtpbee_trio_clients(port: int, connections: int, count: int, body: bytes) -> None:
    import trio
    from smtpbee.transports.trio import TrioSMTPClient

    async def one(share: int) -> None:
        async with TrioSMTPClient("127.0.0.1", port, tls="none") as client:
            for _ in range(share):
                _check([await client.sendmail(SENDER, [RECIPIENT], body)])

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for share in _shares(count, connections):
                nursery.start_soon(one, share)

    trio.run(main)


def aiosmtplib_tasks(port: int, connections: int, count: int, body: bytes) -> None:
    import aiosmtplib

    async def one(share: int) -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
            for _ in range(share):
                refused, _reply = await client.sendmail(SENDER, [RECIPIENT], body)
                if refused:
                    raise AssertionError(f"recipients refused: {refused}")

    asyncio.run(_asyncio_tasks(one, _shares(count, connections)))


def minimal_asyncio_tasks(port: int, connections: int, count: int, body: bytes) -> None:
    async def one(share: int) -> None:
        messages = [(SENDER, [RECIPIENT], body)] * share
        if await reference_clients.send_asyncio(port, messages, chunking=False) != share:
            raise AssertionError("not every message was sent")

    asyncio.run(_asyncio_tasks(one, _shares(count, connections)))


def minimal_trio_tasks(port: int, connections: int, count: int, body: bytes) -> None:
    import trio

    async def one(share: int) -> None:
        messages: list[reference_clients.Message] = [(SENDER, [RECIPIENT], body)] * share
        if await reference_clients.send_trio(port, messages, chunking=False) != share:
            raise AssertionError("not every message was sent")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for share in _shares(count, connections):
                nursery.start_soon(one, share)

    trio.run(main)


CLIENTS: dict[str, Runner] = {
    "smtpbee asyncio pool": smtpbee_asyncio_pool,
    "smtpbee trio pool": smtpbee_trio_pool,
    "smtpbee sync pool": smtpbee_sync_pool,
    "smtpbee asyncio clients": smtpbee_asyncio_clients,
    "smtpbee trio clients": smtpbee_trio_clients,
    "aiosmtplib": aiosmtplib_tasks,
    "minimal asyncio": minimal_asyncio_tasks,
    "minimal trio": minimal_trio_tasks,
}


def sample(run: Callable[[], None], count: int) -> tuple[float, float]:
    """Messages per second and CPU µs per message of one run."""
    cpu_started, started = time.process_time(), time.perf_counter()
    run()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return count / elapsed, cpu / count * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--connections", default="8,32", help="comma-separated counts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", help=f"comma-separated, of: {', '.join(CLIENTS)}")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    names = chosen_clients(parser, args.clients, CLIENTS)
    widths = [int(count) for count in args.connections.split(",")]
    body = send_clients.message(MESSAGE_BYTES)
    samples: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with send_clients.smtp_sink(backlog=4096) as port:
        if port is None:
            raise SystemExit("bench_pool.py needs Postfix's smtp-sink")
        for name in names:  # imports and first calls
            CLIENTS[name](port, 2, 20, body)
        for _ in range(args.rounds):
            for width in widths:
                for name in names:
                    run = functools.partial(CLIENTS[name], port, width, args.messages, body)
                    samples.setdefault((name, width), []).append(sample(run, args.messages))
    rows = []
    for name in names:
        row: dict[str, Any] = {"client": name}
        for width in widths:
            found = samples[name, width]
            row[str(width)] = {
                "msgs_per_s": statistics.median(rate for rate, _ in found),
                "cpu_us": statistics.median(cpu for _, cpu in found),
            }
        rows.append(row)
    figures = {
        "messages": args.messages,
        "message_bytes": MESSAGE_BYTES,
        "connections": widths,
        "rounds": args.rounds,
        "rows": rows,
    }
    print(
        f"{args.messages} messages of {MESSAGE_BYTES} bytes over C connections to smtp-sink,"
        f" median of {args.rounds} rounds (msg/s, CPU µs per message)"
    )
    print(f"{'':25}" + "".join(f"{f'{width} connections':>18}" for width in widths))
    print(f"{'client':25}" + "    msg/s  µs/msg" * len(widths))
    for row in rows:
        cells = "".join(
            f"{row[str(width)]['msgs_per_s']:9,.0f}{row[str(width)]['cpu_us']:9,.0f}"
            for width in widths
        )
        print(f"{row['client']:25}{cells}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
