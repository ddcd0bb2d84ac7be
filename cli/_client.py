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

import argparse
import asyncio
import importlib
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NoReturn, Protocol, TextIO, TypeVar

from smtpbee import (
    ClientSession,
    Command,
    ControlPoint,
    Extensions,
    InvalidInputError,
    LocalProtocolError,
    ProxyHeader,
    Reply,
    SendResult,
    SessionLog,
    Stop,
    TLSMode,
    TLSRequiredError,
    escape_text,
    resolve_tls_mode,
)
from smtpbee.transports import TLSInfo, default_ssl_context

from ._output import InputError, UsageError

__all__ = [
    "PHASES",
    "PROBE_PHASES",
    "TRANSPORTS",
    "Client",
    "Connection",
    "Controls",
    "add_control_arguments",
    "client_connection",
    "client_options",
    "close_socket",
    "controls_from",
    "make_client",
    "new_session_log",
    "open_session",
    "open_socket",
    "open_unix_socket",
    "parse_server",
    "parse_source_address",
    "resolve_tls",
    "run",
    "ssl_context",
    "transcript_printer",
    "write_session_log",
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
    socket_path: str | None = None
    """A Unix socket to connect to instead of host:port (--socket)."""
    lmtp: bool = False
    """Speak LMTP (--protocol lmtp): LHLO, one final reply per recipient."""

    @property
    def label(self) -> str:
        """Where the session goes, for the output: ``host:port`` or ``unix:PATH``."""
        if self.socket_path is not None:
            return f"unix:{self.socket_path}"
        return f"{self.host}:{self.port}"


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


def parse_server(text: str, default_port: int = 25) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port); 25 by default."""
    return _host_and_port(text, "--server", default_port, 1)


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
    def starttls(self) -> Reply: ...
    def xclient(self, attributes: Mapping[str, str]) -> Reply: ...
    def command(self, command: Command) -> Reply: ...
    @property
    def unsafe(self) -> Any: ...


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
    def starttls(self) -> Awaitable[Reply]: ...
    def xclient(self, attributes: Mapping[str, str]) -> Awaitable[Reply]: ...
    def command(self, command: Command) -> Awaitable[Reply]: ...
    @property
    def unsafe(self) -> Any: ...


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

    async def starttls(self) -> Reply:
        if self._blocking is not None:
            return self._blocking.starttls()
        assert self._async is not None
        return await self._async.starttls()

    async def xclient(self, attributes: Mapping[str, str]) -> Reply:
        if self._blocking is not None:
            return self._blocking.xclient(attributes)
        assert self._async is not None
        return await self._async.xclient(attributes)

    async def command(self, command: Command) -> Reply:
        if self._blocking is not None:
            return self._blocking.command(command)
        assert self._async is not None
        return await self._async.command(command)

    async def send_line(self, line: str | bytes, *, replies: int = 1) -> list[Reply]:
        """The unsafe path: ``line`` and CRLF exactly, then ``replies`` replies."""
        if self._blocking is not None:
            result: list[Reply] = self._blocking.unsafe.send_line(line, replies=replies)
            return result
        assert self._async is not None
        result = await self._async.unsafe.send_line(line, replies=replies)
        return result

    async def data_raw(self, body: bytes, *, terminator: bytes) -> Reply:
        """The unsafe path: DATA, then ``body`` and ``terminator`` exactly."""
        if self._blocking is not None:
            reply: Reply = self._blocking.unsafe.data_raw(body, terminator=terminator)
            return reply
        assert self._async is not None
        reply = await self._async.unsafe.data_raw(body, terminator=terminator)
        return reply

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


def open_unix_socket(conn: Connection) -> Any:
    """The connected Unix socket of --socket, in the form the transport takes.

    The clients connect only over TCP; a socket given to them is used as it
    is. trio takes a Stream, built here (no event loop needed for that).
    """
    assert conn.socket_path is not None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(conn.timeout or 30.0)
        sock.connect(conn.socket_path)
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return _for_transport(sock, conn.transport)


def close_socket(sock: Any) -> None:
    """Close a socket open_socket made that no client took over."""
    if sock is not None:
        getattr(sock, "socket", sock).close()


def _for_transport(sock: socket.socket, transport: str) -> Any:
    if transport == "trio":
        import trio

        return trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    return sock


def make_client(
    conn: Connection,
    transcript: Callable[[str, str], None] | None,
    sock: Any = None,
    **options: Any,
) -> Client:
    """The chosen transport's client for a connection (not yet connected).

    ``sock`` is an already-connected socket (or trio Stream) to use; ``options``
    are more keyword arguments of the client.
    """
    module_name, class_name = _CLASSES[conn.transport]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"--transport {conn.transport} is not available ({exc}):"
            " install it with `pip install smtpbee[trio]`"
        ) from None
    inner = getattr(module, class_name)(
        conn.host or None,
        conn.port,
        tls=conn.tls,
        ssl_context=conn.context,
        timeout=conn.timeout,
        local_hostname=conn.local_hostname,
        source_address=conn.source_address,
        proxy=conn.proxy,
        sock=sock,
        lmtp=conn.lmtp,
        transcript=transcript,
        **options,
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


# -- the options for people who test servers ---------------------------------------------

PHASES = tuple(point.value for point in ControlPoint)
PROBE_PHASES = ("CONNECT", "GREETING", "EHLO", "TLS")
"""The points a probe passes (it sends no AUTH and no mail)."""


@dataclass(frozen=True, slots=True)
class Controls:
    """How a session is shaped: where it stops, XCLIENT, PROXY, pipelining, BDAT, the log."""

    stop: Stop | None = None
    pipelining: bool | None = None
    bdat_chunk_size: int | None = None
    xclient: tuple[tuple[str, str], ...] = ()
    xclient_after_tls: bool = False
    proxy_version: Literal[1, 2] | None = None
    proxy_source: tuple[str, int] | None = None
    proxy_destination: tuple[str, int] | None = None
    log_path: str | None = None

    @property
    def xclient_before_tls(self) -> bool:
        """Whether XCLIENT goes between the first EHLO and STARTTLS."""
        return bool(self.xclient) and not self.xclient_after_tls

    def proxy_header(self, sock: Any) -> ProxyHeader | None:
        """The PROXY header to send; the socket's own ends where no address was given."""
        if self.proxy_version is None:
            return None
        plain = getattr(sock, "socket", sock)  # a trio Stream holds its socket
        source = self.proxy_source or _address(plain.getsockname())
        destination = self.proxy_destination or _address(plain.getpeername())
        return ProxyHeader(self.proxy_version, source, destination)


