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

from smtpbee import Reply, SessionStopped, SMTPError, escape_text

from ._client import (
    Client,
    Connection,
    Controls,
    add_control_arguments,
    client_connection,
    client_options,
    close_socket,
    controls_from,
    make_client,
    new_session_log,
    open_session,
    open_socket,
    run,
    write_session_log,
)
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
    stopped_json,
    stopped_text,
    tls_json,
)
from ._send import add_connection_arguments, add_server_argument, connection_from

__all__ = ["Findings", "add_arguments", "main", "probe"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``smtpbee probe``."""
    add_server_argument(parser)
    add_connection_arguments(parser)
    add_control_arguments(parser, probe=True)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


@dataclass(slots=True)
class Findings:
    """What the probe learnt."""

    greeting: Reply | None = None
    extensions_before_tls: list[str] | None = None
    extensions: list[str] = field(default_factory=list)
    tls: dict[str, Any] | None = None
    failure: Failure | None = None
    xclient: Reply | None = None
    stopped: SessionStopped | None = None


async def probe(
    client: Client, conn: Connection | None = None, controls: Controls | None = None
) -> Findings:
    """Connect (EHLO, STARTTLS, EHLO as the mode says; XCLIENT if asked), note everything, QUIT."""
    found = Findings()
    try:
        if conn is None or controls is None:
            await client.connect()
        else:
            found.xclient = await open_session(client, conn, controls)
        with contextlib.suppress(SMTPError, OSError):
            await client.quit()
    except SessionStopped as stopped:
        found.stopped = stopped
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
    protocol = "lmtp, " if conn.lmtp else ""
    print(f"server      {conn.label} ({protocol}tls {conn.tls.value}, transport {conn.transport})")
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
    if found.xclient is not None:
        print(f"xclient     {found.xclient}")
    if found.stopped is not None:
        print(f"stopped     {stopped_text(found.stopped)}")
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
        controls = controls_from(args, conn)
        log = new_session_log(conn, controls)
    except (InputError, UsageError) as exc:
        failure = classify(exc)
        error_line(failure.text)
        return failure.exit_code
    sock = None
    try:
        sock = open_socket(conn, controls)
        options = client_options(controls, sock, log)
        client = make_client(client_connection(conn, controls), None, sock, **options)
    except (UsageError, SMTPError, OSError) as exc:
        close_socket(sock)
        failure = classify(exc)
        error_line(failure.text)
        return failure.exit_code
    try:
        found = run(conn.transport, lambda: probe(client, conn, controls))
    finally:
        write_session_log(log, controls.log_path)
    exit_code = found.failure.exit_code if found.failure is not None else ExitCode.OK
    if args.json:
        print_json(
            {
                "ok": found.failure is None,
                "exit_code": int(exit_code),
                "server": conn.label,
                "protocol": "lmtp" if conn.lmtp else "smtp",
                "transport": conn.transport,
                "tls_mode": conn.tls.value,
                "insecure": conn.insecure,
                "greeting": reply_json(found.greeting),
                "extensions_before_tls": found.extensions_before_tls,
                "extensions": found.extensions,
                "tls": found.tls,
                "xclient": reply_json(found.xclient),
                "stopped": stopped_json(found.stopped),
                "error": found.failure.as_json() if found.failure else None,
            }
        )
    else:
        _report_text(conn, found)
    if found.failure is not None:
        error_line(found.failure.text)
    return exit_code
