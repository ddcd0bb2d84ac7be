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
# Also here: HOST[:PORT] parsing, the SSL context built from --cafile or
# --insecure, and the transcript printer (with the client state on demand).
#
# Invariant: trio is imported only when --transport trio is asked for.
from __future__ import annotations

import importlib
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar, cast

from smtpbee import ClientSession, Extensions, LocalProtocolError, Reply, SendResult, TLSMode

from ._output import InputError, UsageError

__all__ = [
    "TRANSPORTS",
    "Client",
    "Connection",
    "make_client",
    "parse_server",
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


def parse_server(text: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port); 25 by default."""
    host, port = text, "25"
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or (close + 1 < len(text) and text[close + 1] != ":"):
            raise UsageError(f"--server {text!r}: write an IPv6 address as [addr] or [addr]:port")
        host, rest = text[1:close], text[close + 1 :]
        port = rest[1:] if rest else port
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--server {text!r}: expected HOST or HOST:PORT with a port 1-65535")
    return host, int(port)


def resolve_tls(name: str | None, port: int) -> TLSMode:
    """The --tls mode; by default implicit TLS on port 465 and required STARTTLS elsewhere."""
    if name is None:
        return TLSMode.IMPLICIT if port == 465 else TLSMode.STARTTLS
    return TLSMode(name)


def ssl_context(cafile: str | None, insecure: bool) -> ssl.SSLContext:
    """Verified TLS >= 1.2 (system roots, or only ``cafile``), or no verification at all."""
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise InputError(f"--cafile {cafile}: cannot load it: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def transcript_printer(
    stream: TextIO, states: bool, client: Callable[[], Any]
) -> Callable[[str, str], None]:
    """A transcript callable printing ``C: ...`` / ``S: ...``, with the state if asked."""

    def write(direction: str, line: str) -> None:
        if states:
            state = client().session.conn.state
            print(f"{direction}: {line:<50} [{state.name}]", file=stream, flush=True)
        else:
            print(f"{direction}: {line}", file=stream, flush=True)

    return write


class Client:
    """A transport's client behind one awaitable interface."""

    def __init__(self, inner: Any, blocking: bool) -> None:
        self.inner = inner
        self._blocking = blocking

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.inner, name)(*args, **kwargs)
        return result if self._blocking else await result

    async def connect(self) -> Extensions:
        return cast(Extensions, await self._call("connect"))

    async def login(
        self, user: str, password: str, *, mechanism: str | None, allow_insecure: bool
    ) -> Reply:
        reply = await self._call(
            "login", user, password, mechanism=mechanism, allow_insecure=allow_insecure
        )
        return cast(Reply, reply)

    async def sendmail(
        self, sender: str, recipients: list[str], body: Any, *, mail_options: dict[str, Any]
    ) -> SendResult:
        result = await self._call("sendmail", sender, recipients, body, mail_options=mail_options)
        return cast(SendResult, result)

    async def quit(self) -> Reply:
        return cast(Reply, await self._call("quit"))

    async def close(self) -> None:
        await self._call("close")

    @property
    def session(self) -> ClientSession | None:
        """The core ClientSession, or None before the connection was made."""
        try:
            return cast(ClientSession, self.inner.session)
        except LocalProtocolError:
            return None

    @property
    def tls_info(self) -> Any:
        return self.inner.tls_info


_CLASSES = {
    "sync": ("smtpbee.transports._sync", "SMTPClient"),
    "asyncio": ("smtpbee.transports._asyncio", "AsyncSMTPClient"),
    "trio": ("smtpbee.transports._trio", "TrioSMTPClient"),
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
        transcript=transcript,
    )
    return Client(inner, blocking=conn.transport == "sync")


def run(transport: str, job: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine written against Client on the transport's event loop (or none)."""
    if transport == "asyncio":
        import asyncio

        return asyncio.run(job())
    if transport == "trio":
        trio = importlib.import_module("trio")
        return cast(_T, trio.run(job))
    coroutine = job()
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(_T, done.value)
    coroutine.close()
    raise RuntimeError("a blocking client suspended: the CLI awaited something else")
