"""The kernel data path must give exactly the events and counters of the Python engine.

Every capture of tests/data/pcaps and a set of synthetic captures are replayed through
the kernel program (`--datapath kernel`: BPF_PROG_TEST_RUN, clean-up on its maps) and
through `pping.replay.replay` with `pping.engine.Engine`, under the command line's own
option sets; events, counters and the tables left at the end must be identical.
"""

from __future__ import annotations

import ctypes
import dataclasses
import io
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tracegen
from pping.cli import build_parser, config_from_args, main
from pping.config import (
    FLOW_LIFETIME_NS,
    ICMP_FLOW_LIFETIME_NS,
    TIMESTAMP_LIFETIME_NS,
    TIMESTAMP_MIN_LIFETIME_NS,
    UNOPENED_FLOW_LIFETIME_NS,
    Config,
    direction_is_old,
    timestamp_is_stale,
)
from pping.engine import Engine
from pping.errors import CaptureError, KernelError
from pping.events import (
    Counters,
    Event,
    EventReason,
    EventSource,
    Flow,
    FlowEvent,
    FlowEventType,
    RttEvent,
)
from pping.kernel import abi, libbpf
from pping.kernel.cleanup import KernelCleanup
from pping.kernel.program import PpingProgram, decode_event, object_path
from pping.kernel.replay import KernelReplay, load_replay_program, to_ethernet
from pping.replay import replay
from pping.sources.pcap import CaptureReader


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the kernel data path needs root (BPF_PROG_TEST_RUN, map access)"
    try:
        object_path()
    except KernelError as error:
        return str(error)
    return None


pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason())),
]

DATA = Path(__file__).parent / "data" / "pcaps"
CAPTURES = sorted(p for p in DATA.glob("*.pcap*") if p.is_file())

# Option sets as the command line gives them: -C alone tracks ICMP only.
OPTION_SETS = {
    "r0": ["-r", "0"],
    "r0-s": ["-r", "0", "-s"],
    "r0-C": ["-r", "0", "-C"],
    "r0-T-C-s": ["-r", "0", "-T", "-C", "-s"],
    "r100": ["-r", "100"],
    "r100-s": ["-r", "100", "-s"],
    "r100-C": ["-r", "100", "-C"],
    "r100-T-C-s": ["-r", "100", "-T", "-C", "-s"],
}
# More of the algorithm's knobs, on fewer captures.
EXTRA_OPTION_SETS = {
    "rtt-rate-srtt": ["-r", "100", "-R", "1", "-t", "smoothed", "-T", "-C", "-s"],
    "rtt-rate-min": ["-r", "50", "-R", "0.5", "-s"],
    "no-cleanup": ["-r", "0", "-c", "0", "-T", "-C", "-s"],
    "fast-cleanup": ["-r", "0", "-c", "0.1", "-T", "-C", "-s"],
    "tiny-tables": ["-r", "0", "-s", "-T", "-C", "--max-flows", "3", "--max-timestamps", "5"],
    "burst": ["--burst", "1"],
    "burst-3-T-C-s": ["-r", "20", "--burst", "3", "--burst-window", "2", "-T", "-C", "-s"],
    "burst-rtt-rate": ["-r", "10", "-R", "0.5", "--burst", "2", "-s"],
    "burst-tiny-tables": [
        "-r",
        "1",
        "--burst",
        "4",
        "-s",
        "-T",
        "-C",
        "--max-flows",
        "3",
        "--max-timestamps",
        "5",
    ],
    "adaptive": [
        "-r", "10", "-c", "0.1", "-s", "-T", "-C", "--adaptive", "--max-flows", "6",
        "--max-timestamps", "8", "--max-outstanding", "3", "--stats-interval", "0.5",
    ],
    "adaptive-rtt-rate": [
        "-r", "10", "-R", "0.5", "-c", "0.1", "-s", "--adaptive", "--high-water", "50",
        "--low-water", "25", "--max-timestamps", "16", "--stats-interval", "1",
    ],
    "grow": [
        "-r", "0", "-c", "0.1", "-s", "-T", "-C", "--max-flows", "3", "--max-flows-cap", "7",
        "--max-timestamps", "4", "--max-timestamps-cap", "9", "--stats-interval", "0.5",
    ],
    "grow-adaptive": [
        "-r", "10", "-c", "0.1", "--burst", "1", "--adaptive", "--max-timestamps", "4",
        "--max-timestamps-cap", "16", "--max-flows", "4", "--max-flows-cap", "64", "-s",
    ],
    "adaptive-burst": [
        "-r", "10", "-c", "0.1", "--burst", "2", "--adaptive", "--max-timestamps", "8",
        "--max-outstanding", "2", "-s",
    ],
}  # fmt: skip


def config_of(options: list[str]) -> Config:
    return config_from_args(build_parser().parse_args(["--read", "-", *options]))


@pytest.fixture(scope="module")
def programs() -> Iterator[dict[Config, PpingProgram]]:
    """Loaded programs by configuration, reused (reset) between captures."""
    loaded: dict[Config, PpingProgram] = {}
    yield loaded
    for program in loaded.values():
        program.close()


def program_for(programs: dict[Config, PpingProgram], config: Config) -> PpingProgram:
    if config not in programs:
        programs[config] = load_replay_program(config)
    return programs[config]


def collect(events: Iterator[Event]) -> list[Event | str]:
    """Every event, then the error that ended the capture (if any) as text."""
    out: list[Event | str] = []
    try:
        out.extend(events)
    except CaptureError as error:
        out.append(str(error))
    return out


# -- the tables at the end, in one comparable form ------------------------------------

FLOW_FIELDS = (
    "conn_state",
    "has_been_timestamped",
    "last_id",
    "last_timestamp",
    "started",
    "min_rtt",
    "srtt",
    "outstanding",
    "sent_pkts",
    "sent_bytes",
    "rec_pkts",
    "rec_bytes",
    "opening_reason",
    "burst_left",
    "window_reported",
    "previous_reported",
    "previous_window",
)
TIME_FIELDS = ("last_timestamp", "started", "previous_window")


