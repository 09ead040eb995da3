"""Batch formatting (sinks/columnar.py, the sinks' `write_rtt_batch`) prints exactly what
the event-at-a-time `write` prints: random events, and the edge cases of each number
format (rounding ties, exponents, digit-count boundaries, 64-bit extremes)."""

from __future__ import annotations

import io
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pping.events import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    EventReason,
    EventSource,
    Flow,
    FlowEvent,
    FlowEventType,
    RttEvent,
)
from pping.sinks import ReopenableFile, make_sink
from pping.sinks.columnar import (
    RttColumns,
    digit_count,
    digits,
    fixed6,
    general6,
    integers,
    render,
)

FORMATS = ("standard", "jsonl", "json", "ppviz", "machine")
U64_MAX = 2**64 - 1


def v4(a: int, b: int, c: int, d: int) -> bytes:
    return b"\0" * 10 + b"\xff\xff" + bytes([a, b, c, d])


FLOWS = [
    Flow(IPPROTO_TCP, v4(198, 18, 0, 2), 5201, v4(198, 18, 0, 1), 41356),
    Flow(IPPROTO_TCP, v4(255, 255, 255, 255), 65535, v4(0, 0, 0, 0), 0),
    Flow(
        IPPROTO_TCP,
        bytes.fromhex("fd000000000000000000000000000001"),
        443,
        bytes.fromhex("fd00000000000000abcdef0123456789"),
        50000,
    ),
    Flow(IPPROTO_ICMP, v4(10, 0, 0, 2), 4711, v4(10, 0, 0, 1), 4711),
    Flow(IPPROTO_ICMPV6, bytes(16), 1, bytes(15) + b"\1", 1),
    Flow(200, v4(1, 2, 3, 4), 7, v4(5, 6, 7, 8), 9),
]

# 2026-11-25 17:32:36.559578291 UTC
T0 = 1_795_627_956_559_578_291


