# smtpbee/_unsafe
#
# The unsafe path: bytes exactly as the caller wrote them, for testing how a
# server copes with malformed or out-of-order commands and raw bodies.
#
# Theory of operation
# -------------------
# Nothing on the safe path leads here: a ClientSession has no method that
# writes through this module (its quit() only asks it to end a session that
# is already unchecked), and the transports reach it only through their
# explicit ``client.unsafe`` object. The first use puts the Connection in
# unchecked mode (see _connection): the state machine did not see these
# bytes, so from then on it refuses every command, and the replies are read
# with the same strict parser and limits, under the same timeouts, but matched
# to nothing. Only QUIT (written here) and closing are left to the safe API.
#
# Everything written this way is marked unsafe: "C!" in the transcript (and
# in the session log).
#
# start_tls() is the handshake without the STARTTLS around it: the caller
# wrote STARTTLS (with whatever behind it) and read the 220 on this path, so
# the probe for STARTTLS command injection (CVE-2011-0411) can pipeline
# plaintext commands behind it and see whether they are answered under TLS.
# Bytes already sent by the server before the handshake are the attack the
# other way round (response injection): the session fails, as on the safe path.
from __future__ import annotations

from ._errors import (
    ConnectionLostError,
    InvalidInputError,
    LocalProtocolError,
    RemoteProtocolError,
    SMTPTimeoutError,
    StartTLSInjectionError,
    reply_error,
)
from ._events import NEED_DATA, ConnectionClosed
from ._exchange import Exchange, log_reply
from ._replies import Reply, escape_text
from ._requests import Poll, Procedure, Read, UpgradeTLS
from ._state import Phase, ReplyKind, Verb

__all__ = ["UnsafeSession", "unchecked_quit"]

_UNSAFE = "C!"


