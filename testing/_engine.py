# smtpbee/testing/_engine
#
# The scripted server without I/O: bytes from the client in, outputs (bytes to
# write and actions) out, h11-style. Every runner (a thread, asyncio, trio, and
# the procedure driver that needs no socket) drives this one ServerSession, so
# the same handler table behaves the same everywhere and records the same
# transcript.
#
# Theory of operation
# -------------------
# receive() appends to a buffer and consumes complete units one at a time: a
# command line (or an AUTH response while a 334 is outstanding), a DATA
# content up to its final dot, a BDAT chunk. Each unit is recorded as a client
# entry, then answered: the handler table gives a Response for the key (the
# verb, GREETING or MESSAGE), "*" stands in for a verb without an entry, and a
# verb with neither gets the default of a well-behaved server (_defaults).
# The writes of everything consumed in one receive() are recorded as one
# server entry: the server answers what it has read so far in one go, the way
# Postfix flushes its replies when its input is empty. So a pipelining
# client's group shows as one round of the transcript, and a client in lock
# step as one unit per round.
#
# The session's state follows the codes actually written, whoever chose them:
# a 250 to MAIL opens a transaction, 250/251 to RCPT adds the recipient, 354
# to DATA starts the content, 334 makes the next line a response, 235
# authenticates, a 2xx to MESSAGE delivers. A handler that answers MAIL with
# its own 250 therefore gets a transaction like any other.
#
# Invariants: after StartTLS nothing is parsed until tls_started(); after
# Close, Reset or Stall nothing is parsed again and whatever arrives is
# recorded as it is (``unparsed``); the lock of the run is held while handlers
# run, so handlers of a threaded server never run at once.
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeAlias

from smtpbee import decode_data

from . import _defaults
from ._model import (
    DEFAULT,
    Action,
    Close,
    Command,
    Drip,
    Entry,
    Handler,
    Inject,
    Message,
    Replies,
    Reset,
    Response,
    Stall,
    StartTLS,
    Transcript,
    flatten,
    reply,
)

if TYPE_CHECKING:
    from ._server import ScriptedServer

__all__ = ["Output", "ServerSession"]

Output: TypeAlias = Action
"""What a runner performs, in order: a write (`Inject`) or another action."""

_MISSING: Any = object()
_EVENTS = frozenset({"GREETING", "MESSAGE"})
_MAX_BUFFER = 256 * 1024 * 1024
_AUTH_LINE_LIMIT = 12288  # RFC 4954 §4: 12288 octets for an AUTH line


@dataclass
class _Run:
    """What the sessions of one running server share: counters, records, one lock."""

    server: ScriptedServer
    lock: threading.RLock = field(default_factory=threading.RLock)
    sessions: list[ServerSession] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _used: dict[tuple[str, int], int] = field(default_factory=dict)
    _serial: int = 0

    def take(self, key: str, items: Replies) -> Handler:
        """The next of ``items`` for ``key``, or _MISSING once they are used up."""
        slot = (key, id(items))
        index = self._used.get(slot, 0)
        self._used[slot] = index + 1
        return items.items[index] if index < len(items.items) else _MISSING

    def serial(self) -> int:
        self._serial += 1
        return self._serial


