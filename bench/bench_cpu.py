"""Client CPU per message and per recipient on one connection, beside the minimal clients.

Run with ``python bench/bench_cpu.py [--messages N] [--rcpt-messages M] [--rounds R]
[--clients a,b] [--json PATH]``. For each client of send_clients.py (smtpbee's three
transports and its batch, smtplib, aiosmtplib, the minimal pure-Python clients of
reference_clients.py), against Postfix's smtp-sink (DATA: it offers PIPELINING, not
CHUNKING) and against bench_send.py's CHUNKING sink (BDAT; smtplib and aiosmtplib send
DATA there, the only way they know), both on loopback in processes of their own:

* N messages of 1 KB, one recipient, on one connection: the CPU time of this process
  per message (``time.process_time``; the user/system split from ``getrusage``), and
  messages per second;
* M messages of 1 KB to 101 recipients: CPU per message, and per additional recipient
  ``(cpu(101) - cpu(1)) / 100``.

Each figure is the median over R rounds; within a round every client runs once, one
after the other, so a change in the machine's load touches them all. Before the rounds
each client sends a few messages (imports and first calls are not counted). A round
includes connecting, EHLO and QUIT (and, for asyncio and trio, starting the event
loop), spread over its N messages. ``x floor`` is a client's CPU over that of the
minimal client with the same I/O (blocking, asyncio or trio) in the same column.

Postfix's smtp-source (C; lock-step: MAIL, RCPT, DATA and the content wait for a reply
each) is measured the same way against smtp-sink, from ``RUSAGE_CHILDREN``: the cost of
a client in C. Nothing here is a test, and nothing asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import resource
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import send_clients
from bench_args import chosen_clients
from send_clients import CLIENTS, DATA_ONLY, FLOOR

MESSAGE_BYTES = 1024
MANY = 101  # recipients in the second case: 100 more than the first
WARM_UP = 20
SINKS = {"data": send_clients.SMTP_SINK, "bdat": send_clients.CHUNKING_SINK}


def cpu_sample(run: Callable[[], None], count: int) -> dict[str, float]:
    """CPU µs per message of one run (user, system, total), and its messages/second.

    The total is ``time.process_time`` (nanosecond clock); user and system are
    ``getrusage``'s split, which some kernels count in ticks: over a short run they
    may not add up to the total.
    """
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_started = time.process_time()
    started = time.perf_counter()
    run()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "user_us": (after.ru_utime - before.ru_utime) / count * 1e6,
        "sys_us": (after.ru_stime - before.ru_stime) / count * 1e6,
        "cpu_us": cpu / count * 1e6,
        "msgs_per_s": count / elapsed,
    }


def median_sample(samples: Sequence[dict[str, float]]) -> dict[str, float]:
    """The round whose total CPU is the median (its user and system figures with it)."""
    ranked = sorted(samples, key=lambda sample: sample["cpu_us"])
    middle = dict(ranked[len(ranked) // 2])
    middle["msgs_per_s"] = statistics.median(sample["msgs_per_s"] for sample in samples)
    return middle


@contextlib.contextmanager
def sink(kind: str) -> Iterator[int | None]:
    if kind == "data":
        with send_clients.smtp_sink() as port:
            yield port
    else:
        with send_clients.chunking_sink() as port:
            yield port


def measure_sink(
    kind: str, names: Sequence[str], counts: dict[int, int], rounds: int
) -> dict[str, dict[int, dict[str, float]]] | None:
    """Per client, per recipient count, the median sample; None without the sink."""
    body = send_clients.message(MESSAGE_BYTES)
    chunking = kind == "bdat"
    with sink(kind) as port:
        if port is None:
            return None
        for name in names:
            CLIENTS[name](port, WARM_UP, send_clients.recipients(1), body, chunking)
        samples: dict[str, dict[int, list[dict[str, float]]]] = {
            name: {rcpts: [] for rcpts in counts} for name in names
        }
        for _ in range(rounds):
            for rcpts, count in counts.items():
                envelope = send_clients.recipients(rcpts)
                for name in names:
                    run = functools.partial(CLIENTS[name], port, count, envelope, body, chunking)
                    samples[name][rcpts].append(cpu_sample(run, count))
    return {
        name: {rcpts: median_sample(found) for rcpts, found in by_count.items()}
        for name, by_count in samples.items()
    }


def smtp_source(counts: dict[int, int], rounds: int) -> dict[str, Any] | None:
    """CPU per message of Postfix's smtp-source against smtp-sink, per recipient count."""
    program = send_clients.postfix_tool("smtp-source")
    if program is None:
        return None
    figures: dict[str, Any] = {}
    with send_clients.smtp_sink() as port:
        if port is None:
            return None
        for rcpts, count in counts.items():
            # -d: one connection for every message; -r: recipients per message (smtp-source
            # makes their names from -t's); -l: the message's size.
            command = [program, "-c", "-d", "-m", str(count), "-s", "1", "-r", str(rcpts)]
            command += ["-l", str(MESSAGE_BYTES), "-f", send_clients.SENDER]
            command += ["-t", send_clients.RECIPIENT, f"127.0.0.1:{port}"]
            samples = []
            for _ in range(rounds):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                started = time.perf_counter()
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=600)
                elapsed = time.perf_counter() - started
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                user = (after.ru_utime - before.ru_utime) / count * 1e6
                system = (after.ru_stime - before.ru_stime) / count * 1e6
                samples.append(
                    {
                        "user_us": user,
                        "sys_us": system,
                        "cpu_us": user + system,
                        "msgs_per_s": count / elapsed,
                    }
                )
            figures[str(rcpts)] = median_sample(samples)
    return figures


