"""Open, configure and load bpf/pping.bpf.o; reach its maps, counters and events.

Lifecycle (libbpf's): open -> write .rodata (`config`) and size the tables -> load ->
use -> close. The object file is found at $PPING_BPF_OBJECT, else where `make -C bpf`
puts it (build/bpf/pping.bpf.o at the top of the source tree), else in the package's
data directory.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..config import AggregateConfig, Config
from ..engine import rtt_rate_fixpoint
from ..errors import KernelError
from ..events import (
    Counters,
    Event,
    EventReason,
    EventSource,
    Flow,
    FlowEvent,
    FlowEventType,
    MapFullEvent,
    RttEvent,
    Table,
)
from . import abi, libbpf
from .ringbuf import RingBuffer

OBJECT_ENV = "PPING_BPF_OBJECT"
OBJECT_NAME = "pping.bpf.o"
DEFAULT_RINGBUF_BYTES = 1 << 20
U32_MAX = 0xFFFFFFFF


def object_path() -> Path:
    """Where the compiled kernel program is (the first that exists), or KernelError."""
    candidates = []
    override = os.environ.get(OBJECT_ENV)
    if override:
        candidates.append(Path(override))
    here = Path(__file__).resolve()
    candidates.append(here.parents[3] / "build" / "bpf" / OBJECT_NAME)
    candidates.append(here.parents[1] / "data" / OBJECT_NAME)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise KernelError(
        f"failed to find the BPF object {OBJECT_NAME}: build it with `make -C bpf` "
        f"or set {OBJECT_ENV}"
    )


def config_struct(
    config: Config,
    *,
    replay: bool,
    local_filter: bool,
    aggregate: AggregateConfig | None = None,
) -> abi.PpingConfig:
    """The kernel's view of the options (see struct pping_config)."""
    fixpoint = rtt_rate_fixpoint(config.rtt_rate)
    v4_len = aggregate.ipv4_prefix_len if aggregate else 0
    v6_len = aggregate.ipv6_prefix_len if aggregate else 0
    return abi.PpingConfig(
        # Beyond 2^64 - 1 ns no two times of one window differ by as much anyway.
        rate_limit=min(config.rate_limit_ns, libbpf.U64_MAX),
        # The engine multiplies modulo 2^64 too; whether -R is on is decided before.
        rtt_rate=fixpoint & libbpf.U64_MAX,
        use_rtt_rate=int(fixpoint != 0),
        use_srtt=int(config.use_srtt),
        track_tcp=int(config.track_tcp),
        track_icmp=int(config.track_icmp),
        include_syn=int(config.include_syn),
        local_filter=int(local_filter),
        replay=int(replay),
        burst_packets=config.burst_packets,
        burst_window=min(config.burst_window_ns, libbpf.U64_MAX),
        agg_ipv6_mask=((1 << 64) - 1 << (64 - v6_len)) & libbpf.U64_MAX,
        agg_ipv4_mask=(0xFFFFFFFF << (32 - v4_len)) & 0xFFFFFFFF,
        aggregate=int(aggregate is not None),
        agg_by_dst=int(aggregate is not None and aggregate.by_destination),
        max_outstanding=min(config.outstanding_cap, U32_MAX),
        grow_tables=int(config.grows),
    )


def sampling_struct(
    config: Config, scale: int, max_timestamps: int, max_flows: int
) -> abi.PpingSampling:
    """The limits in force at sampling scale `scale` with the tables' capacities (see
    struct pping_sampling): the engine's `rate_limit_ns` (saturated, as config_struct
    does) and its -R multiplier (modulo 2^64, as the engine multiplies)."""
    return abi.PpingSampling(
        rate_limit=min(config.rate_limit_ns * scale, libbpf.U64_MAX),
        rtt_rate=(rtt_rate_fixpoint(config.rtt_rate) * scale) & libbpf.U64_MAX,
        max_timestamps=max_timestamps,
        max_flows=max_flows,
    )


