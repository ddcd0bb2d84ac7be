"""Round trips per message at 10 ms RTT, through a delaying proxy that counts them.

Run with ``python bench/bench_rtt.py [--messages N] [--transactions M] [--delay-ms D]
[--netem] [--json PATH]``. Between each client and its sink (Postfix's smtp-sink:
PIPELINING; bench_send.py's CHUNKING sink: PIPELINING and CHUNKING) runs a TCP proxy
on loopback, in asyncio, that forwards each chunk D ms (default 5) after it came, in
order, each way: a 2·D ms round trip, as to a server across a city. It also counts the
round trips: each time the server sends data after the client last sent some. Setting
up and QUIT are taken out by also running each client with no message (three times,
the quickest counts).

Two cases, each client on one connection:

* bulk: N small messages (1 KB, one recipient): smtpbee's sync client with
  ``send_batch`` (a window of transactions in flight) and with ``sendmail`` one by one,
  the minimal blocking client of reference_clients.py (one transaction per write:
  MAIL, RCPT and BDAT LAST, or MAIL, RCPT and DATA then the content), and smtplib;
* 100 recipients: M messages to 100 recipients each, the transaction where pipelining
  counts most: smtpbee's ``sendmail``, smtplib, the minimal client.

Each row gives round trips per message and the wall-clock milliseconds per message,
which at this distance follow from them. The counts are exact and need no rounds.

``--netem`` instead delays every packet on the loopback device with the kernel's
netem (``tc qdisc add dev lo root netem delay D/2 ms``: a packet through the proxy
crosses the device twice each way), where that is allowed, and removes it afterwards;
the proxy then only counts. It delays all loopback traffic of the machine while it
runs, which is why it is not the default. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import send_clients
from send_clients import CLIENTS

MESSAGE_BYTES = 1024
RECIPIENTS = 100

# (case, sink, client): the sink is "data" (smtp-sink) or "bdat" (the CHUNKING sink).
ROWS: tuple[tuple[str, str, str], ...] = (
    ("bulk", "bdat", "smtpbee sync batch"),
    ("bulk", "bdat", "smtpbee sync"),
    ("bulk", "bdat", "minimal blocking"),
    ("bulk", "data", "smtpbee sync batch"),
    ("bulk", "data", "smtpbee sync"),
    ("bulk", "data", "minimal blocking"),
    ("bulk", "data", "smtplib"),
    ("100 recipients", "data", "smtpbee sync"),
    ("100 recipients", "data", "minimal blocking"),
    ("100 recipients", "data", "smtplib"),
    ("100 recipients", "bdat", "smtpbee sync"),
    ("100 recipients", "bdat", "minimal blocking"),
    ("100 recipients", "bdat", "smtplib"),
)
SINK_LABELS = {"data": "PIPELINING (smtp-sink)", "bdat": "PIPELINING+CHUNKING"}


class _Turn:
    """Whose turn it is on one proxied connection: has the client spoken since the server?"""

    __slots__ = ("client_spoke",)

    def __init__(self) -> None:
        self.client_spoke = False


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that delays each chunk and counts round trips.

    Every chunk read from one side is written to the other ``delay`` seconds after it
    was read, in the order read. A round trip is counted each time data comes from the
    server after data came from the client. It runs an asyncio loop in a thread of its
    own; use it as a context manager, ``port`` is where to connect, ``take()`` returns
    the round trips counted since the last call.
    """

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.port = 0
        self._round_trips = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the proxy did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def take(self) -> int:
        """The round trips counted since the last call."""
        counted, self._round_trips = self._round_trips, 0
        return counted

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported to __enter__ if it had not started
            self._error = error
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            # Let the last connections finish their delayed writes before the loop ends.
            if self._handlers:
                await asyncio.wait(self._handlers, timeout=2 + 4 * self.delay)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._proxy(reader, writer)
        except asyncio.CancelledError:
            pass  # the proxy is stopping: the connection ends with it
        finally:
            self._handlers.discard(task)

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        turn = _Turn()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, turn, from_client=True),
                self._pump(up_reader, writer, turn, from_client=False),
            )
        except OSError:
            pass
        finally:
            writer.close()
            up_writer.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        turn: _Turn,
        *,
        from_client: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        deliver = asyncio.create_task(self._deliver(queue, writer))
        try:
            while data := await reader.read(1 << 16):
                if from_client:
                    turn.client_spoke = True
                elif turn.client_spoke:
                    turn.client_spoke = False
                    self._round_trips += 1
                queue.put_nowait((loop.time() + self.delay, data))
        finally:
            queue.put_nowait(None)
            await deliver

    async def _deliver(
        self, queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        while (item := await queue.get()) is not None:
            due, data = item
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


@contextlib.contextmanager
def netem(delay_ms: float) -> Iterator[str | None]:
    """Delay every packet on lo by ``delay_ms`` while inside; else why tc refused."""
    add = ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", f"{delay_ms}ms"]
    try:
        done = subprocess.run(add, capture_output=True, text=True, timeout=10)
        refused = None if done.returncode == 0 else done.stderr.strip() or "tc failed"
    except OSError as error:
        refused = str(error)
    try:
        yield refused
    finally:
        if refused is None:
            subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], check=True, timeout=10)


