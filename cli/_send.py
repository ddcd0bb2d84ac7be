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
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from smtpbee import (
    PASSWORD_MECHANISM_PREFERENCE,
    ControlPoint,
    Ehlo,
    InvalidInputError,
    Mail,
    OutcomeUnknownError,
    Rcpt,
    Reply,
    ReplyError,
    Rset,
    SendResult,
    SessionStopped,
    SMTPError,
    TLSMode,
    escape_text,
)
from smtpbee._errors import reply_error
from smtpbee.transports._proxy import parse_proxy

from ._client import (
    PROBE_PHASES,
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
    parse_server,
    parse_source_address,
    resolve_tls,
    run,
    ssl_context,
    transcript_printer,
    write_session_log,
)
from ._compose import message_bytes, read_file
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
from ._progress import ProgressBody, wants_progress

__all__ = ["Outcome", "Prepared", "add_arguments", "deliver", "main", "prepare"]

PASSWORD_ENV_DEFAULT = "SMTPBEE_PASSWORD"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``smtpbee send``."""
    add_server_argument(parser)
    parser.add_argument(
        "--from", dest="sender", metavar="ADDR", help='envelope sender; "" is <>; required'
    )
    parser.add_argument(
        "--to", dest="recipients", action="append", metavar="ADDR",
        help="envelope recipient (repeat for more); required",
    )  # fmt: skip
    content = parser.add_argument_group(
        "the message",
        "with none of --message and --data, a message is composed: Date, Message-ID, From,"
        ' To, Subject "test <date>" and a short body, unless given',
    )
    content.add_argument("--message", metavar="FILE|-", help="a prepared message, sent as it is")
    content.add_argument(
        "--data", metavar="FILE|-",
        help="a message template: %%FROM_ADDRESS%% %%TO_ADDRESS%% %%DATE%% %%MESSAGEID%%"
        " %%SUBJECT%% %%BODY%% %%HELO%% %%SMTPBEE_VERSION%% are replaced, other %%WORD%%s kept",
    )  # fmt: skip
    content.add_argument("--subject", help='the subject (default "test <date>")')
    content.add_argument("--body", metavar="TEXT", help="the text (default: a line naming smtpbee)")
    content.add_argument(
        "--attach", action="append", default=[], metavar="FILE", help="attach a file"
    )
    content.add_argument(
        "--header", action="append", default=[], metavar='"NAME: VALUE"',
        help="set a header field: replaces every field of that name, or adds it (repeatable)",
    )  # fmt: skip
    content.add_argument(
        "--add-header", action="append", default=[], metavar='"NAME: VALUE"',
        help="add a header field, even if one of that name is there (repeatable)",
    )  # fmt: skip
    add_connection_arguments(parser)
    add_control_arguments(parser)
    add_transaction_arguments(parser)
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


def _chunk_size(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a positive number of octets, not {text!r}")
    return int(text)


def add_transaction_arguments(parser: argparse.ArgumentParser) -> None:
    """--pipeline, --bdat, --no-data-fixup and --raw: the transaction as the tester wants it."""
    group = parser.add_argument_group("the transaction")
    pipelining = group.add_mutually_exclusive_group()
    pipelining.add_argument(
        "--pipeline", dest="pipelining", action="store_const", const=True,
        help="group MAIL, RCPT and DATA in one write, even if PIPELINING is not offered",
    )  # fmt: skip
    pipelining.add_argument(
        "--no-pipeline", dest="pipelining", action="store_const", const=False,
        help="one command at a time, even if PIPELINING is offered",
    )  # fmt: skip
    group.add_argument(
        "--bdat", type=_chunk_size, metavar="SIZE",
        help="send the content with BDAT in chunks of SIZE octets, even if CHUNKING is not offered",
    )  # fmt: skip
    group.add_argument(
        "--no-data-fixup", action="store_true",
        help="UNSAFE: the message bytes exactly as given after DATA: no dot-stuffing, bare CR"
        " and LF kept (a line with a lone dot ends the content early)",
    )  # fmt: skip
    raw = parser.add_argument_group(
        "raw mode (UNSAFE)",
        "after the greeting, EHLO, TLS, XCLIENT and AUTH as asked, send these lines exactly"
        " (each with CRLF) instead of a mail transaction; each reads one reply, except the"
        " lines after a 354: they are content, up to a line with a lone dot",
    )
    raw.add_argument("--raw", action="store_true", help="send raw lines (no --from/--to)")
    raw.add_argument(
        "--raw-line", action="append", default=[], metavar="LINE", help="a line (repeatable)"
    )
    raw.add_argument(
        "--raw-file", metavar="FILE|-", help="lines from a file (after any --raw-line)"
    )


def add_server_argument(parser: argparse.ArgumentParser) -> None:
    """--server: required, unless --socket says where to connect."""
    parser.add_argument(
        "--server", metavar="HOST[:PORT]",
        help="port 25 unless given (24 with --protocol lmtp); required unless --socket",
    )  # fmt: skip


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of send and probe that say how to connect.

    --tls, --cafile, --insecure, --tls-cert, --tls-key, --source-address,
    --proxy, --socket, --protocol, --transport, --timeout, -v.
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
        "--socket", metavar="PATH",
        help="connect to this Unix socket instead of --server (--tls none unless given)",
    )  # fmt: skip
    parser.add_argument(
        "--protocol", choices=("smtp", "lmtp"), default="smtp",
        help="lmtp: LHLO, and one final reply per recipient (RFC 2033); default: smtp",
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
    lmtp = getattr(args, "protocol", "smtp") == "lmtp"
    socket_path: str | None = getattr(args, "socket", None)
    if args.server is None and socket_path is None:
        raise UsageError("the following arguments are required: --server (or --socket PATH)")
    host, port = parse_server(args.server, 24 if lmtp else 25) if args.server else ("", 25)
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    if socket_path is not None:
        for option, given in (("--source-address", args.source_address), ("--proxy", args.proxy)):
            if given is not None:
                raise UsageError(f"--socket cannot be combined with {option}")
    tls = resolve_tls(args.tls or ("none" if socket_path is not None else None), port)
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
        socket_path=socket_path,
        lmtp=lmtp,
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
    controls: Controls = field(default_factory=Controls)
    raw_lines: list[bytes] | None = None
    """--raw: the lines to send instead of a transaction."""
    data_fixup: bool = True
    """False with --no-data-fixup: the body goes exactly as given (the unsafe path)."""


def _password(args: argparse.Namespace) -> str | None:
    sources = [args.password is not None, args.password_env is not None, bool(args.password_file)]
    if sum(sources) > 1:
        raise UsageError("give the password one way: --password, --password-env or --password-file")
    if args.password is not None:
        return str(args.password)
    if args.password_file:
        raw = read_file(args.password_file, "--password-file")
        try:
            return raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise InputError(f"--password-file {args.password_file}: not UTF-8 text") from None
    name = args.password_env or PASSWORD_ENV_DEFAULT
    value = os.environ.get(name)
    if value is None and args.password_env is not None:
        raise InputError(f"--password-env {name}: the variable is not set")
    return value


_SEE_HELP = "(see smtpbee send --help)"
_CONTENT_OPTIONS = (
    "message", "data", "subject", "body", "attach", "header", "add_header", "sender",
    "recipients", "pipelining", "bdat", "no_data_fixup",
)  # fmt: skip


def _raw_lines(args: argparse.Namespace) -> list[bytes] | None:
    """--raw's lines (None without --raw); UsageError for what raw mode cannot take."""
    if not args.raw:
        if args.raw_line or args.raw_file is not None:
            raise UsageError("--raw-line and --raw-file go with --raw")
        return None
    given = [name for name in _CONTENT_OPTIONS if getattr(args, name) not in (None, [], False)]
    if given:
        names = ", ".join("--" + n.replace("_", "-") for n in given)
        names = names.replace("--sender", "--from").replace("--recipients", "--to")
        raise UsageError(f"--raw sends only the raw lines: not with {names}")
    # The command line's own bytes: arguments that are not UTF-8 come back as they were.
    lines = [line.encode("utf-8", "surrogateescape") for line in args.raw_line]
    if args.raw_file is not None:
        text = read_file(args.raw_file, "--raw-file")
        lines += [line.removesuffix(b"\r") for line in text.split(b"\n")]
        if text.endswith(b"\n"):
            lines.pop()
    if not lines:
        raise UsageError("--raw needs lines: --raw-line LINE or --raw-file FILE")
    return lines


