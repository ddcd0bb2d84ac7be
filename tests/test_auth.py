import base64
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smtpbee._auth import (
    PASSWORD_MECHANISM_PREFERENCE,
    AuthenticationIncomplete,
    CramMD5,
    InvalidChallengeError,
    Login,
    OAuthBearer,
    Plain,
    SASLMechanism,
    XOAuth2,
)
from smtpbee._errors import InvalidInputError, RemoteProtocolError, UnsupportedExtensionError
from smtpbee._mechanisms import MECHANISMS, choose_mechanism
from smtpbee._sasl import escape_saslname
from smtpbee._scram import ScramSHA1, ScramSHA256

SECRET = "s3cr3t-Pa55w0rd"

# RFC 7628 §4.1 and §4.3
RFC7628_TOKEN = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
RFC7628_INITIAL = (
    "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVhcmVy"
    "IHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
)
RFC7628_ERROR = base64.b64decode(
    "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJleGFtcGxlX3Njb3BlIiwib3BlbmlkLWNvbmZpZ3Vy"
    "YXRpb24iOiJodHRwczovL2V4YW1wbGUuY29tLy53ZWxsLWtub3duL29wZW5pZC1jb25maWd1cmF0aW9uIn0="
)

# Google's published XOAUTH2 example
XOAUTH2_TOKEN = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
XOAUTH2_INITIAL = (
    "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNr"
    "QmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
)
GOOGLE_ERROR = b'{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}'


def unescape_saslname(escaped: str) -> str:
    return escaped.replace("=2C", ",").replace("=3D", "=")


# --- the base class, the errors and the shared helpers -------------------------------


def test_errors_are_remote_protocol_errors() -> None:
    assert issubclass(InvalidChallengeError, RemoteProtocolError)
    assert issubclass(AuthenticationIncomplete, RemoteProtocolError)
    assert InvalidChallengeError("x").server_error is None


def test_any_subclass_is_a_mechanism_with_sensible_defaults() -> None:
    @dataclass
    class Anonymous(SASLMechanism):
        name: ClassVar[str] = "ANONYMOUS"
        trace: str = "someone"

        def respond(self, challenge: bytes) -> bytes:
            return self.trace.encode()

    mechanism = Anonymous()
    assert mechanism.initial_response() is None
    assert mechanism.respond(b"") == b"someone"
    mechanism.success()  # the default accepts a 235 at any step
    assert mechanism.failure_details is None
    assert Anonymous.sends_secret_in_clear is False


def test_the_base_class_is_abstract() -> None:
    with pytest.raises(TypeError):
        SASLMechanism()  # type: ignore[abstract]


@given(st.text(st.characters(codec="utf-8")))
def test_saslname_escaping_round_trips(name: str) -> None:
    escaped = escape_saslname(name)
    assert "," not in escaped
    assert re.fullmatch(r"(?:[^=]|=2C|=3D)*", escaped)
    assert unescape_saslname(escaped) == name


# --- PLAIN ---------------------------------------------------------------------------


def test_plain_rfc4616_examples() -> None:
    assert Plain("tim", "tanstaaftanstaaf").initial_response() == b"\0tim\0tanstaaftanstaaf"
    assert Plain("Kurt", "xipj3plmq", authzid="Ursel").initial_response() == (
        b"Ursel\0Kurt\0xipj3plmq"
    )


def test_plain_sends_utf8() -> None:
    assert Plain("j\u00fcrgen", "p\u00e4ss").initial_response() == (
        "\0j\u00fcrgen\0p\u00e4ss".encode()
    )


@pytest.mark.parametrize(
    "arguments",
    [
        {"username": "a\0b", "password": SECRET},
        {"username": "ab", "password": SECRET + "\0"},
        {"username": "ab", "password": SECRET, "authzid": "\0"},
    ],
)
def test_plain_refuses_nul(arguments: dict[str, str]) -> None:
    with pytest.raises(InvalidInputError, match="NUL") as caught:
        Plain(**arguments)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(("username", "password"), [("", SECRET), ("tim", "")])
def test_plain_refuses_empty_credentials(username: str, password: str) -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        Plain(username, password)


