"""bench/reference_clients.py, bench_rtt.py's proxy and run_all's new sections, on loopback.

The minimal clients are the benchmarks' floor: they must deliver what they are given,
exactly (dot-stuffing undone by the server gives the body back), to every recipient,
and stop at any refusal. Nothing is timed here.
"""

from __future__ import annotations

import asyncio
import copy
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from smtpbee.testing import Command, ServerSession, ThreadedServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import bench_rtt
import reference_clients
import run_all
from reference_clients import Message, RefusedError
from test_bench_run_all import FIGURES

ScriptedFactory = Callable[..., ThreadedServer]

BODY = b"Subject: stuffing\r\n\r\n.a line with a dot\r\n..two dots\r\nplain\r\n.\r\nend\r\n"
RECIPIENTS = ["one@x.test", "two@x.test", "three@x.test"]


def send(style: str, port: int, messages: list[Message], *, chunking: bool, **options: Any) -> int:
    if style == "blocking":
        return reference_clients.send_blocking(port, messages, chunking=chunking, **options)
    if style == "asyncio":
        sending = reference_clients.send_asyncio(port, messages, chunking=chunking, **options)
        return asyncio.run(asyncio.wait_for(sending, 10))

    async def with_timeout() -> int:
        with trio.fail_after(10):
            return await reference_clients.send_trio(port, messages, chunking=chunking, **options)

    return trio.run(with_timeout)


STYLES = ["blocking", "asyncio", "trio"]


@pytest.mark.parametrize("chunking", [False, True], ids=["DATA", "BDAT"])
@pytest.mark.parametrize("style", STYLES)
def test_every_message_arrives_whole(
    scripted_server: ScriptedFactory, style: str, chunking: bool
) -> None:
    server = scripted_server()
    messages: list[Message] = [("from@x.test", RECIPIENTS, BODY)] * 3
    messages.append(("", ["last@x.test"], b"no line end at the end"))
    assert send(style, server.port, messages, chunking=chunking) == 4
    received = server.messages
    assert [message.content for message in received] == [BODY] * 3 + [
        b"no line end at the end" + (b"" if chunking else b"\r\n")
    ]
    assert [list(message.recipients) for message in received] == [RECIPIENTS] * 3 + [
        ["last@x.test"]
    ]
    assert [message.sender for message in received] == ["from@x.test"] * 3 + [""]
    assert all(bool(message.chunks) == chunking for message in received)


