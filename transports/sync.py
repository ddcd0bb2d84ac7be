"""The blocking transport: ``from smtpbee.transports.sync import SMTPClient, SMTPPool``."""

from __future__ import annotations

from smtpbee._errors import TLSVerificationError
from smtpbee._requests import Timeouts, TLSMode
from smtpbee._transaction import SendResult
from smtpbee.transports._common import TLSInfo, default_ssl_context, transcript_to
from smtpbee.transports._socket import SMTPClient, send
from smtpbee.transports._thread_pool import SMTPPool

__all__ = [
    "SMTPClient",
    "SMTPPool",
    "SendResult",
    "TLSInfo",
    "TLSMode",
    "TLSVerificationError",
    "Timeouts",
    "default_ssl_context",
    "send",
    "transcript_to",
]
