"""`smtpbee shell`: the typed-line parser, the guide, the shell in process, and in a terminal.

The terminal tests run the shell in a child process on a pseudo-terminal (the
standard library's pty): readline is live there, so Tab completion and the
unechoed password are what a person would get. Every read has a deadline, and
the child is killed (by its pid) if it outlives its test.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from servers import LoopbackCA
from smtpbee import (
    EnhancedStatus,
    Extensions,
    InvalidInputError,
    ReplyKind,
    SessionLog,
    Verb,
)
from smtpbee._state import REPLY_RULES, classify_reply
from smtpbee.cli import _shell_guide as guide
from smtpbee.cli._shell import Shell, ShellClient
from smtpbee.cli._shell_parse import (
    ParseError,
    mail_parameters,
    parse_line,
    rcpt_parameters,
)
from smtpbee.testing import ThreadedServer

ScriptedFactory = Callable[..., ThreadedServer]

# --------------------------------------------------------------------------------------
# The parser: typed line -> Command


@pytest.mark.parametrize(
    ("typed", "wire"),
    [
        ("EHLO client.test", b"EHLO client.test\r\n"),
        ("ehlo client.test", b"EHLO client.test\r\n"),
        ("HELO client.test", b"HELO client.test\r\n"),
        ("MAIL FROM:<a@example.test>", b"MAIL FROM:<a@example.test>\r\n"),
        ("mail from: <>", b"MAIL FROM:<>\r\n"),
        (
            "MAIL FROM:<a@example.test> SIZE=100 BODY=8bitmime SMTPUTF8 RET=hdrs",
            b"MAIL FROM:<a@example.test> SIZE=100 BODY=8BITMIME SMTPUTF8 RET=HDRS\r\n",
        ),
        # The xtext typed is the xtext sent: decoded here, encoded again by Mail.
        ("MAIL FROM:<a@example.test> ENVID=id+2B1", b"MAIL FROM:<a@example.test> ENVID=id+2B1\r\n"),
        (
            "MAIL FROM:<a@example.test> AUTH=<> MT-PRIORITY=-3 REQUIRETLS X-FOO=bar",
            b"MAIL FROM:<a@example.test> REQUIRETLS MT-PRIORITY=-3 AUTH=<> X-FOO=bar\r\n",
        ),
        ('MAIL FROM:<"odd>name"@example.test>', b'MAIL FROM:<"odd>name"@example.test>\r\n'),
        ("RCPT TO:<b@example.test>", b"RCPT TO:<b@example.test>\r\n"),
        (
            "RCPT TO:<b@example.test> NOTIFY=failure,success ORCPT=rfc822;b+2Bx@example.test",
            b"RCPT TO:<b@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@example.test\r\n",
        ),
        ("RCPT TO:<b@example.test> NOTIFY=NEVER", b"RCPT TO:<b@example.test> NOTIFY=NEVER\r\n"),
        ("DATA", b"DATA\r\n"),
        ("rset", b"RSET\r\n"),
        ("NOOP", b"NOOP\r\n"),
        ("NOOP are you there", b'NOOP "are you there"\r\n'),
        ("HELP MAIL", b"HELP MAIL\r\n"),
        ("VRFY postmaster", b"VRFY postmaster\r\n"),
        ("VRFY postmaster SMTPUTF8", b"VRFY postmaster SMTPUTF8\r\n"),
        ("EXPN staff", b"EXPN staff\r\n"),
        ("STARTTLS", b"STARTTLS\r\n"),
        ("AUTH plain", b"AUTH PLAIN\r\n"),
        ("AUTH PLAIN AG1lAHNlY3JldA==", b"AUTH PLAIN AG1lAHNlY3JldA==\r\n"),
        ("AUTH EXTERNAL =", b"AUTH EXTERNAL =\r\n"),
        ("QUIT", b"QUIT\r\n"),
    ],
)
def test_a_typed_line_becomes_the_command_it_says(typed: str, wire: bytes) -> None:
    assert parse_line(typed).to_bytes(smtputf8=True) == wire


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        # What the Command constructors refuse, shown as their message.
        ("MAIL FROM:<a@example.test\rRCPT TO:<v@example.test>", "control character"),
        ("EHLO a\x00b", "control character"),
        ("NOOP \x1b[2J", "control character"),
        ("RCPT TO:<not an address>", "recipient"),
        ("RCPT TO:<>", "recipient"),
        ("MAIL FROM:<a@example.test> BODY=9BIT", "BODY must be"),
        ("MAIL FROM:<a@example.test> ENVID=a=b", "xtext"),
        ("RCPT TO:<b@example.test> NOTIFY=SOMETIMES", "NOTIFY must be"),
        ("MAIL FROM:<a@example.test> MT-PRIORITY=12", "MT-PRIORITY"),
        # The syntax of the typed line itself.
        ("MAIL a@example.test", "MAIL FROM:<name@example.test>"),
        ("MAIL FROM:a@example.test", "angle brackets"),
        ("MAIL FROM:<a@example.test", "closing '>'"),
        ("MAIL FROM:<a@example.test>SIZE=1", "a space must separate"),
        ("MAIL FROM:<a@example.test> SIZE=1 size=2", "given twice"),
        ("MAIL FROM:<a@example.test> SIZE=big", "SIZE= takes a number"),
        ("MAIL FROM:<a@example.test> SMTPUTF8=yes", "takes no value"),
        ("RCPT TO:<b@example.test> ORCPT=utf-8;b", "ORCPT=rfc822;ADDRESS"),
        ("EHLO", "takes one argument"),
        ("EHLO two words", "takes one argument"),
        ("DATA now", "takes no argument"),
        ("VRFY", "needs an argument"),
        ("AUTH", "AUTH MECHANISM"),
        ("AUTH PLAIN not*base64", "not valid base64"),
        ("BDAT 10 LAST", "`send` uses BDAT"),
        ("XYZZY magic", "`raw XYZZY magic` sends it anyway"),
        ("", "an empty command"),
    ],
)
def test_a_line_smtpbee_would_not_send_is_refused_with_the_reason(typed: str, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_line(typed)
    assert reason in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert not isinstance(caught.value, InvalidInputError)  # friendly, not a library error


def test_the_parameters_offered_are_what_tab_completes() -> None:
    everything = Extensions(
        "mx.test",
        {
            "SIZE": ("1000",),
            "8BITMIME": (),
            "SMTPUTF8": (),
            "DSN": (),
            "REQUIRETLS": (),
            "MT-PRIORITY": (),
            "AUTH": ("PLAIN",),
        },
    )
    assert mail_parameters(everything) == [
        "SIZE=",
        "BODY=7BIT ",
        "BODY=8BITMIME ",
        "SMTPUTF8 ",
        "RET=FULL ",
        "RET=HDRS ",
        "ENVID=",
        "REQUIRETLS ",
        "MT-PRIORITY=",
        "AUTH=",
    ]
    assert "NOTIFY=NEVER " in rcpt_parameters(everything)
    assert "ORCPT=rfc822;" in rcpt_parameters(everything)
    nothing = Extensions("mx.test", {})
    assert mail_parameters(nothing) == []
    assert rcpt_parameters(nothing) == []


# --------------------------------------------------------------------------------------
# The guide


def test_every_explanation_says_what_the_rule_table_says() -> None:
    # One source of truth: the meaning in the text is classify_reply's, for every
    # command the shell sends and every class of code.
    words = {
        ReplyKind.SUCCESS: ": success",
        ReplyKind.INTERMEDIATE: ": go on",
        ReplyKind.TRANSIENT: ": a transient refusal",
        ReplyKind.PERMANENT: ": a permanent refusal",
        ReplyKind.CLOSING: ": the server is closing",
        ReplyKind.VIOLATION: ": a protocol violation",
    }
    for verb, rule in REPLY_RULES.items():
        if not rule.answered:
            continue
        for code in (211, 214, 220, 221, 235, 250, 251, 252, 334, 354, 421, 450, 530, 550, 599):
            kind, trigger = classify_reply(rule, code)
            text = flat(guide.explain_reply(verb, code, None))
            assert f"{code} to {verb.value}{words[kind]}" in text, (verb, code, text)
            if trigger is not None:
                assert f"it fires {trigger.name}" in text
            assert rule.source.split(" ")[0] in text


def test_a_reply_is_explained_by_its_rule_its_digits_and_its_enhanced_code() -> None:
    text = flat(guide.explain_reply(Verb.RCPT, 550, EnhancedStatus(5, 1, 1)))
    assert "550 to RCPT: a permanent refusal (5xx), one the RFC lists for it" in text
    assert "5xx: permanent negative" in text
    assert "x5x: the mail system" in text
    assert "5.1.1: permanent failure; addressing: bad destination mailbox address" in text
    unlisted = flat(guide.explain_reply(Verb.RCPT, 556, None))
    assert "read by its first digit (the RFC does not list it here)" in unlisted
    greeting = flat(guide.explain_reply(None, 220, None, greeting=True))
    assert "220 to the greeting: success; it fires GREETING_ACCEPTED" in greeting
    unasked = flat(guide.explain_reply(None, 421, EnhancedStatus(4, 4, 2)))
    assert "did not ask for" in unasked and "network and routing: bad connection" in unasked


def test_enhanced_codes_outside_the_registry_are_said_to_be() -> None:
    assert guide.enhanced_meaning(EnhancedStatus(5, 7, 8)).endswith(
        "authentication credentials invalid"
    )
    assert "a detail not in the registry" in guide.enhanced_meaning(EnhancedStatus(4, 2, 99))
    assert "an unknown subject" in guide.enhanced_meaning(EnhancedStatus(2, 9, 0))


def test_the_guide_knows_every_command_and_shortcut_typed() -> None:
    assert guide.explain_verb("mail") is guide.COMMANDS[Verb.MAIL]
    assert guide.explain_verb("tls") is guide.SHORTCUTS["tls"][0]
    assert guide.explain_verb("XYZZY") is None
    for verb, usage in guide.COMMANDS.items():
        assert usage.syntax.split(" ")[0] == verb.value


# --------------------------------------------------------------------------------------
# The shell in process: scripted input, output in a StringIO


def shell_for(
    port: int,
    lines: Iterable[str | BaseException],
    *,
    secrets: Iterable[str] = (),
    tls: str = "opportunistic",
    greet_only: bool = True,
    cafile: str | None = None,
    delivered: Callable[[], Path | None] | None = None,
    log: SessionLog | None = None,
) -> tuple[Shell, io.StringIO]:
    """A Shell on 127.0.0.1:port that reads ``lines`` (then end of input).

    An exception among the lines is raised where it stands (KeyboardInterrupt: ^C).
    """
    import ssl

    out = io.StringIO()
    typed = iter(lines)
    hidden = iter(secrets)

    def read_line(prompt: str) -> str:
        out.write(prompt)
        line = next(typed, None)
        if line is None:
            raise EOFError
        if isinstance(line, BaseException):
            raise line
        out.write(line + "\n")
        return line

    def read_secret(prompt: str) -> str:
        out.write(prompt + "\n")
        return next(hidden)

    context = ssl.create_default_context(cafile=cafile) if cafile else None

    def make(transcript: Callable[[str, str], None]) -> ShellClient:
        return ShellClient(
            "127.0.0.1",
            port,
            tls=tls,
            ssl_context=context,
            server_hostname="localhost",
            local_hostname="client.test",
            timeout=5,
            transcript=transcript,
            session_log=log,
        )

    shell = Shell(
        make,
        out=out,
        read_line=read_line,
        read_secret=read_secret,
        greet_only=greet_only,
        delivered=delivered,
    )
    return shell, out


def flat(text: str | Iterable[str]) -> str:
    """Text with every run of white space made one space (the shell wraps its notes)."""
    return " ".join((text if isinstance(text, str) else " ".join(text)).split())


def in_order(text: str, fragments: Iterable[str]) -> None:
    text = flat(text)
    position = 0
    for fragment in map(flat, fragments):
        found = text.find(fragment, position)
        assert found >= 0, f"{fragment!r} missing after position {position}:\n{text}"
        position = found + len(fragment)


def test_a_whole_session_typed_by_hand(scripted_server: ScriptedFactory) -> None:
    running = scripted_server()
    session = [
        "EHLO client.test",
        "MAIL FROM:<alice@example.test> SIZE=60",
        "RCPT TO:<bob@example.test>",
        "DATA",
        "Subject: by hand",
        "",
        ".a line with a leading dot",
        "bye",
        ".",
        "QUIT",
    ]
    log = SessionLog()
    shell, out = shell_for(running.port, session, log=log)
    assert shell.run() == 0
    text = out.getvalue()
    in_order(
        text,
        [
            "S: 220 ",
            "220 to the greeting: success",
            "[state GREETING -> CONNECTED:",
            "CONNECTED> EHLO client.test",
            "C: EHLO client.test",
            "S: 250-PIPELINING",
            "250 to EHLO: success; it fires HELLO_ACCEPTED",
            "[state CONNECTED -> READY: introduced",
            "C: MAIL FROM:<alice@example.test> SIZE=60",
            "250 to MAIL: success",
            "2.1.0: success; addressing",
            "[state READY -> MAIL:",
            "C: RCPT TO:<bob@example.test>",
            "[state MAIL -> RCPT:",
            "C: DATA",
            "S: 354 ",
            "354 to DATA: go on; it fires DATA_ACCEPTED",
            "[state RCPT -> DATA:",
            "A line holding only '.' ends it",
            "data> Subject: by hand",
            "(this line goes out as '.' + the line",
            "C: .",
            "250 to end of data (CRLF.CRLF): success",
            "[state DATA -> READY:",
            "C: QUIT",
            "221 to QUIT: success",
            "[state READY -> CLOSING:",
        ],
    )
    # The content lines are not echoed as "<n octets>": the person typed them.
    assert "octets of content>" not in text
    [message] = running.messages
    assert message.content == b"Subject: by hand\r\n\r\n.a line with a leading dot\r\nbye\r\n"
    assert b"\r\n..a line with a leading dot\r\n" in message.wire
    # The session log has every write and reply, each with the state after it.
    written = [(r["dir"], r["data"], r["state"]) for r in log.records if r["dir"] != "event"]
    assert written[:3] == [
        ("S", "220 mx.smtpbee.test ESMTP smtpbee.testing", "CONNECTED"),
        ("C", "EHLO client.test", "CONNECTED"),
        ("S", written[2][1], "READY"),
    ]
    assert ("C", "QUIT", "READY") in written


def test_question_mark_lists_what_is_legal_and_why_the_rest_is_not(
    scripted_server: ScriptedFactory,
) -> None:
    running = scripted_server()
    lines = ["?", "EHLO client.test", "? STARTTLS", "? mail", "MAIL FROM:<a@example.test>"]
    lines += ["RCPT TO:<b@example.test>", "?", "? send", "? frobnicate"]
    shell, out = shell_for(running.port, lines)
    shell.run()
    text = out.getvalue()
    first, second = text.split("CONNECTED> ?")[1], text.split("RCPT> ?")[1]
    connected = first.split("Not now:")
    assert "EHLO your.name" in connected[0] and "QUIT" in connected[0]
    assert "MAIL FROM" not in connected[0]
    # The reasons are the connection's, without the state said once above them.
    assert "  MAIL      MAIL is not allowed in state CONNECTED\n" in connected[1]
    assert "  STARTTLS  STARTTLS is not allowed in state CONNECTED\n" in connected[1]
    assert "State RCPT: at least one recipient accepted" in second
    legal, not_now = second.split("Not now:")[0], second.split("Not now:")[1].split("Always")[0]
    for typed in ("RCPT TO:<address>", "DATA", "RSET", "QUIT"):
        assert typed in legal
    for refused in ("EHLO", "MAIL", "STARTTLS", "AUTH"):
        assert f"{refused:<9} {refused} is not allowed in state RCPT" in not_now
    # What the connection knows beyond the state: the server's offer.
    assert "STARTTLS: switch to TLS" in text
    assert "not now: the server does not offer STARTTLS" in text
    assert "MAIL FROM:<address> [SIZE=n BODY=8BITMIME ...]: open a mail transaction" in text
    assert "legal now." in text
    assert "not now: MAIL is not allowed in state RCPT" in text
    assert "'frobnicate': not a command the shell knows" in text


def test_an_illegal_command_is_refused_with_its_reason_and_never_sent(
    scripted_server: ScriptedFactory,
) -> None:
    running = scripted_server()
    lines = ["DATA", "MAIL FROM:<a@example.test>", "EHLO client.test", "RCPT TO:<b@example.test>"]
    lines += ["MAIL FROM:<a@example.test> SIZE=999999999999", "FOO bar", "BDAT 3 LAST"]
    shell, out = shell_for(running.port, lines)
    shell.run()
    text = out.getvalue()
    assert "refused, nothing was sent: DATA is not allowed in state CONNECTED" in text
    assert "`raw DATA` sends it anyway, unchecked.)" in text
    assert "refused, nothing was sent: MAIL is not allowed in state CONNECTED" in text
    assert "refused, nothing was sent: RCPT is not allowed in state READY" in text
    assert "not sent: the message is 999999999999 octets; the server accepts at most" in text
    assert "not sent: 'FOO' is not an SMTP command" in text
    verbs = [command.verb for command in running.commands]
    assert verbs == ["EHLO", "QUIT"]


def test_the_shortcuts_send_tls_and_auth(
    scripted_server: ScriptedFactory, trust_ca: LoopbackCA
) -> None:
    running = scripted_server(
        tls="starttls", tls_context=trust_ca.server_context(), users={"me": "secret"}
    )
    lines = [
        "auth me",  # not offered before EHLO
        "EHLO client.test",
        "auth me",  # refused locally: not encrypted
        "tls",
        "auth me --mechanism PLAIN",
        "send me@example.test you@example.test other@example.test --subject Hi --body Hello",
        "send",
        "me@example.test",
        "you@example.test, ",
        "Prompted",
        "line one",
        ".",
    ]
    shell, out = shell_for(
        running.port, lines, secrets=["secret", "secret"], cafile=trust_ca.cafile
    )
    assert shell.run() == 0
    text = out.getvalue()
    in_order(
        text,
        [
            "not now: AUTH is not allowed in state CONNECTED",
            "C: EHLO client.test",
            "not sent: refusing AUTH over plaintext",
            "C: STARTTLS",
            "220 to STARTTLS: success; it fires STARTTLS_ACCEPTED",
            "[state READY -> TLS_HANDSHAKE:",
            "C: <TLS handshake done>",
            "TLS is on: TLSv1.",
            "certificate is verified",
            "C: EHLO client.test",
            "[state CONNECTED -> READY:",
            "C: AUTH PLAIN <redacted>",
            "235 to AUTH: success",
            "Logged in as me.",
            "C: MAIL FROM:<me@example.test>",
            "C: RCPT TO:<you@example.test>",
            "C: RCPT TO:<other@example.test>",
            "Sent. Accepted: you@example.test, other@example.test. Refused: nobody.",
            "from: ",
            "subject: ",
            "body> line one",
            "Sent. Accepted: you@example.test.",
        ],
    )
    assert "secret" not in text.replace("password (not shown): ", "")
    first, second = running.messages
    assert first.tls and first.user == "me"
    assert b"Subject: Hi" in first.content and b"Hello" in first.content
    assert b"Subject: Prompted" in second.content and b"line one" in second.content
    assert b"Message-ID: <" in second.content and b"Date: " in second.content


def test_auth_typed_by_hand_reads_the_responses_unseen(scripted_server: ScriptedFactory) -> None:
    running = scripted_server(users={"me": "secret"})
    login = base64.b64encode(b"\0me\0secret").decode()
    lines = ["EHLO client.test", "AUTH PLAIN", "NOOP"]
    shell, out = shell_for(running.port, lines, secrets=["not base64!", login])
    shell.run()
    text = out.getvalue()
    in_order(
        text,
        [
            "C: AUTH PLAIN",
            "334 to AUTH: go on; it fires AUTH_CHALLENGED",
            "[state READY -> AUTH:",
            "not sent: not valid base64",
            "C: <redacted>",
            "235 to AUTH response: success",
            "[state AUTH -> READY:",
            "C: NOOP",
        ],
    )
    assert login not in text
    assert running.sessions[0].user == "me"


def test_a_refused_starttls_is_a_reply_to_read_not_the_end(
    scripted_server: ScriptedFactory,
) -> None:
    running = scripted_server({"STARTTLS": "454 4.7.0 TLS not available"}, tls="starttls")
    shell, out = shell_for(running.port, ["EHLO client.test", "tls", "NOOP"])
    assert shell.run() == 0
    text = out.getvalue()
    in_order(
        text,
        [
            "C: STARTTLS",
            "454 to STARTTLS: a transient refusal (4xx), one the RFC lists for it",
            "4.7.0: persistent transient failure; security or policy",
            "[state READY: introduced",
            "C: NOOP",
        ],
    )


def test_the_session_ends_when_the_server_closes(scripted_server: ScriptedFactory) -> None:
    running = scripted_server({"MAIL": "421 4.3.2 going down"})
    lines = ["EHLO client.test", "MAIL FROM:<a@example.test>", "NOOP"]
    shell, out = shell_for(running.port, lines)
    assert shell.run() == 75
    text = out.getvalue()
    assert "421 to MAIL: the server is closing the connection" in text
    assert "[state READY -> CLOSING:" in text
    assert "the shell ends here." in text
    assert "C: NOOP" not in text


def test_the_teaching_server_tells_where_it_wrote_the_message(tmp_path: Path) -> None:
    from smtpbee.cli._tour_server import TourServer

    with TourServer(tmp_path) as server:

        def delivered() -> Path | None:
            return server.deliveries[-1].path if server.deliveries else None

        lines = [
            "EHLO client.test",
            "MAIL FROM:<a@example.test>",
            "RCPT TO:<alice@tour.smtpbee.test>",
        ]
        lines += ["DATA", "hello", ".", "send a@example.test postmaster@tour.smtpbee.test --body b"]
        shell, out = shell_for(server.port, [*lines, "a prompted subject"], delivered=delivered)
        assert shell.run() == 0
    text = out.getvalue()
    first, second = (str(d.path) for d in server.deliveries)
    in_order(text, ["C: .", f"accepted to: {first}", "Sent.", f"accepted to: {second}"])


def test_implicit_tls_and_a_required_starttls_open_the_session(
    scripted_server: ScriptedFactory, trust_ca: LoopbackCA
) -> None:
    implicit = scripted_server(tls="implicit", tls_context=trust_ca.server_context())
    shell, out = shell_for(
        implicit.port, ["EHLO client.test"], tls="implicit", cafile=trust_ca.cafile
    )
    assert shell.run() == 0
    in_order(out.getvalue(), ["C: <TLS handshake done>", "TLS is on:", "S: 220 ", "C: EHLO"])
    assert implicit.commands[0].tls
    # --tls starttls: the client's whole opening, every reply explained.
    starttls = scripted_server(tls="starttls", tls_context=trust_ca.server_context())
    shell, out = shell_for(
        starttls.port, ["NOOP"], tls="starttls", cafile=trust_ca.cafile, greet_only=False
    )
    assert shell.run() == 0
    in_order(
        out.getvalue(),
        [
            "[state GREETING -> CONNECTED:",
            "C: EHLO client.test",
            "[state CONNECTED -> READY:",
            "C: STARTTLS",
            "[state READY -> TLS_HANDSHAKE:",
            "C: <TLS handshake done>",
            "C: EHLO client.test",
            "[state CONNECTED -> READY:",
            "READY> NOOP",
            "C: NOOP",
        ],
    )


def test_no_server_is_an_exit_code_not_a_traceback() -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    shell, _ = shell_for(port, [])
    assert shell.run() == 75


def test_interrupts_and_the_end_of_input_in_every_corner(scripted_server: ScriptedFactory) -> None:
    running = scripted_server(users={"me": "secret"})
    lines: list[str | BaseException] = [
        KeyboardInterrupt(),
        "EHLO client.test",
        "AUTH LOGIN",  # the response: * cancels
        "auth --mechanism",
        "auth a b",
        "auth 'unclosed",
        "tls now",
        "send 'unclosed",
        "send --subject",
        "send a@example.test",  # then no recipient
        "",
        "send",
        EOFError(),
        "MAIL FROM:<a@example.test>",
        "RCPT TO:<b@example.test>",
        "DATA",
        KeyboardInterrupt(),
        "caf\xe9",  # 8-bit content without BODY=8BITMIME: refused, the line only
        "fine",
        # end of input in the middle of the content
    ]
    shell, out = shell_for(running.port, lines, secrets=["*"])
    shell.run()
    text = flat(out.getvalue())
    for said in (
        "^C (the line is dropped",
        "501 to AUTH cancel (*): a permanent refusal",
        "auth: --mechanism needs a name",
        "usage: auth [USER]",
        "auth: No closing quotation",
        "tls takes no argument",
        "send: No closing quotation",
        "send: --subject needs a value",
        "send: no recipient, nothing was sent",
        "send: cancelled, nothing was sent",
        "SMTP cannot cancel DATA",
        "not sent: the content has 8-bit octets",
        "the content was not ended with '.': nothing is delivered: the shell ends here.",
    ):
        assert flat(said) in text, said
    assert running.messages == []


def test_candidates_follow_the_state_and_the_offer(scripted_server: ScriptedFactory) -> None:
    running = scripted_server(users={"me": "secret"})
    shell, _ = shell_for(running.port, [])
    shell.client.greet()
    try:
        assert shell.candidates("", "") == [
            "EHLO ",
            "HELO ",
            "RSET ",
            "NOOP ",
            "HELP ",
            "QUIT ",
            "? ",
            "raw ",
        ]
        assert shell.candidates("", "ma") == []  # MAIL is not legal before EHLO
        assert shell.candidates("", "e") == ["EHLO "]
        assert shell.candidates("EHLO ", "") == ["client.test "]
        shell.handle("EHLO client.test")
        assert shell.candidates("", "ma") == ["MAIL "]
        assert shell.candidates("", "a") == ["AUTH ", "auth "]
        assert shell.candidates("", "s") == ["send "]  # STARTTLS is not offered
        assert shell.candidates("MAIL ", "f") == ["FROM:<"]
        assert shell.candidates("MAIL FROM:<a@example.test> ", "SI") == ["SIZE="]
        assert shell.candidates("mail FROM:<a@example.test> ", "body=8") == ["BODY=8BITMIME "]
        after_size = shell.candidates("MAIL FROM:<a@example.test> SIZE=10 ", "")
        assert "SIZE=" not in after_size and "SMTPUTF8 " in after_size
        assert shell.candidates("RCPT ", "") == ["TO:<"]
        assert shell.candidates("RCPT TO:<b@example.test> ", "NOTIFY=N") == ["NOTIFY=NEVER "]
        assert shell.candidates("AUTH ", "") == ["LOGIN ", "PLAIN "]
        assert shell.candidates("auth me --mechanism ", "P") == ["PLAIN "]
        assert shell.candidates("auth me ", "--") == ["--mechanism ", "--insecure "]
        assert shell.candidates("send ", "--s") == ["--subject "]
        assert shell.candidates("VRFY postmaster ", "") == ["SMTPUTF8 "]
        assert "STARTTLS " in shell.candidates("? ", "")
        assert shell.candidates("raw ", "XC") == []
        assert shell.candidates("NOOP ", "") == []
    finally:
        shell.client.close()


def test_raw_sends_the_line_unchecked(scripted_server: ScriptedFactory) -> None:
    running = scripted_server()
    lines = ["EHLO client.test", "raw", "raw MAIL FROM:<a@example.test> BODY=FOO"]
    lines += [
        "raw RCPT TO:<b@example.test>",
        "raw DATA",
        ".bare",
        ".",
        "MAIL FROM:<a@example.test>",
    ]
    shell, out = shell_for(running.port, [*lines, "QUIT"])
    shell.run()
    text = out.getvalue()
    in_order(
        text,
        [
            "raw needs a line to send",
            "From now on the session is unchecked",
            "C!: MAIL FROM:<a@example.test> BODY=FOO",
            "250 to MAIL: success",
            "[unchecked: the state machine no longer follows this session]",
            "UNCHECKED> raw RCPT",
            "C!: DATA",
            "354 to DATA: go on",
            "354: type the content; nothing is dot-stuffed",
            "C!: .bare",
            "C!: .",
            "250 to end of data",
            "refused, nothing was sent: the session went unchecked",
            "C: QUIT",
            "221 to QUIT: success",
        ],
    )
    [message] = running.messages
    assert message.wire == b".bare\r\n.\r\n"  # not dot-stuffed: raw is raw
    assert message.mail.line == b"MAIL FROM:<a@example.test> BODY=FOO\r\n"


# --------------------------------------------------------------------------------------
# The shell in a terminal


_ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r")


class Terminal:
    """A child process on a pseudo-terminal; every read waits at most ``timeout`` seconds."""

    def __init__(self, args: list[str], timeout: float = 15.0) -> None:
        master, slave = pty.openpty()
        env = {**os.environ, "TERM": "dumb", "INPUTRC": os.devnull, "COLUMNS": "200"}
        # The child makes the terminal its controlling one (for getpass's /dev/tty):
        # a new session, then TIOCSCTTY on stdin, then the shell.
        bootstrap = (
            "import fcntl, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0);"
            "import argparse; from smtpbee.cli import _shell;"
            "p = argparse.ArgumentParser(); _shell.add_arguments(p);"
            "sys.exit(_shell.main(p.parse_args(sys.argv[1:])))"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", bootstrap, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.timeout = timeout
        self.seen = b""
        self.position = 0

    def send(self, text: str, *, secret: bool = False) -> None:
        """Type ``text`` once the child reads: readline (no canonical mode), or getpass (no echo).

        Typed too early, the terminal would hold it in its own line editing, or
        getpass would flush it.
        """
        flag = termios.ECHO if secret else termios.ICANON
        deadline = time.monotonic() + self.timeout
        while termios.tcgetattr(self.master)[3] & flag:
            if time.monotonic() > deadline:
                raise AssertionError(f"the child never read from the terminal:\n{self.text()}")
            time.sleep(0.01)
        os.write(self.master, text.encode())

    def expect(self, fragment: str) -> str:
        """Read until ``fragment`` appears after the last one found (escapes and CRs removed).

        Returns the screen so far.
        """
        wanted = fragment.encode()
        deadline = time.monotonic() + self.timeout
        while (found := self.clean().find(wanted, self.position)) < 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{fragment!r} never came; the screen:\n{self.text()}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"{fragment!r} never came (end); the screen:\n{self.text()}")
            self.seen += chunk
        self.position = found + len(wanted)
        return self.text()

    def clean(self) -> bytes:
        return _ESCAPES.sub(b"", self.seen)

    def text(self) -> str:
        return self.clean().decode("utf-8", "replace")

    def wait(self) -> int:
        return self.process.wait(timeout=self.timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=self.timeout)
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[Callable[..., Terminal]]:
    started: list[Terminal] = []

    def start(*args: str) -> Terminal:
        started.append(Terminal(list(args)))
        return started[-1]

    yield start
    for term in started:
        term.close()


def test_a_session_with_the_teaching_server_in_a_terminal(
    terminal: Callable[..., Terminal], tmp_path: Path
) -> None:
    log = tmp_path / "session.log"
    term = terminal("--log", str(log))
    term.expect("smtpbee shell: SMTP by hand, explained")
    term.expect("CONNECTED> ")
    term.send("EH\t")  # Tab completes the one legal command starting so
    term.expect("EHLO ")
    term.send("\t")  # and then the client's name
    term.expect("client.smtpbee.test ")
    term.send("\r")
    term.expect("[state CONNECTED -> READY:")
    term.expect("READY> ")
    term.send("?\r")
    screen = term.expect("Always: ")
    assert "MAIL FROM:<address>" in screen.split("READY> ?")[1].split("Not now:")[0]
    term.send("MAIL FROM:<you@client.test> SI\t")
    term.expect("SIZE=")
    term.send("20 BODY=8\t")
    term.expect("BODY=8BITMIME ")
    term.send("\r")
    term.expect("[state READY -> MAIL:")
    term.send("DATA\r")
    term.expect("refused, nothing was sent: DATA is not allowed in state MAIL")
    term.send("RCPT TO:<alice@tour.smtpbee.test>\r")
    term.expect("[state MAIL -> RCPT:")
    term.send("RCPT TO:<nobody@tour.smtpbee.test>\r")
    term.expect("5.1.1: permanent failure; addressing: bad destination mailbox address")
    term.send("DATA\r")
    term.expect("data> ")
    term.send("Subject: hi\r\r.dot\rbye\r.\r")
    term.expect("The teaching server wrote the message it accepted to")
    term.send("QUIT\r")
    term.expect("[state READY -> CLOSING:")
    assert term.wait() == 0
    written = log.read_text(encoding="utf-8")
    if written.startswith("{"):  # the JSON-lines session log
        records = [json.loads(line) for line in written.splitlines()]
        assert records[0]["smtpbee_log"] == 1
        sent = [r["data"] for r in records[1:] if r["dir"] == "C"]
        assert "EHLO client.smtpbee.test" in sent and "QUIT" in sent
    else:
        in_order(written, ["S: 220-", "C: EHLO client.smtpbee.test", "C: .", "C: QUIT"])


def test_auth_in_a_terminal_never_shows_the_password(
    terminal: Callable[..., Terminal], scripted_server: ScriptedFactory, tmp_path: Path
) -> None:
    running = scripted_server(users={"me": "hunter2-secret"})
    log = tmp_path / "session.log"
    term = terminal("--server", f"127.0.0.1:{running.port}", "--tls", "none", "--log", str(log))
    term.expect("CONNECTED> ")
    term.send("EHLO client.test\r")
    term.expect("READY> ")
    term.send("auth me\r")
    term.expect("password (not shown): ")
    term.send("hunter2-secret\r", secret=True)
    term.expect("not sent: refusing AUTH over plaintext")
    term.send("auth me --insecure\r")
    term.expect("password (not shown): ")
    term.send("hunter2-secret\r", secret=True)
    term.expect("Logged in as me.")
    term.send("\x04")  # end of input: QUIT
    term.expect("221 to QUIT: success")
    assert term.wait() == 0
    assert "hunter2" not in term.text()
    assert "hunter2" not in log.read_text(encoding="utf-8")
    assert base64.b64encode(b"\0me\0hunter2-secret").decode() not in log.read_text()
    assert running.sessions[0].user == "me"


def test_the_shell_options_are_checked(tmp_path: Path) -> None:
    def shell(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "smtpbee", "shell", *args],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    assert shell("--timeout", "0").returncode == 64
    assert shell("--server", "host:notaport").returncode == 64
    assert shell("--tls", "implicit").returncode == 64  # the teaching server has no TLS
    assert shell("--log", str(tmp_path / "missing" / "x.log")).returncode == 65
    closed = shell("--server", "127.0.0.1:1", "--tls", "none")
    assert closed.returncode == 75 and "cannot open the session" in closed.stderr
    # End of input at once: the teaching server's session, QUIT, exit 0.
    quiet = shell()
    assert quiet.returncode == 0, quiet.stderr
    assert "221 to QUIT: success" in quiet.stdout
