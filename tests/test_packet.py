"""Tests of pping.packet.parse_packet: hand-built packets, random bytes, real captures."""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pping.events import EventReason, FlowEventType
from pping.packet import (
    LINKTYPES,
    MAX_IPV6_EXT_HEADERS,
    MAX_MPLS_LABELS,
    MAX_TCP_OPTION_STEPS,
    MAX_VLAN_TAGS,
    SKIP_BAD_ICMP,
    SKIP_BAD_IPV4,
    SKIP_BAD_IPV6,
    SKIP_BAD_LINK,
    SKIP_BAD_TCP,
    SKIP_FRAGMENT,
    SKIP_IPV6_EXT,
    SKIP_LINKTYPE,
    SKIP_MPLS,
    SKIP_NO_TIMESTAMP,
    SKIP_NOT_ECHO,
    SKIP_NOT_IP,
    SKIP_PROTOCOL,
    SKIP_REASONS,
    SKIP_TRUNCATED,
    SKIP_VLAN,
    PacketInfo,
    parse_packet,
)

PCAPS = Path(__file__).parent / "data" / "pcaps"

# ---------------------------------------------------------------------------------------
# Packet builders. Checksums are left at zero: the parser never looks at them.

V4_SRC = "192.0.2.1"
V4_DST = "198.51.100.2"
V6_SRC = "2001:db8::1"
V6_DST = "2001:db8::2"

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def mapped(addr: str) -> bytes:
    return b"\0" * 10 + b"\xff\xff" + ipaddress.IPv4Address(addr).packed


def ts_option(tsval: int, tsecr: int) -> bytes:
    return b"\x08\x0a" + struct.pack("!II", tsval, tsecr)


def nop_nop_ts(tsval: int = 0x01020304, tsecr: int = 0x0A0B0C0D) -> bytes:
    return b"\x01\x01" + ts_option(tsval, tsecr)


def tcp(
    flags: int = ACK | PSH,
    options: bytes | None = None,
    payload: bytes = b"",
    sport: int = 40000,
    dport: int = 443,
    doff: int | None = None,
) -> bytes:
    if options is None:
        options = nop_nop_ts()
    options += b"\0" * (-len(options) % 4)
    if doff is None:
        doff = 5 + len(options) // 4
    header = struct.pack("!HHIIBBHHH", sport, dport, 1000, 2000, doff << 4, flags, 65535, 0, 0)
    return header + options + payload


def icmp(
    icmp_type: int, code: int = 0, ident: int = 0x1234, seq: int = 7, data: bytes = b""
) -> bytes:
    return struct.pack("!BBHHH", icmp_type, code, 0, ident, seq) + data


def ipv4(
    payload: bytes,
    proto: int = 6,
    src: str = V4_SRC,
    dst: str = V4_DST,
    total: int | None = None,
    frag: int = 0,
    options: bytes = b"",
    ihl: int | None = None,
    version: int = 4,
) -> bytes:
    if ihl is None:
        ihl = 5 + len(options) // 4
    if total is None:
        total = 20 + len(options) + len(payload)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        (version << 4) | ihl,
        0,
        total,
        0x1234,
        frag,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header + options + payload


def ipv6(
    payload: bytes,
    nxt: int = 6,
    src: str = V6_SRC,
    dst: str = V6_DST,
    plen: int | None = None,
    version: int = 6,
) -> bytes:
    if plen is None:
        plen = len(payload)
    header = struct.pack("!IHBB", version << 28, plen, nxt, 64)
    return header + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + payload


def ext_header(nxt: int, units: int = 0) -> bytes:
    """Hop-by-hop, routing or destination options header of (units + 1) * 8 bytes."""
    return bytes([nxt, units]) + b"\0" * (6 + 8 * units)


def frag_header(nxt: int, offset: int = 0, more: bool = False) -> bytes:
    return struct.pack("!BBHI", nxt, 0, (offset << 3) | int(more), 0xCAFE)


def ipv6_ext(payload: bytes, proto: int, chain: list[int]) -> bytes:
    """IPv6 with the extension headers `chain` (types) in front of `payload`."""
    body = payload
    nxt = proto
    for kind in reversed(chain):
        body = (frag_header(nxt) if kind == 44 else ext_header(nxt)) + body
        nxt = kind
    return ipv6(body, nxt=nxt)


def eth(payload: bytes, ethertype: int = 0x0800, tags: tuple[int, ...] = ()) -> bytes:
    frame = b"\x02\0\0\0\0\x01" + b"\x02\0\0\0\0\x02"
    for number, tpid in enumerate(tags):
        frame += struct.pack("!HH", tpid, 100 + number)
    return frame + struct.pack("!H", ethertype) + payload


def parse(linktype: int, data: bytes, wire_len: int | None = None) -> PacketInfo | str:
    return parse_packet(linktype, data, len(data) if wire_len is None else wire_len)


def parsed(linktype: int, data: bytes, wire_len: int | None = None) -> PacketInfo:
    result = parse(linktype, data, wire_len)
    assert isinstance(result, PacketInfo), result
    return result


TCP4 = ipv4(tcp(payload=b"hello"))
TCP6 = ipv6(tcp(payload=b"hello"))


def check_tcp4(info: PacketInfo, payload: int = 5) -> None:
    assert info.proto == 6
    assert info.saddr == mapped(V4_SRC)
    assert info.daddr == mapped(V4_DST)
    assert (info.sport, info.dport) == (40000, 443)
    assert (info.pid, info.reply_pid) == (0x01020304, 0x0A0B0C0D)
    assert info.payload == payload


def check_tcp6(info: PacketInfo) -> None:
    assert info.proto == 6
    assert info.saddr == ipaddress.IPv6Address(V6_SRC).packed
    assert info.daddr == ipaddress.IPv6Address(V6_DST).packed
    assert (info.sport, info.dport, info.pid, info.payload) == (40000, 443, 0x01020304, 5)


# ---------------------------------------------------------------------------------------
# The API


def test_skip_reasons_are_distinct_short_strings() -> None:
    assert len(set(SKIP_REASONS)) == len(SKIP_REASONS)
    assert all(isinstance(reason, str) and 0 < len(reason) <= 30 for reason in SKIP_REASONS)


def test_linktypes_names() -> None:
    assert set(LINKTYPES) == {0, 1, 9, 12, 14, 101, 108, 113, 226, 228, 229, 239, 242, 258, 276}
    assert all(isinstance(name, str) and name for name in LINKTYPES.values())
    # Every listed link type has a parser: an empty packet is truncated, not unsupported.
    assert all(parse(linktype, b"") == SKIP_TRUNCATED for linktype in LINKTYPES)


