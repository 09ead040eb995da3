"""kernel/batch.py decodes a ring buffer exactly as `decode_event` does, record by record.

A bench-only BPF program (bench/ring_producer.bpf.c, compiled here with clang) writes
records in pping's format into a ring buffer of pping's layout, through
BPF_PROG_TEST_RUN: every event type, arbitrary field values, discarded records, runs
long enough for the numpy path, and a small ring so that drained regions wrap around
its end. Needs root and clang.
"""

from __future__ import annotations

import ctypes
import io
import os
import random
import shutil
import struct
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pping.events import Event
from pping.kernel import abi, libbpf
from pping.kernel import batch as batch_module
from pping.kernel.batch import EventBuilder, read_batch
from pping.kernel.program import decode_event
from pping.kernel.ringbuf import RingBuffer
from pping.sinks import machine as machine_module
from pping.sinks import make_sink
from pping.sources.kernel import LiveMonitor

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "bench" / "ring_producer.bpf.c"
TIME_BASE = 1_700_000_000 * 10**9 + 123_456_789


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (BPF_PROG_TEST_RUN, ring buffer maps)"
    if shutil.which("clang") is None:
        return "needs clang to build bench/ring_producer.bpf.c"
    return None


pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason())),
]

PAYLOAD_MAX = ctypes.sizeof(abi.RttEvent)