def engine_tables(engine: Engine) -> tuple[dict[Any, Any], dict[Any, int]]:
    def fields(state: Any) -> tuple[int, ...]:
        return tuple(int(getattr(state, name)) for name in FLOW_FIELDS)

    flows = {
        key: (dual.closed, [fields(dual.first), fields(dual.second)])
        for key, dual in engine.flows.items()
    }
    return flows, dict(engine.timestamps)


def _direction(key: Any) -> tuple[int, int, bytes, int, bytes, int]:
    return (
        int(key["link"]),
        int(key["proto"]),
        bytes(key["saddr"]),
        int(key["sport"]),
        bytes(key["daddr"]),
        int(key["dport"]),
    )


def kernel_tables(session: KernelReplay) -> tuple[dict[Any, Any], dict[Any, int]]:
    base = session.base or 0

    def real(value: int) -> int:
        return 0 if value == 0 else value + base  # 0: never set (both data paths)

    program = session.program
    keys, values = libbpf.map_lookup_batch(
        program.flows_fd, abi.FLOW_KEY_DTYPE, abi.DUAL_FLOW_DTYPE
    )
    flows = {}
    for key, value in zip(keys, values, strict=True):
        states = []
        for side in (0, 1):
            state = value["dir"][side]
            states.append(
                tuple(
                    real(int(state[name])) if name in TIME_FIELDS else int(state[name])
                    for name in FLOW_FIELDS
                )
            )
        flows[_direction(key)] = (bool(value["closed"]), states)
    ts_keys, sent = libbpf.map_lookup_batch(
        program.timestamps_fd, abi.TIMESTAMP_KEY_DTYPE, np.dtype(np.uint64)
    )
    timestamps = {
        (*_direction(key["flow"]), int(key["pid"])): int(value) + base
        for key, value in zip(ts_keys, sent, strict=True)
    }
    return flows, timestamps


def _without_times(tables: tuple[dict[Any, Any], dict[Any, int]]) -> Any:
    flows, timestamps = tables
    keep = [i for i, name in enumerate(FLOW_FIELDS) if name not in TIME_FIELDS]
    return (
        {
            key: (closed, [[state[i] for i in keep] for state in states])
            for key, (closed, states) in flows.items()
        },
        set(timestamps),
    )


def assert_same(
    raw: bytes,
    config: Config,
    programs: dict[Config, PpingProgram],
    merge_interfaces: bool = False,
    tables: bool = True,
) -> None:
    engine = Engine(config)
    expected = collect(replay(engine, CaptureReader(io.BytesIO(raw)), merge_interfaces))

    session = KernelReplay(config, merge_interfaces, program_for(programs, config))
    try:
        got = collect(session.run(CaptureReader(io.BytesIO(raw))))
        counters = Counters()
        session.finish(counters)
        kernel_state = kernel_tables(session)
        clamped = session.clamped
    finally:
        session.close()

    assert len(got) == len(expected)
    for index, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a == b, f"event {index} differs"
    assert counters == engine.counters
    if tables:
        expected_state = engine_tables(engine)
        if clamped:
            # Times more than 2^62 ns before a jump of the clock are clamped (only
            # with clean-up off): compare the tables without them.
            kernel_state = _without_times(kernel_state)
            expected_state = _without_times(expected_state)
        assert kernel_state == expected_state


# -- real captures ------------------------------------------------------------------


@pytest.mark.parametrize("options", list(OPTION_SETS), ids=str)
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_real_captures(path: Path, options: str, programs: dict[Config, PpingProgram]) -> None:
    assert_same(path.read_bytes(), config_of(OPTION_SETS[options]), programs)


@pytest.mark.parametrize("options", list(EXTRA_OPTION_SETS), ids=str)
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_real_captures_more_options(
    path: Path, options: str, programs: dict[Config, PpingProgram]
) -> None:
    assert_same(path.read_bytes(), config_of(EXTRA_OPTION_SETS[options]), programs)


MULTI_INTERFACE = [
    "gopacket__test202-le.pcapng",
    "pcapplusplus__many_interfaces-1.pcapng",
    "pcapplusplus__pcapng-example.pcapng",
]


@pytest.mark.parametrize("name", MULTI_INTERFACE)
@pytest.mark.parametrize("options", ["r0-T-C-s", "r100"])
def test_merged_interfaces(name: str, options: str, programs: dict[Config, PpingProgram]) -> None:
    raw = (DATA / name).read_bytes()
    assert_same(raw, config_of(OPTION_SETS[options]), programs, merge_interfaces=True)


# -- synthetic captures -------------------------------------------------------------

SYNTHETIC: list[tuple[str, dict[str, Any]]] = [
    ("bulk", {"flows": 3, "packets": 20_000}),
    ("bulk", {"packets": 10_000, "ip_version": 6}),
    ("bulk", {"packets": 10_000, "encap": "vlan", "bidirectional": True}),
    ("bulk", {"packets": 10_000, "ip_version": 6, "encap": "qinq"}),
    ("bulk", {"packets": 10_000, "link": "sll", "resolution": "us"}),
    ("bulk", {"packets": 10_000, "link": "raw", "ip_version": 6, "snaplen": 80}),
    ("bulk", {"packets": 10_000, "snaplen": 60}),
    ("many_flows", {"flows": 200, "packets": 20_000}),
    ("reordering", {}),
    ("loss", {}),
    ("wraparound", {}),
    ("fin_reuse", {}),
    ("handshake_rst", {}),
    ("app_limited", {}),
    ("malformed", {}),
    ("icmp_echo", {}),
    ("icmp_echo", {"ip_version": 6}),
    ("delayed_ack", {"flows": 2, "duration_s": 3.0}),
]


