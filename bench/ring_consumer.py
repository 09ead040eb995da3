"""Ring-buffer consumer speed: can the live monitor's Python side keep up with the kernel?

A bench-only BPF program (bench/ring_producer.bpf.c, compiled here with clang into a
temporary directory under build/) writes pping-format RTT events into a ring buffer map
with the layout and size of pping's live `events` map. A forked producer process runs
it through BPF_PROG_TEST_RUN (`bpf_loop`, a quarter millisecond's worth of events per
run) at a controlled rate; when the ring is full its reserves fail and are counted (the
kernel program counts COUNTER_RINGBUF_FULL the same way). The parent drains the ring
with the live monitor's own `LiveMonitor._drain` (ringbuf.py + kernel/batch.py decoder,
then RTT columns to the sink's `write_rtt_batch`, or event objects) into a sink made by
`make_sink`, waking like the live loop: epoll on the map, then `BATCH_NS` of sleep
after each drain that found events but less than a chunk (`pause_after`).

Rows: a format (`standard`, `jsonl`, `json`, `ppviz`, `machine` for -m; or `arrays`:
the decoder alone, `null`: event objects built and dropped), a destination (`file`: a
file on disk under build/, opened as `-w` opens it; `devnull`), and a path (`columns`:
the sinks' batch formatting; `objects`: one event object and one `write` per event, as
before). Every event carries its sequence number (in `rtt`), so lost and reordered
events are detected; the lines in the file are counted afterwards.

Prints one JSON document: per row, the best of `--repeat` runs (fewest drops, then
most written) with events/s produced, consumed and written, ring drops (failed
reserves), events missing, CPU of the consumer and of the producer, and every run's
figures.

    sudo .venv/bin/python bench/ring_consumer.py [--rates 1] [--seconds 3] [--repeat 3]
        [--formats standard,jsonl,json,ppviz,machine] [--destinations file,devnull]
        [--paths columns,objects] [--batch-ms 10] [--ring-bytes 4194304]
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
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "bench" / "ring_producer.bpf.c"

from pping.events import Counters, Event, RttEvent  # noqa: E402
from pping.kernel import libbpf  # noqa: E402
from pping.kernel.batch import EventBuilder, read_batch  # noqa: E402
from pping.kernel.ringbuf import RingBuffer  # noqa: E402
from pping.sinks import ReopenableFile, make_sink  # noqa: E402
from pping.sinks.columnar import RttColumns  # noqa: E402
from pping.sinks.output import write_ascii  # noqa: E402
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
    """The producer process: `rate` events/s for `seconds`, in chunks; reports totals.

    Events go out in runs of about a quarter of a millisecond's worth, with a sleep
    until the next run is due: a run of a few events per BPF_PROG_TEST_RUN would cost
    the producer a whole CPU in system calls (the kernel's own work is ~50 ns an
    event), taken from the consumer on a small machine.
    """
    args = EmitRttArgs(flows=flows)
    opts = libbpf.BpfTestRunOpts(sz=ctypes.sizeof(libbpf.BpfTestRunOpts))
    opts.ctx_in = ctypes.addressof(args)
    opts.ctx_size_in = ctypes.sizeof(args)
    run = libbpf.lib().bpf_prog_test_run_opts
    opts_address = ctypes.addressof(opts)
    chunk = max(64, int(rate / 4000))
    emitted = failed = attempted = 0
    cpu0 = cpu_seconds()
    start = time.perf_counter()
    end = start + seconds
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        due = int(rate * (now - start)) - attempted
        if due < chunk:
            time.sleep(min((chunk - due) / rate, end - now))
            continue
        args.count = min(due, 4 * chunk)
        args.seq = emitted
        if run(prog_fd, opts_address) < 0:
            raise SystemExit("BPF_PROG_TEST_RUN failed")
        emitted += args.emitted
        failed += args.failed
        attempted += args.count
    elapsed = time.perf_counter() - start
    result = {"emitted": emitted, "failed": failed, "elapsed": elapsed, "cpu": cpu_seconds() - cpu0}
    os.write(report, json.dumps(result).encode())


class CountingStream:
    """The sink's output stream, counting the lines and bytes written through it."""

    def __init__(self, inner: ReopenableFile) -> None:
        self.inner = inner
        self.lines = 0
        self.chars = 0

    def write(self, text: str, /) -> int:
        self.lines += text.count("\n")
        self.chars += len(text)
        return self.inner.write(text)

    def write_bytes(self, data: bytes | memoryview, /) -> None:
        self.lines += int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n")))
        self.chars += len(data)
        write_ascii(self.inner, data)

    def flush(self) -> None:
        self.inner.flush()


