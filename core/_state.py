# smtpbee/_state
#
# The client's state machine and what every reply means, as data. Everything
# that decides where the session goes lives in this file; it knows nothing of
# bytes or extensions. The connection compiles these declarations at import
# (see compile_reply_cells) and interprets them; no layer above it compares
# reply codes.
#
#   REPLY_RULES  verb -> ReplyRule (and GREETING_RULE for the connection itself)
#       For each command: the exact codes that are success (RFC 5321 §4.3.2
#       and the extensions' RFCs), the 3xx that ask for more (354, 334), the
#       trigger each fires, the trigger of a 4xx or 5xx refusal, whether the
#       command must end a pipelined group (RFC 2920 §3.1), whether a success
#       starts the session over (XCLIENT: EHLO again, what the server offered
#       is void), and which timeout phase its reply is awaited in. Codes the
#       rule does not name:
#         * 421 to anything, and 221 to anything but QUIT: the server is
#           closing (SERVICE_CLOSING);
#         * any other 4xx or 5xx: a refusal, read by its first digit
#           (RFC 5321 §4.2.1: an unknown code is read by its class);
#         * any other 2xx or 3xx: a protocol violation, never a success.
#
#   TRANSITIONS  (state, trigger) -> new state
#       A trigger fired where the table has no entry (a 250 to RCPT after the
#       MAIL was refused) is a protocol violation. ERROR has no way out.
#
#   ALLOWED_COMMANDS  state -> the verbs the client may send in that state
#       Checked against the *projected* state: the state the session will be
#       in once every command already sent has been answered with success, so
#       MAIL, RCPT, RCPT, DATA fit one pipelined group.
#
# The same declarations render (in _render) as the state diagram, whose
# labels are generated from the rules so they say exactly which codes fire
# each transition, and as the verb x reply-code matrix: what a learner reads
# is what the code runs.
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "ALLOWED_COMMANDS",
    "GREETING_RULE",
    "REPLY_RULES",
    "TRANSITIONS",
    "Phase",
    "ReplyCell",
    "ReplyKind",
    "ReplyRule",
    "State",
    "Trigger",
    "Verb",
    "classify_reply",
    "compile_reply_cells",
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
    AUTH_CANCEL = "AUTH cancel (*)"
    XCLIENT = "XCLIENT"
    QUIT = "QUIT"


class Trigger(_IdentityHashed):
    """What moves the session from one state to another.

    The value is a short name; trigger_label() says exactly which replies fire it.
    """

    GREETING_ACCEPTED = "greeting accepted"
    GREETING_REFUSED = "greeting refused"
    GREETING_DEFERRED = "greeting deferred"
    HELLO_ACCEPTED = "hello accepted"
    MAIL_ACCEPTED = "sender accepted"
    RCPT_ACCEPTED = "recipient accepted"
    DATA_ACCEPTED = "content invited"
    CONTENT_ANSWERED = "content answered"
    BDAT_ACCEPTED = "chunk accepted"
    BDAT_REFUSED = "chunk refused"
    RSET_ACCEPTED = "reset"
    STARTTLS_ACCEPTED = "STARTTLS accepted"
    TLS_ESTABLISHED = "TLS handshake done"
    AUTH_CHALLENGED = "AUTH challenge"
    AUTH_ENDED = "AUTH ended"
    XCLIENT_ACCEPTED = "XCLIENT accepted"
    QUIT_ACCEPTED = "QUIT accepted"
    SERVICE_CLOSING = "service closing"
    CONNECTION_CLOSED = "connection closed"


class Phase(enum.Enum):
    """What the client waits for, with the RFC 5321 §4.5.3.2 timeout in seconds.

    TLS_HANDSHAKE has no RFC figure; a minute is ample for any real server.
    """

    GREETING = ("the 220 greeting", 300.0)
    MAIL = ("the reply to MAIL", 300.0)
    RCPT = ("the reply to RCPT", 300.0)
    DATA_INITIATION = ("the 354 reply to DATA", 120.0)
    DATA_BLOCK = ("a block of content to go out", 180.0)
    DATA_TERMINATION = ("the final reply to the content", 600.0)
    COMMAND = ("the reply to a command", 300.0)
    TLS_HANDSHAKE = ("the TLS handshake", 60.0)

    def __init__(self, description: str, default_timeout: float) -> None:
        self.description = description
        self.default_timeout = default_timeout


