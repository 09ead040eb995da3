"""The human-readable line format (ePPing's "standard" format), and text helpers
shared by the other sinks: time of day, flow text, map-full warnings, pressure and
statistics lines, and the counters summary written to the error stream.

    17:32:36.559578291 14.4563 ms 0.030275 ms TCP 198.18.0.2:5201+198.18.0.1:41356
    17:32:36.101000000 TCP 198.18.0.2:5201+198.18.0.1:41356 opening due to SYN-ACK from dest
    17:32:37.000000000 Pressure: sampling interval raised to 200 ms (x2), timestamp table \
at 93% (952 of 1024)
    17:32:38.000000000 Statistics: 5120 packets, 310 RTT events; timestamps 340 created, ...
"""

from __future__ import annotations

import time

from ..events import (
    REASON_NAMES,
    SOURCE_NAMES,
    AggregateEvent,
    AggregateHeader,
    Counters,
    Event,
    EventReason,
    EventSource,
    Flow,
    FlowEvent,
    FlowEventType,
    MapFullEvent,
    PressureChange,
    PressureEvent,
    RttEvent,
    StatsEvent,
    Table,
)
from .columnar import (
    FlowTexts,
    RttColumns,
    digits,
    general6,
    per_second,
    render,
    seconds_and_fraction,
)
from .output import TextStream, write_ascii

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000

FLOW_EVENT_NAMES = {
    FlowEventType.NONE: "none",
    FlowEventType.OPENING: "opening",
    FlowEventType.CLOSING: "closing",
    FlowEventType.CLOSING_BOTH: "closing",
}

# Words used in the map-full warning, as ePPing prints them.
TABLE_ENTRY_NAMES = {Table.TIMESTAMPS: "timestamp", Table.FLOWS: "flow"}

_CLOCK = "%s.%09d"

# ePPing prints RTTs in milliseconds with printf's %.6g (six significant digits).
_RTT_LINE = "%s.%09d %.6g ms %.6g ms %s\n"

# Per-flow text caches are cleared when they grow past this many flows.
FLOW_CACHE_LIMIT = 1 << 16


def flow_event_name(event_type: FlowEventType) -> str:
    return FLOW_EVENT_NAMES.get(event_type, "unknown")


def reason_name(reason: EventReason) -> str:
    return REASON_NAMES.get(reason, "unknown")


def source_name(source: EventSource) -> str:
    return SOURCE_NAMES.get(source, "unknown")


def time_of_day(sec: int) -> str:
    """`HH:MM:SS` (local time) of second `sec` since the epoch."""
    return time.strftime("%H:%M:%S", time.localtime(sec))


class ClockText:
    """Local time of day `HH:MM:SS.nnnnnnnnn` for epoch nanoseconds.

    `hms` (the `HH:MM:SS` of second `sec`) is recomputed only when the second
    changes; hot paths split the timestamp themselves and call `set_second`.
    """

    __slots__ = ("hms", "sec")

    def __init__(self) -> None:
        self.sec = -1
        self.hms = ""

    def set_second(self, sec: int) -> None:
        self.hms = time_of_day(sec)
        self.sec = sec

    def __call__(self, timestamp: int) -> str:
        sec, ns = divmod(timestamp, NS_PER_S)
        if sec != self.sec:
            self.set_second(sec)
        return _CLOCK % (self.hms, ns)


def map_full_warning(clock: ClockText, event: MapFullEvent) -> str:
    """ePPing's warning line for a refused table entry (with the trailing newline)."""
    what = TABLE_ENTRY_NAMES.get(event.table, "table")
    when = clock(event.timestamp)
    return f"{when} Warning: Unable to create {what} entry for flow {event.flow}\n"


PRESSURE_NAMES = {
    PressureChange.SAMPLING_RAISED: "sampling interval raised",
    PressureChange.SAMPLING_RELAXED: "sampling interval relaxed",
    PressureChange.TIMEOUT_SHORTENED: "flow timeout shortened",
    PressureChange.TIMEOUT_RESTORED: "flow timeout restored",
}
_GROWN = (PressureChange.TIMESTAMPS_GROWN, PressureChange.FLOWS_GROWN)
TABLE_NAMES_TEXT = {Table.TIMESTAMPS: "timestamp table", Table.FLOWS: "flow table"}


def _percent(entries: int, capacity: int) -> int:
    return entries * 100 // capacity if capacity else 0


