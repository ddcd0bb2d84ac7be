# smtpbee/transports/_common
#
# Everything the three transports share that is not I/O.
#
# Theory of operation
# -------------------
# A transport owns a byte stream and nothing else. It runs a session procedure
# (smtpbee._procedures, smtpbee._transaction) by answering its requests
# (smtpbee._requests), and everything around that loop that does not touch a
# socket lives here, once:
#
#   * as_smtp_error(): the one mapping of I/O failures to the errors the
#     procedures understand (SMTPTimeoutError, ConnectionLostError). A failed
#     certificate check becomes TLSVerificationError, a ConnectionLostError with
#     the ssl error as its cause, so it is caught as a broken connection but
#     reads as what it is.
#   * Deadline: Read.new_wait starts a fresh deadline, otherwise the running one
#     is kept, so a server dripping one byte at a time still times out.
#
# The constructor every client shares is in _base; the envelope and bytes of
# a message and the sources of bodies in _message; the public methods and the
# request loop in _async/client.py (and, generated from it, _sync/client.py);
# the pools in _async/pool.py (generated: _sync/pool.py) and _pool.
#
# Invariant: nothing here decides anything about the protocol; the procedures
# do. This module only translates between the user's Python values and them.
from __future__ import annotations

import ipaddress
import logging
import ssl
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from smtpbee._errors import (
    ConnectionLostError,
    SMTPError,
    SMTPTimeoutError,
    TLSVerificationError,
)
from smtpbee._exchange import Transcript
from smtpbee._replies import escape_text
from smtpbee._requests import (
    Poll,
    PullBody,
    Read,
    Request,
    UpgradeTLS,
    Write,
)

__all__ = [
    "Deadline",
    "TLSInfo",
    "TLSVerificationError",
    "Transcript",
    "as_smtp_error",
    "default_ssl_context",
    "describe",
    "is_verifying",
    "local_hostname_for",
    "logged_transcript",
    "tls_info",
    "transcript_to",
]

# ----------------------------------------------------------------------------
# TLS


def default_ssl_context(cafile: str | None = None) -> ssl.SSLContext:
    """Verified TLS >= 1.2 with host names checked: the system's roots, or only ``cafile``'s.

    Raises:
        OSError, ssl.SSLError: ``cafile`` cannot be read or holds no certificate.
    """
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def is_verifying(context: ssl.SSLContext) -> bool:
    """Whether a handshake with this context proves the server's identity."""
    return context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


class _TLSObject(Protocol):
    def version(self) -> str | None: ...
    def cipher(self) -> tuple[str, str, int] | None: ...
    def getpeercert(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """What the TLS layer of a connection is.

    Attributes:
        version: e.g. "TLSv1.3".
        cipher: the cipher suite's name.
        verified: whether the certificate was checked against the host name.
        peer_subject: the certificate's subject, e.g. "commonName=localhost"
            (None when the peer certificate is not available, as when it was
            not verified).
    """

    version: str | None
    cipher: str | None
    verified: bool
    peer_subject: str | None

    def __str__(self) -> str:
        checked = "verified" if self.verified else "NOT verified"
        return f"{self.version} {self.cipher}, certificate {checked}"


def tls_info(tls: _TLSObject, verified: bool) -> TLSInfo:
    """TLSInfo from an ssl.SSLObject, ssl.SSLSocket or trio.SSLStream."""
    cipher = tls.cipher()
    cert = tls.getpeercert() or {}
    subject = ",".join(f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn) or None
    return TLSInfo(tls.version(), cipher[0] if cipher else None, verified, subject)


# ----------------------------------------------------------------------------
# Errors, deadlines and the procedure loop


def _certificate_refusal(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    # trio wraps ssl errors (BrokenResourceError from SSLError): look down the chain.
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        cause = cause.__cause__
    return None


def as_smtp_error(exc: BaseException, what: str) -> SMTPError | None:
    """The error to throw into a procedure for an I/O failure, or None if it is not one."""
    if isinstance(exc, SMTPError):
        return exc
    if isinstance(exc, TimeoutError):
        error: SMTPError = SMTPTimeoutError(f"timed out {what}")
    elif (refusal := _certificate_refusal(exc)) is not None:
        error = TLSVerificationError(f"the server's certificate was refused: {refusal}")
        exc = refusal
    elif isinstance(exc, OSError | EOFError):
        error = ConnectionLostError(f"connection lost {what}: {exc or type(exc).__name__}")
    else:
        return None
    error.__cause__ = exc
    return error


def describe(request: Request) -> str:
    """What a request waits for, for error messages."""
    if isinstance(request, Read):
        return f"waiting for {request.phase.description} ({request.timeout:g} s)"
    if isinstance(request, Write):
        return f"sending {request.size} bytes ({request.timeout:g} s)"
    if isinstance(request, UpgradeTLS):
        return f"during the TLS handshake ({request.timeout:g} s)"
    if isinstance(request, Poll):
        return "looking for replies nothing asked for"
    assert isinstance(request, PullBody)
    return "reading the body"


class Deadline:
    """The deadline of a Read: a new one per reply, kept while a reply is incomplete."""

    __slots__ = ("_at",)

    def __init__(self) -> None:
        self._at = 0.0

    def remaining(self, request: Read, now: float) -> float:
        if request.new_wait:
            self._at = now + request.timeout
        return self._at - now

    def left(self, now: float) -> float:
        """What is left of the running deadline."""
        return self._at - now


# ----------------------------------------------------------------------------
# Local host name and transcripts


def local_hostname_for(sockname: Any) -> str:
    """The address literal of the local address: "[192.0.2.1]" or "[IPv6:2001:db8::1]"."""
    try:
        address = ipaddress.ip_address(str(sockname[0]).partition("%")[0])
    except (ValueError, TypeError, IndexError):
        return "localhost"
    if address.version == 6:
        mapped = address.ipv4_mapped
        return f"[{mapped}]" if mapped else f"[IPv6:{address}]"
    return f"[{address}]"


TRANSCRIPT_LOG = logging.getLogger("smtpbee.transcript")
"""Where the session's lines go at DEBUG (secrets redacted, server text escaped)."""


def logged_transcript(transcript: Transcript | None) -> Transcript | None:
    """The transcript to give a session: the user's, and the log's when DEBUG is on.

    Asked once per session: building transcript lines costs time on every
    command, so a session whose log is off does not pay for it.
    """
    if not TRANSCRIPT_LOG.isEnabledFor(logging.DEBUG):
        return transcript

    def log(direction: str, line: str) -> None:
        TRANSCRIPT_LOG.debug("%s: %s", direction, escape_text(line))
        if transcript is not None:
            transcript(direction, line)

    return log


def transcript_to(stream: TextIO) -> Transcript:
    """A transcript callable writing "C: ..." and "S: ..." lines to a text stream.

    Lines are escaped again here (the core already escapes server text), so
    a transcript callable of one's own can never be fed a line that moves the
    terminal's cursor.
    """

    def write(direction: str, line: str) -> None:
        stream.write(f"{direction}: {escape_text(line)}\n")

    return write