def test_typical_packet_all_fields() -> None:
    frame = eth(TCP4)
    info = parsed(1, frame, wire_len=1514)
    assert info == PacketInfo(
        proto=6,
        saddr=mapped(V4_SRC),
        sport=40000,
        daddr=mapped(V4_DST),
        dport=443,
        pid=0x01020304,
        pid_valid=True,
        reply_pid=0x0A0B0C0D,
        reply_pid_valid=True,
        event_type=FlowEventType.NONE,
        event_reason=EventReason.NONE,
        wait_first_edge=True,
        tcp_flags=ACK | PSH,
        payload=5,
        pkt_len=1514,
    )
    assert type(info.saddr) is bytes and type(info.daddr) is bytes


def test_memoryview_input_gives_the_same_result() -> None:
    for linktype, data in [
        (1, eth(TCP4)),
        (1, eth(TCP6, 0x86DD)),
        (229, TCP6),
        (101, ipv4(icmp(8), proto=1)),
    ]:
        from_view = parse_packet(linktype, memoryview(data), 99)
        assert from_view == parse_packet(linktype, data, 99)
        assert isinstance(from_view, PacketInfo)
        assert type(from_view.saddr) is bytes


def test_every_skip_reason_is_reachable() -> None:
    examples = {
        SKIP_TRUNCATED: (1, b"\0" * 10),
        SKIP_LINKTYPE: (2, TCP4),
        SKIP_BAD_LINK: (258, struct.pack("<II", 0, 1)),
        SKIP_NOT_IP: (1, eth(b"\0" * 28, 0x0806)),
        SKIP_VLAN: (1, eth(TCP4, tags=(0x8100,) * 3)),
        SKIP_MPLS: (1, eth(mpls(TCP4, 5), 0x8847)),
        SKIP_BAD_IPV4: (228, ipv4(tcp(), ihl=3)),
        SKIP_BAD_IPV6: (229, ipv6(tcp(), plen=0)),
        SKIP_FRAGMENT: (228, ipv4(tcp(), frag=8)),
        SKIP_IPV6_EXT: (229, ipv6_ext(tcp(), 6, [0, 60, 43, 60])),
        SKIP_PROTOCOL: (228, ipv4(b"\0" * 8, proto=17)),
        SKIP_BAD_TCP: (228, ipv4(tcp(doff=2))),
        SKIP_NO_TIMESTAMP: (228, ipv4(tcp(options=b""))),
        SKIP_NOT_ECHO: (228, ipv4(icmp(3), proto=1)),
        SKIP_BAD_ICMP: (228, ipv4(icmp(8, code=9), proto=1)),
    }
    assert set(examples) == set(SKIP_REASONS)
    for reason, (linktype, packet) in examples.items():
        assert parse(linktype, packet) == reason


def test_unsupported_link_types() -> None:
    for linktype in (-1, 2, 10, 105, 127, 147, 0xFFFF, 1 << 40):
        assert parse(linktype, eth(TCP4)) == SKIP_LINKTYPE


# ---------------------------------------------------------------------------------------
# Link layers


def test_ethernet() -> None:
    check_tcp4(parsed(1, eth(TCP4)))
    check_tcp6(parsed(1, eth(TCP6, 0x86DD)))
    assert parse(1, eth(TCP4)[:13]) == SKIP_TRUNCATED
    assert parse(1, b"") == SKIP_TRUNCATED
    assert parse(1, eth(TCP4)[:14]) == SKIP_TRUNCATED
    assert parse(1, eth(b"\0" * 28, 0x0806)) == SKIP_NOT_IP  # ARP
    assert parse(1, eth(b"\xaa\xaa\x03" + TCP4, 0x05DC)) == SKIP_NOT_IP  # 802.3 length


@pytest.mark.parametrize(
    "tags", [(), (0x8100,), (0x88A8, 0x8100), (0x9100, 0x8100), (0x8100, 0x8100)]
)
def test_vlan_tags_up_to_the_limit(tags: tuple[int, ...]) -> None:
    assert len(tags) <= MAX_VLAN_TAGS
    check_tcp4(parsed(1, eth(TCP4, tags=tags)))
    check_tcp6(parsed(1, eth(TCP6, 0x86DD, tags=tags)))


def test_too_many_vlan_tags() -> None:
    assert MAX_VLAN_TAGS == 2
    assert parse(1, eth(TCP4, tags=(0x88A8, 0x8100, 0x8100))) == SKIP_VLAN
    assert parse(1, eth(TCP4, tags=(0x8100,) * 4)) == SKIP_VLAN


def test_vlan_tag_truncated() -> None:
    assert parse(1, eth(TCP4, tags=(0x8100,))[:16]) == SKIP_TRUNCATED
    assert parse(1, eth(TCP4, tags=(0x8100,))[:18]) == SKIP_TRUNCATED


def mpls(payload: bytes, labels: int) -> bytes:
    stack = b""
    for number in range(labels):
        bottom = 1 if number == labels - 1 else 0
        stack += struct.pack("!I", (1000 + number) << 12 | bottom << 8 | 64)
    return stack + payload


@pytest.mark.parametrize("labels", range(1, MAX_MPLS_LABELS + 1))
def test_mpls_label_stack(labels: int) -> None:
    check_tcp4(parsed(1, eth(mpls(TCP4, labels), 0x8847)))
    check_tcp6(parsed(1, eth(mpls(TCP6, labels), 0x8847)))
    check_tcp4(parsed(1, eth(mpls(TCP4, labels), 0x8847, tags=(0x8100,))))


def test_mpls_errors() -> None:
    assert parse(1, eth(mpls(TCP4, MAX_MPLS_LABELS + 1), 0x8847)) == SKIP_MPLS
    # A pseudowire control word (first nibble 0) or an Ethernet pseudowire is not IP.
    assert parse(1, eth(mpls(b"\0\0\0\0" + TCP4, 1), 0x8847)) == SKIP_NOT_IP
    assert parse(1, eth(mpls(TCP4, 2), 0x8847)[:20]) == SKIP_TRUNCATED
    assert parse(1, eth(mpls(TCP4, 1), 0x8847)[:18]) == SKIP_TRUNCATED
    assert parse(1, eth(mpls(TCP4, 1), 0x8848)) == SKIP_NOT_IP  # multicast MPLS


def pppoe(ppp: bytes, code: int = 0) -> bytes:
    return struct.pack("!BBHH", 0x11, code, 0x0042, len(ppp)) + ppp


