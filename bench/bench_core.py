"""The sans-I/O core alone: CPU per reply parsed and per mail transaction, beside peers.

Run with ``python bench/bench_core.py [--replies N] [--transactions N] [--messages N]
[--rounds R] [--profile parser|transactions|messages]``. No socket is involved.

The reply parser: a ReplyReader is handed one server write at a time (feed) and asked
for replies until it has none (next_reply), as the Connection does. Two writes are
timed: a one-line reply it has not seen before (a "250 2.0.0 Ok: queued as ..." with
a new queue id each time) and the 6-line EHLO reply of Postfix's smtp-sink. Beside it,
on the same bytes: smtplib's own ``SMTP.getreply()`` reading from a buffered file
whose raw stream returns one server write per read (as its socket file does), and a
minimal pure-Python reader (a bytes buffer, ``find`` for line ends, the text after the
code, ``int`` of the last line's code; no limits and no checks) - the floor for any
reader written in Python.

The transactions: a Connection is driven through N pipelined transactions (MAIL, RCPT and
DATA in one group, then the content and its terminator) against canned reply bytes,
the way the blocking transport drives it for ``sendmail``: commands built per
message, one send_all per group, one receive_data per server write, next_event until
NEED_DATA. The same loop is then run by a minimal pipelined encoder/decoder written
for this one job (f-strings out, ``split`` on the replies in, each code checked
against the exact success codes RFC 5321 lists, as the core does) - what the core's
checks, state machine and events cost on top of that is the difference between the
two figures.

The messages: what ``send_message`` does before the first command, on the same small
EmailMessage (From, To, Subject, a text/plain body), once built in Python and once
parsed from bytes with ``email.policy.default`` (whose headers are parsed on each read):
smtpbee's ``prepare_message`` (envelope from the headers, Bcc dropped, the SMTPUTF8
choice, the bytes) beside what ``smtplib.SMTP.send_message`` does (the Resent-* check,
the envelope from the headers, a copy without Bcc, ``BytesGenerator.flatten`` with the
message's policy and CRLF line ends).

Every figure is the median over R rounds of process CPU time per reply or per
transaction; the machine's load moves them, the ratios within one run are what counts.

``--json PATH`` also writes the figures there. Nothing here is a test, and nothing
asserts a time.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import email
import email.generator
import email.policy
import email.utils
import functools
import io
import json
import pstats
import smtplib
import statistics
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any, Protocol

from smtpbee._commands import Data, EndOfData, Mail, MessageData, Rcpt
from smtpbee._connection import Connection
from smtpbee._events import NEED_DATA, ReplyReceived
from smtpbee._extensions import Extensions
from smtpbee._receivebuffer import ReplyReader
from smtpbee._replies import Reply
from smtpbee.transports._message import prepare_message

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


# ----------------------------------------------------------------------
# The reply parser alone
# ----------------------------------------------------------------------


def new_one_line_replies(count: int) -> list[bytes]:
    """count one-line replies, each new to a reader (a queue id of its own)."""
    return [b"250 2.0.0 Ok: queued as %08X\r\n" % number for number in range(count)]


class _ReplyReader(Protocol):
    def feed(self, data: bytes, /) -> None: ...
    def next_reply(self) -> object: ...


def parse_each_write(new_reader: Callable[[], _ReplyReader], writes: list[bytes]) -> None:
    """One feed per server write, then next_reply until None, as the Connection asks."""
    reader = new_reader()
    feed = reader.feed
    next_reply = reader.next_reply
    for write in writes:
        feed(write)
        if next_reply() is None or next_reply() is not None:
            raise AssertionError("not one reply per write")


class _OneWritePerRead(io.RawIOBase):
    """The raw stream under smtplib's socket file: each read returns one server write."""

    def __init__(self, writes: list[bytes]) -> None:
        self._writes: Iterator[bytes] = iter(writes)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        write = next(self._writes, b"")
        buffer[: len(write)] = write
        return len(write)


def parse_smtplib(writes: list[bytes]) -> None:
    """smtplib's own getreply() on a buffered file that reads one server write at a time."""
    client = smtplib.SMTP()
    client.file = io.BufferedReader(_OneWritePerRead(writes))
    getreply = client.getreply
    for _ in writes:
        if getreply()[0] < 0:
            raise AssertionError("no reply code")


class MinimalReplyReader:
    """The least a reply reader in Python can do: no limits, no checks but int()."""

    def __init__(self) -> None:
        self.buffer = b""
        self.lines: list[bytes] = []

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def next_reply(self) -> tuple[int, list[bytes]] | None:
        buffer = self.buffer
        lines = self.lines
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = buffer[start:end]
            start = end + 1
            lines.append(line[4:].rstrip(b"\r"))
            if line[3:4] != b"-":
                self.buffer = buffer[start:]
                self.lines = []
                return int(line[:3]), lines
        self.buffer = buffer[start:]
        return None


parse_smtpbee = functools.partial(parse_each_write, ReplyReader)
parse_minimal = functools.partial(parse_each_write, MinimalReplyReader)


PARSER_CASES: dict[str, Callable[[int], list[bytes]]] = {
    "one-line reply, new": new_one_line_replies,
    "EHLO reply, 6 lines": lambda count: [EHLO_REPLY] * count,
}
PARSERS: dict[str, Callable[[list[bytes]], None]] = {
    "smtpbee ReplyReader": parse_smtpbee,
    "smtplib getreply": parse_smtplib,
    "minimal reader": parse_minimal,
}


# ----------------------------------------------------------------------
# Messages
# ----------------------------------------------------------------------

