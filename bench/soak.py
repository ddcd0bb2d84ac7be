"""Fault-injection soak: nothing lost, nothing silently duplicated.

Run with ``python bench/soak.py --messages 10000 --seed N`` once the private Postfix
runs (``sudo bash .ci/postfix-start``). Needs ``.[dev]`` (trio, and tests/servers.py).

Every message goes through a fault proxy (tests/faultproxy.py) on 127.0.0.1 between
the client and Postfix which, per connection and per direction, at a seeded byte
offset (or the next line end, or the next end of data / final reply after it), closes
the connection (FIN), resets it (RST), stalls it beyond the client's timeout, or lets
it pass. The messages are spread over *lanes*:

* ``asyncio-pool``: the asyncio SMTPPool, ``send_batch`` of 200 messages at a time;
* ``trio-pool``: the trio SMTPPool, one task per message, ``sendmail``;
* ``sync-client``: blocking SMTPClients, one per thread, ``sendmail`` one message at a
  time, a new connection after a failure (a message whose connection cannot be opened
  gets that error: it was never sent);
* ``sync-batch``: blocking SMTPClients, ``send_batch`` of 8 on one connection;
* ``sync-pool``: the blocking (threaded) SMTPPool, ``send_batch``, a NOOP before reuse;
* ``+tls`` lanes: the same under STARTTLS (the faults then truncate TLS records);
  ``trio-pool+tls`` sends EmailMessage objects with ``send_message``.

Plaintext connections hide CHUNKING from the client half the time, so both BDAT and
pipelined DATA (overlapped in batches) are exercised. Each message has a unique
Message-ID and recipient; about 5% also or only go to the address Postfix refuses.
Once Postfix's queue holds none of the run's messages, the maildir is reconciled with
what each send returned:

* reported delivered (a SendResult): must have arrived exactly once, else *lost*;
* reported failed (an SMTPError other than OutcomeUnknownError): must not have
  arrived, else *failed but arrived* (a wrong classification);
* OutcomeUnknownError: may have arrived or not (the table shows how many did);
* more than one arrival of any message: a *duplicate*;
* an arrival that differs from what was sent: *corrupt*;
* anything that is not a SendResult or an SMTPError: *crashed*.

The table's other columns: ``conns`` connections through the lane's proxies,
``faults`` faults that fired, ``resent`` messages whose envelope went out on two
connections (a pool's retry), ``max s`` the longest single send (lanes that send one
message per call), ``lane s`` the lane's wall time. Each violation is printed with the
connections that carried the message: their plans, what fired where (with the bytes
just before the cut), and how they ended.

The exit status is 1 if there is any violation. ``--json PATH`` writes the figures.
The seed is printed; the same command with that ``--seed`` sends the same messages
through the same fault plans: the blocking clients' sessions replay byte for byte (each
thread has a proxy of its own), while a pool spreads its messages over connections as
timing decides.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import email
import email.message
import email.policy
import json
import os
import platform
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import smtpbee
import trio
from smtpbee.transports import asyncio as smtp_asyncio
from smtpbee.transports import sync as smtp_sync
from smtpbee.transports import trio as smtp_trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from faultproxy import ConnectionRecord, Fired, Planner, ProxyThread, faults_fired
from servers import PostfixServer

__all__ = [
    "LANES",
    "Config",
    "Lane",
    "Report",
    "main",
    "run",
]

POSTFIX_ENV = Path(os.environ.get("SMTPBEE_POSTFIX_ENV", "/tmp/smtpbee-postfix/env"))
SENDER = "soak@example.test"

# --------------------------------------------------------------------------------------
# What is sent, and how


@dataclass(frozen=True)
class Lane:
    """One way of sending: a transport, a method, a TLS mode, a share of the messages.

    Attributes:
        name: shown in the table, e.g. "asyncio-pool".
        kind: "asyncio-pool", "trio-pool", "sync-client", "sync-batch" or "sync-pool".
        tls: "none" or "starttls".
        share: the fraction of the messages it sends.
        workers: pool size, or the number of threads each with a client of its own.
        idle_check: a pool's idle_check (0: a NOOP before every reuse of a connection).
        send_message: send EmailMessage objects (send_message) instead of bytes.
    """

    name: str
    kind: str
    tls: str
    share: float
    workers: int
    idle_check: float = 30.0
    send_message: bool = False


LANES: tuple[Lane, ...] = (
    Lane("asyncio-pool", "asyncio-pool", "none", 0.27, 8),
    Lane("asyncio-pool+tls", "asyncio-pool", "starttls", 0.05, 4),
    Lane("trio-pool", "trio-pool", "none", 0.27, 8),
    Lane("trio-pool+tls", "trio-pool", "starttls", 0.05, 4, idle_check=0.0, send_message=True),
    Lane("sync-client", "sync-client", "none", 0.13, 3),
    Lane("sync-client+tls", "sync-client", "starttls", 0.03, 2),
    Lane("sync-batch", "sync-batch", "none", 0.12, 3),
    Lane("sync-pool", "sync-pool", "none", 0.08, 4, idle_check=0.0),
)
"""The lanes of a run, in the order of the table."""

BATCH_SIZE = 8
"""Messages per send_batch() of the blocking client (one connection)."""

POOL_CHUNK = 200
"""Messages per send_batch() of the asyncio and blocking pools."""


@dataclass(frozen=True)
class Config:
    """One soak run.

    Attributes:
        messages: how many messages in all.
        seed: the seed of the fault plans and the messages.
        fault_rate: the chance, per connection and direction, of a fault.
        timeout: the clients' timeout for every phase (and to connect), seconds.
        max_messages: messages per connection before it is renewed.
        lanes: the names of the lanes to run (default: all).
        queue_timeout: seconds to wait for Postfix's queue to deliver the run's mail.
        quiet: print nothing while running.
    """

    messages: int = 10_000
    seed: int = 1
    fault_rate: float = 0.35
    timeout: float = 2.0
    max_messages: int = 10
    lanes: tuple[str, ...] = tuple(lane.name for lane in LANES)
    queue_timeout: float = 300.0
    quiet: bool = False


@dataclass(frozen=True)
class Message:
    index: int
    lane: str
    recipients: list[str]
    body: bytes
    # The recipient Postfix accepts, or None when every recipient is refused.
    accepted: str | None


@dataclass
class Outcome:
    """What a send reported for one message."""

    kind: str  # "delivered", "failed", "unknown" or "crashed"
    error_type: str = ""
    error: str = ""
    seconds: float = 0.0


_TEXT = re.compile(rb".{1,76}")


def build_message(seed: int, tag: str, index: int, lane: str, reject: str) -> Message:
    """The seeded message number ``index``: a unique Message-ID and recipient, a body."""
    rng = random.Random(f"{seed}/message/{index}")
    good = f"soak-{tag}-{index}@example.test"
    roll = rng.random()
    if roll < 0.02:
        recipients, accepted = [reject], None
    elif roll < 0.05:
        recipients, accepted = rng.sample([good, reject], 2), good
    else:
        recipients, accepted = [good], good
    roll = rng.random()
    if roll < 0.76:
        size = rng.randint(50, 1500)
    elif roll < 0.98:
        size = rng.randint(2_000, 30_000)
    else:
        size = rng.randint(30_000, 150_000)
    text = base64.b64encode(rng.randbytes(size * 3 // 4 + 3))[:size]
    lines = []
    for match in _TEXT.finditer(text):
        line = match.group()
        roll = rng.random()
        if roll < 0.03:
            line = b"." + line  # dot-stuffing
        elif roll < 0.04:
            line = b"."  # a line that would end DATA unstuffed
        lines.append(line)
    headers = (
        f"Message-ID: <soak.{tag}.{index}@smtpbee.test>\r\n"
        f"From: {SENDER}\r\n"
        f"To: {', '.join(recipients)}\r\n"
        f"Subject: soak {index} ({lane})\r\n"
        f"X-Soak: {tag} {lane} {index}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
    ).encode()
    body = headers + b"\r\n" + b"\r\n".join(lines) + b"\r\n"
    return Message(index, lane, recipients, body, accepted)


def _message_id(message: Message) -> str:
    return message.body.split(b"<", 1)[1].split(b">", 1)[0].decode()


def classify(result: object, started: float | None = None) -> Outcome:
    """What a send's result (a SendResult, or the exception it raised) reports.

    ``started``: when the send began (one message per call), for its duration.
    """
    seconds = 0.0 if started is None else time.monotonic() - started
    if isinstance(result, smtpbee.SendResult):
        return Outcome("delivered", seconds=seconds)
    name = type(result).__name__
    if isinstance(result, smtpbee.OutcomeUnknownError):
        return Outcome("unknown", name, str(result), seconds)
    if isinstance(result, smtpbee.SMTPError):
        return Outcome("failed", name, str(result), seconds)
    return Outcome("crashed", name, repr(result), seconds)


# --------------------------------------------------------------------------------------
# The lanes


@dataclass
class LaneRun:
    """What one lane needs to run, and where it puts its outcomes."""

    lane: Lane
    config: Config
    messages: list[Message]
    ports: list[int]  # one proxy per worker for the blocking clients, else one
    cafile: str
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "tls": self.lane.tls,
            "timeout": self.config.timeout,
            "local_hostname": "soak.localhost",
        }
        if self.lane.tls != "none":
            kwargs["ssl_context"] = smtp_sync.default_ssl_context(self.cafile)
        return kwargs

    def pool_kwargs(self) -> dict[str, Any]:
        return {
            **self.client_kwargs(),
            "size": self.lane.workers,
            "max_messages": self.config.max_messages,
            "idle_check": self.lane.idle_check,
        }


def _chunks(messages: Sequence[Message], size: int) -> Iterator[Sequence[Message]]:
    for start in range(0, len(messages), size):
        yield messages[start : start + size]


def _item(message: Message) -> tuple[str, list[str], bytes]:
    return (SENDER, message.recipients, message.body)


def _settle_batch(run: LaneRun, chunk: Sequence[Message], results: object) -> None:
    if not isinstance(results, list) or len(results) != len(chunk):
        for message in chunk:
            run.outcomes[message.index] = Outcome(
                "crashed", "BadBatch", f"send_batch returned {results!r:.200}"
            )
        return
    for message, result in zip(chunk, results, strict=True):
        run.outcomes[message.index] = classify(result)


def _crash_chunk(run: LaneRun, chunk: Sequence[Message], exc: BaseException) -> None:
    for message in chunk:
        run.outcomes.setdefault(message.index, Outcome("crashed", type(exc).__name__, repr(exc)))


def run_asyncio_pool(run: LaneRun) -> None:
    """send_batch() of the asyncio pool, POOL_CHUNK messages at a time."""

    async def main() -> None:
        pool = smtp_asyncio.SMTPPool("127.0.0.1", run.ports[0], **run.pool_kwargs())
        async with pool:
            for chunk in _chunks(run.messages, POOL_CHUNK):
                try:
                    results = await pool.send_batch([_item(m) for m in chunk])
                except Exception as exc:
                    _crash_chunk(run, chunk, exc)
                    continue
                _settle_batch(run, chunk, results)

    try:
        asyncio.run(main())
    except Exception as exc:
        run.notes.append(f"closing the pool: {exc!r}")


def run_trio_pool(run: LaneRun) -> None:
    """One trio task per message: sendmail(), or send_message() if the lane says so."""
    as_message = run.lane.send_message

    async def one(pool: smtp_trio.SMTPPool, limit: trio.CapacityLimiter, message: Message) -> None:
        # At most as many tasks as connections: the time measured is the send's own.
        async with limit:
            started = time.monotonic()
            try:
                if as_message:
                    msg = email.message_from_bytes(message.body, policy=email.policy.default)
                    result: object = await pool.send_message(msg)
                else:
                    result = await pool.sendmail(SENDER, message.recipients, message.body)
            except Exception as exc:
                result = exc
            run.outcomes[message.index] = classify(result, started)

    async def main() -> None:
        limit = trio.CapacityLimiter(run.lane.workers)
        pool = smtp_trio.SMTPPool("127.0.0.1", run.ports[0], **run.pool_kwargs())
        async with pool, trio.open_nursery() as nursery:
            for message in run.messages:
                nursery.start_soon(one, pool, limit, message)

    try:
        trio.run(main)
    except Exception as exc:
        run.notes.append(f"closing the pool: {exc!r}")


def run_sync_pool(run: LaneRun) -> None:
    """send_batch() of the blocking pool (threads), POOL_CHUNK messages at a time."""
    try:
        with smtp_sync.SMTPPool("127.0.0.1", run.ports[0], **run.pool_kwargs()) as pool:
            for chunk in _chunks(run.messages, POOL_CHUNK):
                try:
                    results = pool.send_batch([_item(m) for m in chunk])
                except Exception as exc:
                    _crash_chunk(run, chunk, exc)
                    continue
                _settle_batch(run, chunk, results)
    except Exception as exc:
        run.notes.append(f"closing the pool: {exc!r}")


class _Connection:
    # A blocking client that is reconnected after a failure and renewed every so often.

    def __init__(self, run: LaneRun, port: int) -> None:
        self.run, self.port = run, port
        self.client: smtp_sync.SMTPClient | None = None
        self.sent = 0

    def ready(self) -> smtpbee.SMTPError | smtp_sync.SMTPClient:
        client = self.client
        if client is not None and (not client.usable or self.sent >= self.run.config.max_messages):
            self.drop()
            client = None
        if client is None:
            client = smtp_sync.SMTPClient("127.0.0.1", self.port, **self.run.client_kwargs())
            try:
                client.connect()
            except smtpbee.SMTPError as exc:
                client.close()
                return exc
            self.client, self.sent = client, 0
        return client

    def drop(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if client.usable:
                client.quit()
        except smtpbee.SMTPError:
            pass
        finally:
            client.close()


def _in_threads(run: LaneRun, work: Callable[[list[Message], int], None]) -> None:
    # Worker w sends messages w, w + n, w + 2n ... through proxy w.
    workers = len(run.ports)
    threads = [
        threading.Thread(
            target=work, args=(run.messages[w::workers], run.ports[w]), name=f"{run.lane.name}-{w}"
        )
        for w in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run_sync_client(run: LaneRun) -> None:
    """Blocking clients, one per thread, sendmail() one message at a time.

    A message whose connection cannot be opened gets the error of connecting (it was
    not sent); the next message tries a new connection.
    """

    def work(messages: list[Message], port: int) -> None:
        connection = _Connection(run, port)
        try:
            for message in messages:
                started = time.monotonic()
                try:
                    client = connection.ready()
                    if isinstance(client, smtpbee.SMTPError):
                        result: object = client
                    else:
                        connection.sent += 1
                        result = client.sendmail(SENDER, message.recipients, message.body)
                except Exception as exc:
                    result = exc
                run.outcomes[message.index] = classify(result, started)
        finally:
            connection.drop()

    _in_threads(run, work)


def run_sync_batch(run: LaneRun) -> None:
    """Blocking clients, one per thread, send_batch() of BATCH_SIZE messages at a time."""

    def work(messages: list[Message], port: int) -> None:
        connection = _Connection(run, port)
        try:
            for chunk in _chunks(messages, BATCH_SIZE):
                try:
                    client = connection.ready()
                    if isinstance(client, smtpbee.SMTPError):
                        results: object = [client] * len(chunk)
                    else:
                        connection.sent += len(chunk)
                        results = client.send_batch([_item(m) for m in chunk])
                except Exception as exc:
                    _crash_chunk(run, chunk, exc)
                    continue
                _settle_batch(run, chunk, results)
        finally:
            connection.drop()

    _in_threads(run, work)


def _timed(run: LaneRun) -> None:
    started = time.monotonic()
    try:
        RUNNERS[run.lane.kind](run)
    finally:
        run.seconds = time.monotonic() - started


RUNNERS: dict[str, Callable[[LaneRun], None]] = {
    "asyncio-pool": run_asyncio_pool,
    "trio-pool": run_trio_pool,
    "sync-client": run_sync_client,
    "sync-batch": run_sync_batch,
    "sync-pool": run_sync_pool,
}

# --------------------------------------------------------------------------------------
# Postfix: the queue and the maildir


def postfix_conf(env: Path) -> str:
    """The instance's configuration directory, from .ci/postfix-start's facts."""
    for line in env.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "SMTPBEE_POSTFIX_CONF":
            return value.strip()
    return str(env.parent / "conf")


def queued(conf: str, tag: str) -> int | None:
    """How many queue entries name one of the run's recipients (None: cannot tell)."""
    try:
        listing = subprocess.run(
            ["postqueue", "-c", conf, "-p"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return listing.count(f"soak-{tag}-")


def wait_for_queue(conf: str, tag: str, timeout: float) -> tuple[bool, float]:
    """Wait (bounded) until two looks in a row find none of the run's mail queued."""
    started = time.monotonic()
    clear = 0
    while time.monotonic() - started < timeout:
        count = queued(conf, tag)
        clear = clear + 1 if count == 0 else 0
        if clear >= 2:
            return True, time.monotonic() - started
        time.sleep(0.5)
    return False, time.monotonic() - started


def arrivals(
    server: PostfixServer, tag: str, before: set[str], sent: dict[int, tuple[bytes, bool]]
) -> tuple[collections.Counter[int], set[int]]:
    """How many times each message of the run was delivered, by its Message-ID.

    Also returns the messages of which a copy arrived that is not what was sent (the
    body compared byte for byte, and the headers too unless ``sent`` says the message
    went through send_message(), which serialises them anew).
    """
    pattern = re.compile(
        rb"^Message-ID: <soak\." + re.escape(tag.encode()) + rb"\.(\d+)@smtpbee\.test>",
        re.IGNORECASE | re.MULTILINE,
    )
    counts: collections.Counter[int] = collections.Counter()
    corrupt: set[int] = set()
    for path in server.delivered():
        if path.name in before:
            continue
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            continue
        match = pattern.search(content[:16384].split(b"\n\n", 1)[0])
        if not match:
            continue
        index = int(match.group(1))
        counts[index] += 1
        if index not in sent:
            continue
        body, body_only = sent[index]
        delivered = PostfixServer.original_bytes(content)
        if body_only:
            delivered, body = delivered.partition(b"\r\n\r\n")[2], body.partition(b"\r\n\r\n")[2]
        if delivered != body:
            corrupt.add(index)
    return counts, corrupt


# --------------------------------------------------------------------------------------
# The run and its report


_VERBS = ("EHLO", "HELO", "STARTTLS", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT")
_PRINTABLE = frozenset(range(32, 127)) | {9, 10, 13}


def fault_point(fired: Fired) -> str:
    """Where in the session a fault struck, told from the bytes around the cut.

    E.g. "c2s after end of data", "s2c before final reply", "c2s inside MAIL",
    "s2c after 354", "in TLS" (ciphertext: no telling).
    """
    before, after = fired.before, fired.after
    if not set(before + after) <= _PRINTABLE:
        return f"{fired.direction} in TLS"
    if not before:
        return f"{fired.direction} at the first byte"
    lines = before.split(b"\n")
    boundary = before.endswith(b"\n")
    line = (lines[-2] if boundary and len(lines) > 1 else lines[-1]).rstrip(b"\r")
    where = "after" if boundary else "inside"
    if not boundary and len(line) < 4 and fired.direction == "s2c":
        return "s2c inside a reply code"
    if fired.direction == "c2s":
        if before.endswith(b"\r\n.\r\n"):
            return "c2s after end of data"
        word = line.split(b" ", 1)[0].split(b":", 1)[0].decode("ascii", "replace").upper()
        return f"c2s {where} {word if word in _VERBS else 'content'}"
    if boundary and after.startswith(b"250 2.0.0 Ok: "):
        return "s2c before final reply"
    text = line.decode("ascii", "replace")
    if text.startswith("250 2.0.0 Ok: "):
        what = "final reply"
    elif text.startswith("220 2.0.0"):
        what = "STARTTLS reply"
    elif text.startswith("220"):
        what = "greeting"
    elif text.startswith(("250 2.1.0", "250 2.1.5")):
        what = "MAIL reply" if text.startswith("250 2.1.0") else "RCPT reply"
    elif text.startswith("250 2.0.0"):
        what = "RSET/NOOP reply"
    elif text.startswith("250"):
        what = "EHLO reply"
    elif text[:3].isdigit():
        what = f"{text[:3]} reply"
    else:
        what = "reply text"
    return f"s2c {where} {what}"


@dataclass
class Figures:
    """The counts of one lane, or of the whole run (see the module's docstring).

    ``errors`` counts the failures by class name (OutcomeUnknownError included);
    ``seconds`` is the lane's wall time, ``max_seconds`` its longest single send.
    """

    sent: int = 0
    delivered: int = 0
    failed: int = 0
    unknown: int = 0
    unknown_arrived: int = 0
    duplicates: int = 0
    lost: int = 0
    failed_arrived: int = 0
    crashed: int = 0
    corrupt: int = 0
    connections: int = 0
    faults: int = 0
    resent: int = 0
    max_seconds: float = 0.0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, other: Figures) -> None:
        for name, value in asdict(other).items():
            if name == "errors":
                for key, count in other.errors.items():
                    self.errors[key] = self.errors.get(key, 0) + count
            elif name in ("max_seconds", "seconds"):
                setattr(self, name, max(getattr(self, name), value))
            else:
                setattr(self, name, getattr(self, name) + value)

    @property
    def violations(self) -> int:
        return self.duplicates + self.lost + self.failed_arrived + self.crashed + self.corrupt


@dataclass
class Report:
    """A run's figures, per lane and in all, and each violation traced."""

    seed: int
    tag: str
    config: dict[str, Any]
    wall_seconds: float
    send_seconds: float
    queue_seconds: float
    queue_drained: bool
    total: Figures
    lanes: dict[str, Figures]
    faults_fired: dict[str, int]
    fault_points: dict[str, int]
    connection_ends: dict[str, int]
    violations: list[dict[str, Any]]
    notes: list[str]
    environment: dict[str, str]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)


def _figures(
    lane: Lane,
    run: LaneRun,
    counts: collections.Counter[int],
    corrupt: set[int],
    records: list[ConnectionRecord],
    violations: list[dict[str, Any]],
) -> Figures:
    figures = Figures(sent=len(run.messages), connections=len(records), seconds=run.seconds)
    figures.faults = sum(len(record.fired) for record in records)
    # A message whose envelope went out on two connections was sent again (by a pool).
    carried: collections.Counter[str] = collections.Counter()
    for record in records:
        carried.update(set(record.recipients))
    figures.resent = sum(
        1 for m in run.messages if m.accepted is not None and carried[m.accepted] > 1
    )
    for message in run.messages:
        outcome = run.outcomes.get(message.index) or Outcome("crashed", "NoOutcome", "no result")
        arrived = counts.get(message.index, 0)
        figures.max_seconds = max(figures.max_seconds, outcome.seconds)
        if outcome.error_type:
            figures.errors[outcome.error_type] = figures.errors.get(outcome.error_type, 0) + 1
        problem = ""
        if outcome.kind == "delivered":
            figures.delivered += 1
            if message.accepted is None:
                problem = "delivered to no accepted recipient"
            elif arrived == 0:
                figures.lost += 1
                problem = "lost"
        elif outcome.kind == "failed":
            figures.failed += 1
            if arrived:
                figures.failed_arrived += 1
                problem = "failed but arrived"
        elif outcome.kind == "unknown":
            figures.unknown += 1
            figures.unknown_arrived += arrived > 0
        else:
            figures.crashed += 1
            problem = "crashed"
        if arrived > 1:
            figures.duplicates += 1
            problem = f"{problem}, duplicate" if problem else "duplicate"
        if message.index in corrupt:
            figures.corrupt += 1
            problem = f"{problem}, corrupt" if problem else "arrived corrupt"
        if problem:
            traces = [
                r.describe()
                for r in records
                if message.accepted in r.recipients or _message_id(message) in r.message_ids
            ]
            violations.append(
                {
                    "problem": problem,
                    "index": message.index,
                    "lane": lane.name,
                    "arrived": arrived,
                    "outcome": outcome.kind,
                    "error_type": outcome.error_type,
                    "error": outcome.error,
                    "recipients": message.recipients,
                    "size": len(message.body),
                    "connections": traces,
                }
            )
    figures.errors = dict(sorted(figures.errors.items()))
    return figures


def run(config: Config, server: PostfixServer, env: Path = POSTFIX_ENV) -> Report:
    """Send, wait for Postfix's queue, reconcile the maildir; return the report."""
    say: Callable[[str], None] = (lambda text: None) if config.quiet else print
    lanes = [lane for lane in LANES if lane.name in config.lanes]
    if not lanes:
        raise ValueError(f"no lane among {config.lanes}")
    tag = f"{config.seed}x{time.time_ns() // 1_000_000 % 10**10}"
    started = time.monotonic()
    # Spread the messages over the lanes by their shares; the first takes the rest.
    total_share = sum(lane.share for lane in lanes)
    sizes = [int(config.messages * lane.share / total_share) for lane in lanes]
    sizes[0] += config.messages - sum(sizes)
    runs: list[LaneRun] = []
    index = 0
    before = {path.name for path in server.delivered()}
    upstream = (server.host, server.port)
    # The proxy (of a whole pool, or of one blocking client) draws its plans from the
    # seed and its label. Offsets spread over what a connection of max_messages carries
    # (about 6 kB of content and 110 B of replies per message, plus the TLS handshake and
    # each record's overhead under STARTTLS).
    c2s_horizon = config.max_messages * 6_000
    s2c_horizon = config.max_messages * 110 + 400
    tls_horizons = (c2s_horizon + 1_000, s2c_horizon + 3_000 + config.max_messages * 100)
    stall_limit = max(10.0, 5 * config.timeout)
    with ProxyThread() as proxies:
        for lane, size in zip(lanes, sizes, strict=True):
            messages = [
                build_message(config.seed, tag, n, lane.name, server.reject_address)
                for n in range(index, index + size)
            ]
            index += size
            per_worker = lane.kind in ("sync-client", "sync-batch")
            labels = (
                [f"{lane.name}.{w}" for w in range(lane.workers)] if per_worker else [lane.name]
            )
            ports = [
                proxies.add(
                    upstream,
                    Planner(
                        config.seed,
                        label,
                        fault_rate=config.fault_rate,
                        c2s_horizon=c2s_horizon if lane.tls == "none" else tls_horizons[0],
                        s2c_horizon=s2c_horizon if lane.tls == "none" else tls_horizons[1],
                        strip_chunking_rate=0.5 if lane.tls == "none" else 0.0,
                        early_rate=0.5 if lane.tls == "none" else 0.2,
                    ),
                    stall_limit=stall_limit,
                ).port
                for label in labels
            ]
            runs.append(LaneRun(lane, config, messages, ports, server.cafile))
        say(
            f"soak: seed {config.seed}, {config.messages} messages, fault rate "
            f"{config.fault_rate}, timeout {config.timeout} s, run tag {tag}"
        )
        threads = [threading.Thread(target=_timed, args=(r,), name=r.lane.name) for r in runs]
        for thread in threads:
            thread.start()
        for thread, lane_run in zip(threads, runs, strict=True):
            thread.join()
            say(f"  {lane_run.lane.name}: done in {lane_run.seconds:.1f} s")
        send_seconds = time.monotonic() - started
        proxies.stop_all()
        records = proxies.records()
    # A session cut just after its final dot may still be committing: a moment's grace.
    time.sleep(0.5)
    conf = postfix_conf(env)
    say(f"soak: sent in {send_seconds:.1f} s; waiting for Postfix's queue ({conf})")
    drained, queue_seconds = wait_for_queue(conf, tag, config.queue_timeout)
    sent = {m.index: (m.body, r.lane.send_message) for r in runs for m in r.messages}
    counts, corrupt = arrivals(server, tag, before, sent)
    # Look again until two looks agree: anything still on its way shows up.
    for _ in range(20):
        time.sleep(0.5)
        again = arrivals(server, tag, before, sent)
        if again == (counts, corrupt):
            break
        counts, corrupt = again
    total = Figures()
    per_lane: dict[str, Figures] = {}
    violations: list[dict[str, Any]] = []
    for lane_run in runs:
        mine = [r for r in records if r.label.split(".", 1)[0] == lane_run.lane.name]
        figures = _figures(lane_run.lane, lane_run, counts, corrupt, mine, violations)
        per_lane[lane_run.lane.name] = figures
        total.add(figures)
    notes = [f"{r.lane.name}: {note}" for r in runs for note in r.notes]
    if not drained:
        notes.append(f"the queue still held the run's mail after {config.queue_timeout} s")
    ends = collections.Counter(
        record.ended.split(":", 1)[0] if "error" in record.ended else record.ended
        for record in records
    )
    return Report(
        seed=config.seed,
        tag=tag,
        config=asdict(config),
        wall_seconds=round(time.monotonic() - started, 2),
        send_seconds=round(send_seconds, 2),
        queue_seconds=round(queue_seconds, 2),
        queue_drained=drained,
        total=total,
        lanes=per_lane,
        faults_fired=faults_fired(records),
        fault_points=dict(
            collections.Counter(fault_point(f) for r in records for f in r.fired).most_common()
        ),
        connection_ends=dict(sorted(ends.items())),
        violations=violations,
        notes=notes,
        environment={
            "postfix": _postfix_version(conf),
            "python": platform.python_version(),
            "smtpbee": str(getattr(smtpbee, "__version__", "?")),
            "trio": trio.__version__,
            "platform": platform.platform(),
        },
    )


def _postfix_version(conf: str) -> str:
    try:
        done = subprocess.run(
            ["postconf", "-c", conf, "-h", "mail_version"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    return done.stdout.strip() or "?"


def format_report(report: Report) -> str:
    """The figures as text: the totals, the per-lane table, what fired, the violations."""
    t = report.total
    lines = [
        f"seed {report.seed} (run tag {report.tag}): {t.sent} sent in "
        f"{report.wall_seconds:.1f} s (sending {report.send_seconds:.1f} s, queue "
        f"{report.queue_seconds:.1f} s{'' if report.queue_drained else ', NOT drained'})",
        f"  delivered {t.delivered}, failed {t.failed}, unknown {t.unknown} "
        f"(arrived {t.unknown_arrived}, not {t.unknown - t.unknown_arrived})",
        f"  duplicates {t.duplicates}, lost {t.lost}, failed but arrived {t.failed_arrived}, "
        f"crashed {t.crashed}, arrived corrupt {t.corrupt}",
        f"  connections {t.connections}, faults fired {t.faults}, resent by a pool {t.resent}",
        "",
    ]
    header = (
        "lane",
        "sent",
        "deliv",
        "failed",
        "unknown",
        "unk.arr",
        "dup",
        "lost",
        "fail.arr",
        "crash",
        "conns",
        "faults",
        "resent",
        "max s",
        "lane s",
    )
    rows: list[tuple[str, ...]] = [header]
    for name, f in report.lanes.items():
        rows.append(
            (
                name,
                *(
                    str(v)
                    for v in (
                        f.sent,
                        f.delivered,
                        f.failed,
                        f.unknown,
                        f.unknown_arrived,
                        f.duplicates,
                        f.lost,
                        f.failed_arrived,
                        f.crashed,
                        f.connections,
                        f.faults,
                        f.resent,
                    )
                ),
                f"{f.max_seconds:.1f}" if f.max_seconds else "-",
                f"{f.seconds:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  " + "  ".join(cells))
    lines.append("")
    lines.append("  errors: " + ", ".join(f"{k} {v}" for k, v in sorted(t.errors.items())))
    lines.append("  faults fired: " + ", ".join(f"{k} {v}" for k, v in report.faults_fired.items()))
    lines.append(
        "  where they struck: " + ", ".join(f"{k} {v}" for k, v in report.fault_points.items())
    )
    lines.append(
        "  connections ended: " + ", ".join(f"{k} {v}" for k, v in report.connection_ends.items())
    )
    for note in report.notes:
        lines.append(f"  note: {note}")
    for violation in report.violations[:20]:
        lines.append(
            f"  VIOLATION {violation['problem']}: message {violation['index']} "
            f"({violation['lane']}, {violation['size']} B, to {violation['recipients']}) "
            f"reported {violation['outcome']} {violation['error_type']}: "
            f"{violation['error']}; arrived {violation['arrived']}x"
        )
        for trace in violation["connections"]:
            lines.append(f"      via {trace}")
    if len(report.violations) > 20:
        lines.append(f"  ... and {len(report.violations) - 20} more violations")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--fault-rate", type=float, default=Config.fault_rate)
    parser.add_argument("--timeout", type=float, default=Config.timeout)
    parser.add_argument("--max-messages", type=int, default=Config.max_messages)
    parser.add_argument(
        "--lanes",
        default=",".join(lane.name for lane in LANES),
        help="comma-separated, of: " + ", ".join(lane.name for lane in LANES),
    )
    parser.add_argument("--queue-timeout", type=float, default=Config.queue_timeout)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    config = Config(
        messages=args.messages,
        seed=seed,
        fault_rate=args.fault_rate,
        timeout=args.timeout,
        max_messages=args.max_messages,
        lanes=tuple(name.strip() for name in args.lanes.split(",") if name.strip()),
        queue_timeout=args.queue_timeout,
    )
    if not POSTFIX_ENV.is_file():
        print(f"Postfix is not running ({POSTFIX_ENV} is missing): sudo bash .ci/postfix-start")
        return 2
    server = PostfixServer.from_env_file(POSTFIX_ENV)
    report = run(config, server)
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(report.to_json() + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
