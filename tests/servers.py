# tests/servers: the SMTP servers that the transport and CLI tests talk to.
#
# Three kinds, all on loopback only (127.0.0.1 or ::1), all bounded in time:
#
# - `AiosmtpdServer`: aiosmtpd running its own asyncio loop in a background thread, so a
#   blocking, asyncio or trio test can use it alike. It records every accepted message
#   exactly as received (after un-stuffing), refuses chosen recipients or messages, knows
#   AUTH PLAIN/LOGIN users, and comes plain, with STARTTLS or with implicit TLS. The
#   listening socket is bound here (port 0) and handed to aiosmtpd, so the port is known
#   before the controller's own readiness probe runs and no port can be stolen between.
#
# - `ScriptedServer`: one thread, one accepted connection, one list of steps run in order
#   (send, expect a line, read a DATA body or a BDAT chunk, stall, switch to TLS, close
#   or reset ...). It is for the behaviour no real server shows on demand. Invariants:
#   every socket operation has a deadline, so a script never hangs; any failure inside
#   the thread (a wrong line, a timeout, a TLS error) is kept and re-raised in the test
#   by `join()`; results are read after `join()`, never while the thread runs.
#   Batching is observed at the level of the script, not of TCP segments: the server
#   answers only after it has consumed every unit its script expects before that answer,
#   so a client that does not pipeline where the script says it must deadlocks and the
#   step times out, and `received_groups` lists what was consumed between two answers.
#
# - `PostfixServer`: the facts about the private Postfix instance that .ci/postfix-start
#   runs on 127.0.0.1:8025 (STARTTLS) and 127.0.0.1:8465 (implicit TLS), with its AUTH
#   test account, and a bounded poll of its maildir.
"""SMTP test servers on loopback: aiosmtpd in a thread, a scripted server, Postfix."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = [
    "DEFAULT_TIMEOUT",
    "AiosmtpdServer",
    "LoopbackCA",
    "PostfixServer",
    "ReceivedMessage",
    "ScriptedServer",
    "Step",
    "TLSAiosmtpdServer",
    "close",
    "drip",
    "expect",
    "expect_bdat",
    "expect_bytes",
    "expect_close",
    "expect_data",
    "expect_lines",
    "expect_silence",
    "reset",
    "send",
    "send_then_close",
    "sleep",
    "start_aiosmtpd",
    "starttls",
]

DEFAULT_TIMEOUT = 10.0
"""Seconds any single socket operation of a test server may take."""

_LOOPBACK = frozenset({"127.0.0.1", "::1"})
_TLSMode = Literal["none", "starttls", "implicit"]


def _require_loopback(host: str) -> None:
    # The workplace forbids traffic to anything but this machine.
    if host not in _LOOPBACK:
        raise ValueError(f"test servers listen on 127.0.0.1 or ::1 only, not {host!r}")


def _bind_loopback(host: str) -> socket.socket:
    _require_loopback(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        sock.listen(8)
    except BaseException:
        sock.close()
        raise
    return sock


# --------------------------------------------------------------------------------------
# Test certificates


class LoopbackCA:
    """A throwaway CA and a server certificate for localhost, 127.0.0.1 and ::1.

    Attributes:
        ca: The trustme CA.
        cert: The server's leaf certificate.
        cafile: Path of the CA certificate in PEM, for clients that want a file.
    """

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA(organization_name="smtpbee tests")
        self.cert = self.ca.issue_cert("localhost", "127.0.0.1", "::1")
        path = directory / "smtpbee-test-ca.pem"
        self.ca.cert_pem.write_to_path(str(path))
        self.cafile = str(path)

    def server_context(self) -> ssl.SSLContext:
        """Return a new server-side context presenting the test certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Return a new client context that verifies hosts against the test CA only."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cafile)
        return context


# --------------------------------------------------------------------------------------
# aiosmtpd in a thread


