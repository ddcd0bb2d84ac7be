"""`smtpbee audit` against scripted servers: one per kind of finding, and a clean one.

Each server is a `smtpbee.testing` script; the audit runs in-process through
``smtpbee.cli.main``, so its JSON, its table and its exit code are checked as a
user sees them, and the server's record shows what was (and was not) sent.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any

import pytest
from servers import LoopbackCA
from smtpbee import cli
from smtpbee.cli._audit_checks import (
    CATALOGUE,
    INJECTION_PROBE,
    RELAY_RECIPIENT,
    SEVERITIES,
    SMUGGLED_LINE,
    Severity,
    _is_domain_or_literal,
    at_or_above,
)
from smtpbee.testing import (
    DEFAULT,
    Command,
    Response,
    ServerSession,
    ThreadedServer,
    close,
    start_tls,
)

ScriptedFactory = Callable[..., ThreadedServer]
TEST_RCPT = "me@example.test"


def audit(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer, *args: str
) -> tuple[int, dict[str, Any]]:
    """Run ``smtpbee audit --json`` against ``server``; the exit code and the document."""
    code = cli.main(["audit", "--server", f"127.0.0.1:{server.port}", "--json", *args])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 1, out
    document: dict[str, Any] = json.loads(lines[0])
    return code, document


def ids(document: dict[str, Any], at_least: Severity = "info") -> set[str]:
    return {f["id"] for f in document["findings"] if at_or_above(f["severity"], at_least)}


def finding(document: dict[str, Any], id: str) -> dict[str, Any]:
    [found] = [f for f in document["findings"] if f["id"] == id]
    assert isinstance(found, dict)
    return found


def not_run(document: dict[str, Any]) -> dict[str, str]:
    return {item["check"]: item["reason"] for item in document["summary"]["not_run"]}


def verbs(server: ThreadedServer) -> list[str]:
    return [command.verb for command in server.commands]


def local_only_rcpt(command: Command, session: ServerSession) -> Response:
    """RCPT: mail for example.test only, as a server that relays for nobody."""
    if (command.address or "").endswith("@example.test"):
        return DEFAULT
    return "550 5.7.1 Relay access denied"


def discarding_starttls(command: Command, session: ServerSession) -> Response:
    """STARTTLS as a fixed server does it: plaintext read behind the command is dropped."""
    session.take_buffered()
    return DEFAULT


def injectable_starttls(command: Command, session: ServerSession) -> Response:
    """STARTTLS as CVE-2011-0411: plaintext read behind it is answered after the handshake."""
    pending = [line for line in session.take_buffered().split(b"\r\n") if line]
    answers = [b"250 2.0.0 Ok\r\n" for _ in pending]
    return ["220 2.0.0 Ready to start TLS", start_tls(), *answers]


def bare_lf_message(command: Command, session: ServerSession) -> Response:
    """The end of data as a server that takes a bare LF for a line end (CVE-2023-51764).

    Lines end at LF (a CR before it dropped); the first line that is a lone dot
    ends the message, and whatever follows is read as commands.
    """
    assert command.message is not None
    lines = [line.removesuffix(b"\r") for line in command.message.wire.split(b"\n")]
    end = lines.index(b".")
    smuggled = [line for line in lines[end + 1 :] if line]
    return [
        "250 2.0.0 Ok: queued",
        *(b"500 5.5.2 Error: command not recognized\r\n" for _ in smuggled),
    ]


def in_plaintext(ehlo: bytes) -> Callable[[Command, ServerSession], Response]:
    """An EHLO handler: ``ehlo`` before TLS, the well-behaved reply under it."""

    def answer(command: Command, session: ServerSession) -> Response:
        return DEFAULT if session.tls else ehlo

    return answer


@pytest.fixture
def tls_server(
    scripted_server: ScriptedFactory, trust_ca: LoopbackCA
) -> Callable[..., ThreadedServer]:
    """A STARTTLS server with the test CA's certificate; handlers and options as given."""

    def start(handlers: dict[str, Any] | None = None, **options: Any) -> ThreadedServer:
        options.setdefault("tls", "starttls")
        options.setdefault("tls_context", trust_ca.server_context())
        return scripted_server(handlers, **options)

    return start