# Event layouts (bpf/pping.h); the flow key is (link, proto, saddr, daddr, sport, dport).
_EVENT_TYPE = struct.Struct("<Q")
_RTT = struct.Struct("<QQIB3x16s16sHH4xQQQQQQB7x")
_FLOW = struct.Struct("<QQIB3x16s16sHHBBBx")
_MAP_FULL = struct.Struct("<QQIB3x16s16sHHB3x")


def decode_event(record: bytes, time_base: int) -> Event:
    """One ring-buffer record as a pping event; `time_base` + kernel time = event time."""
    event_type = _EVENT_TYPE.unpack_from(record)[0]
    if event_type == abi.EVENT_TYPE_RTT:
        (_, ts, _link, proto, saddr, daddr, sport, dport, rtt, min_rtt, sp, sb, rp, rb, egress) = (
            _RTT.unpack_from(record)
        )
        flow = Flow(proto, saddr, sport, daddr, dport)
        return RttEvent(ts + time_base, flow, rtt, min_rtt, sp, sb, rp, rb, bool(egress))
    if event_type == abi.EVENT_TYPE_FLOW:
        (_, ts, _link, proto, saddr, daddr, sport, dport, kind, reason, source) = _FLOW.unpack_from(
            record
        )
        return FlowEvent(
            ts + time_base,
            Flow(proto, saddr, sport, daddr, dport),
            FlowEventType(kind),
            EventReason(reason),
            EventSource(source),
        )
    if event_type == abi.EVENT_TYPE_MAP_FULL:
        (_, ts, _link, proto, saddr, daddr, sport, dport, table) = _MAP_FULL.unpack_from(record)
        return MapFullEvent(ts + time_base, Flow(proto, saddr, sport, daddr, dport), Table(table))
    raise KernelError(f"failed to decode an event: unknown type {event_type}")


