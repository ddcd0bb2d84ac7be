# smtpbee/cli/_send
#
# `smtpbee send`: one message, one connection, one exit code.
#
# Theory of operation
# -------------------
# prepare() does everything that can fail on the user's input before a socket
# is opened: it reads the message (or composes one with the email package),
# the password and the CA file, and builds the MAIL, RCPT and EHLO commands
# once, which validates every address and name (CR, LF, NUL, bad syntax). A
# mistake there is exit 65 and the server never hears of it.
#
# deliver() is one coroutine for all three transports (see _client): connect,
# AUTH if asked, the transaction, QUIT. Its Outcome keeps what is known even
# when it fails, so the JSON shows the per-recipient replies of a refusal.
#
# Exit codes: 0 when every recipient and the content were accepted; 69 if any
# reply was a 5xx (even one refused recipient among accepted ones); 75 for a
# 4xx or a network failure; 76 for protocol violations; 77 for AUTH; 65 bad
# input (see _output.classify).
from __future__ import annotations

import argparse
import contextlib
import email.policy
import email.utils
import mimetypes
import os
import sys
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from smtpbee import (
    PASSWORD_MECHANISM_PREFERENCE,
    Ehlo,
    InvalidInputError,
    Mail,
    OutcomeUnknownError,
    Rcpt,
    Reply,
    ReplyError,
    SendResult,
    SMTPError,
    TLSMode,
)
from smtpbee.transports._proxy import parse_proxy

from ._client import (
    Client,
    Connection,
    make_client,
    parse_server,
    parse_source_address,
    resolve_tls,
    run,
    ssl_context,
    transcript_printer,
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
    tls_json,
)
from ._progress import ProgressBody, wants_progress

__all__ = ["Outcome", "Prepared", "add_arguments", "deliver", "main", "prepare"]

PASSWORD_ENV_DEFAULT = "SMTPBEE_PASSWORD"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``smtpbee send``."""
    parser.add_argument(
        "--server", required=True, metavar="HOST[:PORT]", help="port 25 unless given"
    )
    parser.add_argument(
        "--from", dest="sender", required=True, metavar="ADDR", help='envelope sender; "" is <>'
    )
    parser.add_argument(
        "--to", dest="recipients", action="append", required=True, metavar="ADDR",
        help="envelope recipient (repeat for more)",
    )  # fmt: skip
    parser.add_argument("--message", metavar="FILE|-", help="a prepared message (- for stdin)")
    parser.add_argument("--subject", help="compose a message with this subject")
    parser.add_argument("--body", metavar="TEXT", help="the composed message's text")
    parser.add_argument(
        "--attach", action="append", default=[], metavar="FILE", help="attach a file"
    )
    add_connection_arguments(parser)
    parser.add_argument("--user", metavar="U", help="log in (AUTH) as this user")
    parser.add_argument(
        "--password", metavar="P", help="the password (visible to other local users: see below)"
    )
    parser.add_argument(
        "--password-env", metavar="NAME",
        help=f"read the password from this environment variable (default {PASSWORD_ENV_DEFAULT})",
    )  # fmt: skip
    parser.add_argument("--password-file", metavar="FILE", help="read the password from a file")
    parser.add_argument(
        "--auth", metavar="MECH", help="SASL mechanism (default: the strongest offered)"
    )
    parser.add_argument(
        "--allow-insecure-auth",
        action="store_true",
        help="allow AUTH over plaintext or unverified TLS (refused otherwise)",
    )
    parser.add_argument("--helo", metavar="NAME", help="the name to give in EHLO/HELO")
    parser.add_argument(
        "--transcript", action="store_true", help="print the session on stderr (C:/S: lines)"
    )
    parser.add_argument(
        "--states", action="store_true", help="with --transcript: the client state after each line"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of send and probe that say how to connect.

    --tls, --cafile, --insecure, --tls-cert, --tls-key, --source-address,
    --proxy, --transport, --timeout, -v.
    """
    parser.add_argument(
        "--tls",
        choices=("none", "opportunistic", "starttls", "implicit"),
        help="default: implicit on port 465, required STARTTLS elsewhere",
    )
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument("--cafile", metavar="PEM", help="trust only the CAs in this file")
    trust.add_argument(
        "--insecure", action="store_true", help="do not verify the server's certificate"
    )
    parser.add_argument(
        "--tls-cert", metavar="PEM",
        help="a client certificate to present (with its key, unless --tls-key gives it)",
    )  # fmt: skip
    parser.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    parser.add_argument(
        "--source-address", metavar="HOST[:PORT]",
        help="the local address to connect from (port 0, any, unless given)",
    )  # fmt: skip
    parser.add_argument(
        "--proxy", metavar="URL",
        help="connect through a proxy: socks5://[USER:PASS@]HOST:PORT, socks4://HOST:PORT"
        " or http://[USER:PASS@]HOST:PORT (HTTP CONNECT); needs smtpbee[proxy]",
    )  # fmt: skip
    parser.add_argument(
        "--transport", choices=("sync", "asyncio", "trio"), default="sync", help="default: sync"
    )
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="for every phase (default: RFC 5321)"
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="log to stderr: -v connection events, -vv also the session (secrets redacted)",
    )  # fmt: skip


