# smtpbee/cli/_tour_server
#
# A small teaching SMTP server for `smtpbee tour`, on the standard library only.
#
# Theory of operation
# -------------------
# socketserver in one background thread, bound to 127.0.0.1 port 0 (never any
# other address), one thread per connection. It speaks just enough RFC 5321
# for the tour, and says it plainly:
#   * a two-line 220 greeting, so the tour can show a multi-line reply;
#   * EHLO answered with 8BITMIME, SIZE, ENHANCEDSTATUSCODES and HELP, and on
#     purpose no PIPELINING, so the client goes one command, one reply;
#   * RCPT: 250 for its users, 251 "not local; will forward" for one address,
#     550 for anyone else;
#   * DATA: 354, the content up to the line holding only ".", dot-unstuffed,
#     written to a file in `directory`, then 250 with a queue id.
# Every DATA content is kept as it came off the wire (`Delivery.wire`), so the
# tour can show what dot-stuffing did.
#
# Invariants: lines are bounded (1000 octets, RFC 5321 §4.5.3.1.6) and so is a
# message (SIZE); a delivery is recorded before its 250 is sent, so a client
# that has the 250 can read the record.
from __future__ import annotations

import secrets
import socketserver
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["DOMAIN", "FORWARDED", "USERS", "Delivery", "TourServer"]

DOMAIN = "tour.smtpbee.test"
USERS = frozenset({"alice", "postmaster"})
"""Local users: <user@tour.smtpbee.test> gets 250."""

FORWARDED = "bob@elsewhere.test"
"""The one non-local address the server agrees to forward (251)."""

MAX_SIZE = 1 << 20
_MAX_LINE = 1000


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message the server accepted.

    Attributes:
        queue_id: the id given in the final 250.
        sender: the reverse path from MAIL FROM.
        recipients: the accepted recipients.
        wire: the content as received, still dot-stuffed, with the final ".".
        path: the file the message (unstuffed) was written to.
    """

    queue_id: str
    sender: str
    recipients: tuple[str, ...]
    wire: bytes
    path: Path


def _path_in(argument: str, prefix: str) -> str | None:
    # "FROM:<a@b> BODY=8BITMIME" -> "a@b"; parameters are accepted and ignored.
    if not argument.upper().startswith(prefix):
        return None
    rest = argument[len(prefix) :].strip()
    if not rest.startswith("<") or ">" not in rest:
        return None
    return rest[1 : rest.index(">")]


class _Session(socketserver.StreamRequestHandler):
    server: TourServer

    def reply(self, text: str) -> None:
        self.wfile.write(text.replace("\n", "\r\n").encode("utf-8") + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        self.reply(
            f"220-{DOMAIN} ESMTP smtpbee teaching server\n"
            "220 Hello: this greeting has two lines, to show a multi-line reply"
        )
        sender: str | None = None
        recipients: list[str] = []
        while True:
            line = self.rfile.readline(_MAX_LINE + 1)
            if not line:
                return
            if len(line) > _MAX_LINE or not line.endswith(b"\r\n"):
                self.reply("500 5.5.2 Line too long or not ended by CRLF")
                return
            verb, _, argument = line[:-2].decode("utf-8", "replace").partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                sender, recipients = None, []
                self.reply(
                    f"250-{DOMAIN} greets {argument}\n250-8BITMIME\n"
                    f"250-SIZE {MAX_SIZE}\n250-ENHANCEDSTATUSCODES\n250 HELP"
                )
            elif verb == "HELO":
                sender, recipients = None, []
                self.reply(f"250 {DOMAIN}")
            elif verb == "MAIL":
                found = _path_in(argument, "FROM:")
                if found is None:
                    self.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
                else:
                    sender, recipients = found, []
                    self.reply(f"250 2.1.0 Sender <{found}> OK")
            elif verb == "RCPT":
                self.rcpt(sender, recipients, _path_in(argument, "TO:"))
            elif verb == "DATA":
                if sender is None or not recipients:
                    self.reply("554 5.5.1 No valid recipients")
                    continue
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                if not self.data(sender, recipients):
                    return
                sender, recipients = None, []
            elif verb == "RSET":
                sender, recipients = None, []
                self.reply("250 2.0.0 OK")
            elif verb == "NOOP":
                self.reply("250 2.0.0 OK")
            elif verb == "HELP":
                self.reply(
                    "214-2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP HELP QUIT\n"
                    "214 2.0.0 End of HELP"
                )
            elif verb == "QUIT":
                self.reply(f"221 2.0.0 {DOMAIN} closing connection")
                return
            else:
                self.reply("500 5.5.2 Command not recognized")

    def rcpt(self, sender: str | None, recipients: list[str], address: str | None) -> None:
        if sender is None:
            self.reply("503 5.5.1 MAIL first")
        elif address is None:
            self.reply("501 5.5.4 Syntax: RCPT TO:<address>")
        elif address.lower() == FORWARDED:
            recipients.append(address)
            self.reply(f"251 2.1.5 User not local; will forward to <{address}>")
        elif address.lower() in {f"{user}@{DOMAIN}" for user in USERS}:
            recipients.append(address)
            self.reply(f"250 2.1.5 Recipient <{address}> OK")
        else:
            self.reply(f"550 5.1.1 <{address}>: no such user here")

    def data(self, sender: str, recipients: list[str]) -> bool:
        wire = bytearray()
        too_big = False
        while True:
            line = self.rfile.readline(_MAX_LINE + 1)
            if not line:
                return False
            if line == b".\r\n":
                wire += line
                break
            # Read on to the end of the content, keeping no more than the limit.
            too_big = too_big or len(wire) + len(line) > MAX_SIZE + 1024
            if not too_big:
                wire += line
        if too_big:
            self.reply("552 5.3.4 Message too big")
            return True
        content = b"".join(
            line[1:] if line.startswith(b".") else line
            for line in bytes(wire[:-3]).splitlines(keepends=True)
        )
        queue_id = secrets.token_hex(5).upper()
        path = self.server.directory / f"{queue_id}.eml"
        path.write_bytes(content)
        self.server.deliveries.append(
            Delivery(queue_id, sender, tuple(recipients), bytes(wire), path)
        )
        self.reply(f"250 2.0.0 Ok: queued as {queue_id}")
        return True


class TourServer(socketserver.ThreadingTCPServer):
    """The teaching server; use as a context manager (serves in a thread).

    Attributes:
        directory: where accepted messages are written, one file each.
        deliveries: what was accepted, in order.
        port: the port it listens on (127.0.0.1 only).
    """

    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, directory: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Session)
        self.directory = directory
        self.deliveries: list[Delivery] = []
        self.port: int = self.server_address[1]
        self._thread = threading.Thread(
            target=self.serve_forever, args=(0.05,), name="smtpbee-tour", daemon=True
        )

    def __enter__(self) -> TourServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join()
