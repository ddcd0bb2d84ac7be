# tests/faultproxy: a loopback TCP proxy that breaks connections on purpose.
#
# Used by the fault-injection soak (bench/soak.py, tests/test_soak.py): it sits between
# an SMTP client and a real server and, per connection and per direction, at a seeded
# byte offset, closes the connection (FIN), resets it (RST: SO_LINGER 0), stalls that
# direction (stops forwarding), or lets everything pass.
#
# Theory of operation
# -------------------
# Each proxy listens on 127.0.0.1 (port 0) and numbers the connections it accepts. The
# fault plan of connection k is a pure function of (seed, label, k): `Planner.plan(k)`
# draws it from a `random.Random` seeded with that triple, so a run replays with the
# same seed (the order in which concurrent clients connect may still differ; a proxy
# used by one client at a time replays exactly).
#
# A plan holds, for each direction (c2s: client to server, s2c: server to client), a
# `Fault`: an action and a byte offset into that direction's stream, and where the cut
# snaps to from there: nowhere (the exact byte), the end of the next line (between two
# protocol lines: after a reply, before the next command), or the next *mark*, the
# points where a message's fate is decided: client to server, just after the
# end-of-data "<CRLF>.<CRLF>" (DATA only: the end of a BDAT chunk is not looked for);
# server to client, just before Postfix's final "250 2.0.0 Ok: ... queued as" (the
# message is committed, the client does not know it yet). When the cut
# is reached, the bytes before it are forwarded (flushed to the kernel) and the
# action happens:
#   * close: both sockets are closed gracefully (FIN);
#   * reset: both sockets are closed with SO_LINGER 0 (RST);
#   * stall: this direction forwards nothing more; what arrives is read (so the proxy
#     notices the client giving up) and dropped. The other direction goes on. A stall
#     lasts until either side closes, or `stall_limit` seconds, after which both are
#     reset (a client that never times out shows up as "stall expired").
# A plan may also rename CHUNKING in the server's EHLO reply to X-CHUNKS (the same
# length, so offsets do not move), so the client uses DATA and pipelines instead of
# BDAT; only on plaintext, where the reply can be seen.
#
# Every connection leaves a `ConnectionRecord`: its plan, the bytes each way, what
# fired where (with the bytes around the cut), how it ended, and the Message-IDs and
# RCPT TO addresses seen in the client's plaintext, so a message with a surprising
# outcome can be traced to the connections that carried it.
#
# The proxies run on an asyncio loop in a thread of their own (`ProxyThread`), so any
# client — blocking, asyncio, trio — can use them.
"""A seeded fault-injecting TCP proxy on loopback (see the comment above)."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

__all__ = [
    "Action",
    "ConnectionRecord",
    "Fault",
    "FaultProxy",
    "Fired",
    "Plan",
    "PlanSource",
    "Planner",
    "ProxyThread",
    "Snap",
    "faults_fired",
]

_T = TypeVar("_T")
_READ_SIZE = 65536
_MESSAGE_ID = re.compile(rb"\nMessage-ID: <([^>\r\n]{1,200})>", re.IGNORECASE)
_RCPT = re.compile(rb"(?:^|\n)RCPT TO:<([^>\r\n]{1,200})>", re.IGNORECASE)
_CHUNKING = b"CHUNKING"
_END_OF_DATA = b"\r\n.\r\n"
# Postfix's final reply to DATA ("Ok: queued as ...") and to BDAT LAST ("Ok: 18 bytes
# queued as ..."); its replies to RSET and NOOP have no colon.
_QUEUED = b"250 2.0.0 Ok: "
_TAIL = 160
_NOT_CHUNKING = b"X-CHUNKS"
# Postfix's reply to STARTTLS (RFC 3207): the plaintext ends there.
_TLS_READY = b"220 2.0.0 "


class Snap(enum.Enum):
    """Where a fault's cut moves from its offset."""

    EXACT = "exact"
    LINE = "line"
    MARK = "mark"


class Action(enum.Enum):
    """What a fault does when its offset is reached."""

    CLOSE = "close"
    RESET = "reset"
    STALL = "stall"


@dataclass(frozen=True)
class Fault:
    """One direction's fault: ``action`` once ``offset`` bytes went through.

    Attributes:
        action: close, reset or stall.
        offset: bytes of the direction's stream forwarded before the action.
        snap: exact: the cut is at ``offset``; line: just after the next LF at or after
            it; mark: at the next end of data (c2s) or final reply (s2c) after it.
    """

    action: Action
    offset: int
    snap: Snap = Snap.EXACT

    def __str__(self) -> str:
        where = "" if self.snap is Snap.EXACT else f"+{self.snap.value}"
        return f"{self.action.value}@{self.offset}{where}"


