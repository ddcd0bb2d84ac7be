# smtpbee/testing/_defaults
#
# What a well-behaved server answers when the handler table says nothing: the
# replies of a small, strict, Postfix-like MTA. Each default reads the
# session's state and chooses a reply; the session itself moves its state on
# the code that was written (see _engine), so these functions change nothing
# except the progress of an AUTH exchange.
#
# The texts are fixed and deterministic (the queue id counts up per running
# server), so the same client actions give the same transcript in every
# runner.
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._model import Command, Response, close, reply, start_tls

if TYPE_CHECKING:
    from ._engine import ServerSession

__all__ = ["DEFAULT_EXTENSIONS", "answer", "bdat_size", "extension_lines"]

DEFAULT_EXTENSIONS = (
    "PIPELINING",
    "8BITMIME",
    "SMTPUTF8",
    "ENHANCEDSTATUSCODES",
    "CHUNKING",
    "DSN",
)
"""The EHLO keywords a server offers by default, besides SIZE, STARTTLS and AUTH."""

_NEED_HELO = reply(503, "5.5.1 Error: send HELO/EHLO first")
_NEED_MAIL = reply(503, "5.5.1 Error: need MAIL command")
_NO_RECIPIENTS = reply(554, "5.5.1 Error: no valid recipients")
_REFUSED_SESSION = reply(503, "5.5.1 Error: the greeting refused this session: say QUIT")


def extension_lines(session: ServerSession) -> list[str]:
    """The EHLO lines after the first, as offered in the session's current state."""
    server = session.server
    if server.extensions is not None:
        lines = list(server.extensions)
    else:
        lines = list(DEFAULT_EXTENSIONS)
        if server.max_size is not None:
            lines.insert(1, f"SIZE {server.max_size}")
        if server.tls == "starttls":
            lines.append("STARTTLS")
        if server.users is not None and (session.tls or not server.auth_requires_tls):
            lines.append("AUTH " + " ".join(server.auth_mechanisms))
    if session.tls:
        lines = [line for line in lines if line.split(" ", 1)[0].upper() != "STARTTLS"]
    return lines


def bdat_size(argument: str) -> tuple[int, bool] | None:
    """``(size, last)`` of a BDAT argument, or None if it is malformed."""
    words = argument.split()
    last = len(words) == 2 and words[1].upper() == "LAST"
    if words and words[0].isascii() and words[0].isdigit() and (len(words) == 1 or last):
        return int(words[0]), last
    return None


def answer(session: ServerSession, command: Command) -> Response:
    """The default answer to ``command``."""
    if command.verb == "GREETING":
        kind = "LMTP" if session.server.lmtp else "ESMTP"
        return reply(220, f"{session.server.hostname} {kind} smtpbee.testing")
    if command.continuation:
        return _auth_response(session, command) if command.verb == "AUTH" else _unknown()
    refused = session.greeting_code is not None and session.greeting_code >= 400
    if refused and command.verb != "QUIT":
        return _REFUSED_SESSION
    handler = _DEFAULTS.get(command.verb)
    return handler(session, command) if handler is not None else _unknown()


def _unknown() -> Response:
    return reply(502, "5.5.2 Error: command not recognized")


def _hello(session: ServerSession, command: Command) -> Response:
    name = command.argument.strip()
    if (command.verb == "LHLO") != session.server.lmtp:
        return reply(500, "5.5.1 Error: LMTP speaks LHLO") if session.server.lmtp else _unknown()
    if not name:
        return reply(501, f"5.5.4 Syntax: {command.verb} hostname")
    if command.verb == "HELO":
        return reply(250, session.server.hostname)
    return reply(250, f"{session.server.hostname} greets {name}", *extension_lines(session))


def _mail(session: ServerSession, command: Command) -> Response:
    if session.helo is None:
        return _NEED_HELO
    if session.mail is not None:
        return reply(503, "5.5.1 Error: nested MAIL command")
    address = command.address if command.argument.upper().startswith("FROM:") else None
    if address is None:
        return reply(501, "5.5.4 Syntax: MAIL FROM:<address>")
    size = command.parameters.get("SIZE")
    limit = session.server.max_size
    if limit is not None and size is not None and size.isdigit() and int(size) > limit:
        return reply(552, "5.3.4 Message size exceeds fixed limit")
    return reply(250, f"2.1.0 Sender <{address}> OK")


def _rcpt(session: ServerSession, command: Command) -> Response:
    if session.mail is None:
        return _NEED_MAIL
    address = command.address if command.argument.upper().startswith("TO:") else None
    if not address:
        return reply(501, "5.5.4 Syntax: RCPT TO:<address>")
    return reply(250, f"2.1.5 Recipient <{address}> OK")


def _data(session: ServerSession, command: Command) -> Response:
    if command.argument.strip():
        return reply(501, "5.5.4 Syntax: DATA")
    if session.mail is None:
        return _NEED_MAIL
    if not session.recipients:
        return _NO_RECIPIENTS
    return reply(354, "End data with <CR><LF>.<CR><LF>")


def _bdat(session: ServerSession, command: Command) -> Response:
    parsed = bdat_size(command.argument)
    if parsed is None:
        return reply(501, "5.5.4 Syntax: BDAT size [LAST]")
    if session.mail is None:
        return _NEED_MAIL
    if not session.recipients:
        return _NO_RECIPIENTS
    if session._chunk_failed:
        return reply(503, "5.5.1 Error: an earlier chunk was refused")
    size, last = parsed
    limit = session.server.max_size
    if limit is not None and sum(map(len, session._chunks)) + size > limit:
        return reply(552, "5.3.4 Message too big")
    if last and command.message is not None:
        return session.resolve("MESSAGE", _message_command(command))
    return reply(250, f"2.0.0 {size} octets received")


