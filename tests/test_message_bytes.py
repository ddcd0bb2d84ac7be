"""prepare_message: the bytes email.policy.SMTP makes, with each header parsed once.

The reference below is how the bytes were made before headers were read once: every
header fetched through the message's policy, the copy without Bcc flattened by the
stdlib's own SMTP or SMTPUTF8 policy. Whatever the message, both must agree.
"""

from __future__ import annotations

import copy
import email
import email.generator
import email.header
import email.headerregistry
import email.message
import email.policy
import email.utils
import io
from collections import Counter
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from budget import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smtpbee import InvalidInputError
from smtpbee._extensions import Extensions
from smtpbee._replies import Reply
from smtpbee._transaction import wants_smtputf8
from smtpbee.transports._message import prepare_message
from smtpbee.transports._message_bytes import PreparedMessage, _one_line

SERVERS = {
    "plain": Extensions(),
    "smtputf8": Extensions.from_reply(Reply(code=250, lines=(b"x", b"SMTPUTF8", b"8BITMIME"))),
}


def reference(msg: email.message.Message, server: Extensions) -> PreparedMessage:
    """The envelope and bytes as every header read through the message's policy gives them."""
    items = msg.items()
    block: dict[str, list[str]] = {}
    for name, value in items:
        key = name.lower()
        if not key.startswith("resent-"):
            if block:
                break
            continue
        if key in block:
            break
        block[key] = [str(value)]

    def values(name: str) -> list[str]:
        if not block:
            return [str(v) for v in msg.get_all(name, [])]
        return block.get(f"resent-{name}", [])

    found = email.utils.getaddresses(values("sender") or values("from"))
    sender = next((a for _, a in found if a), None)
    if sender is None:
        raise InvalidInputError("the message has no From or Sender: pass sender=")
    fields = [*values("to"), *values("cc"), *values("bcc")]
    recipients = [a for _, a in email.utils.getaddresses(fields) if a]
    stripped = copy.copy(msg)
    del stripped["Bcc"]
    del stripped["Resent-Bcc"]
    international = not all(a.isascii() for a in (sender, *recipients))
    headers_8bit = any(not str(v).isascii() for v in stripped.values())
    utf8 = wants_smtputf8(server, addresses=international, headers=headers_8bit)
    buffer = io.BytesIO()
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    generator: email.generator.BytesGenerator[Any]
    generator = email.generator.BytesGenerator(buffer, policy=policy)
    generator.flatten(stripped, linesep="\r\n")
    data = buffer.getvalue()
    head = data[: data.find(b"\r\n\r\n")] if b"\r\n\r\n" in data else data
    return PreparedMessage(sender, recipients, data, (utf8 and not head.isascii()) or international)


def built(**headers: Any) -> EmailMessage:
    msg = EmailMessage()
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("A small message.\n")
    return msg


def attached(filename: str) -> EmailMessage:
    msg = built(From="a@x.test", To="b@x.test")
    msg.add_attachment(b"data", maintype="application", subtype="octet-stream", filename=filename)
    msg.set_boundary("BOUNDARY")
    return msg