def test_pppoe_session() -> None:
    check_tcp4(parsed(1, eth(pppoe(b"\x00\x21" + TCP4), 0x8864)))
    check_tcp6(parsed(1, eth(pppoe(b"\x00\x57" + TCP6), 0x8864)))
    # Protocol-field compression: one byte (as in the suricata capture below).
    check_tcp4(parsed(1, eth(pppoe(b"\x21" + TCP4), 0x8864)))
    check_tcp6(parsed(1, eth(pppoe(b"\x57" + TCP6), 0x8864)))
    check_tcp4(parsed(1, eth(pppoe(b"\x00\x21" + TCP4), 0x8864, tags=(0x88A8, 0x8100))))
    assert parse(1, eth(pppoe(b"\xc0\x21" + b"\x01" * 10), 0x8864)) == SKIP_NOT_IP  # LCP
    assert parse(1, eth(pppoe(b"\x00\x21" + TCP4, code=0x09), 0x8864)) == SKIP_NOT_IP
    assert parse(1, eth(pppoe(b"\x00\x21" + TCP4), 0x8863)) == SKIP_NOT_IP  # discovery
    assert parse(1, eth(pppoe(b"\x00\x21" + TCP4), 0x8864)[:20]) == SKIP_TRUNCATED
    assert parse(1, eth(pppoe(b"\x00\x21" + TCP4), 0x8864)[:21]) == SKIP_TRUNCATED


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("family", [10, 24, 28, 30])
def test_null_loopback(order: str, family: int) -> None:
    check_tcp4(parsed(0, struct.pack(order + "I", 2) + TCP4))
    check_tcp6(parsed(0, struct.pack(order + "I", family) + TCP6))


def test_null_loopback_errors() -> None:
    assert parse(0, struct.pack("<I", 17) + TCP4) == SKIP_NOT_IP
    assert parse(0, struct.pack("<I", 0) + TCP4) == SKIP_NOT_IP
    assert parse(0, struct.pack("<I", 2)[:3]) == SKIP_TRUNCATED
    assert parse(0, struct.pack("<I", 2) + TCP6) == SKIP_BAD_IPV4


def test_openbsd_loopback_is_big_endian() -> None:
    check_tcp4(parsed(108, struct.pack(">I", 2) + TCP4))
    check_tcp6(parsed(108, struct.pack(">I", 24) + TCP6))
    assert parse(108, struct.pack("<I", 2) + TCP4) == SKIP_NOT_IP
    assert parse(108, b"\0\0") == SKIP_TRUNCATED


def test_linux_sll() -> None:
    header = struct.pack("!HHH8s", 0, 1, 6, b"\x02\0\0\0\0\x01\0\0")
    check_tcp4(parsed(113, header + struct.pack("!H", 0x0800) + TCP4))
    check_tcp6(parsed(113, header + struct.pack("!H", 0x86DD) + TCP6))
    # libpcap puts a VLAN tag back in front of the protocol.
    tagged = header + struct.pack("!HHH", 0x8100, 5, 0x0800) + TCP4
    check_tcp4(parsed(113, tagged))
    assert parse(113, header + struct.pack("!H", 0x0806) + TCP4) == SKIP_NOT_IP
    assert parse(113, header + b"\x08") == SKIP_TRUNCATED


def test_linux_sll2() -> None:
    def header(protocol: int) -> bytes:
        return struct.pack("!HHIHBB8s", protocol, 0, 3, 1, 4, 6, b"\x02\0\0\0\0\x01\0\0")

    assert len(header(0)) == 20
    check_tcp4(parsed(276, header(0x0800) + TCP4))
    check_tcp6(parsed(276, header(0x86DD) + TCP6))
    assert parse(276, header(0x0806) + TCP4) == SKIP_NOT_IP
    assert parse(276, header(0x0800)[:19]) == SKIP_TRUNCATED


@pytest.mark.parametrize("linktype", [101, 12, 14])
def test_raw_ip_by_version(linktype: int) -> None:
    check_tcp4(parsed(linktype, TCP4))
    check_tcp6(parsed(linktype, TCP6))
    assert parse(linktype, b"\x50" + TCP4[1:]) == SKIP_NOT_IP
    assert parse(linktype, b"") == SKIP_TRUNCATED


def test_raw_ipv4_and_ipv6() -> None:
    check_tcp4(parsed(228, TCP4))
    check_tcp6(parsed(229, TCP6))
    assert parse(228, TCP6) == SKIP_BAD_IPV4
    assert parse(229, TCP4 + b"\0" * 40) == SKIP_BAD_IPV6
    assert parse(228, b"") == SKIP_TRUNCATED
    assert parse(229, b"") == SKIP_TRUNCATED


def tlv(tlv_type: int, value: bytes) -> bytes:
    body = struct.pack("<HH", 4 + len(value), tlv_type) + value
    return body + b"\0" * (-len(body) % 4)


def nflog(family: int, *tlvs: bytes) -> bytes:
    return bytes([family, 0]) + struct.pack("!H", 7) + b"".join(tlvs)


def test_nflog() -> None:
    prefix = tlv(10, b"drop\0")  # 9 bytes: padded to 12
    check_tcp4(parsed(239, nflog(2, tlv(1, b"\x08\0\x01\0"), prefix, tlv(9, TCP4))))
    check_tcp6(parsed(239, nflog(10, prefix, tlv(9, TCP6), tlv(11, b"\0\0\0\1"))))
    assert parse(239, nflog(7, tlv(9, TCP4))) == SKIP_NOT_IP
    assert parse(239, nflog(2, prefix)) == SKIP_TRUNCATED  # no payload TLV at all
    assert parse(239, nflog(2, prefix)[:-2]) == SKIP_TRUNCATED
    assert parse(239, b"\x02\0\0") == SKIP_TRUNCATED
    bad_length = nflog(2, struct.pack("<HH", 2, 10), tlv(9, TCP4))
    assert parse(239, bad_length) == SKIP_BAD_LINK
    # A payload TLV cut by the snap length is parsed up to the capture's end.
    cut = nflog(2, prefix, tlv(9, ipv4(tcp(payload=b"x" * 100))))[:120]
    info = parsed(239, cut, wire_len=300)
    assert (info.payload, info.pkt_len) == (100, 300)
    # The payload TLV ends the IP packet even if other bytes follow it.
    short = tlv(9, TCP4[:30]) + b"\0" * 64
    assert parse(239, nflog(2, short)) == SKIP_TRUNCATED


def test_nflog_tlv_walk_is_bounded() -> None:
    many = nflog(2, *(tlv(10, b"") for _ in range(200)), tlv(9, TCP4))
    assert parse(239, many) == SKIP_BAD_LINK


def ipnet(family: int) -> bytes:
    return struct.pack("!BBHIIIII", 1, family, 0, 0, 2, 0, 0, 0xFFFFFFFF)


def test_solaris_ipnet() -> None:
    assert len(ipnet(2)) == 24
    check_tcp4(parsed(226, ipnet(2) + TCP4))
    check_tcp6(parsed(226, ipnet(26) + TCP6))
    assert parse(226, ipnet(10) + TCP6) == SKIP_NOT_IP
    assert parse(226, ipnet(2)[:23]) == SKIP_TRUNCATED