def _address(sockname: Any) -> tuple[str, int]:
    return (str(sockname[0]), int(sockname[1]))


def add_control_arguments(parser: argparse.ArgumentParser, *, probe: bool = False) -> None:
    """--quit-after and its kin, --xclient, --proxy-protocol and --log."""
    phases = PROBE_PHASES if probe else PHASES
    names = "|".join(phases)
    group = parser.add_argument_group("control points (the PHASE in any case)")
    stops = group.add_mutually_exclusive_group()
    for option, what in (
        ("--quit-after", "send QUIT once PHASE is answered"),
        ("--drop-after", "close the connection once PHASE is answered"),
        ("--drop-after-send", "close the connection right after PHASE's command, before its reply"),
    ):
        stops.add_argument(
            option, type=str.upper, choices=phases, metavar="PHASE", help=f"{what}: {names}"
        )
    xclient = parser.add_argument_group("Postfix XCLIENT and the PROXY protocol")
    xclient.add_argument(
        "--xclient", action="append", default=[], metavar="NAME=VALUE",
        help="send XCLIENT with this attribute (repeatable) after the first EHLO: before STARTTLS",
    )  # fmt: skip
    xclient.add_argument(
        "--xclient-after-tls", action="store_true", help="send XCLIENT after STARTTLS instead"
    )
    xclient.add_argument(
        "--proxy-protocol", choices=("v1", "v2"),
        help="send a PROXY protocol header before anything else (before TLS too)",
    )  # fmt: skip
    xclient.add_argument(
        "--proxy-source", metavar="ADDR:PORT",
        help="the client the PROXY header claims (default: the real local end)",
    )  # fmt: skip
    xclient.add_argument(
        "--proxy-destination", metavar="ADDR:PORT",
        help="the server address the PROXY header claims (default: the real remote end)",
    )  # fmt: skip
    parser.add_argument(
        "--log", metavar="FILE",
        help="write the session as JSON lines (secrets redacted), also when it fails",
    )  # fmt: skip


def _stop_from(args: argparse.Namespace) -> Stop | None:
    for option, action, after_send in (
        ("quit_after", "quit", False),
        ("drop_after", "drop", False),
        ("drop_after_send", "drop", True),
    ):
        phase = getattr(args, option, None)
        if phase is not None:
            try:
                return Stop(ControlPoint(phase), action, after_send)  # type: ignore[arg-type]
            except InvalidInputError as exc:
                flag = "--" + option.replace("_", "-")
                raise UsageError(f"{flag} {phase}: {exc}") from None
    return None


