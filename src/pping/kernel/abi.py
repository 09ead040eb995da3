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
        ("max_outstanding", U32),
        ("reserved3", U32),
    ]


class PpingSampling(ctypes.Structure):
    """struct pping_sampling (the `sampling` global in .data.sampling): the limits in
    force, the configured ones times the pressure controller's scale."""

    _fields_ = [("rate_limit", U64), ("rtt_rate", U64)]


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


class ReleaseEntry(ctypes.Structure):
    """struct release_entry: one stale timestamp for the clean-up program."""

    _fields_ = [("key", TimestampKey), ("sent", U64), ("result", U32), ("reserved", U32)]


class ReleaseArgs(ctypes.Structure):
    """struct release_args: the context of the clean-up program."""

    _fields_ = [("count", U32), ("reserved", U32)]


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


# Every mirrored structure under its C name (tests/test_abi.py walks this).
STRUCTS: dict[str, type[ctypes.Structure]] = {
    "pping_config": PpingConfig,
    "pping_sampling": PpingSampling,
    "flow_key": FlowKey,
    "flow_state": FlowState,
    "dual_flow": DualFlow,
    "timestamp_key": TimestampKey,
    "warning_state": WarningState,
    "release_entry": ReleaseEntry,
    "release_args": ReleaseArgs,
    "rtt_event": RttEvent,
    "flow_event": FlowEvent,
    "map_full_event": MapFullEvent,
}


def dtype_of(struct: type[ctypes.Structure]) -> np.dtype[Any]:
    """The numpy dtype with the layout of a ctypes structure."""
    return np.dtype(struct)


FLOW_KEY_DTYPE = dtype_of(FlowKey)
DUAL_FLOW_DTYPE = dtype_of(DualFlow)
TIMESTAMP_KEY_DTYPE = dtype_of(TimestampKey)
WARNING_STATE_DTYPE = dtype_of(WarningState)
RELEASE_ENTRY_DTYPE = dtype_of(ReleaseEntry)
RELEASE_BATCH = 1024  # PPING_RELEASE_BATCH: entries of the `releases` global

# enum pping_conn_state
CONN_EMPTY = 0
CONN_WAITOPEN = 1
CONN_OPEN = 2
CONN_CLOSED = 3

# enum pping_event_type
EVENT_TYPE_RTT = 1
EVENT_TYPE_FLOW = 2
EVENT_TYPE_MAP_FULL = 3

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
PROGRAM_RELEASE = "pping_release"  # SEC("syscall"): the clean-up's timestamp removal
MAP_RELEASES = ".data.releases"  # the data section of the global `releases`
MAP_SAMPLING = ".data.sampling"  # the data section of the global `sampling`
SAMPLING_VARIABLE = "sampling"
MAP_FLOWS = "flows"
MAP_TIMESTAMPS = "timestamps"
MAP_EVENTS = "events"
MAP_COUNTERS = "counters"
MAP_WARNINGS = "warnings"
CONFIG_VARIABLE = "config"
