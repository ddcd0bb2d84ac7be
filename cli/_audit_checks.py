# smtpbee/cli/_audit_checks
#
# The checks of `smtpbee audit`: each a function that looks at a server
# through smtpbee's own blocking client and adds Findings (an id, a severity,
# the RFC or advisory, and the transcript lines that show it).
#
# Theory of operation
# -------------------
# CATALOGUE names every kind of finding once: its id, its usual severity,
# its title and its source; a check adds the detail and the evidence. An
# Audit holds what the checks share: the target, the transcript of every
# session (one list; a check slices the lines it caused), every (command,
# reply code) pair seen, and what could not be checked and why.
#
# Invariants:
#   * read-only: no check sends DATA or BDAT unless the user named a test
#     recipient (--test-rcpt); a transaction opened to ask a question ends
#     in RSET (or QUIT) before any content;
#   * which reply codes a command may get is decided by the state table's
#     REPLY_RULES (core/_state.py), never by codes written here;
#   * raw bytes go out only through the library's unsafe path
#     (``client.unsafe``), never through a socket of our own.
from __future__ import annotations

import ipaddress
import re
import ssl
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from smtpbee import (
    Command,
    ConnectionLostError,
    Expn,
    Extensions,
    Mail,
    Noop,
    Rcpt,
    RemoteProtocolError,
    Reply,
    Rset,
    SMTPError,
    SMTPTimeoutError,
    StartTLSInjectionError,
    TLSMode,
    TLSRequiredError,
    TLSVerificationError,
    Verb,
    Vrfy,
)
from smtpbee._state import GREETING_RULE, REPLY_RULES, ReplyKind, ReplyRule, classify_reply
from smtpbee.transports.sync import SMTPClient

__all__ = [
    "AUDIT_SENDER",
    "CATALOGUE",
    "RELAY_RECIPIENT",
    "SEVERITIES",
    "SMUGGLING_SEQUENCES",
    "Audit",
    "AuditFailed",
    "Finding",
    "Kind",
    "NotRun",
    "Severity",
    "Target",
    "at_or_above",
]

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")

