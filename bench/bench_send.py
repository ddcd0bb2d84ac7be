"""Sending mail on one connection: smtpbee's transports beside smtplib, aiosmtplib, smtpproto.

Run with ``python bench/bench_send.py [--messages N] [--big-mb M]``. Against a local
sink (Postfix's smtp-sink when installed, else aiosmtpd in a subprocess), loopback
only, it prints for each client:

* messages/second for N small messages on one connection (best of 3);
* round trips per message, counted by a relay between client and sink: one round
  trip is the server answering after the client spoke (connection setup and QUIT
  are subtracted by also running zero messages);
* the peak memory growth (ru_maxrss, in a fresh subprocess) while sending one
  message of M MB that is already in memory as bytes.

smtpproto only sends EmailMessage objects, so its figure includes serialising one.
Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
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
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port, name
    finally:
        process.terminate()
        process.wait(5)


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


def peak_memory_mb(name: str, port: int, size_mb: int) -> float:
    code = (
        "import resource, sys; sys.path.insert(0, 'bench'); import bench_send as b;"
        f"body = b'Subject: big\\r\\n\\r\\n' + (b'y' * 998 + b'\\r\\n') * ({size_mb} * 1000);"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        f"b.CLIENTS[{name!r}]({port}, 1, body);"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if out.returncode:
        return float("nan")
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--big-mb", type=int, default=100)
    args = parser.parse_args()
    with sink() as (port, sink_name):
        print(f"sink: {sink_name}; {args.messages} messages on one connection; best of 3")
        print(f"{'client':18} {'msg/s':>8} {'µs/msg':>8} {'RT/msg':>7} {'peak MB':>8}")
        for name, client in CLIENTS.items():
            best = min(_timed(client, port, args.messages) for _ in range(3))
            idle = count_round_trips(port, functools.partial(_run, client, 0))
            busy = count_round_trips(port, functools.partial(_run, client, 20))
            peak = peak_memory_mb(name, port, args.big_mb)
            rate = args.messages / best
            print(f"{name:18} {rate:8.0f} {1e6 / rate:8.0f} {(busy - idle) / 20:7.2f} {peak:8.0f}")


def _run(client: Callable[[int, int, bytes], None], count: int, port: int) -> None:
    client(port, count, SMALL)


def _timed(client: Callable[[int, int, bytes], None], port: int, count: int) -> float:
    started = time.perf_counter()
    client(port, count, SMALL)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
