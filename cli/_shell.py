# smtpbee/cli/_shell
#
# `smtpbee shell`: SMTP by hand, as learners do it with telnet, but checked
# and explained.
#
# Theory of operation
# -------------------
# A typed line is parsed into a smtpbee Command (parse_line), which refuses
# what the Command constructors refuse (CR, LF and other controls, malformed
# addresses) before a byte is written. The connection then says whether the
# command is legal now (Connection.why_not); if not, the line is refused with
# that reason. Otherwise the blocking client sends it (SMTPClient.command),
# which checks it once more against what the server offered.
#
# Everything the client writes and reads reaches the shell through the
# client's transcript callable (Shell.on_line): each C:/S: line is printed as
# it happens, and after the last line of each reply the shell explains it
# (cli/_shell_guide.py, from the core's own rule table) and shows the state it
# led to. The command a reply answers is taken from Connection.pending as it
# was when the commands were written: replies come in the order of the
# commands, so this holds for the pipelined groups of `send` too.
#
# ShellClient is the blocking client with two steps a hand-driven session
# needs and the public API leaves out on purpose: connect and read only the
# greeting (the learner types EHLO), and write one line of content without
# waiting for a reply (the reply comes after the final dot).
#
# Line editing is the standard library's readline (history, Tab completion of
# the commands legal now and of the parameters the server offered), used only
# when stdin is a terminal. Secrets (the `auth` password, AUTH responses typed
# by hand) are read with getpass: never echoed, never logged.
#
# Invariants: nothing reaches the wire that the safe API would refuse, except
# a line typed as `raw ...` (the library's unsafe path, marked C! in the
# transcript); server text is escaped before it is printed; the shell ends
# when the session can no longer be used.
from __future__ import annotations

import argparse
import contextlib
import email.utils
import functools
import getpass
import shlex
import sys
import tempfile
import textwrap
from collections import deque
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TextIO, TypeVar

from smtpbee import (
    AuthCancel,
    AuthResponse,
    ClientSession,
    Command,
    Connection,
    ConnectionClosed,
    ConnectionLostError,
    Ehlo,
    EndOfData,
    Extensions,
    GreetingReceived,
    Helo,
    InvalidInputError,
    LocalProtocolError,
    MessageData,
    Procedure,
    Quit,
    Reply,
    SessionLog,
    SMTPError,
    State,
    TLSMode,
    UpgradeTLS,
    Verb,
    escape_text,
)
from smtpbee._receivebuffer import parse_enhanced_status
from smtpbee.transports._common import as_smtp_error
from smtpbee.transports._sync.hooks import Unsafe
from smtpbee.transports.sync import SMTPClient

from . import _shell_guide as guide
from ._client import parse_server, resolve_tls, ssl_context
from ._output import ExitCode, InputError, UsageError, classify, error_line
from ._shell_parse import ParseError, decode_base64, mail_parameters, parse_line, rcpt_parameters

__all__ = ["Shell", "ShellClient", "add_arguments", "main"]

TEACHING_CLIENT_NAME = "client.smtpbee.test"
_T = TypeVar("_T")


# --------------------------------------------------------------------------------------
# The client


class ShellClient(SMTPClient):
    """The blocking client, with the steps a hand-driven session needs."""

    def greet(self) -> Reply:
        """Connect (and the TLS handshake of implicit TLS), read the greeting, nothing more."""
        if self._connected:
            raise LocalProtocolError("already connected")
        try:
            sockname = self._open()
        except Exception as exc:
            self._abort()
            error = as_smtp_error(self._plain(exc), f"connecting to {self.host}:{self.port}")
            if error is None:
                raise
            raise error from error.__cause__
        return self._run(_greeting(self._new_session(sockname)))

    def content_line(self, data: bytes) -> None:
        """Write a piece of the message after the 354 (no reply comes for it)."""
        self._run(self.session.exchange.send([MessageData(data)]))


def _greeting(session: ClientSession) -> Procedure[Reply]:
    exchange = session.exchange
    if session.tls_mode is TLSMode.IMPLICIT:
        try:
            session.tls_verified = bool((yield UpgradeTLS(session.timeouts.tls_handshake)))
        except SMTPError as exc:
            raise exchange.fail(exc)  # noqa: B904 - fail() chose the cause
        exchange.handshake_done(session.tls_verified)
    event = yield from exchange.event()
    if isinstance(event, ConnectionClosed):
        raise exchange.fail(ConnectionLostError("the server closed the connection at once"))
    assert isinstance(event, GreetingReceived)
    session.greeting = event.reply
    return event.reply


