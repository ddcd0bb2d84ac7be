"""Control points, forced pipelining and BDAT chunk sizes against the real Postfix on 8025.

Every session is the whole path a control point can cut: the greeting, EHLO,
STARTTLS, EHLO again, AUTH PLAIN, then one message (MAIL, RCPT and BDAT LAST in one
write, since Postfix offers PIPELINING and CHUNKING) and QUIT. What the client
wrote is read from its session log, one record per write, so the grouping of a
pipelined write shows; what Postfix delivered is read from its maildir.

A message is delivered only when the stop came after the content (DOT). Proving
that nothing was delivered needs a moment Postfix is known to be past the
stopped session: a second message to the same recipient, sent afterwards, is
waited for, and must be the recipient's only delivery.

Skipped locally when Postfix is not running; in CI (CI=true) its absence fails.
"""

from __future__ import annotations

from collections.abc import Callable
from email.utils import make_msgid
from typing import Any

import pytest
from flavours import Flavour
from servers import PostfixServer
from smtpbee import ControlPoint, SessionLog, SessionStopped, Stop

# One write: the verbs of the commands in it, and whether it went under TLS.
Write = tuple[list[str], bool]

# The opening writes of every session: EHLO, STARTTLS, then EHLO and AUTH under TLS.
_OPENING: list[Write] = [
    (["EHLO"], False),
    (["STARTTLS"], False),
    (["EHLO"], True),
    (["AUTH"], True),
]
# What a session writes up to and including each point. Pipelined, the group of the
# transaction is cut at the point: nothing behind it goes out.
WRITES_UP_TO: dict[ControlPoint, list[Write]] = {
    ControlPoint.CONNECT: [],
    ControlPoint.GREETING: [],
    ControlPoint.EHLO: _OPENING[:1],
    ControlPoint.TLS: _OPENING[:2],
    ControlPoint.AUTH: _OPENING,
    ControlPoint.MAIL: [*_OPENING, (["MAIL"], True)],
    ControlPoint.RCPT: [*_OPENING, (["MAIL", "RCPT"], True)],
    ControlPoint.DATA: [*_OPENING, (["MAIL", "RCPT", "DATA"], True)],
    ControlPoint.DOT: [*_OPENING, (["MAIL", "RCPT", "BDAT"], True)],
}

# The reply that ended each point's phase (CONNECT has none).
LAST_REPLY = {
    ControlPoint.CONNECT: None,
    ControlPoint.GREETING: 220,
    ControlPoint.EHLO: 250,
    ControlPoint.TLS: 220,
    ControlPoint.AUTH: 235,
    ControlPoint.MAIL: 250,
    ControlPoint.RCPT: 250,
    ControlPoint.DATA: 354,
    ControlPoint.DOT: 250,
}
_NO_COMMAND = (ControlPoint.CONNECT, ControlPoint.GREETING)
_BEFORE_TLS = (*_NO_COMMAND, ControlPoint.EHLO)
STOPS = [Stop(point, action) for point in ControlPoint for action in ("quit", "drop")] + [
    Stop(point, "drop", after_send=True) for point in ControlPoint if point not in _NO_COMMAND
]


def stop_id(stop: Stop) -> str:
    return f"{stop.point.value}-{stop.action}" + ("-after-send" if stop.after_send else "")


def expected_writes(stop: Stop) -> list[Write]:
    """The writes up to the point, and QUIT where the session can still say it."""
    writes = list(WRITES_UP_TO[stop.point])
    # QUIT after a 354 would be message text: the connection is closed instead.
    if stop.action == "quit" and stop.point is not ControlPoint.DATA:
        writes.append((["QUIT"], stop.point not in _BEFORE_TLS))
    return writes


def writes_of(log: SessionLog) -> list[Write]:
    return [
        ([line.split(" ", 1)[0] for line in record["data"].split("\n")], record["tls"])
        for record in log.records
        if record["dir"] == "C"
    ]


def client(flavour: Flavour, postfix: PostfixServer, **kwargs: Any) -> Any:
    return flavour.client(
        host=postfix.host,
        port=postfix.port,
        tls="starttls",
        ssl_context=postfix.client_context,
        **kwargs,
    )


