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

import logging

from ._auth import (
    MECHANISMS,
    PASSWORD_MECHANISM_PREFERENCE,
    CramMD5,
    Login,
    OAuthBearer,
    Plain,
    SASLMechanism,
    XOAuth2,
    choose_mechanism,
)
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
from ._procedures import ClientSession
from ._receivebuffer import ReplyLimits
from ._render import render_reply_matrix, render_state_machine
from ._replies import EnhancedStatus, Reply, ReplyClass, escape_text
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
from ._scram import ScramMechanism, ScramSHA1, ScramSHA256
from ._state import ReplyKind, State, Trigger, Verb
from ._transaction import BodyInfo, MailJob, SendResult, wants_smtputf8
from ._validation import Mailbox, parse_mailbox, xtext_decode, xtext_encode

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
    "StartTLS",
    "StartTLSInjectionError",
    "State",
    "TLSMode",
    "TLSRequiredError",
    "TLSVerificationError",
    "Timeouts",
    "TransientReplyError",
    "Trigger",
    "UnsupportedExtensionError",
    "UpgradeTLS",
    "Verb",
    "Vrfy",
    "Write",
    "XOAuth2",
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