AUDIT_SENDER = "smtpbee-audit@example.net"
"""The reverse path of the questions the audit asks: a reserved domain (RFC 2606)."""
RELAY_RECIPIENT = "smtpbee-relay-test@example.com"
"""A recipient no audited server is the destination for (RFC 2606): RCPT only, never DATA."""
SMUGGLED_LINE = b"XSMTPBEE-SMUGGLED"
"""No server knows this command: answered as one, the content had ended before it."""
INJECTION_PROBE = b"XSMTPBEE-AFTER-TLS"
"""The first command under TLS: every server refuses it, so a 2xx first is the plaintext NOOP's."""
SMUGGLING_SEQUENCES: tuple[tuple[bytes, str], ...] = (
    (b"\n.\n", "<LF>.<LF>"),
    (b"\n.\r\n", "<LF>.<CR><LF>"),
    (b"\r\n.\n", "<CR><LF>.<LF>"),
    (b"\r.\r", "<CR>.<CR>"),
)
"""Look-alikes of the end of data (SMTP smuggling, SEC Consult, December 2023)."""


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of finding: its usual severity, its title, where the rule comes from."""

    severity: Severity
    title: str
    source: str


_K = Kind
CATALOGUE: Mapping[str, Kind] = {
    "SMTP-REPLY-MALFORMED": _K("high", "a reply is not valid SMTP", "RFC 5321 §4.2"),
    "SMTP-REPLY-CODE-INVALID": _K(
        "medium", "a reply code the command may not get", "RFC 5321 §4.3.2"
    ),
    "SMTP-REPLY-CODE-UNLISTED": _K(
        "info", "a refusal code not listed for the command", "RFC 5321 §4.2.1, §4.3.2"
    ),
    "SMTP-GREETING-SYNTAX": _K(
        "low", "the greeting does not follow the RFC 5321 grammar", "RFC 5321 §4.2, §4.3.1"
    ),
    "SMTP-EHLO-SYNTAX": _K(
        "low", "the EHLO reply does not follow the RFC 5321 grammar", "RFC 5321 §4.1.1.1"
    ),
    "SMTP-EHLO-REFUSED": _K(
        "medium", "EHLO is refused: the server speaks only HELO", "RFC 5321 §3.2, §4.1.1.1"
    ),
    "SMTP-EHLO-DOMAIN": _K(
        "info", "the EHLO reply names another host than the greeting", "RFC 5321 §4.1.1.1"
    ),
    "SMTP-EXT-DUPLICATE": _K("low", "an extension is advertised twice", "RFC 5321 §4.1.1.1"),
    "SMTP-EXT-SIZE-INVALID": _K("low", "the SIZE parameter is not a number", "RFC 1870 §4"),
    "SMTP-EXT-AUTH-LEGACY": _K(
        "info", "AUTH is also advertised in its pre-RFC 'AUTH=' form", "RFC 4954 §3"
    ),
    "SMTP-EXT-AUTH-MECHANISM": _K(
        "low", "an AUTH mechanism name is not valid", "RFC 4422 §3.1; RFC 4954 §3"
    ),
    "SMTP-EXT-AUTH-DEPRECATED": _K(
        "info", "deprecated AUTH mechanisms are offered", "IANA SASL mechanisms registry"
    ),
    "SMTP-EXT-PARAMETERS": _K(
        "low", "an extension that takes no parameter has some", "RFC 5321 §4.1.1.1"
    ),
    "SMTP-EXT-DEPRECATED": _K("low", "deprecated extensions are advertised", "RFC 5321 App. F"),
    "SMTP-EXT-UNKNOWN": _K("info", "unregistered extensions are advertised", "RFC 5321 §4.1.5"),
    "SMTP-EXT-BINARYMIME-WITHOUT-CHUNKING": _K(
        "low", "BINARYMIME is advertised without CHUNKING", "RFC 3030 §3"
    ),
    "SMTP-AUTH-BEFORE-TLS": _K(
        "high", "AUTH is offered before TLS", "RFC 4954 §4, §14; RFC 8314 §3"
    ),
    "SMTP-STARTTLS-MISSING": _K("high", "STARTTLS is not offered", "RFC 3207; RFC 8314 §3"),
    "SMTP-STARTTLS-REFUSED": _K("high", "STARTTLS is offered but refused", "RFC 3207 §4"),
    "SMTP-STARTTLS-REOFFERED": _K("low", "STARTTLS is still offered under TLS", "RFC 3207 §4.2"),
    "SMTP-TLS-HANDSHAKE": _K("high", "the TLS handshake fails", "RFC 3207 §4; RFC 8314 §4"),
    "SMTP-TLS-CERT-UNVERIFIED": _K(
        "medium", "the server's certificate does not verify", "RFC 8314 §4.1; RFC 5280 §6"
    ),
    "SMTP-TLS-CERT-NAME": _K(
        "medium", "the server's certificate does not name it", "RFC 8314 §4.1; RFC 6125 §6"
    ),
    "SMTP-TLS-VERSION": _K("medium", "a deprecated TLS version", "RFC 8996; RFC 8314 §4.1"),
    "SMTP-TLS-PARAMETERS": _K("info", "TLS parameters", "RFC 3207; RFC 8314 §4.1"),
    "SMTP-STARTTLS-INJECTION": _K(
        "high",
        "plaintext commands sent behind STARTTLS are executed under TLS",
        "CVE-2011-0411; Poddebniak et al., USENIX Security 2021; RFC 3207 §4.2",
    ),
    "SMTP-SMUGGLING": _K(
        "high",
        "a bare line end before a dot ends the message (SMTP smuggling)",
        "CVE-2023-51764, CVE-2023-51765, CVE-2023-51766 (SEC Consult); RFC 5321 §2.3.8",
    ),
    "SMTP-PIPELINING-MISSING": _K("info", "PIPELINING is not advertised", "RFC 2920"),
    "SMTP-PIPELINING-BROKEN": _K(
        "medium", "PIPELINING is advertised but a pipelined group fails", "RFC 2920 §3"
    ),
    "SMTP-VRFY-EXPOSURE": _K(
        "medium", "VRFY tells existing users from others", "RFC 5321 §3.5.3, §7.3"
    ),
    "SMTP-VRFY-ENABLED": _K(
        "low", "VRFY is answered (address harvesting)", "RFC 5321 §7.3; RFC 2505 §2.11"
    ),
    "SMTP-EXPN-EXPOSURE": _K(
        "medium", "EXPN lists a mailing list's members", "RFC 5321 §3.5.3, §7.3"
    ),
    "SMTP-EXPN-ENABLED": _K("low", "EXPN is answered", "RFC 5321 §7.3; RFC 2505 §2.11"),
    "SMTP-OPEN-RELAY": _K(
        "critical",
        "the server relays mail to a foreign domain",
        "RFC 5321 §3.6.2, §7.1; RFC 2505 §2.4",
    ),
}
"""Every kind of finding, by id."""

_EVIDENCE_LINES = 40
_SUB_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})*")
_GENERAL_LITERAL = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+")
_EHLO_KEYWORD = re.compile(rb"[A-Za-z0-9][A-Za-z0-9-]*")
_EHLO_PARAM = re.compile(rb"[\x21-\x7e]+")
_TEXTSTRING = re.compile(rb"[\t\x20-\x7e]*")
_SASL_MECHANISM = re.compile(r"[A-Z0-9_-]{1,20}")
_SIZE_VALUE = re.compile(r"[0-9]{1,20}")
_VIOLATION = re.compile(r"(\d{3}) is not a valid reply to (.+?) \(")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# The IANA SMTP service extensions registry; keywords starting with X are private
# (RFC 5321 §4.1.5).
_KNOWN_EXTENSIONS = _words(
    "8BITMIME ATRN AUTH BINARYMIME BURL CHECKPOINT CHUNKING CONNEG CONPERM DELIVERBY DSN"
    " ENHANCEDSTATUSCODES ETRN EXPN FUTURERELEASE HELP LIMITS MT-PRIORITY MTRK NO-SOLICITING"
    " ONEX PIPELINING REQUIRETLS RRVS SAML SEND SIZE SMTPUTF8 SOML STARTTLS SUBMITTER TIME"
    " TURN UTF8SMTP VERB VRFY"
)
_DEPRECATED_EXTENSIONS = {
    "TURN": "RFC 5321 App. F.1 (the turned-around side is not authenticated)",
    "SEND": "RFC 5321 App. F.3",
    "SOML": "RFC 5321 App. F.4",
    "SAML": "RFC 5321 App. F.5",
    "VERB": "an old sendmail debugging switch",
    "ONEX": "an old sendmail switch",
    "UTF8SMTP": "RFC 6531 replaced the experimental UTF8SMTP",
}
_NO_PARAMETERS = _words(
    "8BITMIME BINARYMIME CHUNKING DSN ENHANCEDSTATUSCODES PIPELINING REQUIRETLS SMTPUTF8 STARTTLS"
)
_DEPRECATED_MECHANISMS = {
    "DIGEST-MD5": "RFC 6331 moved it to Historic",
    "CRAM-MD5": "LIMITED use in the IANA registry",
    "LOGIN": "OBSOLETE in the IANA registry (PLAIN replaces it)",
    "NTLM": "not standard",
    "ANONYMOUS": "anonymous submission (RFC 4505)",
}
_PLAINTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN"})
_REFUSALS = (ReplyKind.TRANSIENT, ReplyKind.PERMANENT)
_OLD_TLS = frozenset({"SSLv2", "SSLv3", "TLSv1", "TLSv1.1"})


def at_or_above(severity: Severity, threshold: Severity) -> bool:
    """Whether ``severity`` is ``threshold`` or worse."""
    return SEVERITIES.index(severity) >= SEVERITIES.index(threshold)


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the audit found."""

    id: str
    severity: Severity
    title: str
    detail: str
    source: str
    transcript: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity,
            "title": self.title,
            "detail": self.detail,
            "source": self.source,
            "transcript": list(self.transcript),
        }


