"""Every client through a real SOCKS5 server: Debian's dante, on loopback.

The session-scoped ``dante`` fixture runs ``/usr/sbin/danted`` (SOCKS5 and SOCKS4)
with a private configuration: it listens on 127.0.0.1 on a free port, tunnels only to 127.0.0.1,
offers both no authentication and username/password (dante checks those against
the system's password database, so the login is the system user that
.ci/dante-setup adds), logs every tunnel to a private file, and is stopped by its
PID at the end. That log is how a test knows a session went through the proxy: a
tunnel to the test's own aiosmtpd port, opened after the test began, is there only
if the client asked the proxy for it.

Without danted (or, for the login tests, without root and the system user) the
tests skip with the reason; in CI (CI=true) they fail instead.
"""

from __future__ import annotations

import email.message
import inspect
import logging
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
from flavours import Flavour
from servers import AiosmtpdServer, TLSAiosmtpdServer
from smtpbee import ConnectionLostError, InvalidInputError, SMTPTimeoutError
from smtpbee.transports import TLSVerificationError
from smtpbee.transports import _proxy as proxy_module

# The login dante accepts: a system user that .ci/dante-setup adds (keep them equal).
PROXY_USER = "smtpbee-proxy"
PROXY_PASSWORD = "proxy-Pass-1080"
DANTED = "/usr/sbin/danted"
BODY = b"Subject: through a proxy\r\n\r\nHello.\r\n"


def unavailable(reason: str) -> NoReturn:
    """Skip locally; fail in CI, where .ci/dante-setup must have made it available."""
    reason += "; set it up with `sudo bash .ci/dante-setup`"
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Dante:
    """A running danted: where it listens, and its log of tunnels."""

    host: str
    port: int
    log: Path
    can_log_in: bool

    def url(self, login: tuple[str, str] | None = None, scheme: str = "socks5") -> str:
        userinfo = f"{login[0]}:{login[1]}@" if login else ""
        return f"{scheme}://{userinfo}{self.host}:{self.port}"

    def mark(self) -> int:
        """Where the log ends now: tunnels() looks only after it."""
        return self.log.stat().st_size

    def tunnels(self, server_port: int, since: int, wait: float = 5.0) -> list[str]:
        """The client ends of the tunnels to 127.0.0.1:server_port opened after ``since``.

        E.g. "127.0.0.1.40112", or "username%smtpbee-proxy@127.0.0.1.40112" after a login.
        """
        opened = re.compile(
            rf"tcp/connect \[: (\S+) \S+ -> \S+ 127\.0\.0\.1\.{server_port}$", re.MULTILINE
        )
        deadline = time.monotonic() + wait
        while True:
            with self.log.open("rb") as log:
                log.seek(since)
                found = opened.findall(log.read().decode("utf-8", "replace"))
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def _config(log: Path, port: int, as_root: bool) -> str:
    # "username" first: a client that offers a login must use it (and fail with a
    # wrong one); a client that offers none gets "none".
    privileges = "user.privileged: root\nuser.unprivileged: nobody\n" if as_root else ""
    return f"""\
logoutput: {log}
internal: 127.0.0.1 port = {port}
external: 127.0.0.1
clientmethod: none
socksmethod: username none
{privileges}
client pass {{
    from: 127.0.0.1/32 to: 127.0.0.1/32
    log: error connect disconnect
}}
socks pass {{
    from: 127.0.0.1/32 to: 127.0.0.1/32
    protocol: tcp
    command: connect
    log: error connect disconnect
}}
socks block {{
    from: 0.0.0.0/0 to: 0.0.0.0/0
    log: error connect
}}
"""


