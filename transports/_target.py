# smtpbee/transports/_target
#
# Where a client connects, checked when it is built rather than when it first
# connects: the host, the port, the timeouts, and connection URLs.
#
# Connection URLs are accepted wherever a host is (as nodemailer and lettre take
# them): the scheme names the protocol and the TLS mode, the port defaults
# with it, and credentials in the URL are percent-decoded and used to log in.
#
#   smtps://user:pass@host[:465]   implicit TLS (RFC 8314)
#   smtp://user:pass@host[:587]    STARTTLS required (submission)
#   lmtp://host[:24]               LMTP (RFC 2033), STARTTLS required
#
# A query or a fragment is refused rather than ignored: an option that seems
# to apply but does not is worse than an error.
from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from smtpbee._errors import InvalidInputError
from smtpbee._requests import TLSMode

__all__ = ["ConnectionURL", "check_target", "parse_connection_url"]

_SCHEMES = {
    "smtps": (TLSMode.IMPLICIT, 465, False),
    "smtp": (TLSMode.STARTTLS, 587, False),
    "lmtp": (TLSMode.STARTTLS, 24, True),
}


@dataclass(frozen=True, slots=True)
class ConnectionURL:
    """What a connection URL says.

    Attributes:
        host: the server's name or address (IPv6 without brackets).
        port: the port, or the scheme's default.
        tls: the TLS mode the scheme means.
        lmtp: whether the scheme is lmtp.
        username: the percent-decoded user name, if any.
        password: the percent-decoded password, if any (never shown in reprs).
    """

    host: str
    port: int
    tls: TLSMode
    lmtp: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_connection_url(url: str) -> ConnectionURL:
    """Read ``smtps://``, ``smtp://`` or ``lmtp://`` URLs.

    Raises:
        InvalidInputError: an unknown scheme, no host, a bad port, a path,
            query or fragment.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInputError(f"not a connection URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise InvalidInputError(
            f"unknown URL scheme {parts.scheme!r}: use smtps://, smtp:// or lmtp://"
        )
    if not parts.hostname:
        raise InvalidInputError("the connection URL names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidInputError("a connection URL takes no path, query or fragment")
    tls, default_port, lmtp = _SCHEMES[scheme]
    username = urllib.parse.unquote(parts.username) if parts.username is not None else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    return ConnectionURL(
        host=parts.hostname,
        port=port if port is not None else default_port,
        tls=tls,
        lmtp=lmtp,
        username=username,
        password=password,
    )


def check_target(
    host: str | None, port: int, timeout: float | None, connect_timeout: float
) -> None:
    """Refuse at construction what could only fail later, inside a procedure."""
    if host is not None and not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise InvalidInputError(f"port must be an integer from 1 to 65535, not {port!r}")
    for name, value in (("timeout", timeout), ("connect_timeout", connect_timeout)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise InvalidInputError(f"{name} must be a positive number of seconds, not {value!r}")
