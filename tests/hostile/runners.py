"""Run a hostile-server case: on the core alone (three feeds) or on each transport.

Every runner builds the case's scripted server, connects a client, takes the
case's steps and records a `Run`: what the client raised (or returned),
whether the session is still usable, what a probe command did afterwards,
the client's own transcript lines and log records, and the server's records
(its transcript of every unit the client wrote, plain and under TLS, the
commands and the delivered messages).

* ``driver-whole``, ``driver-bytes``, ``driver-random``: a
  `smtpbee.ClientSession` served by ``server.driver()`` (no socket, a virtual
  clock), with what the server writes handed to the client whole, one byte
  per read, or in pieces of seeded random sizes;
* ``sync``, ``asyncio``, ``trio``: the blocking client against
  ``serve_in_thread()``, the asyncio client against ``serve_asyncio()``, the
  trio client against ``serve_trio()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine, Generator, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import smtpbee
from smtpbee import (
    ClientSession,
    ConnectionLostError,
    Poll,
    Read,
    ScramSHA256,
    SMTPError,
    SMTPTimeoutError,
    TLSMode,
    UpgradeTLS,
)
from smtpbee.testing import Command, Message, ProcedureDriver, ScriptedServer, Transcript
from smtpbee.transports._message import batch_source, body_source, prepare_message

from . import certs
from .model import RECIPIENT, SENDER, Batch, Body, Case, Login, Send, Small, Step

__all__ = [
    "DRIVER_FEEDS",
    "LOCAL_HOSTNAME",
    "PROBE",
    "RUNNERS",
    "TRANSPORTS",
    "Run",
    "build_server",
    "run",
]

_T = TypeVar("_T")

Runner = Literal["driver-whole", "driver-bytes", "driver-random", "sync", "asyncio", "trio"]
DRIVER_FEEDS: tuple[Runner, ...] = ("driver-whole", "driver-bytes", "driver-random")
TRANSPORTS: tuple[Runner, ...] = ("sync", "asyncio", "trio")
RUNNERS: tuple[Runner, ...] = DRIVER_FEEDS + TRANSPORTS

LOCAL_HOSTNAME = "client.hostile.test"
PROBE = "probe@hostile.test"
"""The address of the VRFY sent after a fatal error: it must never be written."""

SEED = 20231218  # the day SEC Consult published SMTP smuggling
SERVER_TIMEOUT = 3.0  # how long a socket runner's server waits for the client
WAIT_FOR_SERVER = 15.0  # how long a run waits for the server's connection to end


@dataclass
class Run:
    """What one run of a case did.

    Attributes:
        runner: which runner.
        error: what the client raised (an SMTPError), or None.
        result: what the last step returned.
        usable: whether the client could take another command afterwards.
        probe: what the probe command raised when the session was not usable.
        transcript: the server's transcript (every unit the client wrote, plain
            and TLS, and everything the server wrote).
        unparsed: what the server recorded without parsing it (after it closed,
            stalled or reset): the end of the transcript's client bytes.
        written: the driver only: every byte the procedures wrote.
        commands: every command the server read.
        messages: every message the server accepted.
        lines: the client's transcript callback lines ("C: ..." / "S: ...").
        log: the records logged under "smtpbee" at DEBUG, formatted.
        sni: the names the client asked for in TLS handshakes (sockets only).
        clock: the driver's virtual time at the end.
        elapsed: wall-clock seconds of the run.
    """

    runner: str
    error: BaseException | None
    result: object
    usable: bool
    probe: BaseException | None
    transcript: Transcript
    unparsed: bytes
    written: bytes | None
    commands: list[Command]
    messages: list[Message]
    lines: list[str]
    log: list[str]
    sni: list[str | None] | None
    clock: float | None
    elapsed: float

    @property
    def client_bytes(self) -> bytes:
        """Everything the client wrote, as the server read it (plain and TLS)."""
        return self.transcript.client()

    @property
    def plaintext_bytes(self) -> bytes:
        """What the client wrote outside TLS."""
        return b"".join(e.data for e in self.transcript if e.direction == "C" and not e.tls)


def build_server(case: Case, sni: Callable[[str | None], None] | None = None) -> ScriptedServer:
    """The case's scripted server (with a fresh TLS context recording SNI)."""
    spec = case.server
    context = certs.server_context(spec.cert, sni) if spec.tls != "none" else None
    return ScriptedServer(
        spec.handlers,
        hostname="mx.hostile.test",
        extensions=spec.extensions,
        tls=spec.tls,
        tls_context=context,
        users=spec.users,
        auth_mechanisms=spec.auth_mechanisms,
        timeout=SERVER_TIMEOUT,
        drain_timeout=0.5,
    )


