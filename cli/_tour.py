# smtpbee/cli/_tour
#
# `smtpbee tour`: one real SMTP session, line by line, explained.
#
# Theory of operation
# -------------------
# A TourServer (cli/_tour_server.py: smtpbee.testing's scripted server, told
# what to say) listens on 127.0.0.1 in this process; the blocking transport
# sends a real message through it, without TLS (loopback only: there is no
# certificate to check, and the tour says so). The client's
# transcript callable is the guide: each C:/S: line is printed as it happens,
# followed by what it means and by the client's state (session.conn.state,
# with the description the state table gives it). The explanations are keyed
# by the command being answered and the reply code, so the text follows what
# really happened on the wire rather than a script.
#
# The output is the same every run except for the port, the temporary
# directory and the queue id: the EHLO name, the message and its Date and
# Message-ID are fixed.
#
# The server writes the message it received to a file, which the tour shows.
# By default that file lives in a temporary directory removed when the tour
# ends (the tour leaves nothing behind); `--keep DIR` writes it into DIR
# instead and keeps it there.
from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import TextIO

from smtpbee import SMTPError, State
from smtpbee.transports.sync import SMTPClient

from ._output import ExitCode, error_line
from ._tour_server import DOMAIN, FORWARDED, TourServer

__all__ = ["MESSAGE", "RECIPIENTS", "SENDER", "Guide", "add_arguments", "main", "tour"]

SENDER = "you@client.smtpbee.test"
RECIPIENTS = (f"alice@{DOMAIN}", FORWARDED, f"nobody@{DOMAIN}")
CLIENT_NAME = "client.smtpbee.test"

MESSAGE = f"""\
From: You <{SENDER}>
To: Alice <{RECIPIENTS[0]}>, Bob <{RECIPIENTS[1]}>
Cc: Nobody <{RECIPIENTS[2]}>
Subject: Hello from the smtpbee tour
Date: Thu, 01 Jan 2026 09:00:00 +0000
Message-ID: <tour-1@client.smtpbee.test>

Hello Alice and Bob,

this message went through a real SMTP session. The next line holds one dot:
.
Sent as it is, that line would end the message right there.
.A line that merely starts with a dot is doubled too.
""".encode()

_WIDTH = 78

_STEPS = {
    None: "1. Connect: the server speaks first",
    "EHLO": "2. Introduce yourself",
    "MAIL": "3. The envelope: who sends, who receives",
    "DATA": "4. The content",
    "QUIT": "5. Goodbye",
}

_COMMANDS = {
    "EHLO": "EHLO gives the client's name and asks the server which extensions it "
    "offers. HELO is the older form without extensions; smtpbee falls back to it "
    "when a server refuses EHLO.",
    "MAIL": "MAIL FROM opens a mail transaction and names the envelope sender, where "
    "bounces go (it need not match the From: header). SIZE= tells the message size "
    "up front, because the server offered the SIZE extension.",
    "RCPT": "RCPT TO names one envelope recipient: one command per recipient, each "
    "with its own answer. Bcc works this way: a recipient in the envelope, not in "
    "the headers.",
    "DATA": "DATA asks to send the message itself.",
    "QUIT": "QUIT ends the session.",
}