def _check_content(args: argparse.Namespace) -> None:
    missing = [o for o, v in (("--from", args.sender), ("--to", args.recipients)) if v is None]
    if missing:
        raise UsageError(f"the following arguments are required: {', '.join(missing)} {_SEE_HELP}")
    composing = args.subject is not None or args.body is not None or args.attach
    if args.message is not None and args.data is not None:
        raise UsageError("give the message one way: --message or --data")
    if args.message is not None and composing:
        raise UsageError("--message cannot be combined with --subject, --body or --attach")
    if args.data is not None and args.attach:
        raise UsageError("--attach cannot be combined with --data (the whole message)")
    edits = args.header or args.add_header
    if args.message is None and args.data is None and not composing and not edits:
        raise UsageError(
            "give --message FILE (or -) or --data FILE, or compose with"
            " --subject/--body/--attach/--header"
        )
    if args.no_data_fixup and args.bdat is not None:
        raise UsageError("--no-data-fixup sends DATA: not with --bdat")
    if args.no_data_fixup and args.pipelining:
        raise UsageError("--no-data-fixup sends one command at a time: not with --pipeline")
    if args.no_data_fixup and args.protocol == "lmtp":
        raise UsageError("--no-data-fixup reads one final reply: not with --protocol lmtp")


def _check_stop(args: argparse.Namespace, controls: Controls, raw: bool) -> None:
    point = controls.stop.point if controls.stop is not None else None
    if point is None:
        return
    if point is ControlPoint.AUTH and args.user is None:
        raise UsageError("a stop at AUTH needs --user: without it AUTH is never sent")
    if point is ControlPoint.DATA and args.bdat is not None:
        raise UsageError("--bdat sends no DATA: stop at RCPT or DOT")
    after_auth = point.value not in (*PROBE_PHASES, "AUTH")
    if after_auth and (raw or args.no_data_fixup):
        option = "--raw" if raw else "--no-data-fixup"
        raise UsageError(f"with {option} the session stops at CONNECT, GREETING, EHLO, TLS or AUTH")