def run(case: Case, runner: str) -> Run:
    """Run ``case`` with ``runner`` (one of RUNNERS)."""
    started = time.monotonic()
    with _captured_log() as log:
        if runner in DRIVER_FEEDS:
            record = _run_driver(case, runner)
        elif runner == "sync":
            record = _run_sync(case)
        elif runner == "asyncio":
            record = asyncio.run(_run_asyncio(case))
        elif runner == "trio":
            import trio

            record = trio.run(_run_trio, case)
        else:
            raise ValueError(f"unknown runner {runner!r}")
    record.log = log
    record.elapsed = time.monotonic() - started
    return record


@contextlib.contextmanager
def _captured_log() -> Iterator[list[str]]:
    logger = logging.getLogger("smtpbee")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep(logging.DEBUG)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _transcript_hook(lines: list[str]) -> Callable[[str, str], None]:
    def keep(direction: str, line: str) -> None:
        lines.append(f"{direction}: {line}")

    return keep


# ----------------------------------------------------------------------------
# The core alone


def _run_driver(case: Case, feed: str) -> Run:
    spec = case.driver
    verified = spec.tls_verified and case.client.trust == "ca"
    tls_error = copy.copy(spec.tls_error) if spec.tls_error is not None else None
    wire = build_server(case).driver(tls_verified=verified, tls_error=tls_error)
    if spec.write_stall_after is not None:
        wire.write_error = _stalling_writes(wire, spec.write_stall_after, case)
    lines: list[str] = []
    session = ClientSession(
        local_hostname=LOCAL_HOSTNAME,
        tls=TLSMode(case.client.tls),
        timeouts=case.client.all_timeouts(),
        limits=case.client.limits,
        transcript=_transcript_hook(lines),
    )
    rng = random.Random(f"{SEED}:{case.id}")
    rechunker: _Rechunker | None = None
    if feed == "driver-bytes":
        rechunker = _Rechunker(_bytewise)
    elif feed == "driver-random":
        rechunker = _Rechunker(_random_split(rng))

    def drive(procedure: Generator[Any, Any, _T], body: Iterator[bytes] | None = None) -> _T:
        if rechunker is not None:
            procedure = rechunker.wrap(procedure)
        return wire.run(procedure, body if body is not None else ())

    error: BaseException | None = None
    result: object = None
    try:
        result = drive(session.open())
        for step in case.steps:
            result = _driver_step(step, session, drive, wire)
    except SMTPError as exc:
        error = exc
    usable = session.conn.open
    probe: BaseException | None = None
    if not usable:
        try:
            drive(session.vrfy(PROBE))
        except SMTPError as exc:
            probe = exc
    else:
        with contextlib.suppress(SMTPError):
            drive(session.quit())
    return Run(
        runner=feed,
        error=error,
        result=result,
        usable=usable,
        probe=probe,
        transcript=wire.transcript,
        unparsed=wire.session.unparsed,
        written=wire.written,
        commands=wire.commands,
        messages=wire.messages,
        lines=lines,
        log=[],
        sni=None,
        clock=wire.now,
        elapsed=0.0,
    )


def _driver_step(
    step: Step,
    session: ClientSession,
    drive: Callable[..., Any],
    wire: ProcedureDriver,
) -> object:
    if isinstance(step, Login):
        if step.scram_nonce is not None:
            mechanism = ScramSHA256(step.username, step.password, nonce=step.scram_nonce)
            return drive(session.authenticate(mechanism, allow_insecure=step.allow_insecure))
        return drive(
            session.login(
                step.username,
                step.password,
                mechanism=step.mechanism,
                allow_insecure=step.allow_insecure,
            )
        )
    if isinstance(step, Send):
        body = step.body
        if body.kind == "message":
            prepared = prepare_message(
                body.message(), sender=None, recipients=None, server=session.conn.extensions
            )
            info, pieces = body_source(prepared.data)
            assert isinstance(pieces, Iterator)
            procedure = session.sendmail(
                prepared.sender, prepared.recipients, body=info, smtputf8=prepared.smtputf8
            )
            return drive(procedure, pieces)
        info, pieces = body_source(_driver_body(body, wire))
        assert isinstance(pieces, Iterator)
        return drive(session.sendmail(step.sender, list(step.recipients), body=info), pieces)
    if isinstance(step, Batch):
        items = [(SENDER, [RECIPIENT], data) for data in step.bodies]
        jobs, bodies = batch_source(items, session.conn.extensions)
        return drive(session.send_batch(jobs), bodies)
    return drive(_small(step, session))


