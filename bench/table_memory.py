"""Kernel memory of pping's two tables, fixed and growing (one JSON document).

Loads the kernel program (live mode, as `pping -i` does) with each configuration and
reads the kernel's own account of each map's memory (`memlock` in the map's fdinfo);
for a growing timestamp table, also after user space fills half its cap, which gives
the memory per entry of a map that is not preallocated.

Needs root and the built object. ``python bench/table_memory.py``
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from pping.config import Config  # noqa: E402
from pping.kernel import abi, libbpf  # noqa: E402
from pping.kernel.program import PpingProgram  # noqa: E402

CONFIGS = {
    "fixed_1024": Config(max_timestamps=1024),
    "fixed_16384": Config(max_timestamps=16384),
    "growing_1024_to_16384": Config(max_timestamps=1024, max_timestamps_cap=16384),
}
FILL = 8192


def memlock(fd: int) -> int:
    info = Path(f"/proc/self/fdinfo/{fd}").read_text()
    match = re.search(r"^memlock:\s*(\d+)", info, re.M)
    return int(match.group(1)) if match else 0


def main() -> int:
    results: dict[str, dict[str, int | float]] = {}
    for name, config in CONFIGS.items():
        with PpingProgram(config, replay=False) as program:
            entry: dict[str, int | float] = {
                "timestamps_bytes": memlock(program.timestamps_fd),
                "flows_bytes": memlock(program.flows_fd),
            }
            if config.grows:
                keys = np.zeros(FILL, dtype=abi.TIMESTAMP_KEY_DTYPE)
                keys["pid"] = np.arange(FILL)
                values = np.ones(FILL, dtype=np.uint64)
                libbpf.map_update_batch(program.timestamps_fd, keys, values)
                filled = memlock(program.timestamps_fd)
                entry[f"timestamps_bytes_with_{FILL}"] = filled
                entry["bytes_per_timestamp"] = (filled - entry["timestamps_bytes"]) / FILL
            results[name] = entry
    print(json.dumps({"benchmark": "table_memory", "configs": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
