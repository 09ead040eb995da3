"""The fast replay must give exactly the events and counters of the reference replay."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from pping.config import Config
from pping.engine import Engine
from pping.errors import CaptureError
from pping.events import Event
from pping.fastpath import fast_replay
from pping.replay import replay
from pping.sources.pcap import CaptureReader

DATA = Path(__file__).parent / "data" / "pcaps"
CAPTURES = sorted(p for p in DATA.glob("*.pcap*") if p.is_file())


def collect(events: Iterator[Event]) -> list[Event | str]:
    """Every event, then the error that ended the capture (if any) as text."""
    out: list[Event | str] = []
    try:
        out.extend(events)
    except CaptureError as error:
        out.append(str(error))
    return out


def run_both(raw: bytes, config: Config) -> tuple[list, Engine, list, Engine]:
    reference, fast = Engine(config), Engine(config)
    expected = collect(replay(reference, CaptureReader(io.BytesIO(raw))))
    got = collect(fast_replay(fast, CaptureReader(io.BytesIO(raw))))
    return expected, reference, got, fast


def flow_counters(engine: Engine) -> dict:
    return {
        key: [
            (s.conn_state, s.sent_pkts, s.sent_bytes, s.rec_pkts, s.rec_bytes, s.last_id)
            for s in (dual.first, dual.second)
        ]
        for key, dual in engine.flows.items()
    }


def assert_same(raw: bytes, config: Config) -> None:
    expected, reference, got, fast = run_both(raw, config)
    assert got == expected
    assert fast.counters == reference.counters
    assert flow_counters(fast) == flow_counters(reference)
    assert fast.timestamps == reference.timestamps


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
@pytest.mark.parametrize("rate_limit_ms", [0, 100])
def test_real_captures(path: Path, rate_limit_ms: int) -> None:
    raw = path.read_bytes()
    assert_same(raw, Config(rate_limit_ns=rate_limit_ms * 1_000_000, track_icmp=True))
