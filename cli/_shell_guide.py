# smtpbee/cli/_shell_guide
#
# What `smtpbee shell` says about each command and each reply.
#
# Theory of operation
# -------------------
# What a reply code *means for the command it answers* (success, go on,
# refusal, closing, protocol violation; the trigger it fires; the RFC it comes
# from; whether the RFC lists that refusal) is read from the core's own rule
# table (smtpbee._state: REPLY_RULES, GREETING_RULE, classify_reply), so the
# shell can never explain a reply differently from how the client acts on it.
# The state it leads to is the connection's (the caller passes it in).
#
# What this module adds is what the table does not hold: the meaning of the
# digits of a reply code in general (RFC 5321 §4.2.1), the RFC 3463 enhanced
# status codes with the details registered since (RFC 5248's registry), and,
# for a learner, what each command is for and how it is typed.
#
# Nothing here does I/O; every function returns lines of text.
from __future__ import annotations

import textwrap
from collections.abc import Mapping
from types import MappingProxyType

from smtpbee import EnhancedStatus, ReplyKind, State, Verb
from smtpbee._state import GREETING_RULE, REPLY_RULES, classify_reply

__all__ = [
    "COMMANDS",
    "SHORTCUTS",
    "TYPED_VERBS",
    "Usage",
    "enhanced_meaning",
    "explain_reply",
    "explain_verb",
    "state_line",
    "wrap",
]

WIDTH = 78
INDENT = "   "


class Usage:
    """How a command is typed in the shell, and what it is for."""

    __slots__ = ("purpose", "syntax")

    def __init__(self, syntax: str, purpose: str) -> None:
        self.syntax = syntax
        self.purpose = purpose


COMMANDS: Mapping[Verb, Usage] = MappingProxyType(
    {
        Verb.EHLO: Usage(
            "EHLO your.name",
            "introduce the client and ask which extensions the server offers",
        ),
        Verb.HELO: Usage("HELO your.name", "the old introduction, without extensions"),
        Verb.MAIL: Usage(
            "MAIL FROM:<address> [SIZE=n BODY=8BITMIME ...]",
            "open a mail transaction, naming the envelope sender (<> for none)",
        ),
        Verb.RCPT: Usage(
            "RCPT TO:<address> [NOTIFY=... ORCPT=...]",
            "add one envelope recipient (one command each)",
        ),
        Verb.DATA: Usage("DATA", "ask to send the message; then type it, ending with '.'"),
        Verb.RSET: Usage("RSET", "abandon the mail transaction"),
        Verb.NOOP: Usage("NOOP", "do nothing: is the server still there?"),
        Verb.VRFY: Usage("VRFY name [SMTPUTF8]", "ask whether a user or mailbox exists"),
        Verb.EXPN: Usage("EXPN list [SMTPUTF8]", "ask for the members of a mailing list"),
        Verb.HELP: Usage("HELP [topic]", "ask the server for help"),
        Verb.STARTTLS: Usage("STARTTLS", "switch to TLS (the shortcut `tls` does it all)"),
        Verb.AUTH: Usage(
            "AUTH MECHANISM [initial-response]",
            "log in by hand in base64 (the shortcut `auth` does it for you)",
        ),
        Verb.QUIT: Usage("QUIT", "end the session"),
    }
)
"""The commands typed at the shell's prompt, in the order `?` lists them."""

TYPED_VERBS: Mapping[str, Verb] = MappingProxyType({verb.value: verb for verb in COMMANDS})
"""Keyword -> Verb, for the commands typed at the prompt."""

SHORTCUTS: Mapping[str, tuple[Usage, Verb]] = MappingProxyType(
    {
        "send": (
            Usage(
                "send [FROM [TO ...]] [--subject TEXT] [--body TEXT]",
                "a whole mail transaction; asks for what is missing",
            ),
            Verb.MAIL,
        ),
        "tls": (Usage("tls", "STARTTLS, the TLS handshake and EHLO again"), Verb.STARTTLS),
        "auth": (
            Usage(
                "auth [USER] [--mechanism NAME] [--insecure]",
                "log in; the password is asked for and never shown",
            ),
            Verb.AUTH,
        ),
    }
)
"""The shell's shortcuts, each with the command that must be legal for it."""