class UnsafeSession:
    """The unsafe procedures over a session's Exchange (``client.unsafe`` wraps them).

    Each method returns a procedure, as ClientSession's do.
    """

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    def send_raw(self, data: bytes, *, replies: int = 1) -> Procedure[list[Reply]]:
        """Write ``data`` exactly, then read ``replies`` replies (0: read nothing).

        Raises:
            InvalidInputError: data is not bytes, or replies is negative.
            LocalProtocolError: the session is over, or replies are pending.
            ConnectionLostError: the server closed before the replies came.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidInputError(f"send_raw writes bytes, not {type(data).__name__}")
        if isinstance(replies, bool) or not isinstance(replies, int) or replies < 0:
            raise InvalidInputError(f"replies must be a number >= 0, not {replies!r}")
        data = bytes(data)
        self._exchange.conn.go_unchecked()
        _log_raw(self._exchange, data)
        yield from _write(self._exchange, data, Phase.COMMAND)
        answers: list[Reply] = []
        for _ in range(replies):
            answers.append((yield from _read_reply(self._exchange, Phase.COMMAND)))
        return answers

    def send_line(self, line: str | bytes, *, replies: int = 1) -> Procedure[list[Reply]]:
        """Write ``line`` and CRLF (the line may hold anything: CR, LF, NUL...)."""
        if isinstance(line, str):
            data = line.encode("utf-8", "surrogateescape")
        elif isinstance(line, bytes | bytearray):
            data = bytes(line)
        else:
            raise InvalidInputError(f"send_line writes str or bytes, not {type(line).__name__}")
        return self.send_raw(data + b"\r\n", replies=replies)

    def data_raw(self, body: bytes, *, terminator: bytes = b"\r\n.\r\n") -> Procedure[Reply]:
        """DATA, the 354, ``body`` exactly (no dot-stuffing, no line-end fixup), ``terminator``.

        Returns the final reply.

        Raises:
            ReplyError: DATA was refused (nothing of the body was written).
            RemoteProtocolError: DATA was answered with something else than
                354 or a refusal.
        """
        for name, value in (("body", body), ("terminator", terminator)):
            if not isinstance(value, bytes | bytearray):
                raise InvalidInputError(f"the {name} must be bytes, not {type(value).__name__}")
        exchange = self._exchange
        conn = exchange.conn
        conn.go_unchecked()
        exchange.log(_UNSAFE, "DATA")
        yield from _write(exchange, b"DATA\r\n", Phase.COMMAND)
        opener = yield from _read_reply(exchange, Phase.DATA_INITIATION)
        kind = conn.judge(Verb.DATA, opener)
        if kind is not ReplyKind.INTERMEDIATE:
            if kind is ReplyKind.CLOSING:
                conn.end_unchecked()
            if kind in (ReplyKind.TRANSIENT, ReplyKind.PERMANENT, ReplyKind.CLOSING):
                raise reply_error(opener, command="DATA", phase="DATA (unsafe)")
            raise exchange.fail(RemoteProtocolError(f"{opener.code} is not a reply to DATA"))
        exchange.log(_UNSAFE, f"<{len(body)} octets of raw content>")
        exchange.log(_UNSAFE, f"<end of content: {_escaped(bytes(terminator))}>")
        yield from _write(exchange, bytes(body) + bytes(terminator), Phase.DATA_BLOCK)
        return (yield from _read_reply(exchange, Phase.DATA_TERMINATION))

    def start_tls(self) -> Procedure[bool]:
        """The TLS handshake now: after STARTTLS was sent on this path and its 220 read.

        Nothing is written before the handshake and nothing is read after
        it: the EHLO that should follow, if any, is the caller's too. Like
        the other methods it leaves the session unchecked. Probing a server
        for STARTTLS command injection (CVE-2011-0411), on a client:

            [ready] = client.unsafe.send_raw(b"STARTTLS\\r\\nNOOP\\r\\n")  # the 220
            client.unsafe.start_tls()
            [first] = client.unsafe.send_line("XPROBE")
            # A 250 answers the NOOP sent in plaintext (XPROBE cannot
            # succeed): the server executed it under TLS.

        The handshake uses the transport's TLS settings (a client's
        ssl_context and server_hostname). It is logged as on the safe path:
        "<TLS handshake done>" in the transcript, a ``tls-handshake`` record
        in the session log. Afterwards the connection counts as TLS and what
        the server offered before is forgotten.

        Returns whether the server's certificate was verified.

        Raises:
            LocalProtocolError: the session is over, replies are pending, or
                TLS is active already.
            StartTLSInjectionError: the server sent something after the last
                reply read and before the handshake (read it first if it is
                the 220); shown in the transcript as far as it makes a reply.
            ConnectionLostError: the server closed the connection, or the
                handshake failed (TLSVerificationError: the certificate).
            SMTPTimeoutError: the handshake took too long.
        """
        exchange = self._exchange
        conn = exchange.conn
        if conn.tls_active:
            raise LocalProtocolError("TLS is already active: there is nothing to upgrade")
        conn.go_unchecked()
        yield from _refuse_early_bytes(exchange)
        try:
            verified = bool((yield UpgradeTLS(exchange.timeouts.tls_handshake)))
        except (SMTPTimeoutError, ConnectionLostError) as exc:
            # A failed handshake leaves the stream in an unknown state.
            raise exchange.fail(exc)  # noqa: B904 - fail() chose the cause
        exchange.handshake_done(verified)
        conn.unchecked_tls_established()
        return verified


def unchecked_quit(exchange: Exchange) -> Procedure[Reply]:
    """QUIT in an unchecked session: write it, read one reply, end the session."""
    exchange.log("C", "QUIT")
    yield from _write(exchange, b"QUIT\r\n", Phase.COMMAND, unsafe=False)
    reply = yield from _read_reply(exchange, Phase.COMMAND)
    exchange.conn.end_unchecked()
    return reply


def _escaped(data: bytes) -> str:
    return escape_text(data.decode("utf-8", "surrogateescape"))


def _log_raw(exchange: Exchange, data: bytes) -> None:
    """One "C!" line per CRLF-ended line; a last line without CRLF says so."""
    lines = data.split(b"\r\n")
    partial = lines.pop()
    for line in lines:
        exchange.log(_UNSAFE, _escaped(line))
    if partial:
        exchange.log(_UNSAFE, f"{_escaped(partial)} <no CRLF>")


def _write(
    exchange: Exchange, data: bytes, phase: Phase, *, unsafe: bool = True
) -> Procedure[None]:
    return exchange.write(data, phase, unsafe=unsafe)


def _refuse_early_bytes(exchange: Exchange) -> Procedure[None]:
    """Fail the session if the server has sent anything that no reply read took."""
    conn = exchange.conn
    if not conn.unread:
        try:
            data = yield Poll()
        except (SMTPTimeoutError, ConnectionLostError) as exc:
            raise exchange.fail(exc)  # noqa: B904 - fail() chose the cause
        if data is None:
            return
        if not data:
            lost = ConnectionLostError("the server closed the connection before the TLS handshake")
            raise exchange.fail(lost)
        conn.receive_data(data)
    said = "bytes that make no whole reply"
    try:
        early = conn.next_unchecked_reply()
    except RemoteProtocolError:
        early = None  # not even a reply: the bytes are reported all the same
    if isinstance(early, Reply):
        _log_received(exchange, early)
        said = f"a reply ({early.code})"
    injection = StartTLSInjectionError(
        f"the server sent {said} before the TLS handshake, after the last reply read:"
        " possible STARTTLS response injection"
    )
    raise exchange.fail(injection)


def _log_received(exchange: Exchange, reply: Reply) -> None:
    log_reply(exchange.log, reply)
    log = exchange.session_log
    if log is not None:
        # The reply's wire form: the exchange keeps the exact bytes only of
        # the replies it reads itself.
        conn = exchange.conn
        log.received(reply.to_bytes(), reply, tls=conn.tls_active, state=conn.state.name)


def _read_reply(exchange: Exchange, phase: Phase) -> Procedure[Reply]:
    conn = exchange.conn
    timeout = exchange.timeouts.for_phase(phase)
    new_wait = True
    while True:
        try:
            event = conn.next_unchecked_reply()
        except RemoteProtocolError as exc:
            raise exchange.fail(exc)  # noqa: B904 - fail() chose the cause
        if isinstance(event, Reply):
            _log_received(exchange, event)
            return event
        if isinstance(event, ConnectionClosed):
            raise exchange.fail(ConnectionLostError("the server closed the connection"))
        assert event is NEED_DATA
        try:
            data = yield Read(phase, timeout, new_wait)
        except (SMTPTimeoutError, ConnectionLostError) as exc:
            raise exchange.fail(exc)  # noqa: B904 - fail() chose the cause
        conn.receive_data(data)
        new_wait = False