@dataclass(frozen=True)
class ReceivedMessage:
    """One message an `AiosmtpdServer` accepted (or refused at the end of DATA).

    Attributes:
        mail_from: The reverse path, decoded by aiosmtpd.
        rcpt_tos: The accepted recipients, in order.
        content: The message bytes as received, dot-stuffing removed, ending with the
            CRLF before the final dot.
        mail_options: MAIL FROM parameters; aiosmtpd upper-cases them (``"SIZE=12"``).
        rcpt_options: RCPT TO parameters (aiosmtpd refuses any with 555, so empty).
        tls: Whether the session was encrypted (STARTTLS or implicit TLS).
        auth_login: The login that authenticated the session, or None.
        ehlo_name: The name the client gave in EHLO or HELO.
    """

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]
    rcpt_options: list[str]
    tls: bool
    auth_login: str | None
    ehlo_name: str | None


class _RecordingHandler:
    # aiosmtpd finds hooks by name; each runs on the server's loop thread.

    def __init__(self, owner: AiosmtpdServer) -> None:
        self._owner = owner

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> Any:
        if address in self._owner.reject_recipients:
            return f"550 5.1.1 <{address}>: Recipient address rejected"
        return MISSING

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        transport = server.transport
        encrypted = transport is not None and transport.get_extra_info("ssl_object") is not None
        auth = session.auth_data
        message = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            content=bytes(envelope.original_content or b""),
            mail_options=list(envelope.mail_options),
            rcpt_options=list(envelope.rcpt_options),
            tls=encrypted,
            auth_login=auth.login.decode("utf-8", "surrogateescape")
            if isinstance(auth, LoginPassword)
            else None,
            ehlo_name=session.host_name,
        )
        if self._owner.reject_message:
            self._owner.rejected.append(message)
            return "554 5.6.0 Message rejected by the test server"
        self._owner.messages.append(message)
        return "250 2.0.0 OK: queued"


class _LoopbackController(Controller):
    # Serves on a socket bound before start(), so port 0 works and the readiness probe
    # that aiosmtpd makes in start() already knows the real port.

    def __init__(self, listener: socket.socket, **kwargs: Any) -> None:
        host, port = listener.getsockname()[:2]
        super().__init__(kwargs.pop("handler"), hostname=host, port=port, **kwargs)
        self._listener = listener
        self.connections = 0

    def factory(self) -> SMTP:
        self.connections += 1
        return SMTP(self.handler, **self.SMTP_kwargs)

    def _create_server(self) -> Any:
        return self.loop.create_server(
            self._factory_invoker, sock=self._listener, ssl=self.ssl_context
        )


