"""smtpbee: an SMTP client whose protocol core does no I/O.

Bytes in, events out; commands in, bytes out::

    conn = smtpbee.Connection()
    conn.receive_data(b"220 mx.example ESMTP\\r\\n")
    conn.next_event()          # GreetingReceived(reply=Reply(code=220, ...))
    conn.send(smtpbee.Ehlo("client.example"))   # b"EHLO client.example\\r\\n"

The session procedures (ClientSession) turn that into whole sessions for any
I/O framework; smtpbee.transports drives them over blocking sockets, asyncio
and trio.
"""

# Import time: what a Connection needs is imported here; the rest (AUTH and
# SCRAM with hashlib, hmac, secrets and SASLprep's unicodedata/stringprep; the
# session procedures, the mail transaction and the I/O requests) is imported
# on first use, by name, through __getattr__ below (PEP 562). `from smtpbee
# import X`, `smtpbee.X` and `__all__` work the same for both kinds; the
# `if TYPE_CHECKING:` imports give type checkers the lazy names. A new public
# name goes in `__all__` and, if lazy, in `_LAZY` and the TYPE_CHECKING block
# (tests/test_packaging.py checks the three agree).

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._commands import (
    Auth,
    AuthCancel,
    AuthResponse,
    Bdat,
    Command,
    Data,
    Ehlo,
    EndOfData,
    Expn,
    Helo,
    Help,
    Lhlo,
    Mail,
    MessageData,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTLS,
    Vrfy,
    Xclient,
)
from ._connection import Connection
from ._data import DataEncoder, LineEndingNormalizer, decode_data
from ._errors import (
    AuthenticationError,
    AuthenticationIncomplete,
    AuthenticationRejected,
    ConnectionLostError,
    InsecureAuthenticationError,
    InvalidChallengeError,
    InvalidInputError,
    LocalProtocolError,
    MessageTooLargeError,
    OutcomeUnknownError,
    PermanentReplyError,
    ProtocolError,
    RemoteProtocolError,
    ReplyError,
    SASLprepError,
    SMTPError,
    SMTPTimeoutError,
    StartTLSInjectionError,
    TLSRequiredError,
    TLSVerificationError,
    TransientReplyError,
    UnsupportedExtensionError,
)
from ._events import (
    NEED_DATA,
    PAUSED,
    AuthChallengeReceived,
    ConnectionClosed,
    ContentRequested,
    Event,
    GreetingReceived,
    Phase,
    ReplyReceived,
    Sentinel,
)
from ._extensions import Extensions
from ._proxy_header import ProxyHeader
from ._receivebuffer import ReplyLimits
from ._render import render_reply_matrix, render_state_machine
from ._replies import EnhancedStatus, Reply, ReplyClass, escape_text
from ._state import ReplyKind, State, Trigger, Verb
from ._validation import Mailbox, parse_mailbox, xtext_decode, xtext_encode

if TYPE_CHECKING:
    from ._auth import (
        PASSWORD_MECHANISM_PREFERENCE,
        CramMD5,
        Login,
        OAuthBearer,
        Plain,
        XOAuth2,
    )
    from ._control import ControlPoint, SessionStopped, Stop
    from ._mechanisms import MECHANISMS, choose_mechanism
    from ._procedures import ClientSession
    from ._requests import (
        Poll,
        Procedure,
        PullBody,
        Read,
        Request,
        Timeouts,
        TLSMode,
        UpgradeTLS,
        Write,
        resolve_tls_mode,
    )
    from ._sasl import SASLMechanism
    from ._scram import ScramMechanism, ScramSHA1, ScramSHA256
    from ._session_log import SessionLog
    from ._transaction import BodyInfo, MailJob, SendResult, wants_smtputf8
    from ._unsafe import UnsafeSession