def _message_command(bdat: Command) -> Command:
    message = bdat.message
    assert message is not None
    return Command(
        "MESSAGE", bdat.argument, bdat.line, bdat.tls, data=message.content, message=message
    )


def _message(session: ServerSession, command: Command) -> Response:
    message = command.message
    assert message is not None
    if not message.recipients:
        return _NO_RECIPIENTS
    queued = f"Ok: queued as {message.queue_id}"
    if session.server.lmtp:
        return [reply(250, f"2.0.0 <{r}> {queued}") for r in message.recipients]
    return reply(250, f"2.0.0 {queued}")


def _starttls(session: ServerSession, command: Command) -> Response:
    if session.server.tls != "starttls":
        return reply(502, "5.5.1 Error: command not implemented")
    if session.tls:
        return reply(554, "5.5.1 Error: TLS already active")
    if command.argument.strip():
        return reply(501, "5.5.4 Syntax: STARTTLS")
    return [reply(220, "2.0.0 Ready to start TLS"), start_tls()]


def _quit(session: ServerSession, command: Command) -> Response:
    return [reply(221, f"2.0.0 {session.server.hostname} closing connection"), close()]


def _fixed(response: Response) -> Callable[[ServerSession, Command], Response]:
    return lambda session, command: response


# -- AUTH (RFC 4954): PLAIN, LOGIN, CRAM-MD5 and XOAUTH2 against the server's users ------

_USERNAME = "VXNlcm5hbWU6"  # base64 of "Username:"
_PASSWORD = "UGFzc3dvcmQ6"  # base64 of "Password:"


def _auth(session: ServerSession, command: Command) -> Response:
    server = session.server
    if server.users is None:
        return reply(503, "5.5.1 Error: authentication not enabled")
    if session.authenticated:
        return reply(503, "5.5.1 Error: already authenticated")
    if server.auth_requires_tls and not session.tls:
        return reply(530, "5.7.0 Must issue a STARTTLS command first")
    if session.mail is not None:
        return reply(503, "5.5.1 Error: MAIL transaction in progress")
    mechanism, _, initial = command.argument.strip().partition(" ")
    mechanism = mechanism.upper()
    if mechanism not in (m.upper() for m in server.auth_mechanisms):
        return reply(504, "5.5.4 Unrecognized authentication type")
    session._auth = {"mechanism": mechanism}
    if mechanism == "CRAM-MD5":
        challenge = f"<{session._run.serial()}.smtpbee@{server.hostname}>"
        session._auth["challenge"] = challenge
        return reply(334, base64.b64encode(challenge.encode()).decode())
    if initial:
        return _auth_step(session, initial)
    if mechanism == "LOGIN":
        return reply(334, _USERNAME)
    return reply(334, "")


def _auth_response(session: ServerSession, command: Command) -> Response:
    if command.argument == "*":
        session._auth = {}
        return reply(501, "5.7.0 Authentication aborted")
    return _auth_step(session, command.argument)


def _auth_step(session: ServerSession, encoded: str) -> Response:
    progress = session._auth
    mechanism = progress.get("mechanism", "")
    try:
        decoded = b"" if encoded == "=" else base64.b64decode(encoded, validate=True)
        text = decoded.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        session._auth = {}
        return reply(501, "5.5.2 Cannot decode response")
    if mechanism == "LOGIN" and "user" not in progress:
        progress["user"] = text
        return reply(334, _PASSWORD)
    session._auth = {}
    if mechanism == "LOGIN":
        return _verdict(session, progress["user"], lambda secret: secret == text)
    if mechanism == "PLAIN":
        parts = text.split("\0")
        if len(parts) != 3:
            return _verdict(session, "", lambda secret: False)
        return _verdict(session, parts[1], lambda secret: secret == parts[2])
    if mechanism == "CRAM-MD5":
        user, _, digest = text.rpartition(" ")
        challenge = progress["challenge"].encode()

        def matches(secret: str) -> bool:
            expected = hmac.new(secret.encode("utf-8"), challenge, hashlib.md5).hexdigest()
            return hmac.compare_digest(expected, digest)

        return _verdict(session, user, matches)
    if mechanism == "XOAUTH2":
        fields = dict(f.partition("=")[::2] for f in text.split("\x01") if f)
        token = fields.get("auth", "").removeprefix("Bearer ")
        return _verdict(session, fields.get("user", ""), lambda secret: secret == token)
    return reply(535, "5.7.8 Error: authentication failed")


def _verdict(session: ServerSession, user: str, check: Callable[[str], bool]) -> Response:
    users = session.server.users or {}
    if user in users and check(users[user]):
        session._auth_user = user
        return reply(235, "2.7.0 Authentication successful")
    return reply(535, "5.7.8 Error: authentication failed")


_DEFAULTS: dict[str, Callable[[ServerSession, Command], Response]] = {
    "EHLO": _hello,
    "HELO": _hello,
    "LHLO": _hello,
    "MAIL": _mail,
    "RCPT": _rcpt,
    "DATA": _data,
    "BDAT": _bdat,
    "MESSAGE": _message,
    "RSET": _fixed(reply(250, "2.0.0 Ok")),
    "NOOP": _fixed(reply(250, "2.0.0 Ok")),
    "VRFY": _fixed(reply(252, "2.0.0 Cannot VRFY user, but will accept message")),
    "EXPN": _fixed(reply(502, "5.5.1 Error: EXPN not available")),
    "HELP": _fixed(
        reply(
            214,
            "2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT",
            "2.0.0 End of HELP",
        )
    ),
    "QUIT": _quit,
    "STARTTLS": _starttls,
    "AUTH": _auth,
}
