"""Sending mail on one connection: smtpbee's transports beside smtplib, aiosmtplib, smtpproto.

Run with ``python bench/bench_send.py [--messages N] [--big-mb M]``. Against a local
sink (Postfix's smtp-sink when installed, else aiosmtpd in a subprocess), loopback
only, it prints for each client:

* messages/second for N small messages on one connection (best of 3);
* round trips per message, counted by a relay between client and sink: one round
  trip is the server answering after the client spoke (connection setup and QUIT
  are subtracted by also running zero messages);
* the peak memory growth (ru_maxrss, in a fresh subprocess) and the CPU seconds
  (user + system, the whole client process) to send one message of M MB that is
  already in memory as bytes: through the sink (DATA: neither smtp-sink nor aiosmtpd
  offers CHUNKING) and, for smtpbee, through a sink of this script's own that offers
  CHUNKING (BDAT);
* for smtpbee, the small messages again through that CHUNKING sink (BDAT LAST), where a
  batch keeps several whole transactions in flight.

smtpproto only sends EmailMessage objects, so its figure includes serialising one.
``--clients`` picks some of the clients, ``--big-only`` skips the small messages,
``--json PATH`` also writes the figures there (bench/run_all.py reads them).
Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import selectors
import shutil
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from bench_args import chosen_clients

SENDER = "bench@x.test"
RECIPIENT = "sink@x.test"
SMALL = b"From: bench@x.test\r\nTo: sink@x.test\r\nSubject: bench\r\n\r\nA small message.\r\n"


def small_message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = SENDER, RECIPIENT, "bench"
    msg.set_content("A small message.")
    return msg


# -- the clients: each sends `count` copies of `body` on one connection -------------------


def smtpbee_sync(port: int, count: int, body: bytes) -> None:
    from smtpbee.transports.sync import SMTPClient

    with SMTPClient("127.0.0.1", port, tls="none") as client:
        for _ in range(count):
            client.sendmail(SENDER, [RECIPIENT], body)


def smtpbee_sync_batch(port: int, count: int, body: bytes) -> None:
    from smtpbee import SMTPError
    from smtpbee.transports.sync import SMTPClient

    with SMTPClient("127.0.0.1", port, tls="none") as client:
        results = client.send_batch([(SENDER, [RECIPIENT], body)] * count)
    # A refused message would make the figure meaningless: stop at the first.
    for result in results:
        if isinstance(result, SMTPError):
            raise result


def smtpbee_asyncio(port: int, count: int, body: bytes) -> None:
    from smtpbee.transports.asyncio import AsyncSMTPClient

    async def main() -> None:
        async with AsyncSMTPClient("127.0.0.1", port, tls="none") as client:
            for _ in range(count):
                await client.sendmail(SENDER, [RECIPIENT], body)

    asyncio.run(main())


def smtpbee_trio(port: int, count: int, body: bytes) -> None:
    import trio
    from smtpbee.transports.trio import TrioSMTPClient

    async def main() -> None:
        async with TrioSMTPClient("127.0.0.1", port, tls="none") as client:
            for _ in range(count):
                await client.sendmail(SENDER, [RECIPIENT], body)

    trio.run(main)


def stdlib_smtplib(port: int, count: int, body: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="localhost") as client:
        for _ in range(count):
            client.sendmail(SENDER, [RECIPIENT], body)


def aiosmtplib_client(port: int, count: int, body: bytes) -> None:
    import aiosmtplib

    async def main() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        async with client:
            for _ in range(count):
                await client.sendmail(SENDER, [RECIPIENT], body)

    asyncio.run(main())


def smtpproto_client(port: int, count: int, body: bytes) -> None:
    from smtpproto.client import SyncSMTPClient

    msg = small_message() if len(body) < 1000 else _big_email(body)
    client = SyncSMTPClient("127.0.0.1", port, domain="localhost")
    with client.connect() as session:
        for _ in range(count):
            session.send_message(msg)


def _big_email(body: bytes) -> EmailMessage:
    msg = small_message()
    msg.set_content(body, maintype="application", subtype="octet-stream", cte="7bit")
    return msg


CLIENTS: dict[str, Callable[[int, int, bytes], None]] = {
    "smtpbee sync": smtpbee_sync,
    "smtpbee sync batch": smtpbee_sync_batch,
    "smtpbee asyncio": smtpbee_asyncio,
    "smtpbee trio": smtpbee_trio,
    "smtplib": stdlib_smtplib,
    "aiosmtplib": aiosmtplib_client,
    "smtpproto": smtpproto_client,
}


# -- the sink and the counting relay ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def sink() -> Iterator[tuple[int, str]]:
    port = free_port()
    if shutil.which("smtp-sink"):
        # smtp-sink refuses to run as root without a user to drop to.
        as_user = ["-u", "nobody"] if os.geteuid() == 0 else []
        command = ["smtp-sink", *as_user, "-c", f"127.0.0.1:{port}", "1000"]
        name = "Postfix smtp-sink"
    else:
        command = [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}"]
        name = "aiosmtpd"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(port)
        yield port, name
    finally:
        process.terminate()
        process.wait(5)


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def count_round_trips(port: int, run: Callable[[int], None]) -> int:
    """Run a client through a relay; count the times the server answered the client."""
    listener = socket.create_server(("127.0.0.1", 0))
    relay_port = listener.getsockname()[1]
    counted: list[int] = []

    def relay() -> None:
        client, _ = listener.accept()
        server = socket.create_connection(("127.0.0.1", port))
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, server)
        selector.register(server, selectors.EVENT_READ, client)
        round_trips, client_spoke, open_ends = 0, False, 2
        while open_ends:
            for key, _ in selector.select(timeout=10):
                source = key.fileobj
                assert isinstance(source, socket.socket)
                data = source.recv(1 << 20)
                if not data:
                    selector.unregister(source)
                    open_ends -= 1
                    with contextlib.suppress(OSError):
                        key.data.shutdown(socket.SHUT_WR)
                    continue
                key.data.sendall(data)
                if source is client:
                    client_spoke = True
                elif client_spoke:
                    round_trips, client_spoke = round_trips + 1, False
        client.close()
        server.close()
        counted.append(round_trips)

    thread = threading.Thread(target=relay)
    thread.start()
    run(relay_port)
    thread.join(30)
    listener.close()
    return counted[0]


@contextlib.contextmanager
def chunking_sink() -> Iterator[int]:
    """A sink that offers CHUNKING, in a subprocess of its own (see serve_chunking_sink)."""
    port = free_port()
    command = [sys.executable, os.path.abspath(__file__), "--chunking-sink", str(port)]
    process = subprocess.Popen(command)
    try:
        _wait_for(port)
        yield port
    finally:
        process.terminate()
        process.wait(5)


def serve_chunking_sink(port: int) -> None:
    """Accept mail on loopback with PIPELINING and CHUNKING, keeping none of it.

    Only for the BDAT figure: smtp-sink refuses BDAT, and a content sink in
    Python must not make the client wait on it, so chunks are read in large
    pieces and dropped.
    """
    listener = socket.create_server(("127.0.0.1", port))
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_chunking_session, args=(conn,), daemon=True).start()


def _chunking_session(conn: socket.socket) -> None:
    # One write per reply, as smtp-sink: without TCP_NODELAY, Nagle holds each reply
    # after the first until the client's delayed ACK, 40 ms per pipelined group.
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn, conn.makefile("rb", buffering=1 << 20) as reader:
        conn.sendall(b"220 sink ESMTP\r\n")
        while line := reader.readline(4096):
            verb = line[:4].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 CHUNKING\r\n")
            elif verb == b"BDAT":
                left = int(line.split()[1])
                while left and (piece := reader.read(min(left, 1 << 20))):
                    left -= len(piece)
                conn.sendall(b"250 2.0.0 chunk taken\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go ahead\r\n")
                while reader.readline() not in (b".\r\n", b""):
                    pass
                conn.sendall(b"250 2.0.0 taken\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 2.0.0 bye\r\n")
                return
            else:
                conn.sendall(b"250 2.0.0 ok\r\n")


def big_message(name: str, port: int, size_mb: int) -> tuple[float, float]:
    """Peak memory growth (MB) and CPU seconds of a fresh process sending one big message."""
    code = (
        "import resource, sys; sys.path.insert(0, 'bench'); import bench_send as b;"
        # One allocation: a temporary copy here would raise the peak measured from.
        f"body = (b'X-Filler: ' + b'y' * 988 + b'\\r\\n') * ({size_mb} * 1000);"
        "usage = resource.getrusage(resource.RUSAGE_SELF);"
        f"b.CLIENTS[{name!r}]({port}, 1, body);"
        "after = resource.getrusage(resource.RUSAGE_SELF);"
        "cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime;"
        "print((after.ru_maxrss - usage.ru_maxrss) / 1024, cpu)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if out.returncode:
        return float("nan"), float("nan")
    peak, cpu = out.stdout.split()
    return float(peak), float(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--big-mb", type=int, default=100)
    parser.add_argument(
        "--clients", help=f"comma-separated, of: {', '.join(CLIENTS)} (default: all)"
    )
    parser.add_argument("--big-only", action="store_true", help="only the big message")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument("--chunking-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.chunking_sink:
        serve_chunking_sink(args.chunking_sink)
        return
    names = chosen_clients(parser, args.clients, CLIENTS)
    big = f"{args.big_mb} MB"
    figures: dict[str, Any] = {
        "messages": args.messages,
        "big_mb": args.big_mb,
        "data": [],
        "bdat_small": [],
        "bdat_big": [],
    }
    with sink() as (port, sink_name):
        figures["sink"] = sink_name
        print(f"sink: {sink_name}; {args.messages} messages on one connection; best of 3")
        print(
            f"{'client':18} {'msg/s':>8} {'µs/msg':>8} {'RT/msg':>7}"
            f" {'peak MB':>8} {'CPU s':>6}  ({big} via DATA)"
        )
        for name in names:
            client = CLIENTS[name]
            small = "        -        -       -"
            row: dict[str, Any] = {"client": name}
            if not args.big_only:
                best = min(_timed(client, port, args.messages) for _ in range(3))
                idle = count_round_trips(port, functools.partial(_run, client, 0))
                busy = count_round_trips(port, functools.partial(_run, client, 20))
                rate = args.messages / best
                small = f"{rate:8.0f} {1e6 / rate:8.0f} {(busy - idle) / 20:7.2f}"
                row.update(msgs_per_s=rate, us_per_msg=1e6 / rate, rt_per_msg=(busy - idle) / 20)
            peak, cpu = big_message(name, port, args.big_mb)
            print(f"{name:18} {small} {peak:8.0f} {cpu:6.2f}")
            figures["data"].append(row | {"peak_mb": _finite(peak), "cpu_s": _finite(cpu)})
    chunking = [name for name in names if name.startswith("smtpbee")]
    if chunking:
        with chunking_sink() as port:
            if not args.big_only:
                # Small messages by BDAT LAST: a batch keeps several in flight.
                print("\nsmall messages via BDAT (this script's CHUNKING sink)")
                print(f"{'client':18} {'msg/s':>8} {'µs/msg':>8} {'RT/msg':>7}")
                for name in chunking:
                    client = CLIENTS[name]
                    best = min(_timed(client, port, args.messages) for _ in range(3))
                    idle = count_round_trips(port, functools.partial(_run, client, 0))
                    busy = count_round_trips(port, functools.partial(_run, client, 20))
                    rate = args.messages / best
                    print(f"{name:18} {rate:8.0f} {1e6 / rate:8.0f} {(busy - idle) / 20:7.2f}")
                    figures["bdat_small"].append(
                        {
                            "client": name,
                            "msgs_per_s": rate,
                            "us_per_msg": 1e6 / rate,
                            "rt_per_msg": (busy - idle) / 20,
                        }
                    )
            print(f"\n{big} via BDAT (this script's CHUNKING sink)")
            print(f"{'client':18} {'peak MB':>8} {'CPU s':>6}")
            for name in chunking:
                peak, cpu = big_message(name, port, args.big_mb)
                print(f"{name:18} {peak:8.0f} {cpu:6.2f}")
                figures["bdat_big"].append(
                    {"client": name, "peak_mb": _finite(peak), "cpu_s": _finite(cpu)}
                )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def _finite(figure: float) -> float | None:
    # A failed run is NaN in the table; JSON has no NaN.
    return None if math.isnan(figure) else figure


def _run(client: Callable[[int, int, bytes], None], count: int, port: int) -> None:
    client(port, count, SMALL)


def _timed(client: Callable[[int, int, bytes], None], port: int, count: int) -> float:
    started = time.perf_counter()
    client(port, count, SMALL)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
