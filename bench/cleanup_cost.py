"""Cost of one periodic clean-up on the kernel's tables, by how full they are.

The clean-up runs in the kernel (`pping_cleanup`, run by `KernelCleanup`): it walks
both hash maps and decides on each entry there. Beside it, in the same run, the cost
of reading both tables into user space with batch lookups, which was the first step of
the former user-space clean-up (its decisions and deletes came on top). The program is
loaded as live monitoring loads it (preallocated tables of the default size); each
fill puts N flow entries (one OPEN direction) and N timestamps in, none of which the
clean-up removes, so every run does the same work. Best of `--runs` per measurement.

Needs root. ``python bench/cleanup_cost.py [--fills 0 10000 100000] [--runs 5]``
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from pping.config import NS_PER_S, Config  # noqa: E402
from pping.kernel import abi, libbpf  # noqa: E402
from pping.kernel.cleanup import KernelCleanup  # noqa: E402
from pping.kernel.program import PpingProgram  # noqa: E402

NOW = 1000 * NS_PER_S


def fill(program: PpingProgram, n: int) -> None:
    """n flows (10.0.0.1:port -> 10.0.0.2:80 on links 0..), each with one timestamp,
    all stamped at NOW: young, so nothing expires."""
    keys = np.zeros(n, dtype=abi.FLOW_KEY_DTYPE)
    keys["proto"] = 6
    keys["saddr"][:, 15] = 1
    keys["daddr"][:, 15] = 2
    keys["sport"] = np.arange(n) % 65536
    keys["dport"] = 80
    keys["link"] = np.arange(n) // 65536
    flows = np.zeros(n, dtype=abi.DUAL_FLOW_DTYPE)
    flows["dir"]["conn_state"][:, 0] = abi.CONN_OPEN
    flows["dir"]["last_timestamp"][:, 0] = NOW
    flows["dir"]["outstanding"][:, 0] = 1
    timestamps = np.zeros(n, dtype=abi.TIMESTAMP_KEY_DTYPE)
    timestamps["flow"] = keys
    timestamps["pid"] = 1
    if n:
        libbpf.map_update_batch(program.flows_fd, keys, flows)
        libbpf.map_update_batch(program.timestamps_fd, timestamps, np.full(n, NOW, np.uint64))


def best_ms(action: Callable[[], Any], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter_ns()
        action()
        best = min(best, time.perf_counter_ns() - start)
    return round(best / 1e6, 3)


def read_both(program: PpingProgram) -> None:
    libbpf.map_lookup_batch(program.flows_fd, abi.FLOW_KEY_DTYPE, abi.DUAL_FLOW_DTYPE)
    libbpf.map_lookup_batch(program.timestamps_fd, abi.TIMESTAMP_KEY_DTYPE, np.dtype(np.uint64))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fills", type=int, nargs="+", default=[0, 10_000, 100_000])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    config = Config()
    rows = []
    for n in args.fills:
        with PpingProgram(config, replay=False) as program:
            fill(program, n)
            cleanup = KernelCleanup(program)
            kernel = best_ms(functools.partial(cleanup.run, NOW + 1), args.runs)
            read = best_ms(functools.partial(read_both, program), args.runs)
            if cleanup.flows_expired or cleanup.timestamps_expired:
                raise SystemExit("the clean-up removed entries: the fill is wrong")
        rows.append(
            {
                "flows": n,
                "timestamps": n,
                "kernel_cleanup_ms": kernel,
                "read_both_tables_ms": read,
                "ratio_kernel_over_read": round(kernel / read, 3) if read else None,
            }
        )
    print(
        json.dumps(
            {
                "benchmark": "cleanup_cost",
                "kernel": os.uname().release,
                "config": {
                    "runs": args.runs,
                    "max_flows": config.max_flows,
                    "max_timestamps": config.max_timestamps,
                },
                "rows": rows,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
