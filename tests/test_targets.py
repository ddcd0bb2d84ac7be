"""Where a client connects: connection URLs, and arguments checked at construction."""

from __future__ import annotations

from typing import Any

import pytest
from flavours import ALICE, Flavour
from servers import AiosmtpdServer, TLSAiosmtpdServer
from smtpbee import InvalidInputError, TLSMode
from smtpbee.transports._target import parse_connection_url
from smtpbee.transports.sync import SMTPClient


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "lmtp", "user", "password"),
    [
        ("smtps://u:p@mx.test:465", "mx.test", 465, TLSMode.IMPLICIT, False, "u", "p"),
        ("smtps://mx.test", "mx.test", 465, TLSMode.IMPLICIT, False, None, None),
        ("smtp://mx.test:587", "mx.test", 587, TLSMode.STARTTLS, False, None, None),
        ("SMTP://mx.test", "mx.test", 587, TLSMode.STARTTLS, False, None, None),
        ("lmtp://[::1]:2424", "::1", 2424, TLSMode.STARTTLS, True, None, None),
        (
            "smtp://me%40x.test:p%3Ass%2Fw%20d@mx.test/",
            "mx.test",
            587,
            TLSMode.STARTTLS,
            False,
            "me@x.test",
            "p:ss/w d",
        ),
        ("smtps://user@mx.test", "mx.test", 465, TLSMode.IMPLICIT, False, "user", None),
    ],
)
def test_connection_urls(
    url: str, host: str, port: int, tls: TLSMode, lmtp: bool, user: Any, password: Any
) -> None:
    parsed = parse_connection_url(url)
    assert (parsed.host, parsed.port, parsed.tls, parsed.lmtp) == (host, port, tls, lmtp)
    assert (parsed.username, parsed.password) == (user, password)
    assert "password" not in repr(parsed)


@pytest.mark.parametrize(
    "url",
    [
        "http://mx.test",
        "smtp://",
        "smtp://mx.test:99999",
        "smtp://mx.test:port",
        "smtp://mx.test/path",
        "smtp://mx.test?tls=none",
        "smtp://mx.test#x",
    ],
)
def test_bad_connection_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_connection_url(url)


def test_a_url_sets_the_client_and_explicit_arguments_win() -> None:
    client = SMTPClient("smtps://u:p%40ss@mx.test")
    assert (client.host, client.port, client.tls_mode) == ("mx.test", 465, TLSMode.IMPLICIT)
    assert client.credentials == ("u", "p@ss")
    client = SMTPClient("smtp://mx.test", 2525, tls="none")
    assert (client.port, client.tls_mode) == (2525, TLSMode.NONE)
    assert SMTPClient("lmtp://mx.test", tls="none").lmtp


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"port": 0}, InvalidInputError),
        ({"port": 70000}, InvalidInputError),
        ({"port": "25"}, InvalidInputError),
        ({"timeout": -1}, InvalidInputError),
        ({"timeout": "30"}, InvalidInputError),
        ({"connect_timeout": 0}, InvalidInputError),
        ({"tls": "sometimes"}, InvalidInputError),
        ({"timout": 30}, TypeError),
    ],
)
def test_arguments_are_checked_at_construction(kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        SMTPClient("mx.test", **kwargs)


@pytest.mark.anyio
async def test_credentials_in_the_url_log_in_on_connect(
    flavour: Flavour, aiosmtpd_implicit_tls_server: TLSAiosmtpdServer
) -> None:
    server = aiosmtpd_implicit_tls_server
    url = f"smtps://{ALICE[0]}:{ALICE[1]}@localhost:{server.port}"
    async with flavour.client(
        host=url, port=None, tls=None, ssl_context=server.client_context
    ) as c:
        assert c.session.conn.authenticated
        await c.sendmail("a@x.test", ["b@x.test"], b"Subject: s\r\n\r\nurl\r\n")
    assert [m.content for m in server.messages] == [b"Subject: s\r\n\r\nurl\r\n"]


@pytest.mark.anyio
async def test_plain_url_for_a_local_server(
    flavour: Flavour, aiosmtpd_server: AiosmtpdServer
) -> None:
    url = f"smtp://127.0.0.1:{aiosmtpd_server.port}"
    async with flavour.client(host=url, port=None, tls="none") as c:
        assert c.inner.port == aiosmtpd_server.port
        await c.noop()
