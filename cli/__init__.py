# smtpbee/cli
#
# The command-line tool: `smtpbee` and `python -m smtpbee`.
#
# This file only wires argparse: one subcommand per module (_send, _probe,
# _tour, _states, _replay, _shell, _audit), each owning its options
# (add_arguments) and its logic (main(args) -> exit code). The names, options,
# JSON keys and exit codes are a contract (docs: README.md, design notes
# section 5): other tools drive them.
#
# Invariant: a usage mistake is one line on stderr and exit 64, never a
# traceback (ArgumentParser.error is overridden for the parser and every
# subparser, since subparsers are built from the parser's own class).
"""smtpbee's command-line tool: send, probe, tour, states, replay, shell, audit."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from smtpbee import __version__

from . import _audit, _probe, _replay, _send, _shell, _states, _tour
from ._output import ExitCode, error_line

__all__ = ["build_parser", "main"]

_EXIT_CODES = """\
exit codes: 0 everything accepted; 64 usage; 65 bad input data; 69 permanent failure
(any 5xx, one refused recipient included); 75 temporary failure (4xx, connection
refused, timeout, outcome unknown); 76 protocol error (malformed or hostile replies,
STARTTLS injection, TLS required but not offered, certificate refused);
77 authentication rejected, or refused over plaintext."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit 64."""

    def error(self, message: str) -> NoReturn:
        # error_line() gives the "smtpbee: error: " prefix: the parser's prog (which
        # is "smtpbee" or "smtpbee send") only names the command whose --help to see.
        error_line(f"{message} (see {self.prog} --help)")
        raise SystemExit(ExitCode.USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the whole tool."""
    parser = _Parser(
        prog="smtpbee",
        description="An SMTP client: send a message, probe a server, tour a session.",
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"smtpbee {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module, summary in (
        ("send", _send, "send one message"),
        ("probe", _probe, "show a server's greeting, extensions and TLS"),
        ("tour", _tour, "an annotated SMTP session with a built-in server"),
        ("states", _states, "print the client's state machine"),
        ("replay", _replay, "serve a captured session log as a scripted server"),
        ("shell", _shell, "SMTP by hand, with a guide"),
        ("audit", _audit, "check a server's conformance and hygiene (read-only)"),
    ):
        sub = commands.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=_EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(run=module.main)
    return parser


def _log_to_stderr(verbosity: int) -> None:
    """-v: smtpbee's connection events (INFO) on stderr; -vv: its transcript too (DEBUG)."""
    if not verbosity:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("smtpbee: %(name)s: %(message)s"))
    logger = logging.getLogger("smtpbee")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tool with ``argv`` (default: the process's arguments); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else ExitCode.USAGE
    _log_to_stderr(getattr(args, "verbose", 0))
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        error_line("interrupted")
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (| head): nothing left to tell anyone.
        sys.stderr.close()
        return ExitCode.OK