def measured_rtt(port: int, probes: int = 10) -> float:
    """The median milliseconds a NOOP takes through the proxy at ``port``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with sock.makefile("rb") as replies:
            replies.readline()
            times = []
            for _ in range(probes):
                started = time.perf_counter()
                sock.sendall(b"NOOP\r\n")
                if not replies.readline().startswith(b"250"):
                    raise AssertionError("NOOP refused")
                times.append(time.perf_counter() - started)
            sock.sendall(b"QUIT\r\n")
            replies.readline()
    return statistics.median(times) * 1e3


def run_row(proxy: DelayProxy, sink: str, name: str, count: int, rcpts: int) -> dict[str, Any]:
    """Round trips and wall-clock ms per message of one client through the proxy."""
    client, envelope = CLIENTS[name], send_clients.recipients(rcpts)
    body = send_clients.message(MESSAGE_BYTES)
    client(proxy.port, 1, envelope, body, sink == "bdat")  # imports and first calls
    turns = []
    # Without messages three times (the quickest is taken out: setting up and QUIT),
    # then with them once.
    for messages in (0, 0, 0, count):
        proxy.take()
        started = time.perf_counter()
        client(proxy.port, messages, envelope, body, sink == "bdat")
        turns.append((time.perf_counter() - started, proxy.take()))
    idle_s, idle = min(turns[:3])
    busy_s, busy = turns[3]
    return {
        "messages": count,
        "rt_per_msg": (busy - idle) / count,
        "ms_per_msg": (busy_s - idle_s) / count * 1e3,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100, help="bulk messages")
    parser.add_argument("--transactions", type=int, default=3, help="100-recipient ones")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="each way")
    parser.add_argument("--netem", action="store_true", help="delay lo with netem, not the proxy")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {
        "messages": args.messages,
        "transactions": args.transactions,
        "recipients": RECIPIENTS,
        "delay_ms": args.delay_ms,
        "sinks": SINK_LABELS,
        "rows": [],
    }
    with contextlib.ExitStack() as stack:
        by = "proxy"
        proxy_delay = args.delay_ms / 1e3
        # Through the proxy a packet crosses lo twice each way: half the delay each time.
        if args.netem:
            refused = stack.enter_context(netem(args.delay_ms / 2))
            if refused is None:
                by, proxy_delay = "netem", 0.0
            else:
                print(f"netem refused ({refused}): the proxy delays")
        figures["delayed_by"] = by
        ports = {
            "data": stack.enter_context(send_clients.smtp_sink()),
            "bdat": stack.enter_context(send_clients.chunking_sink()),
        }
        proxies = {
            sink: stack.enter_context(DelayProxy(port, proxy_delay))
            for sink, port in ports.items()
            if port is not None
        }
        rtt = measured_rtt(next(iter(proxies.values())).port)
        figures["rtt_ms"] = rtt
        print(
            f"round trips per message at {rtt:.1f} ms RTT (delayed by {by}); bulk: "
            f"{args.messages} messages of {MESSAGE_BYTES} bytes; {RECIPIENTS} recipients:"
            f" {args.transactions} messages"
        )
        print(f"{'case':15} {'server offers':24} {'client':20} {'RT/msg':>7} {'ms/msg':>8}")
        for case, sink, name in ROWS:
            if sink not in proxies:
                continue
            count = args.messages if case == "bulk" else args.transactions
            rcpts = 1 if case == "bulk" else RECIPIENTS
            row = run_row(proxies[sink], sink, name, count, rcpts)
            label = SINK_LABELS[sink] + (
                " *" if name in send_clients.DATA_ONLY and sink == "bdat" else ""
            )
            print(
                f"{case:15} {label:24} {name:20} {row['rt_per_msg']:7.2f} {row['ms_per_msg']:8.1f}"
            )
            figures["rows"].append({"case": case, "sink": sink, "client": name} | row)
        print("* sends DATA where CHUNKING is offered")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
