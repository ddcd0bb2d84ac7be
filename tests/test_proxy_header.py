"""The PROXY protocol header (HAProxy proxy-protocol.txt §2.1 and §2.2), byte for byte."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smtpbee import InvalidInputError, ProxyHeader
from smtpbee._proxy_header import PROXY_V2_SIGNATURE

# Written out by hand from the specification, not computed by the code under test.
SIGNATURE = bytes.fromhex("0D0A0D0A000D0A515549540A")
V2_TCP4 = (
    SIGNATURE
    + bytes.fromhex("21")  # version 2, command PROXY
    + bytes.fromhex("11")  # AF_INET, STREAM
    + bytes.fromhex("000C")  # 12 octets follow
    + bytes.fromhex("C0000201")  # 192.0.2.1
    + bytes.fromhex("C6336402")  # 198.51.100.2
    + bytes.fromhex("DC04")  # 56324
    + bytes.fromhex("0019")  # 25
)
V2_TCP6 = (
    SIGNATURE
    + bytes.fromhex("21")
    + bytes.fromhex("21")  # AF_INET6, STREAM
    + bytes.fromhex("0024")  # 36 octets follow
    + bytes.fromhex("20010DB8000000000000000000000001")  # 2001:db8::1
    + bytes.fromhex("20010DB8000000000000000000000002")  # 2001:db8::2
    + bytes.fromhex("9C40")  # 40000
    + bytes.fromhex("1F5D")  # 8029
)


def test_the_signature_is_the_specified_one() -> None:
    assert PROXY_V2_SIGNATURE == SIGNATURE == b"\r\n\r\n\x00\r\nQUIT\n"


@pytest.mark.parametrize(
    ("header", "wire"),
    [
        (
            ProxyHeader(1, ("192.0.2.1", 56324), ("198.51.100.2", 25)),
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n",
        ),
        (
            ProxyHeader(1, ("2001:db8::1", 40000), ("2001:db8::2", 8029), "TCP6"),
            b"PROXY TCP6 2001:db8::1 2001:db8::2 40000 8029\r\n",
        ),
        # Addresses in their usual text form: IPv6 compressed and lower case.
        (
            ProxyHeader(1, ("2001:0DB8:0000:0000::0001", 0), ("2001:DB8:0:0:1:0:0:FF", 65535)),
            b"PROXY TCP6 2001:db8::1 2001:db8::1:0:0:ff 0 65535\r\n",
        ),
        (ProxyHeader(2, ("192.0.2.1", 56324), ("198.51.100.2", 25), "TCP4"), V2_TCP4),
        (ProxyHeader(2, ("2001:db8::1", 40000), ("2001:db8::2", 8029)), V2_TCP6),
    ],
)
def test_the_bytes_on_the_wire(header: ProxyHeader, wire: bytes) -> None:
    assert header.to_bytes() == wire


def test_the_protocol_is_taken_from_the_addresses() -> None:
    assert ProxyHeader(1, ("192.0.2.1", 1), ("192.0.2.2", 2)).protocol == "TCP4"
    assert ProxyHeader(2, ("::1", 1), ("::2", 2)).protocol == "TCP6"


def test_the_longest_v1_line_fits_the_specified_107_octets() -> None:
    full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"
    line = ProxyHeader(1, (full, 65535), (full, 65535)).to_bytes()
    # §2.1 gives this worst case: 104 octets, within the 107 a receiver must accept.
    assert len(line) == 104


def test_transcript_lines() -> None:
    v1 = ProxyHeader(1, ("192.0.2.1", 56324), ("198.51.100.2", 25))
    assert v1.transcript_line() == "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25"
    v2 = ProxyHeader(2, ("2001:db8::1", 40000), ("2001:db8::2", 8029))
    assert v2.transcript_line() == "<PROXY v2 TCP6 2001:db8::1 2001:db8::2 40000 8029>"


def test_headers_are_values() -> None:
    one = ProxyHeader(2, ("192.0.2.1", 1), ("192.0.2.2", 2))
    assert one == ProxyHeader(2, ("192.0.2.1", 1), ("192.0.2.2", 2), "TCP4")
    assert hash(one) == hash(ProxyHeader(2, ("192.0.2.1", 1), ("192.0.2.2", 2)))
    with pytest.raises(AttributeError):
        one.version = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((3, ("192.0.2.1", 1), ("192.0.2.2", 2)), "version must be 1 or 2"),
        ((True, ("192.0.2.1", 1), ("192.0.2.2", 2)), "version must be 1 or 2"),
        (("1", ("192.0.2.1", 1), ("192.0.2.2", 2)), "version must be 1 or 2"),
        ((1, ["192.0.2.1", 1], ("192.0.2.2", 2)), r"source must be a \(host, port\) tuple"),
        ((1, ("192.0.2.1", 1, 2), ("192.0.2.2", 2)), "source must be a"),
        ((1, ("192.0.2.1", 1), "192.0.2.2:2"), "destination must be a"),
        ((1, (ipaddress.ip_address("192.0.2.1"), 1), ("192.0.2.2", 2)), "address must be a str"),
        ((1, ("localhost", 1), ("192.0.2.2", 2)), "source address must be an IPv4 or IPv6"),
        ((1, ("192.0.2.1/32", 1), ("192.0.2.2", 2)), "IPv4 or IPv6"),
        ((1, ("192.0.2.1", 1), ("[::1]", 2)), "destination address must be an IPv4 or IPv6"),
        ((1, ("192.0.2.1\r\n", 1), ("192.0.2.2", 2)), "IPv4 or IPv6"),
        ((1, ("fe80::1%eth0", 1), ("fe80::2", 2)), "must not carry an IPv6 scope"),
        ((1, ("192.0.2.1", -1), ("192.0.2.2", 2)), "source port must be an integer 0-65535"),
        ((2, ("192.0.2.1", 1), ("192.0.2.2", 65536)), "destination port must be an integer"),
        ((2, ("192.0.2.1", True), ("192.0.2.2", 2)), "port must be an integer"),
        ((2, ("192.0.2.1", "25"), ("192.0.2.2", 2)), "port must be an integer"),
        ((2, ("192.0.2.1", 25.0), ("192.0.2.2", 2)), "port must be an integer"),
        ((1, ("192.0.2.1", 1), ("2001:db8::2", 2)), "both be IPv4 or both IPv6"),
        ((1, ("192.0.2.1", 1), ("192.0.2.2", 2), "TCP6"), "PROXY TCP6 needs IPv6 addresses"),
        ((2, ("::1", 1), ("::2", 2), "TCP4"), "PROXY TCP4 needs IPv4 addresses"),
        ((1, ("192.0.2.1", 1), ("192.0.2.2", 2), "UDP4"), "protocol must be TCP4 or TCP6"),
        ((1, ("192.0.2.1", 1), ("192.0.2.2", 2), "tcp4"), "protocol must be TCP4 or TCP6"),
        ((1, ("192.0.2.1", 1), ("192.0.2.2", 2), ["TCP4"]), "protocol must be TCP4 or TCP6"),
    ],
)
def test_invalid_headers_cannot_be_built(arguments: tuple[Any, ...], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ProxyHeader(*arguments)


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@given(
    st.sampled_from([(ipv4, 4), (ipv6, 6)]).flatmap(lambda a: st.tuples(a[0], a[0])), ports, ports
)
def test_v2_carries_exactly_the_addresses_and_ports(
    addresses: tuple[str, str], source_port: int, destination_port: int
) -> None:
    source, destination = addresses
    wire = ProxyHeader(2, (source, source_port), (destination, destination_port)).to_bytes()
    assert wire[:12] == SIGNATURE and wire[12] == 0x21
    size = 4 if ipaddress.ip_address(source).version == 4 else 16
    assert wire[13] == (0x11 if size == 4 else 0x21)
    (length,) = struct.unpack("!H", wire[14:16])
    assert length == len(wire) - 16 == 2 * size + 4
    body = wire[16:]
    assert ipaddress.ip_address(body[:size]) == ipaddress.ip_address(source)
    assert ipaddress.ip_address(body[size : 2 * size]) == ipaddress.ip_address(destination)
    assert struct.unpack("!HH", body[2 * size :]) == (source_port, destination_port)


@given(
    st.sampled_from([(ipv4, "TCP4"), (ipv6, "TCP6")]).flatmap(
        lambda a: st.tuples(a[0], a[0], st.just(a[1]))
    ),
    ports,
    ports,
)
def test_v1_is_one_line_of_six_words(
    case: tuple[str, str, str], source_port: int, destination_port: int
) -> None:
    source, destination, protocol = case
    wire = ProxyHeader(1, (source, source_port), (destination, destination_port)).to_bytes()
    assert wire.endswith(b"\r\n") and wire.count(b"\r\n") == 1 and len(wire) <= 107
    words = wire[:-2].decode("ascii").split(" ")
    assert words[:2] == ["PROXY", protocol]
    assert ipaddress.ip_address(words[2]) == ipaddress.ip_address(source)
    assert ipaddress.ip_address(words[3]) == ipaddress.ip_address(destination)
    assert words[4:] == [str(source_port), str(destination_port)]
