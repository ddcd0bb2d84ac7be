"""The asyncio transport: ``from smtpbee.transports.asyncio import AsyncSMTPClient``."""

from __future__ import annotations

from smtpbee._errors import TLSVerificationError
from smtpbee._requests import Timeouts, TLSMode
from smtpbee._transaction import SendResult
from smtpbee.transports._asyncio import AsyncSMTPClient, SMTPClient, SMTPPool, send
from smtpbee.transports._common import TLSInfo, default_ssl_context, transcript_to

__all__ = [
    "AsyncSMTPClient",
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
