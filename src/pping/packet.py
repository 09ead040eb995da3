"""Bytes to parsed packet: pure, bounded, never raising on bad bytes.

`parse_packet(linktype, data, wire_len)` returns either a `PacketInfo` or a `Skip`
reason (a short string, counted by the caller). It knows nothing of configuration:
which protocols are tracked and whether SYNs are timestamped is the engine's business.

Contract (the kernel program follows the same rules, see docs/algorithm.md):
- Link layers: see LINKTYPES. Ethernet with at most MAX_VLAN_TAGS 802.1Q/802.1ad tags.
- IPv4: version 4, IHL >= 5 and within the packet; only unfragmented packets or first
  fragments (offset 0) whose transport header is whole. Other fragments: Skip.
- IPv6: at most MAX_IPV6_EXT_HEADERS extension headers (hop-by-hop, routing,
  destination options, fragment with offset 0); otherwise Skip.
- TCP: the options are walked at most MAX_TCP_OPTION_STEPS steps; a packet without a
  well-formed timestamp option (kind 8, length 10) is skipped.
- ICMP/ICMPv6: echo request (pid = sequence) and echo reply (reply_pid = sequence),
  code 0; the echo identifier is both ports. Anything else: Skip.
- `payload` is the transport payload length from the IP length fields (not from the
  captured length, so snap-length cuts and Ethernet padding do not change it);
  `pkt_len` is the packet's length on the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from struct import Struct
from typing import NamedTuple

from .events import EventReason, FlowEventType

MAX_VLAN_TAGS = 2
MAX_IPV6_EXT_HEADERS = 3
MAX_TCP_OPTION_STEPS = 40
MAX_MPLS_LABELS = 4
MAX_NFLOG_TLVS = 64

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10


class PacketInfo(NamedTuple):
    """What the RTT algorithm needs from one packet.

    The packet's own direction is (proto, saddr, sport, daddr, dport); addresses are 16
    bytes with IPv4 as IPv4-mapped IPv6. `pid` is the identifier this packet could be
    timestamped with (TCP TSval, ICMP echo request sequence) and `reply_pid` the one it
    could match (TCP TSecr, echo reply sequence); each comes with a validity flag.
    """

    proto: int
    saddr: bytes
    sport: int
    daddr: bytes
    dport: int
    pid: int
    pid_valid: bool
    reply_pid: int
    reply_pid_valid: bool
    event_type: FlowEventType
    event_reason: EventReason
    wait_first_edge: bool
    tcp_flags: int
    payload: int
    pkt_len: int


Skip = str

# Skip reasons. "truncated" always means that a header (or the part of it that was
# needed) lies beyond the captured bytes; the "bad ..." reasons mean that the captured
# bytes are there but contradict themselves.
SKIP_TRUNCATED = "truncated"
SKIP_LINKTYPE = "unsupported link type"
SKIP_BAD_LINK = "bad link-layer header"
SKIP_NOT_IP = "not IP"
SKIP_VLAN = "too many VLAN tags"
SKIP_MPLS = "too many MPLS labels"
SKIP_BAD_IPV4 = "bad IPv4 header"
SKIP_BAD_IPV6 = "bad IPv6 header"
SKIP_FRAGMENT = "IP fragment"
SKIP_IPV6_EXT = "IPv6 extension headers"
SKIP_PROTOCOL = "unsupported protocol"
SKIP_BAD_TCP = "bad TCP header"
SKIP_NO_TIMESTAMP = "no TCP timestamp"
SKIP_NOT_ECHO = "not ICMP echo"
SKIP_BAD_ICMP = "bad ICMP header"

SKIP_REASONS: tuple[str, ...] = (
    SKIP_TRUNCATED,
    SKIP_LINKTYPE,
    SKIP_BAD_LINK,
    SKIP_NOT_IP,
    SKIP_VLAN,
    SKIP_MPLS,
    SKIP_BAD_IPV4,
    SKIP_BAD_IPV6,
    SKIP_FRAGMENT,
    SKIP_IPV6_EXT,
    SKIP_PROTOCOL,
    SKIP_BAD_TCP,
    SKIP_NO_TIMESTAMP,
    SKIP_NOT_ECHO,
    SKIP_BAD_ICMP,
)

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_PPP = 9
LINKTYPE_RAW_12 = 12
LINKTYPE_RAW_14 = 14
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPNET = 226
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_NFLOG = 239
LINKTYPE_IPOIB = 242
LINKTYPE_PKTAP = 258
LINKTYPE_LINUX_SLL2 = 276

LINKTYPES: dict[int, str] = {
    LINKTYPE_NULL: "BSD loopback (DLT_NULL)",
    LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_PPP: "PPP",
    LINKTYPE_RAW_12: "raw IP (DLT_RAW 12)",
    LINKTYPE_RAW_14: "raw IP (DLT_RAW 14)",
    LINKTYPE_RAW: "raw IP",
    LINKTYPE_LOOP: "OpenBSD loopback (DLT_LOOP)",
    LINKTYPE_LINUX_SLL: "Linux cooked (SLL)",
    LINKTYPE_IPNET: "Solaris IPNET",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_NFLOG: "Linux NFLOG",
    LINKTYPE_IPOIB: "IP over InfiniBand",
    LINKTYPE_PKTAP: "Apple PKTAP",
    LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)",
}

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_P_QINQ_9100 = 0x9100
ETH_P_MPLS_UC = 0x8847
ETH_P_PPP_SES = 0x8864
PPP_IP = 0x0021
PPP_IPV6 = 0x0057

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_ICMPV6 = 58

_IPV6_EXT_HOPOPTS = 0
_IPV6_EXT_ROUTING = 43
_IPV6_EXT_FRAGMENT = 44
_IPV6_EXT_DSTOPTS = 60

_IPV6_EXT_HEADERS = frozenset(
    (_IPV6_EXT_HOPOPTS, _IPV6_EXT_ROUTING, _IPV6_EXT_FRAGMENT, _IPV6_EXT_DSTOPTS)
)
_VLAN_TPIDS = frozenset((ETH_P_8021Q, ETH_P_8021AD, ETH_P_QINQ_9100))

_NFLOG_PAYLOAD = 9
_IPNET_AF_INET = 2
_IPNET_AF_INET6 = 26
_NULL_AF_INET = 2
_NULL_AF_INET6 = frozenset((10, 24, 28, 30))  # Linux, NetBSD/OpenBSD, FreeBSD, macOS
# DLT values a PKTAP header may announce for its inner packet.
_PKTAP_INNER = frozenset(
    (
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW_12,
        LINKTYPE_RAW_14,
        LINKTYPE_RAW,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
    )
)
_IPOIB_HEADER = 44  # 40-byte pseudo-header (addresses), then ethertype and 2 reserved

_V4_MAPPED = b"\0" * 10 + b"\xff\xff"

# Precompiled layouts (network byte order unless noted).
_U16 = Struct("!H")
_U32 = Struct("!I")
_U32_LE = Struct("<I")
_TLV_LE = Struct("<HH")
_PKTAP = Struct("<II")
# IPv4: version/IHL, total length, flags/fragment offset, protocol, source, destination.
_IPV4 = Struct("!BxH2xHxB2x4s4s")
# IPv6: version/class/flow, payload length, next header, source, destination.
_IPV6 = Struct("!IHBx16s16s")
# TCP: ports, data offset byte, flags byte.
_TCP = Struct("!HH8xBB")
# TCP with the 12 option bytes of the usual NOP, NOP, timestamp layout.
_TCP_TS = Struct("!HH8xBB6xIII")
_TSOPT = Struct("!II")
# ICMP echo: type, code, identifier, sequence.
_ICMP = Struct("!BB2xHH")

_NOP_NOP_TS = 0x0101080A
# The common cases in one read: Ethernet, IPv4 without options (66 bytes) or IPv6 without
# extension headers (86 bytes), TCP whose options start with NOP, NOP, timestamp.
_ETH_IPV4_TCP_TS = Struct("!12xH" + _IPV4.format[1:] + _TCP_TS.format[1:])
_ETH_IPV6_TCP_TS = Struct("!12xH" + _IPV6.format[1:] + _TCP_TS.format[1:])

_FLOW_NONE = FlowEventType.NONE
_FLOW_OPENING = FlowEventType.OPENING
_FLOW_CLOSING = FlowEventType.CLOSING
_FLOW_CLOSING_BOTH = FlowEventType.CLOSING_BOTH
_REASON_NONE = EventReason.NONE
_REASON_SYN = EventReason.SYN
_REASON_SYN_ACK = EventReason.SYN_ACK
_REASON_FIN = EventReason.FIN
_REASON_RST = EventReason.RST


def _tcp_flag_effects(flags: int) -> tuple[FlowEventType, EventReason, bool, bool, bool]:
    """(event type, event reason, wait_first_edge, SYN or FIN, ACK) for a flags byte."""
    if flags & TCP_RST:
        event, reason = _FLOW_CLOSING_BOTH, _REASON_RST
    elif flags & TCP_FIN:
        event, reason = _FLOW_CLOSING, _REASON_FIN
    elif flags & TCP_SYN:
        event = _FLOW_OPENING
        reason = _REASON_SYN_ACK if flags & TCP_ACK else _REASON_SYN
    else:
        event, reason = _FLOW_NONE, _REASON_NONE
    return (
        event,
        reason,
        not flags & TCP_SYN,
        flags & (TCP_SYN | TCP_FIN) != 0,
        flags & TCP_ACK != 0,
    )


# Indexed by the TCP flags byte, so that the per-packet work is one lookup.
_TCP_FLAG_EFFECTS = tuple(_tcp_flag_effects(flags) for flags in range(256))

_new_tuple = tuple.__new__

_Bytes = bytes | memoryview
# Every parser below reads data[off:end] and never looks at or past `end`, which is at
# most len(data); offsets only grow, so each one is bounded by the packet's length.
_Parser = Callable[[_Bytes, int, int, int], "PacketInfo | Skip"]


def _tcp(
    data: _Bytes, off: int, end: int, l4len: int, saddr: bytes, daddr: bytes, wire_len: int
) -> PacketInfo | Skip:
    if end - off >= 32:
        sport, dport, doff, flags, word, tsval, tsecr = _TCP_TS.unpack_from(data, off)
        hlen = (doff >> 4) << 2
        if hlen < 20:
            return SKIP_BAD_TCP
        if word != _NOP_NOP_TS or hlen < 32:
            found = _find_timestamp(data, off, end, hlen)
            if isinstance(found, str):
                return found
            tsval, tsecr = found
    else:
        if end - off < 20:
            return SKIP_TRUNCATED
        sport, dport, doff, flags = _TCP.unpack_from(data, off)
        hlen = (doff >> 4) << 2
        if hlen < 20:
            return SKIP_BAD_TCP
        found = _find_timestamp(data, off, end, hlen)
        if isinstance(found, str):
            return found
        tsval, tsecr = found
    return _tcp_info(saddr, sport, daddr, dport, tsval, tsecr, flags, l4len - hlen, wire_len)


def _tcp_info(
    saddr: bytes,
    sport: int,
    daddr: bytes,
    dport: int,
    tsval: int,
    tsecr: int,
    flags: int,
    payload: int,
    wire_len: int,
) -> PacketInfo:
    """The PacketInfo of a TCP segment with a timestamp; `payload` may be negative."""
    if payload < 0:
        payload = 0
    event, reason, wait_first_edge, syn_or_fin, ack = _TCP_FLAG_EFFECTS[flags]
    return _new_tuple(
        PacketInfo,
        (
            IPPROTO_TCP,
            saddr,
            sport,
            daddr,
            dport,
            tsval,
            payload > 0 or syn_or_fin,
            tsecr,
            ack,
            event,
            reason,
            wait_first_edge,
            flags,
            payload,
            wire_len,
        ),
    )


def _find_timestamp(data: _Bytes, off: int, end: int, hlen: int) -> tuple[int, int] | Skip:
    """Walk the TCP options for the timestamp option: (TSval, TSecr) or a Skip.

    The options are the bytes from off+20 to off+hlen, cut at `end` (the capture).
    Running out of option bytes is "truncated" only when the capture, not the data
    offset, ended them.
    """
    i = off + 20
    stop = off + hlen
    short = SKIP_NO_TIMESTAMP
    if stop > end:
        stop = end
        short = SKIP_TRUNCATED
    for _ in range(MAX_TCP_OPTION_STEPS):
        if i >= stop:
            return short
        kind = data[i]
        if kind == 1:  # NOP
            i += 1
            continue
        if kind == 0:  # end of options
            return SKIP_NO_TIMESTAMP
        if i + 1 >= stop:
            return short
        length = data[i + 1]
        if kind == 8 and length == 10:
            if i + 10 > stop:
                return short
            tsval, tsecr = _TSOPT.unpack_from(data, i + 2)
            return tsval, tsecr
        if length < 2:
            return SKIP_NO_TIMESTAMP
        i += length
    return SKIP_NO_TIMESTAMP


def _icmp(
    data: _Bytes,
    off: int,
    end: int,
    l4len: int,
    saddr: bytes,
    daddr: bytes,
    wire_len: int,
    proto: int,
    request: int,
    reply: int,
) -> PacketInfo | Skip:
    if end - off < 8:
        return SKIP_TRUNCATED
    icmp_type, code, ident, seq = _ICMP.unpack_from(data, off)
    if icmp_type == request:
        is_request = True
    elif icmp_type == reply:
        is_request = False
    else:
        return SKIP_NOT_ECHO
    if code != 0:
        return SKIP_BAD_ICMP
    payload = l4len - 8
    if payload < 0:
        payload = 0
    return _new_tuple(
        PacketInfo,
        (
            proto,
            saddr,
            ident,
            daddr,
            ident,
            seq if is_request else 0,
            is_request,
            0 if is_request else seq,
            not is_request,
            _FLOW_NONE,
            _REASON_NONE,
            False,
            0,
            payload,
            wire_len,
        ),
    )


def _ipv4(data: _Bytes, off: int, end: int, wire_len: int) -> PacketInfo | Skip:
    if end - off < 20:
        return SKIP_TRUNCATED
    vihl, total, frag, proto, src, dst = _IPV4.unpack_from(data, off)
    ihl = (vihl & 0x0F) << 2
    if vihl >> 4 != 4 or ihl < 20 or total < ihl:
        return SKIP_BAD_IPV4
    if frag & 0x1FFF:
        return SKIP_FRAGMENT
    l4 = off + ihl
    if l4 > end:
        return SKIP_TRUNCATED
    if proto == IPPROTO_TCP:
        return _tcp(data, l4, end, total - ihl, _V4_MAPPED + src, _V4_MAPPED + dst, wire_len)
    if proto == IPPROTO_ICMP:
        return _icmp(
            data,
            l4,
            end,
            total - ihl,
            _V4_MAPPED + src,
            _V4_MAPPED + dst,
            wire_len,
            IPPROTO_ICMP,
            8,
            0,
        )
    return SKIP_PROTOCOL


def _ipv6(data: _Bytes, off: int, end: int, wire_len: int) -> PacketInfo | Skip:
    if end - off < 40:
        return SKIP_TRUNCATED
    vcf, plen, nxt, src, dst = _IPV6.unpack_from(data, off)
    if vcf >> 28 != 6 or plen == 0:
        return SKIP_BAD_IPV6
    l4 = off + 40
    if nxt == IPPROTO_TCP:
        return _tcp(data, l4, end, plen, src, dst, wire_len)
    ext = 0
    while nxt in _IPV6_EXT_HEADERS:
        if ext == MAX_IPV6_EXT_HEADERS:
            return SKIP_IPV6_EXT
        if end - l4 < 8:
            return SKIP_TRUNCATED
        if nxt == _IPV6_EXT_FRAGMENT:
            if _U16.unpack_from(data, l4 + 2)[0] & 0xFFF8:
                return SKIP_FRAGMENT
            size = 8
        else:
            size = (data[l4 + 1] + 1) << 3
        nxt = data[l4]
        l4 += size
        ext += 1
    l4len = plen - (l4 - off - 40)
    if nxt == IPPROTO_TCP:
        return _tcp(data, l4, end, l4len, src, dst, wire_len)
    if nxt == IPPROTO_ICMPV6:
        return _icmp(data, l4, end, l4len, src, dst, wire_len, IPPROTO_ICMPV6, 128, 129)
    return SKIP_PROTOCOL


def _ip_by_version(data: _Bytes, off: int, end: int, wire_len: int) -> PacketInfo | Skip:
    if off >= end:
        return SKIP_TRUNCATED
    version = data[off] >> 4
    if version == 4:
        return _ipv4(data, off, end, wire_len)
    if version == 6:
        return _ipv6(data, off, end, wire_len)
    return SKIP_NOT_IP


def _by_ethertype(
    data: _Bytes, off: int, end: int, ethertype: int, wire_len: int
) -> PacketInfo | Skip:
    """Dispatch on an Ethernet type at data[off:], after up to MAX_VLAN_TAGS tags."""
    tags = 0
    while ethertype in _VLAN_TPIDS:
        if tags == MAX_VLAN_TAGS:
            return SKIP_VLAN
        if end - off < 4:
            return SKIP_TRUNCATED
        ethertype = _U16.unpack_from(data, off + 2)[0]
        off += 4
        tags += 1
    if ethertype == ETH_P_IP:
        return _ipv4(data, off, end, wire_len)
    if ethertype == ETH_P_IPV6:
        return _ipv6(data, off, end, wire_len)
    if ethertype == ETH_P_MPLS_UC:
        for _ in range(MAX_MPLS_LABELS):
            if end - off < 4:
                return SKIP_TRUNCATED
            bottom = data[off + 2] & 1
            off += 4
            if bottom:
                return _ip_by_version(data, off, end, wire_len)
        return SKIP_MPLS
    if ethertype == ETH_P_PPP_SES:
        # PPPoE session header: version/type 0x11, code 0, session id, length; then PPP.
        if end - off < 6:
            return SKIP_TRUNCATED
        if data[off] != 0x11 or data[off + 1] != 0:
            return SKIP_NOT_IP
        return _ppp_payload(data, off + 6, end, wire_len)
    return SKIP_NOT_IP


def _ppp_payload(data: _Bytes, off: int, end: int, wire_len: int) -> PacketInfo | Skip:
    """Dispatch on the PPP protocol field at data[off:] (two bytes, or one if compressed)."""
    if off >= end:
        return SKIP_TRUNCATED
    protocol = data[off]
    if protocol & 1:
        # Protocol-field compression (RFC 1661): an odd first byte is the whole number.
        off += 1
    else:
        if end - off < 2:
            return SKIP_TRUNCATED
        protocol = (protocol << 8) | data[off + 1]
        off += 2
    if protocol == PPP_IP:
        return _ipv4(data, off, end, wire_len)
    if protocol == PPP_IPV6:
        return _ipv6(data, off, end, wire_len)
    return SKIP_NOT_IP


def _ethernet(data: _Bytes, off: int, end: int, wire_len: int) -> PacketInfo | Skip:
    if end - off < 14:
        return SKIP_TRUNCATED
    ethertype = _U16.unpack_from(data, off + 12)[0]
    if ethertype == ETH_P_IP:
        return _ipv4(data, off + 14, end, wire_len)
    return _by_ethertype(data, off + 14, end, ethertype, wire_len)


def _null(data: _Bytes, off: int, end: int, wire_len: int) -> PacketInfo | Skip:
    # The family is in the writer's byte order: a value that only fits when read the
    # other way round was written big-endian.
    if end - off < 4:
        return SKIP_TRUNCATED
    family = _U32_LE.unpack_from(data, off)[0]
    if family > 0xFFFF:
        family = _U32.unpack_from(data, off)[0]
    return _by_family(data, off + 4, end, family, wire_len)


def _loop(data: _Bytes, off: int, end: int, wire_len: int) -> PacketInfo | Skip:
    if end - off < 4:
        return SKIP_TRUNCATED
    return _by_family(data, off + 4, end, _U32.unpack_from(data, off)[0], wire_len)


def _by_family(data: _Bytes, off: int, end: int, family: int, wire_len: int) -> PacketInfo | Skip:
    if family == _NULL_AF_INET:
        return _ipv4(data, off, end, wire_len)
    if family in _NULL_AF_INET6:
        return _ipv6(data, off, end, wire_len)
    return SKIP_NOT_IP


def _sll(data: _Bytes, off: int, end: int, wire_len: int) -> PacketInfo | Skip:
    if end - off < 16:
        return SKIP_TRUNCATED
    return _by_ethertype(data, off + 16, end, _U16.unpack_from(data, off + 14)[0], wire_len)


def _sll2(data: _Bytes, off: int, end: int, wire_len: int) -> PacketInfo | Skip:
    if end - off < 20:
        return SKIP_TRUNCATED
    return _by_ethertype(data, off + 20, end, _U16.unpack_from(data, off)[0], wire_len)


def _ipoib(data: _Bytes, off: int, end: int, wire_len: int) -> PacketInfo | Skip:
    if end - off < _IPOIB_HEADER:
        return SKIP_TRUNCATED
    ethertype = _U16.unpack_from(data, off + _IPOIB_HEADER - 4)[0]
    return _by_ethertype(data, off + _IPOIB_HEADER, end, ethertype, wire_len)


def _ipnet(data: _Bytes, off: int, end: int, wire_len: int) -> PacketInfo | Skip:
    if end - off < 24:
        return SKIP_TRUNCATED
    family = data[off + 1]
    if family == _IPNET_AF_INET:
        return _ipv4(data, off + 24, end, wire_len)
    if family == _IPNET_AF_INET6:
        return _ipv6(data, off + 24, end, wire_len)
    return SKIP_NOT_IP


def _ppp(data: _Bytes, off: int, end: int, wire_len: int) -> PacketInfo | Skip:
    # The HDLC-like address and control bytes (0xff 0x03) may or may not be there.
    if end - off >= 2 and data[off] == 0xFF and data[off + 1] == 0x03:
        off += 2
    return _ppp_payload(data, off, end, wire_len)


def _nflog(data: _Bytes, off: int, end: int, wire_len: int) -> PacketInfo | Skip:
    # 4-byte header (family, version, resource id), then TLVs whose 16-bit length and
    # type are little-endian; the length counts the TLV header, TLVs are 4-byte aligned.
    if end - off < 4:
        return SKIP_TRUNCATED
    family = data[off]
    if family == 2:
        parse_ip: _Parser = _ipv4
    elif family == 10:
        parse_ip = _ipv6
    else:
        return SKIP_NOT_IP
    off += 4
    for _ in range(MAX_NFLOG_TLVS):
        if end - off < 4:
            return SKIP_TRUNCATED
        length, tlv_type = _TLV_LE.unpack_from(data, off)
        if length < 4:
            return SKIP_BAD_LINK
        if tlv_type == _NFLOG_PAYLOAD:
            stop = off + length
            return parse_ip(data, off + 4, stop if stop < end else end, wire_len)
        off += (length + 3) & ~3
    return SKIP_BAD_LINK


def _pktap(data: _Bytes, off: int, end: int, wire_len: int) -> PacketInfo | Skip:
    # Little-endian header length and inner DLT; the inner packet follows the header.
    if end - off < 8:
        return SKIP_TRUNCATED
    length, inner = _PKTAP.unpack_from(data, off)
    if length < 8:
        return SKIP_BAD_LINK
    if inner not in _PKTAP_INNER:
        return SKIP_LINKTYPE
    if end - off < length:
        return SKIP_TRUNCATED
    return _LINK_PARSERS[inner](data, off + length, end, wire_len)


def _raw(data: _Bytes, off: int, end: int, wire_len: int) -> PacketInfo | Skip:
    return _ip_by_version(data, off, end, wire_len)


_LINK_PARSERS: dict[int, _Parser] = {
    LINKTYPE_NULL: _null,
    LINKTYPE_ETHERNET: _ethernet,
    LINKTYPE_PPP: _ppp,
    LINKTYPE_RAW_12: _raw,
    LINKTYPE_RAW_14: _raw,
    LINKTYPE_RAW: _raw,
    LINKTYPE_LOOP: _loop,
    LINKTYPE_LINUX_SLL: _sll,
    LINKTYPE_IPNET: _ipnet,
    LINKTYPE_IPV4: _ipv4,
    LINKTYPE_IPV6: _ipv6,
    LINKTYPE_NFLOG: _nflog,
    LINKTYPE_IPOIB: _ipoib,
    LINKTYPE_PKTAP: _pktap,
    LINKTYPE_LINUX_SLL2: _sll2,
}


def parse_packet(linktype: int, data: bytes | memoryview, wire_len: int) -> PacketInfo | Skip:
    """Parse one captured packet; never raises on any bytes.

    `linktype` is the capture's LINKTYPE_ value, `data` the captured bytes and
    `wire_len` the packet's length on the wire (becomes `pkt_len`). Returns a
    `PacketInfo`, or one of SKIP_REASONS.
    """
    end = len(data)
    if linktype == LINKTYPE_ETHERNET:
        # Fast paths: untagged Ethernet, IPv4 without options or IPv6 without extension
        # headers, TCP whose options start with NOP, NOP, timestamp. A packet they decline
        # takes the general path, which gives the same answer for those they accept.
        if end >= 66:
            (
                ethertype,
                vihl,
                total,
                frag,
                proto,
                src,
                dst,
                sport,
                dport,
                doff,
                flags,
                word,
                tsval,
                tsecr,
            ) = _ETH_IPV4_TCP_TS.unpack_from(data)
            if (
                ethertype == ETH_P_IP
                and vihl == 0x45
                and proto == IPPROTO_TCP
                and word == _NOP_NOP_TS
                and doff >= 0x80
                and total >= 20
                and not frag & 0x1FFF
            ):
                # _tcp_info inlined: this is the hottest path.
                payload = total - 20 - ((doff >> 4) << 2)
                if payload < 0:
                    payload = 0
                event, reason, wait_first_edge, syn_or_fin, ack = _TCP_FLAG_EFFECTS[flags]
                return _new_tuple(
                    PacketInfo,
                    (
                        IPPROTO_TCP,
                        _V4_MAPPED + src,
                        sport,
                        _V4_MAPPED + dst,
                        dport,
                        tsval,
                        payload > 0 or syn_or_fin,
                        tsecr,
                        ack,
                        event,
                        reason,
                        wait_first_edge,
                        flags,
                        payload,
                        wire_len,
                    ),
                )
            if ethertype == ETH_P_IPV6 and end >= 86:
                (
                    _,
                    vcf,
                    plen,
                    nxt,
                    src,
                    dst,
                    sport,
                    dport,
                    doff,
                    flags,
                    word,
                    tsval,
                    tsecr,
                ) = _ETH_IPV6_TCP_TS.unpack_from(data)
                if (
                    nxt == IPPROTO_TCP
                    and word == _NOP_NOP_TS
                    and doff >= 0x80
                    and vcf >> 28 == 6
                    and plen != 0
                ):
                    return _tcp_info(
                        src,
                        sport,
                        dst,
                        dport,
                        tsval,
                        tsecr,
                        flags,
                        plen - ((doff >> 4) << 2),
                        wire_len,
                    )
        elif end < 14:
            return SKIP_TRUNCATED
        if data[12] == 0x08 and data[13] == 0x00:
            return _ipv4(data, 14, end, wire_len)
        return _by_ethertype(data, 14, end, (data[12] << 8) | data[13], wire_len)
    parser = _LINK_PARSERS.get(linktype)
    if parser is None:
        return SKIP_LINKTYPE
    return parser(data, 0, end, wire_len)