@dataclass(frozen=True, slots=True)
class NotRun:
    """A check that did not run, or could not conclude, and why."""

    check: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"check": self.check, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Target:
    """The server to audit and how to reach it."""

    host: str
    port: int
    tls: TLSMode
    context: ssl.SSLContext
    """The verifying context (or the one of --insecure, which checks nothing)."""
    unverified: ssl.SSLContext
    """A context that checks nothing: to learn the TLS parameters a failed check hid."""
    insecure: bool
    timeout: float
    helo: str | None = None
    test_rcpt: str | None = None


@dataclass(frozen=True, slots=True)
class _Observation:
    verb: Verb | None  # None: the greeting
    code: int
    evidence: tuple[str, ...]


class AuditFailed(Exception):
    """The server could not be audited at all: ``error`` says why (it has an exit code)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class Audit:
    """What the checks share while they run."""

    target: Target
    lines: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    not_run: list[NotRun] = field(default_factory=list)
    observations: list[_Observation] = field(default_factory=list)
    greeting: Reply | None = None
    ehlo: Reply | None = None
    ehlo_evidence: tuple[str, ...] = ()
    extensions: Extensions = field(default_factory=Extensions)
    tls_info: dict[str, Any] | None = None
    tls_context: ssl.SSLContext | None = None
    """The context that got through the handshake (None: TLS was never made)."""

    # -- the transcript and the findings ----------------------------------------------

    def record(self, direction: str, line: str) -> None:
        """The clients' transcript callable (their lines come escaped)."""
        self.lines.append(f"{direction}: {line}")

    def mark(self) -> int:
        return len(self.lines)

    def since(self, mark: int) -> tuple[str, ...]:
        lines = self.lines[mark:]
        if len(lines) > _EVIDENCE_LINES:
            half = _EVIDENCE_LINES // 2
            lines = [*lines[:half], "...", *lines[-half:]]
        return tuple(lines)

    def find(
        self,
        id: str,
        detail: str,
        evidence: Sequence[str] = (),
        *,
        severity: Severity | None = None,
        title: str | None = None,
        source: str | None = None,
    ) -> None:
        """Add a finding of the catalogue's kind ``id``; the arguments override its defaults."""
        kind = CATALOGUE[id]
        self.findings.append(
            Finding(
                id,
                severity or kind.severity,
                title or kind.title,
                detail,
                source or kind.source,
                tuple(evidence),
            )
        )

    def skip(self, check: str, reason: str) -> None:
        self.not_run.append(NotRun(check, reason))

    # -- sessions ---------------------------------------------------------------------

    def client(self, tls: TLSMode, context: ssl.SSLContext | None = None) -> SMTPClient:
        """A new blocking client (not connected) whose transcript goes to ``lines``."""
        target = self.target
        self.record("*", f"connecting to {target.host}:{target.port} (tls {tls.value})")
        return SMTPClient(
            target.host,
            target.port,
            tls=tls,
            ssl_context=context or target.context,
            timeout=target.timeout,
            local_hostname=target.helo,
            transcript=self.record,
        )

    def open(self, tls: TLSMode, context: ssl.SSLContext | None = None) -> SMTPClient:
        """A connected client (greeting, EHLO, and STARTTLS as ``tls`` says)."""
        client = self.client(tls, context)
        try:
            client.connect()
        except BaseException:
            client.close()
            raise
        return client

    def ask(self, client: SMTPClient, command: Command) -> Reply | None:
        """Send one command; its reply (refusals too), or None if the reply broke SMTP."""
        mark = self.mark()
        try:
            reply = client.command(command)
        except RemoteProtocolError as exc:
            self.protocol_error(command.verb, exc, mark)
            return None
        self.observe(command.verb, reply, mark)
        return reply

    def observe(self, verb: Verb | None, reply: Reply | None, mark: int) -> None:
        """Note a reply for the reply-code check."""
        if reply is not None:
            self.observations.append(_Observation(verb, reply.code, self.since(mark)))

    def protocol_error(self, verb: Verb | None, exc: RemoteProtocolError, mark: int) -> None:
        """A reply smtpbee refused: a code the command may not get, or broken syntax."""
        evidence = self.since(mark)
        match = _VIOLATION.match(str(exc))
        if match is not None:
            # The connection names the command whose reply it was (in a group, not the last).
            answered = next((v for v in Verb if v.value == match[2]), verb)
            self.observations.append(_Observation(answered, int(match[1]), evidence))
            return
        what = "the greeting" if verb is None else f"the reply to {verb.value}"
        self.find(
            "SMTP-REPLY-MALFORMED",
            f"{exc}: a conforming client ends the session here",
            evidence,
            title=f"{what} is not valid SMTP",
        )

    def quit(self, client: SMTPClient) -> None:
        """QUIT if the session still takes commands; close in any case."""
        try:
            if client.usable:
                client.quit()
        except (SMTPError, OSError):
            pass
        finally:
            client.close()