@pytest.fixture(scope="session")
def dante(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dante]:
    """A danted on 127.0.0.1 (a free port) for the whole session, stopped by its PID."""
    if not os.access(DANTED, os.X_OK):
        unavailable(f"the SOCKS5 server {DANTED} is not installed (Debian's dante-server)")
    directory = tmp_path_factory.mktemp("dante")
    log = directory / "danted.log"
    log.touch()
    as_root = os.geteuid() == 0
    try:
        has_user = pwd.getpwnam(PROXY_USER) is not None
    except KeyError:
        has_user = False
    port = free_port()
    config = directory / "danted.conf"
    config.write_text(_config(log, port, as_root))
    with (directory / "stderr").open("wb") as stderr:
        process = subprocess.Popen(
            [DANTED, "-f", str(config), "-p", str(directory / "danted.pid"), "-N", "1"],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                output = (directory / "stderr").read_text() + log.read_text()
                pytest.fail(f"danted exited with {process.returncode}:\n{output}", pytrace=False)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"danted did not listen on 127.0.0.1:{port}", pytrace=False)
                time.sleep(0.05)
        yield Dante("127.0.0.1", port, log, can_log_in=as_root and has_user)
    finally:
        # danted's children follow their parent; if it hangs, its own process group
        # (start_new_session made it the leader) goes with it.
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def login(dante: Dante) -> tuple[str, str]:
    """The proxy login dante accepts (it needs root to read the password database)."""
    if not dante.can_log_in:
        unavailable(
            f"a dante login needs root and the system user {PROXY_USER} (running as uid"
            f" {os.geteuid()})"
        )
    return (PROXY_USER, PROXY_PASSWORD)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


async def _check_refused_connection(client: Any, secret: str) -> ConnectionLostError:
    with pytest.raises(ConnectionLostError) as caught:
        await client.connect()
    assert not client.usable
    assert secret not in str(caught.value)
    assert secret not in repr(client.inner)
    return caught.value


# ------------------------------------------------------------------------------------
# Delivery through the proxy, in plaintext and with both kinds of TLS


@pytest.mark.anyio
@pytest.mark.parametrize("scheme", ["socks5", "socks4"])
async def test_plain_delivery_through_the_proxy(
    flavour: Flavour, dante: Dante, aiosmtpd_server: AiosmtpdServer, scheme: str
) -> None:
    since = dante.mark()
    async with flavour.client(aiosmtpd_server, proxy=dante.url(scheme=scheme)) as c:
        assert c.tls_info is None
        result = await c.sendmail("a@x.test", ["b@x.test"], BODY)
    assert result.accepted == ["b@x.test"]
    [received] = aiosmtpd_server.messages
    assert received.content == BODY
    assert not received.tls
    assert len(dante.tunnels(aiosmtpd_server.port, since)) == 1


@pytest.mark.anyio
async def test_starttls_through_the_proxy_checks_the_servers_certificate(
    flavour: Flavour, dante: Dante, aiosmtpd_starttls_server: TLSAiosmtpdServer
) -> None:
    server = aiosmtpd_starttls_server
    since = dante.mark()
    async with flavour.client(server, tls="starttls", proxy=dante.url()) as c:
        assert c.tls_info is not None and c.tls_info.verified
        await c.login("alice", "wonderland")
        await c.sendmail("a@x.test", ["b@x.test"], BODY)
    [received] = server.messages
    assert received.tls and received.auth_login == "alice"
    assert len(dante.tunnels(server.port, since)) == 1


