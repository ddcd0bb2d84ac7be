"""Input validation: free text, mailboxes, domains, ESMTP parameters, xtext, command lines."""

from __future__ import annotations

import pytest
from budget import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from smtpbee._errors import InvalidInputError, LocalProtocolError
from smtpbee._validation import (
    NULL_PATH,
    Mailbox,
    check_command_line,
    check_esmtp_keyword,
    check_esmtp_value,
    check_text,
    encode_domain,
    format_path,
    parse_mailbox,
    parse_reverse_path,
    xtext_decode,
    xtext_encode,
)

FORBIDDEN = [chr(code) for code in range(0x20)] + ["\x7f", "\x80", "\x85", "\x9f"]
FORBIDDEN += ["\u2028", "\u2029", "\ud800", "\udfff"]


# check_text ---------------------------------------------------------------------


@pytest.mark.parametrize("char", FORBIDDEN)
def test_check_text_refuses_controls_and_separators(char: str) -> None:
    with pytest.raises(InvalidInputError, match=f"U\\+{ord(char):04X} at index 3"):
        check_text(f"abc{char}def", "EHLO name")


def test_check_text_never_echoes_the_value() -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_text("hunter2\r\nQUIT", "password")
    assert "hunter2" not in str(caught.value)
    assert str(caught.value).startswith("password ")


@pytest.mark.parametrize("text", ["", "mail.example.com", "héllo wörld", "日本語", "a\u00a0b"])
def test_check_text_accepts_printable_text(text: str) -> None:
    check_text(text, "text")


def test_check_text_refuses_non_str() -> None:
    with pytest.raises(TypeError, match="must be a str, not bytes"):
        check_text(b"abc", "EHLO name")  # type: ignore[arg-type]


def test_invalid_input_is_a_local_protocol_error() -> None:
    with pytest.raises(LocalProtocolError):
        parse_mailbox("no at sign")


# parse_mailbox: accepted ----------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "local_part", "domain", "needs_smtputf8"),
    [
        ("user@example.com", "user", "example.com", False),
        ("<user@example.com>", "user", "example.com", False),
        ("first.last+tag@example.com", "first.last+tag", "example.com", False),
        ("!#$%&'*+-/=?^_`{|}~@example.com", "!#$%&'*+-/=?^_`{|}~", "example.com", False),
        ('"a b"@example.com', '"a b"', "example.com", False),
        ('"a\\"b@c"@example.com', '"a\\"b@c"', "example.com", False),
        ('"<x>, y;"@example.com', '"<x>, y;"', "example.com", False),
        ("user@localhost", "user", "localhost", False),
        ("user@123.example", "user", "123.example", False),
        ("user@Bücher.example", "user", "xn--bcher-kva.example", False),
        ("用户@例え.jp", "用户", "xn--r8jz45g.jp", True),
        ('"ü y"@example.com', '"ü y"', "example.com", True),
        ("user@[192.0.2.1]", "user", "[192.0.2.1]", False),
        ("user@[IPv6:2001:db8::1]", "user", "[IPv6:2001:db8::1]", False),
        ("user@[ipv6:::ffff:192.0.2.1]", "user", "[ipv6:::ffff:192.0.2.1]", False),
    ],
)
def test_parse_mailbox_accepts(
    address: str, local_part: str, domain: str, needs_smtputf8: bool
) -> None:
    mailbox = parse_mailbox(address)
    assert (mailbox.local_part, mailbox.domain) == (local_part, domain)
    assert mailbox.needs_smtputf8 is needs_smtputf8
    assert str(mailbox) == f"{local_part}@{domain}"
    assert parse_mailbox(str(mailbox)) == mailbox


