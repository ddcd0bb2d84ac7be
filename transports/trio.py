"""The trio transport: ``from smtpbee.transports.trio import TrioSMTPClient``."""

from __future__ import annotations

from smtpbee._requests import Timeouts, TLSMode
from smtpbee._transaction import SendResult
from smtpbee.transports._common import TLSInfo, TLSVerificationError, transcript_to
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
    "send",
    "transcript_to",
]
