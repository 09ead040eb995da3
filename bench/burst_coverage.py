"""Sampling windows that yield an RTT, with and without bursts, on delayed-ACK flows.

tests/tracegen.py's ``delayed_ack`` scenario: flows send a segment every 1.2-1.8 ms
(each with a new TSval at 1 kHz) to a receiver that ACKs every second segment and echoes
the first of the pair. pping runs as a user would (``--read FILE -F jsonl``, default
100 ms rate limit, plus ``--burst N``); the sampling windows are computed from the
capture's ground truth (the first new identifier at least 100 ms after the previous
window's opening), and each RTT event is assigned to the window its timestamp was taken
in. Reported per burst setting: windows, windows with an RTT (share), the most RTT
events of one window, RTT events that are not exact samples of the capture or lie
below the path RTT (must be 0), and the summary counters. Windows opened in the last
200 ms of a capture are left out (their replies may be missing).

``python bench/burst_coverage.py [--seeds 5] [--bursts 0 1 2 3] [--datapath kernel]``
"""

from __future__ import annotations

import argparse
import bisect
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import tracegen  # noqa: E402
from pping.cli import main as pping_main  # noqa: E402
from pping.events import IPPROTO_TCP  # noqa: E402

RATE_LIMIT_NS = 100_000_000
TAIL_NS = 200_000_000


def windows_of(truth: tracegen.Truth) -> dict[tracegen.FlowKey, list[int]]:
    """Opening times of the default rate limit's windows, per data direction."""
    windows = {}
    for flow, sent in truth.identifiers_sent.items():
        openings: list[int] = []
        for t, _identifier in sent[1:]:  # the first one only starts the direction
            if not openings or t - openings[-1] >= RATE_LIMIT_NS:
                openings.append(t)
        windows[flow] = openings
    return windows


def address(text: str) -> bytes:
    import ipaddress

    ip = ipaddress.ip_address(text)
    return ip.packed if ip.version == 6 else b"\0" * 10 + b"\xff\xff" + ip.packed


def run(pcap: bytes, options: list[str]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.pcap"
        path.write_bytes(pcap)
        out, err = io.StringIO(), io.StringIO()
        code = pping_main(["--read", str(path), "-F", "jsonl", *options], stdout=out, stderr=err)
    if code != 0:
        raise RuntimeError(err.getvalue())
    return [json.loads(line) for line in out.getvalue().splitlines()]


def measure(pcap: bytes, truth: tracegen.Truth, options: list[str]) -> dict[str, Any]:
    records = run(pcap, options)
    windows = windows_of(truth)
    per_window = {(flow, opened): 0 for flow, openings in windows.items()
                  for opened in openings if opened <= truth.last_ns - TAIL_NS}  # fmt: skip
    wrong = 0
    for record in records:
        if "rtt" not in record:
            continue
        reply = tracegen.FlowKey(IPPROTO_TCP, address(record["src_ip"]), record["src_port"],
                                 address(record["dest_ip"]), record["dest_port"])  # fmt: skip
        rtt, when = record["rtt"], record["timestamp"]
        if not truth.is_valid_rtt(reply, rtt, when) or rtt < truth.min_rtt_for_reply(reply):
            wrong += 1
        openings = windows[reply.reversed()]
        index = bisect.bisect_right(openings, when - rtt) - 1
        key = (reply.reversed(), openings[index])
        if key in per_window:
            per_window[key] += 1
    counts = list(per_window.values())
    summary = records[-1]["summary"]
    return {
        "windows": len(counts),
        "windows_with_rtt": sum(1 for c in counts if c),
        "most_rtts_in_a_window": max(counts),
        "wrong_rtts": wrong,
        "timestamps_created": summary["timestamps_created"],
        "timestamps_matched": summary["timestamps_matched"],
        "rtt_events": summary["rtt_events"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--bursts", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--flows", type=int, default=4)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--datapath", choices=("python", "kernel"), default="python")
    args = parser.parse_args()

    totals: dict[int, dict[str, int]] = {burst: {} for burst in args.bursts}
    for seed in range(args.seeds):
        pcap, truth = tracegen.delayed_ack(seed=seed, flows=args.flows,
                                           duration_s=args.duration_s)  # fmt: skip
        for burst in args.bursts:
            options = ["--burst", str(burst), "--datapath", args.datapath]
            for name, value in measure(pcap, truth, options).items():
                total = totals[burst]
                if name == "most_rtts_in_a_window":
                    total[name] = max(total.get(name, 0), value)
                else:
                    total[name] = total.get(name, 0) + value
    results = {
        str(burst): {**t, "share_with_rtt": round(t["windows_with_rtt"] / t["windows"], 4)}
        for burst, t in totals.items()
    }
    print(
        json.dumps(
            {
                "benchmark": "burst_coverage",
                "config": {
                    "scenario": "delayed_ack",
                    "seeds": args.seeds,
                    "flows": args.flows,
                    "duration_s": args.duration_s,
                    "rate_limit_ms": RATE_LIMIT_NS / 1e6,
                    "burst_window_ms": 4,
                    "datapath": args.datapath,
                },
                "by_burst": results,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