def message(postfix: PostfixServer, recipients: list[str], text: bytes) -> tuple[bytes, str]:
    """A head (CRLF line ends) with a new Message-ID, then ``text``; and that Message-ID."""
    message_id = make_msgid(domain="smtpbee.test")
    head = (
        f"From: sender@{postfix.domain}\r\nTo: {', '.join(recipients)}\r\n"
        f"Message-ID: {message_id}\r\nSubject: smtpbee control test\r\n\r\n"
    )
    return head.encode() + text, message_id


def deliveries_to(postfix: PostfixServer, recipient: str, since: set[str]) -> list[bytes]:
    """The messages delivered to ``recipient`` in files not in ``since``."""
    stamp = f"Delivered-To: {recipient}\n".encode()
    found = []
    for path in postfix.delivered():
        if path.name not in since:
            content = path.read_bytes()
            if stamp in content:
                found.append(content)
    return found


def delivered_names(postfix: PostfixServer) -> set[str]:
    return {path.name for path in postfix.delivered()}


def transcript_into(lines: list[str]) -> Callable[[str, str], None]:
    return lambda direction, line: lines.append(f"{direction}: {line}")


# ------------------------------------------------------------------------------------
# Every control point, stopped three ways


@pytest.mark.anyio
@pytest.mark.parametrize("stop", STOPS, ids=stop_id)
async def test_every_control_point_at_postfix(
    flavour: Flavour, postfix: PostfixServer, stop: Stop
) -> None:
    sender = f"sender@{postfix.domain}"
    recipient = postfix.new_address("stop")
    body, message_id = message(
        postfix, [recipient], b"stopped at " + stop_id(stop).encode() + b"\r\n"
    )
    before = delivered_names(postfix)
    log = SessionLog(f"{postfix.host}:{postfix.port}")
    lines: list[str] = []
    c = client(flavour, postfix, stop=stop, session_log=log, transcript=transcript_into(lines))
    try:
        with pytest.raises(SessionStopped) as caught:
            await c.connect()
            await c.login(postfix.username, postfix.password, mechanism="PLAIN")
            await c.sendmail(sender, [recipient], body)
    finally:
        await c.close()
    stopped = caught.value
    assert (stopped.point, stopped.action) == (stop.point, stop.action)
    assert not c.usable
    assert writes_of(log) == expected_writes(stop)
    if stop.after_send:
        # Dropped right after the write: no reply was read after it.
        assert stopped.reply is None
        assert [r["dir"] for r in log.records[-2:]] == ["C", "event"]
        assert log.records[-1]["event"] == "stopped"
        assert f"C: <stopped after sending: {stop.point.value}, dropped>" in lines
    else:
        code = stopped.reply.code if stopped.reply is not None else None
        assert code == LAST_REPLY[stop.point]
        assert f"C: <stopped at {stop.point.value}: {stop.action}>" in lines
    [noted] = [r for r in log.records if r.get("event") == "stopped"]
    assert (noted["point"], noted["action"]) == (stop.point.value, stop.action)

    if stop.point is ControlPoint.DOT:
        delivered = postfix.wait_for_message(message_id)
        assert PostfixServer.original_bytes(delivered) == body
        return
    # Nothing of the message was ended: a later message must be the only delivery.
    later, later_id = message(postfix, [recipient], b"sent after the stopped session\r\n")
    async with client(flavour, postfix) as follow_up:
        await follow_up.sendmail(sender, [recipient], later)
    postfix.wait_for_message(later_id)
    [only] = deliveries_to(postfix, recipient, before)
    assert PostfixServer.original_bytes(only) == later


# ------------------------------------------------------------------------------------
# Pipelining forced on and off


@pytest.mark.anyio
async def test_pipelining_forced_on_sends_the_envelope_and_the_content_in_one_write(
    flavour: Flavour, postfix: PostfixServer
) -> None:
    recipients = [postfix.new_address("on-1"), postfix.new_address("on-2")]
    body, message_id = message(postfix, recipients, b"one round trip\r\n")
    log = SessionLog()
    lines: list[str] = []
    async with client(
        flavour, postfix, pipelining=True, session_log=log, transcript=transcript_into(lines)
    ) as c:
        result = await c.sendmail(f"sender@{postfix.domain}", recipients, body)
    assert result.accepted == recipients
    assert writes_of(log)[-2:] == [(["MAIL", "RCPT", "RCPT", "BDAT"], True), (["QUIT"], True)]
    # Postfix offers PIPELINING: forcing it on overrides nothing, so nothing is said.
    assert not any("forced" in line for line in lines)
    delivered = postfix.wait_for_message(message_id)
    assert PostfixServer.original_bytes(delivered) == body


