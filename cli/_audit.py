# smtpbee/cli/_audit
#
# `smtpbee audit`: a read-only check of a server's conformance and hygiene.
#
# The order of the checks, and which session each runs in:
#   1. a first session (plaintext, or implicit TLS on port 465): the
#      greeting, the EHLO reply and its extensions, AUTH before TLS, VRFY and
#      EXPN, open relay (RCPT then RSET), PIPELINING; a check that breaks
#      the session gets the next one a new session;
#   2. STARTTLS in a session of its own: offered, accepted, the handshake, the
#      certificate (a failed check is a finding; the rest is learnt without it);
#   3. STARTTLS command injection and SMTP smuggling, through the library's
#      unsafe path (smuggling only with --test-rcpt: it sends messages there);
#   4. every reply code seen, against the state table's rules.
# Failing to reach the server at all is no finding but an error with the
# sysexits code of every other command (design notes, section 5).
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from smtpbee import RemoteProtocolError, SMTPError, TLSMode, Verb, escape_text
from smtpbee.transports.sync import SMTPClient

from . import _audit_checks as checks
from ._audit_checks import SEVERITIES, Audit, AuditFailed, Target, at_or_above
from ._client import parse_server, resolve_tls, ssl_context
from ._output import ExitCode, InputError, UsageError, classify, error_line, print_json

__all__ = ["add_arguments", "main", "run_audit"]

FOUND = 1
"""The exit code when something at or above --fail-on was found."""

