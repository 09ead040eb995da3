"""-a live: the kernel program's prefix maps on the test bed (a ping across a path of
15 ms), reported every interval and once more when pping stops."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pping.testbed import CLIENT_IPV4, SERVER_IPV4, Testbed, ping
from test_live import PATH_RTT_NS, REASON, Pping, bed, needs_ping, run_pping

__all__ = ["bed", "run_pping"]  # fixtures

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(REASON is not None, reason=REASON or ""),
]

ICMP_FRAME = 98  # Ethernet + IPv4 + ICMP echo of ping's 56 bytes


def summed(records: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    """The records of `prefix` over every interval: packet counts and RTTs."""
    mine = [r for r in records if r.get("ip_prefix") == prefix]
    other = {"rx": [0, 0], "tx": [0, 0]}
    for r in mine:
        for side in ("rx", "tx"):
            counts = r[f"{side}_stats"].get("other", {})
            other[side][0] += counts.get("packets", 0)
            other[side][1] += counts.get("bytes", 0)
    with_rtts = [r for r in mine if "count_rtt" in r]
    return {
        "other": other,
        "rtts": sum(r["count_rtt"] for r in with_rtts),
        "min_rtt": min((r["min_rtt"] for r in with_rtts), default=None),
    }


@needs_ping
@pytest.mark.parametrize("reverse", [False, True], ids=["by-source", "reverse"])
def test_ping_aggregated_per_host(
    bed: Testbed, reverse: bool, run_pping: Callable[..., Pping]
) -> None:
    options = ["-C", "-r", "0", "-F", "jsonl", "-a", "1", "-4", "32"]
    pping = run_pping(bed, [*options, *(["--aggregate-reverse"] if reverse else [])])
    pping.wait_attached()
    result = ping(bed, count=10, interval=0.05)
    assert result.received == 10
    assert pping.stop() == 0, pping.stderr()
    records = pping.records()
    assert records[0]["aggregation_interval_ns"] == 1_000_000_000
    assert not [r for r in records if "rtt" in r]  # no per-RTT records with -a
    server = summed(records, f"{SERVER_IPV4}/32")
    client = summed(records, f"{CLIENT_IPV4}/32")
    # The replies come from the server, the requests go to it.
    assert server["other"] == {"rx": [10, 10 * ICMP_FRAME], "tx": [10, 10 * ICMP_FRAME]}
    assert client["other"] == {"rx": [10, 10 * ICMP_FRAME], "tx": [10, 10 * ICMP_FRAME]}
    answered, asked = (client, server) if reverse else (server, client)
    assert answered["rtts"] == 10 and asked["rtts"] == 0
    assert PATH_RTT_NS <= answered["min_rtt"] <= min(result.rtts_ms) * 1_000_000 + 100_000