def prepare(args: argparse.Namespace) -> Prepared:
    """Check and read everything the send needs; raises UsageError or InputError."""
    raw = _raw_lines(args)
    if raw is None:
        _check_content(args)
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
        if raw is None:
            Mail(sender=args.sender)
            for recipient in args.recipients:
                Rcpt(recipient=recipient)
        if args.helo is not None:
            Ehlo(args.helo)
    except InvalidInputError as exc:
        raise InputError(str(exc)) from None
    connection = connection_from(args, args.helo)
    controls = controls_from(args, connection)
    _check_stop(args, controls, raw is not None)
    data = message_bytes(args) if raw is None else b""
    return Prepared(
        connection=connection,
        sender=args.sender or "",
        recipients=list(dict.fromkeys(args.recipients or [])),
        data=data,
        login=(args.user, password) if args.user is not None and password is not None else None,
        mechanism=args.auth.upper() if args.auth else None,
        allow_insecure_auth=args.allow_insecure_auth,
        controls=controls,
        raw_lines=raw,
        data_fixup=not args.no_data_fixup,
    )


@dataclass(slots=True)
class Outcome:
    """What a send did, complete or not."""

    result: SendResult | None = None
    recipients: dict[str, Reply] = field(default_factory=dict)
    data: Reply | None = None
    delivery: dict[str, Reply] = field(default_factory=dict)
    """LMTP: each accepted recipient's final reply."""
    failure: Failure | None = None
    extensions: list[str] = field(default_factory=list)
    tls: dict[str, Any] | None = None
    stopped: SessionStopped | None = None
    """Where the session stopped as asked (--quit-after and its kin)."""
    xclient: Reply | None = None
    raw: list[tuple[bytes, list[Reply]]] = field(default_factory=list)
    """--raw: each line sent, with the replies it read."""

    @property
    def refused(self) -> dict[str, Reply]:
        """The recipients refused at RCPT, or (LMTP) after the content."""
        replies = [*self.recipients.items(), *self.delivery.items()]
        return {a: r for a, r in replies if not r.is_success}

    @property
    def exit_code(self) -> ExitCode:
        if self.failure is not None:
            return self.failure.exit_code
        refused = list(self.refused.values())
        if self.stopped is not None and self.stopped.reply is not None:
            # Stopping was asked for; a refusal at the stop still says so.
            refused.append(self.stopped.reply)
        refused = [r for r in refused if r.code >= 400]
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


