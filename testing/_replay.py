# smtpbee/testing/_replay
#
# A captured session as a scripted server: replay() reads a session log
# (smtpbee.SessionLog, JSON lines) and returns a ScriptedServer that answers
# each client command the way the logged server did, in order. A session
# captured from a real server becomes a regression test in one step.
#
# Theory of operation
# -------------------
# The log holds what the client wrote ("C" records: the exact bytes, or the
# redacted text of a write that carried an AUTH secret) and what the server
# answered ("S" records, exact bytes). Which bytes make which command is
# decided once, ahead of time, by the scripted server's own engine: a shadow
# session is fed the log's writes and answers each unit with the log's next
# reply, so a DATA content, a BDAT chunk or an AUTH response becomes one step
# exactly as the engine will see it live. A step keeps the command as it is
# compared (verb and arguments, AUTH secrets as "<redacted>") and its answer:
# the reply bytes, then start_tls() after a 220 to STARTTLS, close() after a
# 221 or 421 and where the log shows the server closing.
#
# Live, one handler answers everything. What arrives is compared with the
# connection's next step: a match gets the step's answer and moves on;
# anything else gets "503 5.5.1 replay: expected <X>" and a Divergence in
# server.divergences. Where the replay goes on depends on what arrived: the
# same command with other arguments or content (RCPT TO:<x> where the log has
# RCPT TO:<y>) takes the logged one's place, so the rest of the session still
# replays; another command is one too many and the position stays (an extra
# NOOP costs one divergence, not the rest of the session). QUIT out of turn
# gets a 221 and the close, so a client that diverged still ends cleanly.
#
# What the client wrote before the server's first reply (a PROXY v1 header)
# is a step with no answer. A reply whose bytes the log left out (a SCRAM
# challenge) is played as its parsed form, "334 <challenge>": a client that
# checks the challenge stops there.
#
# What the engine itself decides is not replayed. A command line ending in a
# bare LF (and so a binary PROXY v2 header), or longer than a line may be, is
# answered 500 by the engine, never by the handler: the shadow session finds
# those lines (an entry of its transcript that no handler call took, and not
# the line of a BDAT whose chunk comes later), and each becomes a step that
# takes the log's reply but is never played, listed in server.unreplayable;
# live, the handler goes past it. A content whose end is not CRLF.CRLF (a
# smuggling probe) is never seen as ended, nor is anything after it: when the
# log's server answered those bytes, they make one more unreplayable step,
# which takes the replies left.
from __future__ import annotations

import contextlib
import os
import socket
import ssl
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from smtpbee import InvalidInputError, SessionLog, escape_text

from ._engine import ServerSession
from ._model import Action, Command, Response, close, reply, start_tls
from ._running import ThreadedServer
from ._server import ScriptedServer

__all__ = ["Divergence", "ReplayServer", "load_log", "replay"]

REDACTED = "<redacted>"
_POSITION = "replay.position"
_CLOSING = (b"221", b"421")
_LONGEST_LINE = 1 << 20  # the log decides what is too long, not the engine


@dataclass(frozen=True, slots=True)
class Divergence:
    """A command the client sent where the log has another one (or none).

    Attributes:
        index: the position of the expected command among the log's
            commands (0 is the first command after the greeting).
        expected: the log's command there, as compared; None past its end.
        received: what the client sent, shown the same way (secrets redacted).
        tls: whether it arrived under TLS.
    """

    index: int
    expected: str | None
    received: str
    tls: bool = False

    def __str__(self) -> str:
        wanted = self.expected if self.expected is not None else "nothing more (the log ends)"
        return f"command {self.index + 1}: expected {wanted}, received {self.received}"


@dataclass(slots=True)
class _Step:
    shown: str  # what is compared
    kind: str  # the verb; another command of the same kind takes this one's place
    label: str  # what a person is told
    content: bytes | None  # the content of a MESSAGE or a BDAT chunk
    replies: list[bytes]  # the log's replies to it
    replayable: bool = True  # False: the engine answers it itself, the handler never sees it
    answer: list[bytes | Action] = field(default_factory=list)  # the replies and their actions


def load_log(
    source: str | os.PathLike[str] | SessionLog | Iterable[Mapping[str, Any]],
) -> SessionLog:
    """A SessionLog from a file path, a SessionLog, or records (the header first, or not).

    Raises:
        smtpbee.InvalidInputError: not a session log.
        OSError: the file cannot be read.
    """
    if isinstance(source, SessionLog):
        return source
    if isinstance(source, str | os.PathLike):
        return SessionLog.from_jsonl(Path(source).read_text(encoding="utf-8"))
    records = list(source)
    if records and "smtpbee_log" in records[0]:
        return SessionLog.from_records(records[1:], header=records[0])
    return SessionLog.from_records(records)


