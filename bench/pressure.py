"""Many flows on a small timestamp table: fixed, adaptive and growing (one JSON).

A synthetic capture (tests/tracegen.py, `many_flows`) with 4000 concurrent flows whose
path RTTs are drawn from 1-300 ms is replayed through the Python engine (the kernel
program takes the same decisions: tests/test_pressure.py) with a timestamp table of
1024 entries, once per mode:

- ``fixed``: the configured interval (``-r``, default 100 ms) throughout;
- ``adaptive``: ``--adaptive`` with its default water marks;
- ``growing``: ``--max-timestamps-cap`` (default 16384): the table starts at 1024
  entries and doubles at each clean-up that finds it at or above the high-water mark.

For each mode it reports the RTTs printed and whether every one is a true sample of the
capture (``wrong_rtts``), the flows with at least one RTT, the refused inserts, the
pressure changes, and the *coverage of sampling windows*: time is cut into windows of
W seconds; a (flow, window) pair counts when the capture holds a sample of that flow
sent in the window (so the flow could have been sampled there), and is covered when
pping printed an RTT for a packet sent in it. Samples per flow are summarised by their
quartiles and Jain's fairness index ((sum x)^2 / (n sum x^2): 1 when every flow gets
the same number).

``python bench/pressure.py [--packets N] [--gap-ms LO HI] [--seed S] [--cap N]``
(defaults: 400,000 packets, a segment every 100-200 ms, ~12 s of traffic). With
``--gap-ms 20 60`` the receivers' delayed ACKs echo every second segment only, and
half the timestamps are never matched (they expire after 10 s without an RTT).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import tracegen  # noqa: E402
from pping.config import Config  # noqa: E402
from pping.engine import Engine  # noqa: E402
from pping.events import MapFullEvent, PressureEvent, RttEvent, Table  # noqa: E402
from pping.fastpath import fast_replay  # noqa: E402
from pping.sources.pcap import CaptureReader  # noqa: E402

NS_PER_S = 1_000_000_000
WINDOWS_S = (0.5, 1.0, 2.0)


def truth_flow(event: RttEvent) -> tracegen.FlowKey:
    f = event.flow
    return tracegen.FlowKey(f.proto, f.saddr, f.sport, f.daddr, f.dport)


def coverage(sent_by_flow: dict[Any, list[int]], truth: tracegen.Truth, window_ns: int) -> float:
    """Share of the (flow, window) pairs with a sample in the capture that pping
    covered with an RTT of a packet sent in that window."""
    possible = {(s.data_flow, (s.t_first_sent_ns - truth.first_ns) // window_ns)
                for s in truth.samples}  # fmt: skip
    covered = {
        (flow, (t - truth.first_ns) // window_ns) for flow, times in sent_by_flow.items()
        for t in times
    }  # fmt: skip
    return round(len(covered & possible) / len(possible), 4)


def jain(values: list[int]) -> float:
    total = sum(values)
    return round(total * total / (len(values) * sum(v * v for v in values)), 4) if total else 0.0


def run_mode(raw: bytes, truth: tracegen.Truth, config: Config) -> dict[str, Any]:
    engine = Engine(config)
    started = time.perf_counter()
    events = list(fast_replay(engine, CaptureReader(io.BytesIO(raw))))
    seconds = time.perf_counter() - started
    rtts = [e for e in events if isinstance(e, RttEvent)]
    wrong = sum(not truth.is_valid_rtt(truth_flow(e), e.rtt, e.timestamp) for e in rtts)
    sent_by_flow: dict[Any, list[int]] = defaultdict(list)
    for e in rtts:
        sent_by_flow[truth_flow(e).reversed()].append(e.timestamp - e.rtt)
    data_flows = {s.data_flow for s in truth.samples}
    per_flow = [len(sent_by_flow.get(flow, ())) for flow in data_flows]
    quartiles = statistics.quantiles(per_flow, n=4, method="inclusive")
    changes = [
        {
            "at_s": round((e.timestamp - truth.first_ns) / NS_PER_S, 3),
            "change": e.change.name.lower(),
            "entries": e.entries,
            "sampling_scale": e.sampling_scale,
            "capacity": e.grown_to if e.table == Table.TIMESTAMPS else e.capacity,
        }
        for e in events
        if isinstance(e, PressureEvent)
    ]
    c = engine.counters
    return {
        "rtts": len(rtts),
        "wrong_rtts": wrong,
        "flows": len(data_flows),
        "flows_sampled": sum(n > 0 for n in per_flow),
        "samples_per_flow": {"min": min(per_flow), "quartiles": quartiles, "max": max(per_flow)},
        "jain_fairness": jain(per_flow),
        "window_coverage": {
            f"{w}s": coverage(sent_by_flow, truth, round(w * NS_PER_S)) for w in WINDOWS_S
        },
        "timestamps_created": c.timestamps_created,
        "timestamps_table_full": c.timestamps_table_full,
        "timestamps_expired": c.timestamps_expired,
        "timestamps_grown": c.timestamps_grown,
        "final_max_timestamps": engine.pressure.max_timestamps,
        "map_full_events": sum(isinstance(e, MapFullEvent) for e in events),
        "pressure_changes": changes,
        "replay_seconds": round(seconds, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flows", type=int, default=4000)
    parser.add_argument("--packets", type=int, default=400_000)
    parser.add_argument("--gap-ms", type=float, nargs=2, default=(100.0, 200.0))
    parser.add_argument("--rtt-ms", type=float, nargs=2, default=(1.0, 300.0))
    parser.add_argument("--max-timestamps", type=int, default=1024)
    parser.add_argument("--cap", type=int, default=16384, help="growing: --max-timestamps-cap")
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()

    raw, truth = tracegen.many_flows(
        seed=args.seed, flows=args.flows, packets=args.packets, pause_prob=0.0,
        gap_us=(args.gap_ms[0] * 1000, args.gap_ms[1] * 1000), rtt_ms=tuple(args.rtt_ms),
    )  # fmt: skip
    modes = {
        "fixed": Config(max_timestamps=args.max_timestamps),
        "adaptive": Config(max_timestamps=args.max_timestamps, adaptive=True),
        "growing": Config(max_timestamps=args.max_timestamps, max_timestamps_cap=args.cap),
    }
    results = {name: run_mode(raw, truth, config) for name, config in modes.items()}
    data_flows = {s.data_flow for s in truth.samples}
    path_rtts = Counter(min(truth.min_path_rtt_ns[f] // 100_000_000, 2) for f in data_flows)
    print(
        json.dumps(
            {
                "benchmark": "pressure",
                "capture": {
                    "flows": args.flows,
                    "packets": truth.packets,
                    "seconds": round((truth.last_ns - truth.first_ns) / NS_PER_S, 2),
                    "samples": len(truth.samples),
                    "gap_ms": list(args.gap_ms),
                    "rtt_ms": list(args.rtt_ms),
                    "flows_by_path_rtt": {
                        "<100ms": path_rtts[0],
                        "100-200ms": path_rtts[1],
                        ">=200ms": path_rtts[2],
                    },
                    "seed": args.seed,
                },
                "max_timestamps": args.max_timestamps,
                "max_timestamps_cap": args.cap,
                **results,
                "notes": [
                    "Python engine; the kernel program takes the same decisions "
                    "(tests/test_pressure.py, tests/test_kernel_parity.py)",
                ],
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