def connection_from(args: argparse.Namespace, local_hostname: str | None = None) -> Connection:
    """The Connection the connection options describe."""
    host, port = parse_server(args.server)
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    tls = resolve_tls(args.tls, port)
    if args.tls_key is not None and args.tls_cert is None:
        raise UsageError("--tls-key goes with --tls-cert")
    if args.tls_cert is not None and tls is TLSMode.NONE:
        raise UsageError("--tls-cert needs TLS: not with --tls none")
    source = None
    if args.source_address is not None:
        source = parse_source_address(args.source_address)
        if source[1] != 0 and args.transport == "trio":
            # trio's open_tcp_stream binds a local host, never a local port.
            raise UsageError("--source-address with a port: use --transport sync or asyncio")
    if args.proxy is not None:
        try:
            parse_proxy(args.proxy)
        except InvalidInputError as exc:
            raise UsageError(f"--proxy: {exc}") from None
    return Connection(
        host=host,
        port=port,
        tls=tls,
        context=ssl_context(args.cafile, args.insecure, args.tls_cert, args.tls_key),
        insecure=args.insecure,
        transport=args.transport,
        timeout=args.timeout,
        local_hostname=local_hostname,
        source_address=source,
        proxy=args.proxy,
    )


@dataclass(slots=True)
class Prepared:
    """A send, checked and ready: nothing in it can fail on the user's input any more."""

    connection: Connection
    sender: str
    recipients: list[str]
    data: bytes
    login: tuple[str, str] | None
    mechanism: str | None
    allow_insecure_auth: bool