def test_plain_refuses_a_challenge_after_the_credentials() -> None:
    mechanism = Plain("tim", SECRET)
    mechanism.initial_response()
    with pytest.raises(InvalidChallengeError):
        mechanism.respond(b"")


def test_plain_deferred_initial_response() -> None:
    mechanism = Plain("tim", "tanstaaftanstaaf")
    assert mechanism.respond(b"") == b"\0tim\0tanstaaftanstaaf"
    mechanism.success()


def test_plain_refuses_a_non_empty_first_challenge() -> None:
    with pytest.raises(InvalidChallengeError, match="non-empty"):
        Plain("tim", SECRET).respond(b"hello")


def test_plain_success_before_sending_is_incomplete() -> None:
    mechanism = Plain("tim", SECRET)
    with pytest.raises(AuthenticationIncomplete):
        mechanism.success()
    assert mechanism.initial_response() == b"\0tim\0" + SECRET.encode()
    mechanism.success()


no_nul_text = st.text(st.characters(codec="utf-8", exclude_characters="\0"))


@given(username=no_nul_text.filter(bool), password=no_nul_text.filter(bool), authzid=no_nul_text)
def test_plain_initial_response_parses_back(username: str, password: str, authzid: str) -> None:
    response = Plain(username, password, authzid=authzid).initial_response()
    assert response.decode().split("\0") == [authzid, username, password]


# --- LOGIN ---------------------------------------------------------------------------


def test_login_answers_by_position_whatever_the_prompts() -> None:
    mechanism = Login("tim", SECRET)
    assert mechanism.initial_response() is None
    assert mechanism.respond(b"User Name\0") == b"tim"
    assert mechanism.respond(b"") == SECRET.encode()
    mechanism.success()


def test_login_refuses_a_third_challenge() -> None:
    mechanism = Login("tim", SECRET)
    mechanism.respond(b"Username:")
    mechanism.respond(b"Password:")
    with pytest.raises(InvalidChallengeError, match="third") as caught:
        mechanism.respond(b"Again:")
    assert SECRET not in str(caught.value)


def test_login_with_the_username_early() -> None:
    mechanism = Login("tim", SECRET, send_username_early=True)
    assert mechanism.initial_response() == b"tim"
    assert mechanism.respond(b"Password:") == SECRET.encode()
    mechanism.success()
    with pytest.raises(InvalidChallengeError):
        mechanism.respond(b"Password:")


def test_login_sends_utf8() -> None:
    mechanism = Login("m\u00fcller", "gr\u00fc\u00dfe")
    assert mechanism.respond(b"") == "m\u00fcller".encode()
    assert mechanism.respond(b"") == "gr\u00fc\u00dfe".encode()


def test_login_success_before_the_password_is_incomplete() -> None:
    mechanism = Login("tim", SECRET)
    mechanism.respond(b"Username:")
    with pytest.raises(AuthenticationIncomplete):
        mechanism.success()


@pytest.mark.parametrize(("username", "password"), [("t\0m", SECRET), ("tim", "a\0b"), ("", "x")])
def test_login_refuses_bad_input(username: str, password: str) -> None:
    with pytest.raises(InvalidInputError):
        Login(username, password)


# --- CRAM-MD5 ------------------------------------------------------------------------


def test_cram_md5_rfc2195_example() -> None:
    mechanism = CramMD5("tim", "tanstaaftanstaaf")
    assert mechanism.initial_response() is None
    challenge = b"<1896.697170952@postoffice.reston.mci.net>"
    assert mechanism.respond(challenge) == b"tim b913a602c7eda7a495b4e6e7334d3890"
    mechanism.success()
    assert CramMD5.sends_secret_in_clear is False


def test_cram_md5_refuses_a_second_challenge() -> None:
    mechanism = CramMD5("tim", SECRET)
    mechanism.respond(b"<1@x>")
    with pytest.raises(InvalidChallengeError, match="second"):
        mechanism.respond(b"<2@x>")


def test_cram_md5_refuses_an_empty_challenge() -> None:
    with pytest.raises(InvalidChallengeError, match="empty"):
        CramMD5("tim", SECRET).respond(b"")