# RFC 5321 §4.2.1: what the first and the second digit of a reply code say.
_SECOND_DIGIT = (
    "syntax",
    "information",
    "the connection",
    "unspecified",
    "unspecified",
    "the mail system",
)

_FIRST_DIGIT = {
    2: "positive completion, done",
    3: "positive intermediate, the server waits for more",
    4: "transient negative, trying again later may work",
    5: "permanent negative, do not try this again as it is",
}

_KINDS = {
    ReplyKind.SUCCESS: "success",
    ReplyKind.INTERMEDIATE: "go on",
    ReplyKind.TRANSIENT: "a transient refusal (4xx)",
    ReplyKind.PERMANENT: "a permanent refusal (5xx)",
    ReplyKind.CLOSING: "the server is closing the connection",
    ReplyKind.VIOLATION: "a protocol violation: no valid answer to this",
}

# RFC 3463 §3: class, subject and detail.
_ENHANCED_CLASSES = {2: "success", 4: "persistent transient failure", 5: "permanent failure"}
_ENHANCED_SUBJECTS = {
    0: "other or undefined",
    1: "addressing",
    2: "mailbox",
    3: "mail system",
    4: "network and routing",
    5: "mail delivery protocol",
    6: "message content or media",
    7: "security or policy",
}
# RFC 3463 §3.1-3.8 and the later entries of the IANA registry (RFC 5248):
# RFC 3886, 4468, 4954, 5248, 6531, 6710, 7293, 7372, 7505, 8689.
_ENHANCED_DETAILS = {
    (0, 0): "other undefined status",
    (1, 0): "other address status",
    (1, 1): "bad destination mailbox address",
    (1, 2): "bad destination system address",
    (1, 3): "bad destination mailbox address syntax",
    (1, 4): "destination mailbox address ambiguous",
    (1, 5): "destination address valid",
    (1, 6): "destination mailbox has moved, no forwarding address",
    (1, 7): "bad sender's mailbox address syntax",
    (1, 8): "bad sender's system address",
    (1, 9): "message relayed to a non-compliant mailer",
    (1, 10): "recipient address has a null MX",
    (2, 0): "other or undefined mailbox status",
    (2, 1): "mailbox disabled, not accepting messages",
    (2, 2): "mailbox full",
    (2, 3): "message length exceeds an administrative limit",
    (2, 4): "mailing list expansion problem",
    (3, 0): "other or undefined mail system status",
    (3, 1): "mail system full",
    (3, 2): "system not accepting network messages",
    (3, 3): "system not capable of selected features",
    (3, 4): "message too big for the system",
    (3, 5): "system incorrectly configured",
    (3, 6): "requested priority was changed",
    (4, 0): "other or undefined network or routing status",
    (4, 1): "no answer from host",
    (4, 2): "bad connection",
    (4, 3): "directory server failure",
    (4, 4): "unable to route",
    (4, 5): "mail system congestion",
    (4, 6): "routing loop detected",
    (4, 7): "delivery time expired",
    (5, 0): "other or undefined protocol status",
    (5, 1): "invalid command",
    (5, 2): "syntax error",
    (5, 3): "too many recipients",
    (5, 4): "invalid command arguments",
    (5, 5): "wrong protocol version",
    (5, 6): "authentication exchange line is too long",
    (6, 0): "other or undefined media error",
    (6, 1): "media not supported",
    (6, 2): "conversion required and prohibited",
    (6, 3): "conversion required but not supported",
    (6, 4): "conversion with loss performed",
    (6, 5): "conversion failed",
    (6, 6): "message content not available",
    (6, 7): "non-ASCII addresses not permitted for that sender or recipient",
    (6, 8): "UTF-8 string reply required, but not permitted by the client",
    (6, 9): "UTF-8 header message cannot be transferred to a recipient",
    (7, 0): "other or undefined security status",
    (7, 1): "delivery not authorized, message refused",
    (7, 2): "mailing list expansion prohibited",
    (7, 3): "security conversion required but not possible",
    (7, 4): "security features not supported",
    (7, 5): "cryptographic failure",
    (7, 6): "cryptographic algorithm not supported",
    (7, 7): "message integrity failure",
    (7, 8): "authentication credentials invalid",
    (7, 9): "authentication mechanism is too weak",
    (7, 10): "encryption needed",
    (7, 11): "encryption required for the requested authentication mechanism",
    (7, 12): "a password transition is needed",
    (7, 13): "user account disabled",
    (7, 14): "trust relationship required",
    (7, 15): "priority level is too low",
    (7, 16): "message is too big for the specified priority",
    (7, 17): "mailbox owner has changed",
    (7, 18): "domain owner has changed",
    (7, 19): "RRVS test cannot be completed",
    (7, 20): "no passing DKIM signature found",
    (7, 21): "no acceptable DKIM signature found",
    (7, 22): "no valid author-matched DKIM signature found",
    (7, 23): "SPF validation failed",
    (7, 24): "SPF validation error",
    (7, 25): "reverse DNS validation failed",
    (7, 26): "multiple authentication checks failed",
    (7, 27): "sender address has a null MX",
    (7, 30): "REQUIRETLS support required",
}


