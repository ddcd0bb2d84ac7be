# smtpbee/cli/_client
#
# One way to talk to a server from the command line, whatever the transport.
#
# Theory of operation
# -------------------
# The commands are written once, as coroutines against `Client`: an adapter
# whose methods are all awaitable. For asyncio and trio it forwards to the
# transport's own coroutines; for the blocking transport it calls the method
# and returns, so a coroutine written against it never suspends and run()
# drives it with a single send(None), no event loop at all. That is how
# `--transport sync|asyncio|trio` behave alike: same code, three transports.
#
# Also here: HOST[:PORT] parsing (for --server and --source-address), the SSL
# context built from --cafile or --insecure (with the client certificate of
# --tls-cert/--tls-key loaded into it), and the transcript printer (with the
# client state on demand).
#
# Invariant: trio is imported only when --transport trio is asked for.
from __future__ import annotations

import asyncio
import importlib
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol, TextIO, TypeVar

from smtpbee import (
    ClientSession,
    Extensions,
    LocalProtocolError,
    Reply,
    SendResult,
    TLSMode,
    escape_text,
    resolve_tls_mode,
)
from smtpbee.transports import TLSInfo, default_ssl_context

from ._output import InputError, UsageError

__all__ = [
    "TRANSPORTS",
    "Client",
    "Connection",
    "make_client",
    "parse_server",
    "parse_source_address",
    "resolve_tls",
    "run",
    "ssl_context",
    "transcript_printer",
]

TRANSPORTS = ("sync", "asyncio", "trio")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and how to connect: the options shared by send and probe."""

    host: str
    port: int
    tls: TLSMode
    context: ssl.SSLContext
    insecure: bool
    transport: str
    timeout: float | None
    local_hostname: str | None = None
    source_address: tuple[str, int] | None = None
    """The local end to connect from (--source-address); port 0 lets the system choose."""
    proxy: str | None = field(default=None, repr=False)
    """The proxy URL to connect through (--proxy); kept out of repr(): it may hold a password."""


def _host_and_port(text: str, option: str, default: int, lowest: int) -> tuple[str, int]:
    host, port = text, str(default)
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or (close + 1 < len(text) and text[close + 1] != ":"):
            raise UsageError(f"{option} {text!r}: write an IPv6 address as [addr] or [addr]:port")
        host, rest = text[1:close], text[close + 1 :]
        port = rest[1:] if rest else port
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not lowest <= int(port) < 65536:
        raise UsageError(
            f"{option} {text!r}: expected HOST or HOST:PORT with a port {lowest}-65535"
        )
    return host, int(port)


def parse_server(text: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port); 25 by default."""
    return _host_and_port(text, "--server", 25, 1)


def parse_source_address(text: str) -> tuple[str, int]:
    """--source-address: like --server, but port 0 (any) by default and allowed."""
    return _host_and_port(text, "--source-address", 0, 0)


def resolve_tls(name: str | None, port: int) -> TLSMode:
    """The --tls mode; by default implicit TLS on port 465 and required STARTTLS elsewhere."""
    return resolve_tls_mode(name, port)


def ssl_context(
    cafile: str | None,
    insecure: bool,
    cert: str | None = None,
    key: str | None = None,
) -> ssl.SSLContext:
    """The library's verifying context (system roots, or only ``cafile``), or no checks at all.

    ``cert`` (and ``key``, unless the key is in the same file) is a client
    certificate in PEM, presented to a server that asks for one.
    """
    try:
        context = default_ssl_context(cafile)
    except (OSError, ssl.SSLError) as exc:
        raise InputError(f"--cafile {cafile}: cannot load it: {exc}") from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        load_client_certificate(context, cert, key)
    return context


