# tests/test_soak: the fault-injection soak, small enough for every test run.
#
# The proxy's faults are checked on their own first, against a loopback server that
# records what reaches it (no Postfix needed): each action does what it says at the
# byte it says, and the plans are a function of the seed. Then the smoke: 300 messages
# through bench/soak.py's lanes (asyncio, trio and blocking, pools and clients, plain
# and STARTTLS) and the fault proxy into the private Postfix, reconciled with its
# maildir: nothing reported delivered is missing, nothing reported failed arrived,
# nothing arrived twice or altered, and every kind of outcome really occurred.
"""The fault proxy, and a short fault-injection soak against Postfix."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultproxy import Action, Fault, Plan, Planner, ProxyThread, Snap
from servers import PostfixServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import soak

# --------------------------------------------------------------------------------------
# The proxy alone


class _Upstream:
    """A loopback server that sends ``greeting`` to each client and keeps what it reads."""

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.received: list[bytes] = []
        self.ends: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        got = b""
        with conn:
            conn.settimeout(10)
            try:
                if self.greeting:
                    conn.sendall(self.greeting)
                while data := conn.recv(65536):
                    got += data
                self.ends.append("eof")
            except OSError as exc:
                self.ends.append(type(exc).__name__)
            self.received.append(got)

    def wait(self, count: int = 1) -> None:
        deadline = time.monotonic() + 10
        while len(self.ends) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self.listener.close()


class _Fixed:
    """Every connection gets the same plan."""

    label = "test"

    def __init__(self, plan: Plan) -> None:
        self.fixed = plan

    def plan(self, index: int) -> Plan:
        return self.fixed


@pytest.fixture
def proxies() -> Iterator[ProxyThread]:
    with ProxyThread() as thread:
        yield thread


def _proxy(thread: ProxyThread, upstream: _Upstream, plan: Plan, stall_limit: float = 3.0) -> int:
    return thread.add(("127.0.0.1", upstream.port), _Fixed(plan), stall_limit=stall_limit).port


def _read_all(sock: socket.socket) -> tuple[bytes, str]:
    got = b""
    try:
        while data := sock.recv(65536):
            got += data
    except TimeoutError:
        return got, "timeout"
    except ConnectionResetError:
        return got, "reset"
    return got, "eof"


def test_plans_follow_the_seed() -> None:
    first = [Planner(7, "lane", fault_rate=0.5).plan(n) for n in range(50)]
    assert first == [Planner(7, "lane", fault_rate=0.5).plan(n) for n in range(50)]
    assert first != [Planner(8, "lane", fault_rate=0.5).plan(n) for n in range(50)]
    assert first != [Planner(7, "other", fault_rate=0.5).plan(n) for n in range(50)]
    drawn = {fault.action for plan in first for fault in (plan.c2s, plan.s2c) if fault}
    assert drawn == set(Action)
    assert all(
        plan == Plan() for plan in map(Planner(7, "x", 0, strip_chunking_rate=0).plan, range(50))
    )


def test_close_at_an_offset_forwards_exactly_that_much(proxies: ProxyThread) -> None:
    upstream = _Upstream()
    port = _proxy(proxies, upstream, Plan(c2s=Fault(Action.CLOSE, 10)))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"0123456789abcdef")
        assert _read_all(sock) == (b"", "eof")
    upstream.wait()
    assert upstream.received == [b"0123456789"]
    assert upstream.ends == ["eof"]
    record = proxies.records()[0]
    assert str(record.fired[0]) == "c2s close@10 after b'0123456789'"
    assert record.fired[0].after == b"abcdef" and record.ended == "close"
    upstream.close()


def test_reset_resets_both_sides(proxies: ProxyThread) -> None:
    upstream = _Upstream(b"220 hello\r\n250 more\r\n")
    port = _proxy(proxies, upstream, Plan(s2c=Fault(Action.RESET, 3, Snap.LINE)))
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except ConnectionResetError:
        # On loopback the RST can come back before connect() has returned.
        got, end = b"", "reset"
    else:
        with sock:
            got, end = _read_all(sock)
    # Snapped to the end of the first line; the RST may overtake the data on delivery.
    assert b"220 hello\r\n".startswith(got) and end == "reset"
    upstream.wait()
    assert upstream.ends == ["ConnectionResetError"]
    upstream.close()


def test_stall_forwards_nothing_more_until_the_client_gives_up(proxies: ProxyThread) -> None:
    upstream = _Upstream(b"220 hello\r\n")
    port = _proxy(proxies, upstream, Plan(s2c=Fault(Action.STALL, 4)))
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        assert _read_all(sock) == (b"220 ", "timeout")
        sock.sendall(b"QUIT\r\n")  # still forwarded: only the server's side stalls
    upstream.wait()
    assert upstream.received == [b"QUIT\r\n"]
    record = proxies.records()[0]
    assert record.ended == "client closed"


def test_a_stall_nobody_ends_expires(proxies: ProxyThread) -> None:
    upstream = _Upstream(b"220 hello\r\n")
    port = _proxy(proxies, upstream, Plan(s2c=Fault(Action.STALL, 0)), stall_limit=0.5)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        assert _read_all(sock) == (b"", "reset")
    assert proxies.records()[0].ended == "stall expired"
    upstream.close()


def test_marks_are_the_end_of_data_and_the_final_reply(proxies: ProxyThread) -> None:
    upstream = _Upstream(b"354 go\r\n250 2.0.0 Ok: queued as 1\r\n")
    port = _proxy(
        proxies,
        upstream,
        Plan(c2s=Fault(Action.CLOSE, 0, Snap.MARK), s2c=Fault(Action.STALL, 0, Snap.MARK)),
    )
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        got = b""
        while not got.endswith(b"\r\n"):
            got += sock.recv(100)
        assert got == b"354 go\r\n"
        sock.sendall(b"Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@b>\r\n")
        _read_all(sock)
    upstream.wait()
    assert upstream.received == [b"Subject: x\r\n\r\nbody\r\n.\r\n"]
    upstream.close()


def test_chunking_can_be_hidden(proxies: ProxyThread) -> None:
    ehlo = b"250-localhost\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
    upstream = _Upstream(ehlo)
    port = _proxy(proxies, upstream, Plan(strip_chunking=True))
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        got = b""
        while len(got) < len(ehlo):
            got += sock.recv(100)
    assert got == ehlo.replace(b"CHUNKING", b"X-CHUNKS")
    upstream.close()


# --------------------------------------------------------------------------------------
# The smoke soak against Postfix

SMOKE = soak.Config(
    messages=300,
    seed=20260601,
    fault_rate=0.5,
    timeout=1.0,
    max_messages=8,
    queue_timeout=40.0,
    quiet=True,
)


def test_soak_smoke(postfix: PostfixServer) -> None:
    report = soak.run(SMOKE, postfix)
    text = soak.format_report(report)
    total = report.total
    assert report.queue_drained, text
    assert total.sent == SMOKE.messages, text
    assert total.duplicates == 0, text
    assert total.lost == 0, text
    assert total.failed_arrived == 0, text
    assert total.crashed == 0, text
    assert total.corrupt == 0, text
    # Every kind of outcome happened, and the faults caused failures of their own.
    assert total.delivered > 0 and total.failed > 0 and total.unknown > 0, text
    assert total.errors.get("OutcomeUnknownError") == total.unknown, text
    assert total.errors.get("ConnectionLostError", 0) + total.errors.get("SMTPTimeoutError", 0)
    assert set(report.faults_fired) >= {"c2s close", "c2s reset", "s2c reset", "s2c stall"}, text
    for transport in ("asyncio", "trio", "sync"):
        lanes = [f for name, f in report.lanes.items() if name.startswith(transport)]
        assert sum(f.faults for f in lanes) > 0, text
    assert report.violations == [], text


# --------------------------------------------------------------------------------------
# The soak notices the bugs it is there for: two planted on purpose


def _mutant_config(lanes: tuple[str, ...], messages: int) -> soak.Config:
    return soak.Config(
        messages=messages,
        seed=5,
        fault_rate=0.8,
        timeout=1.0,
        max_messages=5,
        lanes=lanes,
        queue_timeout=40.0,
        quiet=True,
    )


def test_the_soak_sees_a_pool_that_resends_after_the_content(
    postfix: PostfixServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import smtpbee.transports._async.sending as async_sending

    # The planted bug: every failure is sent again, OutcomeUnknownError too.
    monkeypatch.setattr(async_sending, "may_retry", lambda exc, *, lmtp: True)
    report = soak.run(_mutant_config(("asyncio-pool",), 150), postfix)
    assert report.total.duplicates > 0, soak.format_report(report)
    assert report.violations[0]["connections"], soak.format_report(report)


def test_the_soak_sees_an_unknown_outcome_reported_as_a_failure(
    postfix: PostfixServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import smtpbee._exchange as exchange

    def fail(self: exchange.Exchange, exc: Any, *, answered: bool = False) -> Any:
        # The planted bug: a failure after the content is not OutcomeUnknownError.
        if not answered:
            self.conn.send_failed()
        return exc

    monkeypatch.setattr(exchange.Exchange, "fail", fail)
    report = soak.run(_mutant_config(("sync-client",), 60), postfix)
    assert report.total.unknown == 0, soak.format_report(report)
    assert report.total.failed_arrived > 0, soak.format_report(report)
