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

from smtpbee._errors import TLSVerificationError
from smtpbee.transports._common import TLSInfo, default_ssl_context, transcript_to

if TYPE_CHECKING:
    from smtpbee.transports._asyncio import AsyncSMTPClient
    from smtpbee.transports._socket import SMTPClient
    from smtpbee.transports._trio import TrioSMTPClient

__all__ = [
    "AsyncSMTPClient",
    "SMTPClient",
    "TLSInfo",
    "TLSVerificationError",
    "TrioSMTPClient",
    "default_ssl_context",
    "transcript_to",
]

_LAZY = {
    "SMTPClient": "smtpbee.transports._socket",
    "AsyncSMTPClient": "smtpbee.transports._asyncio",
    "TrioSMTPClient": "smtpbee.transports._trio",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