async def _raw_dialogue(client: Client, lines: list[bytes], outcome: Outcome) -> None:
    # After a 354 the lines are content: no reply until the lone dot.
    content = False
    for line in lines:
        replies = await client.send_line(line, replies=1 if not content or line == b"." else 0)
        outcome.raw.append((line, replies))
        opens_content = bool(replies) and replies[-1].code == 354
        content = line != b"." if content else opens_content


async def _send_unfixed(client: Client, job: Prepared, outcome: Outcome) -> None:
    # The envelope on the safe path, one command at a time; the content on the unsafe one.
    session = client.session
    assert session is not None
    eight_bit = not job.data.isascii() and session.conn.extensions.eightbitmime
    utf8 = not all(a.isascii() for a in (job.sender, *job.recipients))
    mail = Mail(sender=job.sender, body="8BITMIME" if eight_bit else None, smtputf8=utf8)
    reply = await client.command(mail)
    if not reply.is_success:
        raise reply_error(reply, command="MAIL", phase="MAIL")
    for recipient in job.recipients:
        outcome.recipients[recipient] = await client.command(Rcpt(recipient=recipient))
    if not any(r.is_success for r in outcome.recipients.values()):
        await client.command(Rset())
        return
    # The final CRLF of the content is the terminator's first: none added if it is there.
    terminator = b".\r\n" if job.data.endswith(b"\r\n") else b"\r\n.\r\n"
    outcome.data = await client.data_raw(job.data, terminator=terminator)
    if not outcome.data.is_success:
        raise reply_error(outcome.data, phase="DATA (end of content)")


async def _transaction(client: Client, job: Prepared, outcome: Outcome) -> None:
    if job.raw_lines is not None:
        await _raw_dialogue(client, job.raw_lines, outcome)
    elif not job.data_fixup:
        await _send_unfixed(client, job, outcome)
    else:
        body, options = _body(job.data)
        result = await client.sendmail(job.sender, job.recipients, body, mail_options=options)
        outcome.result = result
        outcome.recipients = dict(result.recipients)
        outcome.data = result.data
        outcome.delivery = dict(result.delivery)