CLEAN: dict[str, Any] = {
    "RCPT": local_only_rcpt,
    "VRFY": "502 5.5.1 VRFY disabled",
    "STARTTLS": discarding_starttls,
}
"""A server that relays for nobody, keeps its users to itself, and is not injectable."""


# -- a clean server ------------------------------------------------------------------


def test_a_clean_server_has_no_finding_at_or_above_low(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    server = tls_server(CLEAN, users={"me": "secret"}, auth_requires_tls=True)
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile)
    assert code == 0
    assert ids(document) == {"SMTP-TLS-PARAMETERS"}
    tls = finding(document, "SMTP-TLS-PARAMETERS")
    assert tls["title"].startswith("TLS: TLSv1.")
    assert tls["detail"].startswith("certificate verified")
    assert tls["transcript"][0] == "C: STARTTLS"
    assert document["summary"]["tls"]["verified"] is True
    assert document["summary"]["counts"] == dict.fromkeys(SEVERITIES, 0) | {"info": 1}
    assert document["summary"]["highest"] == "info"
    assert document["server"] == f"127.0.0.1:{server.port}"
    skipped = not_run(document)
    assert "SMTP-SMUGGLING" in skipped and "--test-rcpt" in skipped["SMTP-SMUGGLING"]
    assert "SMTP-STARTTLS-INJECTION" not in skipped
    assert "DATA" not in verbs(server) and "BDAT" not in verbs(server)


