"""Live monitoring: the kernel program on one or more interfaces, events to a sink.

`LiveMonitor` loads bpf/pping.bpf.o in live mode (time from bpf_ktime_get_ns, the
link is the interface index; the local filter of docs/algorithm.md is on unless
`-l`), attaches it to every interface (src/pping/kernel/attach.py: tcx links, else
clsact; ingress at XDP instead of tc with `-I xdp`), and `run` then loops until
SIGINT/SIGTERM or until an interface disappears:

- **events**: the ring buffer is mapped into memory (kernel/ringbuf.py) and waited
  for with epoll, together with a signal wake-up pipe; each wake-up drains every
  committed record and decodes it (kernel/program.py's decoder). Kernel times are
  CLOCK_MONOTONIC, which is bpf_ktime_get_ns; adding `time.time_ns() -
  time.monotonic_ns()` makes them wall-clock times (refreshed when the wall clock is
  stepped).
- **clean-up** every `-c` seconds: the kernel program `pping_cleanup` decides and
  deletes next to the live entries (kernel/cleanup.py), so a packet handled during a
  clean-up is never undone by it.
- **map-full warnings**: at most one a second per table, whatever the CPUs race to.
- **counters**: the program's per-CPU counters summed, plus the clean-up's; SIGUSR1
  prints them (`write_counters(..., final=False)`), the caller prints the final ones.
- **events lost** because the ring buffer was full are reported on the error stream.

Stopping detaches the programs first, then drains what they emitted before that.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TextIO

import numpy as np

from ..config import (
    MAP_FULL_WARN_INTERVAL_NS,
    NS_PER_S,
    AggregateConfig,
    Config,
)
from ..errors import KernelError, PpingError
from ..events import (
    AggregateHeader,
    Counters,
    Event,
    MapFullEvent,
    StatsEvent,
)
from ..kernel import abi, libbpf
from ..kernel.aggregate import KernelAggregates, wait_for_programs
from ..kernel.attach import Attachment, attach, attach_mode, interface_exists, interface_index
from ..kernel.batch import EventBatch, EventBuilder, read_batch
from ..kernel.cleanup import KernelCleanup
from ..kernel.program import PpingProgram
from ..pressure import PressureMonitor
from ..sinks import Sink

# 16 MiB: 131072 RTT events (128 bytes in the ring each), 0.13 s at 1M events/s, of
# slack for a consumer that the scheduler keeps off the CPU for a while.
LIVE_RINGBUF_BYTES = 1 << 24
INTERFACE_POLL_NS = NS_PER_S // 5
HOUSEKEEPING_NS = NS_PER_S  # lost-event check, clock offset refresh
BATCH_NS = 10_000_000  # after a wake-up with a few events, wait this long before the next
CLOCK_STEP_NS = 1_000_000  # a change of the wall-clock offset larger than this is a step
# RTT events formatted per call of a sink's write_rtt_batch: its arrays stay in the CPU's
# caches (larger batches are slower per event, smaller ones pay numpy's per-call cost).
RTT_CHUNK = 8192

# Linux capability numbers (include/uapi/linux/capability.h).
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_BPF = 39


def pause_after(drained: int) -> bool:
    """Whether to sleep BATCH_NS after a drain of `drained` events: after a few, so that
    events gather (one wake-up and one write of the output per BATCH_NS instead of one
    per event); not after a full chunk or more, when the sleep would only let the ring
    fill up while the producer runs ahead."""
    return 0 < drained < RTT_CHUNK


class InterfaceGone(PpingError):
    """A monitored interface was removed while pping was running."""

    exit_code = 1


# -- privileges and time -----------------------------------------------------------


def effective_capabilities() -> int | None:
    """The effective capability set of this process (None if unknown)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        return None
    return None


