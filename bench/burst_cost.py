"""Per-packet cost of burst sampling in the tc programs: bursts off and on, and before.

Runs kernel_cost.py's test-run cases and "standard mix" (BPF_PROG_TEST_RUN, live mode,
local filter on, 100 ms rate limit, TCP only) on three loaded programs, rounds
interleaved, and prints one JSON document with the mixes and their ratios:

- ``before``: an object built from the sources before bursts existed (``--before``,
  e.g. ``git show main:bpf/pping.bpf.c`` and ``pping.h`` built with bpf/Makefile into
  another directory); loaded with its own, shorter configuration struct;
- ``burst_off``: this tree's object with ``Config()`` (``--burst 0``);
- ``burst_on``: this tree's object with ``--burst N`` (``--burst``, default 2).

In the mix, a data packet with a new TSval is refused by the rate limit (the burst
window of 4 ms has long passed), so the two programs differ by the burst tests on that
path and on the match path. Needs root.

``python bench/burst_cost.py --before /tmp/base/pping.bpf.o [--burst 2] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import kernel_cost  # noqa: E402
from pping.config import Config  # noqa: E402
from pping.kernel import abi, libbpf  # noqa: E402
from pping.kernel.program import PpingProgram, config_struct, object_path  # noqa: E402

# struct pping_config before bursts: the fields up to `reserved` (24 bytes).
BEFORE_FIELDS = [name for name, _ in abi.PpingConfig._fields_]
BEFORE_FIELDS = BEFORE_FIELDS[: BEFORE_FIELDS.index("reserved") + 1]


class BeforeConfig(ctypes.Structure):
    _fields_ = [f for f in abi.PpingConfig._fields_ if f[0] in BEFORE_FIELDS]


class BeforeProgram:
    """The object from before bursts, configured as PpingProgram would (Config())."""

    def __init__(self, path: str) -> None:
        self.object = libbpf.BpfObject(path)
        try:
            current = config_struct(Config(), replay=False, local_filter=True)
            before = BeforeConfig(**{name: getattr(current, name) for name in BEFORE_FIELDS})
            self.object.write_variable(".rodata", abi.CONFIG_VARIABLE, before)
            self.object.load()
            self.program_fds = {
                name: self.object.program(name).fd for name in kernel_cost.PROGRAMS.values()
            }
        except BaseException:
            self.object.close()
            raise

    def close(self) -> None:
        self.object.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="object built before bursts")
    parser.add_argument("--burst", type=int, default=2, help="--burst of the burst_on program")
    parser.add_argument("--repeat", type=int, default=200_000)
    parser.add_argument("--singles", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    programs: dict[str, Any] = {
        "before": BeforeProgram(args.before),
        "burst_off": PpingProgram(Config(), replay=False, local_filter=True),
        "burst_on": PpingProgram(Config(burst_packets=args.burst), replay=False, local_filter=True),
    }
    runners = {
        variant: {d: kernel_cost.Runner(program.program_fds[name])
                  for d, name in kernel_cost.PROGRAMS.items()}
        for variant, program in programs.items()
    }  # fmt: skip
    for per_direction in runners.values():
        kernel_cost.prime(per_direction)
    cases = {variant: kernel_cost.Cases(args.singles) for variant in programs}
    samples: dict[str, dict[str, dict[str, list[float]]]] = {
        v: {d: {} for d in kernel_cost.PROGRAMS} for v in programs
    }
    for round_ in range(args.rounds):
        order = list(programs) if round_ % 2 == 0 else list(reversed(programs))
        for variant in order:
            for direction in kernel_cost.PROGRAMS:
                measured = cases[variant].measure(runners[variant][direction], args.repeat)
                for case, ns in measured.items():
                    samples[variant][direction].setdefault(case, []).append(ns)
    for program in programs.values():
        program.close()

    result: dict[str, Any] = {}
    for variant in programs:
        entry: dict[str, Any] = {}
        for direction in kernel_cost.PROGRAMS:
            medians = {c: statistics.median(v) for c, v in samples[variant][direction].items()}
            entry[direction] = {
                "cases_ns": {c: round(v, 1) for c, v in medians.items()},
                "mix_ns": round(kernel_cost.mix_cost(medians), 1),
            }
        entry["mean_mix_ns"] = round(
            (entry["ingress"]["mix_ns"] + entry["egress"]["mix_ns"]) / 2, 1
        )
        result[variant] = entry
    mean = {variant: result[variant]["mean_mix_ns"] for variant in programs}
    print(
        json.dumps(
            {
                "benchmark": "burst_cost",
                "kernel": os.uname().release,
                "config": {
                    "repeat": args.repeat,
                    "singles": args.singles,
                    "rounds": args.rounds,
                    "burst": args.burst,
                    "mix": kernel_cost.MIX,
                    "before_object_sha256": kernel_cost.sha256(Path(args.before)),
                    "object_sha256": kernel_cost.sha256(object_path()),
                },
                "test_run": result,
                "ratios_of_mean_mix": {
                    "burst_off_over_before": kernel_cost.ratio(mean["burst_off"], mean["before"]),
                    "burst_on_over_before": kernel_cost.ratio(mean["burst_on"], mean["before"]),
                    "burst_on_over_off": kernel_cost.ratio(mean["burst_on"], mean["burst_off"]),
                },
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