def test_cram_md5_success_without_a_challenge_is_incomplete() -> None:
    with pytest.raises(AuthenticationIncomplete):
        CramMD5("tim", SECRET).success()


@pytest.mark.parametrize("username", ["", "t\0m"])
def test_cram_md5_refuses_bad_usernames(username: str) -> None:
    with pytest.raises(InvalidInputError):
        CramMD5(username, SECRET)


# --- XOAUTH2 -------------------------------------------------------------------------


def test_xoauth2_google_example() -> None:
    mechanism = XOAuth2("someuser@example.com", XOAUTH2_TOKEN)
    assert base64.b64encode(mechanism.initial_response()).decode() == XOAUTH2_INITIAL
    mechanism.success()
    assert mechanism.failure_details is None


def test_xoauth2_error_challenge_is_kept_and_answered_empty() -> None:
    mechanism = XOAuth2("someuser@example.com", XOAUTH2_TOKEN)
    mechanism.initial_response()
    assert mechanism.respond(GOOGLE_ERROR) == b""
    assert mechanism.failure_details == GOOGLE_ERROR.decode()
    with pytest.raises(InvalidChallengeError, match="second"):
        mechanism.respond(GOOGLE_ERROR)
    with pytest.raises(AuthenticationIncomplete):
        mechanism.success()


@pytest.mark.parametrize(
    "challenge",
    [b"not json", b"[1, 2]", b"\xff\xfe", b"[" * 5000 + b"]" * 5000],
    ids=["text", "array", "not-utf8", "deeply-nested"],
)
def test_xoauth2_refuses_a_challenge_that_is_not_a_json_object(challenge: bytes) -> None:
    mechanism = XOAuth2("u@example.com", XOAUTH2_TOKEN)
    mechanism.initial_response()
    with pytest.raises(InvalidChallengeError):
        mechanism.respond(challenge)
    assert mechanism.failure_details is None


def test_xoauth2_deferred_initial_response() -> None:
    mechanism = XOAuth2("someuser@example.com", XOAUTH2_TOKEN)
    assert base64.b64encode(mechanism.respond(b"")).decode() == XOAUTH2_INITIAL
    with pytest.raises(InvalidChallengeError, match="non-empty"):
        XOAuth2("u", XOAUTH2_TOKEN).respond(b"{}")


def test_xoauth2_success_before_sending_is_incomplete() -> None:
    with pytest.raises(AuthenticationIncomplete):
        XOAuth2("u", XOAUTH2_TOKEN).success()


def test_token_callable_is_called_for_each_initial_response() -> None:
    tokens = iter(["first-token", "second-token"])
    calls: list[str] = []

    def fresh_token() -> str:
        calls.append("called")
        return next(tokens)

    mechanism = XOAuth2("u", fresh_token)
    assert calls == []
    assert mechanism.initial_response() == b"user=u\x01auth=Bearer first-token\x01\x01"
    assert mechanism.initial_response() == b"user=u\x01auth=Bearer second-token\x01\x01"
    assert len(calls) == 2


@pytest.mark.parametrize("mechanism_class", [XOAuth2, OAuthBearer])
@pytest.mark.parametrize("bad_token", ["", "has space", "tab\tbed", "\x01", "caf\u00e9"])
def test_oauth_mechanisms_refuse_bad_tokens(
    mechanism_class: type[XOAuth2] | type[OAuthBearer], bad_token: str
) -> None:
    with pytest.raises(InvalidInputError, match="token"):
        mechanism_class("u", bad_token)
    late = mechanism_class("u", lambda: bad_token)
    with pytest.raises(InvalidInputError, match="token") as caught:
        late.initial_response()
    if bad_token:
        assert bad_token not in str(caught.value)


@pytest.mark.parametrize("mechanism_class", [XOAuth2, OAuthBearer])
def test_oauth_mechanisms_refuse_a_callable_returning_bytes(
    mechanism_class: type[XOAuth2] | type[OAuthBearer],
) -> None:
    mechanism = mechanism_class("u", lambda: b"token")  # type: ignore[arg-type, return-value]
    with pytest.raises(InvalidInputError, match="bytes"):
        mechanism.initial_response()