RAW_MESSAGES = [
    b"From: bench@x.test\r\nTo: sink@x.test\r\nSubject: bench\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 7bit\r\n\r\nhi\r\n',
    b"From: =?utf-8?q?J=C3=B6rg?= <j@x.test>\r\nTo: a@x.test,\r\n b@x.test\r\nBcc: h@x.test\r\n"
    b"Subject: =?utf-8?q?gr=C3=BC=C3=9F?=\r\n\r\nbody\r\n",
    b"From: a@x.test\r\nTo: b@x.test\r\nSubject: "
    + "gr\u00fc\u00df".encode()
    + b"\r\n\r\nbody\r\n",
    b"From: a@x.test\r\nTo: b@x.test\r\nSubject: "
    + b"=?utf-8?q?gr=C3=BC=C3=9F?= " * 10
    + b"\r\n\r\n",
    b"From: a@x.test\r\nTo: b@x.test\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''gr%C3%BC%C3%9F.txt\r\n\r\nbody\r\n",
    b"From: a@x.test\r\nTo: b@x.test\r\nContent-Disposition: attachment; filename*=utf-8''"
    + b"gr%C3%BC%C3%9F" * 8
    + b".txt\r\n\r\nbody\r\n",
    b"Resent-From: r@x.test\r\nResent-To: n@x.test\r\nResent-Bcc: s@x.test\r\n"
    b"From: a@x.test\r\nTo: b@x.test\r\n\r\nbody\r\n",
    b"From: a@x.test\r\nTo: b@x.test\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\n"
    b"one\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit"
    b"\r\n\r\n" + "d\u00e9j\u00e0".encode() + b"\r\n--XX--\r\n",
    b"From: a@x.test\r\nTo: z" + "\u00fc".encode() + b"@x.test\r\n\r\nbody\r\n",
    b"Subject: no sender\r\nTo: b@x.test\r\n\r\nbody\r\n",
]


def corpus() -> Iterator[email.message.Message]:
    yield built(From="a@x.test", To="b@x.test", Subject="bench")
    yield built(From="J\u00f6rg <j\u00f6rg@x.test>", To="z\u00fc@x.test", Subject="gr\u00fc\u00df")
    yield built(From="a@x.test", To="b@x.test", Subject="gr\u00fc\u00df " * 30)
    many = ", ".join(f"user{i}@example.test" for i in range(20))
    yield built(From="a@x.test", To=many, Cc="c@x.test", Bcc="h@x.test")
    yield built(From='"Doe, John" <a@x.test>', To="Group: b@x.test, c@x.test;", Subject="x" * 100)
    yield built(From="a@x.test", To="b@x.test", Subject="=?utf-8?q?gr=C3=BC=C3=9F?=")
    yield built(From="a@x.test", To="b@x.test", Subject="")
    yield built(From="a@x.test", To="b@x.test", Subject='a: (b) <c> "d" ; , @ * =?')
    yield built(From=email.headerregistry.Address("J\u00f6rg", "j", "x.test"), To="b@x.test")
    yield attached("gr\u00fc\u00df.bin")
    yield attached("a" * 90 + ".bin")
    resent = built(From="a@x.test", To="b@x.test")
    resent["Resent-From"] = "f@x.test"
    resent["Resent-To"] = "n@x.test"
    resent["Resent-Bcc"] = "s@x.test"
    yield resent
    repeated = email.message.Message()
    for name, value in [("Resent-From", "new@x.test"), ("Resent-From", "old@x.test")]:
        repeated[name] = value
    yield repeated
    legacy = email.message.Message()
    legacy["From"], legacy["To"], legacy["Subject"] = "a@x.test", "b@x.test", "x" * 120
    legacy.set_payload("hi\n")
    yield legacy
    encoded = email.message.Message()
    encoded["From"], encoded["To"] = "a@x.test", "b@x.test"
    subject: Any = email.header.Header("gr\u00fc\u00df", "utf-8")
    encoded["Subject"] = subject
    yield encoded
    for raw in RAW_MESSAGES:
        for policy in (email.policy.default, email.policy.SMTP, email.policy.compat32):
            yield email.message_from_bytes(raw, policy=policy)


def outcome(msg: email.message.Message, server: Extensions, *, new: bool) -> Any:
    # A message the stdlib cannot flatten (a compat32 message holding a Header
    # object, under an EmailPolicy) must fail the same way too.
    try:
        if new:
            return prepare_message(msg, sender=None, recipients=None, server=server)
        return reference(msg, server)
    except (InvalidInputError, AttributeError, UnicodeError) as exc:
        return type(exc), str(exc)


