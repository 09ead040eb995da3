"""-a in the kernel data path: the prefix maps of a loaded program, read per interval.

The program counts into the copy `agg_active` names (see bpf/pping.h). At the end of
an interval user space makes the other copy active, reads the filled one (one value
per CPU and prefix, merged here), and hands it to the reporting rules of
`pping.aggregate.report_table`, which the Python data path uses too; what those rules
remove is deleted from the map, the rest is written back cleared.
"""

from __future__ import annotations

import ctypes
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from ..aggregate import BACKUP, N_CLASSES, Entry, report_table
from ..config import AggregateConfig
from ..events import AggregateEvent
from . import abi, libbpf
from .program import PpingProgram

# membarrier(2): MEMBARRIER_CMD_GLOBAL waits for an RCU grace period, so every program
# run that may still have read the old `agg_active` has finished when it returns.
_MEMBARRIER_SYSCALL = {"x86_64": 324, "aarch64": 283, "riscv64": 283, "ppc64le": 365}
_MEMBARRIER_CMD_GLOBAL = 1


def wait_for_programs() -> None:
    """Live: return once no program run that began before the call is still running."""
    number = _MEMBARRIER_SYSCALL.get(platform.machine())
    if number is not None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(number, _MEMBARRIER_CMD_GLOBAL, 0, 0) == 0:
            return
    # No membarrier here: a program run lasts microseconds; a millisecond is ample.
    time.sleep(0.001)


def _key(prefix: int, backup: bool) -> npt.NDArray[Any]:
    key = np.zeros(1, dtype=abi.AGG_KEY_DTYPE)
    key["prefix"] = prefix
    key["is_backup"] = int(backup)
    return key


class KernelAggregates:
    """The aggregation maps of `program` (loaded with `config`)."""

    def __init__(
        self,
        program: PpingProgram,
        config: AggregateConfig,
        synchronize: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.fds = program.aggregate_fds
        self.active_fd = program.agg_active_fd
        # Live: waits until no program still runs with the old copy (see sources).
        self.synchronize = synchronize
        self.cpus = libbpf.num_possible_cpus()
        self.value_dtype = np.dtype((abi.AGG_STATS_DTYPE, (self.cpus,)))
        self.active = 0
        self._set_active(0)
        empty = np.zeros(self.cpus, dtype=abi.AGG_STATS_DTYPE)
        for copy in self.fds:
            for family, fd in enumerate(copy):
                keys, _ = libbpf.map_lookup_batch(fd, abi.AGG_KEY_DTYPE, self.value_dtype)
                libbpf.map_delete_batch(fd, keys)
                if (config.ipv4_prefix_len, config.ipv6_prefix_len)[family] > 0:
                    libbpf.map_update(fd, _key(0, True), empty, libbpf.BPF_NOEXIST)

    def _set_active(self, copy: int) -> None:
        zero = ctypes.c_uint32(0)
        libbpf.map_update(self.active_fd, zero, ctypes.c_uint32(copy))

    def report(self, now: int, base: int) -> list[AggregateEvent]:
        """Close the interval at `now` (event time; kernel time + `base` = event time)."""
        filled = self.active
        self.active ^= 1
        self._set_active(self.active)
        self.synchronize()
        events: list[AggregateEvent] = []
        for family, fd in enumerate(self.fds[filled]):
            events += self._report_map(fd, family, now, base)
        return events

    def _report_map(self, fd: int, family: int, now: int, base: int) -> list[AggregateEvent]:
        keys, values = libbpf.map_lookup_batch(fd, abi.AGG_KEY_DTYPE, self.value_dtype)
        if len(keys) == 0:
            return []
        names = [
            BACKUP if backup else prefix
            for prefix, backup in zip(
                keys["prefix"].tolist(), keys["is_backup"].tolist(), strict=True
            )
        ]
        table = {name: _merged(values[row], base) for row, name in enumerate(names)}
        events = report_table(self.config, family, table, now)
        kept = np.array([name in table for name in names], dtype=bool)
        libbpf.map_delete_batch(fd, keys[~kept])
        cleared = np.zeros_like(values[kept])
        cleared["last_updated"] = values[kept]["last_updated"]
        libbpf.map_update_batch(fd, keys[kept], cleared)
        return events

    def shift_times(self, shift: int) -> None:
        """Replay's clock moved by `shift` ns: move every `last_updated` with it."""
        for copy in self.fds:
            for fd in copy:
                keys, values = libbpf.map_lookup_batch(fd, abi.AGG_KEY_DTYPE, self.value_dtype)
                if len(keys) == 0:
                    continue
                times = values["last_updated"].astype(object)
                moved = [
                    min(max(int(t) + shift, 0), libbpf.U64_MAX) if t else 0
                    for t in times.ravel().tolist()
                ]
                values["last_updated"] = np.array(moved, dtype=np.uint64).reshape(times.shape)
                libbpf.map_update_batch(fd, keys, values)


def _merged(per_cpu: npt.NDArray[Any], base: int) -> Entry:
    """One prefix's figures summed over the CPUs, as the reporting rules take them."""
    entry = Entry()
    for side, offset in (("rx", 0), ("tx", 2 * N_CLASSES)):
        entry.counts[offset : offset + N_CLASSES] = per_cpu[side]["packets"].sum(axis=0)
        entry.counts[offset + N_CLASSES : offset + 2 * N_CLASSES] = per_cpu[side]["bytes"].sum(
            axis=0
        )
    entry.bins[:] = per_cpu["bins"].sum(axis=0)
    with_rtts = per_cpu["rtt_count"] > 0
    if with_rtts.any():
        entry.rtt_min = int(per_cpu["rtt_min"][with_rtts].min())
        entry.rtt_max = int(per_cpu["rtt_max"][with_rtts].max())
    latest = int(per_cpu["last_updated"].max())
    entry.last_updated = latest + base if latest else 0
    return entry
