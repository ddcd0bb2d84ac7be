"""The declarations of _state: the reply rules, the transitions, their renderings.

The exhaustive tests check every (state, verb, reply code) cell twice: the
compiled lookups against a slow reading of the declarations, and a live
Connection, driven into the state with the verb awaiting its reply, against
the outcome the declarations promise (an event or a typed error, never a
hang or a foreign exception).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from smtpbee import (
    NEED_DATA,
    Auth,
    AuthCancel,
    AuthChallengeReceived,
    AuthResponse,
    Bdat,
    Command,
    Connection,
    ContentRequested,
    Data,
    Ehlo,
    EndOfData,
    Expn,
    GreetingReceived,
    Helo,
    Help,
    Lhlo,
    Mail,
    MessageData,
    Noop,
    Quit,
    Rcpt,
    RemoteProtocolError,
    ReplyReceived,
    Rset,
    StartTLS,
    Vrfy,
    Xclient,
)
from smtpbee._connection import _CELLS, _GREETING_CELLS
from smtpbee._render import render_reply_matrix, render_state_machine, trigger_label
from smtpbee._state import (
    ALLOWED_COMMANDS,
    GREETING_RULE,
    REPLY_RULES,
    TRANSITIONS,
    ReplyKind,
    ReplyRule,
    State,
    Trigger,
    Verb,
)

DOCS = Path(__file__).resolve().parent.parent / "docs"
# RFC 5321 §4.2: the first digit is 2-5, the second 0-5 (the reader refuses the rest).
CODES = [code for code in range(200, 600) if code // 10 % 10 <= 5]


def render_state_doc() -> str:
    """What docs/state-machine.md must hold: both renderings of the table."""
    return (
        "# The client state machine\n\n"
        "Generated from `smtpbee._state` by `render_state_machine()`; "
        "tests/test_state.py checks that this file matches the code.\n"
        "`smtpbee states --format dot` gives the Graphviz form; "
        "[reply-codes.md](reply-codes.md) says what every reply code means.\n\n"
        "## Mermaid\n\n"
        "```mermaid\n" + render_state_machine("mermaid") + "```\n\n"
        "## Text\n\n"
        "```text\n" + render_state_machine("text") + "```\n"
    )


def render_matrix_doc() -> str:
    """What docs/reply-codes.md must hold: the verb x reply-code matrix."""
    return (
        "# What every reply code means\n\n"
        "Generated from the reply rules of `smtpbee._state` by `render_reply_matrix()`; "
        "tests/test_state.py checks that this file matches the code.\n\n"
        "Each cell: **ok** (success), **go on** (354, 334), **4xx**/**5xx** (a refusal), "
        "**closing** (the server is closing the connection) or **✗** (a protocol "
        "violation: `RemoteProtocolError`, and the session ends), with the trigger the "
        "reply fires in the [state machine](state-machine.md). The 4xx and 5xx columns "
        "stand for every code of their class but 421; other 2xx and 3xx codes are "
        "violations wherever the row does not name them.\n\n" + render_reply_matrix()
    )


def test_committed_docs_match_the_declarations() -> None:
    # To refresh after changing the table: python -c "import tests.test_state as t; t.write()"
    assert (DOCS / "state-machine.md").read_text(encoding="utf-8") == render_state_doc()
    assert (DOCS / "reply-codes.md").read_text(encoding="utf-8") == render_matrix_doc()


def write() -> None:  # pragma: no cover - a maintenance helper, not a test
    (DOCS / "state-machine.md").write_text(render_state_doc(), encoding="utf-8")
    (DOCS / "reply-codes.md").write_text(render_matrix_doc(), encoding="utf-8")


# ----------------------------------------------------------------------------
# The tables themselves


def test_every_state_has_an_allowed_command_entry_and_every_verb_a_rule() -> None:
    assert set(ALLOWED_COMMANDS) == set(State)
    assert set(REPLY_RULES) == set(Verb)


def test_error_is_absorbing_and_closed_is_final() -> None:
    assert not [key for key in TRANSITIONS if key[0] is State.ERROR]
    assert [key for key in TRANSITIONS if key[0] is State.CLOSED] == []
    assert ALLOWED_COMMANDS[State.ERROR] == frozenset()
    assert ALLOWED_COMMANDS[State.CLOSED] == frozenset()
    assert State.ERROR not in TRANSITIONS.values()


def test_every_state_but_error_is_reachable_from_greeting() -> None:
    seen = {State.GREETING}
    frontier = [State.GREETING]
    while frontier:
        state = frontier.pop()
        for (src, _), dst in TRANSITIONS.items():
            if src is state and dst not in seen:
                seen.add(dst)
                frontier.append(dst)
    assert seen == set(State) - {State.ERROR}


def test_every_trigger_is_used_and_fired_by_a_rule_or_the_caller() -> None:
    assert {trigger for _, trigger in TRANSITIONS} == set(Trigger)
    fired = {t for rule in (GREETING_RULE, *REPLY_RULES.values()) for t in _triggers(rule)}
    assert set(Trigger) - fired == {Trigger.TLS_ESTABLISHED, Trigger.CONNECTION_CLOSED}


def _triggers(rule: ReplyRule) -> set[Trigger]:
    found = {*rule.success.values(), *rule.intermediate.values()}
    found |= {rule.on_transient, rule.on_permanent, rule.lmtp_final}
    if rule.closing:
        found.add(Trigger.SERVICE_CLOSING)
    return {t for t in found if t is not None}


def test_the_rfc_success_codes() -> None:
    # RFC 5321 §4.3.2, RFC 3207 §4, RFC 4954 §4, RFC 3030 §2, RFC 2033 §4.
    success = {verb: sorted(rule.success) for verb, rule in REPLY_RULES.items()}
    assert success[Verb.EHLO] == success[Verb.HELO] == success[Verb.LHLO] == [250]
    assert success[Verb.MAIL] == [250]
    assert success[Verb.RCPT] == [250, 251]
    assert success[Verb.DATA] == [] and REPLY_RULES[Verb.DATA].intermediate.keys() == {354}
    assert success[Verb.END_OF_DATA] == success[Verb.BDAT] == success[Verb.BDAT_LAST] == [250]
    assert success[Verb.VRFY] == [250, 251, 252]
    assert success[Verb.EXPN] == [250, 252]
    assert success[Verb.HELP] == [211, 214]
    assert success[Verb.NOOP] == success[Verb.RSET] == [250]
    assert success[Verb.QUIT] == [221]
    assert success[Verb.STARTTLS] == [220]
    assert success[Verb.AUTH] == success[Verb.AUTH_RESPONSE] == [235]
    assert success[Verb.AUTH_CANCEL] == []
    assert success[Verb.XCLIENT] == [220]  # Postfix XCLIENT_README
    assert sorted(GREETING_RULE.success) == [220]


def test_every_rule_names_its_source_and_content_has_no_reply() -> None:
    sources = [r.source for r in (GREETING_RULE, *REPLY_RULES.values())]
    assert all(re.search(r"RFC \d+|Postfix [A-Z]+_README", source) for source in sources)
    assert [v for v, r in REPLY_RULES.items() if not r.answered] == [Verb.MESSAGE_DATA]


def test_pipelining_groups_follow_rfc_2920() -> None:
    ends_group = {verb for verb, rule in REPLY_RULES.items() if rule.ends_group}
    may_continue = set(Verb) - ends_group
    assert may_continue == {
        Verb.MAIL,
        Verb.RCPT,
        Verb.RSET,
        Verb.MESSAGE_DATA,
        Verb.END_OF_DATA,
        Verb.BDAT,
        Verb.BDAT_LAST,
    }


def test_labels_say_exactly_which_replies_fire_each_trigger() -> None:
    assert trigger_label(Trigger.MAIL_ACCEPTED) == "250 to MAIL"
    assert trigger_label(Trigger.RCPT_ACCEPTED) == "250/251 to RCPT"
    assert trigger_label(Trigger.GREETING_DEFERRED) == "4xx greeting"
    assert trigger_label(Trigger.GREETING_REFUSED) == "5xx greeting"
    assert trigger_label(Trigger.BDAT_REFUSED) == "4xx/5xx to BDAT/BDAT_LAST"
    assert trigger_label(Trigger.SERVICE_CLOSING) == "421 to anything; 221 to anything but QUIT"
    assert "with LMTP" in trigger_label(Trigger.CONTENT_ANSWERED)
    assert all('"' not in trigger_label(t) for t in Trigger)  # Graphviz labels are quoted


# ----------------------------------------------------------------------------
# Exhaustive: compiled lookups against a slow reading of the declarations


def reference(rule: ReplyRule, code: int) -> tuple[ReplyKind, Trigger | None]:
    """What the declarations say a code means, read the long way round."""
    for success_code, trigger in rule.success.items():
        if code == success_code:
            return ReplyKind.SUCCESS, trigger
    if code in rule.closing:
        return ReplyKind.CLOSING, Trigger.SERVICE_CLOSING
    for intermediate_code, trigger in rule.intermediate.items():
        if code == intermediate_code:
            return ReplyKind.INTERMEDIATE, trigger
    if str(code).startswith("4"):
        return ReplyKind.TRANSIENT, rule.on_transient
    if str(code).startswith("5"):
        return ReplyKind.PERMANENT, rule.on_permanent
    return ReplyKind.VIOLATION, None


def test_every_compiled_cell_agrees_with_the_declarations() -> None:
    cells = [(GREETING_RULE, _GREETING_CELLS), *((REPLY_RULES[v], c) for v, c in _CELLS.items())]
    for rule, compiled in cells:
        for code in CODES:
            cell = compiled[code]
            assert (cell.kind, cell.trigger) == reference(rule, code), (rule.source, code)


# ----------------------------------------------------------------------------
# Exhaustive: a live Connection in every state a verb can await its reply in

EHLO_REPLY = (
    b"250-mx.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-STARTTLS\r\n"
    b"250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250-XCLIENT NAME ADDR\r\n250 SMTPUTF8\r\n"
)
MAIL = Mail(sender="a@x.test")
RCPT = Rcpt(recipient="b@x.test")


@dataclass(frozen=True)
class Setup:
    """A way to a state with a command awaiting its reply."""

    name: str
    state: State
    verb: Verb
    steps: tuple[bytes | Sequence[Command], ...]
    lmtp: bool = False

    def connection(self) -> Connection:
        conn = Connection(lmtp=self.lmtp)
        for step in self.steps:
            if isinstance(step, bytes):
                conn.receive_data(step)
                while conn.next_event() is not NEED_DATA:
                    pass
            else:
                conn.send_all(step)
        assert conn.state is self.state and conn.pending[0].verb is self.verb, self.name
        return conn


GREET = b"220 mx.test\r\n"
READY = (GREET, [Ehlo("c.test")], EHLO_REPLY)
IN_MAIL = (*READY, [MAIL], b"250 ok\r\n")
IN_RCPT = (*IN_MAIL, [RCPT], b"250 ok\r\n")
IN_BDAT = (*IN_RCPT, [Bdat(b"x")], b"250 ok\r\n")
FAILED = (*IN_RCPT, [Bdat(b"x")], b"552 no\r\n")
IN_DATA = (*IN_RCPT, [Data()], b"354 go\r\n")
IN_AUTH = (*READY, [Auth("LOGIN")], b"334 VXNlcm5hbWU6\r\n")
LMTP_READY = (GREET, [Lhlo("c.test")], EHLO_REPLY)
LMTP_RCPT = (*LMTP_READY, [MAIL], b"250 ok\r\n", [RCPT], b"250 ok\r\n")

SETUPS = [
    Setup("EHLO greeted", State.CONNECTED, Verb.EHLO, (GREET, [Ehlo("c.test")])),
    Setup("HELO greeted", State.CONNECTED, Verb.HELO, (GREET, [Helo("c.test")])),
    Setup("RSET greeted", State.CONNECTED, Verb.RSET, (GREET, [Rset()])),
    Setup("NOOP greeted", State.CONNECTED, Verb.NOOP, (GREET, [Noop()])),
    Setup("HELP greeted", State.CONNECTED, Verb.HELP, (GREET, [Help()])),
    Setup("QUIT greeted", State.CONNECTED, Verb.QUIT, (GREET, [Quit()])),
    Setup("QUIT refused", State.REFUSED, Verb.QUIT, (b"554 no\r\n", [Quit()])),
    Setup("LHLO", State.CONNECTED, Verb.LHLO, (GREET, [Lhlo("c.test")]), lmtp=True),
    Setup("EHLO again", State.READY, Verb.EHLO, (*READY, [Ehlo("c.test")])),
    Setup("MAIL", State.READY, Verb.MAIL, (*READY, [MAIL])),
    Setup("RSET", State.READY, Verb.RSET, (*READY, [Rset()])),
    Setup("NOOP", State.READY, Verb.NOOP, (*READY, [Noop()])),
    Setup("VRFY", State.READY, Verb.VRFY, (*READY, [Vrfy("postmaster")])),
    Setup("EXPN", State.READY, Verb.EXPN, (*READY, [Expn("staff")])),
    Setup("HELP", State.READY, Verb.HELP, (*READY, [Help("MAIL")])),
    Setup("STARTTLS", State.READY, Verb.STARTTLS, (*READY, [StartTLS()])),
    Setup("AUTH", State.READY, Verb.AUTH, (*READY, [Auth("PLAIN", b"\0u\0p")])),
    Setup("QUIT", State.READY, Verb.QUIT, (*READY, [Quit()])),
    Setup("XCLIENT", State.READY, Verb.XCLIENT, (*READY, [Xclient({"ADDR": "192.0.2.1"})])),
    Setup("RCPT", State.MAIL, Verb.RCPT, (*IN_MAIL, [RCPT])),
    Setup("RSET in MAIL", State.MAIL, Verb.RSET, (*IN_MAIL, [Rset()])),
    Setup("NOOP in MAIL", State.MAIL, Verb.NOOP, (*IN_MAIL, [Noop()])),
    Setup("RCPT again", State.RCPT, Verb.RCPT, (*IN_RCPT, [RCPT])),
    Setup("DATA", State.RCPT, Verb.DATA, (*IN_RCPT, [Data()])),
    Setup("BDAT", State.RCPT, Verb.BDAT, (*IN_RCPT, [Bdat(b"x")])),
    Setup("BDAT LAST", State.RCPT, Verb.BDAT_LAST, (*IN_RCPT, [Bdat(b"x", last=True)])),
    Setup("QUIT in RCPT", State.RCPT, Verb.QUIT, (*IN_RCPT, [Quit()])),
    Setup(
        "end of data", State.DATA, Verb.END_OF_DATA, (*IN_DATA, [MessageData(b"x"), EndOfData()])
    ),
    Setup("BDAT more", State.BDAT, Verb.BDAT, (*IN_BDAT, [Bdat(b"y")])),
    Setup("BDAT LAST after", State.BDAT, Verb.BDAT_LAST, (*IN_BDAT, [Bdat(b"y", last=True)])),
    Setup("RSET in BDAT", State.BDAT, Verb.RSET, (*IN_BDAT, [Rset()])),
    Setup("RSET failed", State.TRANSACTION_FAILED, Verb.RSET, (*FAILED, [Rset()])),
    Setup("NOOP failed", State.TRANSACTION_FAILED, Verb.NOOP, (*FAILED, [Noop()])),
    Setup("AUTH response", State.AUTH, Verb.AUTH_RESPONSE, (*IN_AUTH, [AuthResponse(b"u")])),
    Setup("AUTH cancel", State.AUTH, Verb.AUTH_CANCEL, (*IN_AUTH, [AuthCancel()])),
    # Pipelined: the verb awaits its reply in the state its predecessors left.
    Setup(
        "RCPT behind a refused MAIL", State.READY, Verb.RCPT, (*READY, [MAIL, RCPT], b"550 no\r\n")
    ),
    Setup(
        "DATA behind refused RCPTs",
        State.MAIL,
        Verb.DATA,
        (*READY, [MAIL, RCPT, Data()], b"250 ok\r\n550 no\r\n"),
    ),
    Setup(
        "BDAT behind a refused MAIL",
        State.READY,
        Verb.BDAT_LAST,
        (*READY, [MAIL, RCPT, Bdat(b"x", last=True)], b"550 no\r\n550 no\r\n"),
    ),
    Setup(
        "LMTP end of data",
        State.DATA,
        Verb.END_OF_DATA,
        (*LMTP_RCPT, [Data()], b"354 go\r\n", [EndOfData()]),
        lmtp=True,
    ),
    Setup(
        "LMTP BDAT LAST",
        State.RCPT,
        Verb.BDAT_LAST,
        (*LMTP_RCPT, [Bdat(b"x", last=True)]),
        lmtp=True,
    ),
]


def test_every_verb_is_tried_in_some_state() -> None:
    assert {setup.verb for setup in SETUPS} == set(Verb) - {Verb.MESSAGE_DATA}


def expected_state(setup: Setup, kind: ReplyKind, trigger: Trigger | None) -> State | None:
    """The state the declarations lead to, or None for a protocol violation."""
    if kind is ReplyKind.VIOLATION:
        return None
    rule = REPLY_RULES[setup.verb]
    if setup.lmtp and rule.lmtp_final is not None and kind is not ReplyKind.CLOSING:
        trigger = rule.lmtp_final  # one accepted recipient: the last reply is the first
    if trigger is None:
        return setup.state
    return TRANSITIONS.get((setup.state, trigger))


_EVENTS: dict[ReplyKind, Callable[[object], bool]] = {
    ReplyKind.SUCCESS: lambda e: isinstance(e, ReplyReceived) and e.accepted,
    ReplyKind.TRANSIENT: lambda e: isinstance(e, ReplyReceived) and e.kind is ReplyKind.TRANSIENT,
    ReplyKind.PERMANENT: lambda e: isinstance(e, ReplyReceived) and e.kind is ReplyKind.PERMANENT,
    ReplyKind.CLOSING: lambda e: isinstance(e, ReplyReceived) and e.closing,
    ReplyKind.INTERMEDIATE: lambda e: isinstance(e, ContentRequested | AuthChallengeReceived),
}


@pytest.mark.parametrize("setup", SETUPS, ids=lambda setup: setup.name)
def test_every_reply_code_in_every_state_ends_in_its_documented_outcome(setup: Setup) -> None:
    for code in CODES:
        conn = setup.connection()
        kind, trigger = reference(REPLY_RULES[setup.verb], code)
        target = expected_state(setup, kind, trigger)
        conn.receive_data(b"%d reply text\r\n" % code)
        if target is None:
            with pytest.raises(RemoteProtocolError):
                conn.next_event()
            assert conn.state is State.ERROR, (setup.name, code)
            continue
        event = conn.next_event()
        assert _EVENTS[kind](event), (setup.name, code, event)
        assert conn.state is target, (setup.name, code)


def test_every_greeting_code_ends_in_its_documented_outcome() -> None:
    for code in CODES:
        conn = Connection()
        conn.receive_data(b"%d hello\r\n" % code)
        kind, trigger = reference(GREETING_RULE, code)
        if trigger is None:
            with pytest.raises(RemoteProtocolError, match="greeting"):
                conn.next_event()
            continue
        event = conn.next_event()
        assert isinstance(event, GreetingReceived) and event.kind is kind
        assert conn.state is TRANSITIONS[State.GREETING, trigger]


# ----------------------------------------------------------------------------
# Renderings


def test_render_text() -> None:
    text = render_state_machine("text")
    assert text.startswith("States:\n  GREETING ")
    assert "  READY               --[MAIL_ACCEPTED]--> MAIL\n" in text
    assert "  MAIL_ACCEPTED       250 to MAIL\n" in text
    assert "  TLS_HANDSHAKE       --[TLS_ESTABLISHED]--> CONNECTED\n" in text
    assert "  GREETING            (none)\n" in text
    assert "  REFUSED             QUIT\n" in text
    assert len(re.findall(r"--\[", text)) == len(TRANSITIONS)
    assert text == render_state_machine()


def test_render_mermaid() -> None:
    lines = render_state_machine("mermaid").splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert lines[1] == "    [*] --> GREETING"
    assert lines[-1] == "    CLOSED --> [*]"
    assert "    RCPT --> DATA: 354 to DATA" in lines
    assert "    GREETING --> CLOSING: 4xx greeting" in lines
    assert len(lines) == len(TRANSITIONS) + 3


def test_render_dot() -> None:
    text = render_state_machine("dot")
    assert text.startswith("digraph smtp_client {\n")
    assert text.endswith("}\n")
    assert '    MAIL -> TRANSACTION_FAILED [label="4xx/5xx to BDAT/BDAT_LAST"];' in text
    assert text.count(" -> ") == len(TRANSITIONS)


def test_render_is_deterministic_and_ordered() -> None:
    lines = [line for line in render_state_machine("mermaid").splitlines() if ": " in line]
    sources = [line.split()[0] for line in lines]
    order = [state.name for state in State]
    assert sources == sorted(sources, key=order.index)


@pytest.mark.parametrize("fmt", ["svg", "", "TEXT", "Mermaid"])
def test_render_unknown_format(fmt: str) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        render_state_machine(fmt)


def test_reply_matrix_rows_and_cells() -> None:
    matrix = render_reply_matrix()
    codes_table = matrix.split("\n\n")[0]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in codes_table.splitlines()}
    assert (
        "| MAIL | ✗ | ✗ | ✗ | closing → SERVICE_CLOSING | ✗ | ok → MAIL_ACCEPTED |"
        in (rows["MAIL"])
    )
    assert "go on → DATA_ACCEPTED" in rows["DATA"]
    assert "ok → QUIT_ACCEPTED" in rows["QUIT"]
    assert "message content" not in rows  # content gets no reply of its own