@pytest.mark.parametrize("chunking", [False, True], ids=["DATA", "BDAT"])
def test_a_file_goes_in_chunks_and_arrives_whole(
    scripted_server: ScriptedFactory, chunking: bool
) -> None:
    server = scripted_server()
    # Lines that start with a dot fall on chunk boundaries too: 7-byte chunks.
    content = b"".join(b".%03d\r\n" % number for number in range(40)) + b"..\r\n"
    messages: list[Message] = [("from@x.test", ["to@x.test"], io.BytesIO(content))]
    assert send("blocking", server.port, messages, chunking=chunking, chunk_size=7) == 1
    (received,) = server.messages
    assert received.content == content
    if chunking:
        assert len(received.chunks) == -(-len(content) // 7)


@pytest.mark.parametrize("chunking", [False, True], ids=["DATA", "BDAT"])
@pytest.mark.parametrize("style", STYLES)
def test_a_refused_recipient_is_an_error(
    scripted_server: ScriptedFactory, style: str, chunking: bool
) -> None:
    def rcpt(command: Command, session: ServerSession) -> Any:
        if "two@" in command.argument:
            return "550 5.1.1 no such user"
        return session.default(command)

    server = scripted_server({"RCPT": rcpt})
    with pytest.raises(RefusedError, match="recipient"):
        send(style, server.port, [("a@x.test", RECIPIENTS, BODY)], chunking=chunking)


def test_a_refused_message_is_an_error(scripted_server: ScriptedFactory) -> None:
    server = scripted_server({"MESSAGE": "554 5.6.0 not this one"})
    with pytest.raises(RefusedError):
        send("blocking", server.port, [("a@x.test", ["b@x.test"], BODY)], chunking=True)
    assert server.messages == []


def test_a_server_without_chunking_is_not_sent_bdat(scripted_server: ScriptedFactory) -> None:
    server = scripted_server(extensions=["PIPELINING", "8BITMIME"])
    with pytest.raises(RefusedError, match="CHUNKING"):
        send("blocking", server.port, [("a@x.test", ["b@x.test"], BODY)], chunking=True)
    assert send("blocking", server.port, [("a@x.test", ["b@x.test"], BODY)], chunking=False) == 1


@pytest.mark.parametrize(("chunking", "per_message"), [(False, 2), (True, 1)])
def test_the_proxy_counts_round_trips(
    scripted_server: ScriptedFactory, chunking: bool, per_message: int
) -> None:
    server = scripted_server()
    messages: list[Message] = [("a@x.test", RECIPIENTS, BODY)] * 5
    with bench_rtt.DelayProxy(server.port, 0.001) as proxy:
        send("blocking", proxy.port, [], chunking=chunking)
        idle = proxy.take()
        send("blocking", proxy.port, messages, chunking=chunking)
        busy = proxy.take()
    # EHLO and QUIT; then each message one (BDAT) or two (DATA) round trips more.
    assert idle == 2
    assert busy - idle == 5 * per_message
    assert len(server.messages) == 5


def test_the_new_sections_are_rendered() -> None:
    figures = copy.deepcopy(FIGURES)
    case = {"user_us": 40.0, "sys_us": 20.0, "cpu_us": 60.0, "msgs_per_s": 9000.0}
    figures["cpu"] = {
        "messages": 10,
        "rcpt_messages": 2,
        "recipients": 101,
        "rounds": 1,
        "message_bytes": 1024,
        "sinks": {},
        "rows": [
            {
                "client": "minimal blocking",
                "floor": "minimal blocking",
                "data_only": False,
                "data": {
                    "rcpt1": case,
                    "rcpt101": case | {"cpu_us": 160.0},
                    "us_per_extra_rcpt": 1.0,
                    "x_floor": 1.0,
                },
                "bdat": None,
            }
        ],
        "smtp_source": None,
    }
    figures["rtt"] = {
        "messages": 10,
        "transactions": 1,
        "recipients": 100,
        "delay_ms": 5.0,
        "delayed_by": "proxy",
        "rtt_ms": 10.4,
        "sinks": {"bdat": "PIPELINING+CHUNKING"},
        "rows": [
            {
                "case": "bulk",
                "sink": "bdat",
                "client": "smtplib",
                "messages": 10,
                "rt_per_msg": 4.0,
                "ms_per_msg": 41.5,
            }
        ],
    }
    figures["big"] = {
        "size_mb": 100,
        "gigabyte": False,
        "rows": [
            {
                "size_mb": 100,
                "source": "file",
                "client": "smtplib",
                "data": {
                    "mb_per_s": 80.0,
                    "cpu_s": 1.25,
                    "user_s": 1.0,
                    "sys_s": 0.25,
                    "peak_mb": 300.0,
                },
                "bdat": {"skipped": "knows no BDAT"},
            }
        ],
    }
    figures["pool"] = {
        "messages": 100,
        "message_bytes": 1024,
        "connections": [8],
        "rounds": 1,
        "rows": [{"client": "minimal trio", "8": {"msgs_per_s": 5000.0, "cpu_us": 70.0}}],
    }
    document = run_all.render(figures)
    for row in (
        "| minimal blocking | 40 | 20 | 60 | 1.00 | 9,000 |",
        "| minimal blocking | 160 | 9,000 | 1.00 |",
        "| bulk | PIPELINING+CHUNKING | smtplib \\* | 4.00 | 41.5 |",
        "| 100 MB from file | smtplib | 80 | 1.25 | 300 | knows no BDAT | - | - |",
        "| minimal trio | 5,000 | 70 |",
    ):
        assert row in document
    assert "left the 1,000 MB message out" in document


def test_the_sections_are_left_out_of_an_older_document() -> None:
    document = run_all.render(FIGURES)
    assert "bench_cpu.py" not in document
    assert "bench_pool.py" not in document


# The asyncio client with N tasks, as bench_pool.py runs it.
def test_minimal_clients_share_a_server(scripted_server: ScriptedFactory) -> None:
    server = scripted_server()

    async def main() -> list[int]:
        messages: list[Message] = [("a@x.test", ["b@x.test"], BODY)] * 3
        sends = [
            reference_clients.send_asyncio(server.port, messages, chunking=False) for _ in range(4)
        ]
        return await asyncio.wait_for(asyncio.gather(*sends), 10)

    assert asyncio.run(main()) == [3, 3, 3, 3]
    assert len(server.messages) == 12
