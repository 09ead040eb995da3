"""Throughput of an unpaced veth TCP transfer, without and with pping attached.

The test bed joins client and server namespaces over one veth pair (no delay relay).
Each round runs one transfer without pping and one with ``pping -i eth0`` running in
the client namespace (both programs attached to the client's interface, output to
/dev/null), alternating which goes first; the medians and their ratio are printed as
JSON. By default offloads are off (MTU-sized packets, so the programs see every
segment); ``--offloads`` keeps GSO/GRO/TSO on (fewer, larger packets).

Needs root. ``python bench/veth_throughput.py [--seconds 3] [--rounds 3] [--offloads]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from pping.testbed import Testbed, tcp_bulk  # noqa: E402

UNPACED_BPS = 15e9  # the largest rate whose SO_MAX_PACING_RATE (x1.1, bytes/s) fits a C int


def transfer(tb: Testbed, seconds: float, chunk: int) -> dict[str, float]:
    (conn,) = tcp_bulk(tb, seconds=seconds, rate_bps=UNPACED_BPS, chunk=chunk)
    return {"bps": conn.throughput_bps, "bytes": conn.bytes_received}


def with_pping(tb: Testbed, seconds: float, chunk: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = tb.popen(
        tb.client,
        [sys.executable, "-m", "pping.cli", "-i", tb.client.ifname],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        # wait until its programs are loaded (two bpf-prog fds in the process)
        until = time.monotonic() + 10
        while time.monotonic() < until and proc.poll() is None:
            fds = Path(f"/proc/{proc.pid}/fd")
            links = []
            for entry in fds.iterdir():
                with contextlib.suppress(OSError):
                    links.append(os.readlink(entry))
            if links.count("anon_inode:bpf-prog") >= 2:
                break
            time.sleep(0.05)
        time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"pping exited: {proc.stderr.read().decode()}")
        return transfer(tb, seconds, chunk)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=1 << 16, help="bytes per send()")
    parser.add_argument("--offloads", action="store_true", help="keep GSO/GRO/TSO on")
    args = parser.parse_args()

    runs: dict[str, list[float]] = {"without": [], "with": []}
    with Testbed(relay=False, offloads=args.offloads) as tb:
        transfer(tb, 0.5, args.chunk)  # warm-up
        for round_ in range(args.rounds):
            order = ("without", "with") if round_ % 2 == 0 else ("with", "without")
            for kind in order:
                result = (transfer if kind == "without" else with_pping)(
                    tb, args.seconds, args.chunk
                )
                runs[kind].append(result["bps"])
    without = statistics.median(runs["without"])
    with_ = statistics.median(runs["with"])
    print(
        json.dumps(
            {
                "benchmark": "veth_throughput",
                "kernel": os.uname().release,
                "seconds": args.seconds,
                "rounds": args.rounds,
                "offloads": args.offloads,
                "without_pping_bps": round(without),
                "with_pping_bps": round(with_),
                "ratio_with_over_without": round(with_ / without, 3) if without else None,
                "runs_bps": {k: [round(v) for v in vs] for k, vs in runs.items()},
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