def test_every_transaction_is_reset_and_every_session_quit(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    server = tls_server(CLEAN)
    audit(capsys, server, "--cafile", trust_ca.cafile)
    server.wait()
    sent = verbs(server)
    assert sent.count("MAIL") == sent.count("RSET") == 2  # the relay check, the pipelined group
    for session in server.sessions:
        assert session.mail is None  # nothing left open
        assert [c.verb for c in session.commands][-1] == "QUIT"
    assert not any(session.messages for session in server.sessions)


# -- each kind of finding ----------------------------------------------------------------


def test_an_open_relay_without_starttls(
    capsys: pytest.CaptureFixture[str], scripted_server: ScriptedFactory
) -> None:
    server = scripted_server()  # accepts any recipient, offers no STARTTLS, answers VRFY 252
    code, document = audit(capsys, server)
    assert code == 1
    assert ids(document, "low") == {"SMTP-OPEN-RELAY", "SMTP-STARTTLS-MISSING", "SMTP-VRFY-ENABLED"}
    relay = finding(document, "SMTP-OPEN-RELAY")
    assert relay["severity"] == "critical"
    assert f"C: RCPT TO:<{RELAY_RECIPIENT}>" in relay["transcript"]
    assert relay["transcript"][-2:] == ["C: RSET", "S: 250 2.0.0 Ok"]
    assert "DATA" not in verbs(server) and "BDAT" not in verbs(server)
    assert document["summary"]["failed"] is True
    assert document["summary"]["highest"] == "critical"


@pytest.mark.parametrize(("fail_on", "exit_code"), [("critical", 1), ("info", 1)])
def test_fail_on_an_open_relay(
    capsys: pytest.CaptureFixture[str],
    scripted_server: ScriptedFactory,
    fail_on: str,
    exit_code: int,
) -> None:
    code, document = audit(capsys, scripted_server(), "--fail-on", fail_on)
    assert code == exit_code
    assert document["summary"]["fail_on"] == fail_on


def test_fail_on_decides_the_exit_code(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    server = tls_server({**CLEAN, "VRFY": "252 2.0.0 Try it"})  # only a low finding
    assert audit(capsys, server, "--cafile", trust_ca.cafile)[0] == 0
    assert audit(capsys, server, "--cafile", trust_ca.cafile, "--fail-on", "medium")[0] == 0
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile, "--fail-on", "low")
    assert code == 1
    assert ids(document, "low") == {"SMTP-VRFY-ENABLED"}


def test_vrfy_and_expn_that_tell_users_apart(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    def vrfy(command: Command, session: ServerSession) -> Response:
        if command.argument == "postmaster":
            return "250 2.1.5 Postmaster <postmaster@mx.smtpbee.test>"
        return "550 5.1.1 No such user"

    expn = "250-2.1.5 Alice <alice@mx.smtpbee.test>\n250 2.1.5 Bob <bob@mx.smtpbee.test>"
    server = tls_server({**CLEAN, "VRFY": vrfy, "EXPN": expn})
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile)
    assert code == 0  # medium: below the default --fail-on high
    assert ids(document, "low") == {"SMTP-VRFY-EXPOSURE", "SMTP-EXPN-EXPOSURE"}
    exposure = finding(document, "SMTP-VRFY-EXPOSURE")
    assert exposure["detail"] == "VRFY postmaster: 250; VRFY of a made-up user: 550"
    assert exposure["transcript"][0] == "C: VRFY postmaster"


def test_auth_offered_before_tls(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    server = tls_server(CLEAN, users={"me": "secret"}, auth_requires_tls=False)
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile)
    assert code == 1
    assert ids(document, "low") == {"SMTP-AUTH-BEFORE-TLS"}
    auth = finding(document, "SMTP-AUTH-BEFORE-TLS")
    assert auth["severity"] == "high"
    assert "PLAIN" in auth["detail"] and "send the password as it is" in auth["detail"]
    assert "S: 250 AUTH PLAIN LOGIN" in auth["transcript"]
    assert "AUTH" not in verbs(server)  # offered, never tried


def test_only_challenge_response_before_tls_is_medium(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    server = tls_server(CLEAN, users={"me": "secret"}, auth_mechanisms=["CRAM-MD5"])
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile)
    assert code == 0
    assert finding(document, "SMTP-AUTH-BEFORE-TLS")["severity"] == "medium"
    assert finding(document, "SMTP-EXT-AUTH-DEPRECATED")["detail"].startswith("CRAM-MD5")


def test_a_malformed_ehlo_reply(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    ehlo = (
        b"250-mx_smtpbee test\r\n250-PIPELINING now\r\n250-SIZE ten\r\n250-!BANG\r\n"
        b"250-AUTH=LOGIN\r\n250-TURN\r\n250-FROBNICATE\r\n250-XFROB\r\n250-SIZE 10\r\n"
        b"250-BINARYMIME\r\n250 STARTTLS\r\n"
    )
    server = tls_server({**CLEAN, "EHLO": ehlo})
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile)
    assert code == 1  # AUTH=LOGIN: AUTH in plaintext
    assert ids(document) == {
        "SMTP-AUTH-BEFORE-TLS",
        "SMTP-EHLO-SYNTAX",
        "SMTP-EHLO-DOMAIN",
        "SMTP-EXT-DUPLICATE",
        "SMTP-EXT-SIZE-INVALID",
        "SMTP-EXT-AUTH-LEGACY",
        "SMTP-EXT-AUTH-DEPRECATED",
        "SMTP-EXT-PARAMETERS",
        "SMTP-EXT-DEPRECATED",
        "SMTP-EXT-UNKNOWN",
        "SMTP-EXT-BINARYMIME-WITHOUT-CHUNKING",
        "SMTP-TLS-PARAMETERS",
        "SMTP-STARTTLS-REOFFERED",
    }
    syntax = finding(document, "SMTP-EHLO-SYNTAX")["detail"]
    assert "'mx_smtpbee'" in syntax and "'!BANG'" in syntax
    assert finding(document, "SMTP-EXT-DUPLICATE")["detail"] == "SIZE"
    assert finding(document, "SMTP-EXT-SIZE-INVALID")["detail"].startswith("SIZE ten 10")
    assert finding(document, "SMTP-EXT-PARAMETERS")["detail"] == "PIPELINING now"
    assert finding(document, "SMTP-EXT-UNKNOWN")["detail"].startswith("FROBNICATE (")
    assert finding(document, "SMTP-EXT-DEPRECATED")["detail"].startswith("TURN: ")


def test_an_ehlo_reply_that_is_not_smtp_ends_the_audit(
    capsys: pytest.CaptureFixture[str], scripted_server: ScriptedFactory
) -> None:
    server = scripted_server({"EHLO": b"250-mx.smtpbee.test\r\n251 SIZE 10\r\n"})
    code, document = audit(capsys, server)
    assert code == 1
    assert ids(document) == {"SMTP-REPLY-MALFORMED"}
    malformed = finding(document, "SMTP-REPLY-MALFORMED")
    assert malformed["title"] == "the reply to EHLO is not valid SMTP"
    assert "251" in malformed["detail"]
    assert malformed["transcript"][-1] == "C: EHLO [127.0.0.1]"  # smtpbee read no further
    assert "*" in not_run(document)


def test_a_greeting_off_the_grammar(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    server = tls_server(CLEAN, greeting="220 mail_host welcome \x7f")
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile)
    assert code == 0
    assert ids(document, "low") == {"SMTP-GREETING-SYNTAX"}
    greeting = finding(document, "SMTP-GREETING-SYNTAX")
    assert "('mail_host')" in greeting["detail"] and "printable ASCII" in greeting["detail"]
    assert greeting["transcript"][-1].startswith("S: 220 mail_host welcome")


def test_a_reply_code_the_rules_do_not_allow(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    # VRFY breaks the first session, RSET the relay check's: the pipelined group comes after.
    server = tls_server({**CLEAN, "RSET": "354 go ahead", "VRFY": "599 5.0.0 odd"})
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile)
    assert code == 1
    assert ids(document, "low") == {"SMTP-REPLY-CODE-INVALID", "SMTP-REPLY-MALFORMED"}
    assert (
        finding(document, "SMTP-REPLY-MALFORMED")["title"] == "the reply to VRFY is not valid SMTP"
    )
    invalid = finding(document, "SMTP-REPLY-CODE-INVALID")
    assert invalid["title"] == "354 is not a valid reply to RSET"
    assert invalid["source"] == "RFC 5321 §4.3.2"
    assert invalid["detail"].startswith("RSET may get 250;")
    assert invalid["transcript"][-1] == "C: RSET"  # smtpbee stopped at the reply


def test_an_unlisted_refusal_is_info(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    server = tls_server({**CLEAN, "RCPT": "554 5.7.1 Relay access denied"})
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile)
    assert code == 0
    unlisted = finding(document, "SMTP-REPLY-CODE-UNLISTED")
    assert unlisted["severity"] == "info"
    assert unlisted["title"] == "554 to RCPT is not a listed code"
    assert "550" in unlisted["detail"] and "554" not in unlisted["detail"].split(":")[1]


def test_pipelining_not_honoured(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    # RSET and NOOP are valid at any time; a server that refuses them inside a group does
    # not take the group as separate commands.
    state = {"mail": 0}

    def mail(command: Command, session: ServerSession) -> Response:
        state["mail"] += 1
        if state["mail"] == 2:  # the pipelined group (the relay check's MAIL is first)
            session.state["garbled"] = True
        return DEFAULT

    def garbled(command: Command, session: ServerSession) -> Response:
        if session.state.get("garbled"):
            return "503 5.5.1 Error: improper command pipelining"
        return DEFAULT

    server = tls_server({**CLEAN, "MAIL": mail, "RSET": garbled, "NOOP": garbled})
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile)
    assert code == 0
    broken = finding(document, "SMTP-PIPELINING-BROKEN")
    assert broken["detail"].startswith("RSET and NOOP, valid at any time, got 503 and 503")
    assert broken["transcript"][:2] == [
        "C: MAIL FROM:<smtpbee-audit@example.net>",
        f"C: RCPT TO:<{RELAY_RECIPIENT}>",
    ]


def test_no_pipelining_is_info(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    server = tls_server(CLEAN, extensions=["SIZE 1000000", "8BITMIME", "STARTTLS"])
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile)
    assert code == 0
    assert ids(document) == {"SMTP-PIPELINING-MISSING", "SMTP-TLS-PARAMETERS"}


def test_helo_only(capsys: pytest.CaptureFixture[str], scripted_server: ScriptedFactory) -> None:
    server = scripted_server({"EHLO": "502 5.5.1 Error: command not implemented"})
    code, document = audit(capsys, server, "--tls", "none")
    assert code == 1  # it also relays
    assert {"SMTP-EHLO-REFUSED", "SMTP-OPEN-RELAY", "SMTP-PIPELINING-MISSING"} <= ids(document)
    assert "C: HELO [127.0.0.1]" in finding(document, "SMTP-EHLO-REFUSED")["transcript"]
    assert not_run(document)["SMTP-STARTTLS"] == "--tls none"


# -- TLS -----------------------------------------------------------------------------------


def test_an_untrusted_certificate(capsys: pytest.CaptureFixture[str], tls_server: Any) -> None:
    server = tls_server(CLEAN)
    code, document = audit(capsys, server)  # the system's roots do not know the test CA
    assert code == 0
    assert ids(document, "low") == {"SMTP-TLS-CERT-UNVERIFIED"}
    assert "certificate" in finding(document, "SMTP-TLS-CERT-UNVERIFIED")["detail"]
    # What the failed check hid was learnt without it.
    assert finding(document, "SMTP-TLS-PARAMETERS")["detail"].startswith("certificate NOT")
    assert document["summary"]["tls"]["verified"] is False


def test_a_certificate_for_another_name(
    capsys: pytest.CaptureFixture[str], scripted_server: ScriptedFactory, trust_ca: LoopbackCA
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trust_ca.ca.issue_cert("mx.elsewhere.test").configure_cert(context)
    server = scripted_server(CLEAN, tls="starttls", tls_context=context)
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile)
    assert code == 0
    name = finding(document, "SMTP-TLS-CERT-NAME")
    assert name["severity"] == "medium" and "mismatch" in name["detail"]


def test_insecure_says_so(capsys: pytest.CaptureFixture[str], tls_server: Any) -> None:
    server = tls_server(CLEAN)
    code = cli.main(["audit", "--server", f"127.0.0.1:{server.port}", "--insecure", "--json"])
    captured = capsys.readouterr()
    assert code == 0
    tls = finding(json.loads(captured.out), "SMTP-TLS-PARAMETERS")
    assert tls["detail"].startswith("certificate NOT verified (--insecure)")
    assert "warning: --insecure" in captured.err


def test_starttls_refused(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    server = tls_server({**CLEAN, "STARTTLS": "454 4.7.0 TLS not available"})
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile)
    assert code == 1
    assert ids(document, "low") == {"SMTP-STARTTLS-REFUSED"}
    assert "SMTP-TLS-PARAMETERS" not in ids(document)


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (["220 2.0.0 Ready", close()], "connection lost"),
        (["220 2.0.0 Ready", b"this is not TLS\r\n", close()], "data arrived after the 220"),
    ],
)
def test_a_failing_handshake(
    capsys: pytest.CaptureFixture[str], tls_server: Any, answer: list[Any], why: str
) -> None:
    server = tls_server({**CLEAN, "STARTTLS": answer})
    code, document = audit(capsys, server)
    assert code == 1
    assert ids(document, "low") == {"SMTP-TLS-HANDSHAKE"}
    assert why in finding(document, "SMTP-TLS-HANDSHAKE")["detail"]


