# smtpbee/_state
#
# The client's state machine, as data. Everything that decides *which state the
# session is in* lives in this file, and this file knows nothing of bytes,
# replies or extensions: it is two tables and a few lookups.
#
#   TRANSITIONS  (state, trigger) -> new state
#       A trigger is something the server said (a 250 to MAIL, a 354, a 421, the
#       connection closing) or, for TLS_ESTABLISHED, something the caller
#       reports. A (state, trigger) pair missing from the table is a reply that
#       makes no sense where the session is: the connection treats it as a
#       remote protocol error. ERROR has no way out.
#
#   ALLOWED_COMMANDS  state -> the verbs the client may send in that state
#       Checked against the *projected* state: the state the session will be
#       in once every command already sent has been answered with success.
#       Without pipelining the projection is the current state; with it, a
#       client can send MAIL, RCPT, RCPT, DATA in one go because each is legal
#       in the state the previous one projects.
#
# Replies that leave the state as it is (a 550 to RCPT, a 250 to NOOP) are not
# triggers: the connection simply does not fire anything for them.
#
# The same tables render as text, Mermaid and Graphviz (render_state_machine):
# the diagram a learner reads is the machine the code runs.
from __future__ import annotations

import enum
from collections.abc import Mapping

__all__ = [
    "ALLOWED_COMMANDS",
    "TRANSITIONS",
    "State",
    "Trigger",
    "Verb",
    "render_state_machine",
]


class _IdentityHashed(enum.Enum):
    # Members are singletons: identity hashing is right, and far cheaper than
    # Enum's default (hashing the name) on the per-command path, where states,
    # verbs and triggers are dictionary keys.
    __hash__ = object.__hash__


class State(_IdentityHashed):
    """Where the client is in the session (as confirmed by the server's replies)."""

    GREETING = "connected, waiting for the server's greeting"
    REFUSED = "the server refused service in its greeting: only QUIT is left"
    CONNECTED = "greeted: say EHLO (or HELO, or LHLO for LMTP)"
    READY = "introduced: no mail transaction open"
    MAIL = "MAIL FROM accepted: name at least one recipient"
    RCPT = "at least one recipient accepted: send more, or the content"
    DATA = "354 received: sending the message content"
    BDAT = "sending the content in BDAT chunks"
    TRANSACTION_FAILED = "a BDAT chunk was refused: only RSET ends the transaction"
    AUTH = "in an AUTH exchange: answer the server's challenge"
    TLS_HANDSHAKE = "STARTTLS accepted: the TLS handshake must happen now"
    CLOSING = "the server is closing the connection"
    CLOSED = "the connection is closed"
    ERROR = "a protocol error ended the session"


class Verb(_IdentityHashed):
    """What the client can send: the SMTP commands plus the pieces of content."""

    EHLO = "EHLO"
    HELO = "HELO"
    LHLO = "LHLO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    MESSAGE_DATA = "message content"
    END_OF_DATA = "end of data (CRLF.CRLF)"
    BDAT = "BDAT"
    BDAT_LAST = "BDAT LAST"
    RSET = "RSET"
    NOOP = "NOOP"
    VRFY = "VRFY"
    EXPN = "EXPN"
    HELP = "HELP"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    AUTH_RESPONSE = "AUTH response"
    QUIT = "QUIT"


class Trigger(_IdentityHashed):
    """What moves the session from one state to another."""

    GREETING_ACCEPTED = "220 greeting"
    GREETING_REFUSED = "554 greeting"
    HELLO_ACCEPTED = "250 to EHLO/HELO/LHLO"
    MAIL_ACCEPTED = "250 to MAIL"
    RCPT_ACCEPTED = "250/251 to RCPT"
    DATA_ACCEPTED = "354 to DATA"
    CONTENT_ANSWERED = "final reply to the content"
    BDAT_ACCEPTED = "250 to BDAT"
    BDAT_REFUSED = "4xx/5xx to BDAT"
    RSET_ACCEPTED = "250 to RSET"
    STARTTLS_ACCEPTED = "220 to STARTTLS"
    TLS_ESTABLISHED = "TLS handshake done"
    AUTH_CHALLENGED = "334 challenge"
    AUTH_ENDED = "final reply to AUTH"
    QUIT_ACCEPTED = "221 to QUIT"
    SERVICE_CLOSING = "421 to anything"
    CONNECTION_CLOSED = "connection closed"


