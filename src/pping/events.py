"""The event vocabulary shared by every source and every sink.

Sources (the Python engine replaying a capture, the kernel data path) produce these
events; sinks (output formats, aggregates, exporters) consume them and never learn
which source produced them. Times are integers in nanoseconds: wall clock since the
Unix epoch once they reach a sink.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58

PROTOCOL_NAMES = {IPPROTO_TCP: "TCP", IPPROTO_ICMP: "ICMP", IPPROTO_ICMPV6: "ICMPv6"}


class FlowEventType(enum.IntEnum):
    NONE = 0
    OPENING = 1
    CLOSING = 2
    CLOSING_BOTH = 3


class EventReason(enum.IntEnum):
    NONE = 0
    SYN = 1
    SYN_ACK = 2
    FIRST_OBSERVED_PACKET = 3
    FIN = 4
    RST = 5
    FLOW_TIMEOUT = 6


REASON_NAMES = {
    EventReason.NONE: "unknown",
    EventReason.SYN: "SYN",
    EventReason.SYN_ACK: "SYN-ACK",
    EventReason.FIRST_OBSERVED_PACKET: "first observed packet",
    EventReason.FIN: "FIN",
    EventReason.RST: "RST",
    EventReason.FLOW_TIMEOUT: "flow timeout",
}


class EventSource(enum.IntEnum):
    """Which packet, relative to the flow printed, caused a flow event."""

    PACKET_SOURCE = 0
    PACKET_DEST = 1
    GARBAGE_COLLECTION = 2


SOURCE_NAMES = {
    EventSource.PACKET_SOURCE: "src",
    EventSource.PACKET_DEST: "dest",
    EventSource.GARBAGE_COLLECTION: "garbage collection",
}


class Table(enum.IntEnum):
    """The bounded tables whose exhaustion is reported."""

    TIMESTAMPS = 0
    FLOWS = 1


_IPV4_MAPPED = bytes(10) + b"\xff\xff"


@lru_cache(maxsize=65536)
def format_address(raw: bytes) -> str:
    """Text form of a 16-byte address; IPv4-mapped addresses print as IPv4."""
    if raw[:12] == _IPV4_MAPPED and len(raw) == 16:
        # The common case, a few times faster than through ipaddress (same text).
        return f"{raw[12]}.{raw[13]}.{raw[14]}.{raw[15]}"
    address = ipaddress.IPv6Address(raw)
    mapped = address.ipv4_mapped
    return str(mapped) if mapped is not None else str(address)


@dataclass(frozen=True, slots=True)
class Flow:
    """One direction of a conversation. Addresses are 16 bytes, IPv4 as IPv4-mapped IPv6.

    For ICMP echo both ports hold the echo identifier.
    """

    proto: int
    saddr: bytes
    sport: int
    daddr: bytes
    dport: int

    @property
    def protocol_name(self) -> str:
        return PROTOCOL_NAMES.get(self.proto, str(self.proto))

    @property
    def src_ip(self) -> str:
        return format_address(self.saddr)

    @property
    def dest_ip(self) -> str:
        return format_address(self.daddr)

    def reversed(self) -> Flow:
        return Flow(self.proto, self.daddr, self.dport, self.saddr, self.sport)

    def __str__(self) -> str:
        return f"{_endpoint(self.saddr, self.sport)}+{_endpoint(self.daddr, self.dport)}"


def _endpoint(addr: bytes, port: int) -> str:
    text = format_address(addr)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


@dataclass(frozen=True, slots=True)
class RttEvent:
    """A round-trip time: the reply packet `flow` echoed an identifier sent the other way.

    `flow` is the reply's own direction, so its source is the host that answered. The
    counters belong to the timestamped direction (the reverse of `flow`).
    """

    timestamp: int
    flow: Flow
    rtt: int
    min_rtt: int
    sent_packets: int
    sent_bytes: int
    rec_packets: int
    rec_bytes: int
    match_on_egress: bool = False


@dataclass(frozen=True, slots=True)
class FlowEvent:
    """A flow direction opened (first reply seen) or closed (FIN, RST, timeout)."""

    timestamp: int
    flow: Flow
    event_type: FlowEventType
    reason: EventReason
    source: EventSource


@dataclass(frozen=True, slots=True)
class MapFullEvent:
    """A table refused an entry; the engine reports this at most once a second per table."""

    timestamp: int
    flow: Flow
    table: Table


class PressureChange(enum.IntEnum):
    """What the pressure controller changed (see pressure.py)."""

    SAMPLING_RAISED = 1  # the timestamp table is above the high-water mark
    SAMPLING_RELAXED = 2  # ... below the low-water mark: back towards the configured
    TIMEOUT_SHORTENED = 3  # the flow table is above the high-water mark
    TIMEOUT_RESTORED = 4  # ... below the low-water mark
    TIMESTAMPS_GROWN = 5  # the timestamp table is above the high-water mark, below its cap
    FLOWS_GROWN = 6  # the flow table is above the high-water mark, below its cap


@dataclass(frozen=True, slots=True)
class PressureEvent:
    """The controller changed the sampling interval or the idle timeout at a clean-up.

    `entries` of `capacity` is the occupancy of `table` that decided it; the other
    fields are the settings in force from now on: the sampling scale and the static
    interval it gives (the configured one times the scale), the divisor of the
    flow lifetimes with the longest lifetime it gives, and the capacity of `table`
    (`capacity` unless the table has just grown).
    """

    timestamp: int
    change: PressureChange
    table: Table
    entries: int
    capacity: int
    sampling_scale: int
    rate_limit_ns: int
    timeout_divisor: int
    flow_timeout_ns: int
    grown_to: int


@dataclass(frozen=True, slots=True)
class StatsEvent:
    """A statistics record (--stats-interval, and once at the end): counts since the
    start, the occupancy of both tables (of the capacities in force, which grow with
    --max-*-cap) and the settings in force. `final` marks the record written at the
    end."""

    timestamp: int
    final: bool
    packets: int
    timestamps_created: int
    timestamps_matched: int
    timestamps_expired: int
    timestamps_table_full: int
    timestamps_capped: int
    flows_created: int
    rtt_events: int
    timestamp_entries: int
    max_timestamps: int
    flow_entries: int
    max_flows: int
    sampling_scale: int
    rate_limit_ns: int
    timeout_divisor: int
    flow_timeout_ns: int


@dataclass(slots=True)
class Counters:
    """Totals kept by a data path and reported at the end (and on demand)."""

    packets: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    timestamps_created: int = 0
    timestamps_matched: int = 0
    timestamps_expired: int = 0
    timestamps_table_full: int = 0
    timestamps_capped: int = 0  # refused: the direction held --max-outstanding
    flows_created: int = 0
    flows_closed: int = 0
    flows_expired: int = 0
    flows_table_full: int = 0
    rtt_events: int = 0
    sampling_raised: int = 0
    sampling_relaxed: int = 0
    timeout_shortened: int = 0
    timeout_restored: int = 0
    timestamps_grown: int = 0
    flows_grown: int = 0

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count

    def as_dict(self) -> dict[str, object]:
        return {
            "packets": self.packets,
            "skipped": dict(sorted(self.skipped.items())),
            "timestamps_created": self.timestamps_created,
            "timestamps_matched": self.timestamps_matched,
            "timestamps_expired": self.timestamps_expired,
            "timestamps_table_full": self.timestamps_table_full,
            "timestamps_capped": self.timestamps_capped,
            "flows_created": self.flows_created,
            "flows_closed": self.flows_closed,
            "flows_expired": self.flows_expired,
            "flows_table_full": self.flows_table_full,
            "rtt_events": self.rtt_events,
            "sampling_raised": self.sampling_raised,
            "sampling_relaxed": self.sampling_relaxed,
            "timeout_shortened": self.timeout_shortened,
            "timeout_restored": self.timeout_restored,
            "timestamps_grown": self.timestamps_grown,
            "flows_grown": self.flows_grown,
        }


@dataclass(frozen=True, slots=True)
class TrafficCounts:
    """Packets and bytes (whole packets, as on the wire) of one direction of a prefix,
    by class: TCP with the timestamp option, TCP without it, anything else."""

    tcp_ts_packets: int = 0
    tcp_ts_bytes: int = 0
    tcp_nots_packets: int = 0
    tcp_nots_bytes: int = 0
    other_packets: int = 0
    other_bytes: int = 0

    @property
    def packets(self) -> int:
        return self.tcp_ts_packets + self.tcp_nots_packets + self.other_packets

    @property
    def bytes(self) -> int:
        return self.tcp_ts_bytes + self.tcp_nots_bytes + self.other_bytes


@dataclass(frozen=True, slots=True)
class AggregateHeader:
    """What the aggregate reports that follow mean: written once, first."""

    timestamp: int
    bins: int
    bin_width: int
    interval: int
    timeout: int
    ipv4_prefix_len: int
    ipv6_prefix_len: int


@dataclass(frozen=True, slots=True)
class AggregateEvent:
    """One prefix over one aggregation interval (docs/aggregation.md).

    `rx` counts packets whose source is in the prefix, `tx` those whose destination is.
    `histogram` holds the RTT bins up to the one of `rtt_max` (empty: no RTT), each
    `bin_width` ns wide, the last bin of the full histogram open-ended.
    """

    timestamp: int
    prefix: str
    rx: TrafficCounts
    tx: TrafficCounts
    rtt_min: int
    rtt_max: int
    histogram: tuple[int, ...]
    bin_width: int

    @property
    def rtt_count(self) -> int:
        return sum(self.histogram)

    def _midpoint(self, index: int) -> float:
        return self.bin_width / 2 + self.bin_width * index

    def rtt_mean(self) -> float:
        """The mean, taking every RTT at the middle of its bin."""
        total = sum(count * self._midpoint(i) for i, count in enumerate(self.histogram))
        return total / self.rtt_count

    def rtt_percentile(self, percent: float) -> float:
        """The percentile of the RTTs placed at their bins' middles, interpolated
        linearly between neighbouring RTTs (as numpy.percentile's default)."""
        bins = self.histogram
        n = sum(bins)
        position = percent / 100 * (n - 1)
        used = [i for i, count in enumerate(bins) if count]
        if position <= 0:
            return self._midpoint(used[0])
        if position >= n - 1:
            return self._midpoint(used[-1])
        seen = 0
        for i in used:
            seen += bins[i]
            if seen > position:
                break
        value = self._midpoint(i)
        if position > seen - 1:
            # Between the last RTT of this bin and the first of the next used bin.
            following = used[used.index(i) + 1]
            value += (position - (seen - 1)) * (following - i) * self.bin_width
        return value


Event = (
    RttEvent
    | FlowEvent
    | MapFullEvent
    | PressureEvent
    | StatsEvent
    | AggregateHeader
    | AggregateEvent
)
