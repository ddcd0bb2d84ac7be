"""Work stays linear in the input: CPU per byte (or per item) at two sizes, as a ratio.

No timing is asserted. Each case measures the CPU time of the same work on an
input n and 4n long (best of several runs); linear work gives a ratio near 4,
quadratic work near 16. The bound (8) leaves room for noise and cache effects
while failing any quadratic step, which within the reply limits cost seconds
of an event loop's time where no timeout can fire.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from smtpbee import (
    NEED_DATA,
    Connection,
    Ehlo,
    Extensions,
    Mail,
    Rcpt,
    Reply,
    ReplyLimits,
    SendResult,
)

RUNS = 5
BOUND = 8.0


def cpu(work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(RUNS):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return max(best, 1e-6)


def ratio(make: Callable[[int], Callable[[], object]], n: int) -> float:
    return cpu(make(4 * n)) / cpu(make(n))


def ehlo_reply(params: int) -> bytes:
    """One keyword advertised with many distinct parameters over many lines."""
    lines = [b"250-mx.test"]
    for start in range(0, params, 100):
        words = b" ".join(b"P%d" % i for i in range(start, min(start + 100, params)))
        lines.append(b"250-AUTH " + words)
    lines.append(b"250 PIPELINING")
    return b"\r\n".join(lines) + b"\r\n"


def through_the_connection(params: int) -> Callable[[], object]:
    data = ehlo_reply(params)
    limits = ReplyLimits(max_reply_size=1 << 20)

    def work() -> object:
        conn = Connection(limits=limits)
        conn.receive_data(b"220 mx\r\n")
        conn.next_event()
        conn.send(Ehlo("c.test"))
        conn.receive_data(data)
        return conn.next_event()

    return work


def test_a_large_ehlo_reply_costs_linear_cpu() -> None:
    # 1,500 and 6,000 parameters: about 12 and 50 KiB, within the default limits too.
    assert len(ehlo_reply(6000)) < ReplyLimits().max_reply_size
    assert ratio(through_the_connection, 1500) < BOUND


def test_extensions_from_a_reply_cost_linear_cpu() -> None:
    def make(params: int) -> Callable[[], object]:
        lines = tuple(b"X-%d p%d q%d" % (i, i, i) for i in range(params))
        reply = Reply(code=250, lines=(b"mx", *lines))
        return lambda: Extensions.from_reply(reply)

    assert ratio(make, 2000) < BOUND


def test_send_result_accepted_costs_linear_cpu() -> None:
    ok = Reply(code=250, lines=(b"ok",))
    no = Reply(code=550, lines=(b"no",))

    def make(recipients: int) -> Callable[[], object]:
        replies = {f"r{i}@x.test": ok if i % 3 else no for i in range(recipients)}
        result = SendResult(recipients=replies)
        return lambda: (result.accepted, result.refused)

    assert ratio(make, 1000) < BOUND


@pytest.mark.parametrize("chunk", [1, 4096])
def test_many_pipelined_replies_cost_linear_cpu(chunk: int) -> None:
    def make(count: int) -> Callable[[], object]:
        data = b"250 2.1.0 ok\r\n" + b"250 2.1.5 ok\r\n" * count
        group = [Mail(sender="a@x.test"), *[Rcpt(recipient=f"b{i}@x.test") for i in range(count)]]

        def work() -> object:
            conn = Connection()
            conn.receive_data(b"220 mx\r\n")
            conn.next_event()
            conn.send(Ehlo("c.test"))
            conn.receive_data(b"250-mx\r\n250 PIPELINING\r\n")
            conn.next_event()
            conn.send_all(group)
            for start in range(0, len(data), chunk):
                conn.receive_data(data[start : start + chunk])
                while conn.next_event() is not NEED_DATA:
                    pass
            assert not conn.pending
            return conn

        return work

    assert ratio(make, 200 if chunk == 1 else 1000) < BOUND