@dataclass(frozen=True)
class Plan:
    """What the proxy does to one connection.

    Attributes:
        c2s: the fault of the client-to-server direction, or None (pass).
        s2c: the fault of the server-to-client direction, or None (pass).
        strip_chunking: hide CHUNKING from the server's (plaintext) EHLO reply.
    """

    c2s: Fault | None = None
    s2c: Fault | None = None
    strip_chunking: bool = False

    def __str__(self) -> str:
        parts = [f"c2s={self.c2s or 'pass'}", f"s2c={self.s2c or 'pass'}"]
        if self.strip_chunking:
            parts.append("no-chunking")
        return " ".join(parts)


class PlanSource(Protocol):
    """What a proxy takes its plans from: a label, and a plan per connection number."""

    @property
    def label(self) -> str: ...

    def plan(self, index: int) -> Plan: ...


@dataclass(frozen=True)
class Planner:
    """Draws each connection's plan from (seed, label, connection number).

    Attributes:
        seed: the run's seed.
        label: which proxy (one per client or pool), so proxies draw apart.
        fault_rate: the chance, per direction, that a connection has a fault.
        c2s_horizon: offsets of client-to-server faults are drawn up to this.
        s2c_horizon: offsets of server-to-client faults are drawn up to this.
        strip_chunking_rate: the chance that CHUNKING is hidden (plaintext only).
        early_rate: the share of faults whose offset is drawn log-uniformly below 1024
            (the greeting, EHLO, STARTTLS and the TLS handshake), not up to the horizon.
        actions: the actions drawn from, with their weights.
    """

    seed: int
    label: str
    fault_rate: float = 0.3
    c2s_horizon: int = 20_000
    s2c_horizon: int = 3_000
    strip_chunking_rate: float = 0.5
    early_rate: float = 0.5
    actions: tuple[tuple[Action, float], ...] = (
        (Action.CLOSE, 1.0),
        (Action.RESET, 1.0),
        (Action.STALL, 1.0),
    )

    def _fault(self, rng: random.Random, horizon: int) -> Fault | None:
        if rng.random() >= self.fault_rate:
            return None
        kinds = [action for action, _ in self.actions]
        weights = [weight for _, weight in self.actions]
        action = rng.choices(kinds, weights)[0]
        # Some offsets are small (log-uniform): the greeting, EHLO, STARTTLS and the first
        # transaction get their share of faults; the others spread over the session.
        early = rng.random() < self.early_rate
        offset = int(2 ** rng.uniform(0, 10)) if early else rng.randrange(horizon)
        snap = rng.choices(list(Snap), (0.4, 0.35, 0.25))[0]
        return Fault(action, offset, snap)

    def plan(self, index: int) -> Plan:
        rng = random.Random(f"{self.seed}/{self.label}/{index}")
        c2s = self._fault(rng, self.c2s_horizon)
        s2c = self._fault(rng, self.s2c_horizon)
        return Plan(c2s, s2c, strip_chunking=rng.random() < self.strip_chunking_rate)


@dataclass(frozen=True)
class Fired:
    """A fault that happened.

    Attributes:
        direction: "c2s" or "s2c".
        action: what it did.
        at: the bytes of that direction forwarded before it.
        before: the last bytes forwarded (up to 120), to tell where in the protocol.
        after: the first bytes not forwarded, when they were at hand (up to 40).
    """

    direction: str
    action: Action
    at: int
    before: bytes
    after: bytes

    @property
    def kind(self) -> str:
        """E.g. "s2c reset"."""
        return f"{self.direction} {self.action.value}"

    def __str__(self) -> str:
        return f"{self.kind}@{self.at} after {self.before[-40:]!r}"


@dataclass
class ConnectionRecord:
    """What happened to one proxied connection.

    Attributes:
        label: the proxy's label.
        index: the connection's number on that proxy (from 0).
        plan: its fault plan.
        c2s_bytes: client-to-server bytes forwarded.
        s2c_bytes: server-to-client bytes forwarded.
        fired: the faults that happened (shown as, e.g.,
            ``s2c stall@812 after b'354 End data with <CR><LF>.<CR><LF>\\r\\n'``).
        ended: how it ended: "client closed", "server closed", "close", "reset",
            "stall expired", "upstream refused", "proxy stopped", or an error.
        message_ids: Message-IDs seen in the client's plaintext, in order.
        recipients: RCPT TO addresses seen in the client's plaintext, in order.
        started: time.monotonic() at accept.
        duration: seconds until the end.
    """

    label: str
    index: int
    plan: Plan
    c2s_bytes: int = 0
    s2c_bytes: int = 0
    fired: list[Fired] = field(default_factory=list)
    ended: str = ""
    message_ids: list[str] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    started: float = 0.0
    duration: float = 0.0

    def describe(self) -> str:
        fired = ", ".join(map(str, self.fired)) or "nothing fired"
        return (
            f"{self.label}#{self.index} [{self.plan}]: {fired}; "
            f"{self.c2s_bytes} B c2s, {self.s2c_bytes} B s2c; ended: {self.ended} "
            f"after {self.duration:.2f} s"
        )


