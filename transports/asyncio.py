"""The asyncio transport: ``from smtpbee.transports.asyncio import AsyncSMTPClient``."""

from __future__ import annotations

from smtpbee._requests import Timeouts, TLSMode
from smtpbee._transaction import SendResult
from smtpbee.transports._asyncio import AsyncSMTPClient, SMTPClient, SMTPPool, send
from smtpbee.transports._common import TLSInfo, TLSVerificationError, transcript_to

__all__ = [
    "AsyncSMTPClient",
    "SMTPClient",
    "SMTPPool",
    "SendResult",
    "TLSInfo",
    "TLSMode",
    "TLSVerificationError",
    "Timeouts",
    "send",
    "transcript_to",
]
