"""Per-packet cost of pping's tc and XDP programs (ns/packet), optionally beside ePPing's.

Two measurements, both printed in one JSON document:

1. ``test_run``: BPF_PROG_TEST_RUN with ``repeat`` on a fixed set of packets (the kernel
   times the loop and reports the mean duration of one run). pping is loaded through
   its own loader (``PpingProgram``) in live mode (``replay=False``, local filter on,
   ``Config()`` defaults: 100 ms rate limit, TCP only). Cases:

   - ``tcp_data_repeat``: 1448-byte TCP segment with timestamps, same TSval every run
     (after the first run: not a new identifier, no timestamp; TSecr lookup misses);
   - ``tcp_data_new_tsval``: the same segment with a new TSval each run (new identifier,
     then rate limited); needs one test run per packet (``repeat=1``), so it is compared
     with ``tcp_data_repeat_r1``, the repeat packet measured the same way;
   - ``tcp_new_flow``: a data segment of a flow never seen (flow creation and timestamp
     insert), one test run per packet;
   - ``tcp_pure_ack``: ACK with timestamps and no payload (never timestamped, matched);
   - ``udp`` and ``arp``: packets the programs skip.

   Each case runs on both the ingress and the egress program; the "standard mix" is a
   weighted mean (``MIX``) and ``mean`` is the mean of the ingress and egress mixes.

   ``ingress_hooks``: the same cases on pping's two ingress entries, ``pping_tc_ingress``
   and ``pping_xdp_ingress`` (``-I xdp``), loaded together in one object and measured in
   the same rounds. The local filter is off there: a test run gives the tc program no
   ingress interface and the XDP program the loopback device, so the filter's FIB
   lookup would answer differently for the two and they would not do the same work.

2. ``live``: the kernel's own statistics (``kernel.bpf_stats_enabled=1``) on a paced TCP
   transfer through the test bed's veth (``Testbed``): ``pping -i eth0`` runs in the
   client namespace; the ``run_time_ns``/``run_cnt`` deltas of both programs over the
   transfer give ns per packet. The sysctl is restored afterwards.

ePPing (xdp-project/bpf-examples ``pping/``) is measured the same way when its kernel
object is given with ``--epping-object`` (built outside this repository; see
docs/benchmarks.md). Its ``.rodata`` config is set as its user space would for
``pping -i IF`` (rate limit 100 ms, TCP, local filter on, no aggregation). pping/ePPing
ratios are computed from measurements taken in the same run, rounds interleaved.

``--baseline REF`` also measures pping's program as it was at git revision REF (built
from ``git archive REF bpf`` into a temporary directory, loaded with today's ``struct
pping_config`` up to ``max_outstanding``: the layout before it), so the cost
of features added since is a ratio of two measurements of one run
(``ratio_pping_over_baseline``).

``pping_growing`` is today's program with growing tables on (``--max-timestamps-cap``
and ``--max-flows-cap`` at 4 times the default sizes: the maps are not preallocated
and each insert first reads the table's occupancy), measured in the same rounds:
``ratio_growing_over_pping`` and, with ``--baseline``, ``ratio_growing_over_baseline``.

Needs root. ``python bench/kernel_cost.py [--epping-object PATH] [--baseline REF] [--no-live]``
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import io
import json
import os
import re
import signal
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from pping.config import Config  # noqa: E402
from pping.kernel import abi, libbpf  # noqa: E402
from pping.kernel.attach import attach  # noqa: E402
from pping.kernel.program import PpingProgram, config_struct, object_path  # noqa: E402

PROGRAMS = {"ingress": abi.PROGRAM_INGRESS, "egress": abi.PROGRAM_EGRESS}
INGRESS_HOOKS = {"tc_ingress": abi.PROGRAM_INGRESS, "xdp_ingress": abi.PROGRAM_XDP}

# Share of each case in the "standard mix" (per direction): a TCP bulk flow seen in
# both directions (data and its ACKs), with a little other traffic.
MIX = {
    "tcp_data_repeat": 0.40,
    "tcp_data_new_tsval": 0.05,
    "tcp_pure_ack": 0.45,
    "udp": 0.07,
    "arp": 0.03,
}

# -- packets ------------------------------------------------------------------------

CLIENT_MAC = bytes.fromhex("027070000001")
SERVER_MAC = bytes.fromhex("027070000002")
CLIENT_IP = bytes([198, 18, 0, 1])
SERVER_IP = bytes([198, 18, 0, 2])


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4(src: bytes, dst: bytes, proto: int, payload: bytes) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, proto, 0, src, dst
    )
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + payload


def _ether(src: bytes, dst: bytes, ethertype: int, payload: bytes) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def tcp_frame(
    *,
    forward: bool = True,
    sport: int = 40000,
    dport: int = 5201,
    tsval: int = 1000,
    tsecr: int = 500,
    payload: int = 1448,
    flags: int = 0x10,
) -> bytes:
    """Ethernet/IPv4/TCP with NOP NOP TS options (Linux's layout); forward = client->server."""
    options = struct.pack("!BBBBII", 1, 1, 8, 10, tsval, tsecr)
    tcp = (
        struct.pack(
            "!HHIIBBHHH", sport, dport, 1, 1, (5 + len(options) // 4) << 4, flags, 65535, 0, 0
        )
        + options
        + b"\x5a" * payload
    )
    src, dst = (CLIENT_IP, SERVER_IP) if forward else (SERVER_IP, CLIENT_IP)
    smac, dmac = (CLIENT_MAC, SERVER_MAC) if forward else (SERVER_MAC, CLIENT_MAC)
    if not forward:
        sport, dport = dport, sport
        tcp = struct.pack("!HH", sport, dport) + tcp[4:]
    return _ether(smac, dmac, 0x0800, _ipv4(src, dst, 6, tcp))


def udp_frame() -> bytes:
    body = b"\x00" * 100
    udp = struct.pack("!HHHH", 40001, 53, 8 + len(body), 0) + body
    return _ether(CLIENT_MAC, SERVER_MAC, 0x0800, _ipv4(CLIENT_IP, SERVER_IP, 17, udp))


def arp_frame() -> bytes:
    arp = struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, CLIENT_MAC, CLIENT_IP, b"\0" * 6, SERVER_IP
    )
    return _ether(CLIENT_MAC, b"\xff" * 6, 0x0806, arp + b"\0" * 18)


# -- BPF_PROG_TEST_RUN --------------------------------------------------------------


class Runner:
    """BPF_PROG_TEST_RUN with `repeat`; returns the kernel's mean ns per run."""

    def __init__(self, prog_fd: int) -> None:
        self.fd = prog_fd
        self.opts = libbpf.BpfTestRunOpts(sz=ctypes.sizeof(libbpf.BpfTestRunOpts))
        self.out = ctypes.create_string_buffer(4096)
        self.call = libbpf.lib().bpf_prog_test_run_opts

    def run(self, frame: bytes, repeat: int = 1) -> int:
        opts = self.opts
        opts.data_in = frame
        opts.data_size_in = len(frame)
        opts.data_out = ctypes.addressof(self.out)
        opts.data_size_out = len(self.out)
        opts.repeat = repeat
        opts.duration = 0
        result = self.call(self.fd, ctypes.addressof(opts))
        if result < 0:
            raise OSError(-result, f"BPF_PROG_TEST_RUN: {os.strerror(-result)}")
        return int(opts.duration)


def prime(runners: dict[str, Runner]) -> None:
    """Open the benchmark flow in both directions (handshake-like data and ACK)."""
    for runner in runners.values():
        runner.run(tcp_frame(flags=0x02, payload=0, tsval=900, tsecr=0))  # SYN
        runner.run(tcp_frame(forward=False, flags=0x12, payload=0, tsval=400, tsecr=900))
        runner.run(tcp_frame(tsval=1000, tsecr=500))
        runner.run(tcp_frame(forward=False, payload=0, tsval=500, tsecr=1000))


class Cases:
    """The packets of every case; per-run state (TSval, flow port) advances across rounds."""

    def __init__(self, singles: int) -> None:
        self.singles = singles
        self.next_tsval = 2000
        self.next_port = 1024

    def measure(self, runner: Runner, repeat: int) -> dict[str, float]:
        data = tcp_frame(tsval=1000, tsecr=500)
        result = {
            "tcp_data_repeat": runner.run(data, repeat),
            "tcp_pure_ack": runner.run(
                tcp_frame(forward=False, payload=0, tsval=500, tsecr=999), repeat
            ),
            "udp": runner.run(udp_frame(), repeat),
            "arp": runner.run(arp_frame(), repeat),
        }
        # one test run per packet: new identifiers / flows, and the repeat packet for scale
        new_ts, same, new_flow = [], [], []
        for _ in range(self.singles):
            self.next_tsval += 1
            new_ts.append(runner.run(tcp_frame(tsval=self.next_tsval, tsecr=500)))
            same.append(runner.run(data))
            self.next_port = self.next_port + 1 if self.next_port < 65000 else 1024
            new_flow.append(
                runner.run(tcp_frame(sport=self.next_port, dport=80, tsval=self.next_tsval))
            )
        result["tcp_data_new_tsval"] = statistics.mean(new_ts)
        result["tcp_data_repeat_r1"] = statistics.mean(same)
        result["tcp_new_flow"] = statistics.mean(new_flow)
        return {k: float(v) for k, v in result.items()}


def mix_cost(case_ns: dict[str, float]) -> float:
    # tcp_data_new_tsval was measured one run per call: use its excess over the
    # repeat packet measured the same way, added to the repeat packet's cost.
    total = 0.0
    for case, weight in MIX.items():
        if case == "tcp_data_new_tsval":
            ns = case_ns["tcp_data_repeat"] + max(
                0.0, case_ns["tcp_data_new_tsval"] - case_ns["tcp_data_repeat_r1"]
            )
        else:
            ns = case_ns[case]
        total += weight * ns
    return total


# -- ePPing -------------------------------------------------------------------------


class EppingConfig(ctypes.Structure):
    """ePPing's struct bpf_config (pping/pping.h), x86-64 layout."""

    _fields_ = [
        ("rate_limit", ctypes.c_uint64),
        ("rtt_rate", ctypes.c_uint64),  # fixed point, 16.16 (0: off)
        ("ipv6_prefix_mask", ctypes.c_uint64),
        ("ipv4_prefix_mask", ctypes.c_uint32),
        ("use_srtt", ctypes.c_uint8),
        ("track_tcp", ctypes.c_uint8),
        ("track_icmp", ctypes.c_uint8),
        ("localfilt", ctypes.c_uint8),
        ("skip_syn", ctypes.c_uint8),
        ("push_individual_events", ctypes.c_uint8),
        ("agg_rtts", ctypes.c_uint8),
        ("agg_by_dst", ctypes.c_uint8),
    ]


def epping_config() -> EppingConfig:
    # ePPing's defaults for `pping -i IF` (pping.c): -r 100 ms, TCP only, local filter,
    # SYNs skipped, individual RTT events, no aggregation.
    return EppingConfig(
        rate_limit=100 * 1_000_000,
        rtt_rate=0,
        agg_rtts=0,
        use_srtt=0,
        track_tcp=1,
        track_icmp=0,
        localfilt=1,
        skip_syn=1,
        push_individual_events=1,
        agg_by_dst=0,
        ipv4_prefix_mask=0xFFFFFF00,
        ipv6_prefix_mask=0,
    )


EPPING_OTHER_PROGRAMS = ("pping_xdp_ingress", "tsmap_cleanup", "flowmap_cleanup")


class EppingProgram:
    """ePPing's object loaded with the project's libbpf binding (tc programs only)."""

    def __init__(self, path: str) -> None:
        self.object = libbpf.BpfObject(path)
        try:
            self.object.write_variable(".rodata", "config", epping_config())
            for name in EPPING_OTHER_PROGRAMS:  # XDP hook and map-iterator clean-up
                self.object.program(name).set_autoload(False)
            self.object.load()
            self.program_fds = {name: self.object.program(name).fd for name in PROGRAMS.values()}
        except BaseException:
            self.object.close()
            raise

    def close(self) -> None:
        self.object.close()


# -- pping at an earlier revision ----------------------------------------------------

# sizeof(struct pping_config) before max_outstanding was appended to it.
BASELINE_CONFIG_BYTES = abi.PpingConfig.max_outstanding.offset


def build_baseline(ref: str, workdir: Path) -> Path:
    """pping's kernel object as it was at git revision `ref`, built under `workdir`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "bpf"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(workdir, filter="data")
    out = workdir / "out"
    subprocess.run(
        ["make", "-s", "-C", str(workdir / "bpf"), f"OUT_DIR={out}"],
        check=True,
        capture_output=True,
    )
    return out / "pping.bpf.o"


class BaselineProgram:
    """An earlier pping object, configured as PpingProgram configures today's."""

    def __init__(self, path: Path) -> None:
        self.object = libbpf.BpfObject(path)
        try:
            config = bytes(config_struct(Config(), replay=False, local_filter=True))
            offset = self.object.variable_offset(".rodata", abi.CONFIG_VARIABLE)
            address, _ = self.object.map(".rodata").initial_value()
            ctypes.memmove(address + offset, config[:BASELINE_CONFIG_BYTES], BASELINE_CONFIG_BYTES)
            self.object.load()
            self.program_fds = {name: self.object.program(name).fd for name in PROGRAMS.values()}
        except BaseException:
            self.object.close()
            raise

    def close(self) -> None:
        self.object.close()


# -- live statistics ----------------------------------------------------------------


@contextlib.contextmanager
def bpf_stats() -> Iterator[None]:
    path = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = path.read_text().strip()
    path.write_text("1\n")
    try:
        yield
    finally:
        path.write_text(old + "\n")


def prog_stats(prog_id: int) -> tuple[int, int]:
    out = subprocess.run(
        ["bpftool", "prog", "show", "id", str(prog_id), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(out.stdout)
    return int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0))


def prog_ids(pid: int, fds: list[int] | None = None) -> dict[str, int]:
    """{"ingress": id, "egress": id} of the tc programs a process holds (by /proc fdinfo;
    this bpftool lists neither tcx links by device nor the owners of programs)."""
    ids: dict[str, int] = {}
    fd_dir = Path(f"/proc/{pid}/fd")
    for entry in fd_dir.iterdir() if fds is None else (fd_dir / str(fd) for fd in fds):
        with contextlib.suppress(OSError):
            if os.readlink(entry) != "anon_inode:bpf-prog":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{entry.name}").read_text()
            match = re.search(r"^prog_id:\s*(\d+)", info, re.M)
            if not match:
                continue
            shown = subprocess.run(
                ["bpftool", "prog", "show", "id", match.group(1), "--json"],
                capture_output=True,
                text=True,
            )
            name = json.loads(shown.stdout).get("name", "") if shown.returncode == 0 else ""
            for direction, full in PROGRAMS.items():
                if full.startswith(name) and name:
                    ids[direction] = int(match.group(1))
    return ids


def live_transfer(tb: Any, ids: dict[str, int], seconds: float, rate_bps: float) -> dict[str, Any]:
    from pping.testbed import tcp_bulk

    before = {d: prog_stats(i) for d, i in ids.items()}
    (conn,) = tcp_bulk(tb, seconds=seconds, rate_bps=rate_bps)
    after = {d: prog_stats(i) for d, i in ids.items()}
    result: dict[str, Any] = {
        "throughput_bps": conn.throughput_bps,
        "tcp_timestamps": conn.sender.timestamps,
    }
    total_ns = total_cnt = 0
    for direction in ("ingress", "egress"):
        ns = after[direction][0] - before[direction][0]
        cnt = after[direction][1] - before[direction][1]
        total_ns += ns
        total_cnt += cnt
        result[direction] = {
            "run_cnt": cnt,
            "run_time_ns": ns,
            "ns_per_packet": ns / cnt if cnt else None,
        }
    result["mean_ns_per_packet"] = total_ns / total_cnt if total_cnt else None
    return result


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def live_pping(tb: Any, seconds: float, rate_bps: float) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = tb.popen(
        tb.client,
        [sys.executable, "-m", "pping.cli", "-i", tb.client.ifname],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        if not wait_for(lambda: len(prog_ids(proc.pid)) == 2 or proc.poll() is not None):
            raise RuntimeError("pping did not attach")
        if proc.poll() is not None:
            raise RuntimeError(f"pping exited: {proc.stderr.read().decode()}")
        time.sleep(0.5)  # attached right after load
        return live_transfer(tb, prog_ids(proc.pid), seconds, rate_bps)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def live_bare(tb: Any, program: Any, seconds: float, rate_bps: float) -> dict[str, Any]:
    """Programs loaded here and attached with tc clsact, no user space reading events
    or cleaning maps: how ePPing is run live here (and pping as "pping_bare")."""
    try:
        fds = program.program_fds
        attachment = tb.call(
            tb.client,
            lambda: attach(
                tb.client.ifname, fds[PROGRAMS["ingress"]], fds[PROGRAMS["egress"]], "clsact"
            ),
        )
        try:
            return live_transfer(tb, prog_ids(os.getpid(), list(fds.values())), seconds, rate_bps)
        finally:
            tb.call(tb.client, attachment.detach)
    finally:
        program.close()


# -- main ---------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _ratios(p: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """A program's test-run figures (pping's, or pping's with growing tables) over
    another program's: mixes and every case."""
    return {
        "ingress_mix": ratio(p["ingress"]["mix_ns"], other["ingress"]["mix_ns"]),
        "egress_mix": ratio(p["egress"]["mix_ns"], other["egress"]["mix_ns"]),
        "mean_mix": ratio(p["mean_mix_ns"], other["mean_mix_ns"]),
        "cases": {
            d: {c: ratio(p[d]["cases_ns"][c], other[d]["cases_ns"][c]) for c in p[d]["cases_ns"]}
            for d in PROGRAMS
        },
    }


def _hooks(samples: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """Per ingress hook: the median ns of each case and the mix."""
    result = {}
    for hook, per_case in samples.items():
        medians = {c: statistics.median(v) for c, v in per_case.items()}
        result[hook] = {
            "cases_ns": {c: round(v, 1) for c, v in medians.items()},
            "mix_ns": round(mix_cost(medians), 1),
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--epping-object",
        default=None,
        help="ePPing's object (default: /work/epping/pping_kern.o if it exists)",
    )
    parser.add_argument(
        "--baseline", default=None, metavar="REF", help="also measure pping as of git REF"
    )
    parser.add_argument("--repeat", type=int, default=200_000, help="test-run repeat per case")
    parser.add_argument(
        "--singles",
        type=int,
        default=2000,
        help="one-run-per-packet samples per round (new TSval / new flow)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-live", action="store_true")
    parser.add_argument("--live-seconds", type=float, default=5.0)
    parser.add_argument(
        "--live-rounds",
        type=int,
        default=3,
        help="transfers per tool, alternating which tool goes first",
    )
    parser.add_argument("--live-rate", type=float, default=100e6, help="bit/s of the transfer")
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=0.0,
        help="one-way delay through the test bed's relay (0: direct veth)",
    )
    args = parser.parse_args()

    epping_path = args.epping_object
    if epping_path is None and Path("/work/epping/pping_kern.o").is_file():
        epping_path = "/work/epping/pping_kern.o"
    notes: list[str] = []
    if epping_path is not None and not Path(epping_path).is_file():
        notes.append(f"ePPing object {epping_path} not found: ePPing skipped")
        epping_path = None
    elif epping_path is None:
        notes.append("no --epping-object: ePPing skipped")

    tools: dict[str, Any] = {}
    pping_prog = PpingProgram(Config(), replay=False, local_filter=True)
    tools["pping"] = pping_prog.program_fds
    epping_prog = None
    if epping_path:
        epping_prog = EppingProgram(epping_path)
        tools["epping"] = epping_prog.program_fds
    baseline_prog = None
    baseline_dir = tempfile.TemporaryDirectory(prefix="pping-baseline-")
    if args.baseline:
        baseline_path = build_baseline(args.baseline, Path(baseline_dir.name))
        baseline_prog = BaselineProgram(baseline_path)
        tools["pping_baseline"] = baseline_prog.program_fds

    # Growing tables on (caps at 4x the default sizes): maps not preallocated, and
    # an occupancy test before each insert.
    growing_config = Config(
        max_timestamps_cap=4 * Config().max_timestamps, max_flows_cap=4 * Config().max_flows
    )
    growing_prog = PpingProgram(growing_config, replay=False, local_filter=True)
    tools["pping_growing"] = growing_prog.program_fds

    hooks_prog = PpingProgram(
        Config(), replay=False, local_filter=False, programs=tuple(INGRESS_HOOKS.values())
    )
    tools["pping_hooks"] = hooks_prog.program_fds
    directions = {tool: PROGRAMS for tool in tools} | {"pping_hooks": INGRESS_HOOKS}

    runners = {
        t: {d: Runner(fds[name]) for d, name in directions[t].items()} for t, fds in tools.items()
    }
    for per_dir in runners.values():
        prime(per_dir)
    cases = {t: Cases(args.singles) for t in tools}
    samples: dict[str, dict[str, dict[str, list[float]]]] = {
        t: {d: {} for d in directions[t]} for t in tools
    }
    for _ in range(args.rounds):
        for tool in tools:  # interleaved: every round measures every tool
            for direction in directions[tool]:
                for case, ns in cases[tool].measure(runners[tool][direction], args.repeat).items():
                    samples[tool][direction].setdefault(case, []).append(ns)
    pping_prog.close()
    growing_prog.close()
    hooks_prog.close()
    if epping_prog is not None:
        epping_prog.close()
    if baseline_prog is not None:
        baseline_prog.close()
        baseline_dir.cleanup()

    test_run: dict[str, Any] = {}
    for tool in tools:
        if tool == "pping_hooks":
            continue  # below
        entry: dict[str, Any] = {}
        for direction in PROGRAMS:
            medians = {c: statistics.median(v) for c, v in samples[tool][direction].items()}
            entry[direction] = {
                "cases_ns": {c: round(v, 1) for c, v in medians.items()},
                "mix_ns": round(mix_cost(medians), 1),
            }
        both = entry["ingress"]["mix_ns"] + entry["egress"]["mix_ns"]
        entry["mean_mix_ns"] = round(both / 2, 1)
        test_run[tool] = entry
    hooks: dict[str, Any] = {"local_filter": False, **_hooks(samples["pping_hooks"])}
    tc_in, xdp_in = hooks["tc_ingress"], hooks["xdp_ingress"]
    hooks["ratio_xdp_over_tc"] = {
        "mix": ratio(xdp_in["mix_ns"], tc_in["mix_ns"]),
        "cases": {c: ratio(xdp_in["cases_ns"][c], tc_in["cases_ns"][c]) for c in tc_in["cases_ns"]},
    }
    test_run["ingress_hooks"] = hooks
    for other, name in (("epping", "ratio_pping_over_epping"),
                        ("pping_baseline", "ratio_pping_over_baseline")):  # fmt: skip
        if other in test_run:
            test_run[name] = _ratios(test_run["pping"], test_run[other])
    growing = test_run["pping_growing"]
    test_run["ratio_growing_over_pping"] = _ratios(growing, test_run["pping"])
    if "pping_baseline" in test_run:
        test_run["ratio_growing_over_baseline"] = _ratios(growing, test_run["pping_baseline"])

    live: dict[str, Any] | None = None
    if not args.no_live:
        from pping.testbed import Testbed

        live = {
            "seconds": args.live_seconds,
            "rate_bps": args.live_rate,
            "delay_ms": args.delay_ms,
            "live_rounds": args.live_rounds,
        }
        rounds: dict[str, list[dict[str, Any]]] = {"pping": [], "pping_bare": []}
        if epping_path:
            rounds["epping"] = []
        with bpf_stats(), Testbed(delay_ms=args.delay_ms, relay=args.delay_ms > 0) as tb:
            for round_ in range(args.live_rounds):
                order = list(rounds) if round_ % 2 == 0 else list(reversed(rounds))
                for tool in order:
                    try:
                        if tool == "pping":
                            result = live_pping(tb, args.live_seconds, args.live_rate)
                        else:
                            program = (
                                EppingProgram(epping_path)
                                if tool == "epping"
                                else PpingProgram(Config(), replay=False, local_filter=True)
                            )
                            result = live_bare(tb, program, args.live_seconds, args.live_rate)
                    except Exception as error:  # reported, not fatal
                        notes.append(f"{tool} live run failed: {error}")
                        continue
                    rounds[tool].append(result)
        for tool, results in rounds.items():
            if not results:
                continue
            summary: dict[str, Any] = {"rounds": results}
            for direction in PROGRAMS:
                summary[f"{direction}_ns_per_packet"] = round(
                    statistics.median(r[direction]["ns_per_packet"] for r in results), 1
                )
            summary["mean_ns_per_packet"] = round(
                statistics.median(r["mean_ns_per_packet"] for r in results), 1
            )
            live[tool] = summary
        live["bpf_stats_enabled_restored"] = (
            Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()
        )
        if "epping" in live:
            p, e = live["pping"], live["epping"]
            live["ratio_pping_over_epping"] = {
                d: ratio(p[f"{d}_ns_per_packet"], e[f"{d}_ns_per_packet"]) for d in PROGRAMS
            }
            b = live["pping_bare"]
            live["ratio_pping_bare_over_epping"] = {
                d: ratio(b[f"{d}_ns_per_packet"], e[f"{d}_ns_per_packet"]) for d in PROGRAMS
            }
            live["ratio_pping_bare_over_epping"]["mean"] = ratio(
                b["mean_ns_per_packet"], e["mean_ns_per_packet"]
            )
            live["ratio_pping_over_epping"]["mean"] = ratio(
                p["mean_ns_per_packet"], e["mean_ns_per_packet"]
            )

    print(
        json.dumps(
            {
                "benchmark": "kernel_cost",
                "kernel": os.uname().release,
                "config": {
                    "repeat": args.repeat,
                    "singles": args.singles,
                    "rounds": args.rounds,
                    "mix": MIX,
                    "epping_object": epping_path,
                    "baseline": args.baseline,
                    "pping_object_sha256": sha256(object_path()),
                    "epping_object_sha256": sha256(Path(epping_path)) if epping_path else None,
                },
                "test_run": test_run,
                "live": live,
                "notes": notes,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