# -- the greeting, EHLO and the extensions ----------------------------------------------


def _parses(text: str, kind: Callable[[str], object]) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


def _is_domain_or_literal(word: str) -> bool:
    """RFC 5321 §4.1.2: Domain / address-literal."""
    if word.startswith("[") and word.endswith("]"):
        inner = word[1:-1]
        if inner[:5].upper() == "IPV6:":
            return _parses(inner[5:], ipaddress.IPv6Address)
        return _parses(inner, ipaddress.IPv4Address) or bool(_GENERAL_LITERAL.fullmatch(inner))
    return len(word) <= 255 and bool(_DOMAIN.fullmatch(word))


def _first_word(reply: Reply) -> str:
    first = reply.lines[0] if reply.lines else b""
    return first.split(b" ", 1)[0].decode("utf-8", "replace")


def check_greeting(audit: Audit, evidence: Sequence[str]) -> None:
    """``220 SP (Domain / address-literal) [SP textstring]`` (RFC 5321 §4.2, §4.3.1)."""
    greeting = audit.greeting
    if greeting is None:
        return
    problems = []
    name = _first_word(greeting)
    if not _is_domain_or_literal(name):
        problems.append(f"the first line does not start with a domain or address ({name!r})")
    if not all(_TEXTSTRING.fullmatch(line) for line in greeting.lines):
        problems.append("the text holds characters other than printable ASCII and tab")
    if problems:
        audit.find("SMTP-GREETING-SYNTAX", "; ".join(problems), evidence)


