"""The three transports against the real Postfix that .ci/postfix-start runs.

Skipped locally when Postfix is not running; in CI (CI=true) its absence fails.
Delivered messages are read back from the maildir and compared with what was sent.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import pytest
from flavours import Flavour
from servers import PostfixServer
from smtpbee import PermanentReplyError
from smtpbee.transports._message import prepare_message


def client(flavour: Flavour, postfix: PostfixServer, **kwargs: Any) -> Any:
    kwargs.setdefault("tls", "starttls")
    return flavour.client(
        host=postfix.host, port=postfix.port, ssl_context=postfix.client_context, **kwargs
    )


def message(postfix: PostfixServer, recipients: list[str], text: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"sender@{postfix.domain}"
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = "smtpbee postfix test"
    msg["Message-ID"] = make_msgid(domain="smtpbee.test")
    msg.set_content(text)
    return msg


@pytest.mark.anyio
async def test_starttls_delivery_to_two_recipients(
    flavour: Flavour, postfix: PostfixServer
) -> None:
    recipients = [postfix.new_address("one"), postfix.new_address("two")]
    msg = message(postfix, recipients, "Hello Postfix.\n.leading dot\n")
    async with client(flavour, postfix) as c:
        assert c.tls_info is not None and c.tls_info.verified
        expected = prepare_message(msg, sender=None, recipients=None, server=c.extensions).data
        result = await c.send_message(msg)
    assert result.accepted == recipients
    delivered = postfix.wait_for_message(msg["Message-ID"])
    assert PostfixServer.original_bytes(delivered) == expected


@pytest.mark.anyio
async def test_a_refused_recipient_at_postfix(flavour: Flavour, postfix: PostfixServer) -> None:
    good = postfix.new_address("good")
    msg = message(postfix, [good], "partial\n")
    async with client(flavour, postfix) as c:
        result = await c.send_message(msg, recipients=[good, postfix.reject_address])
    assert result.accepted == [good]
    assert result.refused[postfix.reject_address].code == 550
    postfix.wait_for_message(msg["Message-ID"])


@pytest.mark.anyio
async def test_a_10_mb_message(flavour: Flavour, postfix: PostfixServer) -> None:
    recipient = postfix.new_address("big")
    message_id = make_msgid(domain="smtpbee.test")
    head = (
        f"From: sender@{postfix.domain}\r\nTo: {recipient}\r\n"
        f"Message-ID: {message_id}\r\nSubject: big\r\n\r\n"
    ).encode()
    line = b"0123456789abcdef" * 4 + b"\r\n"
    body = head + line * (10_000_000 // len(line))
    async with client(flavour, postfix, timeout=60) as c:
        await c.sendmail(f"sender@{postfix.domain}", [recipient], body)
    delivered = postfix.wait_for_message(message_id, timeout=60)
    assert PostfixServer.original_bytes(delivered) == body


@pytest.mark.anyio
async def test_a_batch_with_a_refused_large_message_between_two(
    flavour: Flavour, postfix: PostfixServer
) -> None:
    sender = f"sender@{postfix.domain}"
    first = message(postfix, [postfix.new_address("batch-first")], "first of three\n")
    # More than one BDAT chunk (1 MiB): the refusal comes while most of it is unsent.
    refused = b"Subject: refused\r\n\r\n" + b"never delivered\r\n" * 100_000
    last_recipient = postfix.new_address("batch-last")
    last = (
        f"From: {sender}\r\nTo: {last_recipient}\r\n"
        f"Message-ID: {make_msgid(domain='smtpbee.test')}\r\nSubject: last\r\n\r\nlast of three\r\n"
    ).encode()
    async with client(flavour, postfix) as c:
        assert "PIPELINING" in c.extensions and "CHUNKING" in c.extensions
        expected_first = prepare_message(first, sender=None, recipients=None, server=c.extensions)
        results = await c.send_batch(
            [first, (sender, [postfix.reject_address], refused), (sender, last_recipient, last)]
        )
        assert c.usable
    assert len(results) == 3
    assert not isinstance(results[0], Exception) and results[0].accepted == [first["To"]]
    assert isinstance(results[1], PermanentReplyError)
    assert results[1].recipients[postfix.reject_address].code == 550
    assert not isinstance(results[2], Exception) and results[2].accepted == [last_recipient]
    delivered_first = postfix.wait_for_message(first["Message-ID"])
    assert PostfixServer.original_bytes(delivered_first) == expected_first.data
    delivered_last = postfix.wait_for_message(
        lambda content: f"Delivered-To: {last_recipient}".encode() in content
    )
    assert PostfixServer.original_bytes(delivered_last) == last


@pytest.mark.anyio
async def test_a_chunking_batch_of_50_arrives_once_each(
    flavour: Flavour, postfix: PostfixServer
) -> None:
    # Several whole transactions in flight at a time; one job has no valid
    # recipient and one a refused one among good ones: the jobs written after
    # them in the same window must come out untouched.
    sender = f"sender@{postfix.domain}"
    bodies: list[bytes] = []
    items: list[tuple[str, list[str], bytes]] = []
    for number in range(50):
        recipient = postfix.new_address(f"window-{number}")
        recipients = [recipient]
        if number == 20:
            recipients = [postfix.reject_address]
        elif number == 35:
            recipients = [recipient, postfix.reject_address]
        body = (
            (
                f"From: {sender}\r\nTo: {recipient}\r\n"
                f"Message-ID: {make_msgid(domain='smtpbee.test')}\r\nSubject: window {number}\r\n"
                f"\r\n.message {number}\r\n"
            ).encode()
            + bytes(range(32, 127)) * number
            + b"\r\n"
        )
        bodies.append(body)
        items.append((sender, recipients, body))
    async with client(flavour, postfix) as c:
        assert "PIPELINING" in c.extensions and "CHUNKING" in c.extensions
        results = await c.send_batch(items)
        assert c.usable
    assert len(results) == 50
    for number, result in enumerate(results):
        if number == 20:
            assert isinstance(result, PermanentReplyError)
            assert result.recipients[postfix.reject_address].code == 550
            continue
        assert not isinstance(result, Exception), (number, result)
        assert result.accepted == [items[number][1][0]]
        if number == 35:
            assert result.refused[postfix.reject_address].code == 550
    for number, body in enumerate(bodies):
        if number == 20:
            continue
        message_id = body.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0]
        delivered = postfix.wait_for_message(message_id.decode())
        assert PostfixServer.original_bytes(delivered) == body
        copies = [p for p in postfix.delivered() if message_id in p.read_bytes()]
        assert len(copies) == 1, number
    refused_id = bodies[20].split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0]
    assert not any(refused_id in p.read_bytes() for p in postfix.delivered())
