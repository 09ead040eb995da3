"""Adapting to pressure, fairness and statistics (src/pping/pressure.py and its users).

The captures here are built packet by packet with exact ground truth: each flow's
client sends a data segment every `interval` with a TSval of its own (1 ms ticks), the
server acknowledges each one exactly `rtt` later. So every RTT pping reports must be
exactly its flow's `rtt`, and which segments can be sampled is known.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import os
import struct
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

import tracegen
from pping.cli import main
from pping.config import (
    FLOW_LIFETIME_NS,
    Config,
    default_max_outstanding,
    direction_is_old,
    timestamp_is_stale,
    timestamp_lifetime,
)
from pping.engine import Engine
from pping.errors import KernelError, OptionsError
from pping.events import (
    Counters,
    Event,
    EventReason,
    FlowEvent,
    MapFullEvent,
    PressureChange,
    PressureEvent,
    RttEvent,
    StatsEvent,
    Table,
)
from pping.fastpath import fast_replay
from pping.pressure import (
    MAX_SAMPLING_SCALE,
    MAX_TIMEOUT_DIVISOR,
    RELAX_AFTER,
    PressureController,
    PressureMonitor,
    at_or_above,
)
from pping.replay import replay
from pping.sinks import make_sink
from pping.sources.pcap import CaptureReader

MS = 1_000_000
S = 1_000_000_000
T0 = 1_700_000_000 * S
RAISED, RELAXED = PressureChange.SAMPLING_RAISED, PressureChange.SAMPLING_RELAXED
SHORTENED, RESTORED = PressureChange.TIMEOUT_SHORTENED, PressureChange.TIMEOUT_RESTORED
SERVER = 0xC6130001  # 198.19.0.1
PSH_ACK, ACK = 0x18, 0x10


# -- captures with exact ground truth ---------------------------------------------------


@dataclass(frozen=True)
class FlowSpec:
    """Client `index` (198.18.0.0 + index) sends from `start` to `stop` (relative
    times, ns) every `interval`; each segment is acknowledged `rtt` later."""

    index: int
    interval: int
    rtt: int
    start: int = 0
    stop: int = 5 * S


def _frame(src: int, dst: int, sport: int, dport: int, flags: int, tsval: int, tsecr: int,
           payload: int) -> bytes:  # fmt: skip
    tcp = struct.pack(
        "!HHIIBBHHHBBBBII", sport, dport, 0, 0, 8 << 4, flags, 0xFFFF, 0, 0,
        1, 1, 8, 10, tsval & 0xFFFFFFFF, tsecr & 0xFFFFFFFF,
    )  # fmt: skip
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(tcp) + payload, 0, 0, 64, 6, 0, src, dst)
    return bytes(12) + b"\x08\x00" + ip + tcp + bytes(payload)


def client_ip(index: int) -> int:
    return 0xC6120000 + index + 1  # 198.18.0.0/15


def capture(flows: list[FlowSpec]) -> bytes:
    """A pcap of `flows` (see FlowSpec); an ACK and a segment at the same time are
    written ACK first."""
    packets: list[tuple[int, int, bytes]] = []
    for f in flows:
        client = client_ip(f.index)
        t = f.start
        while t < f.stop:
            tsval = t // MS + 1
            packets.append((t, 1, _frame(client, SERVER, 40000, 443, PSH_ACK, tsval, 1, 100)))
            ack = _frame(SERVER, client, 443, 40000, ACK, (t + f.rtt) // MS + 1, tsval, 0)
            packets.append((t + f.rtt, 0, ack))
            t += f.interval
    packets.sort(key=lambda p: (p[0], p[1]))
    out = [struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1)]
    for t, _, data in packets:
        when = T0 + t
        out.append(struct.pack("<IIII", when // S, when % S, len(data), len(data)) + data)
    return b"".join(out)


def engine_events(raw: bytes, config: Config) -> tuple[list[Event], Engine]:
    engine = Engine(config)
    return list(replay(engine, CaptureReader(io.BytesIO(raw)))), engine


def rtts_by_client(events: list[Event]) -> dict[int, list[RttEvent]]:
    """RTT events by client index (the reply's destination is the client)."""
    found: dict[int, list[RttEvent]] = defaultdict(list)
    for event in events:
        if isinstance(event, RttEvent):
            found[int.from_bytes(event.flow.daddr[12:], "big") - client_ip(0)].append(event)
    return found


E = TypeVar("E")


def of_type(events: list[Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


# -- the controller ----------------------------------------------------------------------


def test_marks_are_integer_percentages() -> None:
    assert at_or_above(9, 10, 90)
    assert not at_or_above(8, 9, 90)  # 88.9%
    assert at_or_above(922, 1024, 90) and not at_or_above(921, 1024, 90)


def test_sampling_scale_steps_with_hysteresis() -> None:
    c = PressureController(90, 40)
    assert c.update(89, 100, 0, 100) == [] and c.sampling_scale == 1
    assert c.update(90, 100, 0, 100) == [RAISED] and c.sampling_scale == 2
    assert c.update(100, 100, 0, 100) == [RAISED] and c.sampling_scale == 4
    # Between the marks, and exactly at the low one, nothing changes.
    for entries in (89, 60, 40):
        assert c.update(entries, 100, 0, 100) == [] and c.sampling_scale == 4
    # Below the low mark: one step down after RELAX_AFTER clean-ups in a row.
    assert RELAX_AFTER == 3
    assert [c.update(39, 100, 0, 100) for _ in range(3)] == [[], [], [RELAXED]]
    assert c.sampling_scale == 2
    assert c.update(0, 100, 0, 100) == [] and c.update(40, 100, 0, 100) == []  # reset
    assert [c.update(0, 100, 0, 100) for _ in range(3)] == [[], [], [RELAXED]]
    assert c.sampling_scale == 1
    assert [c.update(0, 100, 0, 100) for _ in range(5)] == [[]] * 5


def test_sampling_scale_and_timeout_divisor_have_ceilings() -> None:
    c = PressureController(90, 40)
    changes = [c.update(100, 100, 100, 100) for _ in range(10)]
    assert c.sampling_scale == MAX_SAMPLING_SCALE == 64
    assert c.timeout_divisor == MAX_TIMEOUT_DIVISOR == 16
    assert sum(RAISED in step for step in changes) == 6
    assert sum(SHORTENED in step for step in changes) == 4
    assert changes[0] == [RAISED, SHORTENED] and changes[9] == []


def test_timeout_divisor_restores_below_the_low_mark() -> None:
    c = PressureController(80, 20)
    assert c.update(0, 10, 8, 10) == [SHORTENED] and c.timeout_divisor == 2
    assert c.update(0, 10, 2, 10) == [] and c.timeout_divisor == 2
    assert [c.update(0, 10, 1, 10) for _ in range(3)] == [[], [], [RESTORED]]
    assert c.timeout_divisor == 1


def test_flow_lifetimes_divided_exactly() -> None:
    lifetime = FLOW_LIFETIME_NS // 16
    assert lifetime == 18_750_000_000
    assert not direction_is_old(lifetime, False, False, 16)
    assert direction_is_old(lifetime + 1, False, False, 16)
    assert direction_is_old(1_875_000_001, True, False, 16)  # unopened: 30 s / 16


def test_timestamps_without_rtt_wait_less_under_pressure() -> None:
    assert [timestamp_lifetime(d) for d in (1, 2, 8, 16, 64)] == [
        10 * S, 5 * S, 1_250 * MS, 1 * S, 1 * S,
    ]  # fmt: skip
    assert not timestamp_is_stale(1_250 * MS, 0, 8) and timestamp_is_stale(1_250 * MS + 1, 0, 8)
    # With an RTT known the rule is 8 x srtt, at least 200 ms, whatever the pressure.
    assert timestamp_is_stale(200 * MS + 1, 10 * MS, 1) and not timestamp_is_stale(
        200 * MS, 10 * MS, 64
    )


def test_statistics_are_due_every_interval_from_the_start() -> None:
    config = Config(cleanup_interval_ns=S, stats_interval_ns=2 * S)
    monitor = PressureMonitor(config)
    due = [
        t for t in range(1, 8) if monitor.at_cleanup(t * S, 0, 0, Counters(), Counters)
    ]  # clean-ups at 1 .. 7 s after a start at 0
    assert due == [2, 4, 6]


def test_options_are_checked() -> None:
    with pytest.raises(OptionsError, match="water marks"):
        Config(high_water=50, low_water=50)
    with pytest.raises(OptionsError, match="needs the clean-up"):
        Config(adaptive=True, cleanup_interval_ns=0)
    with pytest.raises(OptionsError, match="needs the clean-up"):
        Config(stats_interval_ns=S, cleanup_interval_ns=0)
    with pytest.raises(OptionsError, match="max-outstanding"):
        Config(max_outstanding=-1)
    assert Config().outstanding_cap == default_max_outstanding(131072) == 16384
    assert Config(max_timestamps=1024).outstanding_cap == 128
    assert Config(max_timestamps=5).outstanding_cap == 16
    assert Config(max_outstanding=0).outstanding_cap == 0


# -- the engine ----------------------------------------------------------------------------


def test_scale_multiplies_the_static_limit() -> None:
    raw = capture([FlowSpec(0, 10 * MS, 5 * MS, stop=1 * S)])
    engine = Engine(Config(rate_limit_ns=10 * MS))
    engine.set_sampling_scale(3)
    events = list(replay(engine, CaptureReader(io.BytesIO(raw))))
    sent = [e.timestamp - e.rtt for e in of_type(events, RttEvent)]
    # Segments every 10 ms; the first waits for the first edge of its TSval (it may
    # not be the first to carry it), the second is stamped, then every third (30 ms).
    assert [t - T0 for t in sent] == [10 * MS + i * 30 * MS for i in range(33)]
    assert {e.rtt for e in of_type(events, RttEvent)} == {5 * MS}


def test_scale_multiplies_the_rtt_rate() -> None:
    raw = capture([FlowSpec(0, 10 * MS, 20 * MS, stop=1 * S)])
    engine = Engine(Config(rate_limit_ns=0, rtt_rate=1.0))
    engine.set_sampling_scale(2)
    events = list(replay(engine, CaptureReader(io.BytesIO(raw))))
    sent = [e.timestamp - e.rtt - T0 for e in of_type(events, RttEvent)]
    # -r 0 until the first RTT (20 ms, known at 30 ms) is known; then 2 x 20 ms.
    assert sent[:4] == [10 * MS, 20 * MS, 60 * MS, 100 * MS]
    assert all(b - a == 40 * MS for a, b in itertools.pairwise(sent[2:]))


def test_outstanding_cap_refuses_and_counts_the_attempt() -> None:
    # A segment every ms, RTT 10 ms: ten would be outstanding; the cap is 4.
    raw = capture([FlowSpec(0, 1 * MS, 10 * MS, stop=100 * MS)])
    events, engine = engine_events(raw, Config(rate_limit_ns=0, max_outstanding=4))
    sent = [e.timestamp - e.rtt - T0 for e in of_type(events, RttEvent)]
    # 1..4 ms stamped (0 ms waits for the first edge), 5..10 ms refused; at 11 ms the
    # first reply frees a slot; and so on in every 10 ms.
    assert sent[:8] == [MS, 2 * MS, 3 * MS, 4 * MS, 11 * MS, 12 * MS, 13 * MS, 14 * MS]
    assert engine.counters.timestamps_capped == 6 * 9 + 5
    assert engine.counters.timestamps_created == 40
    assert engine.counters.timestamps_table_full == 0


def fairness_capture() -> bytes:
    """One heavy flow (a segment every ms, RTT 100 ms: 100 timestamps outstanding at
    -r 0) and 30 light ones (every 50 ms, RTT 20 ms), the light ones starting once the
    heavy one holds the table."""
    heavy = FlowSpec(0, 1 * MS, 100 * MS, stop=3 * S)
    light = [FlowSpec(i, 50 * MS, 20 * MS, start=500 * MS + i * MS, stop=3 * S)
             for i in range(1, 31)]  # fmt: skip
    return capture([heavy, *light])


def fairness_config(max_outstanding: int | None = None) -> Config:
    """-r 0 on a table of 64 entries; the default cap is then 16."""
    return Config(rate_limit_ns=0, max_timestamps=64, max_outstanding=max_outstanding)


def test_a_heavy_flow_cannot_hold_the_table() -> None:
    raw = fairness_capture()
    starved, uncapped = engine_events(raw, fairness_config(max_outstanding=0))
    fair, capped = engine_events(raw, fairness_config())  # default cap: 16
    # Without the cap the heavy flow takes every slot that frees up first.
    assert set(rtts_by_client(starved)) == {0}
    assert uncapped.counters.timestamps_table_full > 0
    by_client = rtts_by_client(fair)
    assert set(by_client) == set(range(31))
    # Every light segment is sampled (50 ms apart at -r 0), exactly.
    for client in range(1, 31):
        assert len(by_client[client]) == 49  # all but the first: it waits for its edge
        assert {e.rtt for e in by_client[client]} == {20 * MS}
    assert {e.rtt for e in by_client[0]} == {100 * MS}
    assert capped.counters.timestamps_capped > 0
    assert capped.counters.timestamps_table_full == 0


def pressure_capture() -> bytes:
    """40 flows, a segment every 10 ms, RTT 50 ms, for 4 s; then one flow alone."""
    busy = [FlowSpec(i, 10 * MS, 50 * MS, start=i * 100_000, stop=4 * S) for i in range(40)]
    quiet = FlowSpec(40, 100 * MS, 1 * MS, start=4 * S, stop=14 * S)
    return capture([*busy, quiet])


ADAPTIVE = Config(rate_limit_ns=10 * MS, max_timestamps=64, adaptive=True)


def test_sampling_is_raised_under_pressure_and_relaxed_after() -> None:
    events, engine = engine_events(pressure_capture(), ADAPTIVE)
    changes = [
        (e.change, e.sampling_scale, e.rate_limit_ns) for e in of_type(events, PressureEvent)
    ]
    # Stamping every 10 ms with 50 ms RTTs, each flow wants 5 slots: 200 > 64. At
    # x4 (40 ms) two at most, 80 > 64: x8. Then the flows stop, and it steps back.
    assert changes == [
        (RAISED, 2, 20 * MS),
        (RAISED, 4, 40 * MS),
        (RAISED, 8, 80 * MS),
        (RELAXED, 4, 40 * MS),
        (RELAXED, 2, 20 * MS),
        (RELAXED, 1, 10 * MS),
    ]
    first = of_type(events, PressureEvent)[0]
    assert (first.timestamp - T0, first.table, first.entries, first.capacity) == (
        S, Table.TIMESTAMPS, 64, 64,
    )  # fmt: skip
    assert engine.counters.sampling_raised == 3 and engine.counters.sampling_relaxed == 3
    # No wrong RTT, and the stamps of each flow respect the interval in force.
    assert {e.rtt for e in of_type(events, RttEvent)} == {50 * MS, 1 * MS}
    changes_at = [(e.timestamp, e.rate_limit_ns) for e in of_type(events, PressureEvent)]

    def limit_at(t: int) -> int:
        return ([limit for when, limit in changes_at if when <= t] or [10 * MS])[-1]

    spacing: Counter[int] = Counter()
    for samples in rtts_by_client(events).values():
        sent = [e.timestamp - e.rtt for e in samples]
        for a, b in itertools.pairwise(sent):
            assert b - a >= limit_at(b)
            spacing[b - a] += 1
    assert spacing[80 * MS] > 0  # the x8 interval was used


def test_flow_timeout_is_shortened_when_the_flow_table_fills() -> None:
    # Nine flows exchange for 100 ms and go idle; a tenth keeps talking; the table
    # holds ten. A new flow at 25 s finds room only once the idle ones are gone.
    idle = [FlowSpec(i, 10 * MS, 1 * MS, stop=100 * MS) for i in range(9)]
    ticker = FlowSpec(9, 100 * MS, 1 * MS, stop=40 * S)
    late = FlowSpec(10, 100 * MS, 1 * MS, start=10 * S, stop=40 * S)
    raw = capture([*idle, ticker, late])
    config = Config(rate_limit_ns=0, max_flows=10, adaptive=True)
    events, engine = engine_events(raw, config)
    shortened = [e for e in of_type(events, PressureEvent) if e.change == SHORTENED]
    assert [(e.timestamp - T0, e.timeout_divisor, e.flow_timeout_ns) for e in shortened] == [
        (1 * S, 2, 150 * S), (2 * S, 4, 75 * S), (3 * S, 8, 37_500 * MS),
        (4 * S, 16, 18_750 * MS),
    ]  # fmt: skip
    timeouts = [e for e in of_type(events, FlowEvent) if e.reason == EventReason.FLOW_TIMEOUT]
    # Last stamped at 90 ms; 18.75 s later is 18.84 s: the clean-up at 19 s.
    assert {e.timestamp - T0 for e in timeouts} == {19 * S} and len(timeouts) == 9
    late_rtts = rtts_by_client(events)[10]
    # Its first packet after the clean-up creates it, the next is stamped.
    assert late_rtts[0].timestamp - T0 == 19 * S + 101 * MS
    assert engine.counters.flows_table_full == 90  # 10 s .. 18.9 s, every 100 ms
    # Two flows left (20%): one step back every RELAX_AFTER clean-ups (the one at 19 s
    # found the table full, before it removed the idle flows).
    restored = [e for e in of_type(events, PressureEvent) if e.change == RESTORED]
    assert [(e.timestamp - T0, e.timeout_divisor, e.entries) for e in restored] == [
        (22 * S, 8, 2), (25 * S, 4, 2), (28 * S, 2, 2), (31 * S, 1, 2),
    ]  # fmt: skip
    # Without --adaptive the idle flows hold the table for 300 s.
    plain, _ = engine_events(raw, Config(rate_limit_ns=0, max_flows=10))
    assert 10 not in rtts_by_client(plain)


def test_statistics_records_and_the_final_one() -> None:
    raw = pressure_capture()
    config = Config(rate_limit_ns=10 * MS, max_timestamps=64, stats_interval_ns=2 * S)
    events, engine = engine_events(raw, config)
    stats = of_type(events, StatsEvent)
    assert [(s.timestamp - T0, s.final) for s in stats] == [
        *[(t * S, False) for t in (2, 4, 6, 8, 10, 12)], (13_900 * MS + MS, True),
    ]  # fmt: skip
    final = stats[-1]
    c = engine.counters
    assert (final.packets, final.timestamps_created, final.timestamps_matched) == (
        c.packets, c.timestamps_created, c.timestamps_matched,
    )  # fmt: skip
    assert final.timestamps_table_full == c.timestamps_table_full > 0
    assert (final.timestamp_entries, final.flow_entries) == (len(engine.timestamps), 41)
    assert (final.max_timestamps, final.max_flows) == (64, config.max_flows)
    assert (final.sampling_scale, final.rate_limit_ns, final.flow_timeout_ns) == (
        1,
        10 * MS,
        300 * S,
    )
    # The same through the fast path.
    fast = Engine(config)
    assert list(fast_replay(fast, CaptureReader(io.BytesIO(raw)))) == events


# -- both data paths ------------------------------------------------------------------------


def _kernel_skip() -> str | None:
    if os.geteuid() != 0:
        return "the kernel data path needs root"
    try:
        from pping.kernel.program import object_path

        object_path()
    except KernelError as error:
        return str(error)
    return None


def kernel_events(raw: bytes, config: Config) -> tuple[list[Event], Counters]:
    from pping.kernel.replay import kernel_replay

    counters = Counters()
    events = list(kernel_replay(CaptureReader(io.BytesIO(raw)), config, counters=counters))
    return events, counters


PARITY_CASES = {
    "adaptive": (pressure_capture, ADAPTIVE),
    "adaptive-stats": (pressure_capture, Config(rate_limit_ns=10 * MS, max_timestamps=64,
                                                adaptive=True, stats_interval_ns=S)),
    "adaptive-rtt-rate": (pressure_capture, Config(rate_limit_ns=10 * MS, rtt_rate=0.5,
                                                   max_timestamps=64, adaptive=True)),
    "fair": (fairness_capture, fairness_config()),
    "unfair": (fairness_capture, fairness_config(max_outstanding=0)),
}  # fmt: skip


@pytest.mark.privileged
@pytest.mark.skipif(_kernel_skip() is not None, reason=str(_kernel_skip()))
@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_kernel_takes_the_same_decisions(case: str) -> None:
    make, config = PARITY_CASES[case]
    raw = make()
    expected, engine = engine_events(raw, config)
    got, counters = kernel_events(raw, config)
    assert of_type(expected, PressureEvent) or case in ("fair", "unfair")
    assert got == expected
    assert counters == engine.counters


# -- 4000 flows, RTTs up to 300 ms, 1024 timestamps -----------------------------------------


@functools.cache
def many_flows() -> tuple[bytes, tracegen.Truth]:
    """4000 concurrent flows, RTTs 1-300 ms, a segment every 100-200 ms for ~9 s."""
    return tracegen.many_flows(seed=2, flows=4000, packets=300_000, gap_us=(1e5, 2e5),
                               pause_prob=0.0)  # fmt: skip


def truth_flow(event: RttEvent) -> tracegen.FlowKey:
    f = event.flow
    return tracegen.FlowKey(f.proto, f.saddr, f.sport, f.daddr, f.dport)


FOUR_THOUSAND_MODES = {
    "fixed": Config(max_timestamps=1024),
    "adaptive": Config(max_timestamps=1024, adaptive=True),
    "growing": Config(max_timestamps=1024, max_timestamps_cap=16384),
}


@pytest.mark.parametrize("mode", list(FOUR_THOUSAND_MODES))
def test_four_thousand_flows_on_a_small_table(mode: str) -> None:
    raw, truth = many_flows()
    engine = Engine(FOUR_THOUSAND_MODES[mode])
    events = list(fast_replay(engine, CaptureReader(io.BytesIO(raw))))
    rtts = of_type(events, RttEvent)
    for e in rtts:
        assert truth.is_valid_rtt(truth_flow(e), e.rtt, e.timestamp)
    sampled = {truth_flow(e).reversed() for e in rtts}
    data_flows = {s.data_flow for s in truth.samples}
    assert len(data_flows) == 4000
    assert sampled == data_flows
    assert engine.counters.timestamps_table_full > 0  # the table was under pressure
    changes = of_type(events, PressureEvent)
    assert bool(changes) == (mode != "fixed")
    if mode == "growing":
        # Doubled at the first three clean-ups, then room for every sample: the table
        # refuses nothing after the last growth.
        assert [e.grown_to for e in changes] == [2048, 4096, 8192]
        assert [(e.timestamp - changes[0].timestamp) // S for e in changes] == [0, 1, 2]
        assert all(e.timestamp < changes[-1].timestamp for e in of_type(events, MapFullEvent))


# -- output ----------------------------------------------------------------------------------


PRESSURE = PressureEvent(T0 + S, RAISED, Table.TIMESTAMPS, 952, 1024, 2, 200 * MS, 1, 300 * S, 1024)
STATS = StatsEvent(T0 + 2 * S, False, 5120, 340, 300, 20, 7, 3, 50, 300, 20, 1024, 48, 4096,
                   2, 200 * MS, 4, 75 * S)  # fmt: skip


def _write(fmt: str, events: list[Event], machine: bool = False) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    sink = make_sink(fmt, out, err, machine=machine)
    for event in events:
        sink.write(event)
    sink.close()
    return out.getvalue(), err.getvalue()


def _strip_clock(text: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in text.splitlines()]


def test_standard_lines() -> None:
    out, err = _write("standard", [PRESSURE, STATS])
    assert err == ""
    assert _strip_clock(out) == [
        "Pressure: sampling interval raised to 200 ms (x2), timestamp table at 92% (952 of 1024)",
        "Statistics: 5120 packets, 300 RTT events; timestamps 340 created, 300 matched, "
        "20 expired, 7 refused (table full), 3 refused (cap); timestamp table 20 of 1024 "
        "(1%); flows 50 created, flow table 48 of 4096 (1%); sampling interval 200 ms (x2), "
        "flow timeout 75 s (/4)",
    ]


@pytest.mark.parametrize(("fmt", "machine"), [("ppviz", False), ("standard", True)])
def test_rtt_only_formats_put_them_on_the_error_stream(fmt: str, machine: bool) -> None:
    out, err = _write(fmt, [PRESSURE, STATS], machine)
    assert out == ""
    standard, _ = _write("standard", [PRESSURE, STATS])
    assert err == standard


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_json_records(fmt: str) -> None:
    out, _ = _write(fmt, [PRESSURE, STATS])
    records = json.loads(out) if fmt == "json" else [json.loads(x) for x in out.splitlines()]
    assert records[0] == {
        "timestamp": T0 + S, "pressure": "sampling_raised", "table": "timestamps",
        "entries": 952, "capacity": 1024, "sampling_scale": 2, "rate_limit": 200 * MS,
        "timeout_divisor": 1, "flow_timeout": 300 * S, "grown_to": 1024,
    }  # fmt: skip
    assert records[1]["final"] is False and records[1]["timestamp"] == T0 + 2 * S
    assert records[1]["statistics"] == {
        "packets": 5120, "timestamps_created": 340, "timestamps_matched": 300,
        "timestamps_expired": 20, "timestamps_table_full": 7, "timestamps_capped": 3,
        "flows_created": 50, "rtt_events": 300, "timestamp_entries": 20,
        "max_timestamps": 1024, "flow_entries": 48, "max_flows": 4096, "sampling_scale": 2,
        "rate_limit": 200 * MS, "timeout_divisor": 4, "flow_timeout": 75 * S,
    }  # fmt: skip


def _cli(tmp_path: object, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_command_line(tmp_path: pytest.TempPathFactory) -> None:
    path = os.path.join(str(tmp_path), "pressure.pcap")
    with open(path, "wb") as f:
        f.write(pressure_capture())
    code, out, err = _cli(
        tmp_path, "--read", path, "-r", "10", "--max-timestamps", "64", "--adaptive",
        "--stats-interval", "4", "-F", "jsonl",
    )  # fmt: skip
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    kinds = Counter(next(k for k in ("pressure", "statistics", "rtt", "summary", "flow_event",
                                     "map_full") if k in r) for r in records)  # fmt: skip
    assert kinds["pressure"] == 6 and kinds["statistics"] == 4  # 4, 8, 12 s and the end
    assert records[-1]["summary"]["sampling_raised"] == 3
    assert "pressure:   sampling raised 3, relaxed 3" in err
    code, _, err = _cli(tmp_path, "--read", path, "--low-water", "95")
    assert code == 2 and err.count("\n") == 1 and "water marks" in err
    code, _, err = _cli(tmp_path, "--read", path, "--max-outstanding", "-1")
    assert code == 2 and err.count("\n") == 1


def _live_cleanup_replay(config: Config, program: object) -> object:
    """The capture replay with its clean-up tick replaced by the live monitor's
    (sources/kernel.LiveCleanup: the kernel's clean-up, then its own pressure monitor)."""
    from pping.kernel.libbpf import U64_MAX
    from pping.kernel.replay import KernelReplay
    from pping.sources.kernel import LiveCleanup

    class LiveCleanupReplay(KernelReplay):
        def __init__(self) -> None:
            super().__init__(config, False, program)  # type: ignore[arg-type]
            self.live = LiveCleanup(self.program, self.totals)
            self.cleanup = self.live  # its counts are the replay's

        def _expire(self, now: int) -> list[Event]:
            base = self.base
            # A live clock always has a base, and never jumps by centuries.
            assert base is not None and 0 <= now - base <= U64_MAX
            return self.live.run_and_adapt(now - base, base)

    return LiveCleanupReplay()


@pytest.mark.privileged
@pytest.mark.skipif(_kernel_skip() is not None, reason=str(_kernel_skip()))
@pytest.mark.parametrize("case", ["adaptive", "adaptive-rtt-rate"])
def test_live_cleanup_takes_the_same_decisions(case: str) -> None:
    """The live monitor's clean-up (sources/kernel.py) decides as the engine does."""
    from pping.kernel.replay import load_replay_program

    make, config = PARITY_CASES[case]
    raw = make()
    expected, engine = engine_events(raw, config)
    program = load_replay_program(config)
    try:
        session: Any = _live_cleanup_replay(config, program)
        got = list(session.run(CaptureReader(io.BytesIO(raw))))
        counters = Counters()
        session.finish(counters)
    finally:
        program.close()
    assert got == expected
    own = session.live.pressure_counts
    assert (own.sampling_raised, own.sampling_relaxed) == (
        engine.counters.sampling_raised, engine.counters.sampling_relaxed,
    )  # fmt: skip
    assert own.sampling_raised > 0