def check_ehlo(audit: Audit, evidence: Sequence[str]) -> None:
    """The EHLO reply's grammar (RFC 5321 §4.1.1.1) and the name it gives."""
    reply = audit.ehlo
    if reply is None:
        audit.find("SMTP-EHLO-REFUSED", "without EHLO a client learns of no extension", evidence)
        return
    problems = []
    name = _first_word(reply)
    if not _is_domain_or_literal(name):
        problems.append(f"the first line does not start with a domain ({name!r})")
    for line in reply.lines[1:]:
        keyword, *params = line.split(b" ")
        shown = line.decode("utf-8", "replace")
        if keyword[:5].upper() == b"AUTH=":
            continue  # a finding of its own: SMTP-EXT-AUTH-LEGACY
        if not _EHLO_KEYWORD.fullmatch(keyword):
            problems.append(f"{shown!r}: not an ehlo-keyword (letters, digits, '-')")
        elif not all(_EHLO_PARAM.fullmatch(param) for param in params):
            problems.append(f"{shown!r}: parameters are printable ASCII split by one space")
    if problems:
        audit.find("SMTP-EHLO-SYNTAX", "; ".join(problems), evidence)
    greeting = audit.greeting
    if greeting is not None and _first_word(greeting).lower() != name.lower():
        audit.find(
            "SMTP-EHLO-DOMAIN", f"greeting {_first_word(greeting)!r}, EHLO {name!r}", evidence
        )


def check_extensions(audit: Audit, reply: Reply, evidence: Sequence[str]) -> None:
    """The advertised extensions and their parameters."""
    extensions = Extensions.from_reply(reply)
    keywords = [line.split(b" ")[0].upper() for line in reply.lines[1:] if line.strip()]
    counts = Counter(keyword.decode("utf-8", "replace") for keyword in keywords)
    found: list[tuple[str, str]] = []
    if duplicates := sorted(keyword for keyword, count in counts.items() if count > 1):
        found.append(("SMTP-EXT-DUPLICATE", ", ".join(duplicates)))
    size = extensions.params("SIZE")
    if len(size) > 1 or (size and not _SIZE_VALUE.fullmatch(size[0])):
        found.append(("SMTP-EXT-SIZE-INVALID", f"SIZE {' '.join(size)}: expected 1-20 digits"))
    if any(keyword.startswith(b"AUTH=") for keyword in keywords):
        found.append(("SMTP-EXT-AUTH-LEGACY", "an 'AUTH=' line, from a draft before RFC 2554"))
    mechanisms = extensions.params("AUTH")
    if bad := [m for m in mechanisms if not _SASL_MECHANISM.fullmatch(m.upper())]:
        found.append(("SMTP-EXT-AUTH-MECHANISM", ", ".join(bad)))
    if old := sorted(m for m in extensions.auth_mechanisms if m in _DEPRECATED_MECHANISMS):
        detail = "; ".join(f"{m}: {_DEPRECATED_MECHANISMS[m]}" for m in old)
        found.append(("SMTP-EXT-AUTH-DEPRECATED", detail))
    if with_params := sorted(k for k in _NO_PARAMETERS if extensions.params(k)):
        detail = ", ".join(" ".join((k, *extensions.params(k))) for k in with_params)
        found.append(("SMTP-EXT-PARAMETERS", detail))
    if deprecated := sorted(k for k in extensions.keywords if k in _DEPRECATED_EXTENSIONS):
        detail = "; ".join(f"{k}: {_DEPRECATED_EXTENSIONS[k]}" for k in deprecated)
        found.append(("SMTP-EXT-DEPRECATED", detail))
    registered = _KNOWN_EXTENSIONS
    if unknown := sorted(k for k in extensions.keywords if k not in registered and k[0] != "X"):
        detail = ", ".join(unknown) + " (private extensions start with X)"
        found.append(("SMTP-EXT-UNKNOWN", detail))
    if extensions.binarymime and not extensions.chunking:
        found.append(("SMTP-EXT-BINARYMIME-WITHOUT-CHUNKING", "BINARYMIME needs BDAT"))
    for id, detail in found:
        audit.find(id, detail, evidence)