_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ("PASSWORD_MECHANISM_PREFERENCE", "CramMD5", "Login", "OAuthBearer", "Plain", "XOAuth2"),
        "._auth",
    ),
    **dict.fromkeys(("MECHANISMS", "choose_mechanism"), "._mechanisms"),
    "ClientSession": "._procedures",
    **dict.fromkeys(("ControlPoint", "SessionStopped", "Stop"), "._control"),
    "UnsafeSession": "._unsafe",
    **dict.fromkeys(
        (
            "Poll",
            "Procedure",
            "PullBody",
            "Read",
            "Request",
            "Timeouts",
            "TLSMode",
            "UpgradeTLS",
            "Write",
            "resolve_tls_mode",
        ),
        "._requests",
    ),
    "SASLMechanism": "._sasl",
    "SessionLog": "._session_log",
    **dict.fromkeys(("ScramMechanism", "ScramSHA1", "ScramSHA256"), "._scram"),
    **dict.fromkeys(("BodyInfo", "MailJob", "SendResult", "wants_smtputf8"), "._transaction"),
}
"""Public names imported on first use: name -> the module that defines it."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # once imported, a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

# The library convention: smtpbee logs (under "smtpbee", see smtpbee.transports)
# only to handlers the application configures.
logging.getLogger("smtpbee").addHandler(logging.NullHandler())

__all__ = [
    "MECHANISMS",
    "NEED_DATA",
    "PASSWORD_MECHANISM_PREFERENCE",
    "PAUSED",
    "Auth",
    "AuthCancel",
    "AuthChallengeReceived",
    "AuthResponse",
    "AuthenticationError",
    "AuthenticationIncomplete",
    "AuthenticationRejected",
    "Bdat",
    "BodyInfo",
    "ClientSession",
    "Command",
    "Connection",
    "ConnectionClosed",
    "ConnectionLostError",
    "ContentRequested",
    "ControlPoint",
    "CramMD5",
    "Data",
    "DataEncoder",
    "Ehlo",
    "EndOfData",
    "EnhancedStatus",
    "Event",
    "Expn",
    "Extensions",
    "GreetingReceived",
    "Helo",
    "Help",
    "InsecureAuthenticationError",
    "InvalidChallengeError",
    "InvalidInputError",
    "Lhlo",
    "LineEndingNormalizer",
    "LocalProtocolError",
    "Login",
    "Mail",
    "MailJob",
    "Mailbox",
    "MessageData",
    "MessageTooLargeError",
    "Noop",
    "OAuthBearer",
    "OutcomeUnknownError",
    "PermanentReplyError",
    "Phase",
    "Plain",
    "Poll",
    "Procedure",
    "ProtocolError",
    "ProxyHeader",
    "PullBody",
    "Quit",
    "Rcpt",
    "Read",
    "RemoteProtocolError",
    "Reply",
    "ReplyClass",
    "ReplyError",
    "ReplyKind",
    "ReplyLimits",
    "ReplyReceived",
    "Request",
    "Rset",
    "SASLMechanism",
    "SASLprepError",
    "SMTPError",
    "SMTPTimeoutError",
    "ScramMechanism",
    "ScramSHA1",
    "ScramSHA256",
    "SendResult",
    "Sentinel",
    "SessionLog",
    "SessionStopped",
    "StartTLS",
    "StartTLSInjectionError",
    "State",
    "Stop",
    "TLSMode",
    "TLSRequiredError",
    "TLSVerificationError",
    "Timeouts",
    "TransientReplyError",
    "Trigger",
    "UnsafeSession",
    "UnsupportedExtensionError",
    "UpgradeTLS",
    "Verb",
    "Vrfy",
    "Write",
    "XOAuth2",
    "Xclient",
    "choose_mechanism",
    "decode_data",
    "escape_text",
    "parse_mailbox",
    "render_reply_matrix",
    "render_state_machine",
    "resolve_tls_mode",
    "wants_smtputf8",
    "xtext_decode",
    "xtext_encode",
]
