# smtpbee/cli/_probe
#
# `smtpbee probe`: what a server says about itself, and nothing more.
#
# It sends only what connecting takes (EHLO, STARTTLS and EHLO again when the
# TLS mode asks for it) and QUIT: no MAIL, no AUTH. What was learnt before a
# failure is still shown (a server that does not offer STARTTLS still has a
# greeting and extensions worth seeing), then the error and its exit code.
from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass, field
from typing import Any

from smtpbee import Reply, SMTPError, escape_text

from ._client import Client, Connection, make_client, run
from ._output import (
    ExitCode,
    Failure,
    InputError,
    UsageError,
    classify,
    error_line,
    extensions_list,
    print_json,
    reply_json,
    tls_json,
)
from ._send import add_connection_arguments, connection_from

__all__ = ["Findings", "add_arguments", "main", "probe"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``smtpbee probe``."""
    parser.add_argument(
        "--server", required=True, metavar="HOST[:PORT]", help="port 25 unless given"
    )
    add_connection_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


@dataclass(slots=True)
class Findings:
    """What the probe learnt."""

    greeting: Reply | None = None
    extensions_before_tls: list[str] | None = None
    extensions: list[str] = field(default_factory=list)
    tls: dict[str, Any] | None = None
    failure: Failure | None = None


async def probe(client: Client) -> Findings:
    """Connect (EHLO, STARTTLS, EHLO as the mode says), note everything, QUIT."""
    found = Findings()
    try:
        await client.connect()
        with contextlib.suppress(SMTPError, OSError):
            await client.quit()
    except (SMTPError, OSError) as exc:
        found.failure = classify(exc)
    finally:
        await client.close()
        session = client.session
        if session is not None:
            found.greeting = session.greeting
            before = session.extensions_before_tls
            found.extensions_before_tls = extensions_list(before) if before is not None else None
            found.extensions = extensions_list(session.conn.extensions)
        found.tls = tls_json(client.tls_info)
    return found


def _report_text(conn: Connection, found: Findings) -> None:
    print(f"server      {conn.host}:{conn.port} (tls {conn.tls.value}, transport {conn.transport})")
    if found.greeting is not None:
        lines = [escape_text(line) for line in found.greeting.text.split("\n")]
        print(f"greeting    {found.greeting.code} {lines[0]}")
        for line in lines[1:]:
            print(f"            {line}")
    if found.extensions_before_tls is not None:
        print("extensions before STARTTLS:")
        for keyword in found.extensions_before_tls:
            print(f"  {keyword}")
    if found.tls is not None:
        tls = found.tls
        check = "verified" if tls["verified"] else "NOT verified"
        print(f"tls         {tls['version']} {tls['cipher']}")
        print(f"certificate {check}" + (f", subject {tls['subject']}" if tls["subject"] else ""))
    else:
        print("tls         none: the session was not encrypted")
    label = "after STARTTLS" if found.extensions_before_tls is not None else "(EHLO)"
    print(f"extensions {label}:")
    for keyword in found.extensions:
        print(f"  {keyword}")


def main(args: argparse.Namespace) -> int:
    """Run ``smtpbee probe``; returns the exit code."""
    try:
        conn = connection_from(args)
        if conn.insecure:
            print("smtpbee: warning: --insecure: the server's certificate is NOT verified",
                  file=sys.stderr)  # fmt: skip
        client = make_client(conn, None)
    except (InputError, UsageError) as exc:
        failure = classify(exc)
        error_line(failure.text)
        return failure.exit_code
    found = run(conn.transport, lambda: probe(client))
    exit_code = found.failure.exit_code if found.failure is not None else ExitCode.OK
    if args.json:
        print_json(
            {
                "ok": found.failure is None,
                "exit_code": int(exit_code),
                "server": f"{conn.host}:{conn.port}",
                "transport": conn.transport,
                "tls_mode": conn.tls.value,
                "insecure": conn.insecure,
                "greeting": reply_json(found.greeting),
                "extensions_before_tls": found.extensions_before_tls,
                "extensions": found.extensions,
                "tls": found.tls,
                "error": found.failure.as_json() if found.failure else None,
            }
        )
    else:
        _report_text(conn, found)
    if found.failure is not None:
        error_line(found.failure.text)
    return exit_code