def check_auth_before_tls(audit: Audit, evidence: Sequence[str]) -> None:
    """AUTH in a plaintext EHLO reply: passwords invited in the clear."""
    mechanisms = audit.extensions.auth_mechanisms
    if not mechanisms:
        return
    plaintext = sorted(mechanisms & _PLAINTEXT_MECHANISMS)
    detail = f"offered in plaintext: {', '.join(sorted(mechanisms))}"
    if plaintext:
        detail += f" ({', '.join(plaintext)} send the password as it is)"
    audit.find("SMTP-AUTH-BEFORE-TLS", detail, evidence, severity="high" if plaintext else "medium")


# -- what the server answers ------------------------------------------------------------


def check_vrfy_expn(audit: Audit, client: SMTPClient) -> None:
    """VRFY and EXPN: do they confirm or deny addresses (RFC 5321 §3.5, §7.3)?"""
    mark = audit.mark()
    known = audit.ask(client, Vrfy("postmaster"))
    unknown = audit.ask(client, Vrfy("smtpbee-no-such-user-7f3a9c")) if known else None
    if known is not None and unknown is not None and known.is_success:
        detail = f"VRFY postmaster: {known.code}; VRFY of a made-up user: {unknown.code}"
        confirms = known.code in (250, 251) and unknown.code not in (250, 251)
        denies = unknown.code in (550, 551, 553)
        exposed = confirms or denies
        id = "SMTP-VRFY-EXPOSURE" if exposed else "SMTP-VRFY-ENABLED"
        audit.find(id, detail, audit.since(mark))
    if not client.usable:
        return
    mark = audit.mark()
    expn = audit.ask(client, Expn("postmaster"))
    if expn is not None and expn.is_success:
        id = "SMTP-EXPN-EXPOSURE" if expn.code == 250 else "SMTP-EXPN-ENABLED"
        audit.find(id, f"EXPN postmaster: {expn.code}", audit.since(mark))


def check_relay(audit: Audit, client: SMTPClient) -> None:
    """A foreign sender and a recipient in a foreign domain: RCPT, then RSET; never DATA."""
    mark = audit.mark()
    mail = audit.ask(client, Mail(sender=AUDIT_SENDER))
    if mail is None or not mail.is_success:
        what = "broke SMTP" if mail is None else f"was refused ({mail.code})"
        audit.skip("SMTP-OPEN-RELAY", f"MAIL FROM:<{AUDIT_SENDER}> {what}")
        return
    rcpt = audit.ask(client, Rcpt(recipient=RELAY_RECIPIENT))
    if client.usable:
        audit.ask(client, Rset())
    if rcpt is not None and rcpt.is_success:
        detail = (
            f"RCPT TO:<{RELAY_RECIPIENT}> got {rcpt.code}, for a client that did not log in"
            " and a sender of another domain (the transaction was reset, no content was sent)"
        )
        audit.find("SMTP-OPEN-RELAY", detail, audit.since(mark))
    elif rcpt is not None and rcpt.is_transient:
        audit.skip("SMTP-OPEN-RELAY", f"inconclusive: RCPT got {rcpt.code} (try again later)")


def check_pipelining(audit: Audit, client: SMTPClient) -> None:
    """PIPELINING advertised: a MAIL, RCPT, RSET, NOOP group gets four replies, in order."""
    if not audit.extensions.pipelining:
        audit.find("SMTP-PIPELINING-MISSING", "each command costs a round trip")
        return
    group: list[Command] = [
        Mail(sender=AUDIT_SENDER),
        Rcpt(recipient=RELAY_RECIPIENT),
        Rset(),
        Noop(),
    ]
    mark = audit.mark()
    try:
        replies = client.pipeline(group)
    except RemoteProtocolError as exc:
        audit.protocol_error(None, exc, mark)  # a reply code: reported as such
        return
    except (ConnectionLostError, SMTPTimeoutError) as exc:
        problem = f"the group was not answered: {exc}"
    else:
        for command, reply in zip(group, replies, strict=True):
            audit.observe(command.verb, reply, mark)
        rset, noop = replies[2], replies[3]
        if rset.is_success and noop.is_success:
            return
        problem = (
            f"RSET and NOOP, valid at any time, got {rset.code} and {noop.code}:"
            " the group was not taken as separate commands"
        )
    audit.find("SMTP-PIPELINING-BROKEN", problem, audit.since(mark))


