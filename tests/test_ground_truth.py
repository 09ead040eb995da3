"""End to end against synthetic captures with known RTTs (tests/tracegen.py).

Run as a user would: `pping --read FILE -r 0 -s -F jsonl`, then hold every printed
RTT to what the capture proves.
"""

from __future__ import annotations

import bisect
import io
import ipaddress
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tracegen
from pping.cli import main
from pping.events import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP

PROTOCOLS = {"TCP": IPPROTO_TCP, "ICMP": IPPROTO_ICMP, "ICMPv6": IPPROTO_ICMPV6}


def address(text: str) -> bytes:
    ip = ipaddress.ip_address(text)
    packed = ip.packed
    return packed if ip.version == 6 else b"\0" * 10 + b"\xff\xff" + packed


def run_pping(tmp_path: Path, pcap: bytes, *options: str) -> tuple[list[dict[str, Any]], str]:
    path = tmp_path / "trace.pcap"
    path.write_bytes(pcap)
    out, err = io.StringIO(), io.StringIO()
    code = main(["--read", str(path), "-F", "jsonl", *options], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert "summary" in records[-1]
    return records, err.getvalue()


def rtt_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if "rtt" in r]


def reply_flow(record: dict[str, Any]) -> tracegen.FlowKey:
    return tracegen.FlowKey(
        PROTOCOLS[record["protocol"]],
        address(record["src_ip"]),
        record["src_port"],
        address(record["dest_ip"]),
        record["dest_port"],
    )


def check_against_truth(records: list[dict[str, Any]], truth: tracegen.Truth) -> float:
    """Every RTT is a true sample, never below the path, never a pure ACK's echo.

    Returns the share of data-driven samples that pping reported.
    """
    rtts = rtt_records(records)
    assert rtts, "no RTT at all"
    pure = {(s.reply_flow, s.t_first_echo_ns, s.rtt_ns) for s in truth.pure_ack_echoes}
    reported = set()
    for record in rtts:
        flow, rtt, when = reply_flow(record), record["rtt"], record["timestamp"]
        assert truth.is_valid_rtt(flow, rtt, when), f"RTT {rtt} ns at {when} is no sample"
        assert rtt >= truth.min_rtt_for_reply(flow), f"RTT {rtt} ns below the path RTT"
        assert (flow, when, rtt) not in pure, "an application pause reported as RTT"
        assert record["min_rtt"] <= rtt
        reported.add((flow, when))
    # The first identifier of a direction may have been sent before the capture began
    # (a flow joined mid-stream): pping waits for the next one, by design.
    first_sent: dict[tracegen.FlowKey, int] = {}
    for s in truth.samples:
        first_sent[s.data_flow] = min(first_sent.get(s.data_flow, s.t_first_sent_ns),
                                      s.t_first_sent_ns)  # fmt: skip
    wanted = [s for s in truth.data_driven_samples if s.t_first_sent_ns > first_sent[s.data_flow]]
    found = sum((s.reply_flow, s.t_first_echo_ns) in reported for s in wanted)
    return found / len(wanted)


Scenario = Callable[..., tuple[bytes, tracegen.Truth]]

TCP_CASES: list[tuple[str, Scenario, dict[str, Any]]] = [
    ("bulk", tracegen.bulk, {"flows": 3, "packets": 60_000}),
    ("bulk-ipv6", tracegen.bulk, {"flows": 2, "packets": 30_000, "ip_version": 6}),
    ("bulk-vlan", tracegen.bulk, {"flows": 2, "packets": 30_000, "encap": "vlan"}),
    ("bulk-qinq-v6", tracegen.bulk, {"packets": 20_000, "encap": "qinq", "ip_version": 6}),
    ("bulk-sll-us", tracegen.bulk, {"packets": 20_000, "link": "sll", "resolution": "us"}),
    ("bulk-raw", tracegen.bulk, {"packets": 20_000, "link": "raw"}),
    ("ramping", tracegen.ramping_rtt, {}),
    ("reordering", tracegen.reordering, {}),
    ("loss", tracegen.loss, {}),
    ("wraparound", tracegen.wraparound, {}),
    ("app-limited", tracegen.app_limited, {}),
    ("fin-reuse", tracegen.fin_reuse, {}),
    ("handshake-rst", tracegen.handshake_rst, {}),
    ("malformed", tracegen.malformed, {}),
]


@pytest.mark.parametrize(("name", "scenario", "kwargs"), TCP_CASES, ids=[c[0] for c in TCP_CASES])
def test_every_rtt_is_true_and_almost_all_are_found(
    tmp_path: Path, name: str, scenario: Scenario, kwargs: dict[str, Any]
) -> None:
    pcap, truth = scenario(seed=7, **kwargs)
    records, _ = run_pping(tmp_path, pcap, "-r", "0", "-s")
    coverage = check_against_truth(records, truth)
    assert coverage >= 0.999, f"{name}: only {coverage:.4%} of data-driven samples reported"


def test_malformed_packets_are_counted_not_fatal(tmp_path: Path) -> None:
    pcap, truth = tracegen.malformed(seed=3)
    records, err = run_pping(tmp_path, pcap, "-r", "0")
    skipped = records[-1]["summary"]["skipped"]
    assert sum(skipped.values()) >= truth.malformed_injected
    assert "Summary" in err