def _sampling_text(rate_limit_ns: int, scale: int) -> str:
    return f"{rate_limit_ns / NS_PER_MS:g} ms (x{scale})"


def _timeout_text(flow_timeout_ns: int, divisor: int) -> str:
    return f"{flow_timeout_ns / NS_PER_S:g} s (/{divisor})"


def pressure_line(clock: ClockText, event: PressureEvent) -> str:
    """A pressure change as one line (with the trailing newline)."""
    what = PRESSURE_NAMES.get(event.change, "setting changed")
    if event.change in _GROWN:
        what, value = "table grown", f"{event.grown_to} entries"
    elif event.table == Table.TIMESTAMPS:
        value = _sampling_text(event.rate_limit_ns, event.sampling_scale)
    else:
        value = _timeout_text(event.flow_timeout_ns, event.timeout_divisor)
    table = TABLE_NAMES_TEXT.get(event.table, "table")
    return (
        f"{clock(event.timestamp)} Pressure: {what} to {value}, {table} at "
        f"{_percent(event.entries, event.capacity)}% ({event.entries} of {event.capacity})\n"
    )


def stats_line(clock: ClockText, event: StatsEvent) -> str:
    """A statistics record as one line (with the trailing newline)."""
    e = event
    title = "Final statistics" if e.final else "Statistics"
    return (
        f"{clock(e.timestamp)} {title}: {e.packets} packets, {e.rtt_events} RTT events; "
        f"timestamps {e.timestamps_created} created, {e.timestamps_matched} matched, "
        f"{e.timestamps_expired} expired, {e.timestamps_table_full} refused (table full), "
        f"{e.timestamps_capped} refused (cap); timestamp table {e.timestamp_entries} of "
        f"{e.max_timestamps} ({_percent(e.timestamp_entries, e.max_timestamps)}%); "
        f"flows {e.flows_created} created, flow table {e.flow_entries} of {e.max_flows} "
        f"({_percent(e.flow_entries, e.max_flows)}%); sampling interval "
        f"{_sampling_text(e.rate_limit_ns, e.sampling_scale)}, flow timeout "
        f"{_timeout_text(e.flow_timeout_ns, e.timeout_divisor)}\n"
    )


def counters_text(counters: Counters, final: bool) -> str:
    """A short multi-line summary of the data path's counters, for the error stream."""
    c = counters
    title = "Summary" if final else "Counters so far"
    skipped_total = sum(c.skipped.values())
    lines = [f"{title}: {c.packets} packets, {c.rtt_events} RTT events"]
    if c.skipped:
        detail = ", ".join(f"{reason}: {count}" for reason, count in sorted(c.skipped.items()))
        lines.append(f"  skipped:    {skipped_total} ({detail})")
    else:
        lines.append("  skipped:    0")
    lines.append(
        f"  timestamps: {c.timestamps_created} created, {c.timestamps_matched} matched, "
        f"{c.timestamps_expired} expired, {c.timestamps_table_full} refused (table full)"
        + (f", {c.timestamps_capped} refused (cap)" if c.timestamps_capped else "")
    )
    lines.append(
        f"  flows:      {c.flows_created} created, {c.flows_closed} closed, "
        f"{c.flows_expired} expired, {c.flows_table_full} refused (table full)"
    )
    changes = c.sampling_raised + c.sampling_relaxed + c.timeout_shortened + c.timeout_restored
    if changes:
        lines.append(
            f"  pressure:   sampling raised {c.sampling_raised}, relaxed {c.sampling_relaxed}; "
            f"flow timeout shortened {c.timeout_shortened}, restored {c.timeout_restored}"
        )
    if c.timestamps_grown or c.flows_grown:
        lines.append(
            f"  growth:     timestamp table {c.timestamps_grown} times, "
            f"flow table {c.flows_grown} times"
        )
    return "\n".join(lines) + "\n"


def aggregate_header_text(event: AggregateHeader) -> str:
    """ePPing's first line with -a (with the trailing newline)."""
    return (
        f"Aggregating RTTs in histograms with {event.bins} {event.bin_width / NS_PER_MS:.6g} ms"
        f" wide bins every {event.interval / NS_PER_S:.9g} seconds\n"
    )


