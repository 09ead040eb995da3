"""Per-prefix aggregation (-a): exact figures from captures built packet by packet,
the table rules (backup entry, idle timeout, double buffering), the histogram
estimates, and a scalar oracle over tracegen captures."""

from __future__ import annotations

import io
import ipaddress
import json
import struct
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tracegen
from pping.aggregate import OTHER, TCP_NOTS, TCP_TS, Aggregator, Traffic
from pping.cli import main
from pping.config import NS_PER_MS, NS_PER_S, AggregateConfig
from pping.events import AggregateEvent, Flow, RttEvent, TrafficCounts
from test_packet import ACK, PSH, eth, icmp, ipv4, ipv6, nop_nop_ts, tcp

T0 = 1_700_000_000 * NS_PER_S
A, B, C, D = "198.18.1.10", "198.19.2.20", "198.20.3.30", "198.21.4.40"
E, F = "fd00:0:0:18::1", "fd00:0:0:19::2"


def pcap(packets: list[tuple[int, bytes]]) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1)]
    for t, data in packets:
        out.append(struct.pack("<IIII", t // NS_PER_S, t % NS_PER_S, len(data), len(data)))
        out.append(data)
    return b"".join(out)


def tcp4(src: str, dst: str, tsval: int, tsecr: int, payload: int = 0) -> bytes:
    segment = tcp(ACK | PSH, nop_nop_ts(tsval, tsecr), bytes(payload), 40000, 443)
    if src > dst:
        segment = tcp(ACK | PSH, nop_nop_ts(tsval, tsecr), bytes(payload), 443, 40000)
    return eth(ipv4(segment, src=src, dst=dst))


def tcp6(src: str, dst: str, tsval: int, tsecr: int, payload: int = 0) -> bytes:
    sport, dport = (40000, 443) if src < dst else (443, 40000)
    segment = tcp(ACK | PSH, nop_nop_ts(tsval, tsecr), bytes(payload), sport, dport)
    return eth(ipv6(segment, src=src, dst=dst), ethertype=0x86DD)


# The hand-built capture: its packets, and what each prefix must show.
DATA1 = tcp4(A, B, 100, 1, payload=100)
DATA2 = tcp4(A, B, 101, 1, payload=100)  # the first new TSval: timestamped
ACK1 = tcp4(B, A, 900, 101)  # 10 ms later: RTT 10 ms, replied by B
UDP = eth(ipv4(struct.pack("!HHHH", 53, 53, 8 + 20, 0) + bytes(20), proto=17, src=A, dst=B))
NOTS = eth(ipv4(tcp(ACK, b"", b"", 40001, 443), src=C, dst=B))  # TCP without timestamps
PING = eth(ipv4(icmp(8), proto=1, src=D, dst=A))  # ICMP untracked: creates nothing
V6_DATA1 = tcp6(E, F, 5000, 7, payload=10)
V6_DATA2 = tcp6(E, F, 5001, 7, payload=10)
V6_ACK = tcp6(F, E, 77, 5001)  # 30 ms later
DATA3 = tcp4(A, B, 102, 900, payload=100)
ACK3 = tcp4(B, A, 901, 102)  # 5 ms later, in the second interval

CAPTURE = [
    (T0, DATA1),
    (T0 + 1 * NS_PER_MS, DATA2),
    (T0 + 2 * NS_PER_MS, UDP),
    (T0 + 3 * NS_PER_MS, NOTS),
    (T0 + 4 * NS_PER_MS, PING),
    (T0 + 5 * NS_PER_MS, V6_DATA1),
    (T0 + 6 * NS_PER_MS, V6_DATA2),
    (T0 + 11 * NS_PER_MS, ACK1),
    (T0 + 36 * NS_PER_MS, V6_ACK),
    (T0 + 1500 * NS_PER_MS, DATA3),
    (T0 + 1505 * NS_PER_MS, ACK3),
]


def run(tmp_path: Path, packets: list[tuple[int, bytes]], *options: str) -> tuple[int, str, str]:
    path = tmp_path / "capture.pcap"
    path.write_bytes(pcap(packets))
    out, err = io.StringIO(), io.StringIO()
    code = main(["--read", str(path), *options], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def records(
    tmp_path: Path, packets: list[tuple[int, bytes]], *options: str
) -> list[dict[str, Any]]:
    code, out, err = run(tmp_path, packets, "-F", "jsonl", *options)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def by_prefix(recs: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    return {(r["timestamp"], r["ip_prefix"]): r for r in recs if "ip_prefix" in r}


def test_hand_built_capture_gives_exact_figures(tmp_path: Path) -> None:
    recs = records(tmp_path, CAPTURE, "-a", "1", "-6", "64")
    assert recs[0] == {
        "timestamp": T0,
        "bins": 250,
        "bin_width_ns": 4_000_000,
        "aggregation_interval_ns": NS_PER_S,
        "timeout_interval_ns": 30 * NS_PER_S,
        "ipv4_prefix_len": 24,
        "ipv6_prefix_len": 64,
    }
    assert recs[-1]["final"] is True  # the summary stays
    first, last = T0 + NS_PER_S, T0 + 1505 * NS_PER_MS
    prefixes = by_prefix(recs)
    assert sorted(prefixes) == [
        (first, "0.0.0.0/0"),
        (first, "198.18.1.0/24"),
        (first, "198.19.2.0/24"),
        (first, "fd00:0:0:18::/64"),
        (first, "fd00:0:0:19::/64"),
        (last, "198.18.1.0/24"),
        (last, "198.19.2.0/24"),
    ]
    ts = {"packets": 2, "bytes": 2 * len(DATA1)}
    # A sent two data segments and a UDP datagram and received the ACK and the ping.
    assert prefixes[(first, "198.18.1.0/24")] == {
        "timestamp": first,
        "ip_prefix": "198.18.1.0/24",
        "rx_stats": {"TCP_TS": ts, "other": {"packets": 1, "bytes": len(UDP)}},
        "tx_stats": {
            "TCP_TS": {"packets": 1, "bytes": len(ACK1)},
            "other": {"packets": 1, "bytes": len(PING)},
        },
    }
    # B answered: the RTT is B's. The segment without timestamps came from C.
    b = prefixes[(first, "198.19.2.0/24")]
    assert b["rx_stats"] == {"TCP_TS": {"packets": 1, "bytes": len(ACK1)}}
    assert b["tx_stats"] == {
        "TCP_TS": ts,
        "TCP_noTS": {"packets": 1, "bytes": len(NOTS)},
        "other": {"packets": 1, "bytes": len(UDP)},
    }
    assert (b["count_rtt"], b["min_rtt"], b["max_rtt"]) == (1, 10 * NS_PER_MS, 10 * NS_PER_MS)
    assert b["histogram"] == [0, 0, 1]
    assert (b["mean_rtt"], b["median_rtt"], b["p95_rtt"]) == (10e6, 10e6, 10e6)
    # C and D never sent a packet that may create a prefix: the backup entry has them.
    assert prefixes[(first, "0.0.0.0/0")]["rx_stats"] == {
        "TCP_noTS": {"packets": 1, "bytes": len(NOTS)},
        "other": {"packets": 1, "bytes": len(PING)},
    }
    assert prefixes[(first, "0.0.0.0/0")]["tx_stats"] == {}
    f = prefixes[(first, "fd00:0:0:19::/64")]
    assert f["histogram"] == [0] * 7 + [1] and f["min_rtt"] == 30 * NS_PER_MS
    assert "count_rtt" not in prefixes[(first, "fd00:0:0:18::/64")]
    # The second interval ends with the capture.
    b2 = prefixes[(last, "198.19.2.0/24")]
    assert b2["histogram"] == [0, 1] and b2["min_rtt"] == 5 * NS_PER_MS


def test_reverse_gives_the_rtt_to_the_replys_destination(tmp_path: Path) -> None:
    prefixes = by_prefix(records(tmp_path, CAPTURE, "-a", "1", "--aggregate-reverse"))
    first = T0 + NS_PER_S
    assert prefixes[(first, "198.18.1.0/24")]["histogram"] == [0, 0, 1]
    assert "count_rtt" not in prefixes[(first, "198.19.2.0/24")]
    # -6 48 (the default): both IPv6 hosts share fd00::/48, which gets the RTT either way.
    assert prefixes[(first, "fd00::/48")]["count_rtt"] == 1


def test_standard_lines(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, CAPTURE, "-a", "1", "-4", "16")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "Aggregating RTTs in histograms with 250 4 ms wide bins every 1 seconds"
    b = next(line for line in lines if ": 198.19.0.0/16 ->" in line)
    assert b.endswith(
        f": 198.19.0.0/16 -> rxpkts=1, rxbytes={len(ACK1)}, txpkts=4, "
        f"txbytes={2 * len(DATA1) + len(NOTS) + len(UDP)}, rtt-count=1, min=10 ms, "
        "mean=10 ms, median=10 ms, p95=10 ms, max=10 ms"
    )
    # No RTT lines: -a replaces them; a flow event is still printed.
    assert not [line for line in lines if " ms TCP " in line]


def traffic(rows: list[tuple[int, str, str, int, bool]]) -> Traffic:
    """Traffic columns of IPv4 packets (time, source, destination, class, creates)."""

    def key(address: str) -> int:
        return int(ipaddress.IPv4Address(address))

    n = len(rows)
    return Traffic(
        times=np.array([r[0] for r in rows], dtype=np.int64),
        counted=np.ones(n, dtype=bool),
        src_v6=np.zeros(n, dtype=bool),
        dst_v6=np.zeros(n, dtype=bool),
        src=np.array([key(r[1]) for r in rows], dtype=np.uint64),
        dst=np.array([key(r[2]) for r in rows], dtype=np.uint64),
        length=np.full(n, 100, dtype=np.int64),
        cls=np.array([r[3] for r in rows], dtype=np.int8),
        creates=np.array([r[4] for r in rows], dtype=bool),
    )


def rx_packets(events: list[AggregateEvent]) -> dict[str, int]:
    return {e.prefix: e.rx.packets for e in events if e.rx.packets}


def test_backup_entry_when_the_table_is_full() -> None:
    # Three places: the backup entry and two prefixes.
    aggregator = Aggregator(AggregateConfig(NS_PER_S, max_prefixes=3))
    aggregator.add_traffic(
        traffic([
            (1, A, B, TCP_TS, True),  # A and B take the two places
            (2, C, D, TCP_TS, True),  # full: C's and D's packets go to the backup entry
            (3, A, C, OTHER, False),
        ])
    )  # fmt: skip
    rtt = RttEvent(4, Flow(6, _mapped(C), 1, _mapped(D), 2), 5 * NS_PER_MS, 0, 0, 0, 0, 0)
    aggregator.add_rtt(rtt)  # replied by C: the backup entry's
    events = {e.prefix: e for e in aggregator.report(NS_PER_S)}
    assert sorted(events) == ["0.0.0.0/0", "198.18.1.0/24", "198.19.2.0/24"]
    backup = events["0.0.0.0/0"]
    assert backup.rx == TrafficCounts(tcp_ts_packets=1, tcp_ts_bytes=100)
    assert backup.tx == TrafficCounts(1, 100, 0, 0, 1, 100)
    assert backup.histogram == (0, 1)
    assert events["198.18.1.0/24"].rx == TrafficCounts(1, 100, 0, 0, 1, 100)


def test_a_prefix_exists_from_the_packet_that_creates_it() -> None:
    aggregator = Aggregator(AggregateConfig(NS_PER_S))
    aggregator.add_traffic(
        traffic([
            (1, A, B, TCP_NOTS, False),  # A and B unknown yet: backup
            (2, A, B, TCP_TS, True),
            (3, A, B, TCP_NOTS, False),
        ])
    )  # fmt: skip
    events = {e.prefix: e for e in aggregator.report(NS_PER_S)}
    assert events["0.0.0.0/0"].rx == TrafficCounts(0, 0, 1, 100, 0, 0)
    assert events["0.0.0.0/0"].tx == TrafficCounts(0, 0, 1, 100, 0, 0)
    assert events["198.18.1.0/24"].rx == TrafficCounts(1, 100, 1, 100, 0, 0)
    assert events["198.19.2.0/24"].tx == TrafficCounts(1, 100, 1, 100, 0, 0)


@pytest.mark.parametrize(("timeout_s", "expected"), [(2, "0.0.0.0/0"), (0, "198.18.1.0/24")])
def test_idle_prefixes_time_out(timeout_s: int, expected: str) -> None:
    aggregator = Aggregator(AggregateConfig(NS_PER_S, timeout_ns=timeout_s * NS_PER_S))
    s = NS_PER_S
    aggregator.add_traffic(traffic([(0, A, B, TCP_TS, True)]))  # copy 0
    assert rx_packets(aggregator.report(1 * s)) == {"198.18.1.0/24": 1}
    aggregator.add_traffic(traffic([(s + s // 2, A, B, TCP_TS, True)]))  # copy 1
    assert rx_packets(aggregator.report(2 * s)) == {"198.18.1.0/24": 1}
    assert aggregator.report(3 * s) == []  # copy 0: A idle for 3 s
    assert aggregator.report(4 * s) == []  # copy 1: A idle for 2.5 s
    # Copy 0 again: a packet that cannot create a prefix finds A only if it was kept.
    aggregator.add_traffic(traffic([(4 * s + 1, A, B, OTHER, False)]))
    assert rx_packets(aggregator.report(5 * s)) == {expected: 1}


def test_each_copy_has_its_own_entries() -> None:
    """As in ePPing's double-buffered maps: a prefix created while copy 0 was active is
    unknown to copy 1 until a packet creates it there too."""
    aggregator = Aggregator(AggregateConfig(NS_PER_S))
    aggregator.add_traffic(traffic([(0, A, B, TCP_TS, True)]))
    aggregator.report(NS_PER_S)
    aggregator.add_traffic(traffic([(NS_PER_S + 1, A, B, OTHER, False)]))
    assert rx_packets(aggregator.report(2 * NS_PER_S)) == {"0.0.0.0/0": 1}


def test_report_points_follow_a_grid_from_the_first_packet() -> None:
    aggregator = Aggregator(AggregateConfig(NS_PER_S))
    s = NS_PER_S
    times = np.array([10, s - 1, s + 10, 5 * s + 20, 5 * s + 30], dtype=np.int64)
    assert aggregator.report_points(times) == [(2, s + 10), (3, 2 * s + 10)]
    assert aggregator.report_points(np.array([6 * s + 9, 6 * s + 10])) == [(1, 6 * s + 10)]


def _mapped(address: str) -> bytes:
    return b"\0" * 10 + b"\xff\xff" + ipaddress.IPv4Address(address).packed


def _event(histogram: tuple[int, ...]) -> AggregateEvent:
    empty = TrafficCounts()
    return AggregateEvent(0, "x", empty, empty, 1, 1, histogram, 4 * NS_PER_MS)


@pytest.mark.parametrize(
    "histogram", [(1,), (0, 3), (2, 0, 0, 1), (5, 1, 0, 0, 0, 7, 2), (0, 0, 1, 0, 1)]
)
def test_estimates_take_rtts_at_their_bins_middles(histogram: tuple[int, ...]) -> None:
    """Mean and percentiles as numpy computes them over the bins' middles."""
    event = _event(histogram)
    middles = np.repeat(2e6 + 4e6 * np.arange(len(histogram)), histogram)
    assert event.rtt_mean() == pytest.approx(float(np.mean(middles)))
    for percent in (0, 1, 50, 90, 95, 99, 100):
        expected = float(np.percentile(middles, percent))
        assert event.rtt_percentile(percent) == pytest.approx(expected), percent


def test_the_last_bin_is_open() -> None:
    aggregator = Aggregator(AggregateConfig(NS_PER_S))
    aggregator.add_traffic(traffic([(0, B, A, TCP_TS, True)]))
    reply = Flow(6, _mapped(B), 443, _mapped(A), 40000)
    aggregator.add_rtt(RttEvent(1, reply, 5 * NS_PER_S, 0, 0, 0, 0, 0))
    (event,) = [e for e in aggregator.report(NS_PER_S) if e.rtt_count]
    assert len(event.histogram) == 250 and event.histogram[-1] == 1
    assert event.rtt_max == 5 * NS_PER_S


# -- a scalar oracle over tracegen captures ---------------------------------------------


def _oracle_traffic(capture: bytes, v4_len: int, v6_len: int) -> dict[str, list[int]]:
    """rx/tx packets and bytes per prefix, parsing each Ethernet frame by hand (every
    packet of these captures is TCP with timestamps, so every one creates its prefix)."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    pos = 24
    while pos < len(capture):
        _, _, caplen, wire = struct.unpack_from("<IIII", capture, pos)
        frame = capture[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        ethertype = struct.unpack_from("!H", frame, 12)[0]
        src: ipaddress.IPv4Address | ipaddress.IPv6Address
        dst: ipaddress.IPv4Address | ipaddress.IPv6Address
        if ethertype == 0x0800:
            src, dst = (ipaddress.IPv4Address(frame[o : o + 4]) for o in (26, 30))
            length = v4_len
        else:
            src, dst = (ipaddress.IPv6Address(frame[o : o + 16]) for o in (22, 38))
            length = v6_len
        for address, side in ((src, 0), (dst, 2)):
            prefix = str(ipaddress.ip_network(f"{address}/{length}", strict=False))
            totals[prefix][side] += 1
            totals[prefix][side + 1] += wire
    return totals


@pytest.mark.parametrize(
    ("ip_version", "v4_len", "v6_len"), [(4, 24, 48), (4, 30, 48), (6, 24, 64)]
)
def test_totals_match_a_scalar_oracle(
    tmp_path: Path, ip_version: int, v4_len: int, v6_len: int
) -> None:
    capture, truth = tracegen.many_flows(
        seed=5, flows=40, packets=6000, ip_version=ip_version, resolution="us"
    )
    path = tmp_path / "flows.pcap"
    path.write_bytes(capture)
    out = io.StringIO()
    argv = ["--read", str(path), "-F", "jsonl"]
    assert main(argv, stdout=out, stderr=io.StringIO()) == 0
    rtts = [json.loads(line) for line in out.getvalue().splitlines()]
    out = io.StringIO()
    options = ["-a", "1", "-4", str(v4_len), "-6", str(v6_len)]
    assert main(argv + options, stdout=out, stderr=io.StringIO()) == 0
    recs = [json.loads(line) for line in out.getvalue().splitlines()]

    got: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    histograms: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(250, dtype=np.int64))
    for r in recs:
        if "ip_prefix" not in r:
            continue
        for side, name in ((0, "rx_stats"), (2, "tx_stats")):
            ts = r[name].get("TCP_TS", {})
            got[r["ip_prefix"]][side] += ts.get("packets", 0)
            got[r["ip_prefix"]][side + 1] += ts.get("bytes", 0)
            assert set(r[name]) <= {"TCP_TS"}
        if "histogram" in r:
            histograms[r["ip_prefix"]][: len(r["histogram"])] += r["histogram"]
    assert dict(got) == dict(_oracle_traffic(capture, v4_len, v6_len))
    assert sum(v[0] for v in got.values()) == truth.packets

    expected: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(250, dtype=np.int64))
    for r in rtts:
        if "rtt" in r:
            length = v6_len if ":" in r["src_ip"] else v4_len
            prefix = str(ipaddress.ip_network(f"{r['src_ip']}/{length}", strict=False))
            expected[prefix][min(r["rtt"] // (4 * NS_PER_MS), 249)] += 1
    assert {k: v.tolist() for k, v in histograms.items()} == {
        k: v.tolist() for k, v in expected.items()
    }
    assert sum(int(v.sum()) for v in expected.values()) > 50


# -- options --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        ["-a", "0"],
        ["-a", "x"],
        ["-a", "1.5"],
        ["-a", "1", "-4", "33"],
        ["-a", "1", "-6", "65"],
        ["-a", "1", "-6", "-1"],
        ["-a", "1", "--aggregate-timeout", "-1"],
        ["-a", "1", "--max-prefixes", "1"],
        ["-a", "1", "-F", "ppviz"],
        ["-a", "1", "-m"],
        ["-a", "1", "-i", "lo", "-F", "ppviz"],
        ["-4", "16"],
        ["--aggregate-reverse"],
    ],
)
def test_bad_options_give_one_line_and_exit_code_2(tmp_path: Path, options: list[str]) -> None:
    code, out, err = run(tmp_path, CAPTURE, *options)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("pping: ")
