"""Every RTT printed for a real capture is one its packets prove.

For each RTT record the test finds, independently of the engine, the reply packet (at
the printed time, in the printed direction, echoing identifier X) and the packet that
carried X the other way: it must be the first packet of that direction with X, one
that may be timestamped (payload, SYN or FIN; an echo request), and exactly `rtt`
earlier. (The capture may begin in mid-flow: the test cannot know packets before it,
and neither can pping, which waits for the first new TSval.)
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from pping.cli import main
from pping.errors import CaptureError
from pping.events import IPPROTO_TCP, format_address
from pping.packet import TCP_ACK, TCP_FIN, TCP_SYN, PacketInfo, parse_packet
from pping.sources.pcap import CaptureReader

DATA = Path(__file__).parent / "data" / "pcaps"
CAPTURES = sorted(p for p in DATA.glob("*.pcap*") if p.is_file())

Direction = tuple[int, int, str, int, str, int]  # interface, proto, src, sport, dst, dport


def direction(interface: int, info: PacketInfo) -> Direction:
    return (interface, info.proto, format_address(info.saddr), info.sport,
            format_address(info.daddr), info.dport)  # fmt: skip


def index_packets(path: Path) -> tuple[dict, dict]:
    """first_carrier[(direction, X)] = (time of the first packet that may be timestamped
    with X, True); replies[(direction, time)] = [identifiers echoed at that time].

    Pure ACKs carry TSvals too, but are never timestamped and do not count as a first
    carrier (docs/algorithm.md): an RTT starts at the first data, SYN or FIN segment."""
    first_carrier: dict[tuple[Direction, int], tuple[int, bool]] = {}
    replies: dict[tuple[Direction, int], list[int]] = defaultdict(list)
    try:
        for record in CaptureReader(io.BytesIO(path.read_bytes())):
            info = parse_packet(record.linktype, record.data, record.wire_len)
            if isinstance(info, str):
                continue
            key = direction(record.interface, info)
            stampable = info.pid_valid
            if info.proto == IPPROTO_TCP:
                stampable = info.payload > 0 or bool(info.tcp_flags & (TCP_SYN | TCP_FIN))
            if stampable:
                first_carrier.setdefault((key, info.pid), (record.timestamp_ns, stampable))
            if info.reply_pid_valid and (info.proto != IPPROTO_TCP or info.tcp_flags & TCP_ACK):
                replies[(key, record.timestamp_ns)].append(info.reply_pid)
    except CaptureError:
        pass
    return first_carrier, replies


def rtt_records(path: Path) -> list[dict[str, Any]]:
    out, err = io.StringIO(), io.StringIO()
    main(["--read", str(path), "-r", "0", "-s", "-T", "-C", "-F", "jsonl"], stdout=out, stderr=err)
    assert "Traceback" not in err.getvalue()
    return [r for r in map(json.loads, out.getvalue().splitlines()) if "rtt" in r]


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_every_rtt_is_proved_by_the_trace(path: Path) -> None:
    records = rtt_records(path)
    first_carrier, replies = index_packets(path)
    interfaces = {key[0][0] for key in first_carrier} or {0}
    for record in records:
        proto = {"TCP": 6, "ICMP": 1, "ICMPv6": 58}[record["protocol"]]
        proved = False
        for interface in interfaces:
            reply_dir = (interface, proto, record["src_ip"], record["src_port"],
                         record["dest_ip"], record["dest_port"])  # fmt: skip
            data_dir = (interface, proto, record["dest_ip"], record["dest_port"],
                        record["src_ip"], record["src_port"])  # fmt: skip
            for echoed in replies.get((reply_dir, record["timestamp"]), []):
                sent = first_carrier.get((data_dir, echoed))
                if sent and sent[1] and record["timestamp"] - sent[0] == record["rtt"]:
                    proved = True
        assert proved, f"{path.name}: no packets prove {record}"


def test_real_captures_give_rtts() -> None:
    """The checks above are not vacuous: these captures hold hundreds of samples."""
    counts = {p.name: len(rtt_records(p)) for p in CAPTURES}
    assert counts["zeek__ssh_kex_mlkem.pcap"] > 3000
    assert counts["suricata__smb2-peter.pcap"] > 400
    assert counts["zeek__http-1000-requests-one-dropped-response.pcap"] > 1000
    assert counts["suricata__icmp_and_ssh.pcap"] > 100