class ServerSession:
    """One connection of a scripted server, without I/O: bytes in, outputs out.

    Handler functions get the session as their second argument: its
    attributes say where the conversation is, and `default` answers as a
    well-behaved server would.

    Attributes:
        server: the `ScriptedServer` this session follows.
        tls: whether TLS is active.
        helo: the name the client gave in its last accepted EHLO, HELO or LHLO.
        esmtp: whether that was EHLO or LHLO (extensions in use).
        authenticated: whether AUTH succeeded (a 235 was written).
        user: the login the default AUTH handler accepted, or None.
        mail: the accepted MAIL command of the open transaction, or None.
        recipients: the accepted recipients of the open transaction.
        commands: every command received, in order (AUTH responses included).
        messages: the messages accepted in this session.
        transcript: every unit the client sent and every write of the server.
        client_closed: whether the client closed (or reset) the connection.
        tls_error: why a TLS handshake failed, if one did.
        timed_out: whether the server gave up waiting for the client.
        greeting_code: the code of the greeting written (554: only QUIT is
            answered by default), or None before it.
        peer: the client's address as the server saw it (host, port), over a socket.
        ended: whether the session is over (nothing more will be answered).
        state: a dict for handlers to keep their own notes in.
    """

    def __init__(self, server: ScriptedServer, run: _Run | None = None) -> None:
        self.server = server
        self._run = run if run is not None else _Run(server)
        self._run.sessions.append(self)
        self.tls = False
        self.helo: str | None = None
        self.esmtp = False
        self.authenticated = False
        self.user: str | None = None
        self.mail: Command | None = None
        self.recipients: list[str] = []
        self.commands: list[Command] = []
        self.messages: list[Message] = []
        self.transcript = Transcript()
        self.client_closed = False
        self.tls_error: BaseException | None = None
        self.timed_out = False
        self.peer: tuple[str, int] | None = None
        self.ended = False
        self.state: dict[str, Any] = {}
        self.greeting_code: int | None = None
        self._buffer = bytearray()
        self._scan = 0
        self._mode = "command"  # command, auth, data, bdat, tls (awaiting the handshake), closed
        self._continuing = ""  # the key answered with 334
        self._bdat: Command | None = None
        self._bdat_size = 0
        self._chunks: list[bytes] = []
        self._chunk_failed = False
        self._after_tls: list[bytes | Action] = []
        self._unparsed = bytearray()
        self._auth: dict[str, str] = {}
        self._auth_user: str | None = None

    # -- what the runners call -------------------------------------------------------

    def start(self) -> list[Output]:
        """The first outputs: the greeting, or the handshake first for implicit TLS."""
        with self._run.lock:
            if self.server.tls == "implicit":
                self._mode = "tls"
                self._after_tls = [_GREET]
                return [StartTLS()]
            return self._emit(self._dispatch("GREETING", Command("GREETING")))

    def receive(self, data: bytes) -> list[Output]:
        """Take what the client sent (``b""``: it closed); return what to do, in order."""
        with self._run.lock:
            if not data:
                return self._end_of_stream()
            if self._mode in ("closed", "tls"):
                self._record_unparsed(data)
                return []
            self._buffer += data
            if len(self._buffer) > _MAX_BUFFER:
                raise RuntimeError(f"the client sent more than {_MAX_BUFFER} unparsed octets")
            outputs: list[bytes | Action] = []
            while self._mode not in ("closed", "tls"):
                answered = self._next_unit()
                if answered is None:
                    break
                outputs += answered
            return self._emit(outputs)

    def feed(self, data: bytes) -> bytes:
        """`receive`, keeping only the bytes written (a sans-I/O shortcut; actions dropped)."""
        return b"".join(o.data for o in self.receive(data) if isinstance(o, Inject))

    def tls_started(self) -> list[Output]:
        """The handshake succeeded: TLS is on; return what follows it."""
        with self._run.lock:
            self.tls = True
            self._mode = "command"
            self._buffer.clear()
            self._reset_session()
            pending, self._after_tls = self._after_tls, []
            if pending and pending[0] is _GREET:
                return self._emit(self._dispatch("GREETING", Command("GREETING", tls=True)))
            return self._emit(pending)

    def tls_failed(self, error: BaseException) -> None:
        """The handshake failed: the session ends (the error is kept in ``tls_error``)."""
        with self._run.lock:
            self.tls_error = error
            self._mode = "closed"
            self.ended = True

    def take_buffered(self) -> bytes:
        """Bytes received after the command that started TLS (the client's first TLS bytes)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def timeout(self) -> list[Output]:
        """The client said nothing for too long: 421 and close, as a real server would."""
        with self._run.lock:
            self.timed_out = True
            self._mode = "closed"
            text = f"4.4.2 {self.server.hostname} Error: timeout exceeded"
            return self._emit([reply(421, text).to_bytes(), Close()])

    def connection_lost(self) -> None:
        """The connection broke (a reset, a failed write): the session is over."""
        with self._run.lock:
            self.client_closed = True
            self._end()

    # -- what handlers use -----------------------------------------------------------

    def default(self, command: Command) -> Response:
        """What a well-behaved server answers to ``command`` in this state."""
        return _defaults.answer(self, command)

    @property
    def sender(self) -> str | None:
        """The reverse path of the open transaction, or None."""
        return self.mail.address if self.mail is not None else None

    @property
    def extensions(self) -> list[str]:
        """The EHLO lines after the first that the server offers now."""
        return _defaults.extension_lines(self)

    @property
    def unparsed(self) -> bytes:
        """What arrived but was never read as a command: after the server closed,
        stalled or reset, or a partial line when the client closed."""
        return bytes(self._unparsed)

    # -- parsing -------------------------------------------------------------------

    def _next_unit(self) -> list[bytes | Action] | None:
        if self._mode == "data":
            return self._content()
        if self._mode == "bdat":
            return self._chunk()
        return self._line()

    def _line(self) -> list[bytes | Action] | None:
        buf = self._buffer
        end = buf.find(b"\n", self._scan)
        if end < 0:
            self._scan = len(buf)
            return None
        line = bytes(buf[: end + 1])
        del buf[: end + 1]
        self._scan = 0
        self._record("C", line)
        limit = _AUTH_LINE_LIMIT if self._mode == "auth" else self.server.max_line_length
        if len(line) > limit:
            self._mode = "command"
            return [reply(500, "5.5.2 Line too long").to_bytes()]
        if not line.endswith(b"\r\n"):
            self._mode = "command"
            return [reply(500, "5.5.2 Error: bare <LF> received").to_bytes()]
        text = line[:-2].decode("utf-8", "surrogateescape")
        if self._mode == "auth":
            key = self._continuing
            command = Command(key, text, line, self.tls, continuation=True)
            return self._dispatch(key, command)
        verb, _, argument = text.partition(" ")
        verb = verb.upper()
        command = Command(verb, argument, line, self.tls)
        if verb == "BDAT" and (size := _defaults.bdat_size(argument)) is not None:
            self._bdat = command
            self._bdat_size = size[0]
            self._mode = "bdat"
            return []
        return self._dispatch(verb, command)

    def _chunk(self) -> list[bytes | Action] | None:
        if len(self._buffer) < self._bdat_size:
            return None
        payload = bytes(self._buffer[: self._bdat_size])
        del self._buffer[: self._bdat_size]
        self._record("C", payload)
        self._mode = "command"
        line = self._bdat
        assert line is not None
        command = replace(line, data=payload)
        if command.argument.split()[-1].upper() == "LAST" and self.mail is not None:
            content = b"".join(self._chunks) + payload
            message = self._message(content, content, (*self._chunks, payload))
            command = replace(command, message=message)
        return self._dispatch("BDAT", command)

    def _content(self) -> list[bytes | Action] | None:
        buf = self._buffer
        if buf.startswith(b".\r\n"):
            end = 0
        else:
            mark = buf.find(b"\r\n.\r\n", self._scan)
            if mark < 0:
                # The mark may straddle two receives: search again from 4 octets back.
                self._scan = max(0, len(buf) - 4)
                return None
            end = mark + 2
        wire = bytes(buf[: end + 3])
        del buf[: end + 3]
        self._scan = 0
        self._record("C", wire)
        self._mode = "command"
        content = decode_data(wire)
        limit = self.server.max_size
        if limit is not None and len(content) > limit:
            self._reset_transaction()
            return [reply(552, "5.3.4 Message too big").to_bytes()]
        message = self._message(content, wire, ())
        command = Command("MESSAGE", ".", b".\r\n", self.tls, data=content, message=message)
        return self._dispatch("MESSAGE", command)

    def _message(self, content: bytes, wire: bytes, chunks: tuple[bytes, ...]) -> Message:
        assert self.mail is not None
        return Message(
            sender=self.mail.address or "",
            recipients=tuple(self.recipients),
            content=content,
            wire=wire,
            chunks=chunks,
            mail=self.mail,
            queue_id=f"{self._run.serial():010X}",
            tls=self.tls,
            user=self.user,
            helo=self.helo,
        )

    # -- answering -------------------------------------------------------------------

    def _dispatch(self, key: str, command: Command) -> list[bytes | Action]:
        if key not in _EVENTS:
            self.commands.append(command)
        outputs = list(flatten(self.resolve(key, command), lambda: self.default(command)))
        self._apply(key, command, outputs)
        return outputs

    def resolve(self, key: str, command: Command) -> Response:
        """The table's answer for ``key`` (or its ``"*"`` entry), else the default."""
        table = self.server.handlers
        handler = table.get(key, _MISSING)
        if handler is _MISSING and key not in _EVENTS:
            handler = table.get("*", _MISSING)
        if isinstance(handler, Replies):
            handler = self._run.take(key, handler)
        if handler is _MISSING or handler is DEFAULT:
            return self.default(command)
        if callable(handler):
            function: Callable[[Command, ServerSession], Response] = handler
            return function(command, self)
        response: Response = handler
        return response

    def _apply(self, key: str, command: Command, outputs: list[bytes | Action]) -> None:
        """Move the session's state on the codes written (whoever chose them)."""
        written = b"".join(o for o in outputs if isinstance(o, bytes))
        code = _first_code(written)
        was_continuing = self._mode == "auth"
        if key == "GREETING":
            self.greeting_code = code
        elif key in ("EHLO", "HELO", "LHLO") and code == 250:
            self.helo = command.argument.strip()
            self.esmtp = key != "HELO"
            self._reset_transaction()
        elif key == "MAIL" and code == 250:
            self._reset_transaction()
            self.mail = command
        elif key == "RCPT" and code in (250, 251) and self.mail is not None:
            address = command.address
            if address is not None:
                self.recipients.append(address)
        elif key == "DATA" and code == 354:
            self._mode = "data"
            self._scan = 0
        elif key == "MESSAGE" or (key == "BDAT" and command.message is not None):
            self._deliver(command.message, written)
        elif key == "BDAT" and code is not None and 200 <= code < 300:
            self._chunks.append(command.data)
        elif key == "BDAT":
            self._chunk_failed = True
        elif key == "RSET" and code == 250:
            self._reset_transaction()
        if code == 334 and key not in _EVENTS:
            self._mode = "auth"
            self._continuing = key
        elif was_continuing and self._mode == "auth":
            self._mode = "command"
        if code == 235 and (key == "AUTH" or was_continuing):
            self.authenticated = True
            self.user = self._auth_user
        for output in outputs:
            if isinstance(output, Close | Reset | Stall):
                self._mode = "closed"
                self._record_unparsed(bytes(self._buffer))
                self._buffer.clear()
                break
            if isinstance(output, StartTLS):
                self._mode = "tls"
                break

    def _deliver(self, message: Message | None, written: bytes) -> None:
        codes = _reply_codes(written)
        if message is not None:
            if self.server.lmtp:
                pairs = zip(message.recipients, codes, strict=False)
                delivered = tuple(r for r, c in pairs if 200 <= c < 300)
            else:
                delivered = message.recipients if codes and 200 <= codes[0] < 300 else ()
            if delivered:
                self.messages.append(replace(message, recipients=delivered))
        self._reset_transaction()

    def _emit(self, outputs: list[bytes | Action]) -> list[Output]:
        """Join consecutive writes, hold what follows a StartTLS, record the writes."""
        result: list[Output] = []
        pending = bytearray()
        for index, output in enumerate(outputs):
            if isinstance(output, bytes):
                pending += output
                continue
            if pending:
                result.append(Inject(bytes(pending)))
                pending.clear()
            if isinstance(output, StartTLS):
                result.append(output)
                self._after_tls = outputs[index + 1 :]
                break
            result.append(output)
            if isinstance(output, Close | Reset | Stall):
                break
        else:
            if pending:
                result.append(Inject(bytes(pending)))
        for output in result:
            if isinstance(output, Inject | Drip):
                self._record("S", output.data)
            if isinstance(output, Close | Reset | Stall):
                self._end()
        return result

    # -- bookkeeping -----------------------------------------------------------------

    def _record(self, direction: str, data: bytes) -> None:
        if data:
            entry = Entry("C" if direction == "C" else "S", data, self.tls)
            self.transcript.append(entry)

    def _record_unparsed(self, data: bytes) -> None:
        if data:
            self._unparsed += data
            self._record("C", data)

    def _end_of_stream(self) -> list[Output]:
        self.client_closed = True
        self._record_unparsed(bytes(self._buffer))
        self._buffer.clear()
        self._end()
        return []

    def _end(self) -> None:
        self.ended = True
        if self._mode != "tls":
            self._mode = "closed"

    def _reset_transaction(self) -> None:
        self.mail = None
        self.recipients = []
        self._chunks = []
        self._chunk_failed = False

    def _reset_session(self) -> None:
        # After STARTTLS the client starts over (RFC 3207 §4.2): no EHLO, no AUTH.
        self.helo = None
        self.esmtp = False
        self.authenticated = False
        self.user = None
        self._reset_transaction()


class _Greet(Action):
    """Greet once the handshake is done (implicit TLS)."""

    __slots__ = ()


_GREET = _Greet()


def _first_code(written: bytes) -> int | None:
    head = written[:3]
    if len(head) == 3 and head.isdigit():
        return int(head)
    return None


def _reply_codes(written: bytes) -> list[int]:
    """The code of each complete reply written (its last line: ``ddd `` or a bare ``ddd``)."""
    codes = []
    for line in written.split(b"\n"):
        line = line.rstrip(b"\r")
        if len(line) >= 3 and line[:3].isdigit() and line[3:4] in (b" ", b""):
            codes.append(int(line[:3]))
    return codes
