"""How the blocking transport writes and waits: buffers as given, few settimeout() calls.

A Write carries command lines and content as the caller handed it over; the
blocking client sends them with sendmsg() (one by one over TLS) and keeps the
socket timeout it has when that never lets a wait run past its own deadline.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import threading
import time
from typing import Any

import pytest
from smtpbee import SMTPError, Timeouts
from smtpbee.testing import DEFAULT, pause, stall
from smtpbee.transports._writes import SLICE, pieces_to_send
from smtpbee.transports.sync import SMTPClient

SENDER, RECIPIENT = "a@x.test", "b@x.test"
MESSAGE = b"Subject: hi\r\n\r\nHello.\r\n"


class CountingSocket(socket.socket):
    """A socket that counts the timeouts set on it and the sends that timed out.

    A timeout is set either by settimeout() or, where the kernel keeps it
    (Linux), by SO_RCVTIMEO; settimeout(None), which hands the timeout to the
    kernel, sets none.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeouts_set: list[float] = []
        self.sends_timed_out = 0

    def settimeout(self, value: float | None) -> None:
        if value is not None:
            self.timeouts_set.append(value)
        super().settimeout(value)

    def setsockopt(self, level: int, option: int, value: Any, *rest: Any) -> None:
        if (level, option) == (socket.SOL_SOCKET, socket.SO_RCVTIMEO):
            seconds, micros = struct.unpack("ll", value)
            self.timeouts_set.append(seconds + micros / 1_000_000)
        super().setsockopt(level, option, value, *rest)

    def _counted(self, sent: int, asked: int) -> int:
        # A blocking socket returns short only when SO_SNDTIMEO ran out.
        if self.gettimeout() is None and sent < asked:
            self.sends_timed_out += 1
        return sent

    def sendmsg(self, buffers: Any, *args: Any) -> int:
        try:
            sent = super().sendmsg(buffers, *args)
        except (TimeoutError, BlockingIOError):
            self.sends_timed_out += 1
            raise
        return self._counted(sent, sum(len(buffer) for buffer in buffers))

    def send(self, data: Any, *args: Any) -> int:
        try:
            sent = super().send(data, *args)
        except (TimeoutError, BlockingIOError):
            self.sends_timed_out += 1
            raise
        return self._counted(sent, len(data))


def connected(server: Any, **kwargs: Any) -> tuple[SMTPClient, CountingSocket]:
    sock = CountingSocket(socket.AF_INET, socket.SOCK_STREAM)
    sock.connect((server.host, server.port))
    return SMTPClient(sock=sock, tls="none", **kwargs), sock


