"""The sans-I/O core alone: CPU per mail transaction, beside a minimal hand-written client.

Run with ``python bench/bench_core.py [--transactions N] [--profile]``. No socket is
involved: a Connection is driven through N pipelined transactions (MAIL, RCPT and
DATA in one group, then the content and its terminator) against canned reply bytes,
the way the blocking transport drives it for ``sendmail``: commands built per
message, one send_all per group, one receive_data per server write, next_event until
NEED_DATA. The same loop is then run by a minimal pipelined encoder/decoder written
for this one job (f-strings out, ``split`` on the replies in, each code checked
against the exact success codes RFC 5321 lists, as the core does) - what the core's
checks, state machine and events cost on top of that is the difference between the
two figures. Best of 5 runs, process CPU time.

Nothing here is a test, and nothing asserts a time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable

from smtpbee._commands import Data, EndOfData, Mail, MessageData, Rcpt
from smtpbee._connection import Connection
from smtpbee._events import NEED_DATA, ReplyReceived

SENDER = "bench@x.test"
RECIPIENT = "sink@x.test"
BODY = b"From: bench@x.test\r\nTo: sink@x.test\r\nSubject: bench\r\n\r\nA small message.\r\n"

# What Postfix's smtp-sink answers, one server write per client group.
GREETING = b"220 sink.test ESMTP\r\n"
EHLO_REPLY = (
    b"250-sink.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250 DSN\r\n"
)
ENVELOPE_REPLIES = b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
FINAL_REPLY = b"250 2.0.0 Ok: queued as 1234ABCD\r\n"


def _drain(conn: Connection) -> int:
    """Read every event; how many there were. Any refusal or surprise ends the run."""
    events = 0
    while (event := conn.next_event()) is not NEED_DATA:
        if not (event.accepted if isinstance(event, ReplyReceived) else True):
            raise AssertionError(f"refused: {event}")
        events += 1
    return events


def smtpbee_core(count: int) -> None:
    """N transactions through the Connection, as the blocking transport drives it."""
    from smtpbee._commands import Ehlo

    conn = Connection()
    conn.receive_data(GREETING)
    _drain(conn)
    conn.send(Ehlo("client.test"))
    conn.receive_data(EHLO_REPLY)
    _drain(conn)
    for _ in range(count):
        mail = Mail(sender=SENDER, size=len(BODY))
        rcpts = [Rcpt(recipient=RECIPIENT)]
        conn.send_all([mail, *rcpts, Data()])
        conn.receive_data(ENVELOPE_REPLIES)
        if _drain(conn) != 3:
            raise AssertionError("the envelope was not answered")
        conn.send_all([MessageData(BODY), EndOfData()])
        conn.receive_data(FINAL_REPLY)
        if _drain(conn) != 1:
            raise AssertionError("the content was not answered")


def minimal_client(count: int) -> None:
    """The same exchange with nothing but what a pipelined client cannot do without."""
    buffer = b""

    def replies(data: bytes) -> list[int]:
        nonlocal buffer
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        return [int(line[:3]) for line in lines if line[3:4] != b"-"]

    def encode(body: bytes) -> bytes:
        body = body.replace(b"\r\n.", b"\r\n..")
        if body.startswith(b"."):
            body = b"." + body
        return body + b".\r\n"

    replies(GREETING)
    replies(EHLO_REPLY)
    for _ in range(count):
        envelope = (
            f"MAIL FROM:<{SENDER}> SIZE={len(BODY)}\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n".encode(
                "ascii"
            )
        )
        if not envelope:  # pragma: no cover - keeps the encoding from being optimised away
            raise AssertionError
        codes = replies(ENVELOPE_REPLIES)
        if len(codes) != 3 or codes[0] != 250 or codes[1] not in (250, 251) or codes[2] != 354:
            raise AssertionError("the envelope was not answered")
        encode(BODY)
        codes = replies(FINAL_REPLY)
        if len(codes) != 1 or codes[0] != 250:
            raise AssertionError("the content was not answered")


def best_cpu(fn: Callable[[int], None], count: int, runs: int = 5) -> float:
    """The best CPU time per transaction over several runs, in microseconds."""
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        fn(count)
        best = min(best, time.process_time() - start)
    return best / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true", help="cProfile the core loop")
    args = parser.parse_args()
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(smtpbee_core, args.transactions)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    core = best_cpu(smtpbee_core, args.transactions)
    minimal = best_cpu(minimal_client, args.transactions)
    print(f"smtpbee core      {core:6.1f} us CPU/transaction")
    print(f"minimal client    {minimal:6.1f} us CPU/transaction")
    print(f"core overhead     {core - minimal:6.1f} us ({core / minimal:.1f}x)")


if __name__ == "__main__":
    main()
