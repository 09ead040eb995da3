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

from typing import NamedTuple

from .events import EventReason, FlowEventType

MAX_VLAN_TAGS = 2
MAX_IPV6_EXT_HEADERS = 3
MAX_TCP_OPTION_STEPS = 40

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