# parse_mailbox: refused ------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("", "empty address"),
        ("<>", "null path <> is only allowed as a sender"),
        ("a@x.com SIZE=1", "space outside a quoted local part"),
        ("a@x.com\tSIZE=1", "control character U\\+0009"),
        ("<a@x.com> SIZE=1", "angle brackets"),
        ('"a@x.com SIZE=1"', "closing quote must be followed by '@'"),
        ('"a"@x.com SIZE=1', "space outside"),
        ("a b@x.com", "space outside"),
        (" a@x.com", "space outside"),
        ("a@x.com\u3000", "space outside"),
        ("Bob <b@x.com>", "display names"),
        ("<<a@x.com>>", "angle brackets"),
        ("<a@x.com", "angle brackets"),
        ("a@x.com>", "angle brackets"),
        ("a@x.com, b@y.com", "one address per argument"),
        ("a@x.com;b@y.com", "one address per argument"),
        ("a@b@x.com", "second '@'"),
        ('"a"b@x.com', "closing quote must be followed by '@'"),
        ('"a"', "closing quote must be followed by '@'"),
        ('a"b"@x.com', "quotes must enclose the whole local part"),
        ('"a@x.com', "quoted local part is not closed"),
        ('"a\\"@x.com', "quoted local part is not closed"),
        ("<@a.example,@b.example:u@c.example>", "source routes"),
        ("@x.com", "local part is empty"),
        ('""@x.com', "local part is empty"),
        ("a@", "domain is empty"),
        ("user", "no '@'"),
        (".a@x.com", "leading, trailing or doubled dot"),
        ("a.@x.com", "leading, trailing or doubled dot"),
        ("a..b@x.com", "leading, trailing or doubled dot"),
        ("a(b)@x.com", "'\\(' is not allowed outside quotes"),
        ("a\\b@x.com", "is not allowed outside quotes"),
        ("a@x.com.", "ends with a dot"),
        ("a@x_y.com", "label 'x_y'"),
        ("a@-x.com", "label '-x'"),
        ("a@x-.com", "label 'x-'"),
        ("a@x..com", "label ''"),
        ("a@192.0.2.1", "write it as an address literal, \\[192.0.2.1\\]"),
        ("a@[192.0.2]", "not a dotted-quad"),
        ("a@[192.0.2.1", "not closed"),
        ("a@[IPv6:fe80::1%eth0]", "not a valid IPv6"),
        ("a@[IPv6:nonsense]", "not a valid IPv6"),
        ("a@[tag:content]", "only IPv4 and IPv6"),
        ("a@faß.de", "U\\+00DF"),
        ("a\r\n@x.com", "'a\\\\r\\\\n@x.com' contains the control character U\\+000D"),
        ("a@x.com\x00", "U\\+0000"),
        ("a\u2028@x.com", "U\\+2028"),
    ],
)
def test_parse_mailbox_refuses(address: str, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        parse_mailbox(address, what="recipient")


def test_parse_mailbox_names_the_argument_and_escapes_the_address() -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_mailbox("b\u202eob@x.com, c@y", what="recipient")
    message = str(caught.value)
    assert message.startswith("recipient 'b\\u202eob@x.com, c@y'")
    assert "\u202e" not in message


def test_parse_mailbox_refuses_non_str() -> None:
    with pytest.raises(TypeError, match="recipient must be a str"):
        parse_mailbox(b"a@x.com", what="recipient")  # type: ignore[arg-type]


def test_local_part_length_limit_counts_utf8_octets() -> None:
    assert parse_mailbox("a" * 64 + "@x.com").local_part == "a" * 64
    with pytest.raises(InvalidInputError, match="65 octets, over the limit of 64"):
        parse_mailbox("a" * 65 + "@x.com")
    assert parse_mailbox("é" * 32 + "@x.com").needs_smtputf8
    with pytest.raises(InvalidInputError, match="66 octets"):
        parse_mailbox("é" * 33 + "@x.com")


def test_domain_length_limit() -> None:
    domain = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 octets
    assert encode_domain(domain) == domain
    assert encode_domain(domain + "cc") == domain + "cc"  # 255 octets
    with pytest.raises(InvalidInputError, match="256 octets, over the limit of 255"):
        encode_domain(domain + "c.d")
    with pytest.raises(InvalidInputError, match="label"):
        encode_domain("a" * 64 + ".com")


def test_path_length_limit() -> None:
    domain = ".".join(["d" * 63] * 3 + ["e" * 57])  # 249 octets
    assert len(str(parse_mailbox("abcd@" + domain))) == 254  # "<" + 254 + ">" = 256
    with pytest.raises(InvalidInputError, match="path is 257 octets"):
        parse_mailbox("abcde@" + domain)


# Mailbox, paths ------------------------------------------------------------------------


def test_mailbox_checks_its_wire_form() -> None:
    assert Mailbox("a", "x.com").needs_smtputf8 is False
    assert Mailbox("ü", "x.com").needs_smtputf8 is True
    with pytest.raises(InvalidInputError, match="wire form"):
        Mailbox("a", "bücher.de")
    with pytest.raises(InvalidInputError, match="quoted local part is not closed"):
        Mailbox('"a', "x.com")
    with pytest.raises(InvalidInputError, match="space outside"):
        Mailbox("a b", "x.com")
    with pytest.raises(InvalidInputError, match="local part is empty"):
        Mailbox("", "x.com")
    with pytest.raises(InvalidInputError, match="control character"):
        Mailbox("a", "x.com\r\nRSET")
    with pytest.raises(InvalidInputError, match="local part is 65 octets"):
        Mailbox("a" * 65, "x.com")
    with pytest.raises(InvalidInputError, match="path is"):
        Mailbox("a" * 64, ".".join(["d" * 63] * 3))


def test_mailbox_is_frozen() -> None:
    mailbox = Mailbox("a", "x.com")
    with pytest.raises(AttributeError):
        mailbox.local_part = "b"  # type: ignore[misc]


def test_format_path() -> None:
    assert format_path(Mailbox('"a b"', "x.com")) == '<"a b"@x.com>'
    assert format_path(NULL_PATH) == "<>"


@pytest.mark.parametrize("address", ["", "<>"])
def test_parse_reverse_path_null(address: str) -> None:
    assert parse_reverse_path(address) is NULL_PATH


def test_parse_reverse_path_mailbox_and_errors() -> None:
    assert parse_reverse_path("<a@x.com>") == Mailbox("a", "x.com")
    with pytest.raises(InvalidInputError, match=r"^sender '< >'"):
        parse_reverse_path("< >")


# encode_domain ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "wire"),
    [
        ("example.com", "example.com"),
        ("Mail.Example.COM", "Mail.Example.COM"),
        ("münchen.de", "xn--mnchen-3ya.de"),
        ("\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com", "example.com"),  # fullwidth
        ("例え。jp", "xn--r8jz45g.jp"),
        ("[IPv6:::1]", "[IPv6:::1]"),
    ],
)
def test_encode_domain(domain: str, wire: str) -> None:
    assert encode_domain(domain) == wire