def per_recipient(by_count: dict[int, dict[str, float]]) -> float:
    return (by_count[MANY]["cpu_us"] - by_count[1]["cpu_us"]) / (MANY - 1)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500, help="1-recipient messages")
    parser.add_argument("--rcpt-messages", type=int, default=50, help="101-recipient ones")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", help=f"comma-separated, of: {', '.join(CLIENTS)}")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    names = chosen_clients(parser, args.clients, CLIENTS)
    counts = {1: args.messages, MANY: args.rcpt_messages}
    found = {kind: measure_sink(kind, names, counts, args.rounds) for kind in SINKS}
    source = smtp_source(counts, args.rounds)
    rows = []
    for name in names:
        row: dict[str, Any] = {"client": name, "floor": FLOOR[name], "data_only": name in DATA_ONLY}
        for kind, measured in found.items():
            if measured is None:
                row[kind] = None
                continue
            by_count = measured[name]
            floor = measured.get(FLOOR[name])
            row[kind] = {
                "rcpt1": by_count[1],
                "rcpt101": by_count[MANY],
                "us_per_extra_rcpt": per_recipient(by_count),
                "x_floor": None if floor is None else by_count[1]["cpu_us"] / floor[1]["cpu_us"],
            }
        rows.append(row)
    figures: dict[str, Any] = {
        "messages": args.messages,
        "rcpt_messages": args.rcpt_messages,
        "recipients": MANY,
        "rounds": args.rounds,
        "message_bytes": MESSAGE_BYTES,
        "sinks": SINKS,
        "rows": rows,
        "smtp_source": None,
    }
    if source is not None:
        figures["smtp_source"] = {
            "rcpt1": source["1"],
            "rcpt101": source[str(MANY)],
            "us_per_extra_rcpt": (source[str(MANY)]["cpu_us"] - source["1"]["cpu_us"]) / (MANY - 1),
        }
    print_tables(figures)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def _cells(case: dict[str, Any] | None, *keys: str) -> list[float | None]:
    return [None if case is None else case.get(key) for key in keys]


def print_tables(figures: dict[str, Any]) -> None:
    def cell(figure: float | None, width: int, digits: int = 0) -> str:
        return f"{'-':>{width}}" if figure is None else f"{figure:{width},.{digits}f}"

    print(
        f"\nclient CPU per {figures['message_bytes']}-byte message, one connection, median of"
        f" {figures['rounds']} rounds of {figures['messages']} (µs user / sys / total)"
    )
    columns = "   user    sys  total x floor   msg/s"
    print(f"{'':20}{'smtp-sink (DATA)':^38}  {'CHUNKING sink (BDAT)':^38}")
    print(f"{'client':20}{columns}  {columns}")
    source = figures["smtp_source"]
    lines = [(row["client"] + (" *" if row["data_only"] else ""), row) for row in figures["rows"]]
    for label, row in lines:
        text = f"{label:20}"
        for kind in SINKS:
            case = row[kind]
            one = None if case is None else case["rcpt1"]
            user, system, total, rate = _cells(one, "user_us", "sys_us", "cpu_us", "msgs_per_s")
            ratio = None if case is None else case["x_floor"]
            text += f"{cell(user, 7)}{cell(system, 7)}{cell(total, 7)}{cell(ratio, 8, 2)}"
            text += f"{cell(rate, 8)}  "
        print(text.rstrip())
    if source is not None:
        one = source["rcpt1"]
        print(
            f"{'smtp-source (C)':20}{cell(one['user_us'], 7)}{cell(one['sys_us'], 7)}"
            f"{cell(one['cpu_us'], 7)}{'-':>8}{cell(one['msgs_per_s'], 8)}"
        )
    print("* sends DATA to the CHUNKING sink too")
    print(
        f"\nCPU per recipient: {figures['rcpt_messages']} messages to {figures['recipients']}"
        " recipients; per extra recipient = (cpu(101) - cpu(1)) / 100, µs"
    )
    columns = "  µs/msg  msg/s  µs/rcpt"
    print(f"{'':20}{'smtp-sink (DATA)':^25}  {'CHUNKING sink (BDAT)':^25}")
    print(f"{'client':20}{columns}  {columns}")
    for label, row in lines:
        text = f"{label:20}"
        for kind in SINKS:
            case = row[kind]
            many = None if case is None else case["rcpt101"]
            total, rate = _cells(many, "cpu_us", "msgs_per_s")
            extra = None if case is None else case["us_per_extra_rcpt"]
            text += f"{cell(total, 8)}{cell(rate, 7)}{cell(extra, 9, 2)}  "
        print(text.rstrip())
    if source is not None:
        many = source["rcpt101"]
        print(
            f"{'smtp-source (C)':20}{cell(many['cpu_us'], 8)}{cell(many['msgs_per_s'], 7)}"
            f"{cell(source['us_per_extra_rcpt'], 9, 2)}"
        )


if __name__ == "__main__":
    main()