class AiosmtpdServer:
    """An aiosmtpd server on loopback running in a background thread.

    Attributes:
        host: The address it listens on.
        port: The port it listens on.
        messages: Accepted messages, in arrival order.
        rejected: Messages refused because `reject_message` was set.
        reject_recipients: Addresses that RCPT refuses with 550 5.1.1.
        reject_message: When true, the end of DATA gets 554 5.6.0.
        auth_users: Login -> password for AUTH PLAIN and LOGIN.
        tls_mode: ``"none"``, ``"starttls"`` or ``"implicit"``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        tls_mode: _TLSMode = "none",
        server_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        auth_require_tls: bool | None = None,
        auth_users: dict[str, str] | None = None,
        data_size_limit: int = 80 * 1024 * 1024,
        timeout: float = 30.0,
    ) -> None:
        if (tls_mode == "none") != (server_context is None):
            raise ValueError("a server context goes with starttls or implicit, and only there")
        self.host = host
        self.tls_mode = tls_mode
        self.messages: list[ReceivedMessage] = []
        self.rejected: list[ReceivedMessage] = []
        self.reject_recipients: set[str] = set()
        self.reject_message = False
        self.auth_users: dict[str, str] = dict(auth_users or {})
        # AUTH over plaintext stays offered on the plain server so a test can see the
        # client refuse it; under implicit TLS aiosmtpd would not know it is encrypted.
        if auth_require_tls is None:
            auth_require_tls = tls_mode == "starttls"
        listener = _bind_loopback(host)
        self.port: int = listener.getsockname()[1]
        self._controller = _LoopbackController(
            listener,
            handler=_RecordingHandler(self),
            ready_timeout=10.0,
            ssl_context=server_context if tls_mode == "implicit" else None,
            server_hostname="localhost",
            tls_context=server_context if tls_mode == "starttls" else None,
            require_starttls=require_starttls,
            auth_require_tls=auth_require_tls,
            authenticator=self._authenticate,
            enable_SMTPUTF8=True,
            decode_data=False,
            data_size_limit=data_size_limit,
            timeout=timeout,
        )
        self._started = False

    @property
    def connections(self) -> int:
        """Number of client connections so far (the readiness probe not counted)."""
        return self._controller.connections

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: object,
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "surrogateescape")
            password = auth_data.password.decode("utf-8", "surrogateescape")
            if login in self.auth_users and self.auth_users[login] == password:
                return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    def start(self) -> None:
        """Start the loop thread; return once the server has answered a probe."""
        self._controller.start()
        self._controller.connections = 0
        self._started = True

    def stop(self) -> None:
        """Stop the loop thread and close the listening socket."""
        if self._started:
            self._started = False
            self._controller.stop()


class TLSAiosmtpdServer(AiosmtpdServer):
    """An `AiosmtpdServer` with STARTTLS or implicit TLS.

    Attributes:
        client_context: A client context that trusts the test CA.
        cafile: The test CA in PEM, for clients that take a file.
    """

    def __init__(self, ca: LoopbackCA, **kwargs: Any) -> None:
        super().__init__(server_context=ca.server_context(), **kwargs)
        self.client_context = ca.client_context()
        self.cafile = ca.cafile


def start_aiosmtpd(
    ca: LoopbackCA | None = None, *, tls_mode: _TLSMode = "none", **kwargs: Any
) -> AiosmtpdServer:
    """Build and start an aiosmtpd server; the caller stops it.

    Args:
        ca: The test CA; required unless ``tls_mode`` is ``"none"``.
        tls_mode: ``"none"``, ``"starttls"`` or ``"implicit"``.
        **kwargs: Passed on to `AiosmtpdServer` (``require_starttls``, ``auth_users`` ...).
    """
    server: AiosmtpdServer
    if tls_mode == "none":
        server = AiosmtpdServer(**kwargs)
    else:
        if ca is None:
            raise ValueError("a TLS server needs the test CA")
        server = TLSAiosmtpdServer(ca, tls_mode=tls_mode, **kwargs)
    server.start()
    return server


# --------------------------------------------------------------------------------------
# The scripted server


class _PeerClosed(Exception):
    # The client closed or reset the connection while the script was reading.
    pass


class Step:
    """One action of a `ScriptedServer` script; build steps with the functions below."""

    # Whether the step reads from the client (True), writes to it (False) or neither.
    reads: ClassVar[bool | None] = None

    def run(self, server: ScriptedServer) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class _Send(Step):
    data: bytes
    then_close: bool = False
    reads: ClassVar[bool | None] = False

    def run(self, server: ScriptedServer) -> None:
        server._write(self.data)
        if self.then_close:
            server._close_connection()


@dataclass(frozen=True)
class _Drip(Step):
    data: bytes
    interval: float
    reads: ClassVar[bool | None] = False

    def run(self, server: ScriptedServer) -> None:
        for index in range(len(self.data)):
            try:
                server._write(self.data[index : index + 1])
            except OSError:
                # The client gave up on the slow reply, which is what drip is for.
                server.peer_closed = True
                server._close_connection()
                return
            if server._stop_event.wait(self.interval):
                raise TimeoutError("scripted server stopped during drip")


@dataclass(frozen=True)
class _Expect(Step):
    prefix: bytes
    exact: bool
    reads: ClassVar[bool | None] = True

    def run(self, server: ScriptedServer) -> None:
        line = server._read_line()
        head = line[: len(self.prefix)]
        if head != self.prefix and (self.exact or head.lower() != self.prefix.lower()):
            raise AssertionError(f"expected a line starting with {self.prefix!r}, got {line!r}")


@dataclass(frozen=True)
class _ExpectLines(Step):
    count: int
    reads: ClassVar[bool | None] = True

    def run(self, server: ScriptedServer) -> None:
        for _ in range(self.count):
            server._read_line()


@dataclass(frozen=True)
class _ExpectData(Step):
    reads: ClassVar[bool | None] = True

    def run(self, server: ScriptedServer) -> None:
        server._read_data_body()


@dataclass(frozen=True)
class _ExpectBytes(Step):
    count: int
    reads: ClassVar[bool | None] = True

    def run(self, server: ScriptedServer) -> None:
        server.chunks.append(server._read_exact(self.count))


@dataclass(frozen=True)
class _ExpectBdat(Step):
    reads: ClassVar[bool | None] = True

    def run(self, server: ScriptedServer) -> None:
        line = server._read_line()
        match = re.fullmatch(rb"BDAT ([0-9]{1,12})( LAST)?\r\n", line, re.IGNORECASE)
        if match is None:
            raise AssertionError(f"expected BDAT <size> [LAST], got {line!r}")
        payload = server._read_exact(int(match[1]))
        server.chunks.append(payload)
        server.bdat_chunks.append((payload, match[2] is not None))


@dataclass(frozen=True)
class _ExpectClose(Step):
    timeout: float | None
    reads: ClassVar[bool | None] = True

    def run(self, server: ScriptedServer) -> None:
        server._wait_for_close(self.timeout)


@dataclass(frozen=True)
class _ExpectSilence(Step):
    seconds: float
    reads: ClassVar[bool | None] = None

    def run(self, server: ScriptedServer) -> None:
        server._expect_silence(self.seconds)


@dataclass(frozen=True)
class _Sleep(Step):
    seconds: float

    def run(self, server: ScriptedServer) -> None:
        if server._stop_event.wait(self.seconds):
            raise TimeoutError("scripted server stopped during sleep")


@dataclass(frozen=True)
class _Close(Step):
    abortive: bool = False

    def run(self, server: ScriptedServer) -> None:
        if server._conn is not None:
            server._close_connection(abortive=self.abortive)


@dataclass(frozen=True)
class _StartTLS(Step):
    context: ssl.SSLContext
    allow_failure: bool = False

    def run(self, server: ScriptedServer) -> None:
        server._start_tls(self.context, self.allow_failure)


def send(data: bytes) -> Step:
    """Write ``data`` to the client as it is (one or several reply lines, or garbage)."""
    return _Send(data)


def send_then_close(data: bytes) -> Step:
    """Write ``data``, then close the connection."""
    return _Send(data, then_close=True)


def drip(data: bytes, interval: float) -> Step:
    """Write ``data`` one byte at a time, ``interval`` seconds apart.

    Stops quietly (setting ``peer_closed``) when the client hangs up meanwhile.
    """
    return _Drip(data, interval)


def expect(prefix: bytes = b"", *, exact: bool = False) -> Step:
    """Read one CRLF-terminated line and assert it starts with ``prefix``.

    Like a server, it ignores ASCII case unless ``exact`` is true; ``lines`` keeps the
    line as sent for tests that care about the spelling.
    """
    return _Expect(prefix, exact)


def expect_lines(count: int) -> Step:
    """Read ``count`` CRLF-terminated lines, whatever they say."""
    return _ExpectLines(count)


def expect_data() -> Step:
    """Read a DATA body up to and including the CRLF.CRLF that ends it.

    The body is recorded as on the wire (still dot-stuffed, without the final ``.\\r\\n``)
    in ``data_bodies``.
    """
    return _ExpectData()


def expect_bytes(count: int) -> Step:
    """Read exactly ``count`` bytes (a BDAT payload after its command line)."""
    return _ExpectBytes(count)


def expect_bdat() -> Step:
    """Read a ``BDAT <size> [LAST]`` line and then its payload; see ``bdat_chunks``."""
    return _ExpectBdat()


def expect_close(timeout: float | None = None) -> Step:
    """Wait until the client closes or resets the connection.

    Bytes that arrive first are recorded, not refused. This is also the way to stall:
    the server says nothing until the client gives up.
    """
    return _ExpectClose(timeout)


def expect_silence(seconds: float) -> Step:
    """Assert that the client sends nothing for ``seconds`` (e.g. before a 354)."""
    return _ExpectSilence(seconds)


def sleep(seconds: float) -> Step:
    """Do nothing for ``seconds`` (interrupted when the server is stopped)."""
    return _Sleep(seconds)


def close() -> Step:
    """Close the connection (orderly FIN)."""
    return _Close()


def reset() -> Step:
    """Abort the connection with a TCP RST."""
    return _Close(abortive=True)


def starttls(context: ssl.SSLContext, *, allow_failure: bool = False) -> Step:
    """Run the server side of a TLS handshake on the connection.

    As the first step it gives implicit TLS. Bytes the client sent before the handshake
    (a STARTTLS injection) fail the step. With ``allow_failure`` a failed handshake ends
    the script quietly and is kept in ``tls_error``.
    """
    return _StartTLS(context, allow_failure)


_MAX_BUFFER = 128 * 1024 * 1024
_RECV_SIZE = 256 * 1024


class ScriptedServer:
    """A one-connection SMTP server that follows a script of steps in a thread.

    Attributes:
        host: The address it listens on.
        port: The port it listens on.
        timeout: Seconds allowed for each socket operation.
        lines: Every line the script read, with its CRLF.
        data_bodies: Each DATA body, dot-stuffed as on the wire, without ``.\\r\\n``.
        chunks: Each payload read by `expect_bytes` or `expect_bdat`.
        bdat_chunks: ``(payload, last)`` for each `expect_bdat`.
        received_groups: The units (lines, DATA bodies with their ``.\\r\\n``, payloads)
            read between two writes of the server, one list per stretch of reading,
            including a final stretch that no write followed.
        round_trips: How many times the server wrote after reading something.
        transcript: ``("C", bytes)`` and ``("S", bytes)`` in wire order.
        unconsumed: Bytes that arrived but no step read (taken once the script ended).
        peer_closed: Whether the client closed the connection under the script.
        tls_error: The handshake failure tolerated by ``starttls(allow_failure=True)``.
    """

    def __init__(
        self,
        steps: Sequence[Step],
        *,
        host: str = "127.0.0.1",
        timeout: float = DEFAULT_TIMEOUT,
        drain_timeout: float = 1.0,
    ) -> None:
        self._steps = list(steps)
        self.timeout = timeout
        self._drain_timeout = drain_timeout
        self._listener = _bind_loopback(host)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._conn: socket.socket | None = None
        self._buffer = bytearray()
        self._stop_event = threading.Event()
        self._error: BaseException | None = None
        self._step_index = -1
        self._current_group: list[bytes] = []
        self.lines: list[bytes] = []
        self.data_bodies: list[bytes] = []
        self.chunks: list[bytes] = []
        self.bdat_chunks: list[tuple[bytes, bool]] = []
        self.received_groups: list[list[bytes]] = []
        self.round_trips = 0
        self.transcript: list[tuple[str, bytes]] = []
        self.unconsumed = b""
        self.peer_closed = False
        self.tls_error: ssl.SSLError | OSError | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"scripted-smtp-{self.port}", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` to connect to."""
        return (self.host, self.port)

    def start(self) -> ScriptedServer:
        """Start serving in a thread; returns self."""
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        """Wait for the script to finish and re-raise what failed inside it.

        Args:
            timeout: Seconds to wait; by default enough for every step to time out.

        Raises:
            TimeoutError: The script is still running after ``timeout``.
            BaseException: Whatever failed in the server thread (raised once).
        """
        if timeout is None:
            timeout = self._worst_case()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"scripted server still at {self._describe_step()}")
        self.check()

    def _worst_case(self) -> float:
        # Every step may use its whole timeout; stalls and drips add their own time.
        total = self.timeout * (len(self._steps) + 2) + self._drain_timeout
        for step in self._steps:
            if isinstance(step, _Sleep | _ExpectSilence):
                total += step.seconds
            elif isinstance(step, _Drip):
                total += step.interval * len(step.data)
            elif isinstance(step, _ExpectClose) and step.timeout is not None:
                total += step.timeout
        return total

    def check(self) -> None:
        """Re-raise a failure from the server thread, once; do nothing if none."""
        error, self._error = self._error, None
        if error is not None:
            raise error

    def stop(self, grace: float = 5.0) -> None:
        """Let a finishing script end, then abort it; report if it had not finished.

        Raises:
            AssertionError: The script had not finished (unless it already failed).
            BaseException: Whatever failed in the server thread and was not yet raised.
        """
        if self._thread.ident is not None:
            self._thread.join(grace)
        unfinished = self._thread.is_alive()
        if unfinished:
            where = self._describe_step()
            self._stop_event.set()
            self._shutdown_sockets()
            self._thread.join(self.timeout)
            if self._error is None or isinstance(self._error, _PeerClosed | OSError):
                self._error = AssertionError(f"the test ended with the script still at {where}")
        self._listener.close()
        self.check()

    # -- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._listener.settimeout(self.timeout)
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                raise TimeoutError(f"no client connected within {self.timeout}s") from None
            finally:
                self._listener.close()
            conn.settimeout(self.timeout)
            self._conn = conn
            for index, step in enumerate(self._steps):
                self._step_index = index
                if self._conn is None and not isinstance(step, _Close | _Sleep):
                    raise AssertionError(f"{step!r} after the connection was closed")
                if step.reads is False and self._current_group:
                    self.received_groups.append(self._current_group)
                    self._current_group = []
                    self.round_trips += 1
                step.run(self)
                if self.tls_error is not None:
                    break
            self._step_index = len(self._steps)
            self._finish()
        except BaseException as error:
            error.add_note(f"scripted server: failed at {self._describe_step()}")
            error.add_note(f"scripted server: transcript tail {self.transcript[-6:]!r}")
            self._error = error
        finally:
            if self._current_group:
                self.received_groups.append(self._current_group)
                self._current_group = []
            self._shutdown_sockets()
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _describe_step(self) -> str:
        index = self._step_index
        if index < 0:
            return "accept"
        if index >= len(self._steps):
            return "the end of the script"
        return f"step {index} {self._steps[index]!r}"

    def _finish(self) -> None:
        # The bytes no step read are a fact the test may want to assert on.
        if self._conn is None:
            self.unconsumed = bytes(self._buffer)
        else:
            self._close_connection()

    def _shutdown_sockets(self) -> None:
        # shutdown() (unlike close()) wakes a recv() or accept() blocked in the thread.
        for sock in (self._conn, self._listener):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    # -- primitives used by the steps ----------------------------------------------------

    def _connection(self) -> socket.socket:
        if self._conn is None:
            raise AssertionError("the connection is closed")
        return self._conn

    def _fill(self, deadline: float) -> bool:
        # Receive once into the buffer; False on EOF; TimeoutError at the deadline.
        conn = self._connection()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for the client")
        conn.settimeout(remaining)
        try:
            data = conn.recv(_RECV_SIZE)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if self._stop_event.is_set():
            raise TimeoutError("scripted server stopped")
        if not data:
            self.peer_closed = True
            return False
        self.transcript.append(("C", data))
        self._buffer += data
        if len(self._buffer) > _MAX_BUFFER:
            raise AssertionError("the client sent more than the scripted server buffers")
        return True

    def _fill_or_fail(self, deadline: float, waiting_for: str) -> None:
        try:
            got_data = self._fill(deadline)
        except TimeoutError:
            raise TimeoutError(
                f"timed out waiting for {waiting_for}; unread: {bytes(self._buffer)[:200]!r}"
            ) from None
        if not got_data:
            raise _PeerClosed(
                f"the client closed the connection while the server waited for "
                f"{waiting_for}; unread: {bytes(self._buffer)[:200]!r}"
            )

    def _take(self, size: int) -> bytes:
        unit = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._current_group.append(unit)
        return unit

    def _read_line(self) -> bytes:
        deadline = time.monotonic() + self.timeout
        searched = 0
        while (end := self._buffer.find(b"\n", searched)) < 0:
            searched = len(self._buffer)
            self._fill_or_fail(deadline, "a line")
        line = self._take(end + 1)
        self.lines.append(line)
        if not line.endswith(b"\r\n"):
            raise AssertionError(f"the client ended a line with a bare LF: {line!r}")
        return line

    def _read_exact(self, size: int) -> bytes:
        deadline = time.monotonic() + self.timeout
        while len(self._buffer) < size:
            self._fill_or_fail(deadline, f"{size} bytes")
        return self._take(size)

    def _read_data_body(self) -> None:
        deadline = time.monotonic() + self.timeout
        searched = 0
        while True:
            if self._buffer.startswith(b".\r\n"):
                body_end = 0
                break
            end = self._buffer.find(b"\r\n.\r\n", searched)
            if end >= 0:
                body_end = end + 2
                break
            # The terminator may straddle two receives: search again from 4 bytes back.
            searched = max(0, len(self._buffer) - 4)
            self._fill_or_fail(deadline, "the end of the DATA body")
        unit = self._take(body_end + 3)
        self.data_bodies.append(unit[:-3])

    def _wait_for_close(self, timeout: float | None) -> None:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            raise TimeoutError("the client did not close the connection") from None
        if self._buffer:
            self._take(len(self._buffer))
        self._close_connection()

    def _expect_silence(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        if not self._buffer:
            with contextlib.suppress(TimeoutError):
                self._fill(deadline)
        if self._buffer:
            raise AssertionError(
                f"the client sent {bytes(self._buffer)[:200]!r} when it should have waited"
            )

    def _write(self, data: bytes) -> None:
        conn = self._connection()
        conn.settimeout(self.timeout)
        self.transcript.append(("S", data))
        conn.sendall(data)

    def _close_connection(self, *, abortive: bool = False) -> None:
        conn = self._connection()
        self.unconsumed = bytes(self._buffer)
        try:
            if abortive:
                # l_onoff=1, l_linger=0: close() sends RST and drops what is unsent.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif not isinstance(conn, ssl.SSLSocket):
                # Closing with unread bytes queued makes the kernel send RST, which can
                # destroy the last reply before the client reads it. So: FIN first, then
                # read until the client closes too (bounded), then close.
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + self._drain_timeout
                with contextlib.suppress(TimeoutError, OSError):
                    while self._fill(deadline):
                        pass
                self.unconsumed = bytes(self._buffer)
        finally:
            conn.close()
            self._conn = None

    def _start_tls(self, context: ssl.SSLContext, allow_failure: bool) -> None:
        if self._buffer:
            raise AssertionError(f"the client sent {bytes(self._buffer)!r} before the handshake")
        conn = self._connection()
        tls = context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        self._conn = tls
        tls.settimeout(self.timeout)
        try:
            tls.do_handshake()
        except (ssl.SSLError, ConnectionError) as error:
            if not allow_failure:
                raise
            self.tls_error = error
            tls.close()
            self._conn = None


# --------------------------------------------------------------------------------------
# Postfix

_TRACE_HEADERS = (b"return-path:", b"x-original-to:", b"delivered-to:", b"received:")
_POSTFIX_REQUIRED_FACTS = (
    "SMTPBEE_POSTFIX_HOST",
    "SMTPBEE_POSTFIX_PORT",
    "SMTPBEE_POSTFIX_SMTPS_PORT",
    "SMTPBEE_POSTFIX_USER",
    "SMTPBEE_POSTFIX_PASSWORD",
    "SMTPBEE_POSTFIX_MAILDIR",
    "SMTPBEE_POSTFIX_CAFILE",
)


@dataclass
class PostfixServer:
    """The private Postfix instance that .ci/postfix-start runs.

    Attributes:
        host: Where it listens (127.0.0.1).
        port: Its port with STARTTLS (8025); AUTH is offered there only after STARTTLS.
        smtps_port: Its implicit-TLS port (8465, RFC 8314): TLS from the first byte,
            same certificate, AUTH offered at once.
        username: The SASL login of its test account (``smtpbee@example.test``), good
            for PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1 and SCRAM-SHA-256.
        password: That account's password (plain ASCII, nothing a shell would change).
        maildir: The maildir every ``@example.test`` recipient is delivered to.
        cafile: PEM of the CA that signed its certificate (localhost, 127.0.0.1, ::1).
        domain: The domain it accepts mail for (``example.test``).
        reject_address: The recipient it refuses with 550 5.1.1.
        client_context: A client context trusting ``cafile``.
    """

    host: str
    port: int
    smtps_port: int
    username: str
    password: str = field(repr=False)
    maildir: Path
    cafile: str
    domain: str = "example.test"
    reject_address: str = "reject@example.test"
    client_context: ssl.SSLContext = field(init=False, repr=False)
    _serial: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        _require_loopback(self.host)
        self.client_context = ssl.create_default_context(cafile=self.cafile)

    @classmethod
    def from_env_file(cls, path: Path) -> PostfixServer:
        """Read the KEY=VALUE file that .ci/postfix-start writes.

        Raises:
            ValueError: A fact is missing, e.g. the file is from an older script that
                knew no implicit-TLS port or account (start the instance again).
        """
        facts: dict[str, str] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                facts[key.strip()] = value.strip()
        missing = [key for key in _POSTFIX_REQUIRED_FACTS if not facts.get(key)]
        if missing:
            raise ValueError(
                f"{path} lacks {', '.join(missing)}; run .ci/postfix-start again to rewrite it"
            )
        return cls(
            host=facts["SMTPBEE_POSTFIX_HOST"],
            port=int(facts["SMTPBEE_POSTFIX_PORT"]),
            smtps_port=int(facts["SMTPBEE_POSTFIX_SMTPS_PORT"]),
            username=facts["SMTPBEE_POSTFIX_USER"],
            password=facts["SMTPBEE_POSTFIX_PASSWORD"],
            maildir=Path(facts["SMTPBEE_POSTFIX_MAILDIR"]),
            cafile=facts["SMTPBEE_POSTFIX_CAFILE"],
            domain=facts.get("SMTPBEE_POSTFIX_DOMAIN", "example.test"),
            reject_address=facts.get("SMTPBEE_POSTFIX_REJECT", "reject@example.test"),
        )

    def greeting(self, timeout: float = 5.0) -> bytes:
        """Connect, read the greeting line, say QUIT; raises OSError if it is down."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            line = sock.makefile("rb").readline(1024)
            with contextlib.suppress(OSError):
                sock.sendall(b"QUIT\r\n")
        return line

    def new_address(self, tag: str = "rcpt") -> str:
        """Return a recipient no other test in this run uses, e.g. ``rcpt-3-…@example.test``."""
        self._serial += 1
        return f"{tag}-{self._serial}-{time.time_ns()}@{self.domain}"

    def delivered(self) -> list[Path]:
        """Every message file in the maildir, oldest first by name."""
        files: list[Path] = []
        for sub in ("new", "cur"):
            directory = self.maildir / sub
            if directory.is_dir():
                files.extend(p for p in directory.iterdir() if p.is_file())
        return sorted(files, key=lambda p: p.name)

    def wait_for_message(
        self, match: str | Callable[[bytes], bool], timeout: float = 30.0
    ) -> bytes:
        """Poll the maildir until a delivered message matches; return its bytes.

        Args:
            match: A Message-ID (with or without angle brackets), matched against the
                Message-ID header, or a predicate over the delivered bytes.
            timeout: Seconds to keep polling.

        Returns:
            The delivered file as Postfix wrote it: LF line endings, with Return-Path,
            X-Original-To, Delivered-To and Received prepended (see `original_bytes`).

        Raises:
            TimeoutError: Nothing matched in time.
        """
        predicate = _message_id_matcher(match) if isinstance(match, str) else match
        deadline = time.monotonic() + timeout
        # A delivered file never changes, so each poll reads only the new arrivals.
        checked: set[str] = set()
        while True:
            for path in self.delivered():
                if path.name in checked:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    content = path.read_bytes()
                    if predicate(content):
                        return content
                    checked.add(path.name)
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no delivered message matched within {timeout}s "
                    f"({len(checked)} checked in {self.maildir})"
                )
            time.sleep(0.05)

    @staticmethod
    def original_bytes(delivered: bytes) -> bytes:
        """Undo what delivery added: drop the leading trace headers, restore CRLF."""
        lines = delivered.split(b"\n")
        index = 0
        while index < len(lines) and lines[index].lower().startswith(_TRACE_HEADERS):
            index += 1
            while index < len(lines) and lines[index][:1] in (b" ", b"\t"):
                index += 1
        return b"\r\n".join(lines[index:])


def _message_id_matcher(message_id: str) -> Callable[[bytes], bool]:
    bare = message_id.strip().removeprefix("<").removesuffix(">").encode("utf-8")
    pattern = re.compile(
        rb"^message-id:[ \t]*<" + re.escape(bare) + rb">[ \t]*$", re.IGNORECASE | re.MULTILINE
    )

    def matches(content: bytes) -> bool:
        headers = content.split(b"\n\n", 1)[0]
        return pattern.search(headers) is not None

    return matches