@pytest.mark.parametrize(
    ("domain", "reason"),
    [
        ("", "empty"),
        ("example.com.", "ends with a dot"),
        ("例え。", "ends with a dot"),
        ("ü" * 70 + ".de", "cannot be converted to A-labels"),
        ("ü_x.de", "label 'xn--_x-"),
        ("faς.gr", "U\\+03C2"),
        ("a\u200db.example", "U\\+200D"),
        ("a\u200cb.example", "U\\+200C"),
        ("exa mple.com", "label 'exa mple'"),
        ("10.0.0.1", "is an IP address"),
        ("[]", "not a dotted-quad"),
    ],
)
def test_encode_domain_refuses(domain: str, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        encode_domain(domain)


# ESMTP keywords and values -----------------------------------------------------------------


@pytest.mark.parametrize("keyword", ["SIZE", "8BITMIME", "X-FOO", "a", "MT-PRIORITY"])
def test_esmtp_keyword_accepted(keyword: str) -> None:
    check_esmtp_keyword(keyword)


@pytest.mark.parametrize("keyword", ["", "-A", "A_B", "A B", "Ä", "A=B", "A\r\n"])
def test_esmtp_keyword_refused(keyword: str) -> None:
    with pytest.raises(InvalidInputError, match="ESMTP keyword"):
        check_esmtp_keyword(keyword)


def test_esmtp_keyword_refuses_non_str() -> None:
    with pytest.raises(TypeError):
        check_esmtp_keyword(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["1000", "FULL", "SUCCESS,FAILURE", "rfc822;a+2Bb@x", "<>", "~!"])
def test_esmtp_value_accepted(value: str) -> None:
    check_esmtp_value(value)


@pytest.mark.parametrize("value", ["", "a=b", "a b", "é"])
def test_esmtp_value_refused(value: str) -> None:
    with pytest.raises(InvalidInputError, match="must be non-empty printable ASCII"):
        check_esmtp_value(value)


def test_esmtp_value_utf8_only_when_asked() -> None:
    check_esmtp_value("ünïcode", utf8=True)
    with pytest.raises(InvalidInputError, match="non-empty printable characters"):
        check_esmtp_value("ü x", utf8=True)
    with pytest.raises(InvalidInputError, match="U\\+0085"):
        check_esmtp_value("ü\x85", utf8=True)
    with pytest.raises(InvalidInputError, match="U\\+000A"):
        check_esmtp_value("1\nRSET")


# xtext --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "xtext"),
    [
        ("", ""),
        ("plain", "plain"),
        ("a+b=c d", "a+2Bb+3Dc+20d"),
        ("é", "+C3+A9"),
        ("\r\n\x00\x7f", "+0D+0A+00+7F"),
        ("!~", "!~"),
    ],
)
def test_xtext_encode_and_decode(text: str, xtext: str) -> None:
    assert xtext_encode(text) == xtext
    assert xtext_decode(xtext) == text