class CountingSink:
    """Counts events and checks their sequence numbers (the producer's rtt field), then
    hands them on: in columns (`write_rtt_batch`) when `columns`, else as objects."""

    def __init__(self, inner: Any, columns: bool) -> None:
        self.inner = inner
        self.count = 0
        self.next = 0
        self.out_of_order = 0
        if columns:
            self.write_rtt_batch = self._write_rtt_batch

    def write(self, event: Event) -> None:
        assert type(event) is RttEvent
        if event.rtt != self.next:
            self.out_of_order += 1
        self.next = event.rtt + 1
        self.count += 1
        if self.inner is not None:
            self.inner.write(event)

    def _write_rtt_batch(self, columns: RttColumns) -> None:
        n = len(columns)
        if not n:
            return
        expected = np.arange(self.next, self.next + n, dtype=np.uint64)
        self.out_of_order += int((columns.rtt != expected).sum())
        self.next = int(columns.rtt[-1]) + 1
        self.count += n
        if self.inner is not None:
            self.inner.write_rtt_batch(columns)

    def write_counters(self, counters: Counters, final: bool) -> None:
        pass

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


def monitor_for(ring: RingBuffer) -> live.LiveMonitor:
    """A LiveMonitor with only what `_drain` uses: the real drain, no interfaces."""
    monitor = live.LiveMonitor.__new__(live.LiveMonitor)
    monitor.program = SimpleNamespace(ring=ring)  # type: ignore[assignment]
    monitor.time_base = live.clock_offset()
    monitor._map_full_last = {}
    monitor._events = EventBuilder()
    return monitor


@dataclass
class Case:
    """One row: a format (or `arrays`: the decoder alone, `null`: objects dropped),
    where its text goes (`file`, `devnull`), and through which path (`columns` or
    `objects`)."""

    fmt: str
    destination: str
    path: str
    rate: float