_REPLIES = {
    (None, 220): "220: the server is ready. '220-' means more lines follow; the line "
    "with a space after the code ('220 ') is the last. That is a multi-line reply, "
    "and smtpbee reads it as one reply.",
    ("EHLO", 250): "250: welcome. The first line names the server, each further line "
    "is an extension: 8BITMIME (8-bit content is fine), SIZE (the largest message, "
    "in octets), ENHANCEDSTATUSCODES (replies carry codes like 2.1.0: class, "
    "subject, detail), HELP. No PIPELINING, so the client must wait for each reply "
    "before the next command.",
    ("MAIL", 250): "250: sender accepted (2.1.0: success, addressing, other). "
    "A transaction is open.",
    ("RCPT", 250): "250: this recipient is accepted (the mailbox is local).",
    ("RCPT", 251): "251: accepted, but the user is not local: the server will forward "
    "the message. For the client it is a success, like 250.",
    ("RCPT", 550): "550: refused for good (5xx is permanent; a 4xx would mean 'try "
    "later'). The transaction goes on with the recipients that were accepted; "
    "smtpbee send would report this one and exit 69.",
    ("DATA", 354): "354: go ahead. The client sends the content and ends it with a "
    "line holding only '.'.",
    (".", 250): "250: the message is accepted and queued: the server is now "
    "responsible for it. The queue id lets the server's administrator find it.",
    ("QUIT", 221): "221: goodbye; the server closes the connection.",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``smtpbee tour``."""
    parser.add_argument(
        "--keep",
        metavar="DIR",
        type=Path,
        help="keep the message the server received: write it into DIR (created if missing)"
        " instead of a temporary directory removed when the tour ends",
    )


def _wrap(text: str, indent: str = "   ") -> str:
    return textwrap.fill(text, _WIDTH, initial_indent=indent, subsequent_indent=indent)


class Guide:
    """The transcript callable that prints and explains each line of the session."""

    def __init__(self, out: TextIO, server: TourServer) -> None:
        self.out = out
        self.server = server
        self.client: SMTPClient | None = None
        self._answering: str | None = None

    def say(self, text: str = "") -> None:
        print(text, file=self.out)

    def step(self, key: str | None) -> None:
        self.say()
        self.say(f"--- {_STEPS[key]} ---")

    def state(self) -> None:
        assert self.client is not None
        state: State = self.client.session.conn.state
        self.say(f"   [state {state.name}: {state.value}]")

    def waiting(self) -> None:
        # States move on replies, never on commands: say what the client awaits.
        assert self.client is not None
        conn = self.client.session.conn
        phase = conn.waiting_for
        awaited = f"; waiting for {phase.description}" if phase is not None else ""
        self.say(f"   [state still {conn.state.name}{awaited}]")

    def __call__(self, direction: str, line: str) -> None:
        if direction == "C":
            self.command(line)
        else:
            self.reply_line(line)

    def command(self, line: str) -> None:
        verb = line.split(" ", 1)[0].upper()
        if line.startswith("<") and line.endswith("octets of content>"):
            verb = "content"
        if verb in _STEPS:
            self.step(verb)
        self.say(f"C: {line}")
        if verb == "content":
            self.content()
        elif verb == ".":
            self.say(_wrap("A line holding only '.' ends the content."))
        else:
            self.say(_wrap(_COMMANDS.get(verb, "")))
        self._answering = verb if verb != "content" else self._answering
        self.waiting()

    def content(self) -> None:
        self.say(_wrap("The message itself: headers, an empty line, the body. As written "
                       "(with plain LF line ends):"))  # fmt: skip
        for line in MESSAGE.decode().splitlines():
            self.say(f"      | {line}".rstrip())

    def reply_line(self, line: str) -> None:
        self.say(f"S: {line}")
        if len(line) > 3 and line[3] == "-":
            return  # more lines of the same reply follow
        code = int(line[:3])
        self.say(_wrap(_REPLIES.get((self._answering, code), f"{code}.")))
        self.state()
        if self._answering == "." and code == 250:
            self.wire()

    def wire(self) -> None:
        wire = self.server.deliveries[-1].wire
        self.say(_wrap("On the wire, between the 354 and this reply, the server received "
                       "(every line ends with CRLF now):"))  # fmt: skip
        lines = wire.split(b"\r\n")[:-1]
        for index, raw in enumerate(lines):
            text = raw.decode()
            if index == len(lines) - 1:
                note = "  <- the end of the content"
            elif text.startswith(".."):
                note = "  <- dot-stuffed: the server removes the extra dot"
            else:
                note = ""
            self.say(f"      | {text}{note}".rstrip())


def tour(out: TextIO, directory: Path, *, kept: bool = False) -> int:
    """Run the tour, printing to ``out``; messages go to ``directory``. Returns 0.

    ``kept`` says whether ``directory`` outlives the tour (``--keep``), for the text.
    """
    with TourServer(directory) as server:
        guide = Guide(out, server)
        guide.say("smtpbee tour: one real SMTP session, line by line")
        guide.say("=" * 49)
        guide.say(_wrap(
            f"A teaching SMTP server is listening on 127.0.0.1:{server.port}, inside this "
            "process. smtpbee connects with its blocking transport and sends one message "
            "to three recipients. No TLS: the session never leaves this machine and there "
            "is no certificate to check. Against a real server smtpbee requires TLS by "
            "default (STARTTLS, or implicit TLS on port 465).", ""))  # fmt: skip
        guide.say()
        guide.say(_wrap(
            "'C:' lines are what the client sends, 'S:' lines what the server answers. "
            "Under each: what it means, and the client's state (session.conn.state).", ""
        ))  # fmt: skip
        client = SMTPClient(
            "127.0.0.1",
            server.port,
            tls="none",
            local_hostname=CLIENT_NAME,
            timeout=10,
            transcript=guide,
        )
        guide.client = client
        guide.step(None)
        client.connect()
        result = client.sendmail(SENDER, list(RECIPIENTS), MESSAGE)
        client.quit()
        delivery = server.deliveries[-1]
    guide.say()
    guide.say("--- 6. What happened ---")
    accepted = ", ".join(result.accepted)
    refused = ", ".join(f"{a} ({r.code})" for a, r in result.refused.items())
    guide.say(_wrap(f"Accepted: {accepted}. Refused: {refused}.", ""))
    guide.say(_wrap(f"The server wrote the message it received (queue id "
                    f"{delivery.queue_id}) to:", ""))  # fmt: skip
    guide.say(f"  {delivery.path}")
    if not kept:
        guide.say(_wrap("(a temporary directory, removed when the tour ends: "
                        "`smtpbee tour --keep DIR` keeps the message in DIR)", ""))  # fmt: skip
    guide.say("Its content, dot-stuffing undone by the server:")
    for line in delivery.path.read_bytes().decode().splitlines():
        guide.say(f"      | {line}".rstrip())
    guide.say()
    guide.say(_wrap(
        "Next: `smtpbee states` prints the whole state machine; `smtpbee send --transcript "
        "--states` shows the same kind of session against a real server.", ""))  # fmt: skip
    return 0


def main(args: argparse.Namespace) -> int:
    """Run ``smtpbee tour``; returns the exit code."""
    keep: Path | None = args.keep
    if keep is not None:
        try:
            keep.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            error_line(f"--keep {keep}: cannot create the directory: {exc.strerror or exc}")
            return ExitCode.DATA_ERROR
    try:
        if keep is not None:
            return tour(sys.stdout, keep.resolve(), kept=True)
        with tempfile.TemporaryDirectory(prefix="smtpbee-tour-") as directory:
            return tour(sys.stdout, Path(directory))
    except (SMTPError, OSError) as exc:
        error_line(f"the tour failed: {exc}")
        return 70
