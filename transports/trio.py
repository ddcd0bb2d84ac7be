"""The trio transport: ``from smtpbee.transports.trio import TrioSMTPClient``."""

from __future__ import annotations

from smtpbee._errors import TLSVerificationError
from smtpbee._requests import Timeouts, TLSMode
from smtpbee._transaction import SendResult
from smtpbee.transports._common import TLSInfo, default_ssl_context, transcript_to
from smtpbee.transports._trio import SMTPClient, SMTPPool, TrioSMTPClient, send

__all__ = [
    "SMTPClient",
    "SMTPPool",
    "SendResult",
    "TLSInfo",
    "TLSMode",
    "TLSVerificationError",
    "Timeouts",
    "TrioSMTPClient",
    "default_ssl_context",
    "send",
    "transcript_to",
]
