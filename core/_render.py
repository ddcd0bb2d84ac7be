# smtpbee/_render
#
# The declarations of _state, rendered for people: the state diagram (text,
# Mermaid, Graphviz) and the verb x reply-code matrix. Every label is
# generated from the reply rules, so the diagram says exactly which codes fire
# each transition; docs/ holds the committed renderings, kept in step by
# tests/test_state.py.
from __future__ import annotations

from ._state import (
    ALLOWED_COMMANDS,
    GREETING_RULE,
    REPLY_RULES,
    TRANSITIONS,
    ReplyKind,
    ReplyRule,
    State,
    Trigger,
    Verb,
    classify_reply,
)

__all__ = ["render_reply_matrix", "render_state_machine", "trigger_label"]

_T = Trigger


def _code_groups(rule: ReplyRule, trigger: Trigger) -> list[str]:
    """The codes under a rule that fire trigger, as "250/251", "4xx", "5xx"."""
    codes = [
        str(c) for c, t in sorted({**rule.success, **rule.intermediate}.items()) if t is trigger
    ]
    if rule.on_transient is trigger:
        codes.append("4xx")
    if rule.on_permanent is trigger:
        codes.append("5xx")
    return codes


def trigger_label(trigger: Trigger) -> str:
    """Exactly which replies fire a trigger, generated from the rules."""
    if trigger is _T.TLS_ESTABLISHED:
        return "TLS handshake done"
    if trigger is _T.CONNECTION_CLOSED:
        return "connection closed"
    if trigger is _T.SERVICE_CLOSING:
        return "421 to anything; 221 to anything but QUIT"
    parts: list[str] = []
    greeting = _code_groups(GREETING_RULE, trigger)
    if greeting:
        parts.append(f"{'/'.join(greeting)} greeting")
    # Verbs sharing one rule (EHLO and HELO, AUTH and its responses) share a label.
    by_codes: dict[str, list[str]] = {}
    lmtp = False
    for verb, rule in REPLY_RULES.items():
        codes = _code_groups(rule, trigger)
        if codes:
            by_codes.setdefault("/".join(codes), []).append(verb.name)
        lmtp = lmtp or rule.lmtp_final is trigger
    parts += [f"{codes} to {'/'.join(verbs)}" for codes, verbs in by_codes.items()]
    if lmtp:
        parts.append("with LMTP, after the last reply per recipient")
    return "; ".join(parts)


def _edges() -> list[tuple[State, Trigger, State]]:
    states, triggers = list(State), list(Trigger)
    return sorted(
        ((src, trig, dst) for (src, trig), dst in TRANSITIONS.items()),
        key=lambda edge: (states.index(edge[0]), triggers.index(edge[1])),
    )


def render_state_machine(fmt: str = "text") -> str:
    """Render the transition table as ``text``, ``mermaid`` or ``dot`` (Graphviz).

    Raises:
        ValueError: for an unknown format.
    """
    edges = _edges()
    label = {trigger: trigger_label(trigger) for trigger in Trigger}
    if fmt == "text":
        lines = ["States:"]
        lines += [f"  {state.name:<19} {state.value}" for state in State]
        lines += ["", "Triggers (421 is never a refusal: it closes):"]
        lines += [f"  {t.name:<19} {label[t]}" for t in Trigger]
        lines += ["", "Transitions:"]
        lines += [f"  {s.name:<19} --[{t.name}]--> {d.name}" for s, t, d in edges]
        lines += ["", "Commands allowed in each state:"]
        for state, verbs in ALLOWED_COMMANDS.items():
            names = ", ".join(v.value for v in Verb if v in verbs) or "(none)"
            lines.append(f"  {state.name:<19} {names}")
        return "\n".join(lines) + "\n"
    if fmt == "mermaid":
        lines = ["stateDiagram-v2", f"    [*] --> {State.GREETING.name}"]
        lines += [f"    {s.name} --> {d.name}: {label[t]}" for s, t, d in edges]
        lines.append(f"    {State.CLOSED.name} --> [*]")
        return "\n".join(lines) + "\n"
    if fmt == "dot":
        lines = ["digraph smtp_client {", "    rankdir=LR;", "    node [shape=box];"]
        lines += [f'    {s.name} -> {d.name} [label="{label[t]}"];' for s, t, d in edges]
        lines.append("}")
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown format {fmt!r}: choose text, mermaid or dot")


_MATRIX_CODES = (211, 214, 220, 221, 235, 250, 251, 252, 334, 354, 421)
_KIND_MARKS = {
    ReplyKind.SUCCESS: "ok",
    ReplyKind.INTERMEDIATE: "go on",
    ReplyKind.TRANSIENT: "4xx",
    ReplyKind.PERMANENT: "5xx",
    ReplyKind.CLOSING: "closing",
    ReplyKind.VIOLATION: "✗",
}


def _matrix_cell(rule: ReplyRule, code: int) -> str:
    kind, trigger = classify_reply(rule, code)
    mark = _KIND_MARKS[kind]
    return f"{mark} → {trigger.name}" if trigger is not None else mark


def render_reply_matrix() -> str:
    """The verb x reply-code matrix as a Markdown table, from the rules.

    A cell says what the code means (ok, go on, 4xx/5xx refusal, closing, ✗ for
    a protocol violation) and the trigger it fires. "other 2xx" and "other 3xx"
    stand for every code of that class the row does not name.
    """
    rows: list[tuple[str, ReplyRule]] = [("greeting", GREETING_RULE)]
    rows += [(verb.value, rule) for verb, rule in REPLY_RULES.items() if rule.answered]
    header = ["reply to", *map(str, _MATRIX_CODES), "other 2xx", "other 3xx", "4xx", "5xx"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, rule in rows:
        named = set(rule.success) | set(rule.intermediate) | set(_MATRIX_CODES)
        other_2xx = next(c for c in range(200, 300) if c not in named)
        other_3xx = next(c for c in range(300, 400) if c not in named)
        cells = [_matrix_cell(rule, code) for code in (*_MATRIX_CODES, other_2xx, other_3xx)]
        cells += [_matrix_cell(rule, 450), _matrix_cell(rule, 550)]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    lines += ["", "| reply to | source | refusal codes the RFC lists |", "|---|---|---|"]
    for name, rule in rows:
        listed = ", ".join(map(str, sorted(rule.listed_refusals))) or "—"
        lines.append(f"| {name} | {rule.source} | {listed} |")
    return "\n".join(lines) + "\n"