@pytest.mark.parametrize("username", ["", "a\x01b", "a\nb", "a\x7f"])
def test_xoauth2_refuses_bad_usernames(username: str) -> None:
    with pytest.raises(InvalidInputError):
        XOAuth2(username, XOAUTH2_TOKEN)


xoauth2_usernames = st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), min_size=1)
tokens = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1)


@given(username=xoauth2_usernames, token=tokens)
def test_xoauth2_initial_response_parses_back(username: str, token: str) -> None:
    response = XOAuth2(username, token).initial_response().decode()
    assert response.endswith("\x01\x01")
    user_pair, auth_pair = response[:-2].split("\x01")
    assert user_pair == "user=" + username
    assert auth_pair == "auth=Bearer " + token


# --- OAUTHBEARER ---------------------------------------------------------------------


def test_oauthbearer_rfc7628_example() -> None:
    mechanism = OAuthBearer("user@example.com", RFC7628_TOKEN, host="server.example.com", port=143)
    assert base64.b64encode(mechanism.initial_response()).decode() == RFC7628_INITIAL
    mechanism.success()
    assert mechanism.failure_details is None


def test_oauthbearer_rfc7628_failure() -> None:
    mechanism = OAuthBearer("user@example.com", RFC7628_TOKEN, host="server.example.com", port=587)
    mechanism.initial_response()
    assert mechanism.respond(RFC7628_ERROR) == b"\x01"
    assert mechanism.failure_details is not None
    assert '"invalid_token"' in mechanism.failure_details
    with pytest.raises(InvalidChallengeError, match="second"):
        mechanism.respond(RFC7628_ERROR)
    with pytest.raises(AuthenticationIncomplete):
        mechanism.success()


def test_oauthbearer_without_host_port_or_authzid() -> None:
    assert OAuthBearer("", "tok").initial_response() == b"n,,\x01auth=Bearer tok\x01\x01"
    assert OAuthBearer("a,b=c", "tok", port=25).initial_response() == (
        b"n,a=a=2Cb=3Dc,\x01port=25\x01auth=Bearer tok\x01\x01"
    )


def test_oauthbearer_error_challenge_needs_a_status() -> None:
    mechanism = OAuthBearer("u", "tok")
    mechanism.initial_response()
    with pytest.raises(InvalidChallengeError, match="status"):
        mechanism.respond(b'{"scope": "x"}')


def test_oauthbearer_deferred_initial_response() -> None:
    mechanism = OAuthBearer("u", "tok")
    assert mechanism.respond(b"") == b"n,a=u,\x01auth=Bearer tok\x01\x01"
    with pytest.raises(InvalidChallengeError):
        OAuthBearer("u", "tok").respond(b"x")
    with pytest.raises(AuthenticationIncomplete):
        OAuthBearer("u", "tok").success()


@pytest.mark.parametrize("port", [0, 65536, -1, True, "587"])
def test_oauthbearer_refuses_bad_ports(port: object) -> None:
    with pytest.raises(InvalidInputError, match="port"):
        OAuthBearer("u", "tok", port=port)  # type: ignore[arg-type]


@pytest.mark.parametrize(("username", "host"), [("u\x01", None), ("u", "h\x01port=1")])
def test_oauthbearer_refuses_control_characters(username: str, host: str | None) -> None:
    with pytest.raises(InvalidInputError, match="control"):
        OAuthBearer(username, "tok", host=host)


@given(username=xoauth2_usernames)
def test_oauthbearer_authzid_round_trips(username: str) -> None:
    response = OAuthBearer(username, "tok").initial_response().decode()
    header = response.split("\x01", 1)[0]
    flag, authzid, rest = header.split(",")
    assert (flag, rest) == ("n", "")
    assert unescape_saslname(authzid.removeprefix("a=")) == username


# --- secrets never shown -------------------------------------------------------------


def _after_an_exchange(mechanism: SASLMechanism, *challenges: bytes) -> SASLMechanism:
    mechanism.initial_response()
    for challenge in challenges:
        mechanism.respond(challenge)
    return mechanism