SMALL_MESSAGE = (
    b"From: bench@x.test\r\nTo: sink@x.test\r\nSubject: bench\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 7bit\r\n'
    b"\r\nA small message.\r\n"
)
SINK_EXTENSIONS = Extensions.from_reply(
    Reply(code=250, lines=tuple(line[4:] for line in EHLO_REPLY.split(b"\r\n")[:-1]))
)


def built_message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = SENDER, RECIPIENT, "bench"
    msg.set_content("A small message.")
    return msg


def parsed_message() -> Message:
    return email.message_from_bytes(SMALL_MESSAGE, policy=email.policy.default)


MESSAGE_CASES: dict[str, Callable[[], Message]] = {
    "built": built_message,
    "parsed (policy.default)": parsed_message,
}


def prepare_smtpbee(msg: Message, count: int) -> None:
    for _ in range(count):
        prepare_message(msg, sender=None, recipients=None, server=SINK_EXTENSIONS)


def prepare_smtplib(msg: Message, count: int) -> None:
    """What smtplib.SMTP.send_message does before sendmail(), for an ASCII envelope."""
    for _ in range(count):
        resent = msg.get_all("Resent-Date")
        prefix = "" if resent is None else "Resent-"
        found = msg[prefix + "Sender"] if prefix + "Sender" in msg else msg[prefix + "From"]
        sender = email.utils.getaddresses([found])[0][1]
        fields = (msg[prefix + "To"], msg[prefix + "Bcc"], msg[prefix + "Cc"])
        recipients = [a[1] for a in email.utils.getaddresses([f for f in fields if f is not None])]
        stripped = copy.copy(msg)
        del stripped["Bcc"]
        del stripped["Resent-Bcc"]
        "".join([sender, *recipients]).encode("ascii")
        with io.BytesIO() as buffer:
            generator: email.generator.BytesGenerator[Message]
            generator = email.generator.BytesGenerator(buffer)
            generator.flatten(stripped, linesep="\r\n")
            buffer.getvalue()


MESSAGE_PREPARERS: dict[str, Callable[[Message, int], None]] = {
    "smtpbee": prepare_smtpbee,
    "smtplib": prepare_smtplib,
}


# ----------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------


def median_cpu(run: Callable[[], None], count: int, rounds: int) -> float:
    """The median CPU time per item over several rounds, in microseconds."""
    times = []
    for _ in range(rounds):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return statistics.median(times) / count * 1e6


def bench_parser(count: int, rounds: int) -> dict[str, Any]:
    print(f"reply parser: us CPU per server write, median of {rounds} rounds of {count}")
    print(f"{'':22s}" + "".join(f"{name:>22s}" for name in PARSER_CASES))
    inputs = {case: make(count) for case, make in PARSER_CASES.items()}
    rows = []
    for name, parse in PARSERS.items():
        figures = [
            median_cpu(functools.partial(parse, writes), count, rounds)
            for writes in inputs.values()
        ]
        print(f"{name:22s}" + "".join(f"{figure:22.2f}" for figure in figures))
        rows.append({"name": name, "us_per_write": dict(zip(inputs, figures, strict=True))})
    return {"count": count, "rounds": rounds, "cases": list(inputs), "rows": rows}


def bench_transactions(count: int, rounds: int) -> dict[str, Any]:
    print(f"transactions: us CPU per transaction, median of {rounds} rounds of {count}")
    core = median_cpu(lambda: smtpbee_core(count), count, rounds)
    minimal = median_cpu(lambda: minimal_client(count), count, rounds)
    print(f"smtpbee core      {core:6.1f}")
    print(f"minimal client    {minimal:6.1f}")
    print(f"core overhead     {core - minimal:6.1f} ({core / minimal:.1f}x)")
    return {"count": count, "rounds": rounds, "smtpbee_core_us": core, "minimal_client_us": minimal}


def bench_messages(count: int, rounds: int) -> dict[str, Any]:
    print(f"send_message preparation: us CPU per message, median of {rounds} rounds of {count}")
    print(f"{'':22s}" + "".join(f"{name:>26s}" for name in MESSAGE_CASES))
    messages = [make() for make in MESSAGE_CASES.values()]
    rows = []
    for name, prepare in MESSAGE_PREPARERS.items():
        figures = [
            median_cpu(functools.partial(prepare, msg, count), count, rounds) for msg in messages
        ]
        print(f"{name:22s}" + "".join(f"{figure:26.1f}" for figure in figures))
        rows.append(
            {"name": name, "us_per_message": dict(zip(MESSAGE_CASES, figures, strict=True))}
        )
    return {"count": count, "rounds": rounds, "cases": list(MESSAGE_CASES), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=50_000)
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--messages", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--profile",
        choices=["parser", "transactions", "messages"],
        help="cProfile smtpbee's side of one",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    args = parser.parse_args()
    if args.profile is not None:
        profiler = cProfile.Profile()
        if args.profile == "parser":
            for make in PARSER_CASES.values():
                profiler.runcall(parse_smtpbee, make(args.replies))
        elif args.profile == "messages":
            for make_message in MESSAGE_CASES.values():
                profiler.runcall(prepare_smtpbee, make_message(), args.messages)
        else:
            profiler.runcall(smtpbee_core, args.transactions)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    parser_figures = bench_parser(args.replies, args.rounds)
    print()
    transaction_figures = bench_transactions(args.transactions, args.rounds)
    print()
    message_figures = bench_messages(args.messages, args.rounds)
    if args.json is not None:
        figures = {
            "parser": parser_figures,
            "transactions": transaction_figures,
            "messages": message_figures,
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