def test_implicit_tls(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    server = tls_server(CLEAN, tls="implicit", users={"me": "secret"})
    code, document = audit(capsys, server, "--tls", "implicit", "--cafile", trust_ca.cafile)
    assert code == 0
    # AUTH under implicit TLS is no finding (LOGIN is only deprecated); STARTTLS does not apply.
    assert ids(document) == {"SMTP-TLS-PARAMETERS", "SMTP-EXT-AUTH-DEPRECATED"}
    assert finding(document, "SMTP-TLS-PARAMETERS")["transcript"][0] == "C: <TLS handshake done>"
    assert "SMTP-STARTTLS-INJECTION" not in not_run(document)


def test_implicit_tls_with_an_untrusted_certificate(
    capsys: pytest.CaptureFixture[str], tls_server: Any
) -> None:
    server = tls_server(CLEAN, tls="implicit")
    code, document = audit(capsys, server, "--tls", "implicit")
    assert code == 0
    assert ids(document, "low") == {"SMTP-TLS-CERT-UNVERIFIED"}


# -- through the unsafe path -----------------------------------------------------------------


def test_starttls_command_injection(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    server = tls_server({**CLEAN, "STARTTLS": injectable_starttls})
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile)
    assert code == 1
    assert ids(document, "low") == {"SMTP-STARTTLS-INJECTION"}
    injection = finding(document, "SMTP-STARTTLS-INJECTION")
    assert "CVE-2011-0411" in injection["source"]
    assert "C!: STARTTLS" in injection["transcript"] and "C!: NOOP" in injection["transcript"]


def test_a_server_that_drops_plaintext_behind_starttls_is_not_injectable(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    server = tls_server(CLEAN)
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile)
    assert code == 0
    assert "SMTP-STARTTLS-INJECTION" not in ids(document)
    assert "SMTP-STARTTLS-INJECTION" not in not_run(document)
    probe = INJECTION_PROBE.decode()
    assert probe in verbs(server)  # the probe went out under TLS and was refused


def test_bare_lf_is_not_probed_without_a_test_recipient(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    server = tls_server({**CLEAN, "MESSAGE": bare_lf_message})
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile)
    assert code == 0
    assert "SMTP-SMUGGLING" not in ids(document)
    assert "DATA" not in verbs(server) and "BDAT" not in verbs(server)


def test_a_server_that_ends_data_on_bare_lf(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    server = tls_server({**CLEAN, "MESSAGE": bare_lf_message})
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile, "--test-rcpt", TEST_RCPT)
    assert code == 1
    assert ids(document, "low") == {"SMTP-SMUGGLING"}
    smuggling = finding(document, "SMTP-SMUGGLING")
    assert smuggling["detail"].startswith(
        "these ended the content: <LF>.<LF>, <LF>.<CR><LF>, <CR><LF>.<LF>;"
    )
    server.wait()
    delivered = [m for session in server.sessions for m in session.messages]
    assert {m.recipients for m in delivered} == {(TEST_RCPT,)}  # only to the test recipient
    assert all(m.tls for m in delivered)


def test_a_server_that_ends_data_only_on_crlf_dot_crlf(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    server = tls_server(CLEAN)
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile, "--test-rcpt", TEST_RCPT)
    assert code == 0
    assert "SMTP-SMUGGLING" not in ids(document)
    server.wait()
    delivered = [m for session in server.sessions for m in session.messages]
    assert len(delivered) == 4  # one per look-alike, each whole: the look-alike and the line
    assert all(m.content.endswith(SMUGGLED_LINE + b"\r\n") for m in delivered)


def test_a_test_recipient_refused(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    server = tls_server(CLEAN)
    code, document = audit(
        capsys, server, "--cafile", trust_ca.cafile, "--test-rcpt", "me@elsewhere.test"
    )
    assert code == 0
    assert "was not accepted" in not_run(document)["SMTP-SMUGGLING"]
    assert "DATA" not in verbs(server)


# -- output and exit codes ------------------------------------------------------------------


def test_the_table(
    capsys: pytest.CaptureFixture[str],
    scripted_server: ScriptedFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    server = scripted_server()
    code = cli.main(["audit", "--server", f"127.0.0.1:{server.port}"])
    out = capsys.readouterr().out
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"smtpbee audit of 127.0.0.1:{server.port}"
    assert re.match(r"ID +SEVERITY +TITLE +SOURCE$", lines[1])
    assert re.match(r"SMTP-OPEN-RELAY +critical +the server relays", lines[2])
    assert "\x1b" not in out  # not a terminal
    assert lines[-1].endswith("FAILED (--fail-on high)")
    assert any(line.startswith("not run: SMTP-SMUGGLING: ") for line in lines)


@pytest.mark.parametrize(("no_color", "coloured"), [("", True), ("1", False)])
def test_the_table_on_a_terminal(
    capsys: pytest.CaptureFixture[str],
    scripted_server: ScriptedFactory,
    monkeypatch: pytest.MonkeyPatch,
    no_color: str,
    coloured: bool,
) -> None:
    monkeypatch.setenv("NO_COLOR", no_color)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    cli.main(["audit", "--server", f"127.0.0.1:{scripted_server().port}"])
    out = capsys.readouterr().out
    assert ("\x1b[1;31mcritical" in out) is coloured
    assert ("\x1b" in out) is coloured


def test_no_findings_in_the_table(
    capsys: pytest.CaptureFixture[str], scripted_server: ScriptedFactory
) -> None:
    server = scripted_server({"EHLO": b"250-mx.smtpbee.test\r\n251 SIZE 10\r\n"})
    cli.main(["audit", "--server", f"127.0.0.1:{server.port}", "--fail-on", "critical"])
    out = capsys.readouterr().out
    assert "SMTP-REPLY-MALFORMED" in out and out.splitlines()[-1].endswith(
        "passed (--fail-on critical)"
    )


def test_a_refused_connection_is_75(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = cli.main(["audit", "--server", f"127.0.0.1:{port}", "--json"])
    captured = capsys.readouterr()
    assert code == 75
    document = json.loads(captured.out)
    assert document["error"]["kind"] == "connection" and document["findings"] == []
    assert captured.err.startswith(f"smtpbee: error: cannot audit 127.0.0.1:{port}: ")


def test_a_server_refusing_service_is_69(
    capsys: pytest.CaptureFixture[str], scripted_server: ScriptedFactory
) -> None:
    server = scripted_server(greeting="554 5.7.1 no service for you")
    assert cli.main(["audit", "--server", f"127.0.0.1:{server.port}"]) == 69
    assert "554" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["--server", "127.0.0.1:0"],
        ["--server", "127.0.0.1:25", "--fail-on", "severe"],
        ["--server", "127.0.0.1:25", "--timeout", "0"],
        ["--server", "127.0.0.1:25", "--test-rcpt", "nobody"],
        ["--server", "127.0.0.1:25", "--tls", "sometimes"],
        [],
    ],
)
def test_usage_errors_are_64(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    assert cli.main(["audit", *args]) == 64
    err = capsys.readouterr().err
    assert err.startswith("smtpbee: error: ") and len(err.splitlines()) == 1


def test_an_unreadable_cafile_is_65(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    missing = str(tmp_path / "missing.pem")
    assert cli.main(["audit", "--server", "127.0.0.1:25", "--cafile", missing]) == 65


def test_every_finding_id_is_catalogued() -> None:
    for id, kind in CATALOGUE.items():
        assert re.fullmatch(r"SMTP(-[A-Z0-9]+)+", id)
        assert kind.severity in SEVERITIES and kind.title and kind.source


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("mx.example.test", True),
        ("localhost", True),
        ("[192.0.2.1]", True),
        ("[IPv6:2001:db8::1]", True),
        ("[x-tag:anything]", True),
        ("[192.0.2.300]", False),
        ("[IPv6:2001:db8::zz]", False),
        ("-mx.example.test", False),
        ("mx..example.test", False),
        ("a" * 256, False),
    ],
)
def test_domains_and_address_literals(name: str, valid: bool) -> None:
    assert _is_domain_or_literal(name) is valid


def test_extension_parameters_and_mechanisms(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    ehlo = b"250-[192.0.2.1] hi\r\n250-DSN\x01\r\n250-SIZE 0\r\n250 STARTTLS\r\n"
    server = tls_server({**CLEAN, "EHLO": in_plaintext(ehlo)})
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile)
    assert code == 0
    assert ids(document, "low") == {"SMTP-EHLO-SYNTAX"}
    assert "DSN" in finding(document, "SMTP-EHLO-SYNTAX")["detail"]
    assert finding(document, "SMTP-EHLO-DOMAIN")["detail"] == (
        "greeting 'mx.smtpbee.test', EHLO '[192.0.2.1]'"
    )


def test_an_invalid_mechanism_name(
    capsys: pytest.CaptureFixture[str], tls_server: Any, trust_ca: LoopbackCA
) -> None:
    ehlo = b"250-mx.smtpbee.test\r\n250-AUTH PLAIN B@D\r\n250 STARTTLS\r\n"
    server = tls_server({**CLEAN, "EHLO": in_plaintext(ehlo)})
    code, document = audit(capsys, server, "--cafile", trust_ca.cafile)
    assert code == 1
    assert ids(document, "low") == {"SMTP-EXT-AUTH-MECHANISM", "SMTP-AUTH-BEFORE-TLS"}
    assert finding(document, "SMTP-EXT-AUTH-MECHANISM")["detail"] == "B@D"


@pytest.mark.parametrize(
    ("handlers", "reason"),
    [
        ({"MAIL": "550 5.7.1 not from you"}, "MAIL FROM:<smtpbee-audit@example.net> was refused"),
        ({"RCPT": "451 4.7.1 greylisted"}, "inconclusive: RCPT got 451"),
    ],
)
def test_a_relay_check_that_cannot_conclude(
    capsys: pytest.CaptureFixture[str],
    tls_server: Any,
    trust_ca: LoopbackCA,
    handlers: dict[str, Any],
    reason: str,
) -> None:
    code, document = audit(capsys, tls_server({**CLEAN, **handlers}), "--cafile", trust_ca.cafile)
    assert code == 0
    assert "SMTP-OPEN-RELAY" not in ids(document)
    assert not_run(document)["SMTP-OPEN-RELAY"].startswith(reason)
