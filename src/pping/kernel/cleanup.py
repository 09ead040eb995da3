"""The periodic clean-up (docs/algorithm.md, "Clean-up") on the kernel program's maps.

The decisions are taken in the kernel, by the SEC("syscall") program `pping_cleanup`
(bpf/pping.bpf.c), which this module runs with BPF_PROG_TEST_RUN: it walks the
timestamps, then the flows, and checks each entry as it is in the map at that moment,
right before deleting it. So a packet that refreshes a flow or matches a timestamp
before the walk reaches it is never undone by the clean-up, which a decision taken in
user space on a copy of the maps could not promise. The lifetimes come from
config.py on every run (one definition for every data path).

What stays here: building the closing events of the flows that timed out, in the
engine's order (creation order, the entries' `seq`), since the walk visits a hash
map in no useful order. Both the capture replay (kernel/replay.py) and live
monitoring (sources/kernel.py) use `KernelCleanup`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import (
    FLOW_LIFETIME_NS,
    ICMP_FLOW_LIFETIME_NS,
    TIMESTAMP_MIN_LIFETIME_NS,
    TIMESTAMP_RTT_LIFETIME,
    UNOPENED_FLOW_LIFETIME_NS,
    timestamp_lifetime,
)
from ..events import Event, EventReason, EventSource, Flow, FlowEvent, FlowEventType
from . import abi, libbpf
from .program import PpingProgram


def cleanup_args(
    now: int, walk: int, sampling_scale: int = 1, timeout_divisor: int = 1
) -> abi.CleanupArgs:
    """The clean-up program's context: the time, what to walk, config.py's lifetimes as
    the pressure controller has shortened them (`timestamp_is_stale` and
    `direction_is_old` with these divisors: `age > lifetime // divisor` is what the
    kernel's `age > lifetime` then computes)."""
    return abi.CleanupArgs(
        now=now,
        timestamp_lifetime=timestamp_lifetime(sampling_scale),
        timestamp_min_lifetime=TIMESTAMP_MIN_LIFETIME_NS,
        timestamp_rtt_lifetime=TIMESTAMP_RTT_LIFETIME,
        flow_lifetime=FLOW_LIFETIME_NS // timeout_divisor,
        icmp_flow_lifetime=ICMP_FLOW_LIFETIME_NS // timeout_divisor,
        unopened_flow_lifetime=UNOPENED_FLOW_LIFETIME_NS // timeout_divisor,
        walk=walk,
    )


def _flow_of(key: Any, reverse: bool) -> Flow:
    """A direction of a flow-table key (a struct flow_key record), as printed."""
    proto = int(key["proto"])
    saddr, daddr = bytes(key["saddr"]), bytes(key["daddr"])
    sport, dport = int(key["sport"]), int(key["dport"])
    if reverse:
        return Flow(proto, daddr, dport, saddr, sport)
    return Flow(proto, saddr, sport, daddr, dport)


def _timeout_event(now: int, flow: Flow) -> FlowEvent:
    return FlowEvent(
        now, flow, FlowEventType.CLOSING, EventReason.FLOW_TIMEOUT, EventSource.GARBAGE_COLLECTION
    )


class KernelCleanup:
    """Runs the kernel's clean-up on one loaded program and counts what it removed."""

    def __init__(self, program: PpingProgram) -> None:
        self.program = program
        self.timestamps_expired = 0
        self.flows_expired = 0
        # How full the tables were when the last run began (the pressure monitor's input).
        self.timestamp_entries = 0
        self.flow_entries = 0

    def run(
        self, now: int, time_base: int = 0, sampling_scale: int = 1, timeout_divisor: int = 1
    ) -> list[Event]:
        """The clean-up at `now` (the program's clock, 0 to 2^64 - 1), with lifetimes
        shortened by the pressure controller's divisors; the closing events of flows
        that timed out, at time `now + time_base`."""
        program = self.program
        walk = abi.CLEANUP_TIMESTAMPS | abi.CLEANUP_FLOWS
        batches: list[Any] = []
        first = True
        while True:
            args = cleanup_args(now, walk, sampling_scale, timeout_divisor)
            written = libbpf.run_syscall_program(program.cleanup_fd, args)
            if first:
                self.timestamp_entries = args.timestamp_entries
                self.flow_entries = args.flow_entries
                first = False
            self.timestamps_expired += args.timestamps_expired
            self.flows_expired += args.flows_expired
            if written:
                indices, expired = libbpf.map_lookup_batch(
                    program.expired_fd, np.dtype(np.uint32), abi.EXPIRED_FLOW_DTYPE
                )
                batches.append(expired[np.argsort(indices)][:written])
            if not args.more:
                break
            walk = abi.CLEANUP_FLOWS  # the timestamps are done
        if not batches:
            return []
        return self._events(np.concatenate(batches), now + time_base)

    @staticmethod
    def _events(expired: Any, when: int) -> list[Event]:
        events: list[Event] = []
        for entry in expired[np.argsort(expired["seq"], kind="stable")]:
            key, timed_out = entry["key"], int(entry["timed_out"])
            # Reported "backwards", as the reply direction, like every other event.
            if timed_out & 1:
                events.append(_timeout_event(when, _flow_of(key, reverse=True)))
            if timed_out & 2:
                events.append(_timeout_event(when, _flow_of(key, reverse=False)))
        return events
