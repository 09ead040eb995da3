"""Capture-analysis speed: packets per second, pping against Kathie Nichols' pping.

Generates two captures with the project's trace generator (a few long bulk flows;
thousands of concurrent flows), then runs each tool on each capture several times,
interleaved, and keeps the best run (this machine is shared and noisy). Prints one
JSON document: packets/s by wall clock and by CPU time, and pping's speed as a ratio
of the other tool's, measured in the same run.

Kathie's pping is not part of this project; build it yourself and pass --kathie PATH
(default: /work/kathie/pping when it exists). Without it only pping is measured.

    python bench/capture_speed.py [--repeat 3] [--few-packets 2000000] [--flows 4000]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import tracegen  # noqa: E402

OUT = ROOT / "bench" / "out"
PPING = [sys.executable, "-m", "pping.cli"]


def capture(name: str, scenario: str, **kwargs: object) -> tuple[Path, int]:
    """The capture file (generated once per parameter set) and its packet count."""
    tag = "-".join(f"{k}{v}" for k, v in sorted(kwargs.items()))
    path = OUT / f"{name}-{tag}.pcap"
    meta = path.with_suffix(".json")
    if not (path.exists() and meta.exists()):
        OUT.mkdir(parents=True, exist_ok=True)
        pcap, truth = tracegen.SCENARIOS[scenario](seed=1, **kwargs)
        path.write_bytes(pcap)
        meta.write_text(json.dumps({"packets": truth.packets}))
    return path, int(json.loads(meta.read_text())["packets"])


def timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) for one run, output discarded."""
    started = time.perf_counter()
    with open(os.devnull, "wb") as devnull:
        process = subprocess.Popen(command, stdout=devnull, stderr=devnull)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--few-packets", type=int, default=2_000_000)
    parser.add_argument("--flows", type=int, default=4000)
    parser.add_argument("--many-packets", type=int, default=500_000)
    default_kathie = "/work/kathie/pping" if Path("/work/kathie/pping").exists() else None
    parser.add_argument("--kathie", default=default_kathie, help="Kathie's pping binary")
    args = parser.parse_args()

    captures = {
        "few_flows": capture("few", "bulk", flows=4, packets=args.few_packets, snaplen=128),
        "many_flows": capture(
            "many", "many_flows", flows=args.flows, packets=args.many_packets, snaplen=128
        ),
    }
    tools = {
        "pping": lambda f: [*PPING, "--read", str(f), "-m"],
        "pping_r0": lambda f: [*PPING, "--read", str(f), "-m", "-r", "0"],
    }
    if args.kathie:
        tools["kathie_pping"] = lambda f: [args.kathie, "-m", "-r", str(f)]

    # An installed pping runs from compiled bytecode; make sure this checkout has it
    # too (PYTHONDONTWRITEBYTECODE would otherwise make every run compile pping anew).
    compileall.compile_dir(ROOT / "src" / "pping", quiet=1)
    report: dict[str, object] = {"repeat": args.repeat, "captures": {}}
    for cname, (path, packets) in captures.items():
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.repeat):
            for tool, command in tools.items():  # interleaved: noise hits all alike
                wall, cpu = timed(command(path))
                old = best.get(tool, (float("inf"), float("inf")))
                best[tool] = (min(old[0], wall), min(old[1], cpu))
        results = {
            tool: {
                "best_wall_s": round(wall, 3),
                "best_cpu_s": round(cpu, 3),
                "pps_wall": round(packets / wall),
                "pps_cpu": round(packets / cpu),
            }
            for tool, (wall, cpu) in best.items()
        }
        entry: dict[str, object] = {"file": path.name, "packets": packets, "results": results}
        if "kathie_pping" in best:
            entry["ratio_vs_kathie_wall"] = {
                tool: round(best["kathie_pping"][0] / best[tool][0], 3)
                for tool in best if tool != "kathie_pping"
            }  # fmt: skip
        report["captures"][cname] = entry  # type: ignore[index]
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