class ReplyKind(enum.Enum):
    """What a reply means for the command it answers."""

    SUCCESS = "success"
    INTERMEDIATE = "go on"
    TRANSIENT = "transient refusal"
    PERMANENT = "permanent refusal"
    CLOSING = "the server is closing"
    VIOLATION = "protocol violation"


def _codes(*codes: int) -> frozenset[int]:
    return frozenset(codes)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyRule:
    """What the replies to one command (or the greeting) mean.

    Attributes:
        success: the exact success codes, each with the trigger it fires
            (None: the state stays as it is).
        intermediate: the exact 3xx codes that ask for more, with their trigger.
        on_transient: the trigger a 4xx refusal fires (None: the state stays).
        on_permanent: the trigger a 5xx refusal fires (None: the state stays).
        listed_refusals: the refusal codes the RFCs list for the command;
            other 4xx/5xx are refusals too (read by their first digit), so this
            is for the reply matrix, not for decisions.
        closing: the codes that mean "the server is closing" (SERVICE_CLOSING)
            where success does not name them: 421 for anything, 221 for any
            command but QUIT (whose success it is).
        lmtp_final: with LMTP, the trigger after the last of the replies per
            recipient (RFC 2033 §4.2); None when the command has one reply.
        restarts_session: a success starts the session over, as if the client
            had just connected: what the server's EHLO reply and AUTH taught
            is void and EHLO must come again (XCLIENT's 220).
        ends_group: the command must be the last of a pipelined group
            (RFC 2920 §3.1: what may follow depends on its outcome).
        phase: what is awaited after it, for the timeout.
        answered: False for content pieces, which get no reply of their own.
        source: where the codes come from.
    """

    success: Mapping[int, Trigger | None]
    intermediate: Mapping[int, Trigger] = field(default_factory=dict)
    on_transient: Trigger | None = None
    on_permanent: Trigger | None = None
    listed_refusals: frozenset[int] = frozenset()
    closing: frozenset[int] = frozenset({421, 221})
    lmtp_final: Trigger | None = None
    restarts_session: bool = False
    ends_group: bool = True
    phase: Phase = Phase.COMMAND
    answered: bool = True
    source: str = "RFC 5321 §4.3.2"


_S = State
_T = Trigger
_V = Verb

# RFC 5321 §4.3.2: "any command" may also get 500, 501, 502, 503, 504 and 421.
_ANY = (500, 501, 502, 503, 504)
_HELLO_RULE = ReplyRule(
    success={250: _T.HELLO_ACCEPTED},
    listed_refusals=_codes(*_ANY, 550),
)
_AUTH_RULE = ReplyRule(
    success={235: _T.AUTH_ENDED},
    intermediate={334: _T.AUTH_CHALLENGED},
    on_transient=_T.AUTH_ENDED,
    on_permanent=_T.AUTH_ENDED,
    listed_refusals=_codes(432, 454, *_ANY, 530, 534, 535, 538),
    source="RFC 4954 §4, §6",
)


def _chunk_rule(success: Trigger, phase: Phase) -> ReplyRule:
    """BDAT and BDAT LAST: any refusal fails the transaction (RFC 3030 §2)."""
    last = success is _T.CONTENT_ANSWERED
    return ReplyRule(
        success={250: success},
        on_transient=_T.BDAT_REFUSED,
        on_permanent=_T.BDAT_REFUSED,
        listed_refusals=_codes(451, 452, 503, 552, 554),
        lmtp_final=_T.CONTENT_ANSWERED if last else None,
        ends_group=False,
        phase=phase,
        source="RFC 3030 §2, §4" + ("; RFC 2033 §4.2" if last else ""),
    )


GREETING_RULE = ReplyRule(
    success={220: _T.GREETING_ACCEPTED},
    on_transient=_T.GREETING_DEFERRED,
    on_permanent=_T.GREETING_REFUSED,
    listed_refusals=_codes(554),
    closing=_codes(421),
    phase=Phase.GREETING,
    source="RFC 5321 §3.1, §4.3.2 (connection establishment)",
)
"""What the server's first reply means (no command is pending for it)."""