@cache
def synthetic(index: int) -> bytes:
    scenario, kwargs = SYNTHETIC[index]
    raw, _ = tracegen.SCENARIOS[scenario](seed=5, **kwargs)
    return raw


@pytest.mark.parametrize("options", list(OPTION_SETS), ids=str)
@pytest.mark.parametrize("index", range(len(SYNTHETIC)), ids=lambda i: str(SYNTHETIC[i]))
def test_synthetic_captures(index: int, options: str, programs: dict[Config, PpingProgram]) -> None:
    assert_same(synthetic(index), config_of(OPTION_SETS[options]), programs)


MORE_OPTIONS_SCENARIOS = ("bulk", "fin_reuse", "icmp_echo", "many_flows", "delayed_ack")


@pytest.mark.parametrize("options", list(EXTRA_OPTION_SETS), ids=str)
@pytest.mark.parametrize(
    "index",
    [i for i, (name, _) in enumerate(SYNTHETIC) if name in MORE_OPTIONS_SCENARIOS],
    ids=lambda i: str(SYNTHETIC[i]),
)
def test_synthetic_captures_more_options(
    index: int, options: str, programs: dict[Config, PpingProgram]
) -> None:
    assert_same(synthetic(index), config_of(EXTRA_OPTION_SETS[options]), programs)


# -- corner cases of the replay itself ------------------------------------------------


def _pcap(linktype: int, packets: list[tuple[int, bytes]]) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, linktype)]
    for t, data in packets:
        out.append(struct.pack("<IIII", t // 10**9, t % 10**9, len(data), len(data)))
        out.append(data)
    return b"".join(out)


def _tcp_ipv6(
    src: int, dst: int, sport: int, dport: int, flags: int, tsval: int, tsecr: int, payload: int,
    ext_headers: int = 0, ext_len: int = 0,
) -> bytes:  # fmt: skip
    """Ethernet + IPv6 (+ hop-by-hop options of (ext_len + 1) * 8 bytes each) + TCP."""
    exts = b""
    for i in range(ext_headers):
        nxt = 6 if i == ext_headers - 1 else 0
        exts += bytes((nxt, ext_len)) + bytes((ext_len + 1) * 8 - 2)
    tcp = struct.pack(
        "!HHIIBBHHHBBBBII", sport, dport, 0, 0, 8 << 4, flags, 0, 0, 0, 1, 1, 8, 10, tsval, tsecr
    )
    first = 0 if ext_headers else 6
    plen = len(exts) + len(tcp) + payload
    ip = struct.pack(
        "!IHBB16s16s", 6 << 28, plen, first, 64, src.to_bytes(16, "big"), dst.to_bytes(16, "big")
    )
    return bytes(12) + b"\x86\xdd" + ip + exts + tcp + bytes(payload)


def test_headers_beyond_the_test_run_limit(programs: dict[Config, PpingProgram]) -> None:
    """Frames over 3712 bytes: cut when that changes nothing, else a minimal frame."""
    t = 1_700_000_000 * 10**9
    packets = [
        # Whole headers in the first bytes, a jumbo payload: cut.
        (t, _tcp_ipv6(1, 2, 1000, 80, 0x18, 100, 0, 8000)),
        # TCP after 3 x 1.5 KiB of extension headers: parsed here, minimal frame.
        (t + 5_000_000, _tcp_ipv6(2, 1, 80, 1000, 0x18, 500, 100, 100, 3, 191)),
        (t + 9_000_000, _tcp_ipv6(1, 2, 1000, 80, 0x18, 101, 500, 8000, 3, 191)),
        (t + 19_000_000, _tcp_ipv6(2, 1, 80, 1000, 0x10, 501, 101, 0)),
        # A fourth extension header: the cut frame gets the same verdict.
        (t + 20_000_000, _tcp_ipv6(2, 1, 80, 1000, 0x18, 502, 101, 10, 4, 120)),
    ]
    raw = _pcap(1, packets)
    for options in ("r0-T-C-s", "r100"):
        assert_same(raw, config_of(OPTION_SETS[options]), programs)


def _pcapng(offsets_s: list[int], packets: list[tuple[int, int, bytes]]) -> bytes:
    """A pcapng file: Ethernet interfaces (ns ticks, if_tsoffset in seconds), then
    (interface, ticks, frame) enhanced packet blocks."""

    def block(kind: int, body: bytes) -> bytes:
        return struct.pack("<II", kind, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    blocks = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for offset in offsets_s:
        options = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HHq", 14, 8, offset)
        blocks.append(block(1, struct.pack("<HHI", 1, 0, 0) + options + bytes(4)))
    for interface, ticks, data in packets:
        body = struct.pack(
            "<IIIII", interface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)
        )
        blocks.append(block(6, body + data + bytes(-len(data) % 4)))
    return b"".join(blocks)


def test_time_beyond_64_bits(programs: dict[Config, PpingProgram]) -> None:
    """Capture times that no 64-bit clock holds: the program's clock is moved."""
    offsets = [0, 1 << 36, 1 << 37]  # seconds: 2^36 s is more than 2^64 ns
    packets = []
    for interface in range(3):
        start = 1_000_000_000
        packets += [
            (interface, start, _tcp_ipv6(1, 2, 1000, 80, 0x18, 10, 0, 100)),
            (interface, start + 3_000_000, _tcp_ipv6(2, 1, 80, 1000, 0x18, 70, 10, 100)),
            (interface, start + 7_000_000, _tcp_ipv6(1, 2, 1000, 80, 0x18, 11, 70, 100)),
            (interface, start + 9_000_000, _tcp_ipv6(2, 1, 80, 1000, 0x10, 71, 11, 0)),
        ]
    raw = _pcapng(offsets, packets)
    assert_same(raw, config_of(OPTION_SETS["r0"]), programs)
    assert_same(raw, config_of(OPTION_SETS["r0"]), programs, merge_interfaces=True)
    # A burst in every era; merged, windows of one flow straddle the moves of the clock.
    bursts = config_of(["--burst", "1", "--burst-window", "10"])
    assert_same(raw, bursts, programs)
    assert_same(raw, bursts, programs, merge_interfaces=True)
    # Without clean-up the first era's entries stay, with times the moved clock clamps:
    # events and counters still agree (the tables' times cannot).
    assert_same(raw, config_of(EXTRA_OPTION_SETS["no-cleanup"]), programs, tables=False)


def test_clock_moved_back_keeps_the_burst_state() -> None:
    """A pcapng interface more than 2^62 ns earlier than the first: the program's clock
    is moved back (no time clamped), and every time of the burst state moves with it."""
    packets = [
        (0, 1_000_000_000, _tcp_ipv6(1, 2, 1000, 80, 0x18, 10, 0, 100)),
        (0, 1_001_000_000, _tcp_ipv6(1, 2, 1000, 80, 0x18, 11, 0, 100)),  # a window opens
        (0, 1_002_000_000, _tcp_ipv6(1, 2, 1000, 80, 0x18, 12, 0, 100)),  # joins it
        (0, 1_005_000_000, _tcp_ipv6(2, 1, 80, 1000, 0x10, 70, 11, 0)),
        (1, 1_000_000_000, _tcp_ipv6(1, 2, 1000, 80, 0x18, 13, 0, 100)),
        (1, 1_001_000_000, _tcp_ipv6(2, 1, 80, 1000, 0x10, 71, 12, 0)),
    ]
    raw = _pcapng([1 << 33, 0], packets)
    config = config_of(["--burst", "1"])
    programs: dict[Config, PpingProgram] = {}
    try:
        for merge in (False, True):
            assert_same(raw, config, programs, merge_interfaces=merge)
    finally:
        for program in programs.values():
            program.close()


def _ipv4(src: int, dst: int, proto: int, l4: bytes, payload: int) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4) + payload, 0, 0, 64, proto, 0,
        bytes((10, 0, 0, src)), bytes((10, 0, 0, dst)),
    )  # fmt: skip
    return bytes(12) + b"\x08\x00" + header + l4 + bytes(payload)


