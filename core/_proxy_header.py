# smtpbee/_proxy_header
#
# The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2)
# that a proxy writes before anything else on a connection, to tell the
# server which client and which address the connection is really for.
# Postfix reads it with smtpd_upstream_proxy_protocol=haproxy. A client that
# writes one speaks for a proxy: conformance testers use it to check that a
# server behind a load balancer logs and judges the claimed client.
#
#   version 1 (section 2.1): one text line,
#       "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n" (TCP6 for IPv6);
#   version 2 (section 2.2): binary, the 12-byte signature
#       \r\n\r\n\0\r\nQUIT\n, 0x21 (version 2, command PROXY), 0x11 (TCP over
#       IPv4) or 0x21 (TCP over IPv6), the length of what follows as a 16-bit
#       big-endian number, then source and destination address and source
#       and destination port, all in network byte order.
#
# Only what a TCP connection needs is built: no UNKNOWN/LOCAL, no UDP, no
# UNIX sockets, no TLVs. The value is checked when it is built, like the
# commands: a header that cannot be valid never exists.
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Literal

from ._errors import InvalidInputError

__all__ = ["PROXY_V2_SIGNATURE", "ProxyHeader"]

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
"""The 12 bytes every version 2 header starts with (proxy-protocol.txt §2.2)."""

_V2_PROXY_COMMAND = 0x21  # high nibble: version 2; low nibble: PROXY
_V2_FAMILY = {"TCP4": 0x11, "TCP6": 0x21}  # AF_INET/AF_INET6 with STREAM
_PROTOCOL_BY_IP_VERSION: dict[int, Literal["TCP4", "TCP6"]] = {4: "TCP4", 6: "TCP6"}

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _endpoint(value: object, what: str) -> tuple[_Address, int]:
    if not isinstance(value, tuple) or len(value) != 2:
        raise InvalidInputError(f"the PROXY {what} must be a (host, port) tuple")
    host, port = value
    if not isinstance(host, str):
        raise InvalidInputError(f"the PROXY {what} address must be a str")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidInputError(
            f"the PROXY {what} address must be an IPv4 or IPv6 address, not {host!r}"
        ) from None
    # A scope ("%eth0") names an interface of this host: neither version can carry it.
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise InvalidInputError(f"the PROXY {what} address must not carry an IPv6 scope")
    # type(): True is an int, and no port.
    if type(port) is not int or not 0 <= port <= 65535:
        raise InvalidInputError(f"the PROXY {what} port must be an integer 0-65535, not {port!r}")
    return address, port


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A PROXY protocol header for a TCP connection (HAProxy proxy-protocol.txt).

    Args:
        version: 1 (the text line) or 2 (binary).
        source: the client the connection is for: (IP address, port).
        destination: the address the client connected to: (IP address, port).
        protocol: TCP4 or TCP6; None takes it from the addresses, which must
            both be of that family.

    Raises:
        InvalidInputError: an unknown version, an address that is not an
            IPv4 or IPv6 address, addresses of two families (or of another
            family than ``protocol``), or a port outside 0-65535.
    """

    version: Literal[1, 2]
    source: tuple[str, int]
    destination: tuple[str, int]
    protocol: Literal["TCP4", "TCP6"] | None = None

    def __post_init__(self) -> None:
        if type(self.version) is not int or self.version not in (1, 2):
            raise InvalidInputError(f"the PROXY version must be 1 or 2, not {self.version!r}")
        source, _ = _endpoint(self.source, "source")
        destination, _ = _endpoint(self.destination, "destination")
        if source.version != destination.version:
            raise InvalidInputError(
                "the PROXY source and destination must both be IPv4 or both IPv6"
            )
        family = _PROTOCOL_BY_IP_VERSION[source.version]
        if self.protocol is None:
            object.__setattr__(self, "protocol", family)
        elif self.protocol not in ("TCP4", "TCP6"):
            raise InvalidInputError(
                f"the PROXY protocol must be TCP4 or TCP6, not {self.protocol!r}"
            )
        elif self.protocol != family:
            raise InvalidInputError(
                f"PROXY {self.protocol} needs IPv{6 if family == 'TCP4' else 4} addresses"
            )

    def _endpoints(self) -> tuple[_Address, int, _Address, int]:
        source, source_port = _endpoint(self.source, "source")
        destination, destination_port = _endpoint(self.destination, "destination")
        return source, source_port, destination, destination_port

    def to_bytes(self) -> bytes:
        """The header as it goes on the wire, before anything else."""
        source, source_port, destination, destination_port = self._endpoints()
        protocol = self.protocol
        assert protocol is not None, "__post_init__ sets it"
        if self.version == 1:
            # §2.1: addresses in their usual text form (IPv6 compressed),
            # ports in decimal without leading zeros.
            line = f"PROXY {protocol} {source} {destination} {source_port} {destination_port}\r\n"
            return line.encode("ascii")
        addresses = (
            source.packed + destination.packed + struct.pack("!HH", source_port, destination_port)
        )
        return (
            PROXY_V2_SIGNATURE
            + bytes((_V2_PROXY_COMMAND, _V2_FAMILY[protocol]))
            + struct.pack("!H", len(addresses))
            + addresses
        )

    def transcript_line(self) -> str:
        """The header as a person should see it in a transcript (v2 is binary)."""
        if self.version == 1:
            return self.to_bytes().decode("ascii").rstrip("\r\n")
        source, source_port, destination, destination_port = self._endpoints()
        return f"<PROXY v2 {self.protocol} {source} {destination} {source_port} {destination_port}>"
