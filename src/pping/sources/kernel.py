"""Live monitoring: the kernel program on one or more interfaces, events to a sink.

`LiveMonitor` loads bpf/pping.bpf.o in live mode (time from bpf_ktime_get_ns, the
link is the interface index; the local filter of docs/algorithm.md is on unless
`-l`), attaches it to every interface (src/pping/kernel/attach.py: tcx links, else
clsact), and `run` then loops until SIGINT/SIGTERM or until an interface disappears:

- **events**: the ring buffer is mapped into memory (kernel/ringbuf.py) and waited
  for with epoll, together with a signal wake-up pipe; each wake-up drains every
  committed record and decodes it (kernel/program.py's decoder). Kernel times are
  CLOCK_MONOTONIC, which is bpf_ktime_get_ns; adding `time.time_ns() -
  time.monotonic_ns()` makes them wall-clock times (refreshed when the wall clock is
  stepped).
- **clean-up** every `-c` seconds, on the kernel's maps, with the rules of the
  specification (and `Engine.expire`): see `LiveCleanup` for why it cannot simply
  read, edit and write back the tables as the capture replay does.
- **map-full warnings**: at most one a second per table, whatever the CPUs race to.
- **counters**: the program's per-CPU counters summed, plus the clean-up's; SIGUSR1
  prints them (`write_counters(..., final=False)`), the caller prints the final ones.
- **events lost** because the ring buffer was full are reported on the error stream.

Stopping detaches the programs first, then drains what they emitted before that.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from ..config import (
    MAP_FULL_WARN_INTERVAL_NS,
    NS_PER_S,
    TIMESTAMP_MIN_LIFETIME_NS,
    Config,
    direction_is_old,
    timestamp_is_stale,
)
from ..errors import KernelError, PpingError
from ..events import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    Counters,
    Event,
    EventReason,
    EventSource,
    Flow,
    FlowEvent,
    FlowEventType,
    MapFullEvent,
    StatsEvent,
)
from ..kernel import abi, libbpf
from ..kernel.attach import Attachment, attach, attach_mode, interface_exists, interface_index
from ..kernel.batch import EventBuilder, read_batch
from ..kernel.program import PpingProgram
from ..pressure import PressureMonitor
from ..sinks import Sink

LIVE_RINGBUF_BYTES = 1 << 22  # 4 MiB: ~40000 RTT events of slack for a slow sink
INTERFACE_POLL_NS = NS_PER_S // 5
HOUSEKEEPING_NS = NS_PER_S  # lost-event check, clock offset refresh
BATCH_NS = 10_000_000  # after a wake-up with events, wait this long before the next
CLOCK_STEP_NS = 1_000_000  # a change of the wall-clock offset larger than this is a step

# Linux capability numbers (include/uapi/linux/capability.h).
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_BPF = 39


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

_FLOW_KEY_SIZE = abi.FLOW_KEY_DTYPE.itemsize


def _canonical(direction: bytes) -> tuple[bytes, int]:
    """The flow-table key holding a direction (a packed struct flow_key), and the side
    (0: the key's own direction, 1: the reverse) the direction is stored in."""
    saddr, daddr = direction[8:24], direction[24:40]
    sport = int.from_bytes(direction[40:42], "little")
    dport = int.from_bytes(direction[42:44], "little")
    if (saddr, sport) <= (daddr, dport):
        return direction, 0
    reverse = direction[:8] + daddr + saddr + direction[42:44] + direction[40:42]
    return reverse, 1


def _flow_of(key: bytes, side: int) -> Flow:
    """A direction of a flow-table key, as printed: side 0 is the key's direction."""
    proto = key[4]
    saddr, daddr = key[8:24], key[24:40]
    sport = int.from_bytes(key[40:42], "little")
    dport = int.from_bytes(key[42:44], "little")
    if side:
        return Flow(proto, daddr, dport, saddr, sport)
    return Flow(proto, saddr, sport, daddr, dport)


def old_directions(
    proto: npt.NDArray[Any],
    conn: npt.NDArray[Any],
    last: npt.NDArray[Any],
    now: int,
    divisor: int = 1,
) -> npt.NDArray[np.bool_]:
    """Which directions are *old* (docs/algorithm.md, "Clean-up"), for n flows at once,
    with the flow lifetimes divided by `divisor` (pressure.py).

    `proto` has shape (n,), `conn` (connection states) and `last` (last timestamps)
    shape (n, 2); the result has shape (n, 2).
    """
    active = (conn == abi.CONN_WAITOPEN) | (conn == abi.CONN_OPEN)
    last = last.astype(np.uint64)
    clock = np.uint64(now)
    not_future = last <= clock
    age = np.where(not_future, clock - np.minimum(last, clock), np.uint64(0))
    icmp = ((proto == IPPROTO_ICMP) | (proto == IPPROTO_ICMPV6))[:, None]
    old = direction_is_old(age, conn == abi.CONN_WAITOPEN, icmp, divisor)
    result: npt.NDArray[np.bool_] = active & not_future & old
    return result


def delete_keys(fd: int, keys: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Delete `keys` from a hash map; which of them this call deleted.

    A key that is already gone (the kernel program deleted it meanwhile: a matched
    timestamp, a closed flow) is skipped, not an error: the batch goes on after it.
    """
    deleted = np.zeros(len(keys), dtype=np.bool_)
    if len(keys) == 0:
        return deleted
    keys = np.ascontiguousarray(keys)
    size = keys.dtype.itemsize
    base = int(keys.ctypes.data)
    opts = libbpf.BpfMapBatchOpts(sz=ctypes.sizeof(libbpf.BpfMapBatchOpts))
    delete_batch = libbpf.lib().bpf_map_delete_batch
    start = 0
    while start < len(keys):
        count = ctypes.c_uint32(len(keys) - start)
        result = delete_batch(fd, base + start * size, ctypes.byref(count), ctypes.addressof(opts))
        done = int(count.value)
        deleted[start : start + done] = True
        start += done
        if result == 0:
            break
        if result != -errno.ENOENT:
            raise KernelError(f"failed to delete map entries: {os.strerror(-result)}")
        start += 1  # the key that was gone already
    return deleted


def release_timestamps(
    program: PpingProgram, keys: npt.NDArray[Any], sent: npt.NDArray[Any]
) -> npt.NDArray[np.bool_]:
    """Remove stale timestamps through the kernel's clean-up program (pping_release):
    each is deleted only if it still holds its time in `sent`, and then subtracted
    atomically (never below 0) from the `outstanding` count of its direction when it
    belongs to the direction's current incarnation. Returns which of them were
    deleted by this call (not by a packet's match, not replaced meanwhile)."""
    deleted = np.zeros(len(keys), dtype=np.bool_)
    batch = abi.RELEASE_BATCH
    section = np.zeros(batch, dtype=abi.RELEASE_ENTRY_DTYPE)
    zero = np.zeros(1, dtype=np.uint32)
    for start in range(0, len(keys), batch):
        n = min(batch, len(keys) - start)
        section[:] = 0
        section["key"][:n] = keys[start : start + n]
        section["sent"][:n] = sent[start : start + n]
        # The global array is the single value of its data section's map.
        libbpf.map_update(program.releases_fd, zero, section)
        released = libbpf.run_syscall_program(program.release_fd, abi.ReleaseArgs(count=n))
        if released == n:
            deleted[start : start + n] = True
        elif released:
            if not libbpf.map_lookup(program.releases_fd, zero, section):
                raise KernelError("failed to read the clean-up program's results")
            deleted[start : start + n] = section["result"][:n] != 0
    return deleted


class LiveCleanup:
    """The specification's clean-up on the maps of a running program.

    The rules are those of `Engine.expire` (and of the capture replay's clean-up in
    kernel/replay.py); what differs is how the maps are changed, since the program
    keeps updating them meanwhile:

    - stale timestamps are removed by the kernel's clean-up program
      (`release_timestamps`): a timestamp is deleted only if it still holds the time
      read here (a packet may have matched it, or replaced an orphan, meanwhile), and
      only what this pass deleted is counted and subtracted from `outstanding`, with
      an atomic subtraction on the live flow entry (never below 0), so no update the
      tc programs make to the entry is lost (user space cannot change one field of a
      hash-map value in place, and used to rewrite the whole value);
    - a flow entry found idle is read again before it is deleted, and kept if a packet
      made it live meanwhile.

    After the removals the pressure monitor (pressure.py) decides from the occupancy
    of the snapshot read here (before the removals, as Engine.expire), and a new
    sampling scale is written to the program's `sampling` global.

    Times are the program's clock (CLOCK_MONOTONIC ns); `time_base` is added to the
    times of the events returned.
    """

    def __init__(self, program: PpingProgram, totals: Callable[[], Counters] = Counters) -> None:
        self.program = program
        self.timestamps_expired = 0
        self.flows_expired = 0
        self.pressure = PressureMonitor(program.config)
        # The pressure monitor's counts (sampling_raised, ...); `totals` gives every
        # count of the monitoring, for the statistics records.
        self.pressure_counts = Counters()
        self.totals = totals

    def run(self, now: int, time_base: int = 0) -> list[Event]:
        program = self.program
        flow_keys, flows = libbpf.map_lookup_batch(
            program.flows_fd, abi.FLOW_KEY_DTYPE, abi.DUAL_FLOW_DTYPE
        )
        timestamp_entries = self._expire_timestamps(now, flow_keys, flows)
        events = self._expire_flows(now, time_base, flow_keys, flows)
        return events + self._adapt(now + time_base, timestamp_entries, len(flow_keys))

    def _adapt(self, when: int, timestamp_entries: int, flow_entries: int) -> list[Event]:
        """The pressure monitor's decisions and statistics (events at time `when`)
        from the occupancy the packets left (Engine.expire)."""
        pressure = self.pressure
        scale = pressure.sampling_scale
        events = pressure.at_cleanup(
            when, timestamp_entries, flow_entries, self.pressure_counts, self.totals
        )
        if pressure.sampling_scale != scale:
            self.program.set_sampling_scale(pressure.sampling_scale)
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

    def _expire_timestamps(
        self, now: int, flow_keys: npt.NDArray[Any], flows: npt.NDArray[Any]
    ) -> int:
        """Remove the stale timestamps; returns how many entries there were."""
        program = self.program
        ts_keys, sent = libbpf.map_lookup_batch(
            program.timestamps_fd, abi.TIMESTAMP_KEY_DTYPE, np.dtype(np.uint64)
        )
        if len(ts_keys) == 0:
            return 0
        clock = np.uint64(now)
        # No entry younger than the shortest lifetime can go: skip those in bulk.
        older = sent < clock
        candidates = np.flatnonzero(
            older & (clock - np.where(older, sent, clock) > TIMESTAMP_MIN_LIFETIME_NS)
        )
        if len(candidates) == 0:
            return len(ts_keys)
        raw_flows = flow_keys.tobytes()
        row_of = {
            raw_flows[i * _FLOW_KEY_SIZE : (i + 1) * _FLOW_KEY_SIZE]: i
            for i in range(len(flow_keys))
        }
        srtt = flows["dir"]["srtt"]
        raw_ts = ts_keys.tobytes()
        ts_size = abi.TIMESTAMP_KEY_DTYPE.itemsize
        stale: list[int] = []
        divisor = self.pressure.sampling_scale
        for i in candidates.tolist():
            direction = raw_ts[i * ts_size : i * ts_size + _FLOW_KEY_SIZE]
            key, side = _canonical(direction)
            row = row_of.get(key)
            state_srtt = int(srtt[row, side]) if row is not None else 0
            age = now - int(sent[i])
            if timestamp_is_stale(age, state_srtt, divisor):
                stale.append(i)
        if stale:
            deleted = release_timestamps(program, ts_keys[stale], sent[stale])
            self.timestamps_expired += int(deleted.sum())
        return len(ts_keys)

    def _expire_flows(
        self, now: int, time_base: int, flow_keys: npt.NDArray[Any], flows: npt.NDArray[Any]
    ) -> list[Event]:
        if len(flow_keys) == 0:
            return []
        states = flows["dir"]
        conn = states["conn_state"]
        active = (conn == abi.CONN_WAITOPEN) | (conn == abi.CONN_OPEN)
        divisor = self.pressure.timeout_divisor
        old = old_directions(flow_keys["proto"], conn, states["last_timestamp"], now, divisor)
        dead_rows = np.flatnonzero(~(active & ~old).any(axis=1))
        if len(dead_rows) == 0:
            return []
        # The engine's order: creation order.
        dead_rows = dead_rows[np.argsort(flows["seq"][dead_rows], kind="stable")]
        fd = self.program.flows_fd
        events: list[Event] = []
        fresh = np.zeros(1, dtype=abi.DUAL_FLOW_DTYPE)
        raw = flow_keys.tobytes()
        for row in dead_rows.tolist():
            key = flow_keys[row : row + 1]
            if not libbpf.map_lookup(fd, key, fresh):
                continue  # the program deleted it (a closed flow drained)
            fresh_states = fresh["dir"]
            fresh_conn = fresh_states["conn_state"]
            fresh_active = (fresh_conn == abi.CONN_WAITOPEN) | (fresh_conn == abi.CONN_OPEN)
            fresh_old = old_directions(
                key["proto"], fresh_conn, fresh_states["last_timestamp"], now, divisor
            )
            if (fresh_active & ~fresh_old).any():
                continue  # a packet made it live again
            if not delete_keys(fd, key)[0]:
                continue
            self.flows_expired += 1
            key_bytes = raw[row * _FLOW_KEY_SIZE : (row + 1) * _FLOW_KEY_SIZE]
            # Reported "backwards", as the reply direction, like every other event.
            for side in (0, 1):
                if fresh_old[0, side] and fresh_conn[0, side] == abi.CONN_OPEN:
                    events.append(
                        FlowEvent(
                            now + time_base,
                            _flow_of(key_bytes, 1 - side),
                            FlowEventType.CLOSING,
                            EventReason.FLOW_TIMEOUT,
                            EventSource.GARBAGE_COLLECTION,
                        )
                    )
        return events


# -- the monitor ---------------------------------------------------------------------


class LiveMonitor:
    """The kernel program attached to `interfaces`; `run()` it, then `close()` it.

    Construction resolves the interfaces, checks privileges, loads and attaches (all
    or nothing: a failure undoes what was done and raises KernelError).
    """

    def __init__(
        self,
        config: Config,
        interfaces: Sequence[str],
        *,
        mode: str | None = None,
        ringbuf_bytes: int = LIVE_RINGBUF_BYTES,
        err: TextIO | None = None,
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
        try:
            try:
                self.program = PpingProgram(
                    config,
                    replay=False,
                    local_filter=not config.include_local,
                    ringbuf_bytes=ringbuf_bytes,
                )
            except KernelError as error:
                if "Operation not permitted" in str(error):
                    raise privilege_error(list(self.interfaces.values())) from None
                raise
            self.cleanup = LiveCleanup(self.program, self.counters)
            ingress = self.program.program_fds[abi.PROGRAM_INGRESS]
            egress = self.program.program_fds[abi.PROGRAM_EGRESS]
            for ifindex, name in self.interfaces.items():
                self.attachments.append(attach(name, ingress, egress, chosen, ifindex))
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
        # The whole drained region decoded at once (kernel/batch.py), then emitted.
        events = self._events.events(read_batch(program.ring), self.time_base)
        emit = self._emit
        for event in events:
            emit(sink, event)
        return len(events)

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
            while not self._stop:
                due = min(t for t in (next_cleanup, next_check, next_housekeeping, deadline)
                          if t is not None)  # fmt: skip
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
                    for event in self.cleanup.run(now, self.time_base):
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
                if deadline is not None and now >= deadline:
                    break
                if drained and not self._stop:
                    # Let events gather: under load, one wake-up (and one write of
                    # the output) per BATCH_NS instead of one per event.
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
        self._report_lost()
        if self.config.stats_interval_ns and self.cleanup is not None:
            sink.write(self.cleanup.final_statistics(time.monotonic_ns() + self.time_base))
        if self._gone is not None:
            raise InterfaceGone(f"interface {self._gone} disappeared; stopping")

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
