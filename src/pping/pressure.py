"""Adapting to pressure, and the statistics records: what runs at each clean-up point.

Theory of operation (docs/sampling.md, "Adapting to pressure", has the measurements):

Both tables are bounded. When they fill, pping loses what it is there for: a full
timestamp table refuses new samples, and a full flow table refuses new flows. The
clean-up is the moment the occupancy of both tables is known without any per-packet
cost (every data path walks both tables there), so the decisions are taken there,
from the occupancy the clean-up found: the one the packets of the last interval
lived with (what the clean-up then removes was holding room all the same):

- timestamp table at or above the high-water mark: the sampling interval doubles
  (the *sampling scale*: the effective interval is the configured one times the
  scale, for the static `-r` limit and the `-R` multiplier alike), up to
  MAX_SAMPLING_SCALE. Fewer timestamps per flow make the flows take turns for the
  table. The scale also divides the 10 s that a timestamp of a direction without RTT
  may wait (config.timestamp_lifetime): mostly TSvals no reply will ever echo.
- flow table at or above the high-water mark: every flow lifetime of the clean-up
  rules is divided by the *timeout divisor*, which doubles up to MAX_TIMEOUT_DIVISOR,
  so idle flows make room for active ones sooner.
- below the low-water mark at RELAX_AFTER clean-ups in a row, a setting halves, back
  down to the configured value.

Growing tables (`--max-timestamps-cap`, `--max-flows-cap`): a table at or above the
high-water mark whose capacity is below its cap doubles its capacity (up to the cap)
instead; only a table that cannot grow any more takes the steps above (with
`--adaptive`). Growing is preferred: it keeps every sample and every flow, where the
steps trade samples or idle flows for room. Capacities never shrink.

Between the two marks nothing changes (hysteresis: a table that hovers around one
mark does not make the settings flap). One step per clean-up: the effect of a change
shows in the occupancy of the next clean-up before the next step is taken.

`PressureController` is the pure decision (occupancy in, changes out).
`PressureMonitor` wraps it for a data path: it turns the changes into events and
counters, keeps the capacities in force, and writes the statistics records
(`--stats-interval`), so that the engine, the kernel replay and the live clean-up
share one implementation and take the same decisions at the same moments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .config import FLOW_LIFETIME_NS, Config
from .events import Counters, Event, PressureChange, PressureEvent, StatsEvent, Table

# 64 x the default 100 ms: one sample per 6.4 s and direction at most. Past that a
# monitor has stopped measuring RTTs; a bigger table is the answer then.
MAX_SAMPLING_SCALE = 64
# 300 s / 16 = 18.75 s (30 s / 16 = 1.875 s for unopened and ICMP flows): still far
# above any round trip, so a flow that is merely between two bursts is not expired.
MAX_TIMEOUT_DIVISOR = 16
STEP = 2
# Clean-ups in a row below the low-water mark before a step down.
RELAX_AFTER = 3

_COUNTER_OF = {
    PressureChange.SAMPLING_RAISED: "sampling_raised",
    PressureChange.SAMPLING_RELAXED: "sampling_relaxed",
    PressureChange.TIMEOUT_SHORTENED: "timeout_shortened",
    PressureChange.TIMEOUT_RESTORED: "timeout_restored",
    PressureChange.TIMESTAMPS_GROWN: "timestamps_grown",
    PressureChange.FLOWS_GROWN: "flows_grown",
}
_TIMESTAMP_CHANGES = (
    PressureChange.SAMPLING_RAISED,
    PressureChange.SAMPLING_RELAXED,
    PressureChange.TIMESTAMPS_GROWN,
)


def at_or_above(entries: int, capacity: int, percent: int) -> bool:
    """entries / capacity >= percent / 100, in integers."""
    return entries * 100 >= percent * capacity


def grown(capacity: int, cap: int) -> int:
    """The capacity after one growth step: doubled, at most `cap`."""
    return min(capacity * STEP, cap)


@dataclass(slots=True)
class _Knob:
    """One setting stepped by the occupancy of one table: 1 .. ceiling."""

    ceiling: int
    value: int = 1
    quiet: int = 0  # consecutive clean-ups that allowed a step down

    def step(self, high: bool, low: bool) -> int:
        """The new value: up on `high`, down after RELAX_AFTER clean-ups in a row
        with `low`."""
        self.quiet = self.quiet + 1 if low and not high else 0
        if high:
            self.value = min(self.value * STEP, self.ceiling)
        elif self.quiet >= RELAX_AFTER and self.value > 1:
            self.value //= STEP
            self.quiet = 0
        return self.value


class PressureController:
    """High/low water marks with hysteresis, for the sampling scale (timestamp table)
    and the timeout divisor (flow table), and growth of either table up to its cap.
    Marks are percentages of a table's capacity in force.

    A table is *high* when its occupancy is at or above the high mark, *low* when it
    is below the low mark. A high table below its cap (`timestamp_cap`, `flow_cap`;
    0: never grows) grows, and its setting does not step. Otherwise, with `adaptive`,
    its setting steps up; a step down needs RELAX_AFTER low updates in a row: a step
    down doubles the demand at once (every flow whose interval has passed samples
    again), and the occupancy a clean-up finds is one moment of it.
    """

    def __init__(
        self,
        high_water: int,
        low_water: int,
        max_sampling_scale: int = MAX_SAMPLING_SCALE,
        max_timeout_divisor: int = MAX_TIMEOUT_DIVISOR,
        *,
        adaptive: bool = True,
        timestamp_cap: int = 0,
        flow_cap: int = 0,
    ) -> None:
        self.high_water = high_water
        self.low_water = low_water
        # Without --adaptive the settings never leave 1.
        self._sampling = _Knob(max_sampling_scale if adaptive else 1)
        self._timeout = _Knob(max_timeout_divisor if adaptive else 1)
        self.timestamp_cap = timestamp_cap
        self.flow_cap = flow_cap

    @property
    def sampling_scale(self) -> int:
        return self._sampling.value

    @property
    def timeout_divisor(self) -> int:
        return self._timeout.value

    def update(
        self,
        timestamp_entries: int,
        max_timestamps: int,
        flow_entries: int,
        max_flows: int,
    ) -> list[PressureChange]:
        """One decision per table from its occupancy of its capacity in force; returns
        what changed (a GROWN change means: double that capacity, see `grown`)."""
        timestamps = self._decide(
            self._sampling,
            timestamp_entries,
            max_timestamps,
            self.timestamp_cap,
            (
                PressureChange.TIMESTAMPS_GROWN,
                PressureChange.SAMPLING_RAISED,
                PressureChange.SAMPLING_RELAXED,
            ),
        )
        flows = self._decide(
            self._timeout,
            flow_entries,
            max_flows,
            self.flow_cap,
            (
                PressureChange.FLOWS_GROWN,
                PressureChange.TIMEOUT_SHORTENED,
                PressureChange.TIMEOUT_RESTORED,
            ),
        )
        return [change for change in (timestamps, flows) if change is not None]

    def _decide(
        self,
        knob: _Knob,
        entries: int,
        capacity: int,
        cap: int,
        outcomes: tuple[PressureChange, PressureChange, PressureChange],
    ) -> PressureChange | None:
        """One table's change, if any: `outcomes` names growth, step up, step down."""
        grew, raised, relaxed = outcomes
        if self._grows(entries, capacity, cap):
            knob.quiet = 0
            return grew
        before = knob.value
        after = self._step(knob, entries, capacity)
        if after == before:
            return None
        return raised if after > before else relaxed

    def _grows(self, entries: int, capacity: int, cap: int) -> bool:
        return capacity < cap and at_or_above(entries, capacity, self.high_water)

    def _step(self, knob: _Knob, entries: int, capacity: int) -> int:
        high = at_or_above(entries, capacity, self.high_water)
        low = not at_or_above(entries, capacity, self.low_water)
        return knob.step(high, low)


