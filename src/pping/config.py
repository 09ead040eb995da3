"""Options shared by both data paths: one source of truth for defaults and limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import OptionsError

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000

# Clean-up lifetimes (the specification in docs/algorithm.md, section "Clean-up").
TIMESTAMP_LIFETIME_NS = 10 * NS_PER_S
TIMESTAMP_RTT_LIFETIME = 8
# ... but never less than this: a delayed ACK may wait up to 200 ms (Linux's
# TCP_DELACK_MAX; 40 ms at least), however short the path.
TIMESTAMP_MIN_LIFETIME_NS = 200 * NS_PER_MS
# Under pressure, a timestamp of a direction without RTT waits at least this long: far
# above the round trips pping is for. (Mostly these are TSvals that a delayed ACK
# will never echo: they would hold their place for 10 s.)
TIMESTAMP_PRESSURE_LIFETIME_NS = NS_PER_S
FLOW_LIFETIME_NS = 300 * NS_PER_S
ICMP_FLOW_LIFETIME_NS = 30 * NS_PER_S
UNOPENED_FLOW_LIFETIME_NS = 30 * NS_PER_S
MAP_FULL_WARN_INTERVAL_NS = NS_PER_S

# The clean-up rules (docs/algorithm.md, "Clean-up"), shared by every data path. They
# are written with & and | so that they apply to Python ints and numpy arrays alike.


def timestamp_is_stale(age: Any, srtt: Any, divisor: int = 1) -> Any:
    """A timestamp `age` ns old, of a direction whose smoothed RTT is `srtt` (0 when
    unknown), is removed. `divisor` (the pressure controller's sampling scale, see
    pressure.py) shortens the 10 s a timestamp may wait when no RTT is known, down to
    TIMESTAMP_PRESSURE_LIFETIME_NS."""
    known = (srtt > 0) & (age > srtt * TIMESTAMP_RTT_LIFETIME) & (age > TIMESTAMP_MIN_LIFETIME_NS)
    return known | (age > timestamp_lifetime(divisor))


def timestamp_lifetime(divisor: int) -> int:
    """How long a timestamp waits for its reply when its direction has no RTT yet."""
    return max(TIMESTAMP_LIFETIME_NS // divisor, TIMESTAMP_PRESSURE_LIFETIME_NS)


def timestamp_safe_age(divisor: int = 1) -> int:
    """Up to this age no timestamp is stale, whatever its direction's RTT: the
    clean-up need not look its direction up."""
    return min(TIMESTAMP_MIN_LIFETIME_NS, timestamp_lifetime(divisor))


def direction_safe_age(divisor: int = 1) -> int:
    """Up to this age no direction is old, whatever its state and protocol."""
    return min(UNOPENED_FLOW_LIFETIME_NS, ICMP_FLOW_LIFETIME_NS, FLOW_LIFETIME_NS) // divisor


def direction_is_old(age: Any, waiting: Any, icmp: Any, divisor: int = 1) -> Any:
    """An active direction whose last timestamp is `age` ns old has timed out;
    `waiting`: still unopened (no reply yet); `icmp`: an ICMP echo flow. `divisor`
    shortens every lifetime (the pressure controller's idle-timeout divisor, see
    pressure.py); integer division keeps both data paths on the same integers."""
    return (
        (waiting & (age > UNOPENED_FLOW_LIFETIME_NS // divisor))
        | (icmp & (age > ICMP_FLOW_LIFETIME_NS // divisor))
        | (age > FLOW_LIFETIME_NS // divisor)
    )


DEFAULT_MAX_TIMESTAMPS = 131072
DEFAULT_MAX_FLOWS = 131072

# Pressure (docs/sampling.md, "Adapting to pressure"): occupancy marks in percent. A
# relaxed step doubles the demand, so the low mark stays below half the high one.
DEFAULT_HIGH_WATER = 90
DEFAULT_LOW_WATER = 40

# Fairness (docs/sampling.md, "Fairness"): without --max-outstanding a direction may
# hold 1/MAX_OUTSTANDING_SHARE of the timestamp table, and never fewer than
# MIN_OUTSTANDING_CAP entries (so tiny tables keep sampling every round trip).
MAX_OUTSTANDING_SHARE = 8
MIN_OUTSTANDING_CAP = 16


def default_max_outstanding(max_timestamps: int) -> int:
    """The per-direction cap on outstanding timestamps for a table of this size."""
    return max(MIN_OUTSTANDING_CAP, max_timestamps // MAX_OUTSTANDING_SHARE)


# Bursts (docs/sampling.md): the seed design's example is a few packets within 4 ms.
DEFAULT_BURST_WINDOW_NS = 4 * NS_PER_MS
# The kernel keeps the capacities in force in 32 bits (struct pping_sampling).
MAX_TABLE_ENTRIES = 0xFFFFFFFF
MAX_BURST_PACKETS = 255  # the kernel keeps the packets left in one byte


@dataclass(frozen=True, slots=True)
class Config:
    """What the RTT algorithm needs to know; the command line builds one of these."""

    rate_limit_ns: int = 100 * NS_PER_MS
    rtt_rate: float = 0.0
    use_srtt: bool = False
    cleanup_interval_ns: int = NS_PER_S
    track_tcp: bool = True
    track_icmp: bool = False
    include_syn: bool = False
    include_local: bool = False
    max_timestamps: int = DEFAULT_MAX_TIMESTAMPS
    max_flows: int = DEFAULT_MAX_FLOWS
    # Growing tables: the sizes above are where each table starts; at a clean-up that
    # finds one at or above the high-water mark it doubles, up to its cap. 0: no cap,
    # the table keeps its size.
    max_timestamps_cap: int = 0
    max_flows_cap: int = 0
    # None: default_max_outstanding(max_timestamps); 0: no cap.
    max_outstanding: int | None = None
    adaptive: bool = False
    high_water: int = DEFAULT_HIGH_WATER
    low_water: int = DEFAULT_LOW_WATER
    stats_interval_ns: int = 0  # 0: no periodic statistics records
    burst_packets: int = 0
    burst_window_ns: int = DEFAULT_BURST_WINDOW_NS

    def __post_init__(self) -> None:
        if self.rate_limit_ns < 0:
            raise OptionsError("--rate-limit must be zero or positive")
        if self.rtt_rate < 0:
            raise OptionsError("--rtt-rate must be zero or positive")
        if self.cleanup_interval_ns < 0:
            raise OptionsError("--cleanup-interval must be zero or positive")
        if not (self.track_tcp or self.track_icmp):
            raise OptionsError("nothing to track: enable --tcp and/or --icmp")
        if self.max_timestamps < 1 or self.max_flows < 1:
            raise OptionsError("table sizes must be at least 1")
        for cap, size, option in (
            (self.max_timestamps_cap, self.max_timestamps, "--max-timestamps"),
            (self.max_flows_cap, self.max_flows, "--max-flows"),
        ):
            if cap and cap < size:
                raise OptionsError(f"{option}-cap must be 0 or at least {option} ({size})")
            if cap > MAX_TABLE_ENTRIES:
                raise OptionsError(f"{option}-cap must be at most {MAX_TABLE_ENTRIES}")
        if self.grows and not self.cleanup_interval_ns:
            raise OptionsError("growing tables (--max-*-cap) need the clean-up (-c above 0)")
        if not 0 <= self.burst_packets <= MAX_BURST_PACKETS:
            raise OptionsError(f"--burst must be between 0 and {MAX_BURST_PACKETS}")
        if self.burst_window_ns < 1:
            raise OptionsError("--burst-window must be positive")
        if self.max_outstanding is not None and self.max_outstanding < 0:
            raise OptionsError("--max-outstanding must be zero or positive")
        if not 0 < self.low_water < self.high_water <= 100:
            raise OptionsError("water marks must satisfy 0 < --low-water < --high-water <= 100")
        if self.stats_interval_ns < 0:
            raise OptionsError("--stats-interval must be zero or positive")
        if self.stats_interval_ns and not self.cleanup_interval_ns:
            raise OptionsError("--stats-interval needs the clean-up (-c above 0)")
        if self.adaptive and not self.cleanup_interval_ns:
            raise OptionsError("--adaptive needs the clean-up (-c above 0)")

    @property
    def timestamps_limit(self) -> int:
        """The most entries the timestamp table may ever hold (its cap, or its size)."""
        return max(self.max_timestamps, self.max_timestamps_cap)

    @property
    def flows_limit(self) -> int:
        """The most entries the flow table may ever hold (its cap, or its size)."""
        return max(self.max_flows, self.max_flows_cap)

    @property
    def grows(self) -> bool:
        """Whether a table may grow past its starting size."""
        return self.timestamps_limit > self.max_timestamps or self.flows_limit > self.max_flows

    @property
    def outstanding_cap(self) -> int:
        """Outstanding timestamps one direction may hold (0: no cap)."""
        if self.max_outstanding is None:
            return default_max_outstanding(self.max_timestamps)
        return self.max_outstanding


# Aggregation (-a): docs/aggregation.md.
AGGREGATE_BINS = 250
AGGREGATE_BIN_WIDTH_NS = 4 * NS_PER_MS
DEFAULT_MAX_PREFIXES = 16384
MAX_AGGREGATE_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class AggregateConfig:
    """Per-prefix aggregation: report every `interval_ns` instead of every RTT."""

    interval_ns: int
    ipv4_prefix_len: int = 24
    ipv6_prefix_len: int = 48
    by_destination: bool = False  # --aggregate-reverse: key RTTs on the reply's destination
    timeout_ns: int = 30 * NS_PER_S
    max_prefixes: int = DEFAULT_MAX_PREFIXES

    def __post_init__(self) -> None:
        if not 0 < self.interval_ns <= MAX_AGGREGATE_SECONDS * NS_PER_S:
            raise OptionsError(f"--aggregate must be 1 to {MAX_AGGREGATE_SECONDS} seconds")
        if not 0 <= self.ipv4_prefix_len <= 32:
            raise OptionsError("-4 (IPv4 prefix length) must be 0 to 32")
        if not 0 <= self.ipv6_prefix_len <= 64:
            raise OptionsError("-6 (IPv6 prefix length) must be 0 to 64")
        if not 0 <= self.timeout_ns <= MAX_AGGREGATE_SECONDS * NS_PER_S:
            raise OptionsError(f"--aggregate-timeout must be 0 to {MAX_AGGREGATE_SECONDS} seconds")
        if self.max_prefixes < 2:
            raise OptionsError("--max-prefixes must be at least 2 (one slot is the backup entry)")