def test_pieces_to_send_joins_small_runs_and_slices_large_pieces() -> None:
    large = bytes(range(256)) * (SLICE // 100)
    buffers = [b"MAIL FROM:<a@x.test>\r\n", b"RCPT TO:<b@x.test>\r\n", b"BDAT 1\r\n", large, b""]
    pieces = list(pieces_to_send(buffers))
    assert b"".join(pieces) == b"".join(buffers)
    assert pieces[0] == b"".join(buffers[:3])
    views = [piece for piece in pieces if isinstance(piece, memoryview)]
    assert len(views) == 3 and all(view.obj is large for view in views)
    assert list(pieces_to_send([b"one"])) == [b"one"]
    assert list(pieces_to_send([])) == []


def test_a_small_run_after_a_large_piece_is_joined_again() -> None:
    large = b"z" * (SLICE + 1)
    pieces = list(pieces_to_send([large, b"a", b"b", b"c" * (SLICE + 1)]))
    assert [len(piece) for piece in pieces] == [SLICE, 1, 2, SLICE, 1]
    # Two pieces too large together are two writes, neither copied.
    halves = [b"h" * 40_000, b"i" * 40_000]
    pieces = list(pieces_to_send(halves))
    assert len(pieces) == 2 and pieces[0] is halves[0] and pieces[1] is halves[1]


def test_messages_under_the_default_timeouts_set_the_socket_timeout_rarely(
    scripted_server: Any,
) -> None:
    # Each phase has its own default timeout (180 s to write content, 300 s
    # for MAIL's reply, 600 s for the final one): setting each exactly would
    # take several settimeout() calls per message.
    server = scripted_server()
    client, sock = connected(server)
    with client:
        client.sendmail(SENDER, [RECIPIENT], MESSAGE)
        before = len(sock.timeouts_set)
        for _ in range(20):
            client.sendmail(SENDER, [RECIPIENT], MESSAGE)
        assert len(sock.timeouts_set) - before <= 1


def test_a_reply_slower_than_the_socket_timeout_is_still_awaited(scripted_server: Any) -> None:
    # The greeting leaves a 0.3 s socket timeout, which the 1.5 s waits keep:
    # a NOOP answered after 0.8 s needs the wait to be taken up again.
    server = scripted_server({"NOOP": [pause(0.8), DEFAULT]})
    timeouts = dataclasses.replace(Timeouts.uniform(1.5), greeting=0.3)
    client, sock = connected(server, timeouts=timeouts)
    with client:
        assert client.noop().code == 250
    (only,) = sock.timeouts_set
    assert only == pytest.approx(0.3)


def test_a_stalled_server_times_out_on_time_under_a_shorter_socket_timeout(
    scripted_server: Any,
) -> None:
    server = scripted_server({"NOOP": stall()})
    timeouts = dataclasses.replace(Timeouts.uniform(1.5), greeting=0.3)
    client, _ = connected(server, timeouts=timeouts)
    with client:
        started = time.monotonic()
        with pytest.raises(SMTPError) as raised:
            client.noop()
        waited = time.monotonic() - started
    assert isinstance(raised.value, TimeoutError)
    assert 1.4 <= waited < 2.5


def _slow_reader(listener: socket.socket, chunks: list[int]) -> None:
    """A server offering CHUNKING that stops reading for 0.8 s once MAIL arrives."""
    conn, _ = listener.accept()
    with conn, conn.makefile("rb") as reader:
        conn.sendall(b"220 slow.test\r\n")
        while line := reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-slow.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
                continue
            if verb == b"MAIL":
                time.sleep(0.8)
            elif verb == b"BDAT":
                size = int(line.split()[1])
                chunks.append(len(reader.read(size)))
            conn.sendall(b"221 bye\r\n" if verb == b"QUIT" else b"250 ok\r\n")
            if verb == b"QUIT":
                return


def test_a_write_blocked_longer_than_the_socket_timeout_goes_on() -> None:
    # While the server does not read, the group (MAIL, RCPT and a 16 MB BDAT
    # chunk) fills the buffers: sendmsg() times out under the 0.3 s socket
    # timeout left by the greeting and is taken up again within the write's 1.5 s.
    listener = socket.create_server(("127.0.0.1", 0))
    chunks: list[int] = []
    thread = threading.Thread(target=_slow_reader, args=(listener, chunks))
    thread.start()
    timeouts = dataclasses.replace(Timeouts.uniform(1.5), greeting=0.3)
    sock = CountingSocket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.connect(listener.getsockname())
    body = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 16_000
    try:
        with SMTPClient(sock=sock, tls="none", timeouts=timeouts) as client:
            result = client.sendmail(SENDER, [RECIPIENT], body)
    finally:
        thread.join(10)
        listener.close()
    assert result.data is not None and result.data.code == 250
    assert sock.sends_timed_out >= 1
    assert sum(chunks) == len(body)


def test_a_group_of_more_buffers_than_sendmsg_takes(scripted_server: Any) -> None:
    # MAIL, 600 RCPTs and the content: more pieces than one sendmsg() may carry.
    server = scripted_server()
    recipients = [f"r{n}@x.test" for n in range(600)]
    with SMTPClient(server.host, server.port, tls="none") as client:
        result = client.sendmail(SENDER, recipients, MESSAGE)
    assert len(result.recipients) == 600
    (message,) = server.messages
    assert message.content == MESSAGE and len(message.recipients) == 600
