"""The Python mirror of bpf/pping.h: ctypes structures, numpy dtypes, enum values.

Every structure here has the layout of its C namesake (tests/test_abi.py checks each
size, field name and offset against the BTF of the compiled object). The numpy dtypes
are derived from the ctypes structures, so the two views cannot disagree.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from ..packet import (
    SKIP_BAD_ICMP,
    SKIP_BAD_IPV4,
    SKIP_BAD_IPV6,
    SKIP_BAD_TCP,
    SKIP_FRAGMENT,
    SKIP_IPV6_EXT,
    SKIP_MPLS,
    SKIP_NO_TIMESTAMP,
    SKIP_NOT_ECHO,
    SKIP_NOT_IP,
    SKIP_PROTOCOL,
    SKIP_TRUNCATED,
    SKIP_VLAN,
)

U8 = ctypes.c_uint8
U16 = ctypes.c_uint16
U32 = ctypes.c_uint32
U64 = ctypes.c_uint64


class PpingConfig(ctypes.Structure):
    """struct pping_config (the `config` global in .rodata)."""

    _fields_ = [
        ("rate_limit", U64),
        ("rtt_rate", U64),
        ("use_rtt_rate", U8),
        ("use_srtt", U8),
        ("track_tcp", U8),
        ("track_icmp", U8),
        ("include_syn", U8),
        ("local_filter", U8),
        ("replay", U8),
        ("reserved", U8),
        ("burst_packets", U32),
        ("reserved2", U32),
        ("burst_window", U64),
        ("agg_ipv6_mask", U64),
        ("agg_ipv4_mask", U32),
        ("aggregate", U8),
        ("agg_by_dst", U8),
        ("grow_tables", U8),
        ("reserved3", U8),
        ("max_outstanding", U32),
        ("reserved4", U32),
    ]


class PpingSampling(ctypes.Structure):
    """struct pping_sampling (the `sampling` global in .data.sampling): the limits in
    force, the configured ones times the pressure controller's scale, and the table
    capacities it has grown to (read only with config.grow_tables)."""

    _fields_ = [
        ("rate_limit", U64),
        ("rtt_rate", U64),
        ("max_timestamps", U32),
        ("max_flows", U32),
    ]


class FlowKey(ctypes.Structure):
    """struct flow_key: one direction, or the canonical key of a flow entry."""

    _fields_ = [
        ("link", U32),
        ("proto", U8),
        ("reserved", U8 * 3),
        ("saddr", U8 * 16),
        ("daddr", U8 * 16),
        ("sport", U16),
        ("dport", U16),
    ]


class FlowState(ctypes.Structure):
    """struct flow_state: engine.FlowState."""

    _fields_ = [
        ("min_rtt", U64),
        ("srtt", U64),
        ("last_timestamp", U64),
        ("started", U64),
        ("sent_pkts", U64),
        ("sent_bytes", U64),
        ("rec_pkts", U64),
        ("rec_bytes", U64),
        ("previous_window", U64),
        ("last_id", U32),
        ("outstanding", U32),
        ("conn_state", U8),
        ("has_been_timestamped", U8),
        ("opening_reason", U8),
        ("burst_left", U8),
        ("window_reported", U8),
        ("previous_reported", U8),
        ("reserved", U8 * 2),
    ]


class DualFlow(ctypes.Structure):
    """struct dual_flow: engine.DualFlow plus its creation sequence number."""

    _fields_ = [
        ("dir", FlowState * 2),
        ("seq", U64),
        ("closed", U8),
        ("reserved", U8 * 7),
    ]


class TimestampKey(ctypes.Structure):
    """struct timestamp_key: (direction, identifier)."""

    _fields_ = [("flow", FlowKey), ("pid", U32)]


class WarningState(ctypes.Structure):
    """struct warning_state: the last map-full event of one table."""

    _fields_ = [("last", U64), ("valid", U64)]


class CleanupArgs(ctypes.Structure):
    """struct cleanup_args: the context of the clean-up program (in: the time and the
    lifetimes; out: what it deleted, and how full the tables were before)."""

    _fields_ = [
        ("now", U64),
        ("timestamp_lifetime", U64),
        ("timestamp_min_lifetime", U64),
        ("timestamp_rtt_lifetime", U64),
        ("flow_lifetime", U64),
        ("icmp_flow_lifetime", U64),
        ("unopened_flow_lifetime", U64),
        ("walk", U32),
        ("timestamps_expired", U32),
        ("flows_expired", U32),
        ("more", U32),
        ("timestamp_entries", U32),
        ("flow_entries", U32),
    ]


class ExpiredFlow(ctypes.Structure):
    """struct expired_flow: one flow entry the clean-up program deleted."""

    _fields_ = [("seq", U64), ("key", FlowKey), ("timed_out", U8), ("reserved", U8 * 3)]


class RttEvent(ctypes.Structure):
    _fields_ = [
        ("event_type", U64),
        ("timestamp", U64),
        ("flow", FlowKey),
        ("reserved", U32),
        ("rtt", U64),
        ("min_rtt", U64),
        ("sent_pkts", U64),
        ("sent_bytes", U64),
        ("rec_pkts", U64),
        ("rec_bytes", U64),
        ("match_on_egress", U8),
        ("reserved2", U8 * 7),
    ]


class FlowEvent(ctypes.Structure):
    _fields_ = [
        ("event_type", U64),
        ("timestamp", U64),
        ("flow", FlowKey),
        ("flow_event_type", U8),
        ("reason", U8),
        ("source", U8),
        ("reserved", U8),
    ]


class MapFullEvent(ctypes.Structure):
    _fields_ = [
        ("event_type", U64),
        ("timestamp", U64),
        ("flow", FlowKey),
        ("table", U8),
        ("reserved", U8 * 3),
    ]


AGG_BINS = 250
AGG_BIN_WIDTH_NS = 4_000_000
AGG_TCP_TS, AGG_TCP_NOTS, AGG_OTHER, AGG_NR_CLASSES = 0, 1, 2, 3


class AggKey(ctypes.Structure):
    """struct agg_key: a prefix of an aggregation map, or its backup entry."""

    _fields_ = [("prefix", U64), ("is_backup", U8), ("reserved", U8 * 7)]


class AggTraffic(ctypes.Structure):
    _fields_ = [("packets", U64 * AGG_NR_CLASSES), ("bytes", U64 * AGG_NR_CLASSES)]


class AggStats(ctypes.Structure):
    """struct agg_stats: one prefix's figures on one CPU."""

    _fields_ = [
        ("last_updated", U64),
        ("rx", AggTraffic),
        ("tx", AggTraffic),
        ("rtt_count", U64),
        ("rtt_min", U64),
        ("rtt_max", U64),
        ("bins", U32 * AGG_BINS),
    ]