def test_xtext_decode_reads_lowercase_hex() -> None:
    assert xtext_decode("a+2bb") == "a+b"


@pytest.mark.parametrize("xtext", ["a b", "+4", "=", "+ZZ", "a+", "é", "\r"])
def test_xtext_decode_refuses_malformed(xtext: str) -> None:
    with pytest.raises(InvalidInputError, match="not valid xtext"):
        xtext_decode(xtext)


def test_xtext_decode_refuses_non_utf8() -> None:
    with pytest.raises(InvalidInputError, match="does not decode to UTF-8"):
        xtext_decode("+FF")


def test_xtext_encode_refuses_surrogates_and_non_str() -> None:
    with pytest.raises(InvalidInputError, match="lone surrogate"):
        xtext_encode("a\udc80")
    with pytest.raises(TypeError):
        xtext_encode(b"a")  # type: ignore[arg-type]


# command lines --------------------------------------------------------------------------------


def test_command_line_length_limit() -> None:
    check_command_line(b"NOOP\r\n")
    check_command_line(b"X" * 510 + b"\r\n")
    with pytest.raises(
        InvalidInputError, match="command line is 513 octets, over the limit of 512"
    ):
        check_command_line(b"X" * 511 + b"\r\n")
    check_command_line(b"X" * 900 + b"\r\n", limit=1012)


def test_command_line_errors_never_quote_the_line() -> None:
    line = b"AUTH PLAIN " + b"c2VjcmV0" * 80 + b"\r\n"
    with pytest.raises(InvalidInputError) as caught:
        check_command_line(line)
    assert str(caught.value).startswith("AUTH command line is 653 octets")
    assert "c2VjcmV0" not in str(caught.value)


@pytest.mark.parametrize(
    "line",
    [b"", b"\r\n"[:1], b"NOOP", b"NOOP\n", b"NOOP\r", b"NO\rOP\r\n", b"NO\nOP\r\n", b"NO\0OP\r\n"],
)
def test_command_line_must_be_one_crlf_line(line: bytes) -> None:
    with pytest.raises(InvalidInputError, match="single line ending in CRLF"):
        check_command_line(line)


# properties -----------------------------------------------------------------------------------


controls = st.sampled_from(FORBIDDEN)


@settings(max_examples=examples(200), deadline=None)
@given(before=st.text(max_size=20), control=controls, after=st.text(max_size=20))
def test_any_text_with_a_control_character_is_refused(
    before: str, control: str, after: str
) -> None:
    text = before + control + after
    with pytest.raises(InvalidInputError, match="control character"):
        check_text(text, "argument")
    with pytest.raises(InvalidInputError):
        parse_mailbox(text)
    with pytest.raises(InvalidInputError):
        parse_mailbox(f"{before}{control}@example.com")
    with pytest.raises(InvalidInputError):
        encode_domain(f"x{control}.example")


@settings(max_examples=examples(200), deadline=None)
@given(text=st.text())
def test_xtext_round_trips(text: str) -> None:
    encoded = xtext_encode(text)
    assert encoded.isascii()
    assert all("!" <= char <= "~" and char != "=" for char in encoded)
    check_esmtp_value(encoded or "x")
    assert xtext_decode(encoded) == text


address_text = st.text(
    alphabet=st.sampled_from([*'ab.@<>" \\,;[]:é-_1', "ü", "\r", "\x00"]), max_size=24
)


@settings(max_examples=examples(300), deadline=None)
@given(address=st.one_of(st.text(max_size=30), address_text))
def test_parse_mailbox_only_raises_invalid_input_and_yields_safe_mailboxes(address: str) -> None:
    try:
        mailbox = parse_mailbox(address)
    except InvalidInputError:
        return
    wire = str(mailbox)
    assert "\r" not in wire and "\n" not in wire and "\x00" not in wire
    outside_quotes = wire.rsplit('"', 1)[-1] if mailbox.local_part.startswith('"') else wire
    assert " " not in outside_quotes and "<" not in outside_quotes
    assert Mailbox(mailbox.local_part, mailbox.domain) == mailbox
    assert parse_mailbox(wire) == mailbox
    assert mailbox.needs_smtputf8 == (not mailbox.local_part.isascii())
    assert len(wire.encode()) <= 254