# --------------------------------------------------------------------------------------
# The shell


class Shell:
    """One hand-driven session: read lines, send commands, explain replies.

    Args:
        make_client: builds the (not yet connected) client, given the
            transcript callable it must use.
        out: where everything is printed.
        read_line: reads a line after a prompt (input(), in a terminal with readline).
        read_secret: reads a line without echoing it (getpass).
        greet_only: connect and read only the greeting (the learner types
            EHLO), instead of the client's whole opening (EHLO, STARTTLS).
        delivered: for the teaching server, where it wrote the last message
            it accepted (called after each accepted message), or None.
    """

    def __init__(
        self,
        make_client: Callable[[Callable[[str, str], None]], ShellClient],
        *,
        out: TextIO,
        read_line: Callable[[str], str] = input,
        read_secret: Callable[[str], str] = getpass.getpass,
        greet_only: bool = True,
        delivered: Callable[[], Path | None] | None = None,
    ) -> None:
        self.client = make_client(self.on_line)
        self.out = out
        self.read_line = read_line
        self.read_secret = read_secret
        self.greet_only = greet_only
        self.delivered = delivered
        self.exit_code = ExitCode.OK
        self.done = False
        self.unchecked = False
        self._awaiting: deque[Verb | None] = deque()
        self._before = State.GREETING
        self._reply_lines: list[str] = []
        self._show_content = True
        self._in_raw_content = False
        self._stuffing_told = False
        self._matches: list[str] = []

    # -- printing ---------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        for line in guide.wrap(text):
            self.say(line)

    @property
    def conn(self) -> Connection:
        return self.client.session.conn

    def on_line(self, direction: str, line: str) -> None:
        """The client's transcript: print each line, explain each reply once it is whole."""
        text = escape_text(line)
        if direction.startswith("C"):
            self._command_line(direction, text)
        else:
            self._reply_line(text)

    def _command_line(self, direction: str, text: str) -> None:
        conn = self.conn
        if not self._awaiting:
            self._before = conn.state
        if not self.unchecked:
            self._awaiting = deque(command.verb for command in conn.pending)
        elif not self._in_raw_content:
            # Unchecked, the connection pairs nothing: name the verb the line starts with.
            self._awaiting.append(guide.TYPED_VERBS.get(text.split(" ", 1)[0].upper()))
        elif text == ".":
            self._awaiting.append(Verb.END_OF_DATA)
        content = text.endswith("octets of content>")
        if content and not self._show_content:
            return
        self.say(f"{direction}: {text}")
        if text == "<TLS handshake done>":
            self._tls_done()

    def _tls_done(self) -> None:
        info = self.client.tls_info
        if info is None:  # pragma: no cover - the transport sets it before logging
            return
        check = "verified" if info.verified else "NOT verified"
        self.note(
            f"TLS is on: {info.version}, {info.cipher}; the server's certificate is {check}."
            " Everything the server offered before is forgotten (RFC 3207 §4.2): EHLO again."
        )

    def _reply_line(self, text: str) -> None:
        self.say(f"S: {text}")
        self._reply_lines.append(text)
        if len(text) > 3 and text[3] == "-":
            return  # more lines of the same reply follow
        first, self._reply_lines = self._reply_lines[0], []
        code = int(text[:3])
        enhanced = parse_enhanced_status(first[4:].encode(), code)
        greeting = self._before is State.GREETING and not self._awaiting
        answering = self._awaiting.popleft() if self._awaiting else None
        for line in guide.explain_reply(answering, code, enhanced, greeting=greeting):
            self.say(line)
        if self.unchecked:
            self.say(f"{guide.INDENT}[unchecked: the state machine no longer follows this session]")
            return
        after = self.conn.state
        self.say(guide.state_line(self._before, after))
        self._before = after

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Connect, then read and run lines until QUIT, end of input or the end of the session."""
        client = self.client
        try:
            if self.greet_only:
                client.greet()
            else:
                client.connect()
        except (SMTPError, OSError) as exc:
            client.close()
            failure = classify(exc)
            error_line(f"cannot open the session: {failure.text}")
            return failure.exit_code
        self.say()
        self.note(
            "Type SMTP commands as in telnet (EHLO name, MAIL FROM:<address>, RCPT"
            " TO:<address>, DATA, QUIT...) or the shortcuts send, tls and auth. ? lists what"
            " is legal now, Tab completes, `raw LINE` sends a line unchecked; end of input"
            " (Ctrl-D) says QUIT."
        )
        while not self.done:
            if not client.usable:
                self._finish("the session is over")
                break
            try:
                line = self.read_line(self.prompt())
            except EOFError:
                self.say()
                self._quit()
                break
            except KeyboardInterrupt:
                self.say("^C (the line is dropped; Ctrl-D or QUIT ends the session)")
                continue
            self.handle(line)
        client.close()
        return self.exit_code

    def prompt(self) -> str:
        return "UNCHECKED> " if self.unchecked else f"{self.conn.state.name}> "

    def handle(self, line: str) -> None:
        """Run one typed line."""
        text = line.strip(" ")
        keyword, _, rest = text.partition(" ")
        rest = rest.strip(" ")
        if not text:
            return
        if keyword == "?":
            self.show_legal(rest)
        elif keyword.lower() == "raw":
            self.raw(line.lstrip(" ")[len(keyword) + 1 :])
        elif keyword.lower() in ("send", "tls") or keyword == "auth":
            getattr(self, f"shortcut_{keyword.lower()}")(rest)
        else:
            self.typed(text)

    def _call(self, action: Callable[[], _T]) -> _T | None:
        """Run a client call; report a refusal or failure as a person needs to read it."""
        try:
            return action()
        except LocalProtocolError as exc:
            self.note(f"not sent: {exc}")
        except (SMTPError, OSError) as exc:
            failure = classify(exc)
            if self.client.usable:
                self.note(f"refused: {failure.text}")
            else:
                self.note(f"the session ended: {failure.text}")
                self.exit_code = failure.exit_code
        if not self.client.usable and not self.unchecked:
            self._finish("the session is over")
        return None

    def _finish(self, why: str) -> None:
        if not self.done:
            self.note(f"{why}: the shell ends here.")
        self.done = True
        self.client.close()

    # -- typed SMTP commands ----------------------------------------------------------------

    def typed(self, text: str) -> None:
        try:
            command = parse_line(text)
        except ParseError as exc:
            self.note(f"not sent: {exc}")
            return
        if isinstance(command, Quit):
            self._quit()
            return
        reason = self.conn.why_not(command.verb)
        if reason is not None:
            self.note(f"refused, nothing was sent: {self._why_not(command.verb)}.")
            self.note(f"(? lists what is legal now; `raw {text}` sends it anyway, unchecked.)")
            return
        if isinstance(command, Ehlo | Helo):
            # The EHLO smtpbee sends itself (after `tls`) gives the same name.
            self.client.session.local_hostname = command.hostname
        reply = self._call(lambda: self.client.command(command))
        if reply is None:
            return
        state = self.conn.state
        if state is State.DATA:
            self.content()
        elif state is State.AUTH:
            self.auth_responses()

    def _quit(self) -> None:
        if self.client.usable or self.unchecked:
            self._call(self.client.quit)
        self.done = True

    def content(self) -> None:
        """After the 354: each typed line is content, until a line holding only '.'."""
        self.note(
            "Type the message: headers (From:, To:, Subject:), an empty line, the body. A line"
            " holding only '.' ends it. smtpbee doubles a leading dot for you (dot-stuffing)"
            " and ends every line with CRLF."
        )
        delivered = self.delivered() if self.delivered is not None else None
        self._show_content = False
        try:
            while True:
                try:
                    line = self.read_line("data> ")
                except EOFError:
                    self.say()
                    self._finish("the content was not ended with '.': nothing is delivered")
                    return
                except KeyboardInterrupt:
                    self.note("^C: SMTP cannot cancel DATA: end it with '.' (then RSET).")
                    continue
                if line == ".":
                    break
                if line.startswith(".") and not self._stuffing_told:
                    self._stuffing_told = True
                    self.note("(this line goes out as '.' + the line: the server removes one dot)")
                data = line.encode("utf-8", "surrogateescape") + b"\r\n"
                self._call(functools.partial(self.client.content_line, data))
                if self.done:
                    return
        finally:
            self._show_content = True
        self._call(lambda: self.client.command(EndOfData()))
        self._tell_delivery(delivered)

    def _tell_delivery(self, before: Path | None) -> None:
        if self.delivered is None:
            return
        path = self.delivered()
        if path is not None and path != before:
            self.note("The teaching server wrote the message it accepted to:")
            self.say(f"{guide.INDENT}{path}")

    def auth_responses(self) -> None:
        """After a 334 to a typed AUTH: read each response without echo (base64, or *)."""
        self.note(
            "The server sent a challenge (334, hidden here). Type the response in base64"
            " (it is not shown, and the transcript hides it), or * to cancel."
        )
        while self.conn.state is State.AUTH and not self.done:
            try:
                answer = self.read_secret("response: ").strip()
            except (EOFError, KeyboardInterrupt):
                answer = "*"
            if answer == "*":
                command: Command = AuthCancel()
            else:
                try:
                    command = AuthResponse(decode_base64(answer))
                except ParseError as exc:
                    self.note(f"not sent: {exc}")
                    continue
            self._call(functools.partial(self.client.command, command))

    # -- ? ----------------------------------------------------------------------------------

    def show_legal(self, topic: str) -> None:
        """`?`: what is legal now, and why the rest is not; `? VERB`: about one command."""
        conn = self.conn
        if topic:
            self._explain_one(topic)
            return
        self.say(f"State {conn.state.name}: {conn.state.value}.")
        allowed = conn.allowed_commands()
        legal = [(v, u) for v, u in guide.COMMANDS.items() if v in allowed]
        self.say("Legal now:")
        for _verb, usage in legal:
            self._usage_line(usage)
        for usage, needs in guide.SHORTCUTS.values():
            if needs in allowed:
                self._usage_line(usage)
        self.say("Not now:")
        for verb in guide.COMMANDS:
            if verb not in allowed:
                self.say(f"  {verb.value:<9} {self._why_not(verb)}")
        self.say("Always: ? [COMMAND], raw LINE (unchecked); end of input says QUIT.")

    def _usage_line(self, usage: guide.Usage) -> None:
        column = 31
        if len(usage.syntax) < column:
            first, indent = f"  {usage.syntax:<{column}}", " " * (column + 2)
        else:
            self.say(f"  {usage.syntax}")
            first = indent = " " * (column + 2)
        lines = textwrap.wrap(usage.purpose, guide.WIDTH - len(indent))
        for prefix, line in zip([first, *[indent] * len(lines)], lines, strict=False):
            self.say(f"{prefix}{line}")

    def _why_not(self, verb: Verb) -> str:
        state = self.conn.state
        reason = self.conn.why_not(verb) or ""
        # `?` shows the state and the legal commands once, above the reasons.
        reason = reason.split("; allowed: ", 1)[0]
        return reason.replace(f" ({state.value})", "")

    def _explain_one(self, topic: str) -> None:
        usage = guide.explain_verb(topic)
        if usage is None:
            self.note(f"{topic!r}: not a command the shell knows; ? lists them.")
            return
        self.say(f"  {usage.syntax}: {usage.purpose}")
        verb = guide.TYPED_VERBS.get(topic.upper())
        shortcut = guide.SHORTCUTS.get(topic.lower())
        if verb is None and shortcut is not None:
            verb = shortcut[1]
        assert verb is not None
        reason = self.conn.why_not(verb)
        self.say("  legal now." if reason is None else f"  not now: {self._why_not(verb)}")

    # -- shortcuts --------------------------------------------------------------------------

    def _refused(self, verb: Verb) -> bool:
        reason = self.conn.why_not(verb)
        if reason is None:
            return False
        self.note(f"not now: {self._why_not(verb)}.")
        return True

    def shortcut_tls(self, rest: str) -> None:
        """`tls`: STARTTLS, the handshake and EHLO again."""
        if rest:
            self.note("tls takes no argument")
        elif not self._refused(Verb.STARTTLS):
            self._call(self.client.starttls)

    def shortcut_auth(self, rest: str) -> None:
        """`auth [USER] [--mechanism NAME] [--insecure]`: log in, the password unseen."""
        try:
            words = shlex.split(rest)
        except ValueError as exc:
            self.note(f"auth: {exc}")
            return
        mechanism: str | None = None
        insecure = "--insecure" in words
        words = [word for word in words if word != "--insecure"]
        if "--mechanism" in words:
            at = words.index("--mechanism")
            if at + 1 >= len(words):
                self.note("auth: --mechanism needs a name, e.g. --mechanism PLAIN")
                return
            mechanism = words[at + 1]
            del words[at : at + 2]
        if len(words) > 1:
            self.note("usage: " + guide.SHORTCUTS["auth"][0].syntax)
            return
        if self._refused(Verb.AUTH):
            return
        try:
            user = words[0] if words else self.read_line("user: ").strip()
            password = self.read_secret("password (not shown): ")
        except (EOFError, KeyboardInterrupt):
            self.say()
            self.note("auth: cancelled, nothing was sent")
            return
        self._call(
            lambda: self.client.login(user, password, mechanism=mechanism, allow_insecure=insecure)
        )
        if self.conn.authenticated:
            self.note(f"Logged in as {escape_text(user)}.")

    def shortcut_send(self, rest: str) -> None:
        """`send [FROM [TO ...]] [--subject S] [--body TEXT]`: one whole message."""
        try:
            words = shlex.split(rest)
            options = _options(words, ("--subject", "--body"))
        except ValueError as exc:
            self.note(f"send: {exc}")
            return
        if self._refused(Verb.MAIL):
            return
        try:
            sender = words[0] if words else self.read_line("from: ").strip()
            typed = words[1:] or self.read_line("to (comma-separated): ").split(",")
            recipients = [r.strip() for r in typed if r.strip()]
            if not recipients:
                self.note("send: no recipient, nothing was sent")
                return
            subject = options.get("--subject")
            if subject is None:
                subject = self.read_line("subject: ")
            body = options.get("--body")
            if body is None:
                body = "\n".join(self._body_lines())
        except (EOFError, KeyboardInterrupt):
            self.say()
            self.note("send: cancelled, nothing was sent")
            return
        try:
            message = _message(sender, recipients, subject, body)
        except (ValueError, InvalidInputError) as exc:
            self.note(f"not sent: {exc}")
            return
        before = self.delivered() if self.delivered is not None else None
        result = self._call(
            lambda: self.client.send_message(message, sender=sender, recipients=recipients)
        )
        if result is None:
            return
        accepted = ", ".join(result.accepted) or "nobody"
        refused = ", ".join(f"{a} ({r.code})" for a, r in result.refused.items()) or "nobody"
        self.note(f"Sent. Accepted: {accepted}. Refused: {refused}.")
        self._tell_delivery(before)

    def _body_lines(self) -> Iterator[str]:
        self.note("The body: type it, then a line holding only '.'.")
        while (line := self.read_line("body> ")) != ".":
            yield line

    # -- raw --------------------------------------------------------------------------------

    def raw(self, line: str) -> None:
        """`raw LINE`: the line as it is, through the library's unsafe path."""
        unsafe = self.client.unsafe
        if not line:
            self.note("raw needs a line to send, e.g. raw MAIL FROM:<a@example.test> BODY=FOO")
            return
        if not self.unchecked:
            self.note(
                "raw: the line goes out as typed, unchecked. From now on the session is"
                " unchecked: smtpbee sends only raw lines and QUIT."
            )
        self.unchecked = True
        replies = self._call(lambda: unsafe.send_line(line, replies=1))
        if replies and replies[-1].code == 354:
            self._raw_content(unsafe)

    def _raw_content(self, unsafe: Unsafe) -> None:
        self.note("354: type the content; nothing is dot-stuffed for you. '.' alone ends it.")
        self._in_raw_content = True
        try:
            while not self.done:
                try:
                    line = self.read_line("raw data> ")
                except (EOFError, KeyboardInterrupt):
                    self.say()
                    self._finish("the content was not ended")
                    return
                ends = line == "."
                self._call(functools.partial(unsafe.send_line, line, replies=1 if ends else 0))
                if ends:
                    return
        finally:
            self._in_raw_content = False

    # -- Tab completion ---------------------------------------------------------------------

    def complete(self, text: str, state: int) -> str | None:
        """readline's completer: the candidates for the word being typed."""
        if state == 0:
            import readline

            before = readline.get_line_buffer()[: readline.get_begidx()]
            try:
                self._matches = self.candidates(before, text)
            except Exception:  # pragma: no cover - readline would hide it anyway
                self._matches = []
        return self._matches[state] if state < len(self._matches) else None

    def candidates(self, before: str, text: str) -> list[str]:
        """What the word ``text`` may become, after ``before`` on the line."""
        conn = self.conn
        words = before.split()
        options: list[str]
        if not words:
            allowed = conn.allowed_commands()
            options = [f"{v.value} " for v in guide.COMMANDS if v in allowed]
            options += [f"{n} " for n, (_, needs) in guide.SHORTCUTS.items() if needs in allowed]
            options += ["? ", "raw "]
        else:
            options = self._argument_candidates(words, conn.extensions)
        wanted = text.upper()
        typed = {word.split("=", 1)[0].upper() for word in words[1:]}
        return [
            option
            for option in options
            if option.upper().startswith(wanted) and option.split("=", 1)[0].strip() not in typed
        ]

    def _argument_candidates(self, words: list[str], extensions: Extensions) -> list[str]:
        first = words[0]
        verb = first.upper()
        if first == "?" or verb == "RAW":
            return [f"{v.value} " for v in guide.COMMANDS] if len(words) == 1 else []
        if verb in ("MAIL", "RCPT") and len(words) == 1:
            return ["FROM:<" if verb == "MAIL" else "TO:<"]
        if verb == "MAIL":
            return mail_parameters(extensions)
        if verb == "RCPT":
            return rcpt_parameters(extensions)
        if verb in ("EHLO", "HELO") and len(words) == 1:
            return [f"{self.client.session.local_hostname} "]
        if verb in ("VRFY", "EXPN") and len(words) == 2 and extensions.smtputf8:
            return ["SMTPUTF8 "]
        mechanisms = [f"{name} " for name in sorted(extensions.auth_mechanisms)]
        if first == "AUTH" or (first == "auth" and words[-1] == "--mechanism"):
            return mechanisms if len(words) == 1 or first == "auth" else []
        if first == "auth":
            return ["--mechanism ", "--insecure "]
        if first == "send":
            return ["--subject ", "--body "]
        return []


