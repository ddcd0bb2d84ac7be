"""The blocking transport: ``from smtpbee.transports.sync import SMTPClient``."""

from __future__ import annotations

from smtpbee._requests import Timeouts, TLSMode
from smtpbee._transaction import SendResult
from smtpbee.transports._common import TLSInfo, TLSVerificationError, transcript_to
from smtpbee.transports._sync import SMTPClient, send

__all__ = [
    "SMTPClient",
    "SendResult",
    "TLSInfo",
    "TLSMode",
    "TLSVerificationError",
    "Timeouts",
    "send",
    "transcript_to",
]