@pytest.mark.anyio
async def test_implicit_tls_through_the_proxy_with_a_login(
    flavour: Flavour,
    dante: Dante,
    login: tuple[str, str],
    aiosmtpd_implicit_tls_server: TLSAiosmtpdServer,
) -> None:
    server = aiosmtpd_implicit_tls_server
    since = dante.mark()
    # The certificate is for localhost, 127.0.0.1 and ::1: the name checked is the
    # server's (server_hostname), which the proxy never sees.
    client = flavour.client(server, proxy=dante.url(login), server_hostname="localhost")
    assert PROXY_PASSWORD not in repr(client.inner.proxy)
    async with client as c:
        info = c.tls_info
        assert info is not None and info.verified and info.peer_subject
        await c.sendmail("a@x.test", ["b@x.test"], BODY)
    assert server.messages[0].tls
    [tunnel] = dante.tunnels(server.port, since)
    assert tunnel.startswith(f"username%{PROXY_USER}@127.0.0.1.")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_the_certificate_is_checked_against_the_servers_name_not_the_proxys(
    flavour: Flavour, dante: Dante, aiosmtpd_factory: Any, mode: str
) -> None:
    # The proxy is 127.0.0.1, a name the certificate holds: a client that checked the
    # proxy's name would accept it.
    server = aiosmtpd_factory(tls_mode=mode)
    client = flavour.client(server, tls=mode, proxy=dante.url(), server_hostname="other.test")
    with pytest.raises(TLSVerificationError):
        await client.connect()
    assert server.messages == []


@pytest.mark.anyio
async def test_one_call_send_and_the_source_address_through_the_proxy(
    flavour: Flavour, dante: Dante, aiosmtpd_server: AiosmtpdServer
) -> None:
    msg = email.message.EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@x.test", "b@x.test", "one call"
    msg.set_content("Hello.\n")
    source = ("127.0.0.1", free_port())
    since = dante.mark()
    result = await flavour.send(
        msg,
        host=aiosmtpd_server.host,
        port=aiosmtpd_server.port,
        tls="none",
        timeout=10.0,
        proxy=dante.url(),
        source_address=source,
    )
    assert result.accepted == ["b@x.test"]
    # source_address is the local end of the connection to the proxy.
    assert dante.tunnels(aiosmtpd_server.port, since) == [f"127.0.0.1.{source[1]}"]


@pytest.mark.anyio
async def test_the_pool_passes_the_proxy_on(
    flavour: Flavour, dante: Dante, aiosmtpd_server: AiosmtpdServer
) -> None:
    msg = email.message.EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@x.test", "b@x.test", "pooled"
    msg.set_content("Hello.\n")
    since = dante.mark()
    pool = flavour.module.SMTPPool(
        aiosmtpd_server.host, aiosmtpd_server.port, size=1, tls="none", proxy=dante.url()
    )
    try:
        for _ in range(2):
            result = pool.send_message(msg)
            result = await result if inspect.isawaitable(result) else result
            assert result.accepted == ["b@x.test"]
    finally:
        closed = pool.close()
        if inspect.isawaitable(closed):
            await closed
    assert len(aiosmtpd_server.messages) == 2
    assert len(dante.tunnels(aiosmtpd_server.port, since)) == aiosmtpd_server.connections


# ------------------------------------------------------------------------------------
# Failures: the proxy's login, the proxy itself, the server behind it, time