def _options(words: list[str], names: tuple[str, ...]) -> dict[str, str]:
    """Take ``--name value`` pairs out of words (in place); ValueError if one lacks its value."""
    found: dict[str, str] = {}
    for name in names:
        while name in words:
            at = words.index(name)
            if at + 1 >= len(words):
                raise ValueError(f"{name} needs a value")
            found[name] = words[at + 1]
            del words[at : at + 2]
    return found


def _message(sender: str, recipients: list[str], subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(localtime=True)
    domain = sender.rpartition("@")[2] or "smtpbee.invalid"
    message["Message-ID"] = email.utils.make_msgid(domain=domain)
    message.set_content(body + "\n")
    return message


# --------------------------------------------------------------------------------------
# The command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``smtpbee shell``."""
    parser.add_argument(
        "--server",
        metavar="HOST[:PORT]",
        help="the server to talk to (port 25 unless given); default: a teaching server"
        " started inside this process on 127.0.0.1",
    )
    parser.add_argument(
        "--tls",
        choices=("none", "opportunistic", "starttls", "implicit"),
        help="none: plaintext, type STARTTLS (or tls) yourself; starttls: EHLO, STARTTLS and"
        " EHLO at once (required); implicit: TLS from the first byte. Default: implicit on"
        " port 465, starttls elsewhere, none for the teaching server",
    )
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument("--cafile", metavar="PEM", help="trust only the CAs in this file")
    trust.add_argument(
        "--insecure", action="store_true", help="do not verify the server's certificate"
    )
    parser.add_argument(
        "--helo",
        metavar="NAME",
        help="the name smtpbee gives when it sends EHLO itself (--tls starttls, tls)",
    )
    parser.add_argument(
        "--log",
        metavar="FILE",
        type=Path,
        help="save the session as a JSON-lines session log (what `smtpbee replay` reads)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="for every reply (default: 60; RFC 5321's minutes are long for a person)",
    )


def _enable_readline(shell: Shell) -> None:
    try:
        import readline
    except ImportError:  # pragma: no cover - not on every platform
        return
    readline.set_completer(shell.complete)
    readline.set_completer_delims(" \t")
    if "libedit" in (readline.__doc__ or ""):  # pragma: no cover - macOS
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")


def main(args: argparse.Namespace) -> int:
    """Run ``smtpbee shell``; returns the exit code."""
    try:
        if args.timeout is not None and not args.timeout > 0:
            raise UsageError("--timeout must be a positive number of seconds")
        if args.server is None and args.tls not in (None, "none"):
            raise UsageError("the teaching server has no TLS: --tls goes with --server")
        target = parse_server(args.server) if args.server is not None else None
        context = ssl_context(args.cafile, args.insecure)
    except (UsageError, InputError) as exc:
        failure = classify(exc)
        error_line(failure.text)
        return failure.exit_code
    with contextlib.ExitStack() as stack:
        log_file: TextIO | None = None
        if args.log is not None:
            try:
                log_file = stack.enter_context(args.log.open("w", encoding="utf-8"))
            except OSError as exc:
                error_line(f"--log {args.log}: {exc.strerror or exc}")
                return ExitCode.DATA_ERROR
        settings = _Settings(
            context=context,
            timeout=args.timeout or 60.0,
            helo=args.helo,
            log=SessionLog() if log_file is not None else None,
        )
        try:
            if target is None:
                return _with_teaching_server(settings, stack)
            host, port = target
            settings.log_server(host, port)
            shell = settings.shell(host, port, resolve_tls(args.tls, port))
            if args.insecure:
                shell.note("--insecure: the server's certificate is NOT verified.")
            return shell.run()
        finally:
            if log_file is not None and settings.log is not None:
                log_file.write(settings.log.to_jsonl())
    raise AssertionError("unreachable")  # pragma: no cover


class _Settings:
    """How to build the shell's client: what the options said."""

    def __init__(
        self, *, context: Any, timeout: float, helo: str | None, log: SessionLog | None
    ) -> None:
        self.context = context
        self.timeout = timeout
        self.helo = helo
        self.log = log
        self.delivered: Callable[[], Path | None] | None = None

    def log_server(self, host: str, port: int) -> None:
        if self.log is not None:
            self.log.header["server"] = f"{host}:{port}"

    def shell(self, host: str, port: int, tls: TLSMode) -> Shell:
        # By hand, a refused STARTTLS is a reply to look at, not the end: the client
        # runs opportunistically unless TLS is required from the start.
        mode = tls if tls in (TLSMode.IMPLICIT, TLSMode.STARTTLS) else TLSMode.OPPORTUNISTIC

        def make_client(transcript: Callable[[str, str], None]) -> ShellClient:
            return ShellClient(
                host,
                port,
                tls=mode,
                ssl_context=self.context,
                local_hostname=self.helo,
                timeout=self.timeout,
                transcript=transcript,
                session_log=self.log,
            )

        shell = Shell(
            make_client,
            out=sys.stdout,
            greet_only=tls in (TLSMode.NONE, TLSMode.IMPLICIT),
            delivered=self.delivered,
        )
        if sys.stdin.isatty():
            _enable_readline(shell)
        return shell


def _with_teaching_server(settings: _Settings, stack: contextlib.ExitStack) -> int:
    from ._tour_server import TourServer

    directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="smtpbee-shell-")))
    server = stack.enter_context(TourServer(directory))

    def delivered() -> Path | None:
        return server.deliveries[-1].path if server.deliveries else None

    settings.delivered = delivered
    settings.helo = settings.helo or TEACHING_CLIENT_NAME
    settings.log_server("127.0.0.1", server.port)
    shell = settings.shell("127.0.0.1", server.port, TLSMode.NONE)
    shell.say("smtpbee shell: SMTP by hand, explained")
    shell.note(
        f"A teaching SMTP server is listening on 127.0.0.1:{server.port}, inside this process"
        " (no TLS: nothing leaves this machine). Its users are alice@ and postmaster@"
        " tour.smtpbee.test; bob@elsewhere.test is forwarded; anyone else is refused."
        " What it accepts is written to a temporary directory, removed when the shell ends."
    )
    return shell.run()