class ReplayServer(ScriptedServer):
    """A `ScriptedServer` that answers as a session log says (made by `replay`).

    Attributes:
        log: the session log it replays.
        divergences: every command that differed from the log, over every
            connection served (each connection replays the log from its start).
        expected: the log's client commands, as compared, in order.
        unreplayable: those of them the scripted server handles itself: a
            line ending in a bare LF or too long (the client gets the server's
            500 instead of the logged reply), and bytes it never reads to an
            end although the log's server answered them (a content whose end
            is not CRLF.CRLF, and everything after it).
        ca_pem: the PEM of the throwaway CA that signed the server's
            certificate, when it made its own for a log with TLS (else None).
    """

    def __init__(
        self,
        log: SessionLog,
        *,
        tls_context: ssl.SSLContext | None = None,
        compare_content: bool = True,
        ignore_arguments: Iterable[str] = (),
        host: str = "127.0.0.1",
        timeout: float = 10.0,
    ) -> None:
        self.log = log
        self.compare_content = compare_content
        self.ignore_arguments = frozenset(verb.upper() for verb in ignore_arguments)
        self.divergences: list[Divergence] = []
        self.ca_pem: bytes | None = None
        records = log.records
        lmtp = any(r["dir"] == "C" and str(r.get("data", "")).startswith("LHLO") for r in records)
        tls = _tls_mode(records)
        if tls != "none" and tls_context is None:
            tls_context, self.ca_pem = _throwaway_tls()
        answer = self._answer
        super().__init__(
            {"GREETING": answer, "MESSAGE": answer, "*": answer},
            tls=tls,
            tls_context=tls_context,
            lmtp=lmtp,
            max_size=None,
            max_line_length=_LONGEST_LINE,
            timeout=timeout,
            host=host,
        )
        self._steps = self._script(records)

    def __repr__(self) -> str:
        server = self.log.header.get("server") or "?"
        return f"<ReplayServer of {server}: {len(self.expected)} commands, tls={self.tls}>"

    @property
    def expected(self) -> list[str]:
        return [step.label for step in self._steps[1:]]

    @property
    def unreplayable(self) -> list[str]:
        return [step.label for step in self._steps if not step.replayable]

    def missing(self, session: ServerSession) -> list[str]:
        """The log's commands that ``session`` never sent (it stopped early).

        The `unreplayable` ones are left out: no session can replay them.
        """
        steps = self._steps[session.state.get(_POSITION, 0) :]
        return [step.label for step in steps if step.replayable]

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts the server's throwaway certificate.

        Raises:
            ValueError: the server uses the ``tls_context`` it was given.
        """
        if self.ca_pem is None:
            raise ValueError("this replay made no certificate of its own: trust your own CA")
        return ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))

    def serve_in_thread(self, port: int = 0) -> ThreadedServer:
        """Listen on loopback (on ``port``, or a free one) and serve in threads."""
        running = ThreadedServer(self)
        if port:
            _rebind(running, port)
        return running

    # -- live ----------------------------------------------------------------------

    def _answer(self, command: Command, session: ServerSession) -> Response:
        steps = self._steps
        position: int = session.state.get(_POSITION, 0)
        # The engine answered those itself: whether or not the client sent
        # them, nothing can be compared with them.
        while position < len(steps) and not steps[position].replayable:
            position += 1
        step = steps[position] if position < len(steps) else None
        same_command = step is not None and step.shown == self._shown(command)
        if (
            step is not None
            and same_command
            and (not self.compare_content or step.content == _content(command))
        ):
            session.state[_POSITION] = position + 1
            return list(step.answer)
        received = self._label(command)
        if same_command:
            received += " (different content)"
        expected = step.label if step is not None else None
        self.divergences.append(Divergence(position - 1, expected, received, command.tls))
        replaces_step = step is not None and step.kind == _kind(command)
        session.state[_POSITION] = position + 1 if replaces_step else position
        said = f"expected {expected}" if expected is not None else "the log ends here"
        text = escape_text(f"replay: {said}")
        if command.verb == "QUIT" and not command.continuation:
            return [reply(221, f"2.0.0 {text}"), close()]
        return reply(503, f"5.5.1 {text}")

    def _shown(self, command: Command) -> str:
        verb = command.verb
        if verb == "GREETING":
            return "<greeting>"
        if verb == "MESSAGE":
            return "<message content>"
        if command.continuation:
            return "*" if command.argument.strip() == "*" else REDACTED
        if verb in self.ignore_arguments:
            return verb
        if verb == "AUTH":
            mechanism, _, secret = command.argument.strip().partition(" ")
            return f"AUTH {mechanism.upper()}" + (f" {REDACTED}" if secret.strip() else "")
        return f"{verb} {command.argument}".rstrip()

    def _label(self, command: Command) -> str:
        shown = self._shown(command)
        if command.verb == "MESSAGE":
            return f"<message content, {len(command.data)} octets>"
        return escape_text(shown)

    # -- ahead of time: the log as steps ---------------------------------------------------

    def _script(self, records: list[dict[str, Any]]) -> list[_Step]:
        """The steps of the log, parsed by a shadow session of the same engine."""
        replies = deque(SessionLog.bytes_of(r) or _rebuilt(r) for r in records if r["dir"] == "S")
        steps: list[_Step] = []
        lmtp = self.lmtp
        # What the client wrote before the server's first word (a PROXY
        # header) was answered with nothing.
        greeted = False
        # The shadow's transcript entries already accounted for.
        accounted = 0

        def take(count: int) -> list[bytes]:
            return [replies.popleft() for _ in range(min(count, len(replies)))]

        def unreplayable(label: str, replies: list[bytes]) -> None:
            steps.append(_Step(label, "", label, None, replies, replayable=False))

        def engine_answered(up_to: int) -> None:
            """Steps for the lines among the entries before ``up_to`` no handler took."""
            nonlocal accounted
            for entry in shadow.transcript[accounted:up_to]:
                if entry.direction == "C" and not _bdat_line(entry.data, self.max_line_length):
                    unreplayable(_escaped(entry.data), take(1 if greeted else 0))
            accounted = max(accounted, up_to)

        def shadow_answer(command: Command, session: ServerSession) -> Response:
            nonlocal accounted
            # The entry of this very unit is the last one (a greeting has none).
            own = 0 if command.verb == "GREETING" else 1
            engine_answered(len(session.transcript) - own)
            count = 1
            if lmtp and command.message is not None:
                count = max(1, len(command.message.recipients))
            if command.verb != "GREETING" and not greeted:
                count = 0
            taken = take(count)
            label = self._label(command)
            shown = self._shown(command)
            steps.append(_Step(shown, _kind(command), label, _content(command), taken))
            accounted = len(session.transcript)
            return list(taken)

        handlers = {"GREETING": shadow_answer, "MESSAGE": shadow_answer, "*": shadow_answer}
        shadow = ScriptedServer(
            handlers, lmtp=lmtp, max_size=None, max_line_length=self.max_line_length
        ).session()
        shadow.start()
        closed_after: set[int] = set()
        for record in records:
            greeted = greeted or record["dir"] == "S"
            if record["dir"] == "C":
                if record.get("tls") and not shadow.tls:
                    shadow.tls_started()
                data = SessionLog.bytes_of(record)
                if data is None:  # a redacted secret: its text stands in for it
                    lines = str(record.get("data", "")).split("\n")
                    data = b"".join(line.encode("utf-8") + b"\r\n" for line in lines)
                shadow.receive(data)
                engine_answered(len(shadow.transcript))
            elif record.get("event") == "close" and record.get("by") == "server":
                closed_after.add(len(steps) - 1)
        unread = shadow.take_buffered()
        if unread and replies:
            # The server answered what the engine never reads to an end (a
            # content whose end is not CRLF.CRLF, and all that follows it).
            label = f"<{len(unread)} octets the scripted server never reads to an end>"
            unreplayable(label, list(replies))
        else:
            # Replies nothing asked for (a 421 between commands) follow the last answer.
            last = max(index for index, step in enumerate(steps) if step.replayable)
            steps[last].replies += replies
        for index, step in enumerate(steps):
            step.answer = _finish(step, closing=index in closed_after)
        return steps


def _kind(command: Command) -> str:
    return f"{command.verb} response" if command.continuation else command.verb


def _bdat_line(unit: bytes, longest: int) -> bool:
    """Whether a unit no handler took is a BDAT line (its chunk, not it, is answered)."""
    return unit[:5].upper() == b"BDAT " and unit.endswith(b"\r\n") and len(unit) <= longest


def _escaped(unit: bytes) -> str:
    return escape_text(unit.decode("utf-8", "replace").removesuffix("\r\n"))


def _finish(step: _Step, *, closing: bool) -> list[bytes | Action]:
    """A step's answer with the actions the log implies: TLS after STARTTLS, the closes."""
    answer: list[bytes | Action] = []
    for item in step.replies:
        answer.append(item)
        if step.shown == "STARTTLS" and item.startswith(b"220"):
            answer.append(start_tls())
            break
        if item[:3] in _CLOSING:
            closing = True
            break
    if closing:
        answer.append(close())
    return answer


