"""Ring-buffer consumer speed: can the live monitor's Python side keep up with the kernel?

A bench-only BPF program (bench/ring_producer.bpf.c, compiled here with clang into a
temporary directory) writes pping-format RTT events into a ring buffer map with the
layout and size of pping's live `events` map. A forked producer process runs it
through BPF_PROG_TEST_RUN (`bpf_loop`, a chunk of events per run) at a controlled
rate; when the ring is full its reserves fail and are counted (the kernel program
counts COUNTER_RINGBUF_FULL the same way). The parent drains the ring with the live
monitor's own `LiveMonitor._drain` (ringbuf.py region + kernel/batch.py decoder +
events + `_emit`) into a sink, waking like the live loop: epoll on the map, then
`BATCH_NS` of sleep after each drain that found events.

Sinks: `null` (events built, then dropped), `jsonl` (the JSON Lines sink writing to a
temporary file) and `arrays` (read_batch only: the decoder without event objects).
Every event carries its sequence number, so lost and reordered events are detected.

Prints one JSON document: per sink and rate, events/s produced and consumed, drops
(failed reserves), events missing, CPU of the consumer and of the producer.

    sudo .venv/bin/python bench/ring_consumer.py [--rates 0.5,1,2,4] [--seconds 3]
        [--sinks null,jsonl,arrays] [--batch-ms 10]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "bench" / "ring_producer.bpf.c"

from pping.events import Counters, Event, RttEvent  # noqa: E402
from pping.kernel import libbpf  # noqa: E402
from pping.kernel.batch import EventBuilder, read_batch  # noqa: E402
from pping.kernel.ringbuf import RingBuffer  # noqa: E402
from pping.sinks.jsonfmt import JsonLinesSink  # noqa: E402
from pping.sources import kernel as live  # noqa: E402


class EmitRttArgs(ctypes.Structure):
    """struct emit_rtt_args of ring_producer.bpf.c."""

    _fields_ = [
        ("count", ctypes.c_uint64),
        ("seq", ctypes.c_uint64),
        ("flows", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("emitted", ctypes.c_uint64),
        ("failed", ctypes.c_uint64),
    ]


def build(out_dir: Path) -> Path:
    out = out_dir / "ring_producer.bpf.o"
    arch = f"/usr/include/{os.uname().machine}-linux-gnu"
    subprocess.run(
        ["clang", "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
         f"-I{arch}", f"-I{ROOT / 'bpf'}", "-c", str(SOURCE), "-o", str(out)],
        check=True,
    )  # fmt: skip
    return out


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def produce(prog_fd: int, rate: float, seconds: float, flows: int, report: int) -> None:
    """The producer process: `rate` events/s for `seconds`, in chunks; reports totals."""
    args = EmitRttArgs(flows=flows)
    opts = libbpf.BpfTestRunOpts(sz=ctypes.sizeof(libbpf.BpfTestRunOpts))
    opts.ctx_in = ctypes.addressof(args)
    opts.ctx_size_in = ctypes.sizeof(args)
    run = libbpf.lib().bpf_prog_test_run_opts
    opts_address = ctypes.addressof(opts)
    chunk_max = max(64, int(rate / 2000))  # ~0.5 ms of events per run
    emitted = failed = attempted = 0
    cpu0 = cpu_seconds()
    start = time.perf_counter()
    end = start + seconds
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        due = int(rate * (now - start)) - attempted
        if due <= 0:
            time.sleep(min(0.0002, end - now))
            continue
        args.count = min(due, chunk_max)
        args.seq = emitted
        if run(prog_fd, opts_address) < 0:
            raise SystemExit("BPF_PROG_TEST_RUN failed")
        emitted += args.emitted
        failed += args.failed
        attempted += args.count
    elapsed = time.perf_counter() - start
    result = {"emitted": emitted, "failed": failed, "elapsed": elapsed, "cpu": cpu_seconds() - cpu0}
    os.write(report, json.dumps(result).encode())


class CountingSink:
    """Counts events and checks their sequence numbers (the producer's rtt field)."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner
        self.count = 0
        self.next = 0
        self.out_of_order = 0

    def write(self, event: Event) -> None:
        assert type(event) is RttEvent
        if event.rtt != self.next:
            self.out_of_order += 1
        self.next = event.rtt + 1
        self.count += 1
        if self.inner is not None:
            self.inner.write(event)

    def write_counters(self, counters: Counters, final: bool) -> None:
        pass

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


def monitor_for(ring: RingBuffer) -> live.LiveMonitor:
    """A LiveMonitor with only what `_drain` uses: the real drain, no interfaces."""
    monitor = live.LiveMonitor.__new__(live.LiveMonitor)
    monitor.program = SimpleNamespace(ring=ring)  # type: ignore[assignment]
    monitor.time_base = 0
    monitor._map_full_last = {}
    monitor._events = EventBuilder()
    return monitor


def measure(
    obj_path: Path, ring_bytes: int, sink_name: str, rate: float, seconds: float,
    batch_s: float, flows: int, tmp: Path,
) -> dict[str, Any]:  # fmt: skip
    obj = libbpf.BpfObject(obj_path)
    obj.map("events").set_max_entries(ring_bytes)
    obj.load()
    ring_fd = obj.map("events").fd
    ring = RingBuffer(ring_fd, ring_bytes)
    out_file = None
    inner = None
    if sink_name == "jsonl":
        out_file = open(tmp / "events.jsonl", "w")  # noqa: SIM115
        inner = JsonLinesSink(out_file, sys.stderr)
    sink = CountingSink(inner)
    monitor = monitor_for(ring)
    report_read, report_write = os.pipe()
    poller = select.epoll()
    poller.register(ring_fd, select.EPOLLIN)
    cpu0 = cpu_seconds()
    wall0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the producer
        try:
            os.close(report_read)
            produce(obj.program("emit_rtt").fd, rate, seconds, flows, report_write)
        finally:
            os._exit(0)
    os.close(report_write)
    arrays = 0
    drains = 0

    def drain() -> int:
        nonlocal arrays, drains
        drains += 1
        if sink_name == "arrays":
            n = len(read_batch(ring))
            arrays += n
            return n
        return monitor._drain(sink)

    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if not ring.pending():
            poller.poll(0.05)
        if drain() and batch_s > 0:
            time.sleep(batch_s)
    produced = json.loads(os.read(report_read, 4096))
    os.close(report_read)
    drain()
    wall = time.perf_counter() - wall0
    cpu = cpu_seconds() - cpu0
    if inner is not None:
        inner.close()
    if out_file is not None:
        out_file.close()
    consumed = arrays if sink_name == "arrays" else sink.count
    poller.close()
    ring.close()
    obj.close()
    emitted, failed = produced["emitted"], produced["failed"]
    return {
        "sink": sink_name,
        "target_per_s": rate,
        "produced_per_s": round((emitted + failed) / produced["elapsed"]),
        "emitted": emitted,
        "dropped_ring_full": failed,
        "consumed": consumed,
        "missing": emitted - consumed,
        "out_of_order": sink.out_of_order,
        "consumed_per_s": round(consumed / produced["elapsed"]),
        "consumer_cpu_pct": round(100 * cpu / wall, 1),
        "consumer_cpu_us_per_event": round(1e6 * cpu / consumed, 3) if consumed else None,
        "producer_cpu_pct": round(100 * produced["cpu"] / produced["elapsed"], 1),
        "drains": drains,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="0.5,1,2,4", help="millions of events/s")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--sinks", default="null,jsonl,arrays")
    parser.add_argument("--batch-ms", type=float, default=live.BATCH_NS / 1e6)
    parser.add_argument("--ring-bytes", type=int, default=live.LIVE_RINGBUF_BYTES)
    parser.add_argument("--flows", type=int, default=1000)
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (BPF_PROG_TEST_RUN)")
    results = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        obj_path = build(tmp)
        for sink_name in options.sinks.split(","):
            for rate in options.rates.split(","):
                result = measure(
                    obj_path, options.ring_bytes, sink_name, float(rate) * 1e6,
                    options.seconds, options.batch_ms / 1e3, options.flows, tmp,
                )  # fmt: skip
                print(json.dumps(result), file=sys.stderr)
                results.append(result)
    print(json.dumps({
        "ring_bytes": options.ring_bytes,
        "batch_ms": options.batch_ms,
        "seconds": options.seconds,
        "cpus": os.cpu_count(),
        "results": results,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