def _tcp4(
    src: int, dst: int, sport: int, dport: int, flags: int, tsval: int, tsecr: int, payload: int = 0
) -> bytes:
    tcp = struct.pack(
        "!HHIIBBHHHBBBBII", sport, dport, 0, 0, 8 << 4, flags, 0, 0, 0, 1, 1, 8, 10, tsval, tsecr
    )
    return _ipv4(src, dst, 6, tcp, payload)


def _echo4(src: int, dst: int, request: bool, ident: int, seq: int) -> bytes:
    return _ipv4(src, dst, 1, struct.pack("!BBHHH", 8 if request else 0, 0, 0, ident, seq), 56)


MS = 1_000_000
S = 1_000_000_000
ACK, PSH_ACK, SYN, SYN_ACK, FIN_ACK, RST = 0x10, 0x18, 0x02, 0x12, 0x11, 0x04


def boundary_capture() -> bytes:
    """Packets placed exactly on the specification's limits (see test_boundaries)."""
    t0 = 1_700_000_000 * S
    packets: list[tuple[int, bytes]] = []

    def at(t: int, frame: bytes) -> None:
        packets.append((t0 + t, frame))

    # Handshake, then two segments at the same time, then one exactly 100 ms later.
    at(0, _tcp4(1, 2, 1000, 80, SYN, 100, 0))
    at(10 * MS, _tcp4(2, 1, 80, 1000, SYN_ACK, 500, 100))
    at(20 * MS, _tcp4(1, 2, 1000, 80, PSH_ACK, 101, 500, 100))
    at(20 * MS, _tcp4(1, 2, 1000, 80, PSH_ACK, 102, 500, 100))
    at(120 * MS, _tcp4(1, 2, 1000, 80, PSH_ACK, 103, 500, 100))
    at(220 * MS, _tcp4(2, 1, 80, 1000, ACK, 501, 103))  # an RTT of exactly 100 ms
    # ICMP: a request sequence seen again at once (its entry is as old as the direction).
    at(300 * MS, _echo4(1, 3, True, 7, 5))
    at(301 * MS, _echo4(1, 3, True, 7, 6))
    at(302 * MS, _echo4(1, 3, True, 7, 5))
    at(303 * MS, _echo4(3, 1, False, 7, 5))
    # TSvals exactly 2^31 apart: neither is newer than the other.
    for i, tsval in enumerate((1000, 1001, 1001 + (1 << 31), 1002, 1003 + (1 << 31), 1004)):
        at(350 * MS + i * MS, _tcp4(9, 10, 4000, 80, PSH_ACK, tsval & 0xFFFFFFFF, 50, 10))
        at(350 * MS + i * MS + 500_000, _tcp4(10, 9, 80, 4000, ACK, 50, tsval & 0xFFFFFFFF))
    # A data segment every 100 ms for 12 s, never acknowledged: timestamps reach 10 s
    # of age exactly at a clean-up; with a tiny table, refusals 1 s apart exactly.
    for i in range(120):
        at(400 * MS + i * 100 * MS, _tcp4(1, 2, 1000, 80, PSH_ACK, 200 + i, 500, 10))
    # A direction without RTT: its timestamp is exactly 10 s old at the clean-up of
    # 10.6 s, so it still matches just after.
    at(500 * MS, _tcp4(11, 12, 5000, 80, PSH_ACK, 1, 70, 10))
    at(600 * MS, _tcp4(11, 12, 5000, 80, PSH_ACK, 2, 70, 10))
    at(10_600 * MS + 1 * MS, _tcp4(12, 11, 80, 5000, ACK, 70, 2))
    # Then acknowledged 200 ms later (srtt known; the rest reach 200 ms exactly).
    for i in range(20):
        t = 12_400 * MS + i * 100 * MS
        at(t, _tcp4(1, 2, 1000, 80, PSH_ACK, 400 + i, 500, 10))
        if i % 4 == 0:
            at(t + 200 * MS, _tcp4(2, 1, 80, 1000, ACK, 600 + i, 400 + i))
    # A flow that never opens and an ICMP flow; other traffic exactly 30 s later (and
    # just after), so a clean-up falls on their lifetime, and a reply in between.
    at(15 * S, _tcp4(4, 5, 2000, 22, PSH_ACK, 1, 0, 10))
    at(15 * S, _echo4(4, 6, True, 9, 1))
    at(15 * S + 1 * MS, _echo4(6, 4, False, 9, 1))
    at(45 * S + 50 * MS, _tcp4(5, 4, 22, 2000, ACK, 9, 1))
    # The first connection's data direction was last stamped at 14.3 s: a clean-up at
    # exactly 314.3 s leaves it (300 s is not more than 300 s), the next one ends it.
    for t in (45 * S, 45 * S + 100 * MS, 314 * S + 300 * MS, 314 * S + 350 * MS):
        at(t, _tcp4(7, 8, 3000, 443, PSH_ACK, t // MS, 0, 10))
    # The first connection again, then FIN, its ACK, RST; and a new one on the tuple.
    at(315 * S, _tcp4(1, 2, 1000, 80, FIN_ACK, 900, 619))
    at(315 * S + 5 * MS, _tcp4(2, 1, 80, 1000, ACK, 950, 900))
    at(315 * S + 6 * MS, _tcp4(2, 1, 80, 1000, RST, 951, 900))
    at(315 * S + 6 * MS, _tcp4(1, 2, 1000, 80, SYN, 5, 0))
    at(315 * S + 7 * MS, _tcp4(2, 1, 80, 1000, SYN_ACK, 6, 5))
    packets.sort(key=lambda packet: packet[0])
    return _pcap(1, packets)


BOUNDARY_OPTIONS = [
    ["-r", "0", "-c", "0.1", "-T", "-C", "-s"],
    ["-r", "100", "-c", "0.1", "-T", "-C", "-s"],
    ["-r", "100", "-c", "0.1", "-R", "1", "-T", "-C", "-s"],
    ["-r", "0", "-c", "0.1", "-T", "-C", "--max-flows", "2", "--max-timestamps", "3"],
    ["-r", "0", "-c", "1", "-T", "-C", "-s", "--max-flows", "1", "--max-timestamps", "1"],
    ["-r", "0", "-c", "0", "-T", "-C", "-s"],
]


@pytest.mark.parametrize("options", BOUNDARY_OPTIONS, ids=" ".join)
def test_boundaries(options: list[str], programs: dict[Config, PpingProgram]) -> None:
    """Every `<` of the specification met with equality, through both data paths."""
    assert_same(boundary_capture(), config_of(options), programs)


# Option fields around the program's shortcut for NOP, NOP, timestamp (and the same
# layout broken in each way the shortcut must not accept), padded with NOPs.
TS_OPTION = bytes((8, 10)) + struct.pack("!II", 7000, 6000)
OPTION_LAYOUTS = [
    bytes((1, 1)) + TS_OPTION,
    TS_OPTION,
    bytes((1, 1, 1)) + TS_OPTION,
    bytes((2, 4, 5, 180, 1, 1)) + TS_OPTION,
    bytes((1, 1, 8, 9)) + TS_OPTION[2:],
    bytes((1, 1, 8, 11)) + TS_OPTION[2:],
    bytes((1, 1, 0)) + TS_OPTION,
    bytes((1, 0, 8, 10)) + TS_OPTION[2:],
]


def option_layouts_capture() -> bytes:
    """Each layout under every data offset, the capture cut after every byte of the
    TCP header: one flow per frame, so that each parse shows in the tables."""
    out = [struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1)]
    t = 1_700_000_000 * S
    sport = 1024
    for layout in OPTION_LAYOUTS:
        for hlen in range(20, 64, 4):
            options = (layout + bytes((1,)) * 40)[: hlen - 20]
            for captured in range(14 + 20 + 18, 14 + 20 + hlen + 1):
                tcp = struct.pack("!HHIIBBHHH", sport, 80, 0, 0, hlen << 2, PSH_ACK, 0, 0, 0)
                frame = _ipv4(1, 2, 6, tcp + options, 10)
                out.append(struct.pack("<IIII", t // S, t % S, captured, len(frame)))
                out.append(frame[:captured])
                sport += 1
                t += MS
    return b"".join(out)


@pytest.mark.parametrize("options", ["r0-T-C-s", "r100"])
def test_timestamp_option_layouts(options: str, programs: dict[Config, PpingProgram]) -> None:
    """The program's shortcut for the usual option layout decides as the walk does."""
    assert_same(option_layouts_capture(), config_of(OPTION_SETS[options]), programs)


def test_command_line(tmp_path: Path) -> None:
    """`--datapath kernel` prints what `--datapath python` prints."""
    capture = DATA / "pcapplusplus__pcapng-example.pcapng"
    outputs = []
    for datapath in ("python", "kernel"):
        out, err = io.StringIO(), io.StringIO()
        argv = ["--read", str(capture), "-r", "0", "-T", "-C", "-s", "-F", "jsonl"]
        code = main([*argv, "--datapath", datapath], stdout=out, stderr=err)
        outputs.append((code, out.getvalue(), err.getvalue()))
    assert outputs[0][1]
    assert outputs[1] == outputs[0]


# -- speed (reported, not asserted) ----------------------------------------------------


def _kernel_run(config: Config, raw: bytes) -> list[Event | str]:
    session = KernelReplay(config)
    try:
        return collect(session.run(CaptureReader(io.BytesIO(raw))))
    finally:
        session.close()


@pytest.mark.slow
def test_replay_speed(record_property: Any, capsys: pytest.CaptureFixture[str]) -> None:
    raw, truth = tracegen.bulk(seed=7, flows=4, packets=200_000)
    config = config_of(["-r", "0"])
    rates = {}
    runs: tuple[tuple[str, Callable[[], object]], ...] = (
        ("kernel", lambda: _kernel_run(config, raw)),
        ("python engine", lambda: collect(replay(Engine(config), CaptureReader(io.BytesIO(raw))))),
    )
    for name, run in runs:
        start = time.perf_counter()
        run()
        rates[name] = truth.packets / (time.perf_counter() - start)
        record_property(f"{name} packets/s", round(rates[name]))
    with capsys.disabled():
        print(
            f"\nreplay of {truth.packets} packets: "
            + ", ".join(f"{name} {rate / 1000:.0f}k packets/s" for name, rate in rates.items())
        )


# -- concurrency: one flow entry updated from several CPUs at once -------------------


def _tcp_frame(tsval: int, tsecr: int, payload: int, *, sport: int = 40000) -> bytes:
    """Ethernet + IPv4 + TCP (ACK, timestamp option) from 10.0.0.1 to 10.0.0.2."""
    tcp_len = 32
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + tcp_len + payload, 0, 0, 64, 6, 0,
        bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]),
    )  # fmt: skip
    options = struct.pack("!BBBBII", 1, 1, 8, 10, tsval, tsecr)
    tcp = struct.pack("!HHIIBBHHH", sport, 80, 1, 1, (tcp_len // 4) << 4, 0x10, 65535, 0, 0)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp + options + b"x" * payload


def _run_repeated(prog_fd: int, frame: bytes, tstamp: int, repeat: int) -> None:
    ctx = libbpf.SkBuff()
    ctx.tstamp = tstamp
    opts = libbpf.BpfTestRunOpts(sz=ctypes.sizeof(libbpf.BpfTestRunOpts))
    opts.ctx_in = ctypes.addressof(ctx)
    opts.ctx_size_in = ctypes.sizeof(ctx)
    opts.data_in = frame
    opts.data_size_in = len(frame)
    opts.repeat = repeat
    result = libbpf.lib().bpf_prog_test_run_opts(prog_fd, ctypes.addressof(opts))
    assert result == 0, os.strerror(-result)


def _only_flow(program: PpingProgram) -> Any:
    keys, values = libbpf.map_lookup_batch(
        program.flows_fd, abi.FLOW_KEY_DTYPE, abi.DUAL_FLOW_DTYPE
    )
    assert len(keys) == 1
    return values[0]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_flow_counters_are_not_lost_when_cpus_race() -> None:
    """Two CPUs run packets of one direction through the program at the same time: no
    packet or byte is lost from the flow entry's counters (atomic adds)."""
    repeat = 200_000
    program = load_replay_program(Config())
    try:
        fd = program.program_fds[abi.PROGRAM_INGRESS]
        frame = _tcp_frame(100, 0, 10)
        _run_repeated(fd, frame, 1_000_000_000, 1)  # creates the entry
        cpus = sorted(os.sched_getaffinity(0))[:2]
        errors: list[BaseException] = []

        def worker(cpu: int) -> None:
            try:
                os.sched_setaffinity(0, {cpu})
                _run_repeated(fd, frame, 1_000_000_000, repeat)
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=worker, args=(cpu,)) for cpu in cpus]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        state = _only_flow(program)["dir"][0]
        assert int(state["sent_pkts"]) == 1 + 2 * repeat
        assert int(state["sent_bytes"]) == 10 * (1 + 2 * repeat)
    finally:
        program.close()