MECHANISM_FACTORIES: list[Callable[[], SASLMechanism]] = [
    lambda: _after_an_exchange(Plain("tim", SECRET, authzid="boss")),
    lambda: _after_an_exchange(Login("tim", SECRET), b"Username:", b"Password:"),
    lambda: _after_an_exchange(CramMD5("tim", SECRET), b"<1@x>"),
    lambda: _after_an_exchange(XOAuth2("tim", SECRET), GOOGLE_ERROR),
    lambda: _after_an_exchange(XOAuth2("tim", lambda: SECRET)),
    lambda: _after_an_exchange(OAuthBearer("tim", SECRET, host="h", port=25), RFC7628_ERROR),
]


@pytest.mark.parametrize("factory", MECHANISM_FACTORIES)
def test_repr_and_str_never_show_the_secret(factory: Callable[[], SASLMechanism]) -> None:
    mechanism = factory()
    assert SECRET not in repr(mechanism)
    assert SECRET not in str(mechanism)
    assert "tim" in repr(mechanism)


# --- the registry and the choice -----------------------------------------------------


def test_registry_is_keyed_by_name_and_read_only() -> None:
    assert set(MECHANISMS) == {
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "CRAM-MD5",
        "PLAIN",
        "LOGIN",
        "XOAUTH2",
        "OAUTHBEARER",
    }
    for name, mechanism_class in MECHANISMS.items():
        assert mechanism_class.name == name
    with pytest.raises(TypeError):
        MECHANISMS["X"] = Plain  # type: ignore[index]
    assert set(PASSWORD_MECHANISM_PREFERENCE) <= set(MECHANISMS)


@pytest.mark.parametrize(
    ("name", "clear"),
    [
        ("PLAIN", True),
        ("LOGIN", True),
        ("XOAUTH2", True),
        ("OAUTHBEARER", True),
        ("CRAM-MD5", False),
        ("SCRAM-SHA-1", False),
        ("SCRAM-SHA-256", False),
    ],
)
def test_which_mechanisms_send_the_secret_in_clear(name: str, clear: bool) -> None:
    assert MECHANISMS[name].sends_secret_in_clear is clear


def test_choose_the_strongest_offered() -> None:
    offered = ["login", "PLAIN", "cram-md5", "SCRAM-SHA-1", "SCRAM-SHA-256", "XOAUTH2"]
    assert isinstance(choose_mechanism(offered, "tim", SECRET), ScramSHA256)
    assert isinstance(choose_mechanism(offered[:4], "tim", SECRET), ScramSHA1)
    assert isinstance(choose_mechanism(offered[:3], "tim", SECRET), CramMD5)
    assert isinstance(choose_mechanism(offered[:2], "tim", SECRET), Plain)
    assert isinstance(choose_mechanism(offered[:1], "tim", SECRET), Login)


def test_choose_returns_a_fresh_object_each_time() -> None:
    first = choose_mechanism(["PLAIN"], "tim", SECRET)
    second = choose_mechanism(["PLAIN"], "tim", SECRET)
    assert first is not second


def test_choose_without_cleartext_passes_over_plain_and_login() -> None:
    assert isinstance(
        choose_mechanism(["PLAIN", "CRAM-MD5"], "tim", SECRET, allow_cleartext=False), CramMD5
    )
    with pytest.raises(UnsupportedExtensionError, match="in clear") as caught:
        choose_mechanism(["PLAIN", "LOGIN"], "tim", SECRET, allow_cleartext=False)
    assert "PLAIN, LOGIN" in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("offered", "shown"),
    [([], "offers none"), (["GSSAPI", "xoauth2"], "offers GSSAPI, XOAUTH2")],
)
def test_choose_names_what_was_offered_when_nothing_fits(offered: list[str], shown: str) -> None:
    with pytest.raises(UnsupportedExtensionError, match=shown):
        choose_mechanism(offered, "tim", SECRET)


def test_choose_passes_over_scram_when_saslprep_refuses_the_password() -> None:
    password = SECRET + "\x07"
    assert isinstance(choose_mechanism(["SCRAM-SHA-256", "PLAIN"], "tim", password), Plain)
    with pytest.raises(UnsupportedExtensionError, match=r"C\.2\.1") as caught:
        choose_mechanism(["SCRAM-SHA-256"], "tim", password)
    assert isinstance(caught.value.__cause__, InvalidInputError)
    assert SECRET not in str(caught.value)