_S = State
_T = Trigger

_IN_TRANSACTION = (_S.MAIL, _S.RCPT, _S.BDAT, _S.TRANSACTION_FAILED)
_OPEN = (_S.CONNECTED, _S.READY, *_IN_TRANSACTION, _S.DATA, _S.AUTH)


def _build_transitions() -> dict[tuple[State, Trigger], State]:
    table: dict[tuple[State, Trigger], State] = {
        (_S.GREETING, _T.GREETING_ACCEPTED): _S.CONNECTED,
        (_S.GREETING, _T.GREETING_REFUSED): _S.REFUSED,
        (_S.CONNECTED, _T.HELLO_ACCEPTED): _S.READY,
        (_S.CONNECTED, _T.RSET_ACCEPTED): _S.CONNECTED,
        # A new EHLO is an implicit RSET (RFC 5321 §4.1.4).
        (_S.READY, _T.HELLO_ACCEPTED): _S.READY,
        (_S.READY, _T.MAIL_ACCEPTED): _S.MAIL,
        (_S.READY, _T.RSET_ACCEPTED): _S.READY,
        (_S.READY, _T.STARTTLS_ACCEPTED): _S.TLS_HANDSHAKE,
        (_S.READY, _T.AUTH_CHALLENGED): _S.AUTH,
        (_S.READY, _T.AUTH_ENDED): _S.READY,
        # A BDAT pipelined behind a refused MAIL is refused too: nothing is open.
        (_S.READY, _T.BDAT_REFUSED): _S.READY,
        (_S.AUTH, _T.AUTH_CHALLENGED): _S.AUTH,
        (_S.AUTH, _T.AUTH_ENDED): _S.READY,
        (_S.TLS_HANDSHAKE, _T.TLS_ESTABLISHED): _S.CONNECTED,
        (_S.MAIL, _T.RCPT_ACCEPTED): _S.RCPT,
        (_S.RCPT, _T.RCPT_ACCEPTED): _S.RCPT,
        (_S.RCPT, _T.DATA_ACCEPTED): _S.DATA,
        # RFC 2920 §3.1: a server may accept DATA after refusing every
        # (pipelined) recipient; the client then sends the terminator alone.
        (_S.MAIL, _T.DATA_ACCEPTED): _S.DATA,
        (_S.DATA, _T.CONTENT_ANSWERED): _S.READY,
        (_S.RCPT, _T.BDAT_ACCEPTED): _S.BDAT,
        (_S.BDAT, _T.BDAT_ACCEPTED): _S.BDAT,
        (_S.RCPT, _T.CONTENT_ANSWERED): _S.READY,
        (_S.BDAT, _T.CONTENT_ANSWERED): _S.READY,
        # RFC 3030 §2: after a refused chunk no further BDAT may be sent.
        (_S.MAIL, _T.BDAT_REFUSED): _S.TRANSACTION_FAILED,
        (_S.RCPT, _T.BDAT_REFUSED): _S.TRANSACTION_FAILED,
        (_S.BDAT, _T.BDAT_REFUSED): _S.TRANSACTION_FAILED,
        (_S.TRANSACTION_FAILED, _T.BDAT_REFUSED): _S.TRANSACTION_FAILED,
        (_S.CLOSING, _T.CONNECTION_CLOSED): _S.CLOSED,
    }
    for state in _IN_TRANSACTION:
        table[state, _T.RSET_ACCEPTED] = _S.READY
    for state in (_S.REFUSED, *_OPEN):
        table[state, _T.QUIT_ACCEPTED] = _S.CLOSING
    for state in (_S.GREETING, _S.REFUSED, *_OPEN):
        table[state, _T.SERVICE_CLOSING] = _S.CLOSING
    for state in (_S.GREETING, _S.REFUSED, *_OPEN, _S.TLS_HANDSHAKE):
        table[state, _T.CONNECTION_CLOSED] = _S.CLOSED
    return table


TRANSITIONS: Mapping[tuple[State, Trigger], State] = _build_transitions()

_V = Verb
_BETWEEN_TRANSACTIONS = frozenset({_V.RSET, _V.NOOP, _V.HELP, _V.QUIT})

