"""The hostile-server case table: every scripted misbehaviour, what smtpbee must do, and why.

``CASES`` is the table (a tuple of `hostile.model.Case`); ``by_category()``
groups it. tests/hostile/test_hostile.py runs every case on the core alone
(three feeds) and on the three transports; bench/hostile_compare.py runs the
same table against smtplib and aiosmtplib. Each case carries its SOURCE: an
RFC section, an advisory, a paper, or "smtpbee design" where the behaviour is
smtpbee's own promise (docs/guides/errors.md).

Sources named below:

* RFC 5321 (SMTP), RFC 3207 (STARTTLS), RFC 4954 (AUTH), RFC 2920
  (PIPELINING), RFC 3030 (CHUNKING), RFC 6152 (8BITMIME), RFC 5802 (SCRAM),
  RFC 8314 (implicit TLS), RFC 5280 (certificate validity), RFC 6125 (names
  in certificates), RFC 6066 §3 (SNI), RFC 8996 (TLS 1.0 and 1.1 deprecated);
* "Why TLS is better without STARTTLS", Poddebniak, Ising, Böck, Müller,
  Schinzel, Schwenk, USENIX Security 2021 (response injection, buffering,
  stripping), and CVE-2011-0411 (the Postfix twin of injection);
* SMTP smuggling, SEC Consult, December 2023 (CVE-2023-51764 Postfix,
  CVE-2023-51765 Sendmail, CVE-2023-51766 Exim): a client that lets a bare
  LF or CR through lets a server see an end of data the client never meant.

The generated matrix of every command by every reply code (each cell one
documented outcome) is not repeated here: it is tests/test_state.py, rendered
in docs/reply-codes.md.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping

import smtpbee
from smtpbee import (
    AuthenticationIncomplete,
    AuthenticationRejected,
    ConnectionLostError,
    InsecureAuthenticationError,
    InvalidChallengeError,
    InvalidInputError,
    OutcomeUnknownError,
    PermanentReplyError,
    RemoteProtocolError,
    ReplyLimits,
    SMTPTimeoutError,
    StartTLSInjectionError,
    TLSRequiredError,
    TLSVerificationError,
    TransientReplyError,
    UnsupportedExtensionError,
)
from smtpbee.testing import (
    DEFAULT,
    Command,
    Handler,
    Response,
    ServerSession,
    close,
    drip,
    pause,
    replies,
    reply,
    reset,
    stall,
    start_tls,
)

from . import checks
from .certs import SERVER_NAME
from .model import (
    BODY_MARKER,
    CATEGORIES,
    Batch,
    Body,
    Case,
    Category,
    Client,
    Driver,
    Expect,
    Forbidden,
    Login,
    Send,
    Server,
    Small,
)
from .runners import Run

__all__ = ["CASES", "by_category", "normalized"]

# ----------------------------------------------------------------------------
# Building blocks

PIPELINING = ("PIPELINING",)
STARTTLS = ("PIPELINING", "STARTTLS")
STARTTLS_AUTH = ("PIPELINING", "STARTTLS", "AUTH PLAIN LOGIN")
AUTH = ("PIPELINING", "AUTH PLAIN LOGIN")
CHUNKING = ("PIPELINING", "CHUNKING")
USERS: Mapping[str, str] = {"user": "secret"}

SEND = (Send(),)
LOGIN_AND_SEND = (Login(allow_insecure=False), Send())

NOTHING = Forbidden(re.compile(rb"(?s).+"), "nothing at all may be written")
NO_EHLO = Forbidden(b"EHLO", "the session must not go on after a refused or broken greeting")
NO_MAIL = Forbidden(b"MAIL FROM", "no mail transaction may start")
NO_AUTH = Forbidden(b"AUTH", "no credentials may be sent")
NO_CONTENT = Forbidden(BODY_MARKER, "no message content without a valid 354 to its DATA")
NO_TERMINATOR = Forbidden(
    b"\r\n.\r\n", "a truncated message must never be ended: the server would deliver it"
)
NO_SMUGGLING = Forbidden(
    re.compile(rb"\r\n\.\r\nMAIL FROM:<smuggler"),
    "an end of data before the real end, then a smuggled transaction",
)
PLAINTEXT_AFTER_STARTTLS = Forbidden(
    # A ClientHello is the one thing that may follow; a failed handshake
    # leaves it in the plaintext record, so any other start, or a command
    # anywhere after it, is a fallback to the clear.
    re.compile(
        rb"(?s)STARTTLS\r\n(?:(?!\x16\x03[\x01-\x04]).|.*(?:EHLO |HELO |MAIL FROM|RCPT TO|AUTH "
        rb"|QUIT\r\n|RSET\r\n))"
    ),
    "nothing but a TLS handshake may follow STARTTLS in plaintext (no MAIL, no AUTH, no retry"
    " without TLS)",
    scope="plaintext",
)


def after(marker: bytes, why: str) -> Forbidden:
    """Nothing at all may follow ``marker`` in what the client wrote."""
    return Forbidden(re.compile(re.escape(marker) + rb".+", re.DOTALL), why)


NOTHING_AFTER_GROUP = after(b"DATA\r\n", "nothing may follow a pipelined group that broke SMTP")
NOTHING_AFTER_EHLO = after(
    b"EHLO client.hostile.test\r\n", "nothing may follow a broken EHLO reply"
)
NOTHING_AFTER_QUIT = after(b"QUIT\r\n", "nothing may follow QUIT")


def twice(marker: bytes, why: str) -> Forbidden:
    return Forbidden(re.compile(re.escape(marker) + rb".*" + re.escape(marker), re.DOTALL), why)


def normalized(body: bytes) -> bytes:
    """What a server must store for ``body``: each lone CR and LF made CRLF, CRLF at the end."""
    out = re.sub(rb"\r\n|\r|\n", b"\r\n", body)
    return out if out.endswith(b"\r\n") else out + b"\r\n"


def delivered_as(body: bytes) -> Expect:
    """One message, stored exactly as ``body`` normalised, after one MAIL."""
    return Expect(delivered=1, content=normalized(body), check=checks.commands_count("MAIL", 1))


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def case(
    id: str,
    category: Category,
    description: str,
    source: str,
    server: Server,
    expect: Expect,
    *forbidden: Forbidden,
    steps: tuple[Login | Send | Batch | Small, ...] = (),
    client: Client | None = None,
    driver: Driver | None = None,
    peers: bool = True,
) -> Case:
    return Case(
        id=id,
        category=category,
        description=description,
        source=source,
        server=server,
        expect=expect,
        steps=steps,
        forbidden=forbidden,
        client=client or Client(),
        driver=driver or Driver(),
        peers=peers,
    )


# ----------------------------------------------------------------------------
# Malformed replies

MALFORMED_REPLIES: Category = "malformed replies"
CODE = "RFC 5321 §4.2 (a code is three digits, first 2-5, second 0-5)"


def _bad_greeting(id: str, greeting: bytes, what: str, source: str = CODE) -> Case:
    return case(
        id,
        MALFORMED_REPLIES,
        f"a greeting whose code is {what}: refused before a byte is written",
        source,
        Server({"GREETING": greeting}),
        Expect(RemoteProtocolError),
        NOTHING,
    )


def _bad_ehlo(id: str, ehlo: bytes, description: str, source: str = CODE) -> Case:
    return case(
        id,
        MALFORMED_REPLIES,
        description,
        source,
        Server({"EHLO": ehlo}),
        Expect(RemoteProtocolError),
        NOTHING_AFTER_EHLO,
        NO_MAIL,
        steps=SEND,
    )


MALFORMED = (
    _bad_greeting("code-underscore", b"2_0 mx.hostile.test\r\n", "'2_0' (int() takes it)"),
    _bad_greeting("code-plus-sign", b"+25 mx.hostile.test\r\n", "'+25' (int() takes it)"),
    _bad_greeting("code-leading-blank", b" 220 mx.hostile.test\r\n", "' 220' (int() strips it)"),
    _bad_ehlo(
        "code-arabic-indic-digits",
        "\u0662\u0665\u0660 mx.hostile.test\r\n".encode(),
        "EHLO answered '٢٥٠' (Arabic-Indic digits int() reads as 250): refused",
    ),
    _bad_ehlo(
        "code-fullwidth-digits",
        "\uff12\uff15\uff10 mx.hostile.test\r\n".encode(),
        "EHLO answered '\uff12\uff15\uff10' (fullwidth digits int() reads as 250): refused",
    ),
    _bad_ehlo(
        "code-two-digits",
        b"25 mx.hostile.test\r\n",
        "EHLO answered with a two-digit code: refused",
    ),
    case(
        "code-negative-to-mail",
        MALFORMED_REPLIES,
        "MAIL answered '-25': refused; nothing after the pipelined group",
        CODE,
        Server({"MAIL": b"-25 2.1.0 ok\r\n"}),
        Expect(RemoteProtocolError),
        NOTHING_AFTER_GROUP,
        NO_CONTENT,
        steps=SEND,
    ),
    _bad_greeting("code-1xx", b"199 mx.hostile.test\r\n", "199 (first digit below 2)"),
    _bad_greeting("code-6xx", b"600 mx.hostile.test\r\n", "600 (first digit above 5)"),
    _bad_ehlo(
        "code-second-digit-6",
        b"260 mx.hostile.test\r\n",
        "EHLO answered 260 (second digit above 5): refused",
    ),
    _bad_greeting(
        "http-response-greeting",
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
        "an HTTP response (a web server on the SMTP port)",
        "RFC 5321 §4.2; smtpbee design (refused at the first byte)",
    ),
    _bad_greeting(
        "tls-record-on-plaintext-port",
        b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76\x03\x03" + bytes(range(32)),
        "a TLS record (implicit TLS on the port the client thinks is plaintext)",
        "RFC 8314 §3.3; smtpbee design (refused at the first byte)",
    ),
    _bad_greeting("nul-flood-greeting", b"\0" * 4096, "a flood of NUL octets"),
    _bad_ehlo(
        "mixed-codes-multiline",
        b"250-mx.hostile.test\r\n250-PIPELINING\r\n251 SIZE 1000\r\n",
        "a multi-line EHLO reply whose last line changes the code: refused",
        "RFC 5321 §4.2.1 (every line of a reply has the same code)",
    ),
    _bad_ehlo(
        "mixed-codes-421-inside",
        b"250-mx.hostile.test\r\n421-closing\r\n250 PIPELINING\r\n",
        "a 421 line inside a 250 reply: refused (not taken as a closing, not as a success)",
        "RFC 5321 §4.2.1",
    ),
    _bad_ehlo(
        "empty-line-in-reply",
        b"250-mx.hostile.test\r\n\r\n250 PIPELINING\r\n",
        "an empty line inside a multi-line reply: refused",
        "RFC 5321 §4.2",
    ),
    _bad_ehlo(
        "bare-cr-separator",
        b"250-mx.hostile.test\r\n250\rPIPELINING\r\n",
        "a bare CR where the separator after the code belongs: refused",
        "RFC 5321 §4.2, §2.3.8",
    ),
    case(
        "bare-cr-does-not-end-a-line",
        MALFORMED_REPLIES,
        "a bare CR inside a continuation line ('250-mx\\r250 ok'): no line ends there, "
        "the reply stays incomplete and its deadline fires",
        "RFC 5321 §2.3.8 (CRLF ends a line; a lone CR is not one)",
        Server({"EHLO": b"250-mx.hostile.test\r250 PIPELINING\r\n"}),
        Expect(SMTPTimeoutError, check=checks.driver_clock(0.2)),
        NOTHING_AFTER_EHLO,
        client=Client(timeout=0.2),
    ),
    case(
        "control-bytes-in-greeting-text",
        MALFORMED_REPLIES,
        "control characters, ANSI escapes and non-UTF-8 octets in the greeting text: "
        "accepted, and shown escaped in the transcript and the log",
        "RFC 5321 §4.2 (the text is not reliable); smtpbee design (escaped text)",
        Server({"GREETING": b"220 mx.hostile.test \x1b[2J\x07\xff\xfe\x00 \x9b6n hello\r\n"}),
        Expect(check=checks.escaped),
    ),
    case(
        "forged-transcript-line-in-refusal",
        MALFORMED_REPLIES,
        "a refusal whose text carries a lone CR and 'C: ...' (a forged transcript line) and "
        "escapes: the error and the transcript show it escaped",
        "smtpbee design (server text escaped); RFC 5321 §4.2",
        Server({"RCPT": b"550 5.1.1 no\rC: RCPT TO:<forged@evil.test>\x1b[2K\x1b]0;pwned\x07\r\n"}),
        Expect(PermanentReplyError, check=checks.escaped),
        NO_CONTENT,
        steps=SEND,
    ),
    case(
        "unsolicited-reply-after-greeting",
        MALFORMED_REPLIES,
        "a second reply right behind the greeting: it would answer EHLO, so nothing is sent",
        "RFC 5321 §4.1.1 (a reply answers a command); smtpbee design",
        Server({"GREETING": b"220 mx.hostile.test ESMTP\r\n250 2.0.0 unasked\r\n"}),
        Expect(RemoteProtocolError),
        NOTHING,
    ),
    case(
        "unsolicited-reply-after-ehlo",
        MALFORMED_REPLIES,
        "a reply nobody asked for behind the EHLO reply: refused before MAIL is written",
        "RFC 2920 §3.1 (replies in order); smtpbee design",
        Server({"EHLO": [DEFAULT, b"250 2.0.0 unasked\r\n"]}),
        Expect(RemoteProtocolError),
        NO_MAIL,
        steps=SEND,
    ),
    case(
        "unsolicited-421",
        MALFORMED_REPLIES,
        "an unasked 421 in the same segment as the EHLO reply (the close follows later): "
        "the server is closing, no MAIL follows",
        "RFC 5321 §3.8, §4.2.4 (421 may come at any time); README (421 anywhere: closing)",
        Server({"EHLO": [DEFAULT, b"421 4.3.2 shutting down\r\n", pause(0.3), close()]}),
        Expect(TransientReplyError, usable=False),
        NO_MAIL,
        steps=SEND,
    ),
    case(
        "too-many-replies-to-group",
        MALFORMED_REPLIES,
        "two replies to MAIL in a pipelined group: the surplus shifts every reply; the 250 "
        "that lands on DATA is refused and no content goes out",
        "RFC 2920 §3.1 (one reply per command, in order)",
        Server({"MAIL": b"250 2.1.0 ok\r\n250 2.1.5 surplus\r\n"}),
        Expect(RemoteProtocolError),
        NO_CONTENT,
        NOTHING_AFTER_GROUP,
        steps=SEND,
    ),
    case(
        "too-few-replies-to-group",
        MALFORMED_REPLIES,
        "no reply to RCPT in a pipelined group: the 354 lands on RCPT and is refused",
        "RFC 2920 §3.1",
        Server({"RCPT": None, "DATA": "354 go ahead"}),
        Expect(RemoteProtocolError),
        NO_CONTENT,
        NOTHING_AFTER_GROUP,
        steps=SEND,
    ),
    case(
        "252-to-mail",
        MALFORMED_REPLIES,
        "252 to MAIL: a success code the rule for MAIL does not list is a violation, not a success",
        "RFC 5321 §4.3.2; docs/reply-codes.md",
        Server({"MAIL": "252 2.1.0 maybe"}),
        Expect(RemoteProtocolError),
        NO_CONTENT,
        steps=SEND,
    ),
    case(
        "354-to-ehlo",
        MALFORMED_REPLIES,
        "354 to EHLO: refused; nothing follows",
        "RFC 5321 §4.3.2",
        Server({"EHLO": "354 go ahead"}),
        Expect(RemoteProtocolError),
        NOTHING_AFTER_EHLO,
        steps=SEND,
    ),
    case(
        "221-to-mail",
        MALFORMED_REPLIES,
        "221 to MAIL: the server is closing; no content, no RSET",
        "RFC 5321 §4.2.2, §3.8; docs/reply-codes.md",
        Server({"MAIL": ["221 2.0.0 bye", close()]}),
        Expect(TransientReplyError, usable=False),
        NO_CONTENT,
        Forbidden(b"RSET", "nothing may be sent to a closing server"),
        steps=SEND,
    ),
    case(
        "greeting-554",
        MALFORMED_REPLIES,
        "554 greeting: no service; the client may QUIT and must not go on",
        "RFC 5321 §3.1, §4.3.2",
        Server({"GREETING": "554 5.7.1 no service for you"}),
        Expect(PermanentReplyError, usable=False),
        NO_EHLO,
    ),
    case(
        "greeting-421",
        MALFORMED_REPLIES,
        "421 greeting: the server is closing; nothing is sent",
        "RFC 5321 §3.1, §3.8",
        Server({"GREETING": ["421 4.3.2 too busy", close()]}),
        Expect(TransientReplyError, usable=False),
        NOTHING,
    ),
    case(
        "greeting-450",
        MALFORMED_REPLIES,
        "another 4xx greeting: deferred; no EHLO",
        "RFC 5321 §4.2.1 (read by its first digit); docs/reply-codes.md",
        Server({"GREETING": "450 4.7.1 greylisted"}),
        Expect(TransientReplyError, usable=False),
        NO_EHLO,
    ),
    case(
        "greeting-multiline-220",
        MALFORMED_REPLIES,
        "a multi-line 220 greeting: legal, accepted whole",
        "RFC 5321 §4.2, §4.3.1",
        Server({"GREETING": "220-mx.hostile.test ESMTP\n220-second line\n220 third line"}),
        Expect(delivered=1),
        steps=SEND,
    ),
)

# ----------------------------------------------------------------------------
# Oversized and slow input

OVERSIZED_INPUT: Category = "oversized and slow input"
LIMITS = "RFC 5321 §4.5.3.1.5 (reply line 512, bounded generously); smtpbee design (ReplyLimits)"
LINEAR = "work stays linear: tests/test_linear.py checks the CPU ratio"

OVERSIZED = (
    case(
        "endless-greeting-line",
        OVERSIZED_INPUT,
        "a greeting line that never ends (100 kB, no CRLF): refused at the line limit",
        LIMITS,
        Server({"GREETING": b"220 " + b"x" * 100_000}),
        Expect(RemoteProtocolError, match="longer than"),
        NOTHING,
    ),
    case(
        "endless-continuations",
        OVERSIZED_INPUT,
        "an EHLO reply of 20,000 continuation lines and no last line: refused at the reply limit",
        LIMITS,
        Server({"EHLO": b"250-x\r\n" * 20_000}),
        Expect(RemoteProtocolError),
        NOTHING_AFTER_EHLO,
        steps=SEND,
    ),
    case(
        "line-cap-fragmented",
        OVERSIZED_INPUT,
        "a 3,000-octet greeting line in three segments, each under the limit: the limit "
        "counts the line, not the segment",
        LIMITS,
        Server(
            {
                "GREETING": [
                    b"220 " + b"a" * 996,
                    pause(0.01),
                    b"b" * 1000,
                    pause(0.01),
                    b"c" * 1000 + b"\r\n",
                ]
            }
        ),
        Expect(RemoteProtocolError, match="longer than"),
        NOTHING,
    ),
    case(
        "reply-cap-fragmented",
        OVERSIZED_INPUT,
        "an EHLO reply of 40 lines of 2,000 octets (each under the line limit) in segments: "
        "the whole reply's limit holds",
        LIMITS,
        Server(
            {
                "EHLO": [
                    *(
                        part
                        for _ in range(8)
                        for part in ((b"250-" + b"y" * 1994 + b"\r\n") * 5, pause(0.005))
                    ),
                    b"250 PIPELINING\r\n",
                ]
            }
        ),
        Expect(RemoteProtocolError),
        NOTHING_AFTER_EHLO,
        steps=SEND,
    ),
    case(
        "large-reply-within-limits",
        OVERSIZED_INPUT,
        "a 48 kB EHLO reply (24 lines of 2,000 octets): within the limits, accepted "
        f"(and fed one byte at a time on the driver: {LINEAR})",
        LIMITS,
        Server(
            {
                "EHLO": [
                    b"250-mx.hostile.test\r\n"
                    + (b"250-X-LONG " + b"z" * 1987 + b"\r\n") * 24
                    + b"250 PIPELINING\r\n"
                ]
            }
        ),
        Expect(delivered=1),
        steps=SEND,
    ),
    case(
        "caller-limits",
        OVERSIZED_INPUT,
        "a 600-octet greeting line against a client limited to 512: the caller's limit holds",
        "RFC 5321 §4.5.3.1.5 (512); smtpbee design (ReplyLimits)",
        Server({"GREETING": b"220 " + b"l" * 596 + b"\r\n"}),
        Expect(RemoteProtocolError, match="longer than 512"),
        NOTHING,
        client=Client(limits=ReplyLimits(max_line_length=512)),
    ),
    case(
        "drip-greeting-deadline",
        OVERSIZED_INPUT,
        "a greeting dripped one byte every 50 ms: the deadline covers the whole reply, "
        "so it fires after 0.3 s however steadily bytes arrive",
        "RFC 5321 §4.5.3.2 (timeouts per reply); smtpbee design (Read.new_wait)",
        Server({"GREETING": drip(b"220 " + b"s" * 60 + b"\r\n", 0.05)}),
        Expect(SMTPTimeoutError, check=checks.driver_clock(0.3)),
        NOTHING,
        client=Client(timeout=0.5, timeouts={"greeting": 0.3}),
    ),
    case(
        "drip-continuations-deadline",
        OVERSIZED_INPUT,
        "an EHLO reply dripped line by line, each line in time but the whole reply late: "
        "the command deadline fires",
        "RFC 5321 §4.5.3.2; smtpbee design (Read.new_wait)",
        Server({"EHLO": drip(b"250-k\r\n" * 60 + b"250 PIPELINING\r\n", 0.01)}),
        Expect(SMTPTimeoutError, check=checks.driver_clock(0.25)),
        NOTHING_AFTER_EHLO,
        NO_MAIL,
        steps=SEND,
        client=Client(timeout=0.5, timeouts={"command": 0.25}),
    ),
    case(
        "drip-greeting-in-time",
        OVERSIZED_INPUT,
        "a greeting dripped one byte every 2 ms (60 ms in all): slow but legal, accepted",
        "RFC 5321 §4.5.3.2",
        Server({"GREETING": drip(b"220 mx.hostile.test ESMTP\r\n", 0.002)}),
        Expect(delivered=1),
        steps=SEND,
    ),
    case(
        "unterminated-greeting-then-eof",
        OVERSIZED_INPUT,
        "half a greeting line, then the connection closes: a lost connection, nothing sent",
        "RFC 5321 §4.2; smtpbee design",
        Server({"GREETING": [b"220 mx.hostile.te", close()]}),
        Expect(ConnectionLostError),
        NOTHING,
    ),
    case(
        "chatter-after-221",
        OVERSIZED_INPUT,
        "1,000 replies pushed after the 221 to QUIT: the session is over, nothing more is "
        "written or taken",
        "RFC 5321 §4.1.1.10 (QUIT, then the server closes)",
        Server({"QUIT": ["221 2.0.0 bye", b"250 2.0.0 chatter\r\n" * 1000, close()]}),
        Expect(usable=False),
        NOTHING_AFTER_QUIT,
        steps=(Small("QUIT"),),
    ),
    case(
        "auth-challenge-too-long",
        OVERSIZED_INPUT,
        "a 334 challenge of 20,000 octets (over the 12,288 AUTH line limit): refused",
        "RFC 4954 §4 (12,288 octets); smtpbee design (ReplyLimits.max_auth_challenge)",
        Server({"AUTH": replies("334 " + "A" * 20_000)}, AUTH, users=USERS),
        Expect(RemoteProtocolError, match="longer than 12288"),
        Forbidden(re.compile(rb"AUTH LOGIN\r\n.+", re.DOTALL), "nothing may answer the challenge"),
        steps=(Login(mechanism="LOGIN"),),
    ),
)

# ----------------------------------------------------------------------------
# STARTTLS

STARTTLS_ATTACKS: Category = "STARTTLS"
PODDEBNIAK = "Poddebniak et al., 'Why TLS is better without STARTTLS' (USENIX Security 2021)"
TLS_SERVER = Server(extensions=STARTTLS, tls="starttls")
TLS_CLIENT = Client(tls="starttls")


def _starttls_server(
    handlers: Mapping[str, Handler],
    extensions: tuple[str, ...] = STARTTLS,
    users: Mapping[str, str] | None = None,
) -> Server:
    return Server(handlers, extensions, tls="starttls", users=users)


def _refused_starttls(code: str) -> Case:
    return case(
        f"starttls-refused-{code[:3]}",
        STARTTLS_ATTACKS,
        f"STARTTLS refused with {code[:3]}: TLS was required, so QUIT and nothing else",
        "RFC 3207 §4 (the client decides by its policy); smtpbee design (tls='starttls')",
        _starttls_server({"STARTTLS": code}),
        Expect(TLSRequiredError),
        NO_MAIL,
        NO_AUTH,
        Forbidden(
            re.compile(rb"STARTTLS\r\n(?!QUIT\r\n$).+", re.DOTALL),
            "only QUIT may follow a refused STARTTLS",
        ),
        steps=LOGIN_AND_SEND,
        client=TLS_CLIENT,
    )


def _scram(variant: str) -> Handler:
    """A SCRAM-SHA-256 server that cheats at the end (or earlier), by ``variant``."""

    def scram(command: Command, session: ServerSession) -> Response:
        if command.continuation and command.argument == "*":
            return DEFAULT  # 501: the exchange is cancelled
        if not command.continuation:
            initial = command.argument.partition(" ")[2]
            client_first = base64.b64decode(initial).decode()
            nonce = client_first.split("r=", 1)[1]
            salt = b64(b"hostile-salt")
            iterations = 2**31 - 1 if variant == "endless-iterations" else 4096
            server_nonce = "attacker-nonce" if variant == "foreign-nonce" else nonce + "srv"
            return reply(334, b64(f"r={server_nonce},s={salt},i={iterations}"))
        if variant == "no-proof":
            return reply(235, "2.7.0 ok")
        return reply(334, b64("v=" + b64(bytes(32))))  # a signature that cannot be right

    scram.__name__ = f"scram_{variant.replace('-', '_')}"
    return scram


STARTTLS_CASES = (
    case(
        "starttls-stripped",
        STARTTLS_ATTACKS,
        "STARTTLS stripped from the EHLO reply (a man in the middle): TLS required, so the "
        "session ends with QUIT; no AUTH, no MAIL in plaintext",
        f"RFC 3207 §4, §6; {PODDEBNIAK} (stripping)",
        Server(extensions=AUTH, users=USERS),
        Expect(TLSRequiredError, required=(b"QUIT\r\n",)),
        NO_MAIL,
        NO_AUTH,
        steps=LOGIN_AND_SEND,
        client=TLS_CLIENT,
    ),
    _refused_starttls("454 4.7.0 TLS not available due to temporary reason"),
    _refused_starttls("501 5.5.4 Syntax error"),
    _refused_starttls("502 5.5.1 Command not implemented"),
    case(
        "starttls-answered-250",
        STARTTLS_ATTACKS,
        "STARTTLS answered 250 (nonsense): refused; no handshake, nothing more in plaintext",
        "RFC 3207 §4 (220 or a refusal)",
        _starttls_server({"STARTTLS": "250 2.0.0 sure"}),
        Expect(RemoteProtocolError),
        PLAINTEXT_AFTER_STARTTLS,
        NO_MAIL,
        steps=SEND,
        client=TLS_CLIENT,
    ),
    case(
        "starttls-answered-354",
        STARTTLS_ATTACKS,
        "STARTTLS answered 354: refused; nothing more",
        "RFC 3207 §4",
        _starttls_server({"STARTTLS": "354 go ahead"}),
        Expect(RemoteProtocolError),
        PLAINTEXT_AFTER_STARTTLS,
        steps=SEND,
        client=TLS_CLIENT,
    ),
    case(
        "starttls-answered-221",
        STARTTLS_ATTACKS,
        "STARTTLS answered 221: the server is closing; no handshake starts",
        "RFC 3207 §4; RFC 5321 §3.8",
        _starttls_server({"STARTTLS": ["221 2.0.0 bye", close()]}),
        Expect(TransientReplyError, usable=False),
        PLAINTEXT_AFTER_STARTTLS,
        steps=SEND,
        client=TLS_CLIENT,
    ),
    case(
        "starttls-injection-same-segment",
        STARTTLS_ATTACKS,
        "a forged EHLO reply offering AUTH PLAIN in the same segment as the 220 to STARTTLS: "
        "refused as injection (byte-wise feeds: the TLS layer reads it as a broken record)",
        f"{PODDEBNIAK} (response injection); CVE-2011-0411; RFC 3207 §4.2",
        _starttls_server(
            {
                "STARTTLS": [
                    "220 2.0.0 ready",
                    b"250-mx.hostile.test\r\n250 AUTH PLAIN\r\n",
                    start_tls(),
                ]
            }
        ),
        Expect(StartTLSInjectionError, split_error=ConnectionLostError),
        PLAINTEXT_AFTER_STARTTLS,
        NO_AUTH,
        steps=LOGIN_AND_SEND,
        client=TLS_CLIENT,
    ),
    case(
        "starttls-injected-235",
        STARTTLS_ATTACKS,
        "an injected '235 2.7.0 ok' behind the 220 to STARTTLS: never taken as AUTH success, "
        "no AUTH is ever sent",
        f"{PODDEBNIAK} (response injection)",
        _starttls_server(
            {
                "STARTTLS": [
                    "220 2.0.0 ready",
                    b"235 2.7.0 Authentication successful\r\n",
                    start_tls(),
                ]
            }
        ),
        Expect(StartTLSInjectionError, split_error=ConnectionLostError),
        NO_AUTH,
        NO_MAIL,
        steps=LOGIN_AND_SEND,
        client=TLS_CLIENT,
    ),
    case(
        "starttls-injection-later-segment",
        STARTTLS_ATTACKS,
        "injected replies in a later segment, before the handshake: the TLS layer reads them "
        "as a broken record; the handshake fails, nothing is sent",
        f"{PODDEBNIAK} (response injection)",
        _starttls_server(
            {
                "STARTTLS": [
                    "220 2.0.0 ready",
                    pause(0.05),
                    b"250-mx.hostile.test\r\n250 AUTH PLAIN\r\n",
                    start_tls(),
                ]
            }
        ),
        Expect(ConnectionLostError),
        PLAINTEXT_AFTER_STARTTLS,
        NO_AUTH,
        steps=LOGIN_AND_SEND,
        client=TLS_CLIENT,
    ),
    case(
        "surplus-replies-after-handshake",
        STARTTLS_ATTACKS,
        "replies pushed right after the handshake (a fake EHLO reply and a 235): refused; no AUTH",
        f"{PODDEBNIAK} (buffering across the handshake); RFC 3207 §4.2",
        _starttls_server(
            {
                "STARTTLS": [
                    "220 2.0.0 ready",
                    start_tls(),
                    b"250-x\r\n250 AUTH PLAIN\r\n235 2.7.0 ok\r\n",
                ]
            },
            STARTTLS_AUTH,
            users=USERS,
        ),
        Expect(RemoteProtocolError),
        NO_AUTH,
        NO_MAIL,
        steps=LOGIN_AND_SEND,
        client=TLS_CLIENT,
    ),
    case(
        "starttls-broken-handshake",
        STARTTLS_ATTACKS,
        "220 to STARTTLS, then a TLS alert instead of a handshake: the handshake fails, "
        "no plaintext fallback",
        "RFC 3207 §4.1 (the client must not go on in the clear)",
        _starttls_server(
            {"STARTTLS": ["220 2.0.0 ready", pause(0.05), b"\x15\x03\x03\x00\x02\x02\x28", close()]}
        ),
        Expect(ConnectionLostError),
        PLAINTEXT_AFTER_STARTTLS,
        NO_MAIL,
        steps=SEND,
        client=TLS_CLIENT,
    ),
    case(
        "starttls-plaintext-instead-of-handshake",
        STARTTLS_ATTACKS,
        "220 to STARTTLS, then a plaintext reply in a later segment and a close: the "
        "handshake fails; nothing is sent in the clear",
        "RFC 3207 §4.1",
        _starttls_server({"STARTTLS": ["220 2.0.0 ready", pause(0.05), b"250 ok\r\n", close()]}),
        Expect(ConnectionLostError),
        PLAINTEXT_AFTER_STARTTLS,
        NO_MAIL,
        steps=SEND,
        client=TLS_CLIENT,
    ),
    case(
        "ehlo-denied-after-tls",
        STARTTLS_ATTACKS,
        "EHLO refused after the handshake: HELO under TLS, the message goes encrypted and in "
        "lock step (no extension is assumed)",
        "RFC 3207 §4.2 (EHLO again, knowledge discarded); RFC 5321 §4.1.4 (HELO fallback)",
        _starttls_server({"EHLO": replies(DEFAULT, "502 5.5.1 no EHLO here")}),
        Expect(delivered=1, check=checks.encrypted_after_starttls),
        Forbidden(b"MAIL FROM", "no transaction in plaintext", scope="plaintext"),
        steps=SEND,
        client=TLS_CLIENT,
    ),
    case(
        "ehlo-421-after-tls",
        STARTTLS_ATTACKS,
        "421 to the EHLO after the handshake: closing; no MAIL",
        "RFC 3207 §4.2; RFC 5321 §3.8",
        _starttls_server({"EHLO": replies(DEFAULT, ["421 4.3.2 bye", close()])}),
        Expect(TransientReplyError, usable=False),
        NO_MAIL,
        steps=SEND,
        client=TLS_CLIENT,
    ),
    case(
        "starttls-offered-again-under-tls",
        STARTTLS_ATTACKS,
        "STARTTLS offered again in the EHLO reply under TLS: never issued twice",
        "RFC 3207 §4.2 (a client must not attempt STARTTLS again)",
        _starttls_server(
            {
                "EHLO": replies(
                    DEFAULT, "250-mx.hostile.test\n250-PIPELINING\n250-STARTTLS\n250 8BITMIME"
                )
            }
        ),
        Expect(delivered=1, check=checks.encrypted_after_starttls),
        Forbidden(re.compile(rb"(?s)STARTTLS.*STARTTLS"), "STARTTLS sent twice"),
        steps=SEND,
        client=TLS_CLIENT,
    ),
    case(
        "auth-503-after-tls",
        STARTTLS_ATTACKS,
        "503 to AUTH over verified TLS: a refusal, never a success; no other mechanism tried",
        "RFC 4954 §4 (503: bad sequence / already authenticated)",
        _starttls_server(
            {"AUTH": "503 5.5.1 Error: already authenticated"}, STARTTLS_AUTH, users=USERS
        ),
        Expect(AuthenticationRejected),
        Forbidden(re.compile(rb"(?s)AUTH .*AUTH "), "a second AUTH (a mechanism downgrade)"),
        NO_MAIL,
        steps=(Login(allow_insecure=False),),
        client=TLS_CLIENT,
    ),
)

# ----------------------------------------------------------------------------
# AUTH

AUTH_ATTACKS: Category = "AUTH"
AUTH_SERVER = Server(extensions=AUTH, users=USERS)
SECOND_AUTH = Forbidden(re.compile(rb"(?s)AUTH .*AUTH "), "a second AUTH (a mechanism downgrade)")
CANCELLED = re.compile(rb"\r\n\*\r\n")

AUTH_CASES = (
    case(
        "auth-plaintext-refused",
        AUTH_ATTACKS,
        "AUTH offered in plaintext: refused locally by default; nothing of the credentials "
        "is sent and the session goes on",
        "RFC 4954 §4, §14 (plaintext mechanisms need TLS); smtpbee design",
        AUTH_SERVER,
        Expect(InsecureAuthenticationError, match="plaintext"),
        NO_AUTH,
        steps=(Login(allow_insecure=False),),
    ),
    case(
        "auth-unverified-tls-refused",
        AUTH_ATTACKS,
        "AUTH over TLS whose certificate was not verified: refused locally",
        "RFC 4954 §14; RFC 6125; smtpbee design",
        _starttls_server({}, STARTTLS_AUTH, users=USERS),
        Expect(InsecureAuthenticationError, match="not verified"),
        NO_AUTH,
        steps=(Login(allow_insecure=False),),
        client=Client(tls="starttls", trust="unverified"),
    ),
    case(
        "auth-no-downgrade-after-535",
        AUTH_ATTACKS,
        "535 to CRAM-MD5 (the strongest offered): rejected; PLAIN and LOGIN are never tried",
        "RFC 4954 §4 (535); smtpbee design (no mechanism downgrade)",
        Server(
            extensions=("PIPELINING", "AUTH CRAM-MD5 PLAIN LOGIN"),
            users=USERS,
            auth_mechanisms=("CRAM-MD5", "PLAIN", "LOGIN"),
        ),
        Expect(AuthenticationRejected, match="535"),
        SECOND_AUTH,
        steps=(Login(password="wrong"),),
    ),
    case(
        "auth-454-transient",
        AUTH_ATTACKS,
        "454 to AUTH: a temporary refusal; the session goes on, no other mechanism tried",
        "RFC 4954 §6 (454)",
        Server({"AUTH": "454 4.7.0 Temporary authentication failure"}, AUTH, users=USERS),
        Expect(TransientReplyError),
        SECOND_AUTH,
        steps=(Login(),),
    ),
    case(
        "auth-challenge-not-base64",
        AUTH_ATTACKS,
        "a 334 challenge that is not base64: cancelled with '*', the session ends",
        "RFC 4954 §4 (cancel with '*')",
        Server({"AUTH": replies("334 !!not base64!!")}, AUTH, users=USERS),
        Expect(RemoteProtocolError, match="base64", required=(CANCELLED,)),
        NO_MAIL,
        steps=(Login(mechanism="LOGIN"), Send()),
    ),
    case(
        "auth-endless-challenges",
        AUTH_ATTACKS,
        "LOGIN answered with a third, fourth... challenge: cancelled with '*' after the "
        "second; the session ends",
        "RFC 4954 §4; draft-murchison-sasl-login",
        Server(
            {"AUTH": replies("334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", "334 UGFzc3dvcmQ6")},
            AUTH,
            users=USERS,
        ),
        Expect(InvalidChallengeError, required=(CANCELLED,)),
        NO_MAIL,
        steps=(Login(mechanism="LOGIN"), Send()),
    ),
    case(
        "auth-challenge-after-plain",
        AUTH_ATTACKS,
        "a challenge after PLAIN's credentials went in the initial response: cancelled",
        "RFC 4616 §2 (PLAIN is one message); RFC 4954 §4",
        Server({"AUTH": replies("334 dGVzdA==")}, AUTH, users=USERS),
        Expect(InvalidChallengeError, required=(CANCELLED,)),
        NO_MAIL,
        steps=(Login(mechanism="PLAIN"), Send()),
    ),
    case(
        "auth-two-replies-one-step",
        AUTH_ATTACKS,
        "a 334 prompt and a 235 in one write to AUTH LOGIN: the user name is never sent, "
        "the 235 never authenticates",
        "RFC 4954 §4 (one reply per step); smtpbee design",
        Server({"AUTH": b"334 VXNlcm5hbWU6\r\n235 2.7.0 ok\r\n"}, AUTH, users=USERS),
        Expect(RemoteProtocolError, split_error=RemoteProtocolError),
        Forbidden(b"dXNlcg==", "the user name went out as if the prompt stood alone"),
        NO_MAIL,
        steps=(Login(mechanism="LOGIN"), Send()),
    ),
    case(
        "auth-235-before-login-done",
        AUTH_ATTACKS,
        "235 to the user name of AUTH LOGIN, before the password was asked for: "
        "authentication incomplete, the session ends",
        "draft-murchison-sasl-login; smtpbee design",
        Server({"AUTH": replies("334 VXNlcm5hbWU6", "235 2.7.0 ok")}, AUTH, users=USERS),
        Expect(AuthenticationIncomplete),
        NO_MAIL,
        steps=(Login(mechanism="LOGIN"), Send()),
    ),
    case(
        "scram-success-without-proof",
        AUTH_ATTACKS,
        "SCRAM-SHA-256 answered 235 without the server signature (v=): the server never "
        "proved it knows the password; no mail goes to an impostor",
        "RFC 5802 §5 (mutual authentication), §9",
        Server({"AUTH": _scram("no-proof")}, ("PIPELINING", "AUTH SCRAM-SHA-256"), users=USERS),
        Expect(AuthenticationIncomplete),
        NO_MAIL,
        steps=(Login(scram_nonce="hostileclientnonce"), Send()),
        peers=False,
    ),
    case(
        "scram-wrong-signature",
        AUTH_ATTACKS,
        "SCRAM-SHA-256 with a server signature that does not verify: cancelled, session ends",
        "RFC 5802 §5, §9",
        Server({"AUTH": _scram("wrong-proof")}, ("PIPELINING", "AUTH SCRAM-SHA-256"), users=USERS),
        Expect(InvalidChallengeError, match="signature", required=(CANCELLED,)),
        NO_MAIL,
        steps=(Login(scram_nonce="hostileclientnonce"), Send()),
        peers=False,
    ),
    case(
        "scram-foreign-nonce",
        AUTH_ATTACKS,
        "SCRAM server-first whose nonce does not extend the client's (a replay): cancelled "
        "before any proof is computed",
        "RFC 5802 §5.1 (r= starts with the client nonce)",
        Server(
            {"AUTH": _scram("foreign-nonce")}, ("PIPELINING", "AUTH SCRAM-SHA-256"), users=USERS
        ),
        Expect(InvalidChallengeError, match="nonce", required=(CANCELLED,)),
        Forbidden(b"c=biws", "a client-final (with a proof) for someone else's exchange"),
        NO_MAIL,
        steps=(Login(scram_nonce="hostileclientnonce"), Send()),
        peers=False,
    ),
    case(
        "scram-endless-iterations",
        AUTH_ATTACKS,
        "SCRAM asking for 2^31-1 PBKDF2 iterations (CPU exhaustion): refused at once",
        "RFC 5802 §5.1 (i=); smtpbee design (max_iterations bounds the work)",
        Server(
            {"AUTH": _scram("endless-iterations")},
            ("PIPELINING", "AUTH SCRAM-SHA-256"),
            users=USERS,
        ),
        Expect(InvalidChallengeError, match="iteration", required=(CANCELLED,)),
        NO_MAIL,
        steps=(Login(scram_nonce="hostileclientnonce"), Send()),
        peers=False,
    ),
    case(
        "auth-secrets-absent-from-errors",
        AUTH_ATTACKS,
        "a 535 over verified TLS: the password is in no error message, repr, traceback, "
        "transcript line or log record",
        "RFC 4954 §14; smtpbee design (secrets redacted)",
        _starttls_server({}, STARTTLS_AUTH, users=USERS),
        Expect(AuthenticationRejected, check=checks.secrets_absent("hunter2-S3CRET")),
        steps=(Login(password="hunter2-S3CRET", mechanism="PLAIN", allow_insecure=False),),
        client=TLS_CLIENT,
    ),
    case(
        "auth-secrets-absent-after-violation",
        AUTH_ATTACKS,
        "a protocol violation after LOGIN's password: the password is in no error, "
        "traceback, transcript line or log record",
        "RFC 4954 §14; smtpbee design (secrets redacted)",
        Server(
            {"AUTH": replies("334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", "250 2.0.0 what?")},
            AUTH,
            users=USERS,
        ),
        Expect(RemoteProtocolError, check=checks.secrets_absent("hunter2-S3CRET")),
        steps=(Login(password="hunter2-S3CRET", mechanism="LOGIN"),),
    ),
)

# ----------------------------------------------------------------------------
# DATA and SMTP smuggling

DATA_SMUGGLING: Category = "DATA and SMTP smuggling"
SMUGGLING = "SEC Consult, SMTP smuggling (2023; CVE-2023-51764, -51765, -51766); RFC 5321 §2.3.8"
SMUGGLED = (
    b"MAIL FROM:<smuggler@evil.test>\r\nRCPT TO:<victim@mx.hostile.test>\r\nDATA\r\n\r\n"
    b"Subject: smuggled\r\n\r\nsmuggled\r\n"
)


def smuggling_body(sequence: bytes) -> bytes:
    return b"Subject: smuggling\r\n\r\nbefore" + sequence + SMUGGLED + b"after\r\n"


def _smuggling(id: str, sequence: bytes, *, piece: int = 0) -> Case:
    body = smuggling_body(sequence)
    shown = sequence.decode().encode("unicode_escape").decode()
    how = f", streamed in pieces of {piece} octet(s)" if piece else ""
    return case(
        id,
        DATA_SMUGGLING,
        f"a body with {shown} before a smuggled transaction{how}: normalised to CRLF "
        "before stuffing, so the server sees one message",
        SMUGGLING,
        Server(),
        delivered_as(body),
        NO_SMUGGLING,
        steps=(Send(Body(body, "pieces" if piece else "bytes", piece=piece)),),
    )


def _one_smuggled_message() -> Expect:
    def one_message(run: Run) -> None:
        assert len(run.messages) == 1, f"{len(run.messages)} messages delivered"
        content = run.messages[0].content
        assert b"MAIL FROM:<smuggler@evil.test>" in content, "the smuggled text was lost"
        assert re.sub(rb"\r\n|\r|\n", b"\r\n", content) == content, "a lone CR or LF was stored"

    return Expect(delivered=1, check=checks.all_of(one_message, checks.commands_count("MAIL", 1)))


BIG_CHUNK = 1 << 20  # smtpbee's BDAT chunk: 1 MiB


def _bdat_refused(run: Run) -> None:
    checks.commands_count("BDAT", 5, at_most=True)(run)


DATA_CASES = (
    _smuggling("smuggling-lf-dot-lf", b"\n.\n"),
    _smuggling("smuggling-cr-dot-cr", b"\r.\r"),
    _smuggling("smuggling-crlf-dot-lf", b"\r\n.\n"),
    _smuggling("smuggling-lf-dot-crlf", b"\n.\r\n"),
    _smuggling("smuggling-cr-dot-crlf", b"\r.\r\n"),
    _smuggling("smuggling-crlf-dot-cr", b"\r\n.\r"),
    _smuggling("smuggling-lf-dot-cr", b"\n.\r"),
    _smuggling("smuggling-cr-dot-lf", b"\r.\n"),
    _smuggling("smuggling-crlf-dot-crlf", b"\r\n.\r\n"),
    _smuggling("smuggling-dot-nul-crlf", b"\r\n.\x00\r\n"),
    _smuggling("smuggling-one-byte-pieces", b"\n.\r\n", piece=1),
    _smuggling("smuggling-three-byte-pieces", b"\r.\r", piece=3),
    case(
        "leading-dot-line",
        DATA_SMUGGLING,
        "a body whose first line is '.': stuffed like every other line",
        "RFC 5321 §4.5.2 (transparency, the first line included)",
        Server(),
        delivered_as(b".\r\n" + SMUGGLED),
        Forbidden(re.compile(rb"DATA\r\n\.\r\n"), "the first line '.' sent unstuffed"),
        steps=(Send(Body(b".\r\n" + SMUGGLED)),),
    ),
    case(
        "str-body-refused",
        DATA_SMUGGLING,
        "a str body (with \\n.\\n inside): refused locally, bodies are bytes; nothing is sent",
        "smtpbee design (the caller encodes); RFC 5321 §2.3.8",
        Server(),
        Expect(InvalidInputError, match="bytes", delivered=0),
        NO_MAIL,
        steps=(Send(Body(smuggling_body(b"\n.\n").decode(), "str")),),
    ),
    case(
        "message-lf-dot-lf",
        DATA_SMUGGLING,
        "an EmailMessage whose text has \\n.\\n before a smuggled transaction: one message",
        SMUGGLING,
        Server(),
        _one_smuggled_message(),
        NO_SMUGGLING,
        steps=(Send(Body(smuggling_body(b"\n.\n").decode().split("\r\n\r\n", 1)[1], "message")),),
    ),
    case(
        "message-cr-dot-cr",
        DATA_SMUGGLING,
        "an EmailMessage whose text has \\r.\\r before a smuggled transaction: one message",
        SMUGGLING,
        Server(),
        _one_smuggled_message(),
        NO_SMUGGLING,
        steps=(Send(Body(smuggling_body(b"\r.\r").decode().split("\r\n\r\n", 1)[1], "message")),),
    ),
    case(
        "message-crlf-dot-crlf",
        DATA_SMUGGLING,
        "an EmailMessage whose text has a line '.' between CRLFs: stuffed, one message",
        "RFC 5321 §4.5.2",
        Server(),
        _one_smuggled_message(),
        NO_SMUGGLING,
        steps=(
            Send(Body(smuggling_body(b"\r\n.\r\n").decode().split("\r\n\r\n", 1)[1], "message")),
        ),
    ),
    case(
        "nul-in-body",
        DATA_SMUGGLING,
        "NUL octets in the body: passed through unchanged (never taken as a line end)",
        "RFC 5321 §4.5.2; smtpbee design (content is the caller's)",
        Server(),
        delivered_as(b"Subject: nul\r\n\r\nnul\x00here\r\n\x00.\r\n"),
        steps=(Send(Body(b"Subject: nul\r\n\r\nnul\x00here\r\n\x00.\r\n")),),
    ),
    case(
        "no-final-crlf",
        DATA_SMUGGLING,
        "a body without a final line end: CRLF added before the terminator",
        "RFC 5321 §4.1.1.4 (the content ends with CRLF before '.')",
        Server(),
        delivered_as(b"Subject: s\r\n\r\nno final line end"),
        Forbidden(b"line end.\r\n", "the terminator glued to the last line"),
        steps=(Send(Body(b"Subject: s\r\n\r\nno final line end")),),
    ),
    case(
        "no-final-crlf-ends-in-cr",
        DATA_SMUGGLING,
        "a body ending in a lone CR: made CRLF, not CR CR LF",
        "RFC 5321 §2.3.8",
        Server(),
        delivered_as(b"Subject: s\r\n\r\nends in CR\r"),
        steps=(Send(Body(b"Subject: s\r\n\r\nends in CR\r", "pieces", piece=7)),),
    ),
    case(
        "overlong-line-not-wrapped",
        DATA_SMUGGLING,
        "a 5,000-octet line with '.\\r\\nMAIL FROM:' at octet 999: not wrapped (a wrap after "
        "stuffing would end the data there); sent as given",
        "RFC 5321 §4.5.3.1.6 (1,000 octets is the sender's MIME job); smtpbee design",
        Server(),
        delivered_as(b"Subject: long\r\n\r\n" + b"x" * 982 + b"." + b"y" * 4000 + b"\r\n"),
        NO_SMUGGLING,
        steps=(Send(Body(b"Subject: long\r\n\r\n" + b"x" * 982 + b"." + b"y" * 4000 + b"\r\n")),),
    ),
    case(
        "eight-bit-without-8bitmime",
        DATA_SMUGGLING,
        "8-bit content to a server that does not offer 8BITMIME: refused before MAIL",
        "RFC 6152 §3; RFC 5321 §2.4",
        Server(),
        Expect(UnsupportedExtensionError, match="8BITMIME", delivered=0),
        NO_MAIL,
        steps=(Send(Body("Subject: s\r\n\r\nd\u00e9j\u00e0 vu\r\n".encode())),),
    ),
    case(
        "bdat-counts-exact",
        DATA_SMUGGLING,
        "a 3 MiB body with bare LFs, streamed, over CHUNKING: each BDAT counts the octets "
        "sent after normalisation, exactly",
        "RFC 3030 §2 (BDAT n is followed by exactly n octets)",
        Server(extensions=CHUNKING),
        Expect(
            delivered=1,
            content=normalized(b"line\n" * (3 * BIG_CHUNK // 5)),
            check=checks.bdat_counts_exact,
        ),
        Forbidden(b"\r\n.\r\n", "a DATA terminator inside BDAT content"),
        steps=(Send(Body(b"line\n", "pieces", piece=BIG_CHUNK, repeat=3 * BIG_CHUNK // 5)),),
    ),
    case(
        "bdat-refused-mid-stream",
        DATA_SMUGGLING,
        "552 to the second of six 1 MiB BDAT chunks: the chunks in flight are answered, "
        "then RSET; no BDAT after it",
        "RFC 3030 §4 (after an error, no further BDAT for the transaction)",
        Server({"BDAT": replies(DEFAULT, "552 5.3.4 Message too big")}, CHUNKING),
        Expect(PermanentReplyError, match="552", delivered=0, check=_bdat_refused),
        Forbidden(re.compile(rb"(?s)RSET\r\n.*BDAT"), "a BDAT after the transaction was reset"),
        steps=(Send(Body(b"c" * 1024, "pieces", piece=BIG_CHUNK, repeat=6 * 1024)),),
    ),
    case(
        "all-recipients-refused-data-accepted",
        DATA_SMUGGLING,
        "every RCPT refused but DATA answered 354: the terminator alone, then RSET",
        "RFC 2920 §3.1",
        Server({"RCPT": "550 5.1.1 no such user", "DATA": "354 go ahead"}),
        Expect(
            PermanentReplyError,
            match="every recipient refused",
            required=(b"DATA\r\n.\r\nRSET\r\n",),
        ),
        NO_CONTENT,
        steps=SEND,
    ),
    case(
        "early-554-while-body-written",
        DATA_SMUGGLING,
        "554 (and a close) while a 256 kB body is being written: the body stops, the "
        "truncated message is never terminated",
        "RFC 5321 §4.1.1.4, §3.3; smtpbee design (a reply that answers nothing)",
        Server({"DATA": ["354 go ahead", pause(0.05), "554 5.3.0 stop right there", close()]}),
        Expect(OutcomeUnknownError, cause=RemoteProtocolError),
        NO_TERMINATOR,
        steps=(Send(Body(b"z" * 1024, "pieces", piece=65536, repeat=256, wait=(1, 0.2))),),
    ),
)

# ----------------------------------------------------------------------------
# TLS verification

TLS_VERIFICATION: Category = "TLS verification"
VERIFY = "RFC 3207 §4.1; RFC 8314 §4.3; RFC 5280 §6; RFC 6125 §6"


def _refused_cert(id: str, cert: str, tls: str, what: str, source: str = VERIFY) -> Case:
    refusal = TLSVerificationError(f"the server's certificate was refused: {what} (driver)")
    implicit = tls == "implicit"
    return case(
        id,
        TLS_VERIFICATION,
        f"{what} ({'implicit TLS' if implicit else 'STARTTLS'}): the handshake is refused, "
        "no AUTH, no MAIL, no plaintext retry",
        source,
        Server(
            extensions=AUTH if implicit else STARTTLS_AUTH,
            tls="implicit" if implicit else "starttls",
            cert=cert,  # type: ignore[arg-type]
            users=USERS,
        ),
        Expect(TLSVerificationError),
        NO_AUTH,
        NO_MAIL,
        *(() if implicit else (PLAINTEXT_AFTER_STARTTLS,)),
        steps=LOGIN_AND_SEND,
        client=Client(tls="implicit" if implicit else "starttls"),
        driver=Driver(tls_error=refusal),
    )


TLS_CASES = (
    _refused_cert("tls-self-signed", "self-signed", "starttls", "a self-signed certificate"),
    _refused_cert(
        "tls-self-signed-implicit", "self-signed", "implicit", "a self-signed certificate"
    ),
    _refused_cert(
        "tls-unknown-root", "unknown-root", "implicit", "a certificate from an unknown root"
    ),
    _refused_cert("tls-wrong-name", "wrong-name", "starttls", "a certificate for another name"),
    _refused_cert(
        "tls-wrong-name-implicit", "wrong-name", "implicit", "a certificate for another name"
    ),
    _refused_cert("tls-expired", "expired", "implicit", "an expired certificate"),
    _refused_cert("tls-expired-starttls", "expired", "starttls", "an expired certificate"),
    case(
        "tls-below-1.2-refused",
        TLS_VERIFICATION,
        "a server that speaks TLS 1.1 at most: refused (TLS 1.2 or later), no plaintext retry",
        "RFC 8996 (TLS 1.0 and 1.1 deprecated); RFC 8314 §4.1",
        Server(extensions=AUTH, tls="implicit", cert="tls1.1", users=USERS),
        Expect(ConnectionLostError),
        NO_AUTH,
        NO_MAIL,
        steps=LOGIN_AND_SEND,
        client=Client(tls="implicit"),
        driver=Driver(tls_error=ConnectionLostError("TLS handshake failed: protocol version")),
    ),
    case(
        "tls-sni-and-verified-auth",
        TLS_VERIFICATION,
        "a good certificate: the ClientHello names the server (SNI), it verifies, and AUTH "
        "then goes ahead under TLS",
        "RFC 6066 §3 (SNI); RFC 4954 §4",
        Server(extensions=STARTTLS_AUTH, tls="starttls", users=USERS),
        Expect(
            delivered=1,
            check=checks.all_of(checks.sni_sent(SERVER_NAME), checks.encrypted_after_starttls),
        ),
        Forbidden(b"AUTH", "AUTH in plaintext", scope="plaintext"),
        steps=LOGIN_AND_SEND,
        client=TLS_CLIENT,
    ),
)

# ----------------------------------------------------------------------------
# Timeouts and faults

TIMEOUTS_AND_FAULTS: Category = "timeouts and faults"
TIMEOUTS = "RFC 5321 §4.5.3.2 (a timeout per phase)"
UNKNOWN = "RFC 5321 §4.5.3.2 (duplicates); smtpbee design (OutcomeUnknownError)"
SETTLED = "RFC 5321 §3.3, §4.2.5; smtpbee design (a refusal read is never replaced)"
NO_RETRY = twice(b"MAIL FROM", "a refused transaction was tried again")


def _deadline(
    id: str,
    key: str,
    phase: str,
    field: str,
    *forbidden: Forbidden,
    error: type[smtpbee.SMTPError] = SMTPTimeoutError,
    steps: tuple[Login | Send | Batch | Small, ...] = SEND,
) -> Case:
    match = None if error is not SMTPTimeoutError else re.escape(phase)
    cause = SMTPTimeoutError if error is OutcomeUnknownError else None
    return case(
        id,
        TIMEOUTS_AND_FAULTS,
        f"no reply to {key}: the {field.replace('_', ' ')} deadline (0.2 s, the others 0.5 s) "
        "fires, and the session ends",
        TIMEOUTS,
        Server({key: stall()}),
        Expect(error, cause=cause, match=match, check=checks.driver_clock(0.2)),
        *forbidden,
        steps=steps,
        client=Client(timeout=0.5, timeouts={field: 0.2}),
    )


def _eof(
    id: str,
    key: str,
    response: Handler,
    error: type[smtpbee.SMTPError],
    *forbidden: Forbidden,
    description: str,
    source: str = "RFC 5321 §3.8; smtpbee design",
    steps: tuple[Login | Send | Batch | Small, ...] = SEND,
    server: Server | None = None,
    client: Client | None = None,
) -> Case:
    base = server or Server()
    return case(
        id,
        TIMEOUTS_AND_FAULTS,
        description,
        source,
        Server(
            {**base.handlers, key: response},
            base.extensions,
            tls=base.tls,
            users=base.users,
        ),
        Expect(error, cause=ConnectionLostError if error is OutcomeUnknownError else None),
        *forbidden,
        steps=steps,
        client=client,
    )


BATCH = (
    b"Subject: m1\r\n\r\nfirst message\r\n",
    b"Subject: m2\r\n\r\nsecond message\r\n",
    b"Subject: m3\r\n\r\nthird message\r\n",
)
NO_THIRD = Forbidden(b"third message", "a message after the session ended was written")
ONE_FIRST = twice(b"first message", "a second copy of a message that was already answered")
ONE_SECOND = twice(b"second message", "a second copy of a message whose outcome is unknown")

FAULTS = (
    _deadline("deadline-greeting", "GREETING", "the 220 greeting", "greeting", NOTHING, steps=()),
    _deadline("deadline-mail", "MAIL", "the reply to MAIL", "mail", NO_CONTENT),
    _deadline("deadline-rcpt", "RCPT", "the reply to RCPT", "rcpt", NO_CONTENT),
    _deadline(
        "deadline-data-initiation", "DATA", "the 354 reply to DATA", "data_initiation", NO_CONTENT
    ),
    _deadline(
        "deadline-data-termination",
        "MESSAGE",
        "",
        "data_termination",
        twice(BODY_MARKER, "the message sent twice"),
        error=OutcomeUnknownError,
    ),
    _deadline(
        "deadline-command", "NOOP", "the reply to a command", "command", steps=(Small("NOOP"),)
    ),
    case(
        "deadline-tls-handshake",
        TIMEOUTS_AND_FAULTS,
        "220 to STARTTLS, then silence: the handshake deadline (0.2 s) fires; no plaintext",
        "RFC 3207 §4; smtpbee design (the handshake has its own deadline)",
        _starttls_server({"STARTTLS": ["220 2.0.0 ready", stall()]}),
        Expect(SMTPTimeoutError, match="TLS handshake", check=checks.driver_clock(0.2)),
        NO_MAIL,
        steps=SEND,
        client=Client(tls="starttls", timeout=0.5, timeouts={"tls_handshake": 0.2}),
    ),
    case(
        "write-stall-large-data",
        TIMEOUTS_AND_FAULTS,
        "a server that stops reading during a 24 MiB DATA: the write's deadline (0.2 s) "
        "fires, the outcome is unknown, the message is never terminated",
        f"{TIMEOUTS} (data block); {UNKNOWN}",
        Server({"DATA": ["354 go ahead", pause(0.8)]}),
        Expect(OutcomeUnknownError, cause=SMTPTimeoutError),
        Forbidden(b".\r\n", "the truncated message was terminated"),
        steps=(Send(Body(b"w" * 4096, "pieces", piece=BIG_CHUNK, repeat=24 * 256)),),
        client=Client(timeout=0.5, timeouts={"data_block": 0.2}),
        driver=Driver(write_stall_after=2 * BIG_CHUNK),
    ),
    case(
        "late-reply-after-timeout",
        TIMEOUTS_AND_FAULTS,
        "a 250 that arrives after NOOP timed out: never paired with a later command; the "
        "next command is refused locally",
        "RFC 5321 §4.5.3.2; smtpbee design (failures are final)",
        Server({"NOOP": [pause(0.35), "250 2.0.0 late"]}),
        Expect(SMTPTimeoutError),
        after(b"NOOP\r\n", "nothing may follow a command whose reply timed out"),
        steps=(Small("NOOP"),),
        client=Client(timeout=0.15),
    ),
    case(
        "late-reply-after-mail-timeout",
        TIMEOUTS_AND_FAULTS,
        "250s that arrive after the MAIL reply timed out: no content, no second transaction",
        "RFC 5321 §4.5.3.2; smtpbee design",
        Server({"MAIL": [pause(0.35), "250 2.1.0 late"]}),
        Expect(SMTPTimeoutError),
        NO_CONTENT,
        steps=(Send(), Send()),
        client=Client(timeout=0.15),
    ),
    _eof(
        "eof-at-greeting",
        "GREETING",
        close(),
        ConnectionLostError,
        NOTHING,
        description="the connection closes instead of a greeting",
        steps=(),
    ),
    _eof(
        "rst-at-greeting",
        "GREETING",
        reset(),
        ConnectionLostError,
        NOTHING,
        description="the connection is reset instead of a greeting",
        steps=(),
    ),
    _eof(
        "eof-at-ehlo",
        "EHLO",
        close(),
        ConnectionLostError,
        NO_MAIL,
        description="the connection closes instead of the EHLO reply",
    ),
    _eof(
        "rst-at-ehlo",
        "EHLO",
        reset(),
        ConnectionLostError,
        NO_MAIL,
        description="the connection is reset instead of the EHLO reply",
    ),
    _eof(
        "eof-at-mail",
        "MAIL",
        close(),
        ConnectionLostError,
        NO_CONTENT,
        description="the connection closes instead of the MAIL reply",
    ),
    _eof(
        "rst-at-mail",
        "MAIL",
        reset(),
        ConnectionLostError,
        NO_CONTENT,
        description="the connection is reset instead of the MAIL reply",
    ),
    _eof(
        "eof-at-rcpt",
        "RCPT",
        close(),
        ConnectionLostError,
        NO_CONTENT,
        description="the connection closes instead of the RCPT reply",
    ),
    _eof(
        "eof-at-data",
        "DATA",
        close(),
        ConnectionLostError,
        NO_CONTENT,
        description="the connection closes instead of the 354",
    ),
    _eof(
        "rst-at-data",
        "DATA",
        reset(),
        ConnectionLostError,
        NO_CONTENT,
        description="the connection is reset instead of the 354",
    ),
    _eof(
        "eof-after-content",
        "MESSAGE",
        close(),
        OutcomeUnknownError,
        twice(BODY_MARKER, "the message sent twice"),
        description="the connection closes after the content, before the final reply: "
        "the outcome is unknown",
        source=UNKNOWN,
    ),
    _eof(
        "rst-after-content",
        "MESSAGE",
        reset(),
        OutcomeUnknownError,
        twice(BODY_MARKER, "the message sent twice"),
        description="the connection is reset after the content: the outcome is unknown",
        source=UNKNOWN,
    ),
    _eof(
        "eof-mid-reply",
        "EHLO",
        [b"250-mx.hostile.test\r\n250-PIPEL", close()],
        ConnectionLostError,
        NO_MAIL,
        description="the connection closes in the middle of a reply line",
    ),
    _eof(
        "eof-at-starttls",
        "STARTTLS",
        ["220 2.0.0 ready", close()],
        ConnectionLostError,
        NO_MAIL,
        PLAINTEXT_AFTER_STARTTLS,
        description="the connection closes after the 220 to STARTTLS, before the handshake",
        server=TLS_SERVER,
        client=TLS_CLIENT,
    ),
    _eof(
        "rst-at-starttls",
        "STARTTLS",
        ["220 2.0.0 ready", reset()],
        ConnectionLostError,
        NO_MAIL,
        PLAINTEXT_AFTER_STARTTLS,
        description="the connection is reset after the 220 to STARTTLS",
        server=TLS_SERVER,
        client=TLS_CLIENT,
    ),
    _eof(
        "eof-at-auth",
        "AUTH",
        close(),
        ConnectionLostError,
        NO_MAIL,
        description="the connection closes instead of the reply to AUTH",
        steps=(Login(), Send()),
        server=AUTH_SERVER,
    ),
    _eof(
        "rst-at-auth-response",
        "AUTH",
        replies("334 VXNlcm5hbWU6", reset()),
        ConnectionLostError,
        NO_MAIL,
        description="the connection is reset after the user name of AUTH LOGIN",
        steps=(Login(mechanism="LOGIN"), Send()),
        server=AUTH_SERVER,
    ),
    _eof(
        "eof-at-quit",
        "QUIT",
        close(),
        ConnectionLostError,
        NOTHING_AFTER_QUIT,
        description="the connection closes instead of the 221 to QUIT",
        steps=(Small("QUIT"),),
    ),
    case(
        "421-inside-pipelined-batch",
        TIMEOUTS_AND_FAULTS,
        "421 to the second MAIL of a pipelined batch: the first message keeps its result, the "
        "others get the 421; nothing more is written",
        "RFC 2920 §3.1; RFC 5321 §3.8; smtpbee design (results settled are kept)",
        Server({"MAIL": replies(DEFAULT, ["421 4.3.2 shutting down", close()])}),
        Expect(
            batch=("SendResult", "TransientReplyError", "TransientReplyError"),
            usable=False,
            delivered=1,
        ),
        NO_THIRD,
        ONE_FIRST,
        steps=(Batch(BATCH),),
    ),
    case(
        "421-to-final-dot-in-batch",
        TIMEOUTS_AND_FAULTS,
        "421 to the second message's final dot in a pipelined batch: it was not delivered "
        "(the server said so); no retry, no third message",
        "RFC 2920 §3.1; RFC 5321 §3.8",
        Server({"MESSAGE": replies(DEFAULT, ["421 4.3.2 shutting down", close()])}),
        Expect(
            batch=("SendResult", "TransientReplyError", "TransientReplyError"),
            usable=False,
            delivered=1,
        ),
        NO_THIRD,
        ONE_FIRST,
        ONE_SECOND,
        steps=(Batch(BATCH),),
    ),
    case(
        "eof-after-content-in-batch",
        TIMEOUTS_AND_FAULTS,
        "the connection closes after the second message's content in a batch: that one is "
        "outcome-unknown (never resent), the third was never sent",
        UNKNOWN,
        Server({"MESSAGE": replies(DEFAULT, close())}),
        Expect(
            batch=("SendResult", "OutcomeUnknownError", "ConnectionLostError"),
            usable=False,
            delivered=1,
        ),
        NO_THIRD,
        ONE_FIRST,
        ONE_SECOND,
        steps=(Batch(BATCH),),
    ),
    case(
        "421-to-rcpt-in-group",
        TIMEOUTS_AND_FAULTS,
        "421 to RCPT inside a pipelined MAIL/RCPT/DATA group: closing; no content",
        "RFC 2920 §3.1; RFC 5321 §3.8",
        Server({"RCPT": ["421 4.3.2 shutting down", close()]}),
        Expect(TransientReplyError, usable=False),
        NO_CONTENT,
        Forbidden(b"RSET", "nothing may be sent to a closing server"),
        steps=SEND,
    ),
    *(
        case(
            f"refused-mail-then-close-{how}",
            TIMEOUTS_AND_FAULTS,
            f"554 to MAIL ({how}), then the server closes: the refusal is the outcome (a "
            "permanent error, not a connection error that invites a retry)",
            SETTLED,
            Server({"MAIL": ["554 5.7.1 not from you", close()]}, extensions=extensions),
            Expect(PermanentReplyError, match="554", usable=False, delivered=0),
            NO_RETRY,
            # With CHUNKING the content is in the group (RFC 3030 §4.2: refused with MAIL).
            *(() if how == "bdat" else (NO_CONTENT,)),
            steps=SEND,
        )
        for how, extensions in (
            ("lockstep", ()),
            ("pipelined", ("PIPELINING",)),
            ("bdat", CHUNKING),
        )
    ),
    case(
        "refused-rcpt-then-close",
        TIMEOUTS_AND_FAULTS,
        "550 to the only RCPT of a pipelined group, then the server closes before answering "
        "DATA: every recipient was refused, so that is the outcome; no content",
        SETTLED,
        Server({"RCPT": ["550 5.1.1 no such user", close()]}),
        Expect(PermanentReplyError, match="550", usable=False, delivered=0),
        NO_CONTENT,
        NO_RETRY,
        steps=SEND,
    ),
    case(
        "refused-content-then-close",
        TIMEOUTS_AND_FAULTS,
        "554 to the final dot, then the server closes before the RSET is answered: the "
        "content was refused, and that is the outcome (not OutcomeUnknownError)",
        SETTLED,
        Server({"MESSAGE": ["554 5.7.1 refused", close()]}),
        Expect(PermanentReplyError, match="554", usable=False, delivered=0),
        NO_RETRY,
        steps=SEND,
    ),
    case(
        "refused-then-close-in-batch",
        TIMEOUTS_AND_FAULTS,
        "554 to the second MAIL of a batch, then the server closes: the first keeps its "
        "result, the second gets the refusal, the third the lost connection",
        SETTLED,
        Server({"MAIL": replies(DEFAULT, ["554 5.7.1 not from you", close()])}),
        Expect(
            batch=("SendResult", "PermanentReplyError", "ConnectionLostError"),
            usable=False,
            delivered=1,
        ),
        NO_THIRD,
        ONE_FIRST,
        steps=(Batch(BATCH),),
    ),
    case(
        "refused-rcpt-then-close-in-batch",
        TIMEOUTS_AND_FAULTS,
        "the second message's only RCPT refused, 554 to its DATA, then the server closes "
        "before the RSET is answered: the second gets the refusal, the third the lost "
        "connection",
        SETTLED,
        Server(
            {
                "RCPT": replies(DEFAULT, "550 5.1.1 no such user"),
                "DATA": replies(DEFAULT, ["554 5.5.1 no valid recipients", close()]),
            }
        ),
        Expect(
            batch=("SendResult", "PermanentReplyError", "ConnectionLostError"),
            usable=False,
            delivered=1,
        ),
        NO_THIRD,
        ONE_FIRST,
        steps=(Batch(BATCH),),
    ),
    # A CHUNKING batch writes the three transactions whole (MAIL, RCPT, BDAT
    # LAST) before reading a reply: each reply is matched by its position.
    case(
        "refused-mail-in-chunking-window",
        TIMEOUTS_AND_FAULTS,
        "554 to the second MAIL of a CHUNKING batch written whole: the second gets the "
        "refusal, the first and third are delivered once; the third starts with RSET",
        "RFC 3030 §2, §4.2; RFC 2920 §3.1; smtpbee design (a refusal is never misattributed)",
        Server({"MAIL": replies(DEFAULT, "554 5.7.1 not from you")}, extensions=CHUNKING),
        Expect(batch=("SendResult", "PermanentReplyError", "SendResult"), delivered=2),
        ONE_FIRST,
        ONE_SECOND,
        twice(b"third message", "a message of the window was sent twice"),
        steps=(Batch(BATCH),),
    ),
    case(
        "421-inside-chunking-window",
        TIMEOUTS_AND_FAULTS,
        "421 to the second MAIL of a CHUNKING batch written whole: the first keeps its "
        "result, the second and third get the 421 (the server took neither); no retry",
        "RFC 5321 §3.8; RFC 2920 §3.1; smtpbee design (results settled are kept)",
        Server(
            {"MAIL": replies(DEFAULT, ["421 4.3.2 shutting down", close()])},
            extensions=CHUNKING,
        ),
        Expect(
            batch=("SendResult", "TransientReplyError", "TransientReplyError"),
            usable=False,
            delivered=1,
        ),
        ONE_FIRST,
        ONE_SECOND,
        steps=(Batch(BATCH),),
    ),
    case(
        "eof-after-chunking-window",
        TIMEOUTS_AND_FAULTS,
        "the connection closes instead of the second BDAT LAST's reply, the whole window "
        "written: the second and third have their content out, so both are outcome-unknown",
        UNKNOWN,
        Server({"MESSAGE": replies(DEFAULT, close())}, extensions=CHUNKING),
        Expect(
            batch=("SendResult", "OutcomeUnknownError", "OutcomeUnknownError"),
            usable=False,
            delivered=1,
        ),
        ONE_FIRST,
        ONE_SECOND,
        steps=(Batch(BATCH),),
    ),
    case(
        "tls-cut-mid-reply",
        TIMEOUTS_AND_FAULTS,
        "under implicit TLS, the connection is cut (RST, no close_notify) in the middle of "
        "the EHLO reply: a lost connection, not a short reply",
        "RFC 8446 §6.1 (truncation: close_notify); RFC 8314",
        Server(
            {"EHLO": [b"250-mx.hostile.test\r\n250-PIPE", pause(0.02), reset()]},
            AUTH,
            tls="implicit",
            users=USERS,
        ),
        Expect(ConnectionLostError),
        NO_MAIL,
        NO_AUTH,
        steps=LOGIN_AND_SEND,
        client=Client(tls="implicit"),
    ),
    case(
        "tls-closed-mid-reply",
        TIMEOUTS_AND_FAULTS,
        "under implicit TLS, close_notify and FIN in the middle of a multi-line reply: "
        "a lost connection, the partial reply is never used",
        "RFC 8446 §6.1; RFC 5321 §4.2",
        Server(
            {"EHLO": [b"250-mx.hostile.test\r\n250-AUTH PLAIN\r\n", close()]},
            AUTH,
            tls="implicit",
            users=USERS,
        ),
        Expect(ConnectionLostError),
        NO_MAIL,
        NO_AUTH,
        steps=LOGIN_AND_SEND,
        client=Client(tls="implicit"),
    ),
)

CASES: tuple[Case, ...] = (
    *MALFORMED,
    *OVERSIZED,
    *STARTTLS_CASES,
    *AUTH_CASES,
    *DATA_CASES,
    *TLS_CASES,
    *FAULTS,
)
"""Every case, in category order."""


def by_category() -> dict[Category, list[Case]]:
    """The cases grouped by category, in CATEGORIES order."""
    grouped: dict[Category, list[Case]] = {category: [] for category in CATEGORIES}
    for each in CASES:
        grouped[each.category].append(each)
    return grouped


def _check_table() -> None:
    ids = [each.id for each in CASES]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise ValueError(f"duplicate case ids: {sorted(duplicates)}")
    for each in CASES:
        if each.client.timeout > 0.5 or any(v > 0.5 for v in each.client.timeouts.values()):
            raise ValueError(f"{each.id}: timeouts in this suite are at most 0.5 s")


_check_table()