def test_outstanding_never_goes_below_zero() -> None:
    """The clean-up of a timestamp whose direction already counts 0 outstanding (the
    count was lost to a race) leaves 0, not 2^32 - 1, and the entry can still go."""
    program = load_replay_program(Config())
    try:
        fd = program.program_fds[abi.PROGRAM_INGRESS]
        t0 = 1_000_000_000
        libbpf.TestRunner(fd).run(_tcp_frame(100, 0, 10), t0, 0)
        libbpf.TestRunner(fd).run(_tcp_frame(101, 0, 10), t0 + 1_000_000, 0)
        keys, values = libbpf.map_lookup_batch(
            program.flows_fd, abi.FLOW_KEY_DTYPE, abi.DUAL_FLOW_DTYPE
        )
        assert int(values[0]["dir"]["outstanding"][0]) == 1
        values[0]["dir"]["outstanding"][0] = 0  # as if an increment had been lost
        libbpf.map_update(program.flows_fd, keys[:1], values[:1])
        cleanup = KernelCleanup(program)
        now = t0 + TIMESTAMP_LIFETIME_NS + 2_000_000  # the timestamp is stale
        assert cleanup.run(now) == []
        assert cleanup.timestamps_expired == 1
        assert int(_only_flow(program)["dir"]["outstanding"][0]) == 0
        # Again: nothing left to remove, nothing changes.
        assert cleanup.run(now) == []
        assert cleanup.timestamps_expired == 1
        assert int(_only_flow(program)["dir"]["outstanding"][0]) == 0
    finally:
        program.close()


