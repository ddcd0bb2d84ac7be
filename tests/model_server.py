"""An in-memory SMTP server model for driving the core without sockets.

It understands just enough SMTP to answer a well-behaved client: it parses the
client's bytes line by line, un-stuffs DATA, counts BDAT octets, and answers
from its configuration. Tests use it to run the session procedures end to end
(`run_procedure`) and as the model in the stateful hypothesis test.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from smtpbee._requests import Poll, PullBody, Read, UpgradeTLS, Write

DEFAULT_EXTENSIONS = (
    "PIPELINING",
    "SIZE 10000000",
    "8BITMIME",
    "SMTPUTF8",
    "ENHANCEDSTATUSCODES",
    "CHUNKING",
    "DSN",
    "STARTTLS",
    "AUTH PLAIN LOGIN",
)


@dataclass
class Delivered:
    sender: str
    recipients: list[str]
    content: bytes
    mail_line: str


@dataclass
class ModelServer:
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    refuse_recipients: set[str] = field(default_factory=set)
    refuse_ehlo: bool = False
    greeting: bytes = b"220 model.test ESMTP ready\r\n"
    lmtp: bool = False
    users: dict[str, str] = field(default_factory=lambda: {"user": "secret"})
    refuse_content: bool = False
    refuse_content_containing: bytes | None = None
    tls: bool = False
    # A sloppy server: the next positive (2xx/3xx) reply goes out with this
    # code instead (e.g. aiosmtpd's 250 to HELP). Used once, then cleared.
    recode: int | None = None
    received: bytearray = field(default_factory=bytearray)
    delivered: list[Delivered] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    reads: int = 0
    _buffer: bytearray = field(default_factory=bytearray)
    _mode: str = "command"
    _data: bytearray = field(default_factory=bytearray)
    _bdat_left: int = 0
    _bdat_last: bool = False
    _sender: str | None = None
    _rcpts: list[str] = field(default_factory=list)
    _auth_step: str = ""
    _mail_line: str = ""
    _starttls_pending: bool = False

    _greeted: bool = False

    def start(self) -> bytes:
        """The greeting, the first time a client asks."""
        if self._greeted:
            return b""
        self._greeted = True
        return self.greeting

    def feed(self, data: bytes) -> bytes:
        """Everything the server answers to these client bytes."""
        self.received += data
        self._buffer += data
        out = bytearray()
        while True:
            if self._mode == "bdat":
                if len(self._buffer) < self._bdat_left:
                    self._data += self._buffer
                    self._bdat_left -= len(self._buffer)
                    self._buffer.clear()
                    break
                self._data += self._buffer[: self._bdat_left]
                del self._buffer[: self._bdat_left]
                self._bdat_left = 0
                self._mode = "command"
                out += self._end_chunk()
                continue
            end = self._buffer.find(b"\r\n")
            if end < 0:
                break
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 2]
            if self._mode == "data":
                if line == b".":
                    self._mode = "command"
                    out += self._deliver()
                else:
                    self._data += (line[1:] if line.startswith(b".") else line) + b"\r\n"
                continue
            out += self._command(line)
        return self._recoded(bytes(out))

    def _recoded(self, out: bytes) -> bytes:
        """out with its first reply's code replaced by ``recode``, if that reply is positive."""
        code, self.recode = self.recode, None
        if code is None or not out or out[:1] not in b"23":
            return out
        lines = out.split(b"\r\n")
        for i, line in enumerate(lines):
            lines[i] = b"%03d" % code + line[3:]
            if line[3:4] == b" ":
                break
        return b"\r\n".join(lines)

    def _ehlo_reply(self, verb: str) -> bytes:
        if self.refuse_ehlo and verb == "EHLO":
            return b"502 5.5.2 EHLO not understood\r\n"
        if verb == "HELO":
            return b"250 model.test\r\n"
        extensions = [e for e in self.extensions if not (self.tls and e == "STARTTLS")]
        lines = ["model.test greets you", *extensions]
        return "".join(
            f"250{'-' if i < len(lines) - 1 else ' '}{text}\r\n" for i, text in enumerate(lines)
        ).encode()

    def _command(self, raw: bytes) -> bytes:
        if self._auth_step:
            return self._auth_continue(raw)
        line = raw.decode("utf-8")
        self.commands.append(line)
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        if verb in ("EHLO", "HELO", "LHLO"):
            self._reset()
            return self._ehlo_reply(verb)
        if verb == "MAIL":
            self._reset()
            self._sender = arg[arg.index("<") + 1 : arg.index(">")]
            self._mail_line = line
            return b"250 2.1.0 Ok\r\n"
        if verb == "RCPT":
            if self._sender is None:
                return b"503 5.5.1 Error: need MAIL command\r\n"
            address = arg[arg.index("<") + 1 : arg.index(">")]
            if address in self.refuse_recipients:
                return b"550 5.1.1 <%s>: Recipient address rejected\r\n" % address.encode()
            self._rcpts.append(address)
            return b"250 2.1.5 Ok\r\n"
        if verb == "DATA":
            if not self._rcpts:
                return b"554 5.5.1 Error: no valid recipients\r\n"
            self._mode = "data"
            self._data.clear()
            return b"354 End data with <CR><LF>.<CR><LF>\r\n"
        if verb == "BDAT":
            size, _, last = arg.partition(" ")
            self._bdat_left = int(size)
            self._bdat_last = last.upper() == "LAST"
            self._mode = "bdat"
            return b""
        if verb == "RSET":
            self._reset()
            return b"250 2.0.0 Ok\r\n"
        if verb == "NOOP":
            return b"250 2.0.0 Ok\r\n"
        if verb == "VRFY":
            return b"252 2.0.0 Cannot VRFY user\r\n"
        if verb == "EXPN":
            return b"502 5.5.1 EXPN not available\r\n"
        if verb == "HELP":
            return b"214-2.0.0 Commands:\r\n214 2.0.0 HELO EHLO MAIL RCPT DATA\r\n"
        if verb == "QUIT":
            return b"221 2.0.0 Bye\r\n"
        if verb == "STARTTLS":
            self._starttls_pending = True
            return b"220 2.0.0 Ready to start TLS\r\n"
        if verb == "AUTH":
            return self._auth_start(arg)
        return b"502 5.5.2 Error: command not recognized\r\n"

    def _auth_start(self, arg: str) -> bytes:
        mechanism, _, initial = arg.partition(" ")
        if mechanism.upper() == "PLAIN":
            if not initial:
                self._auth_step = "plain"
                return b"334 \r\n"
            return self._check_plain(initial.encode())
        if mechanism.upper() == "LOGIN":
            self._auth_step = "login-user"
            return b"334 VXNlcm5hbWU6\r\n"
        return b"504 5.5.4 Unrecognized authentication type\r\n"

    def _auth_continue(self, raw: bytes) -> bytes:
        step, self._auth_step = self._auth_step, ""
        if raw == b"*":
            return b"501 5.7.0 Authentication cancelled\r\n"
        if step == "plain":
            return self._check_plain(raw)
        if step == "login-user":
            self._login_user = base64.b64decode(raw).decode()
            self._auth_step = "login-password"
            return b"334 UGFzc3dvcmQ6\r\n"
        password = base64.b64decode(raw).decode()
        return self._auth_result(self._login_user, password)

    def _check_plain(self, encoded: bytes) -> bytes:
        _, user, password = base64.b64decode(encoded).decode().split("\0")
        return self._auth_result(user, password)

    def _auth_result(self, user: str, password: str) -> bytes:
        if self.users.get(user) == password:
            return b"235 2.7.0 Authentication successful\r\n"
        return b"535 5.7.8 Error: authentication failed\r\n"

    def _end_chunk(self) -> bytes:
        if not self._rcpts:
            return b"554 5.5.1 Error: no valid recipients\r\n"
        if not self._bdat_last:
            return b"250 2.0.0 %d octets received\r\n" % len(self._data)
        return self._deliver()

    def _deliver(self) -> bytes:
        if not self._rcpts:
            self._reset()
            return b"554 5.5.1 Error: no valid recipients\r\n"
        marker = self.refuse_content_containing
        if self.refuse_content or (marker is not None and marker in self._data):
            self._reset()
            return b"554 5.6.0 Message refused\r\n"
        assert self._sender is not None
        self.delivered.append(
            Delivered(self._sender, list(self._rcpts), bytes(self._data), self._mail_line)
        )
        count = len(self._rcpts) if self.lmtp else 1
        self._reset()
        return b"250 2.0.0 Ok: queued\r\n" * count

    def _reset(self) -> None:
        self._sender = None
        self._rcpts = []
        self._data = bytearray()


def run_procedure(
    proc: Any,
    server: ModelServer,
    body: Iterable[bytes] = (),
    *,
    on_write: Callable[[bytes], None] | None = None,
    tls_verified: bool = True,
) -> Any:
    """Drive a procedure against the model server, as a transport would."""
    outbox = bytearray(server.start())
    chunks = iter(body)
    result: Any = None
    while True:
        try:
            request = proc.send(result)
        except StopIteration as stop:
            return stop.value
        result = None
        if isinstance(request, Write):
            if on_write is not None:
                on_write(request.data)
            outbox += server.feed(request.data)
        elif isinstance(request, Read):
            server.reads += 1
            result = bytes(outbox)
            outbox.clear()
        elif isinstance(request, UpgradeTLS):
            server.tls = True
            result = tls_verified
        elif isinstance(request, PullBody):
            result = next(chunks, b"")
        elif isinstance(request, Poll):
            result = bytes(outbox) or None
            outbox.clear()
        else:  # pragma: no cover - a new request type would need serving here
            raise AssertionError(f"unknown request {request!r}")