def _xclient_from(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    pairs = []
    for text in args.xclient:
        name, equals, value = text.partition("=")
        if not equals or not name:
            raise UsageError(f"--xclient {text!r}: expected NAME=VALUE")
        pairs.append((name.upper(), value))
    if args.xclient_after_tls and not pairs:
        raise UsageError("--xclient-after-tls goes with --xclient")
    return tuple(pairs)


def _endpoint(text: str | None, option: str) -> tuple[str, int] | None:
    return None if text is None else _host_and_port(text, option, -1, 0)


def controls_from(args: argparse.Namespace, conn: Connection) -> Controls:
    """The Controls the options ask for; UsageError (64) for what cannot work."""
    stop = _stop_from(args)
    if stop is not None and stop.point is ControlPoint.TLS and conn.tls is TLSMode.NONE:
        raise UsageError("a stop at TLS needs TLS: not with --tls none")
    version: Literal[1, 2] | None = None
    if args.proxy_protocol is not None:
        version = 1 if args.proxy_protocol == "v1" else 2
    source = _endpoint(args.proxy_source, "--proxy-source")
    destination = _endpoint(args.proxy_destination, "--proxy-destination")
    if version is None and (source or destination):
        raise UsageError("--proxy-source and --proxy-destination go with --proxy-protocol")
    if version is not None and not (source and destination):
        for option, given in (("--socket", conn.socket_path), ("--proxy", conn.proxy)):
            if given is not None:
                raise UsageError(
                    f"--proxy-protocol with {option}: give --proxy-source and --proxy-destination"
                )
    return Controls(
        stop=stop,
        pipelining=getattr(args, "pipelining", None),
        bdat_chunk_size=getattr(args, "bdat", None),
        xclient=_xclient_from(args),
        xclient_after_tls=args.xclient_after_tls,
        proxy_version=version,
        proxy_source=source,
        proxy_destination=destination,
        log_path=args.log,
    )


def open_socket(conn: Connection, controls: Controls) -> Any:
    """The connected socket to hand the client, or None to let it connect.

    A Unix socket (--socket) always; a TCP connection when the PROXY header
    needs the real addresses of the connection, known only once it is made.
    """
    if conn.socket_path is not None:
        return open_unix_socket(conn)
    if controls.proxy_version is None or (controls.proxy_source and controls.proxy_destination):
        return None
    sock = socket.create_connection(
        (conn.host, conn.port), conn.timeout or 30.0, conn.source_address
    )
    sock.settimeout(None)
    return _for_transport(sock, conn.transport)


def new_session_log(conn: Connection, controls: Controls) -> SessionLog | None:
    """The recorder behind --log; InputError (65) if the file cannot be written."""
    if controls.log_path is None:
        return None
    try:
        with open(controls.log_path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise InputError(f"--log {controls.log_path}: {exc.strerror or exc}") from None
    return SessionLog(conn.label)


def write_session_log(log: SessionLog | None, path: str | None) -> None:
    """Save the session (a failure to is one line on stderr: the session's result stands)."""
    if log is None or path is None:
        return
    try:
        Path(path).write_text(log.to_jsonl(), encoding="utf-8")
    except OSError as exc:
        print(f"smtpbee: warning: --log {path}: {exc.strerror or exc}", file=sys.stderr)


def client_options(controls: Controls, sock: Any, session_log: SessionLog | None) -> dict[str, Any]:
    """The client keyword arguments the Controls ask for."""
    return {
        "stop": controls.stop,
        "pipelining": controls.pipelining,
        "bdat_chunk_size": controls.bdat_chunk_size,
        "proxy_protocol": controls.proxy_header(sock),
        "session_log": session_log,
    }


def _tls_by_hand(conn: Connection, controls: Controls) -> bool:
    # XCLIENT between EHLO and STARTTLS: connect() would do both at once, so
    # the client is made without TLS and STARTTLS is sent here.
    starttls = conn.tls in (TLSMode.STARTTLS, TLSMode.OPPORTUNISTIC)
    return controls.xclient_before_tls and starttls


def client_connection(conn: Connection, controls: Controls) -> Connection:
    """The Connection to build the client from (TLS left to open_session when it must)."""
    return replace(conn, tls=TLSMode.NONE) if _tls_by_hand(conn, controls) else conn


async def open_session(client: Client, conn: Connection, controls: Controls) -> Reply | None:
    """Connect (greeting, EHLO, TLS as the mode says) with XCLIENT where asked.

    Returns XCLIENT's reply (the new greeting), or None without --xclient.
    """
    if not controls.xclient:
        await client.connect()
        return None
    attributes = dict(controls.xclient)
    if not _tls_by_hand(conn, controls):
        await client.connect()
        return await client.xclient(attributes)
    await client.connect()
    reply = await client.xclient(attributes)
    session = client.session
    assert session is not None
    if session.conn.extensions.starttls:
        await client.starttls()
    elif conn.tls is TLSMode.STARTTLS:
        raise TLSRequiredError(
            "TLS is required but the server does not offer STARTTLS (after XCLIENT);"
            " use --tls opportunistic or --tls none to go on without it"
        )
    return reply