@pytest.mark.anyio
async def test_pipelining_forced_off_writes_one_command_at_a_time(
    flavour: Flavour, postfix: PostfixServer
) -> None:
    recipients = [postfix.new_address("off-1"), postfix.new_address("off-2")]
    body, message_id = message(postfix, recipients, b"lock-step\r\n.a leading dot\r\n")
    log = SessionLog()
    lines: list[str] = []
    async with client(
        flavour, postfix, pipelining=False, session_log=log, transcript=transcript_into(lines)
    ) as c:
        result = await c.sendmail(f"sender@{postfix.domain}", recipients, body)
    assert result.accepted == recipients
    writes = [r for r in log.records if r["dir"] == "C"]
    # Without PIPELINING the content goes with DATA, as one write after the 354.
    *commands, content, quit = writes
    assert all("\n" not in r["data"] for r in commands)
    verbs = [r["data"].split(" ", 1)[0] for r in [*commands[-4:], quit]]
    assert verbs == ["MAIL", "RCPT", "RCPT", "DATA", "QUIT"]
    assert content["data"] == f"<{len(body)} octets of content>\n."
    # The leading dot is stuffed on the wire, and only there.
    assert SessionLog.bytes_of(content) == body.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    assert "C: <PIPELINING forced off: lock-step although offered>" in lines
    delivered = postfix.wait_for_message(message_id)
    assert PostfixServer.original_bytes(delivered) == body


# ------------------------------------------------------------------------------------
# BDAT in chunks of a chosen size


def bdat_chunks(wire: bytes) -> list[tuple[bytes, bool]]:
    """The (data, last) of each BDAT in the client's bytes; other command lines skipped."""
    chunks = []
    while wire:
        line, _, wire = wire.partition(b"\r\n")
        verb, *arguments = line.split(b" ")
        if verb == b"BDAT":
            size = int(arguments[0])
            chunks.append((wire[:size], arguments[1:] == [b"LAST"]))
            wire = wire[size:]
    return chunks


@pytest.mark.anyio
@pytest.mark.parametrize("size", [1, 64])
async def test_bdat_chunks_of_the_size_given_deliver_the_message_exactly(
    flavour: Flavour, postfix: PostfixServer, size: int
) -> None:
    recipient = postfix.new_address("chunks")
    text = (
        "A line.\r\n.a leading dot, never stuffed in BDAT\r\n..two\r\n"
        "bare lf\nlone cr\rcaf\u00e9 \u2615\r\n" + "0123456789" * 20 + "\r\n"
    ).encode()
    body, message_id = message(postfix, [recipient], text)
    normalised = body.replace(b"bare lf\n", b"bare lf\r\n").replace(b"lone cr\r", b"lone cr\r\n")
    log = SessionLog()
    async with client(flavour, postfix, bdat_chunk_size=size, session_log=log) as c:
        await c.sendmail(f"sender@{postfix.domain}", [recipient], body)
    wire = b"".join(
        SessionLog.bytes_of(r) or b""
        for r in log.records
        if r["dir"] == "C" and r["data"].split(" ", 1)[0] in ("MAIL", "BDAT")
    )
    chunks = bdat_chunks(wire)
    assert b"".join(data for data, _ in chunks) == normalised
    assert all(len(data) == size for data, _ in chunks[:-1]) and 0 < len(chunks[-1][0]) <= size
    assert [last for _, last in chunks] == [False] * (len(chunks) - 1) + [True]
    # Pipelined: the first chunk goes with the envelope.
    assert writes_of(log)[-len(chunks) - 1][0] == ["MAIL", "RCPT", "BDAT"]
    delivered = postfix.wait_for_message(message_id)
    assert PostfixServer.original_bytes(delivered) == normalised