def _driver_body(body: Body, wire: ProcedureDriver) -> object:
    if body.kind == "str":
        return body.data
    if body.kind == "pieces":

        def advance(seconds: float) -> None:
            wire.now += seconds  # the caller waits: the virtual clock moves on

        return body.pieces(advance)
    return body.whole()


def _small(step: Small, session: ClientSession) -> Generator[Any, Any, smtpbee.Reply]:
    if step.verb == "NOOP":
        return session.noop()
    if step.verb == "RSET":
        return session.rset()
    if step.verb == "VRFY":
        return session.vrfy(step.argument)
    if step.verb == "HELP":
        return session.help(step.argument)
    return session.quit()


def _stalling_writes(
    wire: ProcedureDriver, limit: int, case: Case
) -> Callable[[bytes], BaseException | None]:
    taken = 0
    seconds = case.client.all_timeouts().data_block

    def write(data: bytes) -> BaseException | None:
        nonlocal taken
        taken += len(data)
        if taken <= limit:
            return None
        wire.now += seconds  # the write waits out its deadline
        return SMTPTimeoutError(f"timed out sending {len(data)} bytes ({seconds:g} s)")

    return write


def _bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def _random_split(rng: random.Random) -> Callable[[bytes], list[bytes]]:
    """Split at seeded random points (pieces of 1 octet up to the whole)."""

    def split(data: bytes) -> list[bytes]:
        pieces = []
        while data:
            size = rng.randint(1, len(data))
            pieces.append(data[:size])
            data = data[size:]
        return pieces

    return split


class _Rechunker:
    """Hands what the server sent to procedures in the pieces ``split`` makes.

    The rest of a read is kept, across procedures, and handed out by the next
    Read or Poll, as a socket would; bytes still kept when a TLS handshake
    starts are what the TLS layer would read as a broken record (the driver
    says the same when the server writes before the handshake). A Read
    answered from what was kept starts its reply's deadline at that moment:
    the deadline goes to the driver with the next Read that must wait.
    """

    def __init__(self, split: Callable[[bytes], list[bytes]]) -> None:
        self.split = split
        self.kept: deque[bytes] = deque()
        self.fresh: Read | None = None

    def wrap(self, procedure: Generator[Any, Any, _T]) -> Generator[Any, Any, _T]:
        kept = self.kept
        value: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                request = procedure.throw(thrown) if thrown is not None else procedure.send(value)
            except StopIteration as stop:
                done: _T = stop.value
                return done
            value, thrown = None, None
            if isinstance(request, Read | Poll) and kept:
                if isinstance(request, Read) and request.new_wait:
                    self.fresh = request
                value = kept.popleft()
                continue
            if isinstance(request, UpgradeTLS) and kept:
                kept.clear()
                thrown = ConnectionLostError(
                    "TLS handshake failed: the server sent plaintext where the handshake was due"
                )
                continue
            if isinstance(request, Read):
                if not request.new_wait and self.fresh is not None:
                    request = replace(request, new_wait=True, timeout=self.fresh.timeout)
                self.fresh = None
            try:
                result = yield request
            except (SMTPTimeoutError, ConnectionLostError) as exc:
                thrown = exc
                continue
            if isinstance(request, Read | Poll) and result:
                pieces = self.split(result)
                kept.extend(pieces[1:])
                result = pieces[0]
            value = result


# ----------------------------------------------------------------------------
# The transports


def _client(module: Any, case: Case, port: int, lines: list[str]) -> Any:
    context = certs.client_context(case.client.trust) if case.client.tls != "none" else None
    return module.SMTPClient(
        "127.0.0.1",
        port,
        tls=case.client.tls,
        ssl_context=context,
        server_hostname=certs.SERVER_NAME,
        local_hostname=LOCAL_HOSTNAME,
        timeouts=case.client.all_timeouts(),
        connect_timeout=5.0,
        limits=case.client.limits,
        transcript=_transcript_hook(lines),
    )


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _client_steps(
    case: Case, client: Any, pieces: Callable[[Body], object]
) -> tuple[BaseException | None, object]:
    """Connect and take the steps; (the error, the last result)."""
    result: object = None
    try:
        result = await _maybe(client.connect())
        for step in case.steps:
            result = await _client_step(step, client, pieces)
    except SMTPError as exc:
        return exc, result
    return None, result