@pytest.mark.anyio
async def test_a_wrong_proxy_password_is_a_lost_connection_that_hides_it(
    flavour: Flavour,
    dante: Dante,
    login: tuple[str, str],
    aiosmtpd_server: AiosmtpdServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "Wrong-proxy-pw-7"
    client = flavour.client(aiosmtpd_server, proxy=dante.url((login[0], wrong)))
    with caplog.at_level(logging.DEBUG, logger="smtpbee"):
        error = await _check_refused_connection(client, wrong)
    assert "through the proxy socks5://***@" in caplog.text
    assert wrong not in caplog.text and PROXY_USER not in caplog.text
    from python_socks import ProxyError

    assert isinstance(error.__cause__, ProxyError)
    assert "through the proxy socks5://***@127.0.0.1:" in str(error)
    assert aiosmtpd_server.connections == 0


@pytest.mark.anyio
async def test_a_proxy_that_refuses_the_connection(
    flavour: Flavour, closed_port: int, aiosmtpd_server: AiosmtpdServer
) -> None:
    secret = "Refused-proxy-pw-8"
    client = flavour.client(
        aiosmtpd_server, proxy=f"socks5://someone:{secret}@127.0.0.1:{closed_port}"
    )
    error = await _check_refused_connection(client, secret)
    assert isinstance(error.__cause__, OSError)
    assert f"127.0.0.1:{closed_port}" in str(error)


@pytest.mark.anyio
async def test_a_server_the_proxy_cannot_reach(
    flavour: Flavour, dante: Dante, closed_port: int
) -> None:
    client = flavour.client(host="127.0.0.1", port=closed_port, proxy=dante.url())
    error = await _check_refused_connection(client, PROXY_PASSWORD)
    assert "Connection refused" in str(error)


@pytest.mark.anyio
async def test_an_http_proxy_that_wants_another_login(
    flavour: Flavour, aiosmtpd_server: AiosmtpdServer
) -> None:
    secret = "Http-proxy-pw-13"
    requests: list[bytes] = []

    def refuse(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request and (chunk := conn.recv(4096)):
                request += chunk
            requests.append(request)
            conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        thread = threading.Thread(target=refuse, args=(listener,), daemon=True)
        thread.start()
        client = flavour.client(aiosmtpd_server, proxy=f"http://user:{secret}@127.0.0.1:{port}")
        error = await _check_refused_connection(client, secret)
        thread.join(10)
    assert "407" in str(error)
    [request] = requests
    assert request.startswith(f"CONNECT 127.0.0.1:{aiosmtpd_server.port} HTTP/1.1\r\n".encode())
    assert aiosmtpd_server.connections == 0


@pytest.mark.anyio
async def test_a_silent_proxy_times_out_after_connect_timeout(
    flavour: Flavour, aiosmtpd_server: AiosmtpdServer
) -> None:
    with socket.socket() as silent:  # accepts (in the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"socks5://127.0.0.1:{silent.getsockname()[1]}"
        client = flavour.client(aiosmtpd_server, proxy=url, timeout=None, connect_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(SMTPTimeoutError):
            await client.connect()
        assert time.monotonic() - started < 5
    assert not client.usable


# ------------------------------------------------------------------------------------
# The proxy URL, checked when the client is built


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1:1080",
        "socks5h://127.0.0.1:1080",
        "127.0.0.1:1080",
        "socks5://:1080",
        "socks5://127.0.0.1",
        "socks5://127.0.0.1:0",
        "socks5://127.0.0.1:99999",
        "socks5://127.0.0.1:port",
        "socks5://127.0.0.1:1080/path",
        "socks5://127.0.0.1:1080?x=1",
        "socks5://user-only@127.0.0.1:1080",
        "socks5://:Bad-url-pw-9@127.0.0.1:1080",
        "socks4://user:Bad-url-pw-9@127.0.0.1:1080",
        "http://user:Bad-url-pw-9@[::1:1080",
        "socks5://user:Bad-url-pw-9@127.0.0.1:65536",
    ],
)
def test_a_bad_proxy_url_is_refused_at_construction(flavour: Flavour, url: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        flavour.module.SMTPClient("127.0.0.1", 25, tls="none", proxy=url)
    assert "Bad-url-pw-9" not in str(caught.value)
    assert "proxy" in str(caught.value)


def test_the_proxy_url_keeps_its_credentials_to_itself(flavour: Flavour) -> None:
    url = "socks5://us%40er:p%3Ass-Word-10@127.0.0.1:1080"
    client = flavour.module.SMTPClient("127.0.0.1", 25, tls="none", proxy=url)
    proxy = client.proxy
    assert (proxy.username, proxy.password) == ("us@er", "p:ss-Word-10")
    assert (proxy.scheme, proxy.host, proxy.port) == ("socks5", "127.0.0.1", 1080)
    for text in (str(proxy), repr(proxy), repr(client), repr(vars(client))):
        assert "Word-10" not in text and "us@er" not in text and "us%40er" not in text
    assert str(proxy) == "socks5://***@127.0.0.1:1080"
    ipv6 = flavour.module.SMTPClient("::1", 25, tls="none", proxy="http://[::1]:3128")
    assert str(ipv6.proxy) == "http://[::1]:3128"


def test_a_proxy_does_not_go_with_a_connected_socket(flavour: Flavour) -> None:
    left, right = socket.socketpair()
    with left, right, pytest.raises(InvalidInputError, match="sock"):
        flavour.module.SMTPClient(sock=left, tls="none", proxy="socks5://127.0.0.1:1080")


def test_without_python_socks_a_proxy_says_what_to_install(
    flavour: Flavour, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proxy_module, "find_spec", lambda name: None)
    with pytest.raises(InvalidInputError, match=re.escape("smtpbee[proxy]")):
        flavour.module.SMTPClient("127.0.0.1", 25, tls="none", proxy="socks5://127.0.0.1:1080")


def test_a_plain_send_does_not_import_python_socks(aiosmtpd_server: AiosmtpdServer) -> None:
    script = (
        "import sys\n"
        "from smtpbee.transports.sync import SMTPClient\n"
        f"with SMTPClient('127.0.0.1', {aiosmtpd_server.port}, tls='none') as c:\n"
        "    c.sendmail('a@x.test', ['b@x.test'], b'x\\r\\n')\n"
        "assert 'python_socks' not in sys.modules, 'python_socks was imported'\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert len(aiosmtpd_server.messages) == 1


# ------------------------------------------------------------------------------------
# The command line: --proxy on send and probe


def smtpbee(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smtpbee", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("transport", ["sync", "asyncio", "trio"])
def test_cli_send_through_the_proxy(
    dante: Dante, aiosmtpd_server: AiosmtpdServer, transport: str
) -> None:
    since = dante.mark()
    run = smtpbee(
        *("send", "--server", f"127.0.0.1:{aiosmtpd_server.port}", "--tls", "none"),
        *("--from", "a@x.test", "--to", "b@x.test", "--subject", "via proxy", "--body", "hi"),
        *("--proxy", dante.url(), "--transport", transport),
    )
    assert run.returncode == 0, run.stderr
    assert len(aiosmtpd_server.messages) == 1
    assert len(dante.tunnels(aiosmtpd_server.port, since)) == 1


def test_cli_probe_through_the_proxy(dante: Dante, aiosmtpd_server: AiosmtpdServer) -> None:
    since = dante.mark()
    run = smtpbee(
        *("probe", "--server", f"127.0.0.1:{aiosmtpd_server.port}", "--tls", "none"),
        *("--proxy", dante.url()),
    )
    assert run.returncode == 0, run.stderr
    assert len(dante.tunnels(aiosmtpd_server.port, since)) == 1


def test_cli_a_wrong_proxy_password_fails_without_showing_it(
    dante: Dante, login: tuple[str, str], aiosmtpd_server: AiosmtpdServer
) -> None:
    wrong = "Cli-wrong-pw-11"
    run = smtpbee(
        *("send", "--server", f"127.0.0.1:{aiosmtpd_server.port}", "--tls", "none"),
        *("--from", "a@x.test", "--to", "b@x.test", "--body", "hi", "--json"),
        *("--proxy", dante.url((login[0], wrong))),
    )
    assert run.returncode != 0
    assert "proxy" in run.stdout + run.stderr
    assert wrong not in run.stdout + run.stderr
    assert aiosmtpd_server.messages == []


def test_cli_a_bad_proxy_url_is_a_usage_error() -> None:
    for command in ("send", "probe"):
        extra = ("--from", "a@x.test", "--to", "b@x.test", "--body", "hi")
        run = smtpbee(
            command,
            *("--server", "127.0.0.1:25", "--proxy", "socks9://u:Cli-bad-pw-12@127.0.0.1:1"),
            *(extra if command == "send" else ()),
        )
        assert run.returncode == 64, run.stderr
        assert "--proxy" in run.stderr and "Cli-bad-pw-12" not in run.stderr
