# smtpbee/_errors
#
# One hierarchy, rooted in SMTPError, that answers the three questions a caller
# has when something goes wrong:
#
#   * Did *I* do something wrong?            LocalProtocolError (and subclasses)
#   * Did the *server* break the protocol?   RemoteProtocolError (and subclasses)
#   * Did the server *refuse*, cleanly?      ReplyError: TransientReplyError (4xx)
#                                            or PermanentReplyError (5xx)
#   * Could the session not be made safe?    TLSRequiredError (no TLS to be had)
#
# The core itself only raises the protocol errors: a 4xx/5xx reply is an ordinary
# event there. ReplyError is what the session procedures (and so the transports)
# raise when a refusal ends what the caller asked for. The I/O errors at the end
# belong to transports, but live here so every transport raises the same types.
#
# Messages never contain secrets: AUTH payloads are not quoted anywhere.
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._replies import Reply

__all__ = [
    "AuthenticationError",
    "AuthenticationIncomplete",
    "AuthenticationRejected",
    "ConnectionLostError",
    "InsecureAuthenticationError",
    "InvalidChallengeError",
    "InvalidInputError",
    "LocalProtocolError",
    "MessageTooLargeError",
    "OutcomeUnknownError",
    "PermanentReplyError",
    "ProtocolError",
    "RemoteProtocolError",
    "ReplyError",
    "SASLprepError",
    "SMTPError",
    "SMTPTimeoutError",
    "StartTLSInjectionError",
    "TLSRequiredError",
    "TLSVerificationError",
    "TransientReplyError",
    "UnsupportedExtensionError",
    "reply_error",
]


class SMTPError(Exception):
    """The base class of every error smtpbee raises on purpose."""


class ProtocolError(SMTPError):
    """Someone broke the rules of SMTP. Abstract: raise a subclass."""

    def __init__(self, *args: Any) -> None:
        if type(self) is ProtocolError:
            raise TypeError(
                "ProtocolError is abstract; raise LocalProtocolError or RemoteProtocolError"
            )
        super().__init__(*args)


class LocalProtocolError(ProtocolError):
    """The caller asked for something SMTP (or this server) does not allow.

    Raised before a single byte is produced: the connection is unchanged and can
    still be used.
    """


class InvalidInputError(LocalProtocolError, ValueError):
    """An argument (address, parameter, domain, credential, setting) cannot be used as given.

    Also a ValueError, which is what Python code expects of a bad value.
    """


class SASLprepError(InvalidInputError):
    """A string cannot be prepared with SASLprep (RFC 4013).

    The message names the rule that failed, never the string itself.

    Attributes:
        table: the RFC 3454 table or rule that refused the string, e.g. "C.2.1" or "bidi".
    """

    def __init__(self, message: str, *, table: str) -> None:
        super().__init__(message)
        self.table = table


class UnsupportedExtensionError(LocalProtocolError):
    """The command or parameter needs an extension the server did not advertise."""


class MessageTooLargeError(LocalProtocolError):
    """The message is larger than the SIZE limit the server advertised."""


class InsecureAuthenticationError(LocalProtocolError):
    """AUTH was refused locally: the connection is not encrypted (or not verified).

    Attributes:
        over: "plaintext" or "unverified TLS": what the secret would have crossed.
    """

    def __init__(self, message: str, *, over: str) -> None:
        super().__init__(message)
        self.over = over


class RemoteProtocolError(ProtocolError):
    """The server sent something that breaks SMTP; the session cannot go on."""


class StartTLSInjectionError(RemoteProtocolError):
    """Bytes arrived after the 220 to STARTTLS and before the TLS handshake.

    They were not protected by TLS: a man in the middle may have injected them.
    """


class InvalidChallengeError(RemoteProtocolError):
    """The server sent a challenge that makes no sense for the mechanism at this step.

    The exchange is cancelled with ``*`` and the session ended.

    Attributes:
        server_error: the error text the server sent (SCRAM ``e=``), if any; never
            a secret.
    """

    def __init__(self, message: str, *, server_error: str | None = None) -> None:
        super().__init__(message)
        self.server_error = server_error


class AuthenticationIncomplete(RemoteProtocolError):
    """The server said 235 before the mechanism finished.

    For SCRAM this means the server did not prove that it knows the password
    (its signature was missing or wrong): treat the connection as an attack,
    not as an authenticated session. The session is ended.
    """


class TLSRequiredError(SMTPError):
    """TLS was required but the server does not offer it (or refused STARTTLS).

    Not a protocol violation: a server may well run without TLS. The session is
    ended without sending anything beyond EHLO (and QUIT). For a local test
    server without TLS, connect with ``tls="none"``.
    """


class ReplyError(SMTPError):
    """The server refused a command with a 4xx or 5xx reply.

    Attributes:
        reply: the reply, with its code, enhanced status and text.
        command: the command line it answers (secrets redacted), or None.
        phase: what was being done, e.g. "MAIL", "RCPT", "DATA", "AUTH".
        recipients: when every recipient was refused, each one's reply.
    """

    def __init__(self, reply: Reply, *, command: str | None = None, phase: str = "") -> None:
        self.reply = reply
        self.command = command
        self.phase = phase
        self.recipients: dict[str, Reply] = {}
        super().__init__(self._describe())

    @property
    def code(self) -> int:
        return self.reply.code

    def _describe(self) -> str:
        where = (
            f" to {self.command}"
            if self.command
            else (f" during {self.phase}" if self.phase else "")
        )
        return f"{self.reply.code}{where}: {self.reply.printable_text}"


class TransientReplyError(ReplyError):
    """A 4xx reply, or the server closing (421; 221 to anything but QUIT): try later."""


class PermanentReplyError(ReplyError):
    """A 5xx reply: repeating the same request will fail again."""


class AuthenticationError(SMTPError):
    """Authentication did not succeed: the base of AuthenticationRejected.

    (Refusing AUTH locally is InsecureAuthenticationError, a LocalProtocolError;
    a server that breaks SASL raises AuthenticationIncomplete or
    InvalidChallengeError, RemoteProtocolErrors.)
    """


class AuthenticationRejected(AuthenticationError, PermanentReplyError):
    """The server rejected the credentials or the mechanism (535, 534, 538, 503 ...)."""


class SMTPTimeoutError(SMTPError, TimeoutError):
    """The server did not answer within the deadline for the current phase."""


class ConnectionLostError(SMTPError, ConnectionError):
    """The connection closed or broke while a reply was expected."""


class TLSVerificationError(ConnectionLostError):
    """The server's certificate failed verification; the cause is the ssl error."""


class OutcomeUnknownError(SMTPError):
    """The connection failed after the message was handed over, before the final reply.

    The server may or may not have accepted the message; retrying may deliver it
    twice. The original timeout or connection error is the ``__cause__``.

    Attributes:
        recipients: each recipient's reply to RCPT, when known: who would have
            the message if the server did accept it.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.recipients: dict[str, Reply] = {}


def reply_error(reply: Reply, *, command: str | None = None, phase: str = "") -> ReplyError:
    """The right ReplyError subclass for a 4xx or 5xx reply."""
    if reply.code >= 500:
        return PermanentReplyError(reply, command=command, phase=phase)
    return TransientReplyError(reply, command=command, phase=phase)