def missing_privileges() -> bool:
    """Whether this process certainly lacks what loading and attaching need."""
    caps = effective_capabilities()
    if caps is None:
        return os.geteuid() != 0

    def has(cap: int) -> bool:
        return bool(caps >> cap & 1)

    bpf = has(CAP_BPF) or has(CAP_SYS_ADMIN)
    net = has(CAP_NET_ADMIN) or has(CAP_SYS_ADMIN)
    return not (bpf and net)


def privilege_error(interfaces: Sequence[str]) -> KernelError:
    return KernelError(f"need root (CAP_BPF and CAP_NET_ADMIN) to monitor {', '.join(interfaces)}")


def preflight(interfaces: Sequence[str]) -> dict[int, str]:
    """Check what can be checked before loading anything: every interface exists (each
    counted once, by index: two names of one device would double-count), and the
    process has the privileges. Returns {ifindex: name}; KernelError otherwise."""
    if not interfaces:
        raise KernelError("failed to start: no interface to monitor")
    resolved: dict[int, str] = {}
    for name in interfaces:
        resolved.setdefault(interface_index(name), name)
    if missing_privileges():
        raise privilege_error(list(resolved.values()))
    return resolved


def clock_offset() -> int:
    """Wall-clock time minus CLOCK_MONOTONIC (= bpf_ktime_get_ns), in ns.

    The tightest of a few bracketed readings, so the error is well below a microsecond.
    """
    best_width, best = -1, 0
    for _ in range(5):
        before = time.monotonic_ns()
        wall = time.time_ns()
        after = time.monotonic_ns()
        if best_width < 0 or after - before < best_width:
            best_width, best = after - before, wall - (before + after) // 2
    return best


# -- clean-up ------------------------------------------------------------------------


class LiveCleanup(KernelCleanup):
    """The kernel's clean-up (kernel/cleanup.py: every decision on the live entry, next
    to its deletion), with the lifetimes the pressure monitor (pressure.py) has set;
    then the monitor decides from the occupancy the clean-up found (before removing, as
    Engine.expire) and a new sampling scale is written to the program's `sampling`
    global.

    Times are the program's clock (CLOCK_MONOTONIC ns); `time_base` is added to the
    times of the events returned.
    """

    def __init__(self, program: PpingProgram, totals: Callable[[], Counters] = Counters) -> None:
        super().__init__(program)
        self.pressure = PressureMonitor(program.config)
        # The pressure monitor's counts (sampling_raised, ...); `totals` gives every
        # count of the monitoring, for the statistics records.
        self.pressure_counts = Counters()
        self.totals = totals

    def run_and_adapt(self, now: int, time_base: int = 0) -> list[Event]:
        """One clean-up tick: the clean-up, then the pressure monitor's decisions."""
        pressure = self.pressure
        limits = pressure.limits
        events = self.run(now, time_base, pressure.sampling_scale, pressure.timeout_divisor)
        events += pressure.at_cleanup(
            now + time_base,
            self.timestamp_entries,
            self.flow_entries,
            self.pressure_counts,
            self.totals,
        )
        if pressure.limits != limits:
            self.program.set_limits(*pressure.limits)
        return events

    def final_statistics(self, when: int) -> StatsEvent:
        """The statistics record at the end of monitoring (at time `when`)."""
        program = self.program
        timestamps, _ = libbpf.map_lookup_batch(
            program.timestamps_fd, abi.TIMESTAMP_KEY_DTYPE, np.dtype(np.uint64)
        )
        flows, _ = libbpf.map_lookup_batch(
            program.flows_fd, abi.FLOW_KEY_DTYPE, abi.DUAL_FLOW_DTYPE
        )
        return self.pressure.statistics(when, True, self.totals(), len(timestamps), len(flows))


# -- the monitor ---------------------------------------------------------------------