@pytest.mark.parametrize("server", SERVERS.values(), ids=SERVERS.keys())
@pytest.mark.parametrize("msg", list(corpus()))
def test_the_bytes_and_envelope_are_the_stdlib_ones(
    msg: email.message.Message, server: Extensions
) -> None:
    before = msg.as_bytes()
    assert outcome(msg, server, new=True) == outcome(msg, server, new=False)
    assert msg.as_bytes() == before


header_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=120)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=header_text, name=header_text, comment=header_text, parsed=st.booleans())
def test_any_header_text_gives_the_stdlib_bytes(
    subject: str, name: str, comment: str, parsed: bool
) -> None:
    msg = email.message.EmailMessage()
    try:
        msg["From"] = email.headerregistry.Address(name, "a", "x.test")
        msg["To"] = "b@x.test"
        msg["Subject"] = subject
        msg["Comments"] = comment
    except ValueError:
        return  # a value the stdlib itself refuses to hold
    msg.set_content("body\n")
    if parsed:
        msg = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    for server in SERVERS.values():
        assert outcome(msg, server, new=True) == outcome(msg, server, new=False)


class CountingFactory:
    def __init__(self) -> None:
        self.registry = email.headerregistry.HeaderRegistry()
        self.parsed: Counter[tuple[str, str]] = Counter()

    def __call__(self, name: str, value: str) -> Any:
        self.parsed[name, value] += 1
        return self.registry(name, value)


def test_each_header_of_a_parsed_message_is_parsed_at_most_once() -> None:
    factory = CountingFactory()
    policy = email.policy.default.clone(header_factory=factory)
    msg = email.message_from_bytes(RAW_MESSAGES[1], policy=policy)
    prepared = prepare_message(msg, sender=None, recipients=None, server=SERVERS["smtputf8"])
    assert prepared.sender == "j@x.test"
    assert prepared.recipients == ["a@x.test", "b@x.test", "h@x.test"]
    assert factory.parsed and max(factory.parsed.values()) == 1
    assert msg.policy is policy  # the caller's message keeps its own policy


@given(st.text(st.characters(max_codepoint=127, blacklist_characters="*"), max_size=80))
@settings(max_examples=examples(300), deadline=None)
def test_ascii_without_encoded_words_or_parameters_decodes_to_ascii(value: str) -> None:
    # Why an ASCII header value without "=?" or "*" is not parsed to look for UTF-8.
    if "=?" in value:
        return
    for name in ("Subject", "From", "To", "Content-Type", "Content-Disposition", "Date"):
        try:
            parsed = email.policy.default.header_fetch_parse(name, value)
        except (IndexError, AttributeError, TypeError):
            continue  # the stdlib's parser breaks on a few, such as To: "<", ".:" or "\t.;"
        assert str(parsed).isascii()


def test_a_given_sender_keeps_the_recipients_of_the_headers() -> None:
    msg = built(From="a@x.test", To="b@x.test", Bcc="c@x.test")
    prepared = prepare_message(msg, sender="z@x.test", recipients=None, server=SERVERS["plain"])
    assert (prepared.sender, prepared.recipients) == ("z@x.test", ["b@x.test", "c@x.test"])
    assert b"c@x.test" not in prepared.data


class ShoutedHeader(email.headerregistry.UnstructuredHeader, email.headerregistry.BaseHeader):
    def fold(self, *, policy: Any) -> str:
        return f"{self.name}: {str(self).upper()}{policy.linesep}"


def test_a_header_class_with_its_own_fold_is_folded_by_it() -> None:
    registry = email.headerregistry.HeaderRegistry()
    registry.map_to_type("x-shout", ShoutedHeader)
    msg = EmailMessage(policy=email.policy.default.clone(header_factory=registry))
    msg["From"], msg["To"], msg["X-Shout"] = "a@x.test", "b@x.test", "quiet"
    prepared = prepare_message(msg, sender=None, recipients=None, server=SERVERS["plain"])
    assert b"X-Shout: QUIET\r\n" in prepared.data
    assert _one_line(object(), email.policy.SMTP) is None  # no parse tree: the fold decides