def _read_file(path: str, what: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{what} {path}: {exc.strerror or exc}") from None


def _password(args: argparse.Namespace) -> str | None:
    sources = [args.password is not None, args.password_env is not None, bool(args.password_file)]
    if sum(sources) > 1:
        raise UsageError("give the password one way: --password, --password-env or --password-file")
    if args.password is not None:
        return str(args.password)
    if args.password_file:
        raw = _read_file(args.password_file, "--password-file")
        try:
            return raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise InputError(f"--password-file {args.password_file}: not UTF-8 text") from None
    name = args.password_env or PASSWORD_ENV_DEFAULT
    value = os.environ.get(name)
    if value is None and args.password_env is not None:
        raise InputError(f"--password-env {name}: the variable is not set")
    return value


def compose(args: argparse.Namespace) -> bytes:
    """A message built from --subject/--body/--attach, with Date and Message-ID."""
    msg = EmailMessage()
    try:
        if args.sender not in ("", "<>"):
            msg["From"] = args.sender
        msg["To"] = ", ".join(args.recipients)
        msg["Subject"] = args.subject or ""
        msg["Date"] = email.utils.formatdate(localtime=True)
        domain = args.sender.rpartition("@")[2].strip("<>") or "smtpbee.invalid"
        msg["Message-ID"] = email.utils.make_msgid(domain=domain)
    except (ValueError, TypeError) as exc:
        raise InputError(f"cannot build the message headers: {exc}") from None
    text = args.body or ""
    if text and not text.endswith("\n"):
        text += "\n"
    # Quoted-printable keeps non-ASCII text 7-bit: no need for 8BITMIME.
    msg.set_content(text, cte=None if text.isascii() else "quoted-printable")
    for path in args.attach:
        content = _read_file(path, "--attach")
        kind, encoding = mimetypes.guess_type(path)
        if kind is None or encoding is not None:
            kind = "application/octet-stream"
        maintype, subtype = kind.split("/", 1)
        msg.add_attachment(
            content, maintype=maintype, subtype=subtype, filename=os.path.basename(path)
        )
    utf8 = not all(a.isascii() for a in (args.sender, *args.recipients))
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    return msg.as_bytes(policy=policy)


def prepare(args: argparse.Namespace) -> Prepared:
    """Check and read everything the send needs; raises UsageError or InputError."""
    composing = args.subject is not None or args.body is not None or args.attach
    if args.message is not None and composing:
        raise UsageError("--message cannot be combined with --subject, --body or --attach")
    if args.message is None and not composing:
        raise UsageError("give --message FILE (or -), or compose with --subject/--body/--attach")
    if args.states and not args.transcript:
        raise UsageError("--states goes with --transcript")
    if args.auth is not None and args.auth.upper() not in PASSWORD_MECHANISM_PREFERENCE:
        names = ", ".join(PASSWORD_MECHANISM_PREFERENCE)
        raise UsageError(f"--auth {args.auth}: choose one of {names}")
    password = _password(args) if args.user is not None else None
    if args.user is not None and password is None:
        raise UsageError(
            f"--user needs a password: --password-env NAME, --password-file FILE,"
            f" ${PASSWORD_ENV_DEFAULT} or --password"
        )
    has_password_option = args.password is not None or args.password_env or args.password_file
    if args.user is None and has_password_option:
        raise UsageError("a password option needs --user")
    try:
        # Building the commands validates every address and name, before any I/O.
        Mail(sender=args.sender)
        for recipient in args.recipients:
            Rcpt(recipient=recipient)
        if args.helo is not None:
            Ehlo(args.helo)
    except InvalidInputError as exc:
        raise InputError(str(exc)) from None
    connection = connection_from(args, args.helo)
    data = _read_file(args.message, "--message") if args.message is not None else compose(args)
    return Prepared(
        connection=connection,
        sender=args.sender,
        recipients=list(dict.fromkeys(args.recipients)),
        data=data,
        login=(args.user, password) if args.user is not None and password is not None else None,
        mechanism=args.auth.upper() if args.auth else None,
        allow_insecure_auth=args.allow_insecure_auth,
    )


@dataclass(slots=True)
class Outcome:
    """What a send did, complete or not."""

    result: SendResult | None = None
    recipients: dict[str, Reply] = field(default_factory=dict)
    data: Reply | None = None
    failure: Failure | None = None
    extensions: list[str] = field(default_factory=list)
    tls: dict[str, Any] | None = None

    @property
    def exit_code(self) -> ExitCode:
        if self.failure is not None:
            return self.failure.exit_code
        refused = [r for r in self.recipients.values() if not r.is_success]
        if any(r.is_permanent for r in refused):
            return ExitCode.UNAVAILABLE
        return ExitCode.TEMPORARY if refused else ExitCode.OK


def _body(data: bytes) -> tuple[Any, dict[str, Any]]:
    # A streamed body's 8-bitness is unknown to the core: say it, so a server
    # without 8BITMIME is refused up front exactly as with plain bytes.
    if not wants_progress(len(data), sys.stderr):
        return data, {}
    options = {} if data.isascii() else {"body": "8BITMIME"}
    return ProgressBody(data, sys.stderr), options


async def deliver(client: Client, job: Prepared) -> Outcome:
    """Connect, AUTH if asked, send, QUIT; never raises for an expected failure."""
    outcome = Outcome()
    during_auth = False
    try:
        outcome.extensions = extensions_list(await client.connect())
        if job.login is not None:
            during_auth = True
            await client.login(
                *job.login, mechanism=job.mechanism, allow_insecure=job.allow_insecure_auth
            )
            during_auth = False
        body, options = _body(job.data)
        result = await client.sendmail(job.sender, job.recipients, body, mail_options=options)
        outcome.result = result
        outcome.recipients = dict(result.recipients)
        outcome.data = result.data
        with contextlib.suppress(SMTPError, OSError):
            await client.quit()
    except (SMTPError, OSError) as exc:
        outcome.failure = classify(exc, during_auth=during_auth)
        if isinstance(exc, ReplyError | OutcomeUnknownError):
            outcome.recipients = dict(exc.recipients)
        if isinstance(exc, ReplyError) and exc.phase.startswith("DATA"):
            outcome.data = exc.reply
        with contextlib.suppress(SMTPError, OSError):
            if client.session is not None and client.usable:
                await client.quit()
    finally:
        await client.close()
        outcome.tls = tls_json(client.tls_info)
        if client.session is not None and not outcome.extensions:
            outcome.extensions = extensions_list(client.session.conn.extensions)
    return outcome


def _report_text(job: Prepared, outcome: Outcome) -> None:
    conn = job.connection
    for address, reply in outcome.recipients.items():
        verdict = "accepted" if reply.is_success else "REFUSED"
        print(f"{verdict:<9} {address}: {reply}")
    if outcome.data is not None:
        verdict = "sent" if outcome.data.is_success else "REFUSED"
        print(f"{verdict:<9} message: {outcome.data}")
    tls = outcome.tls
    if tls is None:
        print(f"tls       none (--tls {conn.tls.value}): the session was not encrypted")
    else:
        check = "certificate verified" if tls["verified"] else "certificate NOT verified"
        print(f"tls       {tls['version']} {tls['cipher']}, {check}")


def _report_json(job: Prepared, outcome: Outcome) -> None:
    print_json(
        {
            "ok": outcome.exit_code is ExitCode.OK,
            "exit_code": int(outcome.exit_code),
            "server": f"{job.connection.host}:{job.connection.port}",
            "transport": job.connection.transport,
            "tls_mode": job.connection.tls.value,
            "insecure": job.connection.insecure,
            "sender": job.sender,
            "recipients": {a: reply_json(r) for a, r in outcome.recipients.items()},
            "data": reply_json(outcome.data),
            "tls": outcome.tls,
            "extensions": outcome.extensions,
            "error": outcome.failure.as_json() if outcome.failure else None,
        }
    )


def main(args: argparse.Namespace) -> int:
    """Run ``smtpbee send``; returns the exit code."""
    try:
        job = prepare(args)
    except (InputError, UsageError) as exc:
        failure = classify(exc)
        if args.json and failure.exit_code is ExitCode.DATA_ERROR:
            print_json(
                {"ok": False, "exit_code": int(failure.exit_code), "recipients": {},
                 "data": None, "tls": None, "extensions": [], "error": failure.as_json()}
            )  # fmt: skip
        error_line(failure.text)
        return failure.exit_code
    if job.connection.insecure:
        print("smtpbee: warning: --insecure: the server's certificate is NOT verified",
              file=sys.stderr)  # fmt: skip
    holder: list[Client] = []
    transcript = (
        transcript_printer(sys.stderr, args.states, lambda: holder[0]) if args.transcript else None
    )
    try:
        client = make_client(job.connection, transcript)
    except (UsageError, SMTPError) as exc:
        failure = classify(exc)
        error_line(failure.text)
        return failure.exit_code
    holder.append(client)
    outcome = run(job.connection.transport, lambda: deliver(client, job))
    if args.json:
        _report_json(job, outcome)
    else:
        _report_text(job, outcome)
    if outcome.failure is not None:
        error_line(outcome.failure.text)
    elif outcome.exit_code is not ExitCode.OK:
        refused = ", ".join(a for a, r in outcome.recipients.items() if not r.is_success)
        error_line(f"refused recipients: {refused}")
    return outcome.exit_code