REPLY_RULES: Mapping[Verb, ReplyRule] = MappingProxyType(
    {
        _V.EHLO: _HELLO_RULE,
        _V.HELO: _HELLO_RULE,
        _V.LHLO: ReplyRule(
            success={250: _T.HELLO_ACCEPTED},
            listed_refusals=_codes(*_ANY, 550),
            source="RFC 2033 §4.1",
        ),
        _V.MAIL: ReplyRule(
            success={250: _T.MAIL_ACCEPTED},
            listed_refusals=_codes(*_ANY, 451, 452, 455, 550, 552, 553, 555),
            ends_group=False,
            phase=Phase.MAIL,
        ),
        _V.RCPT: ReplyRule(
            success={250: _T.RCPT_ACCEPTED, 251: _T.RCPT_ACCEPTED},
            listed_refusals=_codes(*_ANY, 450, 451, 452, 455, 550, 551, 552, 553, 555),
            ends_group=False,
            phase=Phase.RCPT,
        ),
        _V.DATA: ReplyRule(
            success={},
            intermediate={354: _T.DATA_ACCEPTED},
            listed_refusals=_codes(*_ANY, 451, 452, 554),
            phase=Phase.DATA_INITIATION,
        ),
        _V.MESSAGE_DATA: ReplyRule(
            success={},
            ends_group=False,
            phase=Phase.DATA_BLOCK,
            answered=False,
            source="RFC 5321 §4.5.2 (content has no reply of its own)",
        ),
        _V.END_OF_DATA: ReplyRule(
            success={250: _T.CONTENT_ANSWERED},
            on_transient=_T.CONTENT_ANSWERED,
            on_permanent=_T.CONTENT_ANSWERED,
            listed_refusals=_codes(450, 451, 452, 550, 552, 554),
            lmtp_final=_T.CONTENT_ANSWERED,
            ends_group=False,
            phase=Phase.DATA_TERMINATION,
            source="RFC 5321 §4.3.2 (DATA, after the data); RFC 2033 §4.2",
        ),
        _V.BDAT: _chunk_rule(_T.BDAT_ACCEPTED, Phase.DATA_BLOCK),
        _V.BDAT_LAST: _chunk_rule(_T.CONTENT_ANSWERED, Phase.DATA_TERMINATION),
        _V.RSET: ReplyRule(success={250: _T.RSET_ACCEPTED}, ends_group=False),
        _V.NOOP: ReplyRule(success={250: None}),
        _V.VRFY: ReplyRule(
            success={250: None, 251: None, 252: None},
            listed_refusals=_codes(*_ANY, 550, 551, 553),
        ),
        _V.EXPN: ReplyRule(
            success={250: None, 252: None},
            listed_refusals=_codes(*_ANY, 550),
        ),
        _V.HELP: ReplyRule(success={211: None, 214: None}, listed_refusals=_codes(502, 504)),
        _V.STARTTLS: ReplyRule(
            success={220: _T.STARTTLS_ACCEPTED},
            listed_refusals=_codes(454, 501),
            source="RFC 3207 §4",
        ),
        _V.AUTH: _AUTH_RULE,
        _V.AUTH_RESPONSE: _AUTH_RULE,
        # RFC 4954 §4: the server rejects a cancelled exchange with 501.
        _V.AUTH_CANCEL: ReplyRule(
            success={},
            on_transient=_T.AUTH_ENDED,
            on_permanent=_T.AUTH_ENDED,
            listed_refusals=_codes(501),
            source="RFC 4954 §4",
        ),
        # Postfix XCLIENT_README, "XCLIENT server response": the 220 is a new
        # greeting, "as if the client had just connected"; 501 bad syntax,
        # 503 inside a mail transaction, 550 not authorized.
        _V.XCLIENT: ReplyRule(
            success={220: _T.XCLIENT_ACCEPTED},
            listed_refusals=_codes(501, 503, 550),
            restarts_session=True,
            source="Postfix XCLIENT_README",
        ),
        _V.QUIT: ReplyRule(success={221: _T.QUIT_ACCEPTED}),
    }
)


def classify_reply(rule: ReplyRule, code: int) -> tuple[ReplyKind, Trigger | None]:
    """What a reply code means under a rule, and the trigger it fires.

    The reference reading of the declarations; the connection uses the cells
    compile_reply_cells() builds from it.
    """
    if code in rule.success:
        return ReplyKind.SUCCESS, rule.success[code]
    if code in rule.closing:
        return ReplyKind.CLOSING, _T.SERVICE_CLOSING
    if code in rule.intermediate:
        return ReplyKind.INTERMEDIATE, rule.intermediate[code]
    klass = code // 100
    if klass == 4:
        return ReplyKind.TRANSIENT, rule.on_transient
    if klass == 5:
        return ReplyKind.PERMANENT, rule.on_permanent
    return ReplyKind.VIOLATION, None