ALLOWED_COMMANDS: Mapping[State, frozenset[Verb]] = {
    _S.GREETING: frozenset(),
    _S.REFUSED: frozenset({_V.QUIT}),
    _S.CONNECTED: _BETWEEN_TRANSACTIONS | {_V.EHLO, _V.HELO, _V.LHLO},
    _S.READY: _BETWEEN_TRANSACTIONS
    | {_V.EHLO, _V.HELO, _V.LHLO, _V.MAIL, _V.VRFY, _V.EXPN, _V.STARTTLS, _V.AUTH},
    _S.MAIL: frozenset({_V.RCPT, _V.RSET, _V.NOOP, _V.QUIT}),
    _S.RCPT: frozenset({_V.RCPT, _V.DATA, _V.BDAT, _V.BDAT_LAST, _V.RSET, _V.NOOP, _V.QUIT}),
    _S.DATA: frozenset({_V.MESSAGE_DATA, _V.END_OF_DATA}),
    _S.BDAT: frozenset({_V.BDAT, _V.BDAT_LAST, _V.RSET, _V.NOOP, _V.QUIT}),
    _S.TRANSACTION_FAILED: frozenset({_V.RSET, _V.NOOP, _V.QUIT}),
    _S.AUTH: frozenset({_V.AUTH_RESPONSE}),
    _S.TLS_HANDSHAKE: frozenset(),
    _S.CLOSING: frozenset(),
    _S.CLOSED: frozenset(),
    _S.ERROR: frozenset(),
}

# The state a command leads to once the server says yes: what the pipelining
# projection assumes. Commands absent here leave the state unchanged on success.
SUCCESS_TRIGGERS: Mapping[Verb, Trigger] = {
    _V.EHLO: _T.HELLO_ACCEPTED,
    _V.HELO: _T.HELLO_ACCEPTED,
    _V.LHLO: _T.HELLO_ACCEPTED,
    _V.MAIL: _T.MAIL_ACCEPTED,
    _V.RCPT: _T.RCPT_ACCEPTED,
    _V.DATA: _T.DATA_ACCEPTED,
    _V.END_OF_DATA: _T.CONTENT_ANSWERED,
    _V.BDAT: _T.BDAT_ACCEPTED,
    _V.BDAT_LAST: _T.CONTENT_ANSWERED,
    _V.RSET: _T.RSET_ACCEPTED,
    _V.STARTTLS: _T.STARTTLS_ACCEPTED,
    _V.AUTH: _T.AUTH_ENDED,
    _V.AUTH_RESPONSE: _T.AUTH_ENDED,
    _V.QUIT: _T.QUIT_ACCEPTED,
}


def render_state_machine(fmt: str = "text") -> str:
    """Render the transition table as ``text``, ``mermaid`` or ``dot`` (Graphviz).

    Raises:
        ValueError: for an unknown format.
    """
    edges = sorted(
        ((src, trig, dst) for (src, trig), dst in TRANSITIONS.items()),
        key=lambda edge: (list(State).index(edge[0]), list(Trigger).index(edge[1])),
    )
    if fmt == "text":
        lines = ["States:"]
        lines += [f"  {state.name:<19} {state.value}" for state in State]
        lines.append("")
        lines.append("Transitions:")
        lines += [f"  {s.name:<19} --[{t.value}]--> {d.name}" for s, t, d in edges]
        lines.append("")
        lines.append("Commands allowed in each state:")
        for state, verbs in ALLOWED_COMMANDS.items():
            names = ", ".join(v.value for v in Verb if v in verbs) or "(none)"
            lines.append(f"  {state.name:<19} {names}")
        return "\n".join(lines) + "\n"
    if fmt == "mermaid":
        lines = ["stateDiagram-v2", f"    [*] --> {State.GREETING.name}"]
        lines += [f"    {s.name} --> {d.name}: {t.value}" for s, t, d in edges]
        lines.append(f"    {State.CLOSED.name} --> [*]")
        return "\n".join(lines) + "\n"
    if fmt == "dot":
        lines = ["digraph smtp_client {", "    rankdir=LR;", "    node [shape=box];"]
        lines += [f'    {s.name} -> {d.name} [label="{t.value}"];' for s, t, d in edges]
        lines.append("}")
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown format {fmt!r}: choose text, mermaid or dot")