# Every mirrored structure under its C name (tests/test_abi.py walks this).
STRUCTS: dict[str, type[ctypes.Structure]] = {
    "pping_config": PpingConfig,
    "pping_sampling": PpingSampling,
    "flow_key": FlowKey,
    "flow_state": FlowState,
    "dual_flow": DualFlow,
    "timestamp_key": TimestampKey,
    "warning_state": WarningState,
    "cleanup_args": CleanupArgs,
    "expired_flow": ExpiredFlow,
    "rtt_event": RttEvent,
    "flow_event": FlowEvent,
    "map_full_event": MapFullEvent,
    "agg_key": AggKey,
    "agg_traffic": AggTraffic,
    "agg_stats": AggStats,
}


def dtype_of(struct: type[ctypes.Structure]) -> np.dtype[Any]:
    """The numpy dtype with the layout of a ctypes structure."""
    return np.dtype(struct)


FLOW_KEY_DTYPE = dtype_of(FlowKey)
DUAL_FLOW_DTYPE = dtype_of(DualFlow)
TIMESTAMP_KEY_DTYPE = dtype_of(TimestampKey)
WARNING_STATE_DTYPE = dtype_of(WarningState)
EXPIRED_FLOW_DTYPE = dtype_of(ExpiredFlow)
CLEANUP_BATCH = 1024  # PPING_CLEANUP_BATCH: entries of the map `expired`
AGG_KEY_DTYPE = dtype_of(AggKey)
AGG_STATS_DTYPE = dtype_of(AggStats)
AGG_CB_WIRE_LEN = 0  # skb->cb indexes of the replay's -a context
AGG_CB_FLAGS = 1
AGG_FLAG_PARSED_ONLY = 1
AGG_FLAG_TRAFFIC_ONLY = 2

