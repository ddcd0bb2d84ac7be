# smtpbee/cli/_replay
#
# `smtpbee replay FILE`: a session log (written with --log FILE, or by
# smtpbee.SessionLog) served on loopback by smtpbee.testing.replay(), until
# interrupted; each command that differs from the log is printed as it comes.
# `--check` plays the log's own client side against the replay and reports
# the divergences, the commands never replayed and those the scripted server
# handles itself (exit 0 none, 1 some): a test of the log and of the replay.
#
# The client side of --check is the log's bytes as they are, on a plain
# socket (TLS where the log has it), with smtpbee's reply reader counting the
# replies: any client of smtpbee would send what it decides, not what the log
# holds. A write whose secret was redacted is sent as its redacted text,
# which the replay compares as redacted.
#
# smtpbee.testing is imported when a log is replayed, not with this module:
# every subcommand's module is imported at start-up, and the library never
# loads its test server unasked.
from __future__ import annotations

import argparse
import socket
import ssl
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smtpbee import InvalidInputError, SessionLog, SMTPError, escape_text
from smtpbee._receivebuffer import ReplyReader

from ._output import ExitCode, error_line

if TYPE_CHECKING:
    from smtpbee.testing import ReplayServer

__all__ = ["add_arguments", "main"]

_DIVERGED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``smtpbee replay``."""
    parser.add_argument("file", metavar="FILE", help="a session log (JSON lines, from --log FILE)")
    parser.add_argument(
        "--port", type=int, default=0, help="the port to listen on (default: a free one)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        choices=("127.0.0.1", "::1"),
        help="the loopback address to listen on (default 127.0.0.1)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="play the log's own client commands against the replay, print the divergences"
        " (exit 0: none, 1: some)",
    )
    parser.add_argument(
        "--ignore-arguments",
        metavar="VERB",
        action="append",
        default=[],
        help="do not compare the arguments of this verb (repeatable; e.g. EHLO, whose name"
        " differs from one client host to the next)",
    )
    parser.add_argument(
        "--any-content",
        action="store_true",
        help="do not compare message contents and BDAT chunks byte for byte",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds to wait for the client (and, with --check, for the replay)",
    )


def main(args: argparse.Namespace) -> int:
    """Serve the log until interrupted, or --check it; returns the exit code."""
    if not 0 <= args.port <= 65535:
        error_line(f"--port must be 0-65535, not {args.port}")
        return ExitCode.USAGE
    from smtpbee.testing import replay

    # With --check the replay outwaits the log's client: a reply that never
    # comes is the client's timeout, not answered by the server's own 421.
    server_timeout = 2 * args.timeout if args.check else args.timeout
    try:
        server = replay(
            args.file,
            compare_content=not args.any_content,
            ignore_arguments=args.ignore_arguments,
            host=args.host,
            timeout=server_timeout,
        )
    except (OSError, InvalidInputError) as exc:
        error_line(f"cannot replay {args.file}: {exc}")
        return ExitCode.DATA_ERROR
    if args.check:
        return _check(server, args.timeout)
    return _serve(server, args.port)


def _serve(server: ReplayServer, port: int) -> int:
    try:
        running = server.serve_in_thread(port)
    except OSError as exc:
        error_line(f"cannot listen on {server.host}:{port}: {exc.strerror or exc}")
        return ExitCode.TEMPORARY
    with running, tempfile.TemporaryDirectory(prefix="smtpbee-replay-") as directory:
        host = f"[{running.host}]" if ":" in running.host else running.host
        print(f"listening on {host}:{running.port}", flush=True)
        if server.ca_pem is not None:
            cafile = Path(directory) / "replay-ca.pem"
            cafile.write_bytes(server.ca_pem)
            print(
                f"TLS: a throwaway certificate; trust it with --cafile {cafile}"
                " (or run the client with --insecure)",
                flush=True,
            )
        print(f"{len(server.expected)} commands to replay; Ctrl-C to stop", flush=True)
        shown = 0
        try:
            while True:
                shown = _print_new(server, shown)
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        shown = _print_new(server, shown)
    print(f"stopped: {len(server.divergences)} divergence(s)", flush=True)
    return _DIVERGED if server.divergences else ExitCode.OK


def _print_new(server: ReplayServer, shown: int) -> int:
    divergences = server.divergences[shown:]
    for divergence in divergences:
        print(f"divergence: {escape_text(str(divergence))}", flush=True)
    return shown + len(divergences)


def _check(server: ReplayServer, timeout: float) -> int:
    with server.serve_in_thread() as running:
        try:
            problem = _play_client(server, running.host, running.port, timeout)
        except (OSError, ValueError, SMTPError) as exc:
            problem = f"the replay failed: {exc}"
        running.wait(1, timeout)
    sessions = running.sessions
    missing = server.missing(sessions[0]) if sessions else []  # none: the problem says why
    for divergence in server.divergences:
        print(f"divergence: {escape_text(str(divergence))}")
    for label in missing:
        print(f"never replayed: {escape_text(label)}")
    unreplayable = server.unreplayable
    for label in unreplayable:
        print(f"never replayed: {escape_text(label)} (the scripted server handles it itself)")
    if problem is not None:
        print(f"problem: {escape_text(problem)}")
    count = len(server.expected)
    print(f"{count} commands, {len(server.divergences)} divergence(s)")
    failed = server.divergences or missing or unreplayable or problem
    return _DIVERGED if failed else ExitCode.OK


def _play_client(server: ReplayServer, host: str, port: int, timeout: float) -> str | None:
    """Write the log's client bytes, reading as many replies as the log shows before each.

    Returns what went wrong, or None.
    """
    sock: Any = socket.create_connection((host, port), timeout=timeout)
    reader = ReplyReader()
    try:
        if server.tls == "implicit":
            sock = _wrap(server, sock, host)
        awaited = 0
        for record in server.log.records:
            if record["dir"] == "S":
                awaited += 1
                continue
            if record["dir"] != "C":
                continue
            problem = _read_replies(sock, reader, awaited)
            if problem is not None:
                return problem
            awaited = 0
            if record.get("tls") and not isinstance(sock, ssl.SSLSocket):
                sock = _wrap(server, sock, host)
            data = SessionLog.bytes_of(record)
            if data is None:  # redacted: its text stands in, and compares as redacted
                lines = str(record.get("data", "")).split("\n")
                data = b"".join(line.encode("utf-8") + b"\r\n" for line in lines)
            sock.sendall(data)
        return _read_replies(sock, reader, awaited)
    finally:
        sock.close()


def _wrap(server: ReplayServer, sock: socket.socket, host: str) -> ssl.SSLSocket:
    # The CLI gives replay() no context: a log with TLS gets a throwaway CA.
    return server.client_context().wrap_socket(sock, server_hostname=host)


def _read_replies(sock: Any, reader: ReplyReader, count: int) -> str | None:
    for index in range(count):
        while reader.next_reply() is None:
            data = sock.recv(65536)
            if not data:
                return f"the replay closed the connection with {count - index} replies to come"
            reader.feed(data)
    return None
