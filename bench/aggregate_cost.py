"""What -a costs: the tc program per packet, and capture analysis in Python.

1. ``kernel``: BPF_PROG_TEST_RUN with ``repeat`` (the kernel's mean ns per run) of the
   egress program loaded twice through ``PpingProgram`` in live mode, without and with
   ``-a 1``, on the packets of bench/kernel_cost.py: a TCP data segment repeating its
   TSval, a pure ACK with timestamps, a UDP datagram. Rounds alternate between the two
   programs; each figure is the best of the rounds.
2. ``python``: packets per second of the Python data path (``pping --read`` in
   process, output discarded) on tracegen captures, without and with ``-a 1``, best
   of ``--rounds``.

Ratios are computed from figures of the same run. Needs root for part 1.
``python bench/aggregate_cost.py [--rounds N] [--repeat N]``
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import tracegen  # noqa: E402
from kernel_cost import Runner, prime, tcp_frame, udp_frame  # noqa: E402
from pping.cli import main  # noqa: E402
from pping.config import NS_PER_S, AggregateConfig, Config  # noqa: E402
from pping.kernel import abi  # noqa: E402
from pping.kernel.aggregate import KernelAggregates  # noqa: E402
from pping.kernel.program import PpingProgram  # noqa: E402

CASES = {
    "tcp_data_repeat": lambda: tcp_frame(tsval=1000, tsecr=500),
    "tcp_pure_ack": lambda: tcp_frame(forward=False, payload=0, tsval=500, tsecr=999),
    "udp": udp_frame,
}


def kernel_costs(rounds: int, repeat: int) -> dict[str, object]:
    config = Config()
    aggregate = AggregateConfig(NS_PER_S)
    plain = PpingProgram(config, replay=False, local_filter=True)
    with_a = PpingProgram(config, replay=False, local_filter=True, aggregate=aggregate)
    try:
        KernelAggregates(with_a, aggregate)  # the backup entries, as live monitoring does
        runners = {
            "off": Runner(plain.program_fds[abi.PROGRAM_EGRESS]),
            "on": Runner(with_a.program_fds[abi.PROGRAM_EGRESS]),
        }
        prime(runners)
        best: dict[str, dict[str, float]] = {name: {} for name in runners}
        for _ in range(rounds):
            for name, runner in runners.items():
                for case, frame in CASES.items():
                    ns = float(runner.run(frame(), repeat))
                    best[name][case] = min(best[name].get(case, ns), ns)
    finally:
        plain.close()
        with_a.close()
    return {
        "ns_per_packet": best,
        "ratio_on_off": {c: round(best["on"][c] / best["off"][c], 3) for c in CASES},
    }


def python_speed(rounds: int) -> dict[str, object]:
    captures = {
        "bulk_200k": tracegen.bulk(seed=1, flows=4, packets=200_000)[0],
        "many_flows_100k": tracegen.many_flows(seed=1, flows=1000, packets=100_000)[0],
    }
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in captures.items():
            path = Path(tmp) / f"{name}.pcap"
            path.write_bytes(data)
            packets = int(name.rsplit("_", 1)[1].rstrip("k")) * 1000
            best: dict[str, float] = {}
            for _ in range(rounds):
                for label, extra in (("off", []), ("on", ["-a", "1"])):
                    start = time.perf_counter()
                    code = main(["--read", str(path), *extra], io.StringIO(), io.StringIO())
                    elapsed = time.perf_counter() - start
                    assert code == 0
                    best[label] = min(best.get(label, elapsed), elapsed)
            result[name] = {
                "packets_per_s": {k: round(packets / v) for k, v in best.items()},
                "ratio_on_off": round(best["off"] / best["on"], 3),
            }
    return result


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=200_000)
    parser.add_argument("--no-kernel", action="store_true")
    args = parser.parse_args()
    report: dict[str, object] = {"python": python_speed(args.rounds)}
    if not args.no_kernel:
        report["kernel"] = kernel_costs(args.rounds, args.repeat)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run())