def test_ppp() -> None:
    check_tcp4(parsed(9, b"\xff\x03\x00\x21" + TCP4))
    check_tcp4(parsed(9, b"\x00\x21" + TCP4))
    check_tcp6(parsed(9, b"\xff\x03\x00\x57" + TCP6))
    check_tcp6(parsed(9, b"\x00\x57" + TCP6))
    check_tcp4(parsed(9, b"\xff\x03\x21" + TCP4))  # protocol-field compression
    assert parse(9, b"\xff\x03\xc0\x21\x01\x01\x00\x04") == SKIP_NOT_IP  # LCP
    assert parse(9, b"\xff\x03") == SKIP_TRUNCATED
    assert parse(9, b"\x00") == SKIP_TRUNCATED
    assert parse(9, b"") == SKIP_TRUNCATED


def pktap(inner_dlt: int, length: int = 108) -> bytes:
    return struct.pack("<II", length, inner_dlt) + b"\0" * (length - 8)


def test_pktap() -> None:
    check_tcp4(parsed(258, pktap(1) + eth(TCP4)))
    check_tcp4(parsed(258, pktap(0) + struct.pack("<I", 2) + TCP4))
    check_tcp6(parsed(258, pktap(12) + TCP6))
    check_tcp6(parsed(258, pktap(101, length=156) + TCP6))
    check_tcp4(parsed(258, pktap(228) + TCP4))
    assert parse(258, pktap(113) + TCP4) == SKIP_LINKTYPE
    assert parse(258, pktap(258) + pktap(1) + eth(TCP4)) == SKIP_LINKTYPE  # one level only
    assert parse(258, struct.pack("<II", 4, 1) + eth(TCP4)) == SKIP_BAD_LINK
    assert parse(258, pktap(1)[:60]) == SKIP_TRUNCATED
    assert parse(258, struct.pack("<II", 0xFFFFFFFF, 1) + eth(TCP4)) == SKIP_TRUNCATED
    assert parse(258, b"\x6c\0\0\0\1\0") == SKIP_TRUNCATED


def ipoib(ethertype: int) -> bytes:
    return b"\0" * 40 + struct.pack("!HH", ethertype, 0)


def test_ip_over_infiniband() -> None:
    check_tcp4(parsed(242, ipoib(0x0800) + TCP4))
    check_tcp6(parsed(242, ipoib(0x86DD) + TCP6))
    assert parse(242, ipoib(0x0806) + b"\0" * 28) == SKIP_NOT_IP
    assert parse(242, ipoib(0x0800)[:43]) == SKIP_TRUNCATED


# ---------------------------------------------------------------------------------------
# IPv4


def test_ipv4_bad_headers() -> None:
    assert parse(1, eth(ipv4(tcp(), version=5))) == SKIP_BAD_IPV4
    assert parse(1, eth(ipv4(tcp(), ihl=4))) == SKIP_BAD_IPV4
    assert parse(1, eth(ipv4(tcp(), total=19))) == SKIP_BAD_IPV4
    assert parse(1, eth(ipv4(tcp(), options=b"\1" * 8, total=24))) == SKIP_BAD_IPV4
    assert parse(1, eth(ipv4(tcp(), total=0))) == SKIP_BAD_IPV4


def test_ipv4_truncated() -> None:
    assert parse(1, eth(TCP4)[:33]) == SKIP_TRUNCATED
    with_options = ipv4(tcp(), options=b"\1" * 40)
    assert parse(1, eth(with_options)[: 14 + 59]) == SKIP_TRUNCATED


def test_ipv4_options() -> None:
    info = parsed(1, eth(ipv4(tcp(payload=b"abc"), options=b"\x94\x04\0\0")))
    check_tcp4(info, payload=3)


def test_ipv4_fragments() -> None:
    assert parse(1, eth(ipv4(tcp(), frag=1))) == SKIP_FRAGMENT
    assert parse(1, eth(ipv4(tcp(), frag=0x2000 | 185))) == SKIP_FRAGMENT
    assert parse(1, eth(ipv4(icmp(8), proto=1, frag=0x1FFF))) == SKIP_FRAGMENT
    # First fragment (more fragments, offset 0) and don't-fragment are fine.
    check_tcp4(parsed(1, eth(ipv4(tcp(payload=b"hello"), frag=0x2000))))
    check_tcp4(parsed(1, eth(ipv4(tcp(payload=b"hello"), frag=0x4000))))
    # ... but the transport header must be whole.
    assert parse(1, eth(ipv4(tcp(payload=b"hello"), frag=0x2000))[: 14 + 20 + 12]) == (
        SKIP_TRUNCATED
    )


def test_ipv4_unsupported_protocols() -> None:
    for proto in (17, 58, 47, 50, 132, 0, 255):
        assert parse(1, eth(ipv4(b"\0" * 40, proto=proto))) == SKIP_PROTOCOL


# ---------------------------------------------------------------------------------------
# IPv6


@pytest.mark.parametrize(
    "chain",
    [[], [0], [60], [43], [44], [0, 43], [0, 44, 60], [0, 43, 44], [60, 43, 60]],
)
def test_ipv6_extension_headers_up_to_the_limit(chain: list[int]) -> None:
    assert len(chain) <= MAX_IPV6_EXT_HEADERS
    info = parsed(1, eth(ipv6_ext(tcp(payload=b"hello"), 6, chain), 0x86DD))
    check_tcp6(info)
    echo = parsed(1, eth(ipv6_ext(icmp(128, data=b"abcd"), 58, chain), 0x86DD))
    assert (echo.proto, echo.pid, echo.payload) == (58, 7, 4)


def test_ipv6_too_many_extension_headers() -> None:
    assert MAX_IPV6_EXT_HEADERS == 3
    packet = ipv6_ext(tcp(), 6, [0, 43, 44, 60])
    assert parse(229, packet) == SKIP_IPV6_EXT
    assert parse(229, ipv6_ext(tcp(), 6, [60] * 6)) == SKIP_IPV6_EXT


def test_ipv6_long_extension_header_and_payload() -> None:
    body = ext_header(6, units=2) + tcp(payload=b"x" * 9)  # 24-byte destination options
    info = parsed(229, ipv6(body, nxt=60))
    assert info.payload == 9


def test_ipv6_fragments() -> None:
    first = ipv6(frag_header(6, offset=0, more=True) + tcp(payload=b"hello"), nxt=44)
    check_tcp6(parsed(229, first))
    later = ipv6(frag_header(6, offset=185, more=True) + tcp(), nxt=44)
    assert parse(229, later) == SKIP_FRAGMENT
    last = ipv6(ext_header(44) + frag_header(6, offset=1) + tcp(), nxt=0)
    assert parse(229, last) == SKIP_FRAGMENT


