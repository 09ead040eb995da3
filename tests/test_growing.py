"""Growing tables (--max-timestamps-cap, --max-flows-cap): pressure.py's growth rule,
the engine's capacities, and the kernel program taking the same decisions.

The captures come from test_pressure.py: every RTT of a flow is exactly its `rtt`.
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from pping.cli import build_parser, config_from_args
from pping.config import Config
from pping.engine import Engine
from pping.errors import OptionsError
from pping.events import (
    Counters,
    EventReason,
    FlowEvent,
    PressureChange,
    PressureEvent,
    RttEvent,
    StatsEvent,
    Table,
)
from pping.fastpath import fast_replay
from pping.pressure import PressureController, grown
from pping.sources.pcap import CaptureReader
from test_pressure import (
    MS,
    RAISED,
    T0,
    FlowSpec,
    S,
    _kernel_skip,
    _live_cleanup_replay,
    _strip_clock,
    _write,
    capture,
    engine_events,
    kernel_events,
    of_type,
    pressure_capture,
    rtts_by_client,
)

TS_GROWN, FLOWS_GROWN = PressureChange.TIMESTAMPS_GROWN, PressureChange.FLOWS_GROWN

# -- the decision ---------------------------------------------------------------------------


def test_growth_doubles_up_to_the_cap() -> None:
    assert grown(100, 400) == 200
    assert grown(300, 400) == 400
    assert grown(400, 400) == 400


def test_a_high_table_below_its_cap_grows() -> None:
    c = PressureController(90, 40, adaptive=False, timestamp_cap=400, flow_cap=50)
    assert c.update(89, 100, 0, 10) == []
    assert c.update(90, 100, 0, 10) == [TS_GROWN]
    assert c.update(0, 100, 9, 10) == [FLOWS_GROWN]
    assert c.update(400, 400, 50, 50) == []  # at the caps, and no --adaptive
    assert (c.sampling_scale, c.timeout_divisor) == (1, 1)


def test_growth_is_preferred_over_raising_the_interval() -> None:
    c = PressureController(90, 40, timestamp_cap=200)
    assert c.update(100, 100, 0, 10) == [TS_GROWN] and c.sampling_scale == 1
    assert c.update(200, 200, 0, 10) == [RAISED] and c.sampling_scale == 2


def test_options_are_checked() -> None:
    with pytest.raises(OptionsError, match="--max-timestamps-cap must be 0 or at least"):
        Config(max_timestamps=64, max_timestamps_cap=32)
    with pytest.raises(OptionsError, match="--max-flows-cap must be at most"):
        Config(max_flows_cap=1 << 32)
    with pytest.raises(OptionsError, match="need the clean-up"):
        Config(max_flows_cap=2 * Config().max_flows, cleanup_interval_ns=0)
    assert not Config(max_timestamps_cap=Config().max_timestamps).grows
    args = ["--read", "-", "--max-timestamps", "8", "--max-timestamps-cap", "64"]
    config = config_from_args(build_parser().parse_args([*args, "--max-flows-cap", "0"]))
    assert (config.max_timestamps, config.timestamps_limit, config.grows) == (8, 64, True)


# -- the engine -----------------------------------------------------------------------------

GROWING = Config(rate_limit_ns=10 * MS, max_timestamps=64, max_timestamps_cap=512)


def test_the_timestamp_table_grows_until_it_has_room() -> None:
    events, engine = engine_events(pressure_capture(), GROWING)
    grown_events = of_type(events, PressureEvent)
    # 40 flows want 5 slots each (a stamp every 10 ms, 50 ms RTT): 200 entries. The
    # clean-up at 1 s finds 64 of 64, at 2 s 128 of 128; 200 of 256 is below 90%.
    assert [(e.timestamp - T0, e.change, e.entries, e.capacity, e.grown_to)
            for e in grown_events] == [
        (1 * S, TS_GROWN, 64, 64, 128), (2 * S, TS_GROWN, 128, 128, 256),
    ]  # fmt: skip
    assert (grown_events[0].table, grown_events[0].sampling_scale) == (Table.TIMESTAMPS, 1)
    assert engine.counters.timestamps_grown == 2 and engine.counters.sampling_raised == 0
    assert {e.rtt for e in of_type(events, RttEvent)} == {50 * MS, 1 * MS}
    # After the growth at 2 s every flow stamps every 10 ms.
    stamped_late = [
        e for e in of_type(events, RttEvent) if 2 * S + 50 * MS < e.timestamp - T0 < 4 * S
    ]
    per_client = {int.from_bytes(e.flow.daddr[12:], "big") for e in stamped_late}
    assert len(per_client) == 40
    # Every segment sent from 2 s to 4 s (exclusive, 40 flows x 200) gives an RTT.
    sent = [e.timestamp - e.rtt - T0 for e in of_type(events, RttEvent) if e.rtt == 50 * MS]
    assert sum(2 * S <= t < 4 * S for t in sent) == 40 * 200
    stats = engine.statistics(T0 + 20 * S)
    assert (stats.max_timestamps, stats.max_flows) == (256, GROWING.max_flows)
    # The fast path decides the same.
    assert list(fast_replay(Engine(GROWING), CaptureReader(io.BytesIO(pressure_capture())))) == (
        events
    )


def test_the_flow_table_grows_and_a_late_flow_finds_room() -> None:
    # test_pressure's idle flows: nine go idle, one keeps talking, a table of ten.
    idle = [FlowSpec(i, 10 * MS, 1 * MS, stop=100 * MS) for i in range(9)]
    ticker = FlowSpec(9, 100 * MS, 1 * MS, stop=40 * S)
    late = FlowSpec(10, 100 * MS, 1 * MS, start=10 * S, stop=40 * S)
    raw = capture([*idle, ticker, late])
    config = Config(rate_limit_ns=0, max_flows=10, max_flows_cap=16, adaptive=True)
    events, engine = engine_events(raw, config)
    changes = [(e.timestamp - T0, e.change, e.entries, e.capacity, e.grown_to)
               for e in of_type(events, PressureEvent)]  # fmt: skip
    # Grown at 1 s (10 of 10); 10 of 16 is 62%: between the marks, nothing more.
    assert changes == [(1 * S, FLOWS_GROWN, 10, 10, 16)]
    assert engine.counters.flows_table_full == 0
    assert not [e for e in of_type(events, FlowEvent) if e.reason == EventReason.FLOW_TIMEOUT]
    # The late flow's first packet creates it at 10 s; its second is stamped.
    assert rtts_by_client(events)[10][0].timestamp - T0 == 10 * S + 101 * MS
    # The fast path's proofs use the capacity in force.
    assert list(fast_replay(Engine(config), CaptureReader(io.BytesIO(raw)))) == events


# -- output ---------------------------------------------------------------------------------


def test_growth_lines() -> None:
    event = PressureEvent(T0 + S, TS_GROWN, Table.TIMESTAMPS, 1000, 1024, 1, 100 * MS, 1, 300 * S,
                          2048)  # fmt: skip
    out, err = _write("standard", [event])
    assert _strip_clock(out) == [
        "Pressure: table grown to 2048 entries, timestamp table at 97% (1000 of 1024)"
    ]
    counters = Counters(timestamps_grown=3, flows_grown=1)
    stats = StatsEvent(T0, True, 0, 0, 0, 0, 0, 0, 0, 0, 5, 2048, 1, 16, 1, 100 * MS, 1, 300 * S)
    assert "timestamp table 5 of 2048 (0%)" in _write("standard", [stats])[0]
    assert "growth:     timestamp table 3 times, flow table 1 times" in _counters_text(counters)
    assert err == ""


def _counters_text(counters: Counters) -> str:
    from pping.sinks.standard import counters_text

    return counters_text(counters, True)


# -- both data paths ------------------------------------------------------------------------

KERNEL_CASES: dict[str, tuple[Any, Config]] = {
    "timestamps": (pressure_capture, GROWING),
    "timestamps-stats": (
        pressure_capture,
        Config(
            rate_limit_ns=10 * MS, max_timestamps=64, max_timestamps_cap=160, stats_interval_ns=S
        ),
    ),
    "timestamps-adaptive": (
        pressure_capture,
        Config(rate_limit_ns=10 * MS, max_timestamps=32, max_timestamps_cap=128, adaptive=True),
    ),
    "flows": (
        lambda: capture([FlowSpec(i, 10 * MS, 1 * MS, start=i * 50 * MS) for i in range(40)]),
        Config(
            rate_limit_ns=0, max_flows=4, max_flows_cap=33, max_timestamps=8, max_timestamps_cap=20
        ),
    ),
}


@pytest.mark.privileged
@pytest.mark.skipif(_kernel_skip() is not None, reason=str(_kernel_skip()))
@pytest.mark.parametrize("case", list(KERNEL_CASES))
def test_kernel_grows_the_same(case: str) -> None:
    make, config = KERNEL_CASES[case]
    raw = make()
    expected, engine = engine_events(raw, config)
    got, counters = kernel_events(raw, config)
    assert of_type(expected, PressureEvent)
    # The kernel refuses at the capacity in force, not only at its map's size.
    assert engine.counters.timestamps_table_full > 0
    assert got == expected
    assert counters == engine.counters


@pytest.mark.privileged
@pytest.mark.skipif(_kernel_skip() is not None, reason=str(_kernel_skip()))
def test_kernel_maps_have_room_for_the_caps() -> None:
    from pping.kernel import abi
    from pping.kernel.replay import load_replay_program

    program = load_replay_program(KERNEL_CASES["flows"][1])
    try:
        sizes = {
            name: program.object.map(name).max_entries
            for name in (abi.MAP_TIMESTAMPS, abi.MAP_FLOWS)
        }
    finally:
        program.close()
    assert sizes == {abi.MAP_TIMESTAMPS: 20, abi.MAP_FLOWS: 33}


@pytest.mark.privileged
@pytest.mark.skipif(_kernel_skip() is not None, reason=str(_kernel_skip()))
def test_live_cleanup_grows_the_same() -> None:
    from pping.kernel.replay import load_replay_program

    make, config = KERNEL_CASES["timestamps-adaptive"]
    raw = make()
    expected, engine = engine_events(raw, config)
    program = load_replay_program(config)
    try:
        session: Any = _live_cleanup_replay(config, program)
        got = list(session.run(CaptureReader(io.BytesIO(raw))))
        session.finish(Counters())
    finally:
        program.close()
    assert got == expected
    own = session.live.pressure_counts
    assert own.timestamps_grown == engine.counters.timestamps_grown == 2


@pytest.mark.parametrize("case", list(KERNEL_CASES))
def test_fast_path_grows_the_same(case: str) -> None:
    make, config = KERNEL_CASES[case]
    raw = make()
    expected, engine = engine_events(raw, config)
    fast = Engine(config)
    assert list(fast_replay(fast, CaptureReader(io.BytesIO(raw)))) == expected
    assert fast.counters == engine.counters
