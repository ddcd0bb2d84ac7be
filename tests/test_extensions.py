"""Tests of Extensions: the server's EHLO reply as a typed view."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smtpbee._extensions import EMPTY_EXTENSIONS, Extensions
from smtpbee._receivebuffer import ReplyReader
from smtpbee._replies import Reply


def ehlo(*lines: bytes) -> Extensions:
    return Extensions.from_reply(Reply(code=250, lines=lines))


def from_wire(data: bytes) -> Extensions:
    """Read a reply off the wire, as the connection does, and view it."""
    reader = ReplyReader()
    reader.feed(data)
    reply = reader.next_reply()
    assert reply is not None
    assert reader.buffered == 0
    return Extensions.from_reply(reply)


BOOLEAN_PROPERTIES = {
    "pipelining": "PIPELINING",
    "chunking": "CHUNKING",
    "eightbitmime": "8BITMIME",
    "binarymime": "BINARYMIME",
    "smtputf8": "SMTPUTF8",
    "dsn": "DSN",
    "enhanced_status_codes": "ENHANCEDSTATUSCODES",
    "starttls": "STARTTLS",
    "requiretls": "REQUIRETLS",
    "mt_priority": "MT-PRIORITY",
    "supports_size": "SIZE",
}


def advertised(extensions: Extensions) -> set[str]:
    """The names of the boolean properties that are true."""
    return {name for name in BOOLEAN_PROPERTIES if getattr(extensions, name)}


# --- real-world replies -----------------------------------------------------

POSTFIX = (
    b"250-mail.example.com\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 10240000\r\n"
    b"250-VRFY\r\n"
    b"250-ETRN\r\n"
    b"250-STARTTLS\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-8BITMIME\r\n"
    b"250-DSN\r\n"
    b"250-SMTPUTF8\r\n"
    b"250 CHUNKING\r\n"
)


def test_postfix() -> None:
    extensions = from_wire(POSTFIX)
    assert extensions.domain == "mail.example.com"
    assert extensions.size_limit == 10_240_000
    assert advertised(extensions) == {
        "pipelining",
        "supports_size",
        "starttls",
        "enhanced_status_codes",
        "eightbitmime",
        "dsn",
        "smtputf8",
        "chunking",
    }
    assert "VRFY" in extensions and "ETRN" in extensions
    assert extensions.auth_mechanisms == frozenset()
    assert list(extensions.keywords) == [
        "PIPELINING",
        "SIZE",
        "VRFY",
        "ETRN",
        "STARTTLS",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "DSN",
        "SMTPUTF8",
        "CHUNKING",
    ]


EXIM = (
    b"250-mx.example.org Hello client.example.net [192.0.2.1]\r\n"
    b"250-SIZE 52428800\r\n"
    b"250-8BITMIME\r\n"
    b"250-PIPELINING\r\n"
    b"250-PIPE_CONNECT\r\n"
    b"250-AUTH PLAIN LOGIN CRAM-MD5\r\n"
    b"250-CHUNKING\r\n"
    b"250-PRDR\r\n"
    b"250 HELP\r\n"
)


def test_exim() -> None:
    extensions = from_wire(EXIM)
    assert extensions.domain == "mx.example.org"
    assert extensions.size_limit == 52_428_800
    assert extensions.auth_mechanisms == {"PLAIN", "LOGIN", "CRAM-MD5"}
    assert extensions.params("auth") == ("PLAIN", "LOGIN", "CRAM-MD5")
    assert advertised(extensions) == {"supports_size", "eightbitmime", "pipelining", "chunking"}
    assert "PRDR" in extensions and "HELP" in extensions
    # An underscore is not allowed in an ehlo-keyword: the line is ignored.
    assert "PIPE_CONNECT" not in extensions


MICROSOFT_365 = (
    b"250-AM0PR01CA0001.outlook.office365.com Hello [192.0.2.1]\r\n"
    b"250-SIZE 157286400\r\n"
    b"250-PIPELINING\r\n"
    b"250-DSN\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-AUTH LOGIN XOAUTH2\r\n"
    b"250-8BITMIME\r\n"
    b"250-BINARYMIME\r\n"
    b"250-CHUNKING\r\n"
    b"250 SMTPUTF8\r\n"
)


def test_microsoft_365() -> None:
    extensions = from_wire(MICROSOFT_365)
    assert extensions.domain == "AM0PR01CA0001.outlook.office365.com"
    assert extensions.size_limit == 157_286_400
    assert extensions.auth_mechanisms == {"LOGIN", "XOAUTH2"}
    assert advertised(extensions) == {
        "supports_size",
        "pipelining",
        "dsn",
        "enhanced_status_codes",
        "eightbitmime",
        "binarymime",
        "chunking",
        "smtputf8",
    }


EXCHANGE_ON_PREMISES = (
    b"250-exch01.corp.example.com Hello [192.0.2.7]\n"
    b"250-SIZE\n"
    b"250-PIPELINING\n"
    b"250-DSN\n"
    b"250-ENHANCEDSTATUSCODES\n"
    b"250-STARTTLS\n"
    b"250-X-ANONYMOUSTLS\n"
    b"250-AUTH NTLM\n"
    b"250-X-EXPS GSSAPI NTLM\n"
    b"250-8BITMIME\n"
    b"250-BINARYMIME\n"
    b"250-CHUNKING\n"
    b"250 XRDST\n"
)


def test_exchange_on_premises_with_bare_lf_and_size_without_number() -> None:
    extensions = from_wire(EXCHANGE_ON_PREMISES)
    assert extensions.supports_size
    assert extensions.size_limit is None
    assert extensions.params("x-exps") == ("GSSAPI", "NTLM")
    assert extensions.auth_mechanisms == {"NTLM"}
    assert "X-ANONYMOUSTLS" in extensions and "xrdst" in extensions
    assert extensions.starttls


GMAIL = (
    b"250-smtp.gmail.com at your service, [192.0.2.1]\r\n"
    b"250-SIZE 35882577\r\n"
    b"250-8BITMIME\r\n"
    b"250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-PIPELINING\r\n"
    b"250-CHUNKING\r\n"
    b"250 SMTPUTF8\r\n"
)


def test_gmail() -> None:
    extensions = from_wire(GMAIL)
    assert extensions.domain == "smtp.gmail.com"
    assert extensions.size_limit == 35_882_577
    assert extensions.auth_mechanisms == {
        "LOGIN",
        "PLAIN",
        "XOAUTH2",
        "PLAIN-CLIENTTOKEN",
        "OAUTHBEARER",
        "XOAUTH",
    }
    assert not extensions.starttls


def test_old_auth_form_next_to_the_standard_one_is_merged() -> None:
    extensions = from_wire(
        b"250-mail.example.com\r\n"
        b"250-AUTH LOGIN PLAIN\r\n"
        b"250-AUTH=LOGIN PLAIN DIGEST-MD5\r\n"
        b"250 8BITMIME\r\n"
    )
    assert extensions.params("AUTH") == ("LOGIN", "PLAIN", "DIGEST-MD5")
    assert extensions.auth_mechanisms == {"LOGIN", "PLAIN", "DIGEST-MD5"}
    assert extensions.eightbitmime


def test_old_auth_form_alone() -> None:
    extensions = ehlo(b"mail.example.com", b"auth=login", b"SIZE 1000")
    assert "AUTH" in extensions
    assert extensions.auth_mechanisms == {"LOGIN"}
    assert extensions.size_limit == 1000


def test_old_auth_form_without_mechanisms() -> None:
    extensions = ehlo(b"mx", b"AUTH=", b"AUTH= PLAIN")
    assert "AUTH" in extensions
    assert extensions.auth_mechanisms == {"PLAIN"}


def test_greeting_only() -> None:
    extensions = from_wire(b"250 mx.example.com greets you\r\n")
    assert extensions == Extensions(domain="mx.example.com")
    assert extensions.keywords == {}
    assert advertised(extensions) == set()


def test_bare_code_and_no_lines() -> None:
    assert from_wire(b"250\r\n") == EMPTY_EXTENSIONS
    assert Extensions.from_reply(Reply(code=250, lines=())) == EMPTY_EXTENSIONS


def test_lmtp_lhlo_reply() -> None:
    extensions = from_wire(
        b"250-lmtp.example.com\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n"
    )
    assert advertised(extensions) == {"pipelining", "enhanced_status_codes", "eightbitmime"}


def test_requiretls_and_mt_priority() -> None:
    extensions = ehlo(b"mx", b"REQUIRETLS", b"MT-PRIORITY MIXER")
    assert extensions.requiretls
    assert extensions.mt_priority
    assert extensions.params("mt-priority") == ("MIXER",)


# --- tolerance --------------------------------------------------------------


def test_keywords_in_any_case_are_upper_cased_and_params_kept_as_given() -> None:
    extensions = ehlo(b"mx", b"pipelining", b"Size 2000", b"x-Vendor Foo bAR")
    assert list(extensions.keywords) == ["PIPELINING", "SIZE", "X-VENDOR"]
    assert extensions.pipelining
    assert extensions.size_limit == 2000
    assert extensions.params("X-VENDOR") == ("Foo", "bAR")


def test_extra_spaces_and_tabs_between_words() -> None:
    extensions = ehlo(b"  mx.example.com   hi ", b"  SIZE   1000  ", b"AUTH\tPLAIN \t LOGIN\t")
    assert extensions.domain == "mx.example.com"
    assert extensions.params("SIZE") == ("1000",)
    assert extensions.auth_mechanisms == {"PLAIN", "LOGIN"}


@pytest.mark.parametrize(
    "line",
    [b"", b"   ", b"-PIPELINING", b"X_FOO", b"FOO=BAR", b"P\xffPE", b"\xff", b"SIZE:100", b"(hi)"],
)
def test_lines_that_are_not_keywords_are_ignored(line: bytes) -> None:
    extensions = ehlo(b"mx", line, b"DSN")
    assert list(extensions.keywords) == ["DSN"]


def test_non_utf8_bytes_are_replaced() -> None:
    extensions = ehlo(b"mx\xff.example \xfe", b"X-FOO caf\xe9 ok", "X-BAR café".encode())
    assert extensions.domain == "mx\ufffd.example"
    assert extensions.params("X-FOO") == ("caf\ufffd", "ok")
    assert extensions.params("X-BAR") == ("café",)


@pytest.mark.parametrize(
    ("params", "limit"),
    [
        (b"", None),
        (b" 0", None),
        (b" 1", 1),
        (b" 000123", 123),
        (b" 99999999999999999999", 99_999_999_999_999_999_999),
        (b" 999999999999999999999", None),
        (b" abc", None),
        (b" -5", None),
        (b" +5", None),
        (b" 1_000", None),
        (b" 10MB", None),
        (b" 1.5", None),
        (" \u0661\u0662".encode(), None),
        (b" 1000 2000", 1000),
    ],
)
def test_size_limit(params: bytes, limit: int | None) -> None:
    extensions = ehlo(b"mx", b"SIZE" + params)
    assert extensions.supports_size
    assert extensions.size_limit == limit


def test_no_size() -> None:
    extensions = ehlo(b"mx", b"PIPELINING")
    assert not extensions.supports_size
    assert extensions.size_limit is None


def test_duplicate_keywords_merge_params_and_the_first_size_wins() -> None:
    extensions = ehlo(b"mx", b"SIZE 1000", b"size 2000", b"SIZE 1000", b"PIPELINING", b"SIZE")
    assert extensions.params("SIZE") == ("1000", "2000")
    assert extensions.size_limit == 1000
    assert list(extensions.keywords) == ["SIZE", "PIPELINING"]


def test_auth_mechanisms_are_upper_cased_and_invalid_names_dropped() -> None:
    extensions = ehlo(
        b"mx", b"AUTH plain Login bad/mech X_OK ABCDEFGHIJKLMNOPQRSTUVWXYZ caf\xc3\xa9 GSSAPI"
    )
    assert extensions.auth_mechanisms == {"PLAIN", "LOGIN", "X_OK", "GSSAPI"}
    assert extensions.params("AUTH")[:2] == ("plain", "Login")


def test_first_line_is_never_a_keyword() -> None:
    extensions = ehlo(b"PIPELINING", b"SIZE 10")
    assert extensions.domain == "PIPELINING"
    assert not extensions.pipelining


def test_reply_code_is_not_checked() -> None:
    reply = Reply(code=550, lines=(b"mx", b"PIPELINING"))
    assert Extensions.from_reply(reply).pipelining


# --- the value type ---------------------------------------------------------


def test_lookups_are_case_insensitive() -> None:
    extensions = ehlo(b"mx", b"X-Custom a b")
    assert "x-custom" in extensions
    assert "X-CUSTOM" in extensions
    assert extensions.params("x-CUSTOM") == ("a", "b")
    assert extensions.params("MISSING") == ()
    assert "MISSING" not in extensions


@pytest.mark.parametrize("thing", [None, 1, b"X-CUSTOM", ("X-CUSTOM",)])
def test_contains_only_strings(thing: object) -> None:
    assert thing not in ehlo(b"mx", b"X-Custom")


def test_immutable() -> None:
    extensions = ehlo(b"mx", b"SIZE 10")
    with pytest.raises(dataclasses.FrozenInstanceError):
        extensions.domain = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        extensions.keywords["SIZE"] = ("20",)  # type: ignore[index]
    assert isinstance(extensions.keywords, MappingProxyType)
    assert isinstance(EMPTY_EXTENSIONS.keywords, MappingProxyType)


def test_constructor_normalises_keywords_and_copies_them() -> None:
    source = {"size": ("100",), "SIZE": ("200", "100"), "Pipelining": ()}
    extensions = Extensions("mx", source)
    source["DSN"] = ()
    assert dict(extensions.keywords) == {"SIZE": ("100", "200"), "PIPELINING": ()}
    assert extensions.size_limit == 100


def test_constructor_refuses_a_string_as_parameters() -> None:
    with pytest.raises(TypeError, match="'SIZE'"):
        Extensions("mx", {"SIZE": "100"})  # type: ignore[dict-item]


def test_equality_and_hash() -> None:
    first = ehlo(b"mx", b"SIZE 10", b"PIPELINING")
    second = Extensions("mx", {"pipelining": (), "size": ("10",)})
    assert first == second
    assert hash(first) == hash(second)
    assert first != ehlo(b"mx", b"SIZE 11", b"PIPELINING")
    assert first != ehlo(b"other", b"SIZE 10", b"PIPELINING")
    assert len({first, second, EMPTY_EXTENSIONS}) == 2


def test_repr() -> None:
    extensions = ehlo(b"mx.example.com", b"SIZE 10", b"PIPELINING", b"AUTH PLAIN LOGIN")
    assert repr(extensions) == (
        "<Extensions of 'mx.example.com': SIZE 10, PIPELINING, AUTH PLAIN LOGIN>"
    )
    assert repr(EMPTY_EXTENSIONS) == "<Extensions of '': none>"


def test_empty_extensions() -> None:
    assert Extensions() == EMPTY_EXTENSIONS
    assert EMPTY_EXTENSIONS.domain == ""
    assert advertised(EMPTY_EXTENSIONS) == set()
    assert EMPTY_EXTENSIONS.auth_mechanisms == frozenset()
    assert EMPTY_EXTENSIONS.size_limit is None


# --- properties -------------------------------------------------------------

ehlo_lines = st.lists(
    st.one_of(
        st.binary(max_size=30),
        st.sampled_from([b"SIZE", b"AUTH", b"AUTH=", b"auth=", b"8BITMIME", b"-", b" "]).flatmap(
            lambda keyword: st.binary(max_size=20).map(lambda rest: keyword + rest)
        ),
    ),
    max_size=12,
)


@given(ehlo_lines)
def test_any_lines_give_a_valid_view(lines: list[bytes]) -> None:
    extensions = ehlo(*lines)
    for keyword, params in extensions.keywords.items():
        assert keyword == keyword.upper()
        assert keyword.isascii() and keyword[0].isalnum()
        assert all(param and not set(param) & set(" \t\r\n\x0b\x0c") for param in params)
    limit = extensions.size_limit
    assert limit is None or limit > 0
    assert all(name == name.upper() for name in extensions.auth_mechanisms)
    assert advertised(extensions) <= set(BOOLEAN_PROPERTIES)
    assert Extensions(extensions.domain, extensions.keywords) == extensions
    assert repr(extensions).startswith("<Extensions of ")
