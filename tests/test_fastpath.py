"""The fast replay must give exactly the events and counters of the reference replay."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import tracegen
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


SYNTHETIC = [
    ("bulk", {"flows": 3, "packets": 30_000}),
    ("bulk", {"packets": 20_000, "ip_version": 6, "encap": "qinq"}),
    ("bulk", {"packets": 20_000, "encap": "vlan", "bidirectional": True}),
    ("bulk", {"packets": 20_000, "link": "sll", "resolution": "us"}),
    ("bulk", {"packets": 20_000, "link": "raw", "ip_version": 6, "snaplen": 80}),
    ("many_flows", {"flows": 300, "packets": 30_000}),
    ("reordering", {}),
    ("loss", {}),
    ("wraparound", {}),
    ("fin_reuse", {}),
    ("handshake_rst", {}),
    ("app_limited", {}),
    ("malformed", {}),
    ("icmp_echo", {}),
]


@pytest.mark.parametrize(("scenario", "kwargs"), SYNTHETIC, ids=lambda v: str(v))
@pytest.mark.parametrize("rate_limit_ms", [0, 100])
def test_synthetic_captures(scenario: str, kwargs: dict, rate_limit_ms: int) -> None:
    raw, _ = tracegen.SCENARIOS[scenario](seed=4, **kwargs)
    config = Config(
        rate_limit_ns=rate_limit_ms * 1_000_000, track_icmp=True, include_syn=True,
        cleanup_interval_ns=100_000_000,
    )  # fmt: skip
    assert_same(raw, config)


BURST_CASES = [
    ("delayed_ack", {"flows": 2, "duration_s": 3.0}),
    ("bulk", {"flows": 3, "packets": 30_000}),
    ("reordering", {}),
    ("fin_reuse", {}),
    ("icmp_echo", {}),
]


@pytest.mark.parametrize(("scenario", "kwargs"), BURST_CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("burst", [1, 3])
def test_bursts(scenario: str, kwargs: dict, burst: int) -> None:
    raw, _ = tracegen.SCENARIOS[scenario](seed=4, **kwargs)
    config = Config(
        rate_limit_ns=20_000_000, track_icmp=True, include_syn=True, burst_packets=burst,
        burst_window_ns=2_000_000, cleanup_interval_ns=100_000_000,
    )  # fmt: skip
    assert_same(raw, config)


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_bursts_on_real_captures(path: Path) -> None:
    assert_same(path.read_bytes(), Config(track_icmp=True, burst_packets=2))


def test_repeats_are_actually_skipped() -> None:
    """The fast path must do its job on bulk traffic, not just be correct."""
    from pping.fastpath import decode, plan_batch

    raw, _ = tracegen.bulk(seed=1, flows=2, packets=20_000)
    reader = CaptureReader(io.BytesIO(raw))
    batch = next(reader.iter_batches())
    dec = decode(batch.linktype, batch.buffer, batch.offsets, batch.caplens)
    plan = plan_batch(dec, np.zeros(len(batch), dtype=np.int64))
    assert plan.repeats > 0.8 * len(batch)