# enum pping_conn_state
CONN_EMPTY = 0
CONN_WAITOPEN = 1
CONN_OPEN = 2
CONN_CLOSED = 3

# enum pping_event_type
EVENT_TYPE_RTT = 1
EVENT_TYPE_FLOW = 2
EVENT_TYPE_MAP_FULL = 3

# enum pping_cleanup_walk
CLEANUP_TIMESTAMPS = 1
CLEANUP_FLOWS = 2

# enum pping_table
TABLE_TIMESTAMPS = 0
TABLE_FLOWS = 1
NR_TABLES = 2

# enum pping_counter, in order. A skip reason maps to packet.py's text (or the engine's,
# for the last two); the other entries name a field of events.Counters, except the
# ring buffer's, which Counters has no field for.
SKIP_SYN = "SYN (no --include-SYN)"
SKIP_UNTRACKED = "protocol not tracked"
COUNTERS: tuple[str, ...] = (
    "COUNTER_PACKETS",
    "COUNTER_SKIP_TRUNCATED",
    "COUNTER_SKIP_NOT_IP",
    "COUNTER_SKIP_VLAN",
    "COUNTER_SKIP_MPLS",
    "COUNTER_SKIP_BAD_IPV4",
    "COUNTER_SKIP_BAD_IPV6",
    "COUNTER_SKIP_FRAGMENT",
    "COUNTER_SKIP_IPV6_EXT",
    "COUNTER_SKIP_PROTOCOL",
    "COUNTER_SKIP_BAD_TCP",
    "COUNTER_SKIP_NO_TIMESTAMP",
    "COUNTER_SKIP_NOT_ECHO",
    "COUNTER_SKIP_BAD_ICMP",
    "COUNTER_SKIP_SYN",
    "COUNTER_SKIP_UNTRACKED",
    "COUNTER_TIMESTAMPS_CREATED",
    "COUNTER_TIMESTAMPS_MATCHED",
    "COUNTER_TIMESTAMPS_TABLE_FULL",
    "COUNTER_FLOWS_CREATED",
    "COUNTER_FLOWS_CLOSED",
    "COUNTER_FLOWS_TABLE_FULL",
    "COUNTER_RTT_EVENTS",
    "COUNTER_RINGBUF_FULL",
    "COUNTER_TIMESTAMPS_CAPPED",
)
NR_COUNTERS = len(COUNTERS)
COUNTER_PACKETS = COUNTERS.index("COUNTER_PACKETS")
COUNTER_RINGBUF_FULL = COUNTERS.index("COUNTER_RINGBUF_FULL")

COUNTER_SKIP_REASONS: dict[int, str] = {
    COUNTERS.index("COUNTER_SKIP_TRUNCATED"): SKIP_TRUNCATED,
    COUNTERS.index("COUNTER_SKIP_NOT_IP"): SKIP_NOT_IP,
    COUNTERS.index("COUNTER_SKIP_VLAN"): SKIP_VLAN,
    COUNTERS.index("COUNTER_SKIP_MPLS"): SKIP_MPLS,
    COUNTERS.index("COUNTER_SKIP_BAD_IPV4"): SKIP_BAD_IPV4,
    COUNTERS.index("COUNTER_SKIP_BAD_IPV6"): SKIP_BAD_IPV6,
    COUNTERS.index("COUNTER_SKIP_FRAGMENT"): SKIP_FRAGMENT,
    COUNTERS.index("COUNTER_SKIP_IPV6_EXT"): SKIP_IPV6_EXT,
    COUNTERS.index("COUNTER_SKIP_PROTOCOL"): SKIP_PROTOCOL,
    COUNTERS.index("COUNTER_SKIP_BAD_TCP"): SKIP_BAD_TCP,
    COUNTERS.index("COUNTER_SKIP_NO_TIMESTAMP"): SKIP_NO_TIMESTAMP,
    COUNTERS.index("COUNTER_SKIP_NOT_ECHO"): SKIP_NOT_ECHO,
    COUNTERS.index("COUNTER_SKIP_BAD_ICMP"): SKIP_BAD_ICMP,
    COUNTERS.index("COUNTER_SKIP_SYN"): SKIP_SYN,
    COUNTERS.index("COUNTER_SKIP_UNTRACKED"): SKIP_UNTRACKED,
}