def _rule(verb: Verb | None) -> ReplyRule:
    return GREETING_RULE if verb is None else REPLY_RULES[verb]


def _listed(rule: ReplyRule) -> str:
    return ", ".join(map(str, sorted({*rule.success, *rule.intermediate, *rule.listed_refusals})))


def check_reply_codes(audit: Audit) -> None:
    """Every reply seen, against the codes the state table allows (RFC 5321 §4.3.2)."""
    first: dict[tuple[Verb | None, int], _Observation] = {}
    for seen in audit.observations:
        first.setdefault((seen.verb, seen.code), seen)
    for (verb, code), seen in first.items():
        rule = _rule(verb)
        kind, _ = classify_reply(rule, code)
        name = "the greeting" if verb is None else verb.value
        if kind is ReplyKind.VIOLATION:
            detail = f"{name} may get {_listed(rule)}; a client must take {code} as a violation"
            title = f"{code} is not a valid reply to {name}"
            audit.find("SMTP-REPLY-CODE-INVALID", detail, seen.evidence, title=title)
        elif kind in _REFUSALS and code not in rule.listed_refusals:
            detail = f"read by its first digit, as a refusal; listed for {name}: {_listed(rule)}"
            title = f"{code} to {name} is not a listed code"
            audit.find("SMTP-REPLY-CODE-UNLISTED", detail, seen.evidence, title=title)


# -- TLS --------------------------------------------------------------------------------


def _verification_problem(exc: TLSVerificationError) -> tuple[str, str]:
    cause = exc.__cause__
    message = str(getattr(cause, "verify_message", None) or cause or exc)
    if "mismatch" in message.lower():
        return "SMTP-TLS-CERT-NAME", f"the certificate does not name the server: {message}"
    return "SMTP-TLS-CERT-UNVERIFIED", f"the certificate does not verify: {message}"


def open_tls(audit: Audit, mode: TLSMode) -> SMTPClient:
    """A session under TLS (STARTTLS or implicit), with what its TLS is like reported.

    A certificate that does not verify is a finding, and the session is made
    again without the check, to learn the rest. Other failures are raised.
    """
    target = audit.target
    mark = audit.mark()
    try:
        client = audit.open(mode)
        audit.tls_context = target.context
    except TLSVerificationError as exc:
        id, detail = _verification_problem(exc)
        audit.find(id, detail, audit.since(mark))
        mark = audit.mark()
        client = audit.open(mode, target.unverified)
        audit.tls_context = target.unverified
    shown = audit.since(mark)
    handshake = ("C: STARTTLS", "C: <TLS handshake done>")
    evidence = shown[next((i for i, line in enumerate(shown) if line in handshake), 0) :]
    info = client.tls_info
    if info is not None:
        audit.tls_info = {
            "version": info.version,
            "cipher": info.cipher,
            "verified": info.verified,
            "subject": info.peer_subject,
        }
        detail = f"certificate {'verified' if info.verified else 'NOT verified'}"
        detail += " (--insecure)" if target.insecure else ""
        detail += f", subject {info.peer_subject}" if info.peer_subject else ""
        title = f"TLS: {info.version} {info.cipher}"
        old = info.version in _OLD_TLS
        id = "SMTP-TLS-VERSION" if old else "SMTP-TLS-PARAMETERS"
        audit.find(id, detail, evidence, title=title)
    if "STARTTLS" in client.extensions:
        audit.find("SMTP-STARTTLS-REOFFERED", "the EHLO reply under TLS offers it", evidence)
    return client


def check_starttls(audit: Audit) -> bool:
    """STARTTLS offered, accepted, and a handshake that works; whether TLS was made."""
    if not audit.extensions.starttls:
        detail = "everything, passwords included, goes in plaintext"
        audit.find("SMTP-STARTTLS-MISSING", detail, audit.ehlo_evidence)
        return False
    mark = audit.mark()
    try:
        client = open_tls(audit, TLSMode.STARTTLS)
    except TLSRequiredError as exc:
        audit.find("SMTP-STARTTLS-REFUSED", str(exc), audit.since(mark))
        return False
    except RemoteProtocolError as exc:
        if not isinstance(exc, StartTLSInjectionError):
            audit.protocol_error(Verb.EHLO, exc, mark)
            return False
        audit.find("SMTP-TLS-HANDSHAKE", str(exc), audit.since(mark))
        return False
    except ConnectionLostError as exc:
        audit.find("SMTP-TLS-HANDSHAKE", str(exc), audit.since(mark))
        return False
    except (SMTPError, OSError) as exc:
        audit.skip("SMTP-TLS-PARAMETERS", f"the session failed: {exc}")
        return False
    audit.quit(client)
    return True