def aggregate_text(clock: ClockText, event: AggregateEvent) -> str:
    """ePPing's line for one prefix and interval (with the trailing newline)."""
    line = (
        f"{clock(event.timestamp)}: {event.prefix} -> rxpkts={event.rx.packets}, "
        f"rxbytes={event.rx.bytes}, txpkts={event.tx.packets}, txbytes={event.tx.bytes}"
    )
    if event.rtt_count:
        line += (
            f", rtt-count={event.rtt_count}, min={event.rtt_min / NS_PER_MS:.6g} ms, "
            f"mean={event.rtt_mean() / NS_PER_MS:g} ms, "
            f"median={event.rtt_percentile(50) / NS_PER_MS:g} ms, "
            f"p95={event.rtt_percentile(95) / NS_PER_MS:g} ms, "
            f"max={event.rtt_max / NS_PER_MS:.6g} ms"
        )
    return line + "\n"


class TextSink:
    """What the line formats share: the streams, the clock text, a bounded cache of
    flow texts, and the warnings and summary on the error stream."""

    def __init__(self, out: TextStream, err: TextStream) -> None:
        self._out = out
        self._err = err
        self._clock = ClockText()
        self._flow_text: dict[Flow, str] = {}
        self._flow_columns = FlowTexts(self._flow_text_of)
        self._closed = False

    def _flow_text_of(self, flow: Flow) -> str:
        """The flow as the format prints it (cached: called for every event)."""
        return str(flow)

    def _flow(self, flow: Flow) -> str:
        text = self._flow_text_of(flow)
        cache = self._flow_text
        if len(cache) >= FLOW_CACHE_LIMIT:
            cache.clear()
        cache[flow] = text
        return text

    def _warn(self, event: MapFullEvent) -> None:
        self._err.write(map_full_warning(self._clock, event))

    def _note(self, event: PressureEvent | StatsEvent) -> None:
        """Pressure and statistics lines: on the error stream, beside the warnings
        (the RTT-only formats have no place for them in their output)."""
        self._err.write(self._note_line(event))

    def _note_line(self, event: PressureEvent | StatsEvent) -> str:
        if type(event) is PressureEvent:
            return pressure_line(self._clock, event)
        assert type(event) is StatsEvent
        return stats_line(self._clock, event)

    def write_counters(self, counters: Counters, final: bool) -> None:
        self._err.write(counters_text(counters, final))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._out.flush()


class StandardSink(TextSink):
    """One line per RTT or flow event on `out`; warnings and the summary on `err`."""

    def _flow_text_of(self, flow: Flow) -> str:
        return f"{flow.protocol_name} {flow}"

    def write(self, event: Event) -> None:
        if type(event) is RttEvent:
            # %-formatting: about a third faster than the equivalent f-string here.
            sec, ns = divmod(event.timestamp, NS_PER_S)
            clock = self._clock
            if sec != clock.sec:
                clock.set_second(sec)
            flow = self._flow_text.get(event.flow) or self._flow(event.flow)
            self._out.write(
                _RTT_LINE % (clock.hms, ns, event.rtt / NS_PER_MS, event.min_rtt / NS_PER_MS, flow)
            )
        elif type(event) is FlowEvent:
            flow = self._flow_text.get(event.flow) or self._flow(event.flow)
            self._out.write(
                f"{self._clock(event.timestamp)} {flow} {flow_event_name(event.event_type)}"
                f" due to {reason_name(event.reason)} from {source_name(event.source)}\n"
            )
        elif type(event) is MapFullEvent:
            self._warn(event)
        elif type(event) is PressureEvent or type(event) is StatsEvent:
            self._out.write(self._note_line(event))
        elif type(event) is AggregateEvent:
            self._out.write(aggregate_text(self._clock, event))
        elif type(event) is AggregateHeader:
            self._out.write(aggregate_header_text(event))

    def write_rtt_batch(self, columns: RttColumns) -> None:
        """The lines `write` prints for these RTT events, built with numpy."""
        if not len(columns):
            return
        seconds, ns = seconds_and_fraction(columns.timestamp, NS_PER_S)
        text = render(
            [
                per_second(seconds, time_of_day),
                b".",
                digits(ns, 9),
                b" ",
                *general6(columns.rtt, NS_PER_MS),
                b" ms ",
                *general6(columns.min_rtt, NS_PER_MS),
                b" ms ",
                self._flow_columns.field(columns),
                b"\n",
            ]
        )
        write_ascii(self._out, text)