_COLOURS = {
    "critical": "\x1b[1;31m",
    "high": "\x1b[31m",
    "medium": "\x1b[33m",
    "low": "\x1b[36m",
    "info": "\x1b[2m",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``smtpbee audit``."""
    parser.add_argument(
        "--server", required=True, metavar="HOST[:PORT]", help="port 25 unless given"
    )
    parser.add_argument(
        "--tls",
        choices=("none", "opportunistic", "starttls", "implicit"),
        help="implicit: audit over TLS from the first byte (default on port 465); none: do not"
        " try STARTTLS; otherwise the plaintext session is audited and STARTTLS tested",
    )
    parser.add_argument("--cafile", metavar="PEM", help="trust only these CA certificates")
    parser.add_argument(
        "--insecure", action="store_true", help="do not verify the server's certificate"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="per step (default 30)"
    )
    parser.add_argument("--helo", metavar="NAME", help="the name to give in EHLO")
    parser.add_argument(
        "--test-rcpt",
        metavar="ADDR",
        help="a mailbox you own: allows the checks that send messages (SMTP smuggling)",
    )
    parser.add_argument(
        "--fail-on",
        choices=SEVERITIES,
        default="high",
        metavar="SEVERITY",
        help=f"exit 1 when a finding is this severe or worse: {', '.join(SEVERITIES)}"
        " (default high)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _target(args: argparse.Namespace) -> Target:
    host, port = parse_server(args.server)
    if not args.timeout > 0:
        raise UsageError(f"--timeout {args.timeout}: give a number of seconds above 0")
    if args.test_rcpt is not None and "@" not in args.test_rcpt:
        raise UsageError(f"--test-rcpt {args.test_rcpt!r}: give a mailbox, local@domain")
    return Target(
        host=host,
        port=port,
        tls=resolve_tls(args.tls, port),
        context=ssl_context(args.cafile, args.insecure),
        unverified=ssl_context(args.cafile, True),
        insecure=args.insecure,
        timeout=args.timeout,
        helo=args.helo,
        test_rcpt=args.test_rcpt,
    )


def _first_session(audit: Audit) -> SMTPClient | None:
    """The session of the first checks; None if the server's replies cannot be parsed.

    Raises AuditFailed when the server cannot be reached, or refuses service.
    """
    implicit = audit.target.tls is TLSMode.IMPLICIT
    mode = TLSMode.IMPLICIT if implicit else TLSMode.NONE
    mark = audit.mark()
    try:
        client = checks.open_tls(audit, mode) if implicit else audit.open(mode)
    except RemoteProtocolError as exc:
        greeted = any(line.startswith("S: ") for line in audit.lines[mark:])
        audit.protocol_error(Verb.EHLO if greeted else None, exc, mark)
        return None
    except (SMTPError, OSError) as exc:
        raise AuditFailed(exc) from exc
    session = client.session
    audit.greeting = session.greeting
    audit.observe(None, session.greeting, mark)
    opening = audit.lines[mark:]
    helo = any(line.startswith("C: HELO ") for line in opening)
    hello_at = next((i for i, line in enumerate(opening) if line.startswith("C: ")), None)
    checks.check_greeting(audit, opening[:hello_at])
    if not helo:
        hello = audit.mark()
        try:
            audit.ehlo = client.ehlo()
        except RemoteProtocolError as exc:
            audit.protocol_error(Verb.EHLO, exc, hello)
            return None
        audit.observe(Verb.EHLO, audit.ehlo, hello)
        audit.ehlo_evidence = audit.since(hello)
        audit.extensions = client.extensions
        checks.check_extensions(audit, audit.ehlo, audit.since(hello))
        checks.check_ehlo(audit, audit.since(hello))
        if not implicit:
            checks.check_auth_before_tls(audit, audit.since(hello))
    else:
        checks.check_ehlo(audit, audit.since(mark))
    return client


_SESSION_CHECKS: tuple[tuple[str, Callable[[Audit, SMTPClient], None]], ...] = (
    ("SMTP-VRFY-EXPOSURE", checks.check_vrfy_expn),
    ("SMTP-OPEN-RELAY", checks.check_relay),
    ("SMTP-PIPELINING-BROKEN", checks.check_pipelining),
)


def run_audit(target: Target) -> Audit:
    """Run every check against ``target``; the Audit holds the findings.

    Raises AuditFailed when the server cannot be audited at all.
    """
    audit = Audit(target)
    implicit = target.tls is TLSMode.IMPLICIT
    client = _first_session(audit)
    if client is None:
        audit.skip("*", "the other checks: the server's replies cannot be parsed")
        return audit
    mode = TLSMode.IMPLICIT if implicit else TLSMode.NONE
    for name, check in _SESSION_CHECKS:
        try:
            if not client.usable:
                audit.quit(client)
                client = audit.open(mode, audit.tls_context)
            check(audit, client)
        except (SMTPError, OSError) as exc:
            audit.skip(name, f"the session failed: {exc}")
    audit.quit(client)
    tls_made = implicit
    if target.tls is TLSMode.NONE:
        for name in ("SMTP-STARTTLS", "SMTP-STARTTLS-INJECTION"):
            audit.skip(name, "--tls none")
    elif not implicit:
        tls_made = checks.check_starttls(audit)
        if tls_made:
            checks.check_starttls_injection(audit)
    smuggling_mode = mode if implicit or not tls_made else TLSMode.STARTTLS
    checks.check_smuggling(audit, smuggling_mode)
    checks.check_reply_codes(audit)
    order = {severity: index for index, severity in enumerate(reversed(SEVERITIES))}
    audit.findings.sort(key=lambda finding: order[finding.severity])
    return audit


# -- output ---------------------------------------------------------------------------


def _summary(audit: Audit, fail_on: str, exit_code: int) -> dict[str, Any]:
    counts = {severity: 0 for severity in SEVERITIES}
    for finding in audit.findings:
        counts[finding.severity] += 1
    worst = next((s for s in reversed(SEVERITIES) if counts[s]), None)
    return {
        "counts": counts,
        "highest": worst,
        "fail_on": fail_on,
        "failed": exit_code == FOUND,
        "exit_code": exit_code,
        "tls": audit.tls_info,
        "not_run": [item.as_json() for item in audit.not_run],
    }


def _colour(severity: str, text: str, colour: bool) -> str:
    return f"{_COLOURS[severity]}{text}\x1b[0m" if colour else text


def _report_text(audit: Audit, server: str, summary: dict[str, Any]) -> None:
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    print(f"smtpbee audit of {server}")
    rows = [
        (escape_text(f.id), f.severity, escape_text(f.title), escape_text(f.source))
        for f in audit.findings
    ]
    if rows:
        header = ("ID", "SEVERITY", "TITLE", "SOURCE")
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(3)]
        print("  ".join([*(h.ljust(w) for h, w in zip(header, widths, strict=False)), "SOURCE"]))
        for row in rows:
            cells = [
                row[0].ljust(widths[0]),
                _colour(row[1], row[1].ljust(widths[1]), colour),
                row[2].ljust(widths[2]),
                row[3],
            ]
            print("  ".join(cells))
    else:
        print("no findings")
    for item in audit.not_run:
        print(f"not run: {escape_text(item.check)}: {escape_text(item.reason)}")
    counts = ", ".join(f"{n} {s}" for s, n in reversed(summary["counts"].items()) if n)
    verdict = "FAILED" if summary["failed"] else "passed"
    print(
        f"{len(audit.findings)} findings{f' ({counts})' if counts else ''};"
        f" {verdict} (--fail-on {summary['fail_on']})"
    )


def main(args: argparse.Namespace) -> int:
    """Run ``smtpbee audit``; returns the exit code."""
    try:
        target = _target(args)
    except (InputError, UsageError) as exc:
        failure = classify(exc)
        error_line(failure.text)
        return failure.exit_code
    if target.insecure:
        print(
            "smtpbee: warning: --insecure: the server's certificate is NOT verified",
            file=sys.stderr,
        )
    server = f"{target.host}:{target.port}"
    try:
        audit = run_audit(target)
    except AuditFailed as exc:
        failure = classify(exc.error)
        if args.json:
            print_json(
                {
                    "server": server,
                    "findings": [],
                    "summary": None,
                    "error": failure.as_json(),
                    "exit_code": int(failure.exit_code),
                }
            )
        error_line(f"cannot audit {server}: {failure.text}")
        return failure.exit_code
    failed = any(at_or_above(f.severity, args.fail_on) for f in audit.findings)
    exit_code = FOUND if failed else ExitCode.OK
    summary = _summary(audit, args.fail_on, int(exit_code))
    if args.json:
        findings = [finding.as_json() for finding in audit.findings]
        print_json({"server": server, "findings": findings, "summary": summary, "error": None})
    else:
        _report_text(audit, server, summary)
    return int(exit_code)