def test_ipv6_bad_headers() -> None:
    assert parse(229, ipv6(tcp(), version=4)) == SKIP_BAD_IPV6
    assert parse(1, eth(ipv6(tcp(), version=7), 0x86DD)) == SKIP_BAD_IPV6
    assert parse(229, ipv6(tcp(), plen=0)) == SKIP_BAD_IPV6  # jumbogram


def test_ipv6_truncated() -> None:
    assert parse(229, TCP6[:39]) == SKIP_TRUNCATED
    with_ext = ipv6_ext(tcp(), 6, [0, 60])
    assert parse(229, with_ext[:44]) == SKIP_TRUNCATED
    assert parse(229, with_ext[:52]) == SKIP_TRUNCATED
    assert parse(229, with_ext[:60]) == SKIP_TRUNCATED


def test_ipv6_unsupported_protocols() -> None:
    for nxt in (17, 1, 59, 50, 51, 135, 41):
        assert parse(229, ipv6(b"\0" * 40, nxt=nxt)) == SKIP_PROTOCOL


# ---------------------------------------------------------------------------------------
# Payload length comes from the IP header


def test_payload_ignores_ethernet_padding() -> None:
    ack = ipv4(tcp(flags=ACK, options=nop_nop_ts()))  # 52 bytes
    frame = eth(ack) + b"\0" * 12
    info = parsed(1, frame)
    assert (info.payload, info.pid_valid, info.pkt_len) == (0, False, len(frame))
    ping = eth(ipv4(icmp(8), proto=1)) + b"\0" * 18  # 60-byte minimum frame
    assert parsed(1, ping).payload == 0
    ping6 = eth(ipv6(icmp(128, data=b"1234"), nxt=58), 0x86DD) + b"\0" * 30
    assert parsed(1, ping6).payload == 4
    data6 = eth(ipv6(tcp(payload=b"hello")), 0x86DD) + b"\xee" * 7
    assert parsed(1, data6).payload == 5


def test_payload_ignores_snap_length() -> None:
    frame = eth(ipv4(tcp(payload=b"x" * 1400)))
    info = parsed(1, frame[:96], wire_len=len(frame))
    assert (info.payload, info.pid_valid, info.pkt_len) == (1400, True, len(frame))
    frame6 = eth(ipv6(tcp(payload=b"x" * 1400)), 0x86DD)
    info6 = parsed(1, frame6[:100], wire_len=len(frame6))
    assert (info6.payload, info6.pkt_len) == (1400, len(frame6))
    ping = eth(ipv4(icmp(0, data=b"y" * 56), proto=1))
    assert parsed(1, ping[:42]).payload == 56


def test_payload_is_clamped_at_zero() -> None:
    short = ipv4(tcp(payload=b"hello"), total=20 + 20)  # claims less than the TCP header
    info = parsed(228, short)
    assert (info.payload, info.pid_valid) == (0, False)
    short6 = ipv6(tcp(), plen=8)
    assert parsed(229, short6).payload == 0
    short_ext = ipv6(ext_header(6, units=3) + tcp(), nxt=0, plen=16)
    assert parsed(229, short_ext).payload == 0
    short_icmp = ipv4(icmp(8), proto=1, total=24)
    assert parsed(228, short_icmp).payload == 0


# ---------------------------------------------------------------------------------------
# TCP


def test_tcp_header_errors() -> None:
    assert parse(228, ipv4(tcp(doff=4))) == SKIP_BAD_TCP
    assert parse(228, ipv4(tcp(doff=0))) == SKIP_BAD_TCP
    assert parse(228, ipv4(tcp())[:39]) == SKIP_TRUNCATED
    assert parse(228, ipv4(tcp(options=b""))) == SKIP_NO_TIMESTAMP
    assert parse(1, eth(ipv4(tcp(options=b""), proto=6))) == SKIP_NO_TIMESTAMP


def test_timestamp_byte_order() -> None:
    info = parsed(1, eth(ipv4(tcp(options=nop_nop_ts(0x11223344, 0xFFEEDDCC)))))
    assert (info.pid, info.reply_pid) == (0x11223344, 0xFFEEDDCC)
    info6 = parsed(229, ipv6(tcp(options=ts_option(1, 0x80000000) + b"\0\0")))
    assert (info6.pid, info6.reply_pid) == (1, 0x80000000)


SYN_OPTIONS = b"\x02\x04\x05\xb4\x04\x02" + ts_option(777, 0) + b"\x01\x03\x03\x07"


@pytest.mark.parametrize(
    "options",
    [
        nop_nop_ts(777, 0),
        ts_option(777, 0) + b"\x01\x01",
        SYN_OPTIONS,
        b"\x02\x04\x05\xb4\x01\x01\x04\x02" + ts_option(777, 0),  # MSS, NOP, NOP, SACK-OK
        b"\x01" * 30 + ts_option(777, 0),  # longest NOP run that fits
        b"\x08\x08" + b"\0" * 6 + ts_option(777, 0),  # kind 8 with another length: skipped
        b"\x05\x0a" + b"\0" * 8 + ts_option(777, 0),  # SACK block
        b"\xfe\x04\xab\xcd" + ts_option(777, 0),  # experimental option
    ],
)
def test_timestamp_option_positions(options: bytes) -> None:
    for packet in (eth(ipv4(tcp(options=options))), eth(ipv6(tcp(options=options)), 0x86DD)):
        assert parsed(1, packet).pid == 777


@pytest.mark.parametrize(
    "options",
    [
        b"\x00" + nop_nop_ts(),  # end of options first
        b"\x02\x04\x05\xb4\x00\x00\x00\x00" + ts_option(1, 2),
        b"\x01" * 40,  # nothing but NOPs
        b"\x02\x01" + ts_option(1, 2),  # length < 2: stop
        b"\x02\x00" + ts_option(1, 2),
        b"\x08\x09" + b"\0" * 7,  # kind 8 with a wrong length
        b"\x08\x0b" + b"\0" * 9,
        b"\x02\x04\x05\xb4",  # MSS only
        b"\x01\x01\x01\x02",  # option whose length byte is past the options
        b"\x01\x01\x08\x0a\0\0\0\1",  # timestamp runs past the data offset
        b"\x02\x28" + b"\0" * 6 + ts_option(1, 2),  # an option swallows the rest
    ],
)
def test_no_timestamp(options: bytes) -> None:
    assert parse(1, eth(ipv4(tcp(options=options)))) == SKIP_NO_TIMESTAMP
    assert parse(229, ipv6(tcp(options=options))) == SKIP_NO_TIMESTAMP


def test_option_walk_is_bounded() -> None:
    assert MAX_TCP_OPTION_STEPS >= 40  # 40 option bytes can never need more steps
    data = tcp(options=b"\x01" * 40)
    assert parse(228, ipv4(data)) == SKIP_NO_TIMESTAMP