COUNTER_FIELDS: dict[int, str] = {
    COUNTERS.index("COUNTER_TIMESTAMPS_CREATED"): "timestamps_created",
    COUNTERS.index("COUNTER_TIMESTAMPS_MATCHED"): "timestamps_matched",
    COUNTERS.index("COUNTER_TIMESTAMPS_TABLE_FULL"): "timestamps_table_full",
    COUNTERS.index("COUNTER_FLOWS_CREATED"): "flows_created",
    COUNTERS.index("COUNTER_FLOWS_CLOSED"): "flows_closed",
    COUNTERS.index("COUNTER_FLOWS_TABLE_FULL"): "flows_table_full",
    COUNTERS.index("COUNTER_RTT_EVENTS"): "rtt_events",
    COUNTERS.index("COUNTER_TIMESTAMPS_CAPPED"): "timestamps_capped",
}

# Other enums of pping.h, name -> value, for tests/test_abi.py (the values of the flow
# event types, reasons, sources and tables are those of pping.events).
ENUMS: dict[str, dict[str, int]] = {
    "pping_conn_state": {
        "CONN_EMPTY": CONN_EMPTY,
        "CONN_WAITOPEN": CONN_WAITOPEN,
        "CONN_OPEN": CONN_OPEN,
        "CONN_CLOSED": CONN_CLOSED,
    },
    "pping_event_type": {
        "EVENT_TYPE_RTT": EVENT_TYPE_RTT,
        "EVENT_TYPE_FLOW": EVENT_TYPE_FLOW,
        "EVENT_TYPE_MAP_FULL": EVENT_TYPE_MAP_FULL,
    },
    "pping_cleanup_walk": {
        "CLEANUP_TIMESTAMPS": CLEANUP_TIMESTAMPS,
        "CLEANUP_FLOWS": CLEANUP_FLOWS,
    },
    "agg_class": {
        "AGG_TCP_TS": AGG_TCP_TS,
        "AGG_TCP_NOTS": AGG_TCP_NOTS,
        "AGG_OTHER": AGG_OTHER,
        "AGG_NR_CLASSES": AGG_NR_CLASSES,
    },
    "pping_table": {
        "TABLE_TIMESTAMPS": TABLE_TIMESTAMPS,
        "TABLE_FLOWS": TABLE_FLOWS,
        "PPING_NR_TABLES": NR_TABLES,
    },
    "pping_counter": {
        **{name: i for i, name in enumerate(COUNTERS)},
        "PPING_NR_COUNTERS": NR_COUNTERS,
    },
}

# Names of the objects in the compiled program.
PROGRAM_INGRESS = "pping_tc_ingress"
PROGRAM_EGRESS = "pping_tc_egress"
PROGRAM_XDP = "pping_xdp_ingress"  # ingress at XDP (-I xdp), live only
PROGRAM_CLEANUP = "pping_cleanup"  # SEC("syscall"): the periodic clean-up
MAP_SAMPLING = ".data.sampling"  # the data section of the global `sampling`
SAMPLING_VARIABLE = "sampling"
MAP_FLOWS = "flows"
MAP_TIMESTAMPS = "timestamps"
MAP_EVENTS = "events"
MAP_COUNTERS = "counters"
MAP_WARNINGS = "warnings"
MAP_EXPIRED = "expired"  # the clean-up program's output
CONFIG_VARIABLE = "config"
# -a: the maps by [copy][family] (family 0: IPv4, 1: IPv6), and the data section of
# the global `agg_active` (which copy packets update).
MAP_AGGREGATES = (("agg_v4_0", "agg_v6_0"), ("agg_v4_1", "agg_v6_1"))
MAP_AGG_ACTIVE = ".data.aggregate"