# -- through the unsafe path ------------------------------------------------------------


def check_starttls_injection(audit: Audit) -> None:
    """STARTTLS and NOOP in one plaintext write: is the NOOP answered under TLS?

    A server that keeps plaintext it read before the handshake and executes
    it afterwards lets a man in the middle add commands to a TLS session.
    """
    check = "SMTP-STARTTLS-INJECTION"
    client = audit.client(TLSMode.NONE, audit.tls_context)
    unsafe = client.unsafe
    mark = audit.mark()
    try:
        client.connect()
        [ready] = unsafe.send_raw(b"STARTTLS\r\nNOOP\r\n", replies=1)
        if ready.code != 220:
            audit.skip(check, f"STARTTLS got {ready.code}")
            return
        try:
            unsafe.start_tls()  # the handshake alone: no EHLO to answer before the probe
        except (SMTPError, OSError) as exc:
            reason = f"inconclusive: the handshake after the pipelined STARTTLS failed: {exc}"
            audit.skip(check, reason)
            return
        try:
            [first] = unsafe.send_raw(INJECTION_PROBE + b"\r\n", replies=1)
        except RemoteProtocolError as exc:
            detail = f"a reply came under TLS before any command: {exc}"
        else:
            if not first.is_success:
                return
            detail = (
                f"the first reply under TLS was {first.code}: the answer to the NOOP sent in"
                " plaintext (the command sent under TLS cannot succeed)"
            )
        audit.find(check, detail, audit.since(mark))
    except (SMTPError, OSError) as exc:
        audit.skip(check, f"the session failed: {exc}")
    finally:
        audit.quit(client)


def check_smuggling(audit: Audit, mode: TLSMode) -> None:
    """Does a bare-LF (or bare-CR) look-alike of CRLF.CRLF end the content?

    Each look-alike gets a message of its own to the test recipient: the
    look-alike and a line no server knows, then the real CRLF.CRLF. If the
    look-alike ended the content, that line is answered as a command, and the
    NOOP after the message does not get the first 250.
    """
    check = "SMTP-SMUGGLING"
    recipient = audit.target.test_rcpt
    if recipient is None:
        audit.skip(check, "needs --test-rcpt (it sends messages to that address)")
        return
    ended: list[str] = []
    evidence: list[str] = []
    for sequence, name in SMUGGLING_SEQUENCES:
        mark = audit.mark()
        client = audit.client(mode, audit.tls_context)
        unsafe = client.unsafe
        try:
            client.connect()
            if not _envelope(audit, client, recipient):
                return
            body = (
                b"Subject: smtpbee audit: does " + name.encode() + b" end a message?\r\n\r\n"
                b"If the next line is the last you see, it does." + sequence + SMUGGLED_LINE
            )
            if unsafe.data_raw(body).is_success:
                [after] = unsafe.send_raw(b"NOOP\r\n", replies=1)
                if after.code != 250:
                    ended.append(name)
        except RemoteProtocolError:
            ended.append(name)  # a reply nothing asked for: the smuggled line's
        except (SMTPError, OSError):
            pass  # the server refused the bare line end and closed (as Postfix 3.9 may)
        finally:
            audit.quit(client)
        if ended and ended[-1] == name:
            shown = audit.since(mark)  # from the envelope on: the session's opening is noise
            start = next((i for i, line in enumerate(shown) if line.startswith("C: MAIL ")), 0)
            evidence += shown[start:]
    if ended:
        detail = (
            f"these ended the content: {', '.join(ended)}; what followed was answered as a"
            " command, so a second message can be smuggled past the first one's checks"
        )
        audit.find(check, detail, evidence)


def _envelope(audit: Audit, client: SMTPClient, recipient: str) -> bool:
    mail = audit.ask(client, Mail(sender=recipient))
    rcpt = audit.ask(client, Rcpt(recipient=recipient)) if mail and mail.is_success else None
    if rcpt is not None and rcpt.is_success:
        return True
    audit.skip("SMTP-SMUGGLING", f"the test recipient {recipient} was not accepted")
    return False