def _content(command: Command) -> bytes | None:
    return command.data if command.verb in ("MESSAGE", "BDAT") else None


def _rebuilt(record: Mapping[str, Any]) -> bytes:
    """The wire form of a reply whose exact bytes the log does not hold."""
    rebuilt = SessionLog.reply_of(record)
    if rebuilt is None:
        raise InvalidInputError(f"a reply with neither bytes_b64 nor reply: {dict(record)!r}")
    return rebuilt.to_bytes()


def _tls_mode(records: list[dict[str, Any]]) -> Literal["none", "starttls", "implicit"]:
    for record in records:
        if record["dir"] == "S" or record.get("event") == "tls-handshake":
            if record.get("tls"):
                return "implicit"
            break
    return "starttls" if any(record.get("tls") for record in records) else "none"


def _throwaway_tls() -> tuple[ssl.SSLContext, bytes]:
    """A server context with a new certificate for localhost, 127.0.0.1 and ::1."""
    try:
        import trustme
    except ImportError:  # pragma: no cover - trustme comes with the test extras
        raise RuntimeError(
            "this log uses TLS: pass tls_context= (a server context with a certificate),"
            " or install trustme so the replay can make a throwaway one"
        ) from None
    ca = trustme.CA(organization_name="smtpbee replay")
    certificate = ca.issue_cert("localhost", "127.0.0.1", "::1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    return context, ca.cert_pem.bytes()


def _rebind(running: ThreadedServer, port: int) -> None:
    """Move a server that has not started yet to a chosen port."""
    host = running.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(16)
    except BaseException:
        sock.close()
        raise
    with contextlib.suppress(OSError):
        running._listener.close()
    running._listener = sock
    running.port = port


def replay(
    source: str | os.PathLike[str] | SessionLog | Iterable[Mapping[str, Any]],
    *,
    tls_context: ssl.SSLContext | None = None,
    compare_content: bool = True,
    ignore_arguments: Iterable[str] = (),
    host: str = "127.0.0.1",
    timeout: float = 10.0,
) -> ReplayServer:
    """A scripted server that answers the way a captured session's server did.

    Each client command gets, in order, the reply the log holds for it: the
    greeting, every reply byte for byte (multi-line replies too), pipelined
    groups answered in one write, STARTTLS followed by a real handshake. A
    command that differs from the log's next one (verb and arguments; AUTH
    secrets compare as redacted, so any password matches) is answered
    ``503 5.5.1 replay: expected <X>`` and recorded in ``divergences``. The
    same verb with other arguments or content takes the logged command's
    place and the replay goes on after it; another verb is one command too
    many, and the logged one is still expected next::

        server = replay("session.jsonl")
        with server.serve_in_thread() as running:
            ...  # run the client against running.host, running.port
        assert not server.divergences

    TLS: a log with TLS needs a certificate. Without ``tls_context`` the
    server makes a throwaway one (trustme) for localhost, 127.0.0.1 and ::1;
    the client must then trust it (``server.client_context()``, or the PEM in
    ``server.ca_pem``) or skip verification.

    Args:
        source: a path of a JSON-lines log, a `smtpbee.SessionLog`, or its
            records (dicts, the header line first or not).
        tls_context: the server-side context for STARTTLS or implicit TLS.
        compare_content: also compare message contents and BDAT chunks byte for byte.
        ignore_arguments: verbs whose arguments are not compared (``["EHLO"]``
            when the client's host name may differ).
        host: where to listen (loopback only).
        timeout: seconds the server waits for the client.

    Raises:
        smtpbee.InvalidInputError: ``source`` is not a session log.
    """
    return ReplayServer(
        load_log(source),
        tls_context=tls_context,
        compare_content=compare_content,
        ignore_arguments=ignore_arguments,
        host=host,
        timeout=timeout,
    )