def test_app_limited_flow_reports_no_think_time(tmp_path: Path) -> None:
    pcap, truth = tracegen.app_limited(seed=5)
    assert truth.pure_ack_echoes, "the scenario must contain application pauses"
    records, _ = run_pping(tmp_path, pcap, "-r", "0")
    longest_path = max(truth.min_path_rtt_ns.values())
    for record in rtt_records(records):
        assert truth.is_valid_rtt(reply_flow(record), record["rtt"], record["timestamp"])
    # a pure ACK's echo waits for the next response: far above any path RTT
    pauses = [s.rtt_ns for s in truth.pure_ack_echoes if s.rtt_ns > 2 * longest_path]
    reported = {r["rtt"] for r in rtt_records(records)}
    assert pauses and not reported.intersection(pauses)


@pytest.mark.parametrize("ip_version", [4, 6])
def test_icmp_echo(tmp_path: Path, ip_version: int) -> None:
    pcap, truth = tracegen.icmp_echo(seed=2, ip_version=ip_version)
    records, _ = run_pping(tmp_path, pcap, "-C", "-r", "0")
    rtts = rtt_records(records)
    assert rtts and all(r["protocol"] == ("ICMP" if ip_version == 4 else "ICMPv6") for r in rtts)
    for record in rtts:
        assert truth.is_valid_rtt(reply_flow(record), record["rtt"], record["timestamp"])
    answered = len(truth.samples)
    assert len(rtts) == answered


def test_default_rate_limit_samples_every_100_ms(tmp_path: Path) -> None:
    pcap, truth = tracegen.bulk(seed=11, flows=1, packets=60_000)
    records, _ = run_pping(tmp_path, pcap)
    rtts = rtt_records(records)
    for record in rtts:
        assert truth.is_valid_rtt(reply_flow(record), record["rtt"], record["timestamp"])
    sent_at = sorted(r["timestamp"] - r["rtt"] for r in rtts)
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert gaps and min(gaps) >= 100_000_000
    duration = truth.last_ns - truth.first_ns
    assert len(rtts) >= 0.8 * duration / 100_000_000 - 2


# -- bursts for delayed ACKs (docs/sampling.md) ---------------------------------------

RATE_LIMIT_NS = 100_000_000  # the default -r


def sampling_windows(truth: tracegen.Truth, flow: tracegen.FlowKey) -> list[int]:
    """When the default rate limit opens a sampling window in direction `flow`
    (docs/algorithm.md, timestamp_packet): the first identifier seen only starts the
    direction, the next one opens the first window, and each later window opens with
    the first new identifier at least the rate limit after the previous opening. (The
    scenario never reorders, so every first-sent identifier is newer.)"""
    openings: list[int] = []
    for sent, _identifier in truth.identifiers_sent[flow][1:]:
        if not openings or sent - openings[-1] >= RATE_LIMIT_NS:
            openings.append(sent)
    return openings


def rtts_per_window(records: list[dict[str, Any]], truth: tracegen.Truth) -> list[int]:
    """How many RTT events each sampling window gave (windows opened at least 200 ms
    before the capture ends: their replies are in it). Every RTT must be a true
    sample, never below the path RTT."""
    windows = {flow: sampling_windows(truth, flow) for flow in truth.min_path_rtt_ns
               if flow in truth.identifiers_sent}  # fmt: skip
    events = {(flow, opened): 0 for flow, openings in windows.items() for opened in openings
              if opened <= truth.last_ns - 200_000_000}  # fmt: skip
    for record in rtt_records(records):
        flow, rtt, when = reply_flow(record), record["rtt"], record["timestamp"]
        assert truth.is_valid_rtt(flow, rtt, when), f"RTT {rtt} ns at {when} is no sample"
        assert rtt >= truth.min_rtt_for_reply(flow), f"RTT {rtt} ns below the path RTT"
        openings = windows[flow.reversed()]
        index = bisect.bisect_right(openings, when - rtt) - 1
        assert index >= 0, "an RTT of a packet sent before the first window"
        key = (flow.reversed(), openings[index])
        if key in events:
            events[key] += 1
    return list(events.values())


def test_delayed_acks_leave_half_the_windows_empty_without_bursts(tmp_path: Path) -> None:
    pcap, truth = tracegen.delayed_ack(seed=13)
    records, _ = run_pping(tmp_path, pcap)
    per_window = rtts_per_window(records, truth)
    assert len(per_window) >= 300
    assert max(per_window) == 1
    covered = sum(per_window) / len(per_window)
    assert 0.35 <= covered <= 0.65, f"{covered:.1%} of windows gave an RTT"


@pytest.mark.parametrize("burst", ["1", "2"])
def test_bursts_give_one_correct_rtt_in_almost_every_window(tmp_path: Path, burst: str) -> None:
    pcap, truth = tracegen.delayed_ack(seed=13)
    records, _ = run_pping(tmp_path, pcap, "--burst", burst)
    per_window = rtts_per_window(records, truth)
    assert len(per_window) >= 300
    assert max(per_window) == 1, "a window reported more than one RTT"
    covered = sum(per_window) / len(per_window)
    assert covered >= 0.95, f"only {covered:.1%} of windows gave an RTT"
    summary = records[-1]["summary"]
    if burst == "2":
        # Three consecutive segments hold a whole pair: two of them are echoed, and
        # the second match of the window fed min/srtt but printed nothing.
        assert summary["timestamps_matched"] > summary["rtt_events"]