class PressureMonitor:
    """The clean-up's pressure and statistics duties for one data path.

    The data path calls `at_cleanup` after each clean-up with the occupancy it found, and
    applies `sampling_scale` (to its rate limits), `timeout_divisor` (to
    `config.direction_is_old`) and the capacities `max_timestamps` and `max_flows` (the
    occupancy at which a table refuses new entries) from then on.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.controller = (
            PressureController(
                config.high_water,
                config.low_water,
                adaptive=config.adaptive,
                timestamp_cap=config.max_timestamps_cap,
                flow_cap=config.max_flows_cap,
            )
            if config.adaptive or config.grows
            else None
        )
        self.max_timestamps = config.max_timestamps
        self.max_flows = config.max_flows
        self._stats_due: int | None = None

    @property
    def sampling_scale(self) -> int:
        return self.controller.sampling_scale if self.controller is not None else 1

    @property
    def timeout_divisor(self) -> int:
        return self.controller.timeout_divisor if self.controller is not None else 1

    @property
    def limits(self) -> tuple[int, int, int]:
        """What a data path applies after a clean-up: the sampling scale and the
        capacities of the timestamp and flow tables."""
        return (self.sampling_scale, self.max_timestamps, self.max_flows)

    @property
    def rate_limit_ns(self) -> int:
        """The static sampling interval in force."""
        return self.config.rate_limit_ns * self.sampling_scale

    @property
    def flow_timeout_ns(self) -> int:
        """The longest flow lifetime in force (an open TCP flow's)."""
        return FLOW_LIFETIME_NS // self.timeout_divisor

    def at_cleanup(
        self,
        now: int,
        timestamp_entries: int,
        flow_entries: int,
        counters: Counters,
        totals: Callable[[], Counters],
    ) -> list[Event]:
        """Decide from the occupancy found by the clean-up at `now`: pressure events
        (each also counted in `counters`), then a statistics record if one is due
        (its counts from `totals()`, which must include `counters`)."""
        events: list[Event] = []
        if self.controller is not None:
            for change in self.controller.update(
                timestamp_entries, self.max_timestamps, flow_entries, self.max_flows
            ):  # fmt: skip
                name = _COUNTER_OF[change]
                setattr(counters, name, getattr(counters, name) + 1)
                events.append(self._apply(now, change, timestamp_entries, flow_entries))
        if self._stats_due_at(now):
            events.append(self.statistics(now, False, totals(), timestamp_entries, flow_entries))
        return events

    def _apply(
        self, now: int, change: PressureChange, timestamp_entries: int, flow_entries: int
    ) -> PressureEvent:
        """Apply a growth to the capacities; the event that reports `change`."""
        if change in _TIMESTAMP_CHANGES:
            table, entries, capacity = Table.TIMESTAMPS, timestamp_entries, self.max_timestamps
            if change == PressureChange.TIMESTAMPS_GROWN:
                self.max_timestamps = grown(capacity, self.config.max_timestamps_cap)
            grown_to = self.max_timestamps
        else:
            table, entries, capacity = Table.FLOWS, flow_entries, self.max_flows
            if change == PressureChange.FLOWS_GROWN:
                self.max_flows = grown(capacity, self.config.max_flows_cap)
            grown_to = self.max_flows
        return PressureEvent(
            timestamp=now,
            change=change,
            table=table,
            entries=entries,
            capacity=capacity,
            sampling_scale=self.sampling_scale,
            rate_limit_ns=self.rate_limit_ns,
            timeout_divisor=self.timeout_divisor,
            flow_timeout_ns=self.flow_timeout_ns,
            grown_to=grown_to,
        )

    def _stats_due_at(self, now: int) -> bool:
        interval = self.config.stats_interval_ns
        if interval <= 0:
            return False
        if self._stats_due is None:
            # The first clean-up runs one clean-up interval after the start.
            self._stats_due = now - self.config.cleanup_interval_ns + interval
        if now < self._stats_due:
            return False
        self._stats_due = now + interval
        return True

    def statistics(
        self, now: int, final: bool, counters: Counters, timestamp_entries: int, flow_entries: int
    ) -> StatsEvent:
        """A statistics record at `now` from the totals `counters` and the occupancy."""
        c = counters
        return StatsEvent(
            timestamp=now,
            final=final,
            packets=c.packets,
            timestamps_created=c.timestamps_created,
            timestamps_matched=c.timestamps_matched,
            timestamps_expired=c.timestamps_expired,
            timestamps_table_full=c.timestamps_table_full,
            timestamps_capped=c.timestamps_capped,
            flows_created=c.flows_created,
            rtt_events=c.rtt_events,
            timestamp_entries=timestamp_entries,
            max_timestamps=self.max_timestamps,
            flow_entries=flow_entries,
            max_flows=self.max_flows,
            sampling_scale=self.sampling_scale,
            rate_limit_ns=self.rate_limit_ns,
            timeout_divisor=self.timeout_divisor,
            flow_timeout_ns=self.flow_timeout_ns,
        )