@dataclass(frozen=True, slots=True)
class ReplyCell:
    """The compiled meaning of one reply code to one command."""

    kind: ReplyKind
    trigger: Trigger | None


class _ReplyCells(dict[int, ReplyCell]):
    """A rule's cells, each worked out the first time its code is met.

    A session meets a handful of codes; building all 400 for every rule at
    import would cost more than most sessions spend on replies.
    """

    __slots__ = ("_rule", "_shared")

    def __init__(self, rule: ReplyRule) -> None:
        super().__init__()
        self._rule = rule
        self._shared: dict[tuple[ReplyKind, Trigger | None], ReplyCell] = {}

    def __missing__(self, code: int) -> ReplyCell:
        meaning = classify_reply(self._rule, code)
        cell = self[code] = self._shared.setdefault(meaning, ReplyCell(*meaning))
        return cell


def compile_reply_cells(rule: ReplyRule) -> Mapping[int, ReplyCell]:
    """A rule as a lookup: reply code -> ReplyCell (what classify_reply says)."""
    return _ReplyCells(rule)


_IN_TRANSACTION = (_S.MAIL, _S.RCPT, _S.BDAT, _S.TRANSACTION_FAILED)
_OPEN = (_S.CONNECTED, _S.READY, *_IN_TRANSACTION, _S.DATA, _S.AUTH)


def _build_transitions() -> dict[tuple[State, Trigger], State]:
    table: dict[tuple[State, Trigger], State] = {
        (_S.GREETING, _T.GREETING_ACCEPTED): _S.CONNECTED,
        (_S.GREETING, _T.GREETING_REFUSED): _S.REFUSED,
        # A 4xx greeting other than 421 is not in RFC 5321; the server will
        # not serve this session either way.
        (_S.GREETING, _T.GREETING_DEFERRED): _S.CLOSING,
        (_S.CONNECTED, _T.HELLO_ACCEPTED): _S.READY,
        (_S.CONNECTED, _T.RSET_ACCEPTED): _S.CONNECTED,
        # A new EHLO is an implicit RSET (RFC 5321 §4.1.4).
        (_S.READY, _T.HELLO_ACCEPTED): _S.READY,
        (_S.READY, _T.MAIL_ACCEPTED): _S.MAIL,
        (_S.READY, _T.RSET_ACCEPTED): _S.READY,
        (_S.READY, _T.STARTTLS_ACCEPTED): _S.TLS_HANDSHAKE,
        # A new greeting: the server must be asked for its extensions again.
        (_S.READY, _T.XCLIENT_ACCEPTED): _S.CONNECTED,
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


TRANSITIONS: Mapping[tuple[State, Trigger], State] = MappingProxyType(_build_transitions())

_BETWEEN_TRANSACTIONS = frozenset({_V.RSET, _V.NOOP, _V.HELP, _V.QUIT})

ALLOWED_COMMANDS: Mapping[State, frozenset[Verb]] = MappingProxyType(
    {
        _S.GREETING: frozenset(),
        _S.REFUSED: frozenset({_V.QUIT}),
        _S.CONNECTED: _BETWEEN_TRANSACTIONS | {_V.EHLO, _V.HELO, _V.LHLO},
        _S.READY: _BETWEEN_TRANSACTIONS
        | {
            _V.EHLO,
            _V.HELO,
            _V.LHLO,
            _V.MAIL,
            _V.VRFY,
            _V.EXPN,
            _V.STARTTLS,
            _V.AUTH,
            _V.XCLIENT,
        },
        _S.MAIL: frozenset({_V.RCPT, _V.RSET, _V.NOOP, _V.QUIT}),
        _S.RCPT: frozenset({_V.RCPT, _V.DATA, _V.BDAT, _V.BDAT_LAST, _V.RSET, _V.NOOP, _V.QUIT}),
        _S.DATA: frozenset({_V.MESSAGE_DATA, _V.END_OF_DATA}),
        _S.BDAT: frozenset({_V.BDAT, _V.BDAT_LAST, _V.RSET, _V.NOOP, _V.QUIT}),
        _S.TRANSACTION_FAILED: frozenset({_V.RSET, _V.NOOP, _V.QUIT}),
        _S.AUTH: frozenset({_V.AUTH_RESPONSE, _V.AUTH_CANCEL}),
        _S.TLS_HANDSHAKE: frozenset(),
        _S.CLOSING: frozenset(),
        _S.CLOSED: frozenset(),
        _S.ERROR: frozenset(),
    }
)