class PpingProgram:
    """The loaded kernel program with its maps; close it (or use it as a context)."""

    def __init__(
        self,
        config: Config,
        *,
        replay: bool,
        local_filter: bool = False,
        programs: Iterable[str] = (abi.PROGRAM_INGRESS, abi.PROGRAM_EGRESS),
        ringbuf_bytes: int = DEFAULT_RINGBUF_BYTES,
        preallocate: bool = True,
        path: str | os.PathLike[str] | None = None,
        aggregate: AggregateConfig | None = None,
    ) -> None:
        wanted = set(programs)
        self.object = libbpf.BpfObject(path if path is not None else object_path())
        self.ring: RingBuffer | None = None
        try:
            obj = self.object
            obj.write_variable(
                ".rodata",
                abi.CONFIG_VARIABLE,
                config_struct(
                    config, replay=replay, local_filter=local_filter, aggregate=aggregate
                ),
            )
            obj.write_variable(
                abi.MAP_SAMPLING,
                abi.SAMPLING_VARIABLE,
                sampling_struct(config, 1, config.max_timestamps, config.max_flows),
            )
            flows = obj.map(abi.MAP_FLOWS)
            timestamps = obj.map(abi.MAP_TIMESTAMPS)
            # Growing tables: the maps have room for the caps from the start (no copy,
            # no pause when a table grows); the program refuses entries beyond the
            # capacity in force, and memory follows the entries (not preallocated).
            flows.set_max_entries(config.flows_limit)
            timestamps.set_max_entries(config.timestamps_limit)
            # Replay, and a table that grows: allocate entries as they come instead of
            # all at load time.
            if not preallocate or config.flows_limit > config.max_flows:
                flows.add_flags(libbpf.BPF_F_NO_PREALLOC)
            if not preallocate or config.timestamps_limit > config.max_timestamps:
                timestamps.add_flags(libbpf.BPF_F_NO_PREALLOC)
            obj.map(abi.MAP_EVENTS).set_max_entries(ringbuf_bytes)
            for copy in abi.MAP_AGGREGATES:
                for name in copy:
                    # Without -a the maps stay unused: keep them as small as can be.
                    # Never preallocated: a per-CPU entry is over 1 KiB per CPU, four
                    # maps of 16384 would take hundreds of MiB on a large machine, and
                    # new prefixes are rare next to packets.
                    prefixes = obj.map(name)
                    prefixes.set_max_entries(aggregate.max_prefixes if aggregate else 1)
                    prefixes.add_flags(libbpf.BPF_F_NO_PREALLOC)
            for name in (abi.PROGRAM_INGRESS, abi.PROGRAM_EGRESS, abi.PROGRAM_XDP):
                obj.program(name).set_autoload(name in wanted)
            obj.load()
            self.flows_fd = flows.fd
            self.timestamps_fd = timestamps.fd
            self.counters_fd = obj.map(abi.MAP_COUNTERS).fd
            self.warnings_fd = obj.map(abi.MAP_WARNINGS).fd
            self.expired_fd = obj.map(abi.MAP_EXPIRED).fd
            self.aggregate_fds = tuple(
                tuple(obj.map(name).fd for name in copy) for copy in abi.MAP_AGGREGATES
            )
            self.agg_active_fd = obj.map(abi.MAP_AGG_ACTIVE).fd
            self.sampling_fd = obj.map(abi.MAP_SAMPLING).fd
            self.config = config
            self.program_fds = {name: obj.program(name).fd for name in wanted}
            # Always loaded: the clean-up (kernel/cleanup.py), live and in replay.
            self.cleanup_fd = obj.program(abi.PROGRAM_CLEANUP).fd
            self.ring = RingBuffer(obj.map(abi.MAP_EVENTS).fd, ringbuf_bytes)
        except BaseException:
            self.close()
            raise

    def reset(self) -> None:
        """Empty every table, counter and warning, and drop pending events: the state
        of a fresh load (the configuration stays)."""
        for fd, key_dtype, value_dtype in (
            (self.flows_fd, abi.FLOW_KEY_DTYPE, abi.DUAL_FLOW_DTYPE),
            (self.timestamps_fd, abi.TIMESTAMP_KEY_DTYPE, np.dtype(np.uint64)),
        ):
            keys, _ = libbpf.map_lookup_batch(fd, key_dtype, value_dtype)
            libbpf.map_delete_batch(fd, keys)
        index = np.zeros(1, dtype=np.uint32)
        per_cpu = np.zeros(libbpf.num_possible_cpus(), dtype=np.uint64)
        for counter in range(abi.NR_COUNTERS):
            index[0] = counter
            libbpf.map_update(self.counters_fd, index, per_cpu)
        warning = np.zeros(1, dtype=abi.WARNING_STATE_DTYPE)
        for table in range(abi.NR_TABLES):
            index[0] = table
            libbpf.map_update(self.warnings_fd, index, warning)
        self.set_limits(1, self.config.max_timestamps, self.config.max_flows)
        if self.ring is not None:
            self.ring.read()

    def set_limits(self, scale: int, max_timestamps: int, max_flows: int) -> None:
        """Sample `scale` times less often than configured, and let the tables hold
        the given capacities (up to their caps), from the next packet on (the pressure
        monitor's decisions; Engine.set_sampling_scale and the engine's capacities)."""
        zero = np.zeros(1, dtype=np.uint32)
        limits = sampling_struct(self.config, scale, max_timestamps, max_flows)
        libbpf.map_update(self.sampling_fd, zero, limits)

    def counter_values(self) -> list[int]:
        """Each counter of enum pping_counter, summed over the CPUs."""
        return libbpf.percpu_array_sums(self.counters_fd, abi.NR_COUNTERS)

    def add_counters(self, counters: Counters) -> int:
        """Add the kernel's counts to `counters`; returns the events lost (ring full)."""
        values = self.counter_values()
        counters.packets += values[abi.COUNTER_PACKETS]
        for index, reason in abi.COUNTER_SKIP_REASONS.items():
            if values[index]:
                counters.skip(reason, values[index])
        for index, name in abi.COUNTER_FIELDS.items():
            setattr(counters, name, getattr(counters, name) + values[index])
        return values[abi.COUNTER_RINGBUF_FULL]

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        self.object.close()

    def __enter__(self) -> PpingProgram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
