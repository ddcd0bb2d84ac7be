# smtpbee/cli/_output
#
# What the command-line tool tells the world: its exit codes (sysexits, a
# contract other tools rely on), the one mapping from smtpbee's typed errors to
# those codes, and the JSON shapes of replies, TLS and extensions.
#
# Invariants: every expected failure maps to a code here, so no traceback
# reaches the user for one; the order of the checks in classify() matters,
# because the error classes overlap (AuthenticationRejected is a
# PermanentReplyError, TLSVerificationError a ConnectionLostError).
from __future__ import annotations

import enum
import json
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from smtpbee import (
    AuthenticationRejected,
    ConnectionLostError,
    Extensions,
    InsecureAuthenticationError,
    InvalidInputError,
    LocalProtocolError,
    MessageTooLargeError,
    OutcomeUnknownError,
    PermanentReplyError,
    RemoteProtocolError,
    Reply,
    SessionStopped,
    SMTPTimeoutError,
    StartTLSInjectionError,
    TLSRequiredError,
    TLSVerificationError,
    TransientReplyError,
    UnsupportedExtensionError,
    escape_text,
)

__all__ = [
    "ExitCode",
    "Failure",
    "InputError",
    "UsageError",
    "classify",
    "error_line",
    "extensions_list",
    "print_json",
    "reply_json",
    "stopped_json",
    "stopped_text",
    "tls_json",
]


class ExitCode(enum.IntEnum):
    """The exit codes of smtpbee (sysexits.h)."""

    OK = 0
    USAGE = 64
    DATA_ERROR = 65
    UNAVAILABLE = 69
    TEMPORARY = 75
    PROTOCOL = 76
    NO_PERMISSION = 77


class UsageError(Exception):
    """The command line is wrong in a way argparse cannot see (exit 64)."""


class InputError(Exception):
    """A file, address or header given by the user cannot be used (exit 65)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """An error, classified: the exit code, a stable kind for JSON, the reply code."""

    exit_code: ExitCode
    kind: str
    code: int | None
    text: str

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "code": self.code, "text": self.text}


def _kind_and_exit(exc: BaseException, *, during_auth: bool) -> tuple[str, ExitCode]:
    # Most specific first: several of these classes inherit from each other.
    if isinstance(exc, InputError | InvalidInputError):
        return "input", ExitCode.DATA_ERROR
    if isinstance(exc, UsageError):
        return "usage", ExitCode.USAGE
    if isinstance(exc, AuthenticationRejected):
        return "auth_rejected", ExitCode.NO_PERMISSION
    if isinstance(exc, InsecureAuthenticationError):
        return "auth_insecure", ExitCode.NO_PERMISSION
    if isinstance(exc, UnsupportedExtensionError) and during_auth:
        return "auth_unavailable", ExitCode.NO_PERMISSION
    if isinstance(exc, MessageTooLargeError):
        return "too_large", ExitCode.UNAVAILABLE
    if isinstance(exc, UnsupportedExtensionError):
        return "unsupported", ExitCode.UNAVAILABLE
    if isinstance(exc, LocalProtocolError):
        return "input", ExitCode.DATA_ERROR
    if isinstance(exc, PermanentReplyError):
        return "permanent", ExitCode.UNAVAILABLE
    if isinstance(exc, TransientReplyError):
        return "transient", ExitCode.TEMPORARY
    if isinstance(exc, StartTLSInjectionError):
        return "starttls_injection", ExitCode.PROTOCOL
    if isinstance(exc, TLSRequiredError):
        return "tls_required", ExitCode.PROTOCOL
    if isinstance(exc, RemoteProtocolError):
        return "protocol", ExitCode.PROTOCOL
    if isinstance(exc, OutcomeUnknownError):
        return "outcome_unknown", ExitCode.TEMPORARY
    if isinstance(exc, SMTPTimeoutError):
        return "timeout", ExitCode.TEMPORARY
    if isinstance(exc, TLSVerificationError):
        # A certificate that does not verify will not verify on a retry: treat it
        # like the other TLS failures, not as a passing network problem.
        return "certificate", ExitCode.PROTOCOL
    if isinstance(exc, ConnectionLostError | OSError):
        return "connection", ExitCode.TEMPORARY
    raise exc


def _text(exc: BaseException) -> str:
    if isinstance(exc, InsecureAuthenticationError):
        # The library's advice names its argument; here the option is what counts.
        why = (
            "the server's certificate was not verified (--insecure, or no --cafile for it)"
            if exc.over == "unverified TLS"
            else "the session is not encrypted"
        )
        return f"refusing AUTH: {why}; pass --allow-insecure-auth to send the password anyway"
    return str(exc) or type(exc).__name__


def classify(exc: BaseException, *, during_auth: bool = False) -> Failure:
    """The Failure for an expected error; anything else is re-raised (a bug)."""
    kind, exit_code = _kind_and_exit(exc, during_auth=during_auth)
    reply: Reply | None = getattr(exc, "reply", None)
    return Failure(exit_code, kind, reply.code if reply is not None else None, _text(exc))


def error_line(message: str, stream: TextIO | None = None) -> None:
    """Print one line, ``smtpbee: error: ...``, on stderr."""
    flat = " ".join(message.split())
    print(f"smtpbee: error: {escape_text(flat)}", file=stream or sys.stderr, flush=True)


def reply_json(reply: Reply | None) -> dict[str, Any] | None:
    """A reply as ``{code, enhanced, text}``."""
    if reply is None:
        return None
    enhanced = str(reply.enhanced) if reply.enhanced is not None else None
    return {"code": reply.code, "enhanced": enhanced, "text": reply.text}


def stopped_json(stopped: SessionStopped | None) -> dict[str, Any] | None:
    """Where a session stopped as asked: ``{point, action, reply}``, or None."""
    if stopped is None:
        return None
    return {
        "point": stopped.point.value,
        "action": stopped.action,
        "reply": reply_json(stopped.reply),
    }


def stopped_text(stopped: SessionStopped) -> str:
    """``after RCPT (quit), last reply 250 2.1.5 Ok``."""
    how = "quit" if stopped.action == "quit" else "connection dropped"
    last = f", last reply {stopped.reply}" if stopped.reply is not None else ""
    return f"after {stopped.point.value} ({how}){last}"


def extensions_list(extensions: Extensions | None) -> list[str]:
    """Each advertised keyword with its parameters, e.g. ``"SIZE 10240000"``."""
    if extensions is None:
        return []
    return [escape_text(" ".join((kw, *params))) for kw, params in extensions.keywords.items()]


def tls_json(info: Any) -> dict[str, Any] | None:
    """The TLS layer as ``{version, cipher, verified, subject}``, or None."""
    if info is None:
        return None
    return {
        "version": info.version,
        "cipher": info.cipher,
        "verified": info.verified,
        "subject": info.peer_subject,
    }


def print_json(document: dict[str, Any], stream: TextIO | None = None) -> None:
    """Print one JSON object on one line (stdout by default).

    ASCII only: a server's text may hold C1 controls or bidi overrides, which
    a terminal would act on; as \\u escapes they are shown, losslessly.
    """
    print(json.dumps(document, ensure_ascii=True), file=stream or sys.stdout, flush=True)
