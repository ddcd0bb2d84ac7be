# smtpbee/cli/_tour_server
#
# The teaching SMTP server of `smtpbee tour`: smtpbee.testing's scripted
# server, told how this one differs from its well-behaved defaults.
#
# Theory of operation
# -------------------
# A ScriptedServer served in a thread on 127.0.0.1 port 0 (never any other
# address). Its defaults do most of the talking (EHLO, MAIL, DATA, RSET, NOOP,
# HELP, QUIT, and the refusals of commands out of order); this module sets
# what the tour shows:
#   * a two-line 220 greeting, so the tour can show a multi-line reply;
#   * EHLO answered with 8BITMIME, SIZE, ENHANCEDSTATUSCODES and HELP, and on
#     purpose no PIPELINING, so the client goes one command, one reply;
#   * RCPT: 250 for its users, 251 "not local; will forward" for one address,
#     550 for anyone else;
#   * the final reply to a message: written to a file in `directory`
#     (dot-unstuffed), then 250 with a random queue id.
# Every DATA content is kept as it came off the wire (`Delivery.wire`), so the
# tour can show what dot-stuffing did.
#
# smtpbee.testing is imported when a TourServer is made, not with this module:
# every subcommand's module is imported at start-up, and `smtpbee send` has no
# use for a test server.
#
# Invariants: command lines are bounded (1000 octets, RFC 5321 §4.5.3.1.6) and
# so is a message (SIZE: a larger one gets 552 and is not written); a delivery
# is recorded before its 250 is sent, so a client that has the 250 can read
# the record.
from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smtpbee.testing import Command, Response, ServerSession

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


class TourServer:
    """The teaching server; use as a context manager (serves in a thread).

    Attributes:
        directory: where accepted messages are written, one file each.
        deliveries: what was accepted, in order.
        port: the port it listens on (127.0.0.1 only).
        server_address: ``(host, port)``.
    """

    def __init__(self, directory: Path) -> None:
        from smtpbee.testing import ScriptedServer, reply

        self.directory = directory
        self.deliveries: list[Delivery] = []
        greeting = reply(
            220,
            f"{DOMAIN} ESMTP smtpbee teaching server",
            "Hello: this greeting has two lines, to show a multi-line reply",
        )
        self.scripted = ScriptedServer(
            {"RCPT": self._rcpt, "MESSAGE": self._deliver},
            greeting=greeting,
            hostname=DOMAIN,
            extensions=["8BITMIME", f"SIZE {MAX_SIZE}", "ENHANCEDSTATUSCODES", "HELP"],
            max_size=MAX_SIZE,
            max_line_length=_MAX_LINE,
        )
        self._running = self.scripted.serve_in_thread()
        self.port: int = self._running.port
        self.server_address: tuple[str, int] = self._running.address

    def __enter__(self) -> TourServer:
        self._running.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._running.stop()

    @staticmethod
    def _rcpt(command: Command, session: ServerSession) -> Response:
        from smtpbee.testing import reply

        address = command.address
        if session.mail is None or not address:
            return session.default(command)  # 503 (MAIL first) or 501 (syntax)
        if address.lower() == FORWARDED:
            return reply(251, f"2.1.5 User not local; will forward to <{address}>")
        if address.lower() in {f"{user}@{DOMAIN}" for user in USERS}:
            return session.default(command)  # 250 2.1.5 Recipient <...> OK
        return reply(550, f"5.1.1 <{address}>: no such user here")

    def _deliver(self, command: Command, session: ServerSession) -> Response:
        from smtpbee.testing import reply

        message = command.message
        if message is None or not message.recipients:
            return session.default(command)
        queue_id = secrets.token_hex(5).upper()
        path = self.directory / f"{queue_id}.eml"
        path.write_bytes(message.content)
        self.deliveries.append(
            Delivery(queue_id, message.sender, message.recipients, message.wire, path)
        )
        return reply(250, f"2.0.0 Ok: queued as {queue_id}")