# -- the clean-up's rules in the kernel are config.py's ----------------------------------

_MAPPED = bytes(10) + b"\xff\xff"
_LOW, _HIGH = _MAPPED + bytes((10, 0, 0, 1)), _MAPPED + bytes((10, 0, 0, 2))


def _flow_keys(n: int, proto: int) -> Any:
    """n canonical flow keys (10.0.0.1:i -> 10.0.0.2:80), told apart by the port."""
    keys = np.zeros(n, dtype=abi.FLOW_KEY_DTYPE)
    keys["proto"] = proto
    keys["saddr"] = np.frombuffer(_LOW, dtype=np.uint8)
    keys["daddr"] = np.frombuffer(_HIGH, dtype=np.uint8)
    keys["sport"] = np.arange(1, n + 1)
    keys["dport"] = 80
    return keys


def test_timestamp_rules_are_configs() -> None:
    """Timestamps of directions with known and unknown srtt, at every age around each
    limit: the kernel's clean-up removes exactly those config.timestamp_is_stale
    calls stale (and releases them from `outstanding` when of the current
    incarnation)."""
    now = 1_000 * S
    ages = sorted(
        {limit + d for limit in (0, TIMESTAMP_MIN_LIFETIME_NS, TIMESTAMP_LIFETIME_NS)
         for d in (-1, 0, 1)}
        | {8 * srtt + d for srtt in (25 * MS, 1_250 * MS) for d in (-1, 0, 1)}
    )  # fmt: skip
    srtts = [0, 1, 25 * MS, 1_250 * MS, 2 * S, (1 << 63) // 3]
    cases = [(age, srtt, orphan) for age in ages for srtt in srtts for orphan in (False, True)]
    keys = _flow_keys(len(cases), 6)
    flows = np.zeros(len(cases), dtype=abi.DUAL_FLOW_DTYPE)
    ts_keys = np.zeros(len(cases), dtype=abi.TIMESTAMP_KEY_DTYPE)
    ts_keys["flow"] = keys
    ts_keys["pid"] = 7
    sent = np.array([now - age for age, _, _ in cases], dtype=np.uint64)
    for i, (age, srtt, orphan) in enumerate(cases):
        state = flows[i]["dir"][0]
        state["conn_state"] = abi.CONN_OPEN
        state["srtt"] = srtt
        state["last_timestamp"] = now
        state["started"] = now - age + 1 if orphan else now - age
        state["outstanding"] = 1
        flows[i]["seq"] = i
    program = load_replay_program(Config())
    try:
        libbpf.map_update_batch(program.flows_fd, keys, flows)
        libbpf.map_update_batch(program.timestamps_fd, ts_keys, sent)
        cleanup = KernelCleanup(program)
        assert cleanup.run(now) == []
        left, _ = libbpf.map_lookup_batch(
            program.timestamps_fd, abi.TIMESTAMP_KEY_DTYPE, np.dtype(np.uint64)
        )
        kept_ports = set(left["flow"]["sport"].tolist())
        keys_after, after = libbpf.map_lookup_batch(
            program.flows_fd, abi.FLOW_KEY_DTYPE, abi.DUAL_FLOW_DTYPE
        )
        outstanding = {
            int(key["sport"]): int(value["dir"]["outstanding"][0])
            for key, value in zip(keys_after, after, strict=True)
        }
        stale_count = 0
        for i, (age, srtt, orphan) in enumerate(cases):
            stale = age > 0 and bool(timestamp_is_stale(age, srtt))
            stale_count += stale
            port = i + 1
            assert (port not in kept_ports) == stale, (age, srtt)
            assert outstanding[port] == (0 if stale and not orphan else 1), (age, srtt, orphan)
        assert cleanup.timestamps_expired == stale_count
        assert 0 < stale_count < len(cases)
    finally:
        program.close()


def _old(proto: int, state: int, age: int) -> bool:
    """docs/algorithm.md's "old" with config.direction_is_old (age < 0: in the future)."""
    active = state in (abi.CONN_WAITOPEN, abi.CONN_OPEN)
    waiting, icmp = state == abi.CONN_WAITOPEN, proto == 1
    return active and age >= 0 and bool(direction_is_old(age, waiting, icmp))


def test_flow_rules_are_configs() -> None:
    """Flow entries with every pair of connection states, TCP and ICMP, last stamped
    at every age around each lifetime: the kernel's clean-up removes exactly the
    entries config.direction_is_old allows, with the engine's closing events."""
    now = 1_000 * S
    ages = sorted(
        {limit + d for limit in (0, UNOPENED_FLOW_LIFETIME_NS, ICMP_FLOW_LIFETIME_NS,
                                 FLOW_LIFETIME_NS) for d in (-1, 0, 1)}
    )  # fmt: skip
    states = [abi.CONN_EMPTY, abi.CONN_WAITOPEN, abi.CONN_OPEN, abi.CONN_CLOSED]
    sides = [(state, age) for state in states for age in ages]
    young_open = (abi.CONN_OPEN, 0)
    pairs = [(side, young_open) for side in sides] + [(young_open, side) for side in sides]
    pairs += [(a, b) for a in sides[::5] for b in sides[::7]]
    program = load_replay_program(Config())
    try:
        for proto in (6, 1):
            keys = _flow_keys(len(pairs), proto)
            flows = np.zeros(len(pairs), dtype=abi.DUAL_FLOW_DTYPE)
            for i, pair in enumerate(pairs):
                for side, (state, age) in enumerate(pair):
                    flows[i]["dir"][side]["conn_state"] = state
                    flows[i]["dir"][side]["last_timestamp"] = now - age
                flows[i]["seq"] = len(pairs) - i  # reported in this order, not the map's
            libbpf.map_update_batch(program.flows_fd, keys, flows)

            expected_events, expected_gone = [], set()
            for i in reversed(range(len(pairs))):  # creation order: seq
                (state0, age0), (state1, age1) = pairs[i]
                old0, old1 = _old(proto, state0, age0), _old(proto, state1, age1)
                active0 = state0 in (abi.CONN_WAITOPEN, abi.CONN_OPEN)
                active1 = state1 in (abi.CONN_WAITOPEN, abi.CONN_OPEN)
                if (active0 and not old0) or (active1 and not old1):
                    continue
                expected_gone.add(i + 1)
                port = i + 1
                if old0 and state0 == abi.CONN_OPEN:
                    expected_events.append(Flow(proto, _HIGH, 80, _LOW, port))
                if old1 and state1 == abi.CONN_OPEN:
                    expected_events.append(Flow(proto, _LOW, port, _HIGH, 80))
            cleanup = KernelCleanup(program)
            events = cleanup.run(now, 5)
            assert [event.flow for event in events] == expected_events
            assert all(
                event == FlowEvent(now + 5, event.flow, FlowEventType.CLOSING,
                                   EventReason.FLOW_TIMEOUT, EventSource.GARBAGE_COLLECTION)
                for event in events
            )  # fmt: skip
            left, _ = libbpf.map_lookup_batch(
                program.flows_fd, abi.FLOW_KEY_DTYPE, abi.DUAL_FLOW_DTYPE
            )
            gone = set(range(1, len(pairs) + 1)) - set(left["sport"].tolist())
            assert gone == expected_gone
            assert cleanup.flows_expired == len(expected_gone)
            assert 0 < len(expected_gone) < len(pairs)
            program.reset()
    finally:
        program.close()


def test_cleanup_of_more_flows_than_one_batch(programs: dict[Config, PpingProgram]) -> None:
    """More flows time out at once than the clean-up program returns in one run: it
    runs again, and the closing events still come in the engine's order."""
    flows = abi.CLEANUP_BATCH * 2 + 100
    packets = []
    for i in range(flows):
        sport = 1024 + i
        t = i * 10_000
        packets.append((t, _tcp4(1, 2, sport, 80, PSH_ACK, 10, 0, 100)))
        packets.append((t + 5_000, _tcp4(2, 1, 80, sport, ACK, 20, 10)))
    packets.append((400 * S, _tcp4(3, 4, 5000, 80, PSH_ACK, 1, 0, 10)))
    config = config_of(OPTION_SETS["r0"])
    assert_same(_pcap(1, packets), config, programs)
    engine = Engine(config)
    list(replay(engine, CaptureReader(io.BytesIO(_pcap(1, packets)))))
    assert engine.counters.flows_expired == flows


# -- the XDP entry is the tc ingress program at another hook -----------------------------

_XDP_TEST_RUN_MAX_PACKET = 3520  # a page less XDP's headroom and the shared info


def _run_without_context(prog_fd: int, frame: bytes) -> None:
    """A test run as the live hooks see it: the kernel makes the context (loopback)."""
    opts = libbpf.BpfTestRunOpts(sz=ctypes.sizeof(libbpf.BpfTestRunOpts))
    opts.data_in = frame
    opts.data_size_in = len(frame)
    opts.repeat = 1
    result = libbpf.lib().bpf_prog_test_run_opts(prog_fd, ctypes.addressof(opts))
    assert result == 0, os.strerror(-result)


def _frames(raw: bytes) -> list[bytes]:
    """The Ethernet frames of a capture that both kinds of test run take."""
    frames = []
    try:
        for record in CaptureReader(io.BytesIO(raw)):
            frame = to_ethernet(record.linktype, record.data)
            if isinstance(frame, str) or len(frame) > _XDP_TEST_RUN_MAX_PACKET:
                continue
            ethertype = frame[12:14]
            if (ethertype == b"\x08\x00" and len(frame) < 34) or (
                ethertype == b"\x86\xdd" and len(frame) < 54
            ):
                continue  # refused by the tc test run (see kernel/replay.py)
            frames.append(frame)
    except CaptureError:
        pass  # a corrupt capture: its readable prefix
    return frames


def _without_time(event: Event) -> Event:
    if isinstance(event, RttEvent):
        return dataclasses.replace(event, timestamp=0, rtt=0, min_rtt=0)
    return dataclasses.replace(event, timestamp=0)


_TIMELESS_FIELDS = [name for name in FLOW_FIELDS if name not in ("last_timestamp", "started",
                                                                  "min_rtt", "srtt")]  # fmt: skip


def _run_hook(program: PpingProgram, name: str, frames: list[bytes]) -> Any:
    """Events (without times), counters and tables (without times) after `frames`."""
    program.reset()
    fd = program.program_fds[name]
    ring = program.ring
    assert ring is not None
    events = []
    for frame in frames:
        _run_without_context(fd, frame)
        events += [_without_time(decode_event(data, 0)) for data in ring.read()]
    counters = Counters()
    assert program.add_counters(counters) == 0
    keys, values = libbpf.map_lookup_batch(
        program.flows_fd, abi.FLOW_KEY_DTYPE, abi.DUAL_FLOW_DTYPE
    )
    flows = {
        keys[i].tobytes(): (
            bool(values[i]["closed"]),
            [[int(values[i]["dir"][side][name]) for name in _TIMELESS_FIELDS] for side in (0, 1)],
        )
        for i in range(len(keys))
    }
    ts_keys, _ = libbpf.map_lookup_batch(
        program.timestamps_fd, abi.TIMESTAMP_KEY_DTYPE, np.dtype(np.uint64)
    )
    timestamps = {ts_keys[i].tobytes() for i in range(len(ts_keys))}
    return events, counters, flows, timestamps


def test_xdp_entry_gives_the_tc_ingress_result() -> None:
    """Every test capture through the XDP entry and through tc ingress, in live mode
    (time from the kernel's clock, -r 0 so that time decides nothing, no local
    filter): the same events but for their times, the same counters and tables."""
    config = Config(rate_limit_ns=0, track_icmp=True, include_syn=True)
    raws = [p.read_bytes() for p in CAPTURES]
    raws += [
        tracegen.SCENARIOS[name](seed=7, **kwargs)[0]
        for name, kwargs in [
            ("bulk", {"flows": 3, "packets": 5_000}),
            ("fin_reuse", {}),
            ("handshake_rst", {}),
            ("loss", {}),
            ("icmp_echo", {}),
            ("icmp_echo", {"ip_version": 6}),
        ]
    ]
    program = PpingProgram(config, replay=False, programs=(abi.PROGRAM_INGRESS, abi.PROGRAM_XDP))
    try:
        rtt_events = 0
        for index, raw in enumerate(raws):
            frames = _frames(raw)
            tc_result = _run_hook(program, abi.PROGRAM_INGRESS, frames)
            xdp_result = _run_hook(program, abi.PROGRAM_XDP, frames)
            assert xdp_result == tc_result, f"capture {index}"
            rtt_events += tc_result[1].rtt_events
        assert rtt_events > 1000
    finally:
        program.close()
