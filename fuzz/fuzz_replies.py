# fuzz/fuzz_replies
#
# Coverage-guided fuzzing of the reply side of Connection: after a canned,
# well-behaved prefix (greeting, EHLO, a pipelined transaction, ...) the fuzz
# input is the rest of what the server sends.
#
# Input layout: byte 0 picks the scenario (byte % number of scenarios), byte 1
# picks the split point (as a fraction of the payload), and the rest is the
# payload: the server's bytes. Seed files start with an ASCII digit, so that
# they stay readable.
#
# Invariants checked on every input:
#   * only smtpbee's RemoteProtocolError (and subclasses) escapes next_event;
#   * after such an error the connection is in State.ERROR, refuses to send
#     and refuses to produce more events;
#   * the payload fed whole and fed in two pieces (then EOF) gives the same
#     events, the same error class and the same final state;
#   * every event says what the declarations in smtpbee._state say of its
#     reply: a ReplyReceived's kind is classify_reply's for its command (a
#     success only on the codes the rule lists, never a violation), 354 comes
#     only as ContentRequested to DATA, 334 only as an AUTH challenge.
"""Atheris harness: a Connection fed hostile server bytes, whole and split."""

from __future__ import annotations

from collections.abc import Callable

from _harness import clone, instrumented, main

with instrumented():
    from smtpbee._commands import (
        Auth,
        Bdat,
        Data,
        Ehlo,
        EndOfData,
        Lhlo,
        Mail,
        MessageData,
        Noop,
        Quit,
        Rcpt,
        StartTLS,
    )
    from smtpbee._connection import Connection
    from smtpbee._errors import LocalProtocolError, RemoteProtocolError
    from smtpbee._events import (
        NEED_DATA,
        PAUSED,
        AuthChallengeReceived,
        ContentRequested,
        Event,
        GreetingReceived,
        ReplyReceived,
    )
    from smtpbee._state import GREETING_RULE, REPLY_RULES, ReplyKind, State, Verb, classify_reply

__all__ = ["SCENARIOS", "feed_and_drain", "test_one_input"]

GREETING = b"220 fuzz.test ESMTP\r\n"
EHLO_REPLY = (
    b"250-fuzz.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-8BITMIME\r\n"
    b"250-SIZE 100000\r\n250-AUTH PLAIN LOGIN\r\n250-STARTTLS\r\n250-SMTPUTF8\r\n250 DSN\r\n"
)
# Outcome of feeding: the events seen, then the class of the error that ended
# the stream (None if none), then the state the connection ended in.
Outcome = tuple[list[Event | str], type[BaseException] | None, State]


def _answered(conn: Connection, server_bytes: bytes) -> Connection:
    conn.receive_data(server_bytes)
    while conn.next_event() is not NEED_DATA:
        pass
    return conn


def _greeted(*, lmtp: bool = False) -> Connection:
    return _answered(Connection(lmtp=lmtp), GREETING)


def _introduced(*, lmtp: bool = False) -> Connection:
    conn = _greeted(lmtp=lmtp)
    conn.send(Lhlo("client.test") if lmtp else Ehlo("client.test"))
    return _answered(conn, EHLO_REPLY)


def _fresh() -> Connection:
    return Connection()


def _ehlo_pending() -> Connection:
    conn = _greeted()
    conn.send(Ehlo("client.test"))
    return conn


def _envelope_pending() -> Connection:
    conn = _introduced()
    conn.send_all(
        [
            Mail(sender="a@fuzz.test"),
            Rcpt(recipient="b@fuzz.test"),
            Rcpt(recipient="c@fuzz.test"),
            Data(),
        ]
    )
    return conn