class EmitOneArgs(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("discard", ctypes.c_uint32),
        ("payload", ctypes.c_uint8 * PAYLOAD_MAX),
        ("failed", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
    ]


class EmitRttArgs(ctypes.Structure):
    _fields_ = [
        ("count", ctypes.c_uint64),
        ("seq", ctypes.c_uint64),
        ("flows", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("emitted", ctypes.c_uint64),
        ("failed", ctypes.c_uint64),
    ]


def run(prog_fd: int, ctx: ctypes.Structure) -> None:
    opts = libbpf.BpfTestRunOpts(sz=ctypes.sizeof(libbpf.BpfTestRunOpts))
    opts.ctx_in = ctypes.addressof(ctx)
    opts.ctx_size_in = ctypes.sizeof(ctx)
    result = libbpf.lib().bpf_prog_test_run_opts(prog_fd, ctypes.addressof(opts))
    assert result == 0, f"BPF_PROG_TEST_RUN failed: {result}"
    assert opts.retval == 0


class Producer:
    def __init__(self, obj_path: Path, ring_bytes: int) -> None:
        self.object = libbpf.BpfObject(obj_path)
        self.object.map("events").set_max_entries(ring_bytes)
        self.object.load()
        self.one = self.object.program("emit_one").fd
        self.many = self.object.program("emit_rtt").fd
        self.ring = RingBuffer(self.object.map("events").fd, ring_bytes)
        self.size = ring_bytes

    def emit(self, payload: bytes, discard: bool = False) -> bool:
        args = EmitOneArgs(size=len(payload), discard=int(discard))
        ctypes.memmove(args.payload, payload, len(payload))
        run(self.one, args)
        return not args.failed

    def emit_rtt(self, count: int, seq: int, flows: int) -> int:
        args = EmitRttArgs(count=count, seq=seq, flows=flows)
        run(self.many, args)
        return int(args.emitted)

    def snapshot(self) -> list[bytes]:
        """The committed payloads, read without consuming (the reference walk)."""
        data, start, available = self.ring.region()
        records = []
        pos, end = start, start + available
        while pos < end:
            length = struct.unpack_from("<I", data, pos)[0]
            if length & (1 << 31):
                break
            size = length & ~(3 << 30)
            if not length & (1 << 30):
                records.append(bytes(data[pos + 8 : pos + 8 + size]))
            pos += (size + 15) & ~7
        return records

    def close(self) -> None:
        self.ring.close()
        self.object.close()


@pytest.fixture(scope="module")
def producer_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("producer") / "ring_producer.bpf.o"
    arch = f"/usr/include/{os.uname().machine}-linux-gnu"
    subprocess.run(
        ["clang", "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
         f"-I{arch}", f"-I{ROOT / 'bpf'}", "-c", str(SOURCE), "-o", str(out)],
        check=True,
    )  # fmt: skip
    return out


def random_event(rng: random.Random) -> bytes:
    """One event of a random type, every field (reserved ones too) random but valid."""
    kind = rng.choice((abi.EVENT_TYPE_RTT, abi.EVENT_TYPE_FLOW, abi.EVENT_TYPE_MAP_FULL))
    struct_type = {
        abi.EVENT_TYPE_RTT: abi.RttEvent,
        abi.EVENT_TYPE_FLOW: abi.FlowEvent,
        abi.EVENT_TYPE_MAP_FULL: abi.MapFullEvent,
    }[kind]
    raw = bytearray(rng.randbytes(ctypes.sizeof(struct_type)))
    event = struct_type.from_buffer(raw)
    event.event_type = kind
    if rng.random() < 0.5:  # IPv4-mapped, sometimes ending in zero bytes
        for addr in (event.flow.saddr, event.flow.daddr):
            ctypes.memmove(
                addr, bytes(10) + b"\xff\xff" + rng.choice((b"\n\0\0\0", b"\x7f\0\0\1")), 16
            )
    if kind == abi.EVENT_TYPE_FLOW:
        event.flow_event_type = rng.randrange(4)
        event.reason = rng.randrange(7)
        event.source = rng.randrange(3)
    elif kind == abi.EVENT_TYPE_MAP_FULL:
        event.table = rng.randrange(2)
    return bytes(raw)


def assert_same(got: list[Event], want: list[Event]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert type(a) is type(b)
        assert a == b


@pytest.mark.parametrize("collide", [False, True])
def test_flow_ids_name_each_events_flow(collide: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """`FlowTable.ids`: the flow under each id is the event's own, batch after batch;
    also when every key hashes to the same slot, so that the key stored there differs
    from most events' and the dict has to decide."""
    if collide:
        monkeypatch.setattr(batch_module, "_HASH_MULTIPLIERS", np.zeros(6, dtype=np.uint64))
    rng = random.Random(collide)
    pool: list[bytes] = []
    while len(pool) < 50:
        raw = random_event(rng)
        if struct.unpack_from("<Q", raw)[0] == abi.EVENT_TYPE_RTT:
            pool.append(raw)
    table = batch_module.FlowTable()
    for _ in range(6):
        records = [rng.choice(pool) for _ in range(rng.randrange(1, 500))]
        ids = table.ids(np.frombuffer(b"".join(records), dtype=batch_module.RTT_DTYPE))
        want = [decode_event(record, TIME_BASE).flow for record in records]  # type: ignore[union-attr]
        assert [table.flows[i] for i in ids.tolist()] == want


def drain(producer: Producer, builder: EventBuilder) -> list[Event]:
    return builder.events(read_batch(producer.ring), TIME_BASE)


def test_every_type_with_wraparound(producer_object: Path) -> None:
    """Random events of all three types (some discarded) through a one-page ring, so
    that the drained region crosses the end of the ring again and again."""
    rng = random.Random(7)
    producer = Producer(producer_object, 4096)
    builder = EventBuilder()
    wrapped = 0
    total = 0
    try:
        for _ in range(400):
            sent: list[bytes] = []
            for _ in range(rng.randrange(1, 40)):
                payload = random_event(rng)
                discard = rng.random() < 0.1
                if not producer.emit(payload, discard):
                    break  # ring full
                if not discard:
                    sent.append(payload)
            _, start, available = producer.ring.region()
            wrapped += start + available > producer.size
            snapshot = producer.snapshot()
            assert snapshot == sent
            got = drain(producer, builder)
            assert_same(got, [decode_event(p, TIME_BASE) for p in sent])
            total += len(got)
            assert not producer.ring.pending()
    finally:
        producer.close()
    assert wrapped > 50
    assert total > 3000


def test_runs_of_one_type(producer_object: Path) -> None:
    """Long stretches of one type (numpy path) and of the two 64-byte types mixed."""
    rng = random.Random(11)
    producer = Producer(producer_object, 1 << 16)
    builder = EventBuilder()
    try:
        for _ in range(30):
            sent: list[bytes] = []
            for _ in range(rng.randrange(1, 6)):
                if rng.random() < 0.5:
                    template = random_event(rng)
                    stretch = [template] * rng.randrange(1, 300)
                else:  # flow and map-full events: same record size, mixed types
                    stretch = [random_event(rng) for _ in range(rng.randrange(1, 300))]
                    stretch = [p for p in stretch if len(p) != PAYLOAD_MAX]
                for payload in stretch:
                    if not producer.emit(payload):
                        break
                    sent.append(payload)
            got = drain(producer, builder)
            assert_same(got, [decode_event(p, TIME_BASE) for p in sent])
    finally:
        producer.close()


def test_bulk_producer_matches_reference(producer_object: Path) -> None:
    """The benchmark's producer (bpf_loop), over a wrapping ring: batch == record by record."""
    producer = Producer(producer_object, 1 << 16)
    builder = EventBuilder()
    seq = 0
    try:
        for count in (1, 7, 8, 9, 100, 511, 300, 511, 2000):
            emitted = producer.emit_rtt(count, seq, 37)
            seq += emitted
            want = [decode_event(p, TIME_BASE) for p in producer.snapshot()]
            assert len(want) == emitted
            got = drain(producer, builder)
            assert_same(got, want)
            assert [e.rtt for e in got] == list(range(seq - emitted, seq))  # type: ignore[union-attr]
    finally:
        producer.close()


def monitor_reading(ring: RingBuffer) -> LiveMonitor:
    """A LiveMonitor with only what its `_drain` and `_emit` use (no program loaded)."""
    monitor = LiveMonitor.__new__(LiveMonitor)
    monitor.program = SimpleNamespace(ring=ring)  # type: ignore[assignment]
    monitor.time_base = TIME_BASE
    monitor._map_full_last = {}
    monitor._events = EventBuilder()
    return monitor


@pytest.mark.parametrize("fmt", ["standard", "jsonl", "json", "ppviz", "machine"])
def test_live_drain_prints_what_event_objects_print(
    producer_object: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`LiveMonitor._drain` hands RTT runs to the sink's `write_rtt_batch`: the output is
    the one of every record decoded and written one by one. Random records of every
    type (times beyond 2**64 after the offset take the object path), the bulk
    producer's runs, and flow tables small enough to start over (numbering, the -m
    state) many times."""
    monkeypatch.setattr(batch_module, "FLOW_CACHE_LIMIT", 64)
    monkeypatch.setattr(machine_module, "FLOW_CACHE_LIMIT", 48)
    rng = random.Random(fmt)
    producer = Producer(producer_object, 1 << 16)
    got_out, want_out = io.StringIO(), io.StringIO()
    got_sink = make_sink(fmt, got_out, io.StringIO())
    want_sink = make_sink(fmt, want_out, io.StringIO())
    monitor = monitor_reading(producer.ring)
    reference = monitor_reading(producer.ring)
    seq = 0
    try:
        for _ in range(60):
            for _ in range(rng.randrange(0, 20)):
                producer.emit(random_event(rng))
            seq += producer.emit_rtt(rng.randrange(1, 400), seq, rng.choice((1, 37, 90)))
            for payload in producer.snapshot():
                reference._emit(want_sink, decode_event(payload, TIME_BASE))
            monitor._drain(got_sink)
        got_sink.close()
        want_sink.close()
    finally:
        producer.close()
    assert seq > 5000
    assert got_out.getvalue() == want_out.getvalue()


def test_consuming_while_the_kernel_produces_refuses_nothing(producer_object: Path) -> None:
    """A producer on another CPU and this reader at the same time: with a ring far
    larger than what is ever pending, no reserve may fail. (Writing the consumer
    position a byte at a time let the kernel read a torn value and refuse events.)"""
    producer = Producer(producer_object, 1 << 26)
    report_read, report_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the producer: about 2M events/s for half a second
        try:
            os.close(report_read)
            emitted = failed = 0
            for _ in range(1000):
                args = EmitRttArgs(count=1000, seq=emitted, flows=5)
                run(producer.many, args)
                emitted += args.emitted
                failed += args.failed
                time.sleep(0.0005)
            os.write(report_write, struct.pack("<QQ", emitted, failed))
        finally:
            os._exit(0)
    os.close(report_write)
    consumed = 0
    try:
        while not os.waitpid(pid, os.WNOHANG)[0]:
            consumed += len(read_batch(producer.ring))
        consumed += len(read_batch(producer.ring))
        emitted, failed = struct.unpack("<QQ", os.read(report_read, 16))
    finally:
        os.close(report_read)
        producer.close()
    assert (failed, consumed) == (0, emitted)