@pytest.fixture(params=["UTC", "Asia/Kolkata"])
def timezone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import time

    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def edge_numbers() -> list[int]:
    """Values at every boundary the formats care about."""
    values = {0, 1, 5, 9, 99, 100, 101, 999, U64_MAX, U64_MAX - 1, 2**52, 2**52 - 1, 2**53 + 1}
    for k in range(20):
        for delta in (-1, 0, 1):
            values.add(10**k + delta)
            values.add(5 * 10**k + delta)
    # Six-digit rounding: ties and near-ties (%.6g of ns / 1e6), carries to 1e6 ms.
    for digits_count in range(7, 17):
        step = 10 ** (digits_count - 6)
        for kept in (100000, 123456, 999999, 314159):
            base = kept * step
            values.update({base + step // 2, base + step // 2 - 1, base + step // 2 + 1})
    # %.6f of ns / 1e9: ties at 500 ns.
    values.update({1500, 2_000_000_500, 999_999_999_500, 1_999_999_500})
    return sorted(v for v in values if 0 <= v <= U64_MAX)


def random_events(rng: random.Random, count: int) -> list[RttEvent]:
    numbers = edge_numbers()

    def number() -> int:
        pick = rng.random()
        if pick < 0.3:
            return rng.choice(numbers)
        if pick < 0.6:
            return rng.randrange(10 ** rng.randrange(1, 20))
        return rng.randrange(100, 10**9)

    events = []
    t = T0
    for _ in range(count):
        t += rng.choice((0, 1, 999, 10**6, 10**9 - 1, 10**9, 3 * 10**9))
        events.append(
            RttEvent(
                t if rng.random() < 0.95 else rng.choice(numbers),
                rng.choice(FLOWS),
                number(),
                number(),
                number(),
                number(),
                number(),
                number(),
                rng.random() < 0.5,
            )
        )
    return events


def by_objects(fmt: str, events: list[RttEvent]) -> str:
    out = io.StringIO()
    sink = make_sink(fmt, out, io.StringIO())
    for event in events:
        sink.write(event)
    sink.close()
    return out.getvalue()


def by_batches(fmt: str, events: list[RttEvent], sizes: list[int]) -> str:
    out = io.StringIO()
    sink = make_sink(fmt, out, io.StringIO())
    start = 0
    flows: list[Flow] = []
    ids: dict[Flow, int] = {}
    for size in sizes:
        part = events[start : start + size]
        start += size
        # Flow ids stable across batches, as a source hands them over.
        for event in part:
            if event.flow not in ids:
                ids[event.flow] = len(flows)
                flows.append(event.flow)
        columns = RttColumns.from_events(part)
        columns.flow_ids = np.array([ids[e.flow] for e in part], dtype=np.intp)
        columns.flows = flows
        sink.write_rtt_batch(columns)  # type: ignore[union-attr]
    sink.close()
    return out.getvalue()


@pytest.mark.usefixtures("timezone")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("seed", range(4))
def test_batches_print_what_events_print(fmt: str, seed: int) -> None:
    rng = random.Random(seed)
    events = random_events(rng, 3000)
    sizes = [1, 0, 700, 1299, 1000]
    assert by_batches(fmt, events, sizes) == by_objects(fmt, events)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_edge_number_in_every_field(fmt: str) -> None:
    numbers = edge_numbers()
    events = [
        RttEvent(T0 + i, FLOWS[i % len(FLOWS)], n, numbers[-1 - i], n, n, n, n, bool(i & 1))
        for i, n in enumerate(numbers)
    ]
    events += [RttEvent(n, FLOWS[0], 7, 7, 7, 7, 7, 7, False) for n in numbers]
    assert by_batches(fmt, events, [len(events)]) == by_objects(fmt, events)


def test_empty_batch_prints_nothing() -> None:
    for fmt in FORMATS:
        assert by_batches(fmt, [], [0]) == by_objects(fmt, [])


def test_digits_and_counts() -> None:
    values = np.array(edge_numbers(), dtype=np.uint64)
    assert digit_count(values).tolist() == [len(str(v)) for v in values.tolist()]
    assert [bytes(row) for row in digits(values, 20)] == [b"%020d" % v for v in values.tolist()]
    assert [bytes(row).replace(b"\0", b"") for row in integers(values)] == [
        b"%d" % v for v in values.tolist()
    ]


def test_general6_matches_printf() -> None:
    values = np.array(edge_numbers(), dtype=np.uint64)
    text = render([b"<", *general6(values, 10**6), b">"])
    assert text == b"".join(b"<%.6g>" % (v / 10**6) for v in values.tolist())


@pytest.mark.parametrize("fmt", FORMATS)
def test_batches_and_objects_interleave_in_a_file(fmt: str, tmp_path: Path) -> None:
    """Batches go to the file's byte stream (`write_bytes`), other records through its
    text layer: the file still has them in the order written, across a reopen."""
    rng = random.Random(fmt)
    events = random_events(rng, 600)
    closing = FlowEvent(
        T0, FLOWS[0], FlowEventType.CLOSING, EventReason.FIN, EventSource.PACKET_SOURCE
    )
    path = tmp_path / "out"
    want = io.StringIO()
    want_sink = make_sink(fmt, want, io.StringIO())
    with ReopenableFile(path) as out:
        sink = make_sink(fmt, out, io.StringIO())
        for start in range(0, 600, 200):
            part = events[start : start + 200]
            sink.write_rtt_batch(RttColumns.from_events(part))  # type: ignore[union-attr]
            sink.write(closing)
            for event in [*part, closing]:
                want_sink.write(event)
            if start == 200:
                os.rename(path, tmp_path / "first")
                out.reopen()
        sink.close()
        want_sink.close()
    text = (tmp_path / "first").read_text() + path.read_text()
    if fmt == "json":  # each file is a document of its own
        assert text.count("[") == 2
        text = text.replace("]\n[", ",", 1)
    assert text == want.getvalue()


def test_decimal_ties_round_as_printf_rounds_the_double() -> None:
    """Half-way values: the double lies above or below the tie (or on it, when the tie
    is a binary fraction: round half to even), and printf follows the double."""
    rng = random.Random(5)
    ties = []
    for count in range(7, 16):
        step = 10 ** (count - 6)
        ties += [rng.randrange(100_000, 1_000_000) * step + step // 2 for _ in range(300)]
    values = np.array(ties, dtype=np.uint64)
    assert render([*general6(values, 10**6), b"\n"]) == b"".join(
        b"%.6g\n" % (v / 10**6) for v in ties
    )
    micro_ties = [rng.randrange(10**12) * 1000 + 500 for _ in range(3000)]
    values = np.array(micro_ties, dtype=np.uint64)
    assert render([*fixed6(values, 10**9), b"\n"]) == b"".join(
        b"%.6f\n" % (v / 10**9) for v in micro_ties
    )