def wrap(text: str, indent: str = INDENT) -> list[str]:
    """text filled to the shell's width, every line indented."""
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent)


def enhanced_meaning(status: EnhancedStatus) -> str:
    """What an RFC 3463 enhanced status code says, e.g. ``5.1.1: permanent failure, ...``."""
    klass = _ENHANCED_CLASSES.get(status.klass, "an unknown class")
    subject = _ENHANCED_SUBJECTS.get(status.subject, "an unknown subject")
    detail = _ENHANCED_DETAILS.get((status.subject, status.detail))
    detail_text = detail if detail is not None else "a detail not in the registry"
    return f"{status}: {klass}; {subject}: {detail_text}"


def _code_meaning(code: int) -> str:
    first = _FIRST_DIGIT.get(code // 100, "not a valid class")
    second = (code // 10) % 10
    about = _SECOND_DIGIT[second] if second < len(_SECOND_DIGIT) else "not defined"
    return f"{code // 100}xx: {first}; x{second}x: {about} (RFC 5321 §4.2.1)."


def explain_reply(
    answering: Verb | None,
    code: int,
    enhanced: EnhancedStatus | None,
    *,
    greeting: bool = False,
) -> list[str]:
    """What a reply means for the command it answers (``greeting``: the server's first reply).

    ``answering`` None and not ``greeting``: a reply nothing asked for, or one
    to a line sent outside the state machine (raw).
    """
    lines: list[str] = []
    if greeting:
        rule, what = GREETING_RULE, "the greeting"
    elif answering is not None:
        rule, what = REPLY_RULES[answering], answering.value
    else:
        lines += wrap(f"{code}: a reply the client's state machine did not ask for.")
        rule = None
    if rule is not None:
        kind, trigger = classify_reply(rule, code)
        sentence = f"{code} to {what}: {_KINDS[kind]}"
        if kind in (ReplyKind.TRANSIENT, ReplyKind.PERMANENT):
            if code in rule.listed_refusals:
                sentence += ", one the RFC lists for it"
            else:
                sentence += ", read by its first digit (the RFC does not list it here)"
        if trigger is not None:
            sentence += f"; it fires {trigger.name} ({trigger.value})"
        sentence += f". Source: {rule.source}."
        lines += wrap(sentence)
    lines += wrap(_code_meaning(code))
    if enhanced is not None:
        lines += wrap(enhanced_meaning(enhanced) + " (RFC 3463).")
    return lines


def state_line(before: State, after: State) -> str:
    """``[state A -> B: what B means]``, or ``[state A: ...]`` when nothing moved."""
    if before is after:
        return f"{INDENT}[state {after.name}: {after.value}]"
    return f"{INDENT}[state {before.name} -> {after.name}: {after.value}]"


def explain_verb(keyword: str) -> Usage | None:
    """The usage of a command or shortcut typed at the prompt, or None if unknown."""
    verb = TYPED_VERBS.get(keyword.upper())
    if verb is not None:
        return COMMANDS[verb]
    shortcut = SHORTCUTS.get(keyword.lower())
    return shortcut[0] if shortcut is not None else None