def test_options_cut_by_snap_length() -> None:
    syn = eth(ipv4(tcp(flags=SYN, options=SYN_OPTIONS)))
    start = 14 + 20 + 20
    # Cut before the timestamp option is whole: truncated.
    for cut in range(start, start + 6 + 10):
        assert parse(1, syn[:cut], len(syn)) == SKIP_TRUNCATED, cut
    # Cut after it: found, even though later options are missing.
    for cut in range(start + 16, len(syn) + 1):
        assert parsed(1, syn[:cut], len(syn)).pid == 777
    data = eth(ipv4(tcp(payload=b"x" * 100)))
    for cut in range(start, start + 12):
        assert parse(1, data[:cut], len(data)) == SKIP_TRUNCATED
    # Options that end (kind 0) before the cut are not truncated, they have no timestamp.
    ended = eth(ipv4(tcp(options=b"\x00" + b"\x01" * 11)))
    assert parse(1, ended[: start + 4]) == SKIP_NO_TIMESTAMP


@pytest.mark.parametrize(
    ("flags", "event", "reason", "pid_valid", "reply_valid", "wait"),
    [
        (SYN, FlowEventType.OPENING, EventReason.SYN, True, False, False),
        (SYN | ACK, FlowEventType.OPENING, EventReason.SYN_ACK, True, True, False),
        (ACK, FlowEventType.NONE, EventReason.NONE, False, True, True),
        (FIN | ACK, FlowEventType.CLOSING, EventReason.FIN, True, True, True),
        (FIN, FlowEventType.CLOSING, EventReason.FIN, True, False, True),
        (RST, FlowEventType.CLOSING_BOTH, EventReason.RST, False, False, True),
        (RST | ACK, FlowEventType.CLOSING_BOTH, EventReason.RST, False, True, True),
        (RST | FIN | ACK, FlowEventType.CLOSING_BOTH, EventReason.RST, True, True, True),
        (SYN | FIN, FlowEventType.CLOSING, EventReason.FIN, True, False, False),
        (0, FlowEventType.NONE, EventReason.NONE, False, False, True),
        (0xC0 | ACK, FlowEventType.NONE, EventReason.NONE, False, True, True),  # ECE, CWR
    ],
)
def test_tcp_flags_without_payload(
    flags: int,
    event: FlowEventType,
    reason: EventReason,
    pid_valid: bool,
    reply_valid: bool,
    wait: bool,
) -> None:
    for packet in (eth(ipv4(tcp(flags=flags))), eth(ipv6(tcp(flags=flags)), 0x86DD)):
        info = parsed(1, packet)
        assert info.event_type is event
        assert info.event_reason is reason
        assert (info.pid_valid, info.reply_pid_valid) == (pid_valid, reply_valid)
        assert info.wait_first_edge is wait
        assert info.tcp_flags == flags
        assert info.payload == 0


def test_tcp_data_makes_pid_valid() -> None:
    for flags in (ACK, ACK | PSH, 0, RST | ACK):
        info = parsed(1, eth(ipv4(tcp(flags=flags, payload=b"z"))))
        assert (info.pid_valid, info.payload) == (True, 1)


def test_fast_path_and_general_path_agree() -> None:
    # The same segment through Ethernet (fast path) and raw IPv4 (general path).
    for segment in (
        tcp(flags=SYN, options=nop_nop_ts(5, 0)),
        tcp(flags=FIN | ACK, payload=b"bye"),
        tcp(flags=RST),
        tcp(options=nop_nop_ts() + b"\x01\x01\x05\x0a" + b"\0" * 8, payload=b"q"),
    ):
        packet = ipv4(segment)
        assert parse_packet(1, eth(packet), 77) == parse_packet(228, packet, 77)


# ---------------------------------------------------------------------------------------
# ICMP


def test_icmpv4_echo() -> None:
    request = parsed(1, eth(ipv4(icmp(8, ident=0xBEEF, seq=513, data=b"x" * 56), proto=1)))
    assert request == PacketInfo(
        proto=1,
        saddr=mapped(V4_SRC),
        sport=0xBEEF,
        daddr=mapped(V4_DST),
        dport=0xBEEF,
        pid=513,
        pid_valid=True,
        reply_pid=0,
        reply_pid_valid=False,
        event_type=FlowEventType.NONE,
        event_reason=EventReason.NONE,
        wait_first_edge=False,
        tcp_flags=0,
        payload=56,
        pkt_len=14 + 20 + 8 + 56,
    )
    reply = parsed(1, eth(ipv4(icmp(0, ident=0xBEEF, seq=513), proto=1, src=V4_DST, dst=V4_SRC)))
    assert (reply.pid, reply.pid_valid, reply.reply_pid, reply.reply_pid_valid) == (
        0,
        False,
        513,
        True,
    )
    assert (reply.sport, reply.dport, reply.saddr) == (0xBEEF, 0xBEEF, mapped(V4_DST))


def test_icmpv6_echo() -> None:
    request = parsed(229, ipv6(icmp(128, ident=3, seq=65535, data=b"12345678"), nxt=58))
    assert (request.proto, request.sport, request.dport, request.pid, request.pid_valid) == (
        58,
        3,
        3,
        65535,
        True,
    )
    assert (request.reply_pid_valid, request.payload, request.wait_first_edge) == (False, 8, False)
    reply = parsed(229, ipv6(icmp(129, ident=3, seq=9), nxt=58))
    assert (reply.reply_pid, reply.reply_pid_valid, reply.pid_valid) == (9, True, False)


def test_icmp_not_echo() -> None:
    for icmp_type in (3, 5, 11, 13, 14, 128, 129):
        assert parse(228, ipv4(icmp(icmp_type), proto=1)) == SKIP_NOT_ECHO
    for icmp_type in (1, 2, 3, 133, 135, 136, 8, 0):
        assert parse(229, ipv6(icmp(icmp_type), nxt=58)) == SKIP_NOT_ECHO


def test_icmp_echo_with_nonzero_code() -> None:
    assert parse(228, ipv4(icmp(8, code=1), proto=1)) == SKIP_BAD_ICMP
    assert parse(228, ipv4(icmp(0, code=255), proto=1)) == SKIP_BAD_ICMP
    assert parse(229, ipv6(icmp(128, code=3), nxt=58)) == SKIP_BAD_ICMP


def test_icmp_over_the_wrong_ip_version() -> None:
    assert parse(229, ipv6(icmp(8), nxt=1)) == SKIP_PROTOCOL
    assert parse(228, ipv4(icmp(128), proto=58)) == SKIP_PROTOCOL


def test_icmp_truncated() -> None:
    assert parse(228, ipv4(icmp(8), proto=1)[:27]) == SKIP_TRUNCATED
    assert parse(229, ipv6(icmp(128), nxt=58)[:47]) == SKIP_TRUNCATED