class LiveMonitor:
    """The kernel program attached to `interfaces`; `run()` it, then `close()` it.

    Construction resolves the interfaces, checks privileges, loads and attaches (all
    or nothing: a failure undoes what was done and raises KernelError). Ingress runs
    at tc, or at XDP with `ingress_hook="xdp"`; egress always at tc.
    """

    def __init__(
        self,
        config: Config,
        interfaces: Sequence[str],
        *,
        mode: str | None = None,
        ingress_hook: str = "tc",
        ringbuf_bytes: int = LIVE_RINGBUF_BYTES,
        err: TextIO | None = None,
        aggregate: AggregateConfig | None = None,
    ) -> None:
        self.config = config
        self.err = err if err is not None else sys.stderr
        self.interfaces = preflight(interfaces)
        chosen = attach_mode() if mode is None else mode
        self.attachments: list[Attachment] = []
        self.program: PpingProgram | None = None
        self.cleanup: LiveCleanup | None = None
        self.time_base = clock_offset()
        self._map_full_last: dict[int, int] = {}
        self._events = EventBuilder()  # ring buffer records -> events (flow cache)
        self._lost_reported = 0
        self._stop = False
        self._usr1 = False
        self._gone: str | None = None
        self.final_counters: Counters | None = None
        ingress_program = abi.PROGRAM_XDP if ingress_hook == "xdp" else abi.PROGRAM_INGRESS
        self.aggregates: KernelAggregates | None = None
        try:
            try:
                self.program = PpingProgram(
                    config,
                    replay=False,
                    local_filter=not config.include_local,
                    programs=(ingress_program, abi.PROGRAM_EGRESS),
                    ringbuf_bytes=ringbuf_bytes,
                    aggregate=aggregate,
                )
            except KernelError as error:
                if "Operation not permitted" in str(error):
                    raise privilege_error(list(self.interfaces.values())) from None
                raise
            self.cleanup = LiveCleanup(self.program, self.counters)
            self.aggregates = (
                KernelAggregates(self.program, aggregate, synchronize=wait_for_programs)
                if aggregate is not None
                else None
            )
            ingress = self.program.program_fds[ingress_program]
            egress = self.program.program_fds[abi.PROGRAM_EGRESS]
            for ifindex, name in self.interfaces.items():
                self.attachments.append(
                    attach(name, ingress, egress, chosen, ifindex, ingress_hook)
                )
        except BaseException:
            self.close()
            raise

    # -- state ---------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        return any(a.attached for a in self.attachments)

    def counters(self) -> Counters:
        """Everything counted so far: the program's per-CPU counters, the clean-up's."""
        counters = Counters()
        if self.program is not None:
            self.program.add_counters(counters)
        if self.cleanup is not None:
            counters.timestamps_expired = self.cleanup.timestamps_expired
            counters.flows_expired = self.cleanup.flows_expired
            own = self.cleanup.pressure_counts
            counters.sampling_raised = own.sampling_raised
            counters.sampling_relaxed = own.sampling_relaxed
            counters.timeout_shortened = own.timeout_shortened
            counters.timeout_restored = own.timeout_restored
            counters.timestamps_grown = own.timestamps_grown
            counters.flows_grown = own.flows_grown
        return counters

    def lost_events(self) -> int:
        """Events the program could not emit because the ring buffer was full."""
        if self.program is None:
            return 0
        return int(
            libbpf.percpu_array_sums(self.program.counters_fd, abi.NR_COUNTERS)[
                abi.COUNTER_RINGBUF_FULL
            ]
        )

    def stop(self) -> None:
        """Ask `run` to finish (safe from a signal handler or another thread)."""
        self._stop = True

    # -- the loop ------------------------------------------------------------------

    def _emit(self, sink: Sink, event: Event) -> None:
        if type(event) is MapFullEvent:
            # The program limits these per table too, but CPUs can race past it.
            last = self._map_full_last.get(event.table)
            if last is not None and 0 <= event.timestamp - last < MAP_FULL_WARN_INTERVAL_NS:
                return
            self._map_full_last[event.table] = event.timestamp
        sink.write(event)

    def _drain(self, sink: Sink) -> int:
        program = self.program
        if program is None or program.ring is None:
            return 0
        # The whole drained region decoded at once (kernel/batch.py). RTT events go to
        # a sink that takes them in columns as such (no object per event); the others,
        # and RTT events for other sinks, as objects, in ring order.
        write_rtt_batch = getattr(sink, "write_rtt_batch", None)
        builder = self._events
        base = self.time_base
        drained = 0
        for kind, array in read_batch(program.ring).segments:
            drained += len(array)
            if kind == abi.EVENT_TYPE_RTT and write_rtt_batch is not None:
                for start in range(0, len(array), RTT_CHUNK):
                    part = array[start : start + RTT_CHUNK]
                    columns = builder.rtt_columns(part, base)
                    if columns is not None:
                        write_rtt_batch(columns)
                    else:
                        self._emit_all(sink, builder.events(EventBatch([(kind, part)]), base))
                continue
            self._emit_all(sink, builder.events(EventBatch([(kind, array)]), base))
        return drained

    def _emit_all(self, sink: Sink, events: list[Event]) -> None:
        for event in events:
            self._emit(sink, event)

    def _report_lost(self) -> None:
        lost = self.lost_events()
        if lost > self._lost_reported:
            self.err.write(
                f"Warning: {lost - self._lost_reported} events lost (ring buffer full); "
                f"{lost} in all\n"
            )
            self.err.flush()
            self._lost_reported = lost

    def _check_interfaces(self) -> str | None:
        for attachment in self.attachments:
            if not interface_exists(attachment.ifindex):
                return attachment.ifname
        return None

    def run(
        self,
        sink: Sink,
        *,
        on_wake: Callable[[], None] | None = None,
        duration_s: float | None = None,
    ) -> None:
        """Deliver events to `sink` until stopped (SIGINT, SIGTERM, `stop()`, or after
        `duration_s`); then detach and deliver what was still in flight.

        SIGUSR1 writes the counters so far. `on_wake` is called after each wake-up
        (the command line reopens its output there after SIGHUP). Raises
        InterfaceGone when an interface disappears (after the same ending).
        """
        program = self.program
        if program is None or program.ring is None:
            raise KernelError("failed to run: the program is closed")
        interval = self.config.cleanup_interval_ns
        poller = select.epoll()
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        restore: list[Callable[[], object]] = []
        try:
            poller.register(program.object.map(abi.MAP_EVENTS).fd, select.EPOLLIN)
            poller.register(wake_read, select.EPOLLIN)
            if threading.current_thread() is threading.main_thread():
                restore.extend(self._install_signals(wake_write))
            now = time.monotonic_ns()
            deadline = now + round(duration_s * NS_PER_S) if duration_s is not None else None
            next_cleanup = now + interval if interval > 0 else None
            next_check = now + INTERFACE_POLL_NS
            next_housekeeping = now + HOUSEKEEPING_NS
            next_aggregate = self._aggregate_start(sink, now)
            while not self._stop:
                due = min(t for t in (next_cleanup, next_check, next_housekeeping, deadline,
                                      next_aggregate) if t is not None)  # fmt: skip
                wait = max(due - now, 0) / NS_PER_S
                woken_by = poller.poll(wait) if not program.ring.pending() else []
                if any(fd == wake_read for fd, _ in woken_by):
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_read, 512)
                drained = self._drain(sink)
                if self._usr1:
                    self._usr1 = False
                    sink.write_counters(self.counters(), final=False)
                if on_wake is not None:
                    on_wake()
                now = time.monotonic_ns()
                if next_cleanup is not None and now >= next_cleanup:
                    assert self.cleanup is not None
                    for event in self.cleanup.run_and_adapt(now, self.time_base):
                        self._emit(sink, event)
                    now = time.monotonic_ns()
                    next_cleanup = now + interval
                if now >= next_check:
                    self._gone = self._check_interfaces()
                    if self._gone is not None:
                        break
                    next_check = now + INTERFACE_POLL_NS
                if now >= next_housekeeping:
                    self._report_lost()
                    offset = clock_offset()
                    if abs(offset - self.time_base) > CLOCK_STEP_NS:
                        self.time_base = offset
                    next_housekeeping = now + HOUSEKEEPING_NS
                if next_aggregate is not None and now >= next_aggregate:
                    next_aggregate = self._aggregate_report(sink, next_aggregate, now)
                if deadline is not None and now >= deadline:
                    break
                if pause_after(drained) and not self._stop:
                    time.sleep(BATCH_NS / NS_PER_S)
        finally:
            for undo in reversed(restore):
                undo()
            poller.close()
            os.close(wake_read)
            os.close(wake_write)
        # Stopped: no new events once detached; deliver those still in the ring.
        self.detach()
        self._drain(sink)
        if self.aggregates is not None:
            # The partial interval too: what was gathered is never lost.
            self._aggregate_report(sink, time.monotonic_ns(), time.monotonic_ns())
        self._report_lost()
        if self.config.stats_interval_ns and self.cleanup is not None:
            sink.write(self.cleanup.final_statistics(time.monotonic_ns() + self.time_base))
        if self._gone is not None:
            raise InterfaceGone(f"interface {self._gone} disappeared; stopping")

    # -- -a ----------------------------------------------------------------------------

    def _aggregate_start(self, sink: Sink, now: int) -> int | None:
        """-a: write the header; the first interval ends one interval from now."""
        if self.aggregates is None:
            return None
        config = self.aggregates.config
        sink.write(
            AggregateHeader(
                now + self.time_base, abi.AGG_BINS, abi.AGG_BIN_WIDTH_NS, config.interval_ns,
                config.timeout_ns, config.ipv4_prefix_len, config.ipv6_prefix_len,
            )
        )  # fmt: skip
        return now + config.interval_ns

    def _aggregate_report(self, sink: Sink, due: int, now: int) -> int:
        """Report the interval that ended at `due` (monotonic ns); the next boundary.

        A late wake-up (a stopped process, a busy machine) gives one report and the
        grid goes on, as ePPing's timer does."""
        assert self.aggregates is not None
        for event in self.aggregates.report(now + self.time_base, self.time_base):
            sink.write(event)
        interval = self.aggregates.config.interval_ns
        return due + ((now - due) // interval + 1) * interval

    def _install_signals(self, wake_fd: int) -> list[Callable[[], object]]:
        """SIGINT/SIGTERM stop, SIGUSR1 asks for the counters; every signal caught by
        Python also wakes the loop through `wake_fd`. Returns the undo actions."""

        def on_stop(signum: int, frame: FrameType | None) -> None:
            self._stop = True

        def on_usr1(signum: int, frame: FrameType | None) -> None:
            self._usr1 = True

        undo: list[Callable[[], object]] = []
        previous_fd = signal.set_wakeup_fd(wake_fd, warn_on_full_buffer=False)
        undo.append(functools.partial(signal.set_wakeup_fd, previous_fd))
        for signum, handler in (
            (signal.SIGINT, on_stop),
            (signal.SIGTERM, on_stop),
            (signal.SIGUSR1, on_usr1),
        ):
            previous = signal.signal(signum, handler)
            undo.append(functools.partial(signal.signal, signum, previous))
        return undo

    # -- the end -------------------------------------------------------------------

    def detach(self) -> None:
        """Take the programs off every interface; the first failure is raised after
        all were tried."""
        failure: KernelError | None = None
        for attachment in self.attachments:
            try:
                attachment.detach()
            except KernelError as error:
                failure = failure or error
        if failure is not None:
            raise failure

    def close(self) -> Counters:
        """Detach, keep the final counters (`final_counters`), unload. Idempotent."""
        try:
            self.detach()
        finally:
            if self.program is not None:
                self.final_counters = self.counters()
                self.program.close()
                self.program = None
        return self.final_counters if self.final_counters is not None else Counters()

    def __enter__(self) -> LiveMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
