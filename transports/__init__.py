# smtpbee/transports
#
# The transports: smtpbee.transports.sync (blocking sockets),
# smtpbee.transports.asyncio and smtpbee.transports.trio. Each is imported only
# when used (PEP 562 __getattr__), so importing this package never imports
# asyncio's streams or trio; trio stays an optional dependency.
"""SMTP transports for the smtpbee core: blocking sockets, asyncio and trio."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from smtpbee.transports._common import TLSInfo, TLSVerificationError, transcript_to

if TYPE_CHECKING:
    from smtpbee.transports._asyncio import AsyncSMTPClient
    from smtpbee.transports._sync import SMTPClient
    from smtpbee.transports._trio import TrioSMTPClient

__all__ = [
    "AsyncSMTPClient",
    "SMTPClient",
    "TLSInfo",
    "TLSVerificationError",
    "TrioSMTPClient",
    "transcript_to",
]

_LAZY = {
    "SMTPClient": "smtpbee.transports._sync",
    "AsyncSMTPClient": "smtpbee.transports._asyncio",
    "TrioSMTPClient": "smtpbee.transports._trio",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