# ---------------------------------------------------------------------------------------
# Never raises

ALL_LINKTYPES = [*sorted(LINKTYPES), -1, 2, 105, 127, 147, 0xFFFF]

VALID_PACKETS = [
    (1, eth(TCP4)),
    (1, eth(ipv4(tcp(flags=SYN, options=SYN_OPTIONS)))),
    (1, eth(TCP6, 0x86DD, tags=(0x88A8, 0x8100))),
    (1, eth(mpls(TCP4, 3), 0x8847, tags=(0x8100,))),
    (1, eth(pppoe(b"\x00\x57" + ipv6_ext(tcp(), 6, [0, 44])), 0x8864)),
    (1, eth(ipv4(icmp(8, data=b"p" * 20), proto=1, options=b"\1" * 4))),
    (0, struct.pack("<I", 30) + ipv6(icmp(129), nxt=58)),
    (108, struct.pack(">I", 2) + TCP4),
    (9, b"\xff\x03\x00\x21" + TCP4),
    (113, b"\0" * 14 + b"\x08\x00" + TCP4),
    (276, b"\x86\xdd" + b"\0" * 18 + TCP6),
    (101, TCP6),
    (228, TCP4),
    (229, ipv6_ext(tcp(), 6, [60, 43, 44])),
    (239, nflog(2, tlv(10, b"abc"), tlv(9, TCP4))),
    (226, ipnet(26) + TCP6),
    (258, pktap(1) + eth(TCP4)),
    (242, ipoib(0x0800) + TCP4),
]


def check_result(result: object) -> None:
    if isinstance(result, PacketInfo):
        assert len(result) == 15
        assert len(result.saddr) == 16 and len(result.daddr) == 16
        assert result.payload >= 0 and 0 <= result.sport < 65536
    else:
        assert result in SKIP_REASONS


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ALL_LINKTYPES), st.binary(max_size=200))
def test_random_bytes_never_raise(linktype: int, data: bytes) -> None:
    check_result(parse_packet(linktype, data, len(data)))
    check_result(parse_packet(linktype, memoryview(data), 0))


@st.composite
def mutated_packets(draw: st.DrawFn) -> tuple[int, bytes]:
    linktype, packet = draw(st.sampled_from(VALID_PACKETS))
    data = bytearray(packet)
    for _ in range(draw(st.integers(0, 6))):
        if data:
            position = draw(st.integers(0, len(data) - 1))
            data[position] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return linktype, bytes(data[:cut])


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_packets(), st.sampled_from([None, *ALL_LINKTYPES]))
def test_mutated_packets_never_raise(packet: tuple[int, bytes], other: int | None) -> None:
    linktype, data = packet
    check_result(parse_packet(linktype if other is None else other, data, len(data)))


def test_valid_packets_parse() -> None:
    for linktype, packet in VALID_PACKETS:
        assert isinstance(parse(linktype, packet), PacketInfo), (linktype, packet.hex())


FAST_PATH_TEMPLATES = [
    (0x0800, 228, TCP4),
    (0x0800, 228, ipv4(tcp(flags=SYN, options=SYN_OPTIONS))),
    (0x0800, 228, ipv4(tcp(flags=FIN | ACK), options=b"\1" * 4)),
    (0x0800, 228, ipv4(tcp(options=ts_option(1, 2) + b"\1\1"))),
    (0x0800, 228, ipv4(icmp(8, data=b"abc"), proto=1)),
    (0x86DD, 229, TCP6),
    (0x86DD, 229, ipv6(tcp(flags=SYN | ACK, options=SYN_OPTIONS))),
    (0x86DD, 229, ipv6_ext(tcp(flags=RST), 6, [0])),
    (0x86DD, 229, ipv6(icmp(129, data=b"abc"), nxt=58)),
]


@settings(max_examples=3000)
@given(
    st.sampled_from(FAST_PATH_TEMPLATES),
    st.lists(st.tuples(st.integers(0, 100), st.integers(0, 255)), max_size=6),
    st.integers(0, 110),
)
def test_ethernet_fast_paths_match_raw_ip(
    template: tuple[int, int, bytes], changes: list[tuple[int, int]], cut: int
) -> None:
    # Any IP packet behind an untagged Ethernet header gives the same answer as the same
    # bytes as raw IPv4 / raw IPv6 (which never take the Ethernet fast paths).
    ethertype, raw_linktype, packet = template
    data = bytearray(packet)
    for position, value in changes:
        if position < len(data):
            data[position] = value
    mutated = bytes(data[:cut])
    assert parse_packet(1, eth(mutated, ethertype), 1) == parse_packet(raw_linktype, mutated, 1)


# ---------------------------------------------------------------------------------------
# Real captures (see data/pcaps/PROVENANCE.md)