async def deliver(client: Client, job: Prepared) -> Outcome:
    """Connect, AUTH if asked, send, QUIT; never raises for an expected failure."""
    outcome = Outcome()
    during_auth = False
    try:
        outcome.xclient = await open_session(client, job.connection, job.controls)
        session = client.session
        assert session is not None
        outcome.extensions = extensions_list(session.conn.extensions)
        if job.login is not None:
            during_auth = True
            await client.login(
                *job.login, mechanism=job.mechanism, allow_insecure=job.allow_insecure_auth
            )
            during_auth = False
        await _transaction(client, job, outcome)
        with contextlib.suppress(SMTPError, OSError):
            await client.quit()
    except SessionStopped as stopped:
        # As asked: the library has already sent QUIT or dropped the connection.
        outcome.stopped = stopped
    except (SMTPError, OSError) as exc:
        outcome.failure = classify(exc, during_auth=during_auth)
        if isinstance(exc, ReplyError) and "LMTP delivery" in exc.phase:
            # The error holds the final replies; the RCPT replies are not kept.
            outcome.delivery = dict(exc.recipients)
        elif isinstance(exc, ReplyError | OutcomeUnknownError):
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


def _text(line: bytes) -> str:
    return line.decode("utf-8", "surrogateescape")


def _report_text(job: Prepared, outcome: Outcome) -> None:
    conn = job.connection
    if outcome.xclient is not None:
        print(f"xclient   {outcome.xclient}")
    for line, replies in outcome.raw:
        print(f"raw       C: {escape_text(_text(line))}")
        for reply in replies:
            print(f"          S: {reply}")
    for address, reply in outcome.recipients.items():
        verdict = "accepted" if reply.is_success else "REFUSED"
        print(f"{verdict:<9} {address}: {reply}")
    if outcome.delivery:
        for address, reply in outcome.delivery.items():
            verdict = "delivered" if reply.is_success else "REFUSED"
            print(f"{verdict:<9} {address}: {reply}")
    elif outcome.data is not None:
        verdict = "sent" if outcome.data.is_success else "REFUSED"
        print(f"{verdict:<9} message: {outcome.data}")
    if outcome.stopped is not None:
        print(f"stopped   {stopped_text(outcome.stopped)}")
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
            "server": job.connection.label,
            "protocol": "lmtp" if job.connection.lmtp else "smtp",
            "transport": job.connection.transport,
            "tls_mode": job.connection.tls.value,
            "insecure": job.connection.insecure,
            "sender": job.sender,
            "recipients": {a: reply_json(r) for a, r in outcome.recipients.items()},
            "data": reply_json(outcome.data),
            "delivery": {a: reply_json(r) for a, r in outcome.delivery.items()},
            "tls": outcome.tls,
            "extensions": outcome.extensions,
            "xclient": reply_json(outcome.xclient),
            "stopped": stopped_json(outcome.stopped),
            "raw": [
                {
                    "line": line.decode("utf-8", "surrogateescape"),
                    "replies": [reply_json(r) for r in replies],
                }
                for line, replies in outcome.raw
            ]
            if job.raw_lines is not None
            else None,
            "error": outcome.failure.as_json() if outcome.failure else None,
        }
    )


def main(args: argparse.Namespace) -> int:
    """Run ``smtpbee send``; returns the exit code."""
    try:
        job = prepare(args)
        log = new_session_log(job.connection, job.controls)
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
        sock = open_socket(job.connection, job.controls)
    except OSError as exc:
        outcome = Outcome(failure=classify(exc))
        write_session_log(log, job.controls.log_path)
    else:
        try:
            options = client_options(job.controls, sock, log)
            client = make_client(
                client_connection(job.connection, job.controls), transcript, sock, **options
            )
        except (UsageError, SMTPError) as exc:
            close_socket(sock)
            failure = classify(exc)
            error_line(failure.text)
            return failure.exit_code
        holder.append(client)
        try:
            outcome = run(job.connection.transport, lambda: deliver(client, job))
        finally:
            write_session_log(log, job.controls.log_path)
    if args.json:
        _report_json(job, outcome)
    else:
        _report_text(job, outcome)
    if outcome.failure is not None:
        error_line(outcome.failure.text)
    elif outcome.exit_code is not ExitCode.OK:
        refused = ", ".join(outcome.refused)
        error_line(f"refused recipients: {refused}")
    return outcome.exit_code
