# fuzz/fuzz_extensions
#
# Coverage-guided fuzzing of the reply values: Extensions.from_reply (the EHLO
# or LHLO reply as a typed view), choose_mechanism on the AUTH mechanisms it
# finds, and Reply itself (its text, its printable text, its wire form read
# back by a ReplyReader).
#
# Input layout: byte 0 picks the reply code (200-559: 200 + 100 * (byte % 4)
# + (byte >> 2) % 60), byte 1 holds flags (bit 0: choose_mechanism may pick a
# mechanism that sends the password in clear), the rest is the reply's lines
# separated by LF (any other byte, CR included, is text).
#
# Invariants:
#   * from_reply never raises; keywords are upper-case ehlo-keywords, their
#     parameters non-empty words without ASCII whitespace, each once; the
#     domain is one word; the view equals an independent reference reading of
#     the same lines (RFC 5321 §4.1.1.1, plus the old "AUTH=" form), equals
#     the view rebuilt from its own fields, and reading it back from its own
#     rendering gives it again; size_limit and auth_mechanisms agree with the
#     parameters; lookups are case-insensitive;
#   * choose_mechanism returns the first mechanism of the preference order
#     that is offered (and allowed in clear, if so asked), or raises
#     UnsupportedExtensionError when there is none;
#   * Reply.text, printable_text (printable) and str() never raise, and the
#     reply's wire form read by a ReplyReader is the same reply.
"""Atheris harness: Extensions.from_reply and Reply values against reference readings."""

from __future__ import annotations

import re

from _harness import instrumented, main

with instrumented():
    from smtpbee._auth import PASSWORD_MECHANISM_PREFERENCE
    from smtpbee._errors import UnsupportedExtensionError
    from smtpbee._extensions import Extensions
    from smtpbee._mechanisms import MECHANISMS, choose_mechanism
    from smtpbee._receivebuffer import ReplyReader, parse_enhanced_status
    from smtpbee._replies import Reply

__all__ = ["reference_reading", "test_one_input"]

_ASCII_WHITESPACE = b" \t\n\r\x0b\x0c"
_KEYWORD = re.compile(r"[A-Z0-9][A-Z0-9-]*")
_SASL_NAME = re.compile(r"[A-Z0-9_-]{1,20}")
_CLEAR = frozenset(
    name for name, mechanism in MECHANISMS.items() if mechanism.sends_secret_in_clear
)


def _words(line: bytes) -> list[bytes]:
    words, word = [], bytearray()
    for byte in line:
        if byte in _ASCII_WHITESPACE:
            if word:
                words.append(bytes(word))
                word.clear()
        else:
            word.append(byte)
    if word:
        words.append(bytes(word))
    return words


def _is_keyword(word: bytes) -> bool:
    # ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"); bytes.isalnum() is ASCII only.
    return word[:1].isalnum() and word.replace(b"-", b"").isalnum()


def reference_reading(lines: list[bytes]) -> tuple[str, dict[str, list[str]]]:
    """The domain and the keywords with their parameters, read independently."""
    if not lines:
        return "", {}
    first = _words(lines[0])
    domain = first[0].decode("utf-8", "replace") if first else ""
    keywords: dict[str, list[str]] = {}
    for line in lines[1:]:
        words = _words(line)
        if not words:
            continue
        head, params = words[0], words[1:]
        if head[:5].upper() == b"AUTH=":
            name = "AUTH"
            params = ([head[5:]] if head[5:] else []) + params
        elif _is_keyword(head):
            name = head.decode("ascii").upper()
        else:
            continue
        known = keywords.setdefault(name, [])
        for param in params:
            text = param.decode("utf-8", "replace")
            if text not in known:
                known.append(text)
    return domain, keywords


def _check_extensions(lines: list[bytes], extensions: Extensions) -> None:
    domain, keywords = reference_reading(lines)
    assert extensions.domain == domain, (extensions.domain, domain)
    assert {k: list(v) for k, v in extensions.keywords.items()} == keywords, (
        dict(extensions.keywords),
        keywords,
    )
    assert list(extensions.keywords) == list(keywords), "keyword order changed"
    assert not any(c in domain.encode() for c in _ASCII_WHITESPACE)
    for keyword, params in extensions.keywords.items():
        assert _KEYWORD.fullmatch(keyword), keyword
        assert keyword in extensions and keyword.lower() in extensions
        assert extensions.params(keyword.lower()) == params
        for param in params:
            assert param and not any(c in param.encode() for c in _ASCII_WHITESPACE), param

    rebuilt = Extensions(extensions.domain, extensions.keywords)
    assert rebuilt == extensions and hash(rebuilt) == hash(extensions)
    rendered = [
        extensions.domain.encode(),
        *(" ".join((k, *params)).encode() for k, params in extensions.keywords.items()),
    ]
    assert Extensions.from_reply(Reply(code=250, lines=tuple(rendered))) == extensions, rendered
    repr(extensions)

    size = extensions.keywords.get("SIZE", ())
    limit = extensions.size_limit
    if size and size[0].isascii() and size[0].isdigit() and len(size[0]) <= 20:
        assert limit == (int(size[0]) or None), (size, limit)
    else:
        assert limit is None, (size, limit)
    assert extensions.supports_size == ("SIZE" in keywords)
    offered = {param.upper() for param in extensions.keywords.get("AUTH", ())}
    expected = {name for name in offered if _SASL_NAME.fullmatch(name) and name.isascii()}
    assert extensions.auth_mechanisms == expected, (extensions.auth_mechanisms, expected)


def _check_choice(offered: frozenset[str], allow_cleartext: bool) -> None:
    usable = [
        name
        for name in PASSWORD_MECHANISM_PREFERENCE
        if name in offered and (allow_cleartext or name not in _CLEAR)
    ]
    try:
        chosen = choose_mechanism(offered, "user", "pencil", allow_cleartext=allow_cleartext)
    except UnsupportedExtensionError as exc:
        assert not usable, (offered, usable)
        assert "pencil" not in str(exc)
        return
    assert usable and chosen.name == usable[0], (offered, chosen.name, usable)


def _check_reply(code: int, lines: tuple[bytes, ...]) -> None:
    reply = Reply(code=code, lines=lines, enhanced=parse_enhanced_status(lines[0], code))
    assert reply.printable_text.isprintable(), reply.printable_text
    str(reply)
    wire = reply.to_bytes()
    limits = ReplyReader().limits
    # "ddd-" + text + CRLF per line, within the reader's default limits.
    if max(map(len, lines)) + 6 > limits.max_line_length or len(wire) > limits.max_reply_size:
        return
    reader = ReplyReader()
    reader.feed(wire)
    read = reader.next_reply()
    assert read == reply, (read, reply)
    assert reader.buffered == 0 and reader.next_reply() is None


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    code = 200 + 100 * (data[0] % 4) + (data[0] >> 2) % 60
    lines = tuple(data[2:].split(b"\n"))
    extensions = Extensions.from_reply(Reply(code=code, lines=lines))
    _check_extensions(list(lines), extensions)
    _check_choice(extensions.auth_mechanisms, allow_cleartext=bool(data[1] & 1))
    _check_reply(code, lines)


if __name__ == "__main__":
    main(test_one_input)