def load_client_certificate(context: ssl.SSLContext, cert: str, key: str | None) -> None:
    """Load --tls-cert/--tls-key into ``context``; InputError (exit 65) if they cannot be used."""
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise InputError(f"{option} {path}: {exc.strerror or exc}") from None
    what = f"--tls-cert {cert}" + (f" --tls-key {key}" if key is not None else "")

    def no_passphrase() -> NoReturn:
        # Without a callback OpenSSL would prompt on the terminal and wait.
        raise InputError(f"{what}: the private key is encrypted: give an unencrypted key")

    try:
        context.load_cert_chain(cert, key, password=no_passphrase)
    except ssl.SSLError as exc:
        raise InputError(
            f"{what}: not a PEM certificate with its matching private key ({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise InputError(f"{what}: cannot load it: {exc.strerror or exc}") from None


def transcript_printer(
    stream: TextIO, states: bool, client: Callable[[], Client]
) -> Callable[[str, str], None]:
    """A transcript callable printing ``C: ...`` / ``S: ...``, with the state if asked."""

    def write(direction: str, line: str) -> None:
        line = escape_text(line)
        session = client().session
        if states and session is not None:
            state = session.conn.state
            print(f"{direction}: {line:<50} [{state.name}]", file=stream, flush=True)
        else:
            print(f"{direction}: {line}", file=stream, flush=True)

    return write


class _Blocking(Protocol):
    """What the CLI uses of the blocking client."""

    tls_info: TLSInfo | None

    @property
    def session(self) -> ClientSession: ...
    @property
    def usable(self) -> bool: ...
    def connect(self) -> Extensions: ...
    def login(
        self, username: str, password: str, *, mechanism: str | None, allow_insecure: bool
    ) -> Reply: ...
    def sendmail(
        self, sender: str, recipients: Sequence[str], body: Any, *, mail_options: dict[str, Any]
    ) -> SendResult: ...
    def quit(self) -> Reply: ...
    def close(self) -> None: ...


class _Async(Protocol):
    """What the CLI uses of the asyncio and trio clients."""

    tls_info: TLSInfo | None

    @property
    def session(self) -> ClientSession: ...
    @property
    def usable(self) -> bool: ...
    def connect(self) -> Awaitable[Extensions]: ...
    def login(
        self, username: str, password: str, *, mechanism: str | None, allow_insecure: bool
    ) -> Awaitable[Reply]: ...
    def sendmail(
        self, sender: str, recipients: Sequence[str], body: Any, *, mail_options: dict[str, Any]
    ) -> Awaitable[SendResult]: ...
    def quit(self) -> Awaitable[Reply]: ...
    def close(self) -> Awaitable[None]: ...


class Client:
    """A transport's client behind one awaitable interface.

    The blocking client's methods return at once, so a coroutine written
    against this class never suspends when it drives that one.
    """

    def __init__(self, blocking: _Blocking | None, async_client: _Async | None) -> None:
        self._blocking = blocking
        self._async = async_client
        inner = blocking or async_client
        assert inner is not None
        self.inner: _Blocking | _Async = inner

    async def connect(self) -> Extensions:
        if self._blocking is not None:
            return self._blocking.connect()
        assert self._async is not None
        return await self._async.connect()

    async def login(
        self, user: str, password: str, *, mechanism: str | None, allow_insecure: bool
    ) -> Reply:
        if self._blocking is not None:
            return self._blocking.login(
                user, password, mechanism=mechanism, allow_insecure=allow_insecure
            )
        assert self._async is not None
        return await self._async.login(
            user, password, mechanism=mechanism, allow_insecure=allow_insecure
        )

    async def sendmail(
        self, sender: str, recipients: list[str], body: Any, *, mail_options: dict[str, Any]
    ) -> SendResult:
        if self._blocking is not None:
            return self._blocking.sendmail(sender, recipients, body, mail_options=mail_options)
        assert self._async is not None
        return await self._async.sendmail(sender, recipients, body, mail_options=mail_options)

    async def quit(self) -> Reply:
        if self._blocking is not None:
            return self._blocking.quit()
        assert self._async is not None
        return await self._async.quit()

    async def close(self) -> None:
        if self._blocking is not None:
            self._blocking.close()
        else:
            assert self._async is not None
            await self._async.close()

    @property
    def usable(self) -> bool:
        return self.inner.usable

    @property
    def session(self) -> ClientSession | None:
        """The core ClientSession, or None before the connection was made."""
        try:
            return self.inner.session
        except LocalProtocolError:
            return None

    @property
    def tls_info(self) -> TLSInfo | None:
        return self.inner.tls_info


_CLASSES = {
    "sync": ("smtpbee.transports.sync", "SMTPClient"),
    "asyncio": ("smtpbee.transports.asyncio", "AsyncSMTPClient"),
    "trio": ("smtpbee.transports.trio", "TrioSMTPClient"),
}


def make_client(conn: Connection, transcript: Callable[[str, str], None] | None) -> Client:
    """The chosen transport's client for a connection (not yet connected)."""
    module_name, class_name = _CLASSES[conn.transport]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"--transport {conn.transport} is not available ({exc}):"
            " install it with `pip install smtpbee[trio]`"
        ) from None
    inner = getattr(module, class_name)(
        conn.host,
        conn.port,
        tls=conn.tls,
        ssl_context=conn.context,
        timeout=conn.timeout,
        local_hostname=conn.local_hostname,
        source_address=conn.source_address,
        proxy=conn.proxy,
        transcript=transcript,
    )
    if conn.transport == "sync":
        return Client(inner, None)
    return Client(None, inner)


def run(transport: str, job: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine written against Client on the transport's event loop (or none)."""
    if transport == "asyncio":
        return asyncio.run(job())
    if transport == "trio":
        import trio

        return trio.run(job)
    results: list[_T] = []

    async def blocking() -> None:
        results.append(await job())

    coroutine = blocking()
    try:
        coroutine.send(None)
    except StopIteration:
        return results[0]
    coroutine.close()
    raise RuntimeError("a blocking client suspended: the CLI awaited something else")