def _content_pending() -> Connection:
    conn = _introduced()
    conn.send_all([Mail(sender="a@fuzz.test"), Rcpt(recipient="b@fuzz.test"), Data()])
    _answered(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
    conn.send(MessageData(b"Subject: x\r\n\r\n.hello\r\n"))
    conn.send(EndOfData())
    return conn


def _auth_pending() -> Connection:
    conn = _introduced()
    conn.send(Auth("LOGIN"))
    return conn


def _bdat_pending() -> Connection:
    conn = _introduced()
    conn.send_all(
        [Mail(sender="a@fuzz.test"), Rcpt(recipient="b@fuzz.test"), Bdat(b"hi\r\n", last=True)]
    )
    return conn


def _lmtp_envelope_pending() -> Connection:
    conn = _introduced(lmtp=True)
    conn.send_all(
        [
            Mail(sender="a@fuzz.test"),
            Rcpt(recipient="b@fuzz.test"),
            Rcpt(recipient="c@fuzz.test"),
            Data(),
        ]
    )
    return conn


def _lmtp_content_pending() -> Connection:
    conn = _lmtp_envelope_pending()
    _answered(conn, b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    conn.send(MessageData(b"hello\r\n"))
    conn.send(EndOfData())
    return conn


def _small_commands_pending() -> Connection:
    conn = _introduced()
    conn.send(Noop())
    return conn


def _starttls_pending() -> Connection:
    conn = _introduced()
    conn.send(StartTLS())
    return conn


SCENARIOS: tuple[Callable[[], Connection], ...] = (
    _fresh,
    _ehlo_pending,
    _envelope_pending,
    _content_pending,
    _auth_pending,
    _bdat_pending,
    _lmtp_envelope_pending,
    _lmtp_content_pending,
    _small_commands_pending,
    _starttls_pending,
)


def _drain(conn: Connection, events: list[Event | str]) -> bool:
    """Collect events until more data is needed; False once the stream can go no further."""
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return True
        if event is PAUSED:
            # The handshake never happens here: whatever arrives next must be
            # refused as an injection, so keep feeding.
            if not events or events[-1] != "PAUSED":
                events.append("PAUSED")
            return True
        assert isinstance(event, Event), event
        _check_meaning(event)
        events.append(event)
        if conn.state is State.CLOSED:
            return False


def _check_meaning(event: Event) -> None:
    """The event says what the declarations say of its reply code."""
    if isinstance(event, GreetingReceived):
        kind, _ = classify_reply(GREETING_RULE, event.reply.code)
        assert event.kind is kind, event
        assert event.accepted == (event.reply.code == 220), event
    elif isinstance(event, ReplyReceived):
        if event.command is None:  # a 421 nobody asked for
            assert event.closing and event.reply.code == 421, event
            return
        kind, _ = classify_reply(REPLY_RULES[event.command.verb], event.reply.code)
        assert event.kind is kind, event
        assert kind not in (ReplyKind.VIOLATION, ReplyKind.INTERMEDIATE), event
    elif isinstance(event, ContentRequested):
        assert event.reply.code == 354 and event.command.verb is Verb.DATA, event
        assert not event.accepted
    elif isinstance(event, AuthChallengeReceived):
        assert event.reply.code == 334 and not event.accepted, event


def feed_and_drain(conn: Connection, pieces: list[bytes]) -> Outcome:
    """Feed the pieces (then EOF), draining events after each; check error hygiene."""
    events: list[Event | str] = []
    try:
        # An empty piece would mean EOF: a split at either end is no split.
        for piece in [*(p for p in pieces if p), b""]:
            conn.receive_data(piece)
            if not _drain(conn, events):
                break
    except RemoteProtocolError as exc:
        _check_dead(conn)
        return events, type(exc), conn.state
    return events, None, conn.state


def _check_dead(conn: Connection) -> None:
    assert conn.state is State.ERROR, conn.state
    assert not conn.pending
    assert not conn.allowed_commands()
    for attempt in (lambda: conn.send(Quit()), conn.next_event):
        try:
            attempt()
        except LocalProtocolError:
            continue
        raise AssertionError("a dead connection went on")


# Each scenario's connection is built once and cloned for every input: building it runs the
# same instrumented code every time (greeting, EHLO, a pipelined envelope) and cost more than
# the input itself. Every _RECHECK_EVERY-th input, the first one included (so a replayed input
# always is), also runs on freshly built connections and must give the same outcomes.
_TEMPLATES: tuple[Connection | None, ...] = tuple(
    None if make is _fresh else make() for make in SCENARIOS
)
_RECHECK_EVERY = 1000
_inputs_seen = 0


def _start(index: int) -> Connection:
    template = _TEMPLATES[index]
    return SCENARIOS[index]() if template is None else clone(template)


def test_one_input(data: bytes) -> None:
    global _inputs_seen
    if len(data) < 2:
        return
    index = data[0] % len(SCENARIOS)
    payload = data[2:]
    split = data[1] * len(payload) // 255
    two = [payload[:split], payload[split:]]
    whole = feed_and_drain(_start(index), [payload])
    pieces = feed_and_drain(_start(index), two)
    if _inputs_seen % _RECHECK_EVERY == 0:
        make = SCENARIOS[index]
        assert feed_and_drain(make(), [payload]) == whole, "a clone differs from a fresh build"
        assert feed_and_drain(make(), two) == pieces, "a clone differs from a fresh build"
    _inputs_seen += 1
    if SCENARIOS[index] is _starttls_pending:
        # Whether the injected bytes are seen with the 220 or after the pause
        # depends on the split; either way the session must die.
        injected = whole[1] is not None
        assert injected == (pieces[1] is not None), (whole, pieces)
        return
    assert whole == pieces, (split, whole, pieces)


if __name__ == "__main__":
    main(test_one_input)