def measure(
    obj_path: Path, ring_bytes: int, case: Case, seconds: float, batch_s: float,
    flows: int, tmp: Path,
) -> dict[str, Any]:  # fmt: skip
    obj = libbpf.BpfObject(obj_path)
    obj.map("events").set_max_entries(ring_bytes)
    obj.load()
    ring_fd = obj.map("events").fd
    ring = RingBuffer(ring_fd, ring_bytes)
    out_path = tmp / "events.out" if case.destination == "file" else Path(os.devnull)
    out_file = None
    stream = None
    inner = None
    if case.fmt not in ("arrays", "null"):
        out_path.unlink(missing_ok=True)
        out_file = ReopenableFile(out_path, exclusive=False)
        stream = CountingStream(out_file)
        inner = make_sink(case.fmt, stream, sys.stderr)
    sink = CountingSink(inner, columns=case.path == "columns")
    monitor = monitor_for(ring)
    report_read, report_write = os.pipe()
    poller = select.epoll()
    poller.register(ring_fd, select.EPOLLIN)
    cpu0 = cpu_seconds()
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    wall0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the producer
        try:
            os.close(report_read)
            produce(obj.program("emit_rtt").fd, case.rate, seconds, flows, report_write)
        finally:
            os._exit(0)
    os.close(report_write)
    arrays = 0
    drains = 0

    def drain() -> int:
        nonlocal arrays, drains
        drains += 1
        if case.fmt == "arrays":
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
        if live.pause_after(drain()) and batch_s > 0:
            time.sleep(batch_s)
    produced = json.loads(os.read(report_read, 4096))
    os.close(report_read)
    drain()
    sink.close()
    if out_file is not None:
        out_file.close()
    wall = time.perf_counter() - wall0
    cpu = cpu_seconds() - cpu0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    consumed = arrays if case.fmt == "arrays" else sink.count
    written = stream.lines if stream is not None else 0
    if case.fmt == "json":
        written -= 1  # the closing bracket's line
    in_file = None
    if case.destination == "file" and out_file is not None:
        with open(out_path, "rb") as text:
            in_file = sum(chunk.count(b"\n") for chunk in iter(lambda: text.read(1 << 20), b""))
        in_file -= case.fmt == "json"
        os.replace(out_path, tmp / "last.out")
    poller.close()
    ring.close()
    obj.close()
    emitted, failed = produced["emitted"], produced["failed"]
    elapsed = produced["elapsed"]
    return {
        "format": case.fmt,
        "destination": case.destination,
        "path": case.path,
        "target_per_s": case.rate,
        "produced_per_s": round((emitted + failed) / elapsed),
        "consumed_per_s": round(consumed / elapsed),
        "written_per_s": round(written / elapsed),
        "dropped_ring_full": failed,
        "emitted": emitted,
        "consumed": consumed,
        "written": written,
        "lines_in_file": in_file,
        "missing": emitted - consumed,
        "out_of_order": sink.out_of_order,
        "mb_written_per_s": round(stream.chars / elapsed / 1e6, 1) if stream else 0,
        "consumer_cpu_pct": round(100 * cpu / wall, 1),
        "consumer_cpu_us_per_event": round(1e6 * cpu / consumed, 3) if consumed else None,
        "consumer_page_faults_per_1k_events": round(1000 * faults / consumed, 1)
        if consumed
        else None,
        "producer_cpu_pct": round(100 * produced["cpu"] / elapsed, 1),
        "drains": drains,
    }


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the fewest drops and missing events, then the most written."""
    return min(runs, key=lambda r: (r["dropped_ring_full"] + r["missing"], -r["written_per_s"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1", help="millions of events/s")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--formats", default="standard,jsonl,json,ppviz,machine", help="and arrays, null"
    )
    parser.add_argument("--destinations", default="file,devnull")
    parser.add_argument("--paths", default="columns", help="columns, objects")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (best of)")
    parser.add_argument("--batch-ms", type=float, default=live.BATCH_NS / 1e6)
    parser.add_argument("--ring-bytes", type=int, default=live.LIVE_RINGBUF_BYTES)
    parser.add_argument("--flows", type=int, default=1000)
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (BPF_PROG_TEST_RUN)")
    cases = []
    for fmt in options.formats.split(","):
        for destination in options.destinations.split(","):
            for path in options.paths.split(","):
                if fmt in ("arrays", "null") and (destination, path) != ("devnull", "objects"):
                    continue
                for rate in options.rates.split(","):
                    cases.append(Case(fmt, destination, path, float(rate) * 1e6))
    rows = []
    with tempfile.TemporaryDirectory(dir=ROOT / "build") as tmp_dir:
        tmp = Path(tmp_dir)
        obj_path = build(tmp)
        for case in cases:
            runs = []
            for _ in range(options.repeat):
                runs.append(
                    measure(
                        obj_path,
                        options.ring_bytes,
                        case,
                        options.seconds,
                        options.batch_ms / 1e3,
                        options.flows,
                        tmp,
                    )
                )
                print(json.dumps(runs[-1]), file=sys.stderr)
            row = best_of(runs)
            row["runs"] = [
                {k: r[k] for k in ("written_per_s", "dropped_ring_full", "missing")} for r in runs
            ]
            rows.append(row)
    print(json.dumps({
        "ring_bytes": options.ring_bytes,
        "batch_ms": options.batch_ms,
        "seconds": options.seconds,
        "repeat": options.repeat,
        "flows": options.flows,
        "cpus": os.cpu_count(),
        "output_dir": str(ROOT / "build"),
        "results": rows,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