def _reset_socket(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connection:
    def __init__(
        self,
        proxy: FaultProxy,
        record: ConnectionRecord,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.record = record
        self.client_reader, self.client_writer = client
        self.server_reader, self.server_writer = server
        self.stalled_since: float | None = None
        self._id_tail = b""

    async def run(self) -> None:
        plan = self.record.plan
        c2s = asyncio.ensure_future(
            self._pump("c2s", self.client_reader, self.server_writer, plan.c2s, False)
        )
        s2c = asyncio.ensure_future(
            self._pump("s2c", self.server_reader, self.client_writer, plan.s2c, plan.strip_chunking)
        )
        watchdog = asyncio.ensure_future(self._watch_stall())
        how = "proxy stopped"
        try:
            done, _ = await asyncio.wait({c2s, s2c, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            first = done.pop()
            error = first.exception()
            how = first.result() if error is None else f"error: {error!r}"
        finally:
            for task in (c2s, s2c, watchdog):
                task.cancel()
            for task in (c2s, s2c, watchdog):
                with contextlib.suppress(BaseException):
                    await task
            self._end(how)

    def _end(self, how: str) -> None:
        self.record.ended = self.record.ended or how
        self.record.duration = time.monotonic() - self.record.started
        if how in ("reset", "stall expired"):
            _reset_socket(self.client_writer)
            _reset_socket(self.server_writer)
        else:
            for writer in (self.client_writer, self.server_writer):
                with contextlib.suppress(Exception):
                    writer.close()

    async def _watch_stall(self) -> str:
        while True:
            await asyncio.sleep(0.1)
            since = self.stalled_since
            if since is not None and time.monotonic() - since > self.proxy.stall_limit:
                return "stall expired"

    def _note_message_ids(self, data: bytes) -> None:
        chunk = self._id_tail + data
        self.record.message_ids.extend(
            match.group(1).decode("ascii", "replace") for match in _MESSAGE_ID.finditer(chunk)
        )
        self.record.recipients.extend(
            match.group(1).decode("ascii", "replace") for match in _RCPT.finditer(chunk)
        )
        # Keep enough to find a header split between two reads, but never one found.
        tail = chunk[-260:]
        last = tail.rfind(b"\n")
        self._id_tail = tail[last:] if last >= 0 else tail

    async def _pump(
        self,
        direction: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fault: Fault | None,
        strip_chunking: bool,
    ) -> str:
        record = self.record
        count = 0
        held = b""  # the end of a read that may be the start of "CHUNKING"
        tail = b""  # the last bytes forwarded, where a mark may begin
        stalled = False
        while True:
            try:
                data = await reader.read(_READ_SIZE)
            except OSError as exc:
                return f"{'client' if direction == 'c2s' else 'server'} error: {exc!r}"
            if not data:
                if held and not stalled:
                    writer.write(held)
                    with contextlib.suppress(OSError):
                        await writer.drain()
                return "client closed" if direction == "c2s" else "server closed"
            if stalled:
                continue
            if strip_chunking:
                data = held + data
                data = data.replace(_CHUNKING, _NOT_CHUNKING)
                held = b""
                if _TLS_READY in data:
                    # What follows is TLS, where nothing may be held back.
                    strip_chunking = False
                else:
                    for size in range(len(_CHUNKING) - 1, 0, -1):
                        if data.endswith(_CHUNKING[:size]):
                            data, held = data[:-size], data[-size:]
                            break
            if direction == "c2s":
                self._note_message_ids(data)
            cut, fire = len(data), False
            if fault is not None and count + len(data) >= fault.offset:
                found = _cut(direction, fault.snap, data, max(fault.offset - count, 0), tail)
                if found is not None:
                    cut, fire = found, True
                # else: snapping, and no line end or mark in this read: forward, look on.
            tail = (tail + data[:cut])[-_TAIL:]
            if cut:
                writer.write(data[:cut])
                try:
                    await writer.drain()
                except OSError as exc:
                    return f"{'server' if direction == 'c2s' else 'client'} error: {exc!r}"
                count += cut
                if direction == "c2s":
                    record.c2s_bytes = count
                else:
                    record.s2c_bytes = count
            if not fire or fault is None:
                continue
            # What went just before the cut, to tell where in the protocol it was.
            record.fired.append(
                Fired(direction, fault.action, count, tail[-120:], data[cut : cut + 40])
            )
            if fault.action is Action.CLOSE:
                return "close"
            if fault.action is Action.RESET:
                return "reset"
            stalled, fault = True, None
            self.stalled_since = time.monotonic()


def _cut(direction: str, snap: Snap, data: bytes, at: int, tail: bytes) -> int | None:
    # Where in ``data`` to cut for a fault due at ``at`` (None: not in this read).
    if snap is Snap.EXACT:
        return at
    if snap is Snap.LINE:
        newline = data.find(b"\n", at)
        return newline + 1 if newline >= 0 else None
    both = tail + data
    if direction == "c2s":
        # After an end of data that ends in this read, at or after ``at``.
        start = max(len(tail) + at - len(_END_OF_DATA), 0)
        while (found := both.find(_END_OF_DATA, start)) >= 0:
            end = found + len(_END_OF_DATA) - len(tail)
            if end > 0 and end >= at:
                return end
            start = found + 1
        return None
    # Before a final reply at the start of a line, beginning in this read.
    found = data.find(_QUEUED, at)
    while found >= 0 and not (found == 0 and (not tail or tail.endswith(b"\n"))):
        if found > 0 and data[found - 1 : found] == b"\n":
            break
        found = data.find(_QUEUED, found + 1)
    return found if found >= 0 else None


class FaultProxy:
    """One listening proxy to ``upstream``; connections follow ``planner``'s plans.

    Start it and stop it on the loop it runs on (see `ProxyThread`).

    Attributes:
        port: the port it listens on (after start).
        records: one per accepted connection, in accept order.
    """

    def __init__(
        self, upstream: tuple[str, int], planner: PlanSource, *, stall_limit: float = 10.0
    ) -> None:
        self.upstream = upstream
        self.planner = planner
        self.stall_limit = stall_limit
        self.records: list[ConnectionRecord] = []
        self.port = 0
        self._counter = itertools.count()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, backlog=128)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening and end every connection still open."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        index = next(self._counter)
        record = ConnectionRecord(
            self.planner.label, index, self.planner.plan(index), started=time.monotonic()
        )
        self.records.append(record)
        try:
            try:
                server = await asyncio.wait_for(asyncio.open_connection(*self.upstream), 10)
            except (OSError, TimeoutError) as exc:
                record.ended = f"upstream refused: {exc!r}"
                record.duration = time.monotonic() - record.started
                _reset_socket(writer)
                return
            # No buffering in the proxy: drain() returns once the kernel has every byte,
            # so what was forwarded before a reset really went out.
            writer.transport.set_write_buffer_limits(0)
            server[1].transport.set_write_buffer_limits(0)
            await _Connection(self, record, (reader, writer), server).run()
        except asyncio.CancelledError:
            # Stopped: the connection has ended (see run); the server's callback must not
            # find a cancelled task.
            record.ended = record.ended or "proxy stopped"
        finally:
            self._tasks.discard(task)


class ProxyThread:
    """An asyncio loop in a daemon thread that runs fault proxies.

    Use as a context manager; `add()` starts a proxy and returns it (its port is set).
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self.proxies: list[FaultProxy] = []

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def __enter__(self) -> ProxyThread:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
        future: Future[_T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def add(
        self, upstream: tuple[str, int], planner: PlanSource, *, stall_limit: float = 10.0
    ) -> FaultProxy:
        proxy = FaultProxy(upstream, planner, stall_limit=stall_limit)
        self.call(proxy.start())
        self.proxies.append(proxy)
        return proxy

    def stop_all(self) -> None:
        """End every proxy's connections and stop them listening."""
        for proxy in self.proxies:
            self.call(proxy.stop())

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self.stop_all()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()

    def records(self) -> list[ConnectionRecord]:
        return [record for proxy in self.proxies for record in proxy.records]


def faults_fired(records: list[ConnectionRecord]) -> dict[str, int]:
    """How many times each (direction, action) fired, e.g. ``{"s2c reset": 12}``."""
    counts: dict[str, int] = {}
    for record in records:
        for fired in record.fired:
            counts[fired.kind] = counts.get(fired.kind, 0) + 1
    return dict(sorted(counts.items()))
