"""The transition table, the allowed commands and their renderings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from smtpbee._state import (
    ALLOWED_COMMANDS,
    SUCCESS_TRIGGERS,
    TRANSITIONS,
    State,
    Trigger,
    Verb,
    render_state_machine,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "state-machine.md"


def render_doc() -> str:
    """What docs/state-machine.md must hold: both renderings of the table."""
    return (
        "# The client state machine\n\n"
        "Generated from `smtpbee._state` by `render_state_machine()`; "
        "tests/test_state.py checks that this file matches the code.\n"
        "`smtpbee states --format dot` gives the Graphviz form.\n\n"
        "## Mermaid\n\n"
        "```mermaid\n" + render_state_machine("mermaid") + "```\n\n"
        "## Text\n\n"
        "```text\n" + render_state_machine("text") + "```\n"
    )


def test_committed_diagram_matches_the_table() -> None:
    # To refresh after changing the table: python -c "import tests.test_state as t; t.write()"
    assert DOC.read_text(encoding="utf-8") == render_doc()


def write() -> None:  # pragma: no cover - a maintenance helper, not a test
    DOC.write_text(render_doc(), encoding="utf-8")


def test_every_state_has_an_allowed_command_entry() -> None:
    assert set(ALLOWED_COMMANDS) == set(State)


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


def test_every_trigger_is_used() -> None:
    assert {trigger for _, trigger in TRANSITIONS} == set(Trigger)


EXPECTED = {
    (State.GREETING, Trigger.GREETING_ACCEPTED): State.CONNECTED,
    (State.GREETING, Trigger.GREETING_REFUSED): State.REFUSED,
    (State.GREETING, Trigger.SERVICE_CLOSING): State.CLOSING,
    (State.GREETING, Trigger.CONNECTION_CLOSED): State.CLOSED,
    (State.CONNECTED, Trigger.HELLO_ACCEPTED): State.READY,
    (State.READY, Trigger.HELLO_ACCEPTED): State.READY,
    (State.READY, Trigger.MAIL_ACCEPTED): State.MAIL,
    (State.READY, Trigger.STARTTLS_ACCEPTED): State.TLS_HANDSHAKE,
    (State.READY, Trigger.AUTH_CHALLENGED): State.AUTH,
    (State.READY, Trigger.BDAT_REFUSED): State.READY,
    (State.AUTH, Trigger.AUTH_ENDED): State.READY,
    (State.TLS_HANDSHAKE, Trigger.TLS_ESTABLISHED): State.CONNECTED,
    (State.TLS_HANDSHAKE, Trigger.CONNECTION_CLOSED): State.CLOSED,
    (State.MAIL, Trigger.RCPT_ACCEPTED): State.RCPT,
    (State.MAIL, Trigger.DATA_ACCEPTED): State.DATA,
    (State.MAIL, Trigger.BDAT_REFUSED): State.TRANSACTION_FAILED,
    (State.RCPT, Trigger.DATA_ACCEPTED): State.DATA,
    (State.RCPT, Trigger.BDAT_ACCEPTED): State.BDAT,
    (State.RCPT, Trigger.CONTENT_ANSWERED): State.READY,
    (State.BDAT, Trigger.CONTENT_ANSWERED): State.READY,
    (State.DATA, Trigger.CONTENT_ANSWERED): State.READY,
    (State.TRANSACTION_FAILED, Trigger.RSET_ACCEPTED): State.READY,
    (State.TRANSACTION_FAILED, Trigger.BDAT_REFUSED): State.TRANSACTION_FAILED,
    (State.REFUSED, Trigger.QUIT_ACCEPTED): State.CLOSING,
    (State.DATA, Trigger.SERVICE_CLOSING): State.CLOSING,
    (State.CLOSING, Trigger.CONNECTION_CLOSED): State.CLOSED,
}


@pytest.mark.parametrize(("key", "target"), list(EXPECTED.items()), ids=str)
def test_known_transitions(key: tuple[State, Trigger], target: State) -> None:
    assert TRANSITIONS[key] is target


@pytest.mark.parametrize(
    "key",
    [
        (State.GREETING, Trigger.HELLO_ACCEPTED),
        (State.CONNECTED, Trigger.MAIL_ACCEPTED),
        (State.READY, Trigger.RCPT_ACCEPTED),
        (State.READY, Trigger.DATA_ACCEPTED),
        (State.READY, Trigger.CONTENT_ANSWERED),
        (State.MAIL, Trigger.CONTENT_ANSWERED),
        (State.MAIL, Trigger.BDAT_ACCEPTED),
        (State.DATA, Trigger.RSET_ACCEPTED),
        (State.TLS_HANDSHAKE, Trigger.SERVICE_CLOSING),
        (State.CONNECTED, Trigger.STARTTLS_ACCEPTED),
        (State.CLOSING, Trigger.SERVICE_CLOSING),
        (State.TRANSACTION_FAILED, Trigger.BDAT_ACCEPTED),
    ],
    ids=str,
)
def test_senseless_pairs_are_absent(key: tuple[State, Trigger]) -> None:
    assert key not in TRANSITIONS


def test_rset_ends_every_transaction_and_quit_and_421_close_every_open_state() -> None:
    for state in (State.MAIL, State.RCPT, State.BDAT, State.TRANSACTION_FAILED):
        assert TRANSITIONS[state, Trigger.RSET_ACCEPTED] is State.READY
    open_states = set(State) - {
        State.GREETING,
        State.TLS_HANDSHAKE,
        State.CLOSING,
        State.CLOSED,
        State.ERROR,
    }
    for state in open_states:
        assert TRANSITIONS[state, Trigger.QUIT_ACCEPTED] is State.CLOSING
        assert TRANSITIONS[state, Trigger.SERVICE_CLOSING] is State.CLOSING
        assert TRANSITIONS[state, Trigger.CONNECTION_CLOSED] is State.CLOSED


def test_allowed_commands_per_state() -> None:
    assert ALLOWED_COMMANDS[State.GREETING] == frozenset()
    assert ALLOWED_COMMANDS[State.REFUSED] == {Verb.QUIT}
    assert Verb.MAIL not in ALLOWED_COMMANDS[State.CONNECTED]
    assert {Verb.MAIL, Verb.STARTTLS, Verb.AUTH} <= ALLOWED_COMMANDS[State.READY]
    assert Verb.DATA not in ALLOWED_COMMANDS[State.MAIL]
    assert {Verb.DATA, Verb.BDAT, Verb.BDAT_LAST} <= ALLOWED_COMMANDS[State.RCPT]
    assert ALLOWED_COMMANDS[State.DATA] == {Verb.MESSAGE_DATA, Verb.END_OF_DATA}
    assert Verb.DATA not in ALLOWED_COMMANDS[State.BDAT]
    assert ALLOWED_COMMANDS[State.TRANSACTION_FAILED] == {Verb.RSET, Verb.NOOP, Verb.QUIT}
    assert ALLOWED_COMMANDS[State.AUTH] == {Verb.AUTH_RESPONSE}
    assert ALLOWED_COMMANDS[State.TLS_HANDSHAKE] == frozenset()
    assert ALLOWED_COMMANDS[State.CLOSING] == frozenset()


def test_success_triggers_lead_somewhere_from_a_state_that_allows_the_verb() -> None:
    for verb, trigger in SUCCESS_TRIGGERS.items():
        sources = [s for s, verbs in ALLOWED_COMMANDS.items() if verb in verbs]
        assert sources, verb
        assert any((s, trigger) in TRANSITIONS for s in sources), verb


def test_render_text() -> None:
    text = render_state_machine("text")
    assert text.startswith("States:\n  GREETING ")
    assert "  READY               --[250 to MAIL]--> MAIL\n" in text
    assert "  TLS_HANDSHAKE       --[TLS handshake done]--> CONNECTED\n" in text
    assert "  GREETING            (none)\n" in text
    assert "  REFUSED             QUIT\n" in text
    # One transition line per table entry.
    assert len(re.findall(r"--\[", text)) == len(TRANSITIONS)
    assert text == render_state_machine()


def test_render_mermaid() -> None:
    text = render_state_machine("mermaid")
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert lines[1] == "    [*] --> GREETING"
    assert lines[-1] == "    CLOSED --> [*]"
    assert "    RCPT --> DATA: 354 to DATA" in lines
    assert len(lines) == len(TRANSITIONS) + 3


def test_render_dot() -> None:
    text = render_state_machine("dot")
    assert text.startswith("digraph smtp_client {\n")
    assert text.endswith("}\n")
    assert '    MAIL -> TRANSACTION_FAILED [label="4xx/5xx to BDAT"];' in text
    assert text.count(" -> ") == len(TRANSITIONS)
    # Graphviz labels are double-quoted: no label may contain a quote.
    assert all('"' not in trigger.value for trigger in Trigger)


def test_render_is_deterministic_and_ordered() -> None:
    lines = [line for line in render_state_machine("mermaid").splitlines() if ": " in line]
    sources = [line.split()[0] for line in lines]
    order = [state.name for state in State]
    assert sources == sorted(sources, key=order.index)


@pytest.mark.parametrize("fmt", ["svg", "", "TEXT", "Mermaid"])
def test_render_unknown_format(fmt: str) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        render_state_machine(fmt)