async def _client_step(step: Step, client: Any, pieces: Callable[[Body], object]) -> object:
    if isinstance(step, Login):
        if step.scram_nonce is not None:
            mechanism = ScramSHA256(step.username, step.password, nonce=step.scram_nonce)
            return await _maybe(client.authenticate(mechanism, allow_insecure=step.allow_insecure))
        return await _maybe(
            client.login(
                step.username,
                step.password,
                mechanism=step.mechanism,
                allow_insecure=step.allow_insecure,
            )
        )
    if isinstance(step, Send):
        body = step.body
        if body.kind == "message":
            return await _maybe(client.send_message(body.message()))
        value: object = body.data if body.kind == "str" else body.whole()
        if body.kind == "pieces":
            value = pieces(body)
        return await _maybe(client.sendmail(step.sender, list(step.recipients), value))
    if isinstance(step, Batch):
        items = [(SENDER, [RECIPIENT], data) for data in step.bodies]
        return await _maybe(client.send_batch(items))
    if step.verb == "NOOP":
        return await _maybe(client.noop())
    if step.verb == "RSET":
        return await _maybe(client.rset())
    if step.verb == "VRFY":
        return await _maybe(client.vrfy(step.argument))
    if step.verb == "HELP":
        return await _maybe(client.help(step.argument))
    return await _maybe(client.quit())


async def _client_end(client: Any) -> tuple[bool, BaseException | None]:
    """Whether the client is usable; the probe's error if not; then QUIT (if usable) and close."""
    usable = bool(client.usable)
    probe: BaseException | None = None
    try:
        if not usable:
            try:
                await _maybe(client.vrfy(PROBE))
            except SMTPError as exc:
                probe = exc
        else:
            with contextlib.suppress(SMTPError):
                await _maybe(client.quit())
    finally:
        await _maybe(client.close())
    return usable, probe


def _blocking(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine that never suspends (the blocking client's calls are not awaitable)."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        done: _T = stop.value
        return done
    coroutine.close()
    raise RuntimeError("the blocking client suspended")


def _socket_run(
    runner: str,
    running: Any,
    outcome: tuple[BaseException | None, object],
    end: tuple[bool, BaseException | None],
    lines: list[str],
    sni: list[str | None],
) -> Run:
    return Run(
        runner=runner,
        error=outcome[0],
        result=outcome[1],
        usable=end[0],
        probe=end[1],
        transcript=running.transcript,
        unparsed=b"".join(session.unparsed for session in running.sessions),
        written=None,
        commands=running.commands,
        messages=running.messages,
        lines=lines,
        log=[],
        sni=sni,
        clock=None,
        elapsed=0.0,
    )


def _run_sync(case: Case) -> Run:
    from smtpbee.transports import sync

    sni: list[str | None] = []
    lines: list[str] = []
    with build_server(case, sni.append).serve_in_thread() as running:
        client = _client(sync, case, running.port, lines)
        outcome = _blocking(_client_steps(case, client, lambda body: body.pieces(time.sleep)))
        end = _blocking(_client_end(client))
        running.wait(timeout=WAIT_FOR_SERVER)
    return _socket_run("sync", running, outcome, end, lines, sni)


async def _run_asyncio(case: Case) -> Run:
    from smtpbee.transports import asyncio as transport

    sni: list[str | None] = []
    lines: list[str] = []
    running = build_server(case, sni.append).serve_asyncio()
    await running.__aenter__()
    try:
        client = _client(transport, case, running.port, lines)
        outcome = await _client_steps(case, client, lambda body: body.apieces(asyncio.sleep))
        end = await _client_end(client)
        await running.wait(timeout=WAIT_FOR_SERVER)
    finally:
        await running.aclose(grace=0.2)
    return _socket_run("asyncio", running, outcome, end, lines, sni)


async def _run_trio(case: Case) -> Run:
    import trio
    from smtpbee.transports import trio as transport

    sni: list[str | None] = []
    lines: list[str] = []
    async with build_server(case, sni.append).serve_trio() as running:
        client = _client(transport, case, running.port, lines)
        outcome = await _client_steps(case, client, lambda body: body.apieces(trio.sleep))
        end = await _client_end(client)
        await running.wait(timeout=WAIT_FOR_SERVER)
    return _socket_run("trio", running, outcome, end, lines, sni)