def read_pcap(path: Path) -> tuple[int, list[tuple[bytes, int]]]:
    """Link type and (captured bytes, wire length) records of a classic pcap file."""
    blob = path.read_bytes()
    magic = blob[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        order = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = ">"
    else:
        raise ValueError(f"{path.name}: not a classic pcap file")
    linktype = struct.unpack_from(order + "I", blob, 20)[0] & 0xFFFF
    record = struct.Struct(order + "IIII")
    records = []
    offset = 24
    while offset + 16 <= len(blob):
        _, _, caplen, wire_len = record.unpack_from(blob, offset)
        offset += 16
        records.append((blob[offset : offset + caplen], wire_len))
        offset += caplen
    return linktype, records


def outcome(result: PacketInfo | str) -> str:
    if isinstance(result, str):
        return result
    if result.proto == 6:
        return "tcp"
    return f"icmp{result.proto} {'request' if result.pid_valid else 'reply'}"


def summarize(name: str) -> tuple[int, list[PacketInfo | str]]:
    linktype, records = read_pcap(PCAPS / name)
    return linktype, [parse_packet(linktype, data, wire_len) for data, wire_len in records]


# Expected outcomes, checked against tshark 4.0 (frames with tcp.options.timestamp.tsval,
# icmp.type / icmpv6.type) and against the MANIFEST of the capture collection.
CAPTURES = {
    "pcapplusplus__sll2.pcap": (276, {SKIP_NO_TIMESTAMP: 3}),
    "suricata__decode-sll2-01.pcap": (276, {"tcp": 5}),
    "zeek__linux_dlt_sll2.pcap": (
        276,
        {
            "icmp1 request": 1,
            "icmp1 reply": 1,
            "icmp58 request": 1,
            "icmp58 reply": 1,
            SKIP_NOT_IP: 2,  # ARP, RARP
        },
    ),
    "tcpdump__tcp-handshake-nano.pcap": (113, {"tcp": 3}),
    # 50 IPv6 TCP packets with timestamps, 42 IPv4 TCP without, 8 UDP.
    "pcapplusplus__raw_ip.pcap": (101, {"tcp": 50, SKIP_NO_TIMESTAMP: 42, SKIP_PROTOCOL: 8}),
    "arkime__nflog.pcap": (239, {"tcp": 10}),
    "tcpdump__e1000g-ipnet.pcap": (226, {"icmp1 request": 10, "icmp1 reply": 10}),
    "tcpdump__LINKTYPE_PKTAP.pcap": (258, {SKIP_PROTOCOL: 1}),  # one DNS query over UDP
    "tcpdump__ipoib.pcap": (242, {"tcp": 20, "icmp1 request": 6, SKIP_NOT_IP: 4}),  # 4 ARP
    "zeek__http-connect-with-header.pcap": (0, {"tcp": 58}),
    # 22 plain and 14 VLAN-tagged frames with timestamps; 11 MPLS frames without.
    "zeek__mixed-vlan-mpls.pcap": (1, {"tcp": 36, SKIP_NO_TIMESTAMP: 11}),
    "suricata__pppoe-session-http.pcap": (1, {"tcp": 30}),
    "zeek__pppoe-over-qinq.pcap": (1, {"tcp": 1, SKIP_NO_TIMESTAMP: 85}),
    "zeek__vlan-qinqinq.pcap": (1, {SKIP_VLAN: 14}),  # three 802.1Q tags each
    "zeek__icmp6-ping.pcap": (1, {"icmp58 request": 4, "icmp58 reply": 4}),
    "suricata__icmpv4-ping.pcap": (1, {"icmp1 request": 75, "icmp1 reply": 75}),
    "zeek__timeout-with-pings.pcap": (
        228,
        {"icmp1 request": 6, "icmp1 reply": 6, SKIP_NO_TIMESTAMP: 3},
    ),
    # QUIC over UDP and 4 ICMPv6 neighbour solicitations.
    "zeek__quic-go-zerortt-ppp.pcap": (9, {SKIP_PROTOCOL: 100, SKIP_NOT_ECHO: 4}),
}


def test_captures_are_present_and_cited() -> None:
    provenance = (PCAPS / "PROVENANCE.md").read_text()
    for name in CAPTURES:
        assert (PCAPS / name).is_file(), name
        assert f"`{name}`" in provenance, name


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_capture_outcomes(name: str) -> None:
    expected_linktype, expected = CAPTURES[name]
    linktype, results = summarize(name)
    assert linktype == expected_linktype
    assert Counter(outcome(result) for result in results) == Counter(expected)


def test_capture_fields_nflog() -> None:
    _, results = summarize("arkime__nflog.pcap")
    first, second = results[0], results[1]
    assert isinstance(first, PacketInfo) and isinstance(second, PacketInfo)
    assert (first.saddr, first.sport, first.daddr, first.dport) == (
        mapped("10.10.10.10"),
        54064,
        mapped("52.43.228.156"),
        80,
    )
    assert (first.pid, first.event_reason, first.pkt_len) == (2703922305, EventReason.SYN, 108)
    assert (second.pid, second.reply_pid, second.event_reason) == (
        541750326,
        2703922305,
        EventReason.SYN_ACK,
    )


def test_capture_fields_sll2_and_sll() -> None:
    _, results = summarize("suricata__decode-sll2-01.pcap")
    assert [(r.pid, r.reply_pid) for r in results[:3] if isinstance(r, PacketInfo)] == [
        (3317596243, 0),
        (311646155, 3317596243),
        (3317596245, 311646155),
    ]
    _, results = summarize("tcpdump__tcp-handshake-nano.pcap")
    assert [(r.sport, r.pid, r.reply_pid) for r in results if isinstance(r, PacketInfo)] == [
        (46656, 1131021154, 0),
        (80, 234205008, 1131021154),
        (46656, 1131021186, 234205008),
    ]


def test_capture_fields_null_loopback_ipv6() -> None:
    _, results = summarize("zeek__http-connect-with-header.pcap")
    infos = [r for r in results if isinstance(r, PacketInfo)]
    loopback = ipaddress.IPv6Address("::1").packed
    assert all(r.saddr == loopback == r.daddr for r in infos)
    assert (infos[0].sport, infos[0].dport, infos[0].pid) == (52522, 80, 1236829829)
    assert sum(r.event_type is FlowEventType.OPENING for r in infos) == 2
    assert sum(r.payload > 0 for r in infos) == 27


def test_capture_fields_pppoe() -> None:
    _, results = summarize("suricata__pppoe-session-http.pcap")
    first = results[0]
    assert isinstance(first, PacketInfo)
    assert (first.saddr, first.sport, first.daddr, first.pid) == (
        mapped("10.100.0.0"),
        57013,
        mapped("142.250.179.131"),
        3417215587,
    )


def test_capture_fields_mpls_and_vlan() -> None:
    _, results = summarize("zeek__mixed-vlan-mpls.pcap")
    # Frames 1-11 are MPLS (label 29): parsed down to TCP, which has no timestamps.
    assert results[:11] == [SKIP_NO_TIMESTAMP] * 11
    tagged = results[33]  # frame 34, VLAN 4093
    assert isinstance(tagged, PacketInfo)
    assert (tagged.pid, tagged.reply_pid, tagged.payload) == (2995515157, 0, 0)


def test_capture_fields_icmp() -> None:
    _, results = summarize("suricata__icmpv4-ping.pcap")
    request, reply = results[0], results[1]
    assert isinstance(request, PacketInfo) and isinstance(reply, PacketInfo)
    assert (request.saddr, request.sport, request.pid, request.payload) == (
        mapped("192.168.1.6"),
        52805,
        1,
        56,
    )
    assert (reply.saddr, reply.dport, reply.reply_pid, reply.pkt_len) == (
        mapped("192.168.1.13"),
        52805,
        1,
        98,
    )
    _, results = summarize("zeek__icmp6-ping.pcap")
    request6 = results[0]
    assert isinstance(request6, PacketInfo)
    assert (request6.sport, request6.pid, request6.payload) == (1, 3, 32)
    assert request6.saddr == ipaddress.IPv6Address("2620:0:e00:400e:d1d:db37:beb:5aac").packed
    _, results = summarize("tcpdump__e1000g-ipnet.pcap")
    ipnet_request = results[2]
    assert isinstance(ipnet_request, PacketInfo)
    assert (ipnet_request.sport, ipnet_request.pid, ipnet_request.payload) == (6901, 1, 56)
    _, results = summarize("tcpdump__ipoib.pcap")
    ipoib_request = results[1]
    assert isinstance(ipoib_request, PacketInfo)
    assert (ipoib_request.saddr, ipoib_request.sport, ipoib_request.pid) == (
        mapped("192.168.56.10"),
        6495,
        1,
    )
