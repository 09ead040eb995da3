"""Self-checks of the synthetic capture generator (tests/tracegen.py).

Everything here reads the pcap bytes back with a small local parser (no pping code)
and checks the ground truth against what the bytes prove.
"""

from __future__ import annotations

import ipaddress
import itertools
import struct
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tracegen as tg

MASK32 = 0xFFFFFFFF
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10

SMALL: dict[str, dict[str, Any]] = {
    "bulk": {"flows": 2, "packets": 3_000},
    "ramping_rtt": {"duration_s": 1.0, "rtt_ms": (10.0, 100.0)},
    "reordering": {"packets": 3_000},
    "loss": {"packets": 3_000},
    "wraparound": {"flows": 1, "ticks_before_wrap": 300, "duration_s": 1.0},
    "app_limited": {"connections": 2, "requests": 3},
    "fin_reuse": {"generations": 3, "segments": 50},
    "icmp_echo": {"pingers": 2, "count": 40},
    "malformed": {"count": 36, "packets": 2_000},
    "handshake_rst": {"flows": 3, "rst_flows": 2, "segments": 200},
    "many_flows": {"flows": 100, "packets": 5_000},
    "delayed_ack": {"flows": 2, "duration_s": 1.0},
}
ONE_WAY = ["bulk", "ramping_rtt", "reordering", "loss", "wraparound", "many_flows", "delayed_ack"]


def generate(name: str, seed: int = 1, **options: Any) -> tuple[bytes, tg.Truth]:
    return tg.SCENARIOS[name](seed, **{**SMALL[name], **options})


# ------------------------------------------------------------- a minimal pcap reader


class Record(NamedTuple):
    t_ns: int
    data: bytes
    wire_len: int


class Pcap(NamedTuple):
    linktype: int
    resolution_ns: int
    snaplen: int
    records: list[Record]


def read_pcap(blob: bytes) -> Pcap:
    magic, major, minor, _, _, snaplen, linktype = struct.unpack_from("<IHHiIII", blob)
    assert (major, minor) == (2, 4)
    resolution = {0xA1B2C3D4: 1000, 0xA1B23C4D: 1}[magic]
    records, pos = [], 24
    while pos < len(blob):
        sec, frac, incl, orig = struct.unpack_from("<IIII", blob, pos)
        pos += 16
        assert incl <= orig and pos + incl <= len(blob)
        records.append(
            Record(sec * 1_000_000_000 + frac * resolution, blob[pos : pos + incl], orig)
        )
        pos += incl
    return Pcap(linktype, resolution, snaplen, records)


class Packet(NamedTuple):
    proto: int
    saddr: bytes
    sport: int
    daddr: bytes
    dport: int
    flags: int  # TCP flags, or the ICMP type
    seq: int  # TCP sequence, or the ICMP echo sequence
    ack: int
    tsval: int
    tsecr: int
    payload: int
    options: bytes

    @property
    def flow(self) -> tuple[int, bytes, int, bytes, int]:
        return (self.proto, self.saddr, self.sport, self.daddr, self.dport)


def mapped(ip: bytes) -> bytes:
    return ip if len(ip) == 16 else b"\x00" * 10 + b"\xff\xff" + ip


def parse(linktype: int, data: bytes) -> Packet | str:
    """The contract of src/pping/packet.py, independently: a Packet or a skip reason."""
    if linktype == 1:
        if len(data) < 14:
            return "short link header"
        ethertype, pos = struct.unpack_from("!H", data, 12)[0], 14
        for _ in range(2):
            if ethertype not in (0x8100, 0x88A8):
                break
            if len(data) < pos + 4:
                return "short VLAN tag"
            ethertype, pos = struct.unpack_from("!H", data, pos + 2)[0], pos + 4
    elif linktype == 113:
        if len(data) < 16:
            return "short link header"
        ethertype, pos = struct.unpack_from("!H", data, 14)[0], 16
    elif linktype == 101:
        if not data:
            return "empty"
        ethertype, pos = {4: 0x0800, 6: 0x86DD}.get(data[0] >> 4, 0), 0
    else:
        raise AssertionError(f"unexpected linktype {linktype}")
    if ethertype == 0x0800:
        return parse_ipv4(data, pos)
    if ethertype == 0x86DD:
        return parse_ipv6(data, pos)
    return "not IP"


def parse_ipv4(data: bytes, pos: int) -> Packet | str:
    if len(data) < pos + 20:
        return "short IPv4 header"
    ver_ihl, _, total, _, frag, _, proto = struct.unpack_from("!BBHHHBB", data, pos)
    ihl = (ver_ihl & 15) * 4
    if ver_ihl >> 4 != 4 or ihl < 20 or ihl > total or len(data) < pos + ihl:
        return "bad IPv4 header"
    if frag & 0x1FFF:
        return "later fragment"
    src, dst = data[pos + 12 : pos + 16], data[pos + 16 : pos + 20]
    return parse_l4(data, pos + ihl, total - ihl, proto, mapped(src), mapped(dst), 4)


def parse_ipv6(data: bytes, pos: int) -> Packet | str:
    if len(data) < pos + 40:
        return "short IPv6 header"
    if data[pos] >> 4 != 6:
        return "bad IPv6 header"
    length, nxt = struct.unpack_from("!HB", data, pos + 4)
    src, dst = data[pos + 8 : pos + 24], data[pos + 24 : pos + 40]
    pos += 40
    for _ in range(3):
        if nxt not in (0, 43, 44, 60):
            break
        if len(data) < pos + 8:
            return "short extension header"
        if nxt == 44 and struct.unpack_from("!H", data, pos + 2)[0] >> 3:
            return "later fragment"
        size = 8 if nxt == 44 else (data[pos + 1] + 1) * 8
        nxt, pos, length = data[pos], pos + size, length - size
    return parse_l4(data, pos, length, nxt, src, dst, 6)


def parse_l4(
    data: bytes, pos: int, length: int, proto: int, src: bytes, dst: bytes, version: int
) -> Packet | str:
    if proto in (1, 58):
        if len(data) < pos + 8 or length < 8:
            return "short ICMP header"
        icmp_type, code, _, ident, seq = struct.unpack_from("!BBHHH", data, pos)
        if code != 0 or icmp_type not in ((8, 0) if version == 4 else (128, 129)):
            return "not an echo"
        return Packet(proto, src, ident, dst, ident, icmp_type, seq, 0, 0, 0, length - 8, b"")
    if proto != 6:
        return "not TCP"
    if len(data) < pos + 20 or length < 20:
        return "short TCP header"
    sport, dport, seq, ack, doff, flags = struct.unpack_from("!HHIIBB", data, pos)
    hlen = (doff >> 4) * 4
    if hlen < 20 or hlen > length or len(data) < pos + hlen:
        return "bad TCP header length"
    options = data[pos + 20 : pos + hlen]
    ts = timestamp_option(options)
    if ts is None:
        return "no timestamp option"
    return Packet(6, src, sport, dst, dport, flags, seq, ack, *ts, length - hlen, options)


def timestamp_option(options: bytes) -> tuple[int, int] | None:
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:
            return None
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(options) or options[i + 1] < 2 or i + options[i + 1] > len(options):
            return None
        if kind == 8:
            if options[i + 1] != 10:
                return None
            return struct.unpack_from("!II", options, i + 2)  # type: ignore[return-value]
        i += options[i + 1]
    return None


class Parsed(NamedTuple):
    pcap: Pcap
    packets: list[tuple[int, Packet]]
    skipped: Counter[str]


def parse_capture(blob: bytes) -> Parsed:
    pcap = read_pcap(blob)
    packets, skipped = [], Counter[str]()
    for rec in pcap.records:
        p = parse(pcap.linktype, rec.data)
        if isinstance(p, str):
            skipped[p] += 1
        else:
            packets.append((rec.t_ns, p))
    return Parsed(pcap, packets, skipped)


# ------------------------------------------------ the matcher definition, from bytes


def recompute(
    packets: list[tuple[int, Packet]],
) -> tuple[set[tuple], set[tuple], dict[tuple, list[tuple[int, int]]]]:
    """Samples and pure-ACK echoes as (data flow, identifier, t_sent, t_echo), straight
    from the definition; a SYN without ACK starts a new connection on its 4-tuple. Also
    every identifier sent by a data/SYN/FIN packet or echo request, per direction, as
    (t_first_sent, identifier) in capture order."""
    generation: dict[frozenset, int] = defaultdict(int)
    first_data: dict[tuple, list] = {}
    first_pure: dict[tuple, list] = {}
    for t, p in packets:
        conn = frozenset([(p.saddr, p.sport), (p.daddr, p.dport), p.proto])
        if p.proto == 6 and p.flags & SYN and not p.flags & ACK:
            generation[conn] += 1
        gen = generation[conn]
        own, other = (p.flow, gen), ((p.proto, p.daddr, p.dport, p.saddr, p.sport), gen)
        if p.proto != 6:  # ICMP echo
            if p.flags in (8, 128):
                first_data.setdefault((own, p.seq), [t, None])
            elif (entry := first_data.get((other, p.seq))) and entry[1] is None:
                entry[1] = t
            continue
        if p.flags & ACK:
            for table in (first_data, first_pure):
                entry = table.get((other, p.tsecr))
                if entry is not None and entry[1] is None:
                    entry[1] = t
        table = first_data if p.payload or p.flags & (SYN | FIN) else first_pure
        table.setdefault((own, p.tsval), [t, None])
    samples = {(k[0][0], k[1], e[0], e[1]) for k, e in first_data.items() if e[1] is not None}
    pure = {
        (k[0][0], k[1], e[0], e[1])
        for k, e in first_pure.items()
        if e[1] is not None and k not in first_data
    }
    sent: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
    for (own, identifier), entry in first_data.items():
        sent[own[0]].append((entry[0], identifier))
    return samples, pure, dict(sent)


def as_set(samples: list[tg.Sample]) -> set[tuple]:
    return {
        (tuple(s.data_flow), s.identifier, s.t_first_sent_ns, s.t_first_echo_ns) for s in samples
    }


def check_consistent(blob: bytes, truth: tg.Truth) -> Parsed:
    """The truth is exactly what the capture proves."""
    parsed = parse_capture(blob)
    pcap = parsed.pcap
    assert pcap.linktype == truth.linktype
    assert pcap.resolution_ns == truth.resolution_ns
    assert len(pcap.records) == truth.packets
    times = [r.t_ns for r in pcap.records]
    assert times == sorted(times)
    assert all(t % truth.resolution_ns == 0 for t in times)
    assert sum(parsed.skipped.values()) == truth.malformed_injected
    n_tcp = sum(1 for _, p in parsed.packets if p.proto == 6)
    assert n_tcp == truth.counts["tcp_packets"]
    assert len(parsed.packets) - n_tcp == truth.counts["icmp_packets"]
    samples, pure, sent = recompute(parsed.packets)
    assert samples == as_set(truth.samples)
    assert pure == as_set(truth.pure_ack_echoes)
    assert sent == {tuple(flow): times for flow, times in truth.identifiers_sent.items()}
    for s in truth.samples + truth.pure_ack_echoes:
        assert s.rtt_ns == s.t_first_echo_ns - s.t_first_sent_ns > 0
        assert s.data_flow in truth.min_path_rtt_ns
    assert not any(s.data_driven for s in truth.pure_ack_echoes)
    for s in truth.samples:
        assert s.rtt_ns in truth.valid_rtts[(s.reply_flow, s.identifier)]
        assert truth.is_valid_rtt(s.reply_flow, s.rtt_ns, s.t_first_echo_ns)
    return parsed


def check_floor(truth: tg.Truth) -> None:
    assert truth.data_driven_samples
    for s in truth.data_driven_samples:
        assert s.rtt_ns >= truth.min_path_rtt_ns[s.data_flow], s


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", sorted(tg.SCENARIOS))
def test_truth_is_what_the_capture_proves(name: str) -> None:
    blob, truth = generate(name)
    check_consistent(blob, truth)
    check_floor(truth)
    assert truth.scenario == name


@pytest.mark.parametrize("ip_version", [4, 6])
@pytest.mark.parametrize(
    ("link", "encap"),
    [("ether", "none"), ("ether", "vlan"), ("ether", "qinq"), ("sll", "none"), ("raw", "none")],
)
@pytest.mark.parametrize("name", ["malformed", "icmp_echo", "fin_reuse"])
def test_links_encapsulations_and_ip_versions(
    name: str, link: str, encap: str, ip_version: int
) -> None:
    blob, truth = generate(name, ip_version=ip_version, link=link, encap=encap)
    parsed = check_consistent(blob, truth)
    check_floor(truth)
    assert {len(p.saddr) for _, p in parsed.packets} == {16}
    v4 = {p.saddr[:12] == b"\x00" * 10 + b"\xff\xff" for _, p in parsed.packets}
    assert v4 == {ip_version == 4}
    first = parsed.pcap.records[0].data
    if link == "ether":
        tags = {"none": b"", "vlan": b"\x81\x00", "qinq": b"\x88\xa8"}[encap]
        assert first[12 : 12 + len(tags)] == tags
        if encap == "qinq":
            assert first[16:18] == b"\x81\x00"
    elif link == "sll":
        assert first[2:4] == b"\x00\x01"  # ARPHRD_ETHER
    else:
        assert first[0] >> 4 == ip_version


@pytest.mark.parametrize("name", ["bulk", "loss", "app_limited", "icmp_echo", "malformed"])
def test_microsecond_resolution(name: str) -> None:
    """Truth times come from the rounded capture times; floors stay floors."""
    blob, truth = generate(name, resolution="us")
    check_consistent(blob, truth)
    check_floor(truth)
    assert truth.resolution_ns == 1000
    assert all(s.rtt_ns % 1000 == 0 for s in truth.samples)
    assert all(f % 1000 == 0 for f in truth.min_path_rtt_ns.values())


def test_snaplen_cuts_payload_not_truth() -> None:
    full_blob, full = generate("bulk")
    cut_blob, cut = generate("bulk", snaplen=96)
    check_consistent(cut_blob, cut)
    assert as_set(cut.samples) == as_set(full.samples)
    pcap = read_pcap(cut_blob)
    assert pcap.snaplen == 96
    assert all(len(r.data) <= 96 for r in pcap.records)
    assert [r.wire_len for r in pcap.records] == [r.wire_len for r in read_pcap(full_blob).records]


def test_deterministic() -> None:
    assert generate("loss", seed=5)[0] == generate("loss", seed=5)[0]
    assert generate("loss", seed=5)[0] != generate("loss", seed=6)[0]


@pytest.mark.parametrize("name", ["bulk", "many_flows"])
def test_direct_computation_equals_event_loop(name: str) -> None:
    fast_blob, fast = generate(name, seed=3, ip_version=6)
    slow_blob, slow = generate(name, seed=3, ip_version=6, engine="events")
    # the same packets (flows might interleave differently at the same nanosecond)
    assert sorted(read_pcap(fast_blob).records) == sorted(read_pcap(slow_blob).records)
    assert as_set(fast.samples) == as_set(slow.samples)
    assert as_set(fast.pure_ack_echoes) == as_set(slow.pure_ack_echoes)
    assert fast.counts == slow.counts


def test_addresses_are_from_test_ranges() -> None:
    nets = [ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("fd00::/8")]

    def ok(raw: bytes) -> bool:
        ip = ipaddress.IPv6Address(raw)
        addr = ip.ipv4_mapped or ip
        return any(addr in net for net in nets if net.version == addr.version)

    for name in sorted(tg.SCENARIOS):
        for version in (4, 6):
            blob, truth = generate(name, ip_version=version)
            for _, p in parse_capture(blob).packets:
                assert ok(p.saddr) and ok(p.daddr), (name, p)
            assert all(ok(f.saddr) and ok(f.daddr) for f in truth.min_path_rtt_ns)


def test_ipv4_and_icmp_checksums() -> None:
    def fold(data: bytes) -> int:
        data += b"\x00" * (len(data) % 2)
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return total

    for version in (4, 6):
        blob, _ = generate("icmp_echo", ip_version=version, link="raw")
        for rec in read_pcap(blob).records:
            if version == 4:
                assert fold(rec.data[:20]) == 0xFFFF
                assert fold(rec.data[20:]) == 0xFFFF
            else:
                body = rec.data[40:]
                pseudo = rec.data[8:40] + struct.pack("!II", len(body), 58)
                assert fold(pseudo + body) == 0xFFFF


@pytest.mark.parametrize("name", ONE_WAY)
def test_acks_echo_the_segment_that_advanced_the_window(name: str) -> None:
    """RFC 7323 from the bytes: an ACK that moves the left edge echoes the segment that
    started at the previous ACK (a delayed ACK of two echoes the earlier one; a hole
    fill echoes the retransmission); a duplicate ACK echoes what the previous did."""
    blob, _ = generate(name)
    packets = parse_capture(blob).packets
    received: dict[tuple, dict[int, int]] = defaultdict(dict)  # the copy that got through
    previous: dict[tuple, Packet] = {}
    checked = 0
    for _, p in packets:
        if p.payload:
            received[p.flow][p.seq] = p.tsval
            continue
        data_flow = (6, p.daddr, p.dport, p.saddr, p.sport)
        prev = previous.get(p.flow)
        previous[p.flow] = p
        if prev is None:
            continue
        if p.ack == prev.ack:
            assert p.tsecr == prev.tsecr
        else:
            assert p.tsecr == received[data_flow][prev.ack]
        checked += 1
    assert checked > 100


def test_delayed_ack_and_timer() -> None:
    blob, truth = generate("bulk", pause_prob=0.02)
    packets = parse_capture(blob).packets
    acked = Counter()
    last_ack: dict[tuple, int] = {}
    for _, p in packets:
        if not p.payload:
            if p.flow in last_ack:
                acked[(p.ack - last_ack[p.flow]) & MASK32] += 1
            last_ack[p.flow] = p.ack
    assert set(acked) == {1448, 2896}  # one segment (the timer) or two
    assert acked[1448] == truth.counts["delack_timer_acks"]


def test_delayed_ack_scenario_echoes_one_segment_of_two() -> None:
    """Every data segment has a new TSval; each ACK covers two segments (the timer only
    the last, lone one) and echoes the first, so one identifier of two is echoed."""
    blob, truth = generate("delayed_ack")
    packets = parse_capture(blob).packets
    data = [p for _, p in packets if p.payload]
    acks = [p for _, p in packets if not p.payload]
    odd = 0
    for flow in {p.flow for p in data}:
        tsvals = [p.tsval for p in data if p.flow == flow]
        assert all(0 < (b - a) & MASK32 < 1 << 31 for a, b in itertools.pairwise(tsvals))
        reverse = (6, flow[3], flow[4], flow[1], flow[2])
        assert sum(p.flow == reverse for p in acks) == (len(tsvals) + 1) // 2
        odd += len(tsvals) % 2
    assert truth.counts.get("delack_timer_acks", 0) == odd
    assert len(truth.samples) == len(acks)


def test_loss_duplicate_acks_and_retransmissions() -> None:
    blob, truth = generate("loss")
    packets = parse_capture(blob).packets
    first_tsval: dict[tuple, int] = {}
    retransmissions = 0
    for _, p in packets:
        if p.payload:
            key = (p.flow, p.seq)
            if key in first_tsval:
                retransmissions += 1
                assert 0 < (p.tsval - first_tsval[key]) & MASK32 < 1 << 31  # a newer TSval
            first_tsval.setdefault(key, p.tsval)
    assert retransmissions == truth.counts["retransmissions"] == truth.counts["dropped"] > 0
    sack_acks = [p for _, p in packets if not p.payload and len(p.options) == 24]
    assert len(sack_acks) == truth.counts["dupacks"] > 0
    assert all(p.options[12:16] == b"\x01\x01\x05\x0a" for p in sack_acks)


def test_reordering_is_visible() -> None:
    blob, truth = generate("reordering")
    highest: dict[tuple, int] = {}
    late = 0
    for _, p in parse_capture(blob).packets:
        if p.payload:
            top = highest.get(p.flow)
            if top is not None and 0 < (top - p.seq) & MASK32 < 1 << 31:
                late += 1
            else:
                highest[p.flow] = p.seq
    assert late == truth.counts["reordered"] > 0


def test_wraparound_wraps() -> None:
    blob, truth = generate("wraparound")
    tsvals: dict[tuple, list[int]] = defaultdict(list)
    for _, p in parse_capture(blob).packets:
        tsvals[p.flow].append(p.tsval)
    assert len(tsvals) == 2
    for values in tsvals.values():
        assert values[0] > MASK32 - 300
        assert values[-1] < 1000
        wraps = sum(1 for a, b in itertools.pairwise(values) if b < a)
        assert wraps == 1
    assert truth.counts["wrapped_directions"] == 2
    ids = [s.identifier for s in truth.data_driven_samples]
    assert max(ids) > MASK32 - 300 and min(ids) < 1000


def test_ramping_rtt() -> None:
    _, truth = generate("ramping_rtt")
    rtts = [s.rtt_ns for s in truth.data_driven_samples]
    assert {truth.min_path_rtt_ns[s.data_flow] for s in truth.data_driven_samples} == {10_000_000}
    assert 10_000_000 <= min(rtts) < 11_000_000
    assert 99_000_000 < max(rtts) < 102_000_000  # the peak: 100 ms


def test_app_limited_pure_ack_echoes() -> None:
    _, truth = generate("app_limited", requests=6)
    # a matcher that timestamped pure ACKs would report server think times
    assert sum(s.rtt_ns >= 100_000_000 for s in truth.pure_ack_echoes) >= 3
    ids = {(s.data_flow, s.identifier) for s in truth.samples}
    assert not any((s.data_flow, s.identifier) in ids for s in truth.pure_ack_echoes)
    for s in truth.data_driven_samples:  # path + at most the 40 ms delayed ACK (+ a tick)
        assert s.rtt_ns <= truth.min_path_rtt_ns[s.data_flow] + 42_000_000


def test_bidirectional_flags_echoes_of_pure_acks() -> None:
    """Pure ACK and data with one TSval: the first echo after the data may answer the
    pure ACK; truth says it is not data-driven (and it can beat the path RTT)."""
    not_driven = []
    for seed in range(3):
        _, truth = tg.bulk(seed, flows=2, packets=20_000, bidirectional=True)
        check_floor(truth)
        not_driven += [s for s in truth.samples if not s.data_driven]
    assert not_driven
    assert any(s.rtt_ns < 20_000_000 for s in not_driven)


def test_fin_and_reuse_of_the_four_tuple() -> None:
    blob, truth = generate("fin_reuse", generations=3)
    packets = parse_capture(blob).packets
    assert len({frozenset([(p.saddr, p.sport), (p.daddr, p.dport)]) for _, p in packets}) == 1
    syn_at = [t for t, p in packets if p.flags & SYN and not p.flags & ACK]
    assert len(syn_at) == 3 == truth.counts["connections"]
    assert truth.counts["fins"] == 6
    client = packets[0][1].flow
    for gen in range(1, 3):  # each new clock starts below the previous connection's
        before = [p.tsval for t, p in packets if t < syn_at[gen] and p.flow == client]
        after = next(p.tsval for t, p in packets if t >= syn_at[gen] and p.flow == client)
        assert 0 < (before[-1] - after) & MASK32 < 1 << 31
    for lo, hi in zip(syn_at, [*syn_at[1:], 1 << 62], strict=True):
        assert any(lo <= s.t_first_sent_ns < hi for s in truth.data_driven_samples)
    sampled = {(s.data_flow, s.identifier) for s in truth.data_driven_samples}
    fins = [p for _, p in packets if p.flags & FIN]
    assert len(fins) == 6 and all((p.flow, p.tsval) in sampled for p in fins)


def test_handshake_and_rst() -> None:
    blob, truth = generate("handshake_rst")
    packets = parse_capture(blob).packets
    syns = [(t, p) for t, p in packets if p.flags & SYN and not p.flags & ACK]
    assert len(syns) == 3
    by_sent = {(s.data_flow, s.t_first_sent_ns): s for s in truth.samples}
    for t, p in syns:  # the SYN-ACK echoes the SYN: a sample of the handshake
        sample = by_sent[(p.flow, t)]
        assert sample.identifier == p.tsval and sample.data_driven
    synacks = [(t, p) for t, p in packets if p.flags & SYN and p.flags & ACK]
    assert all((p.flow, t) in by_sent for t, p in synacks)  # echoed by the third ACK
    rsts = [(t, p) for t, p in packets if p.flags & RST]
    assert len(rsts) == truth.counts["rsts"] == 2
    for t, p in rsts:  # the aborting end sends nothing more
        assert not any(u > t and q.flow == p.flow for u, q in packets)


def test_icmp_echo() -> None:
    blob, truth = generate("icmp_echo", start_seq=65_530)
    packets = parse_capture(blob).packets
    requests = [p for _, p in packets if p.flags == 8]
    assert len(requests) == truth.counts["requests"] == 80
    assert len(truth.samples) == truth.counts["replies"] == len(packets) - len(requests)
    assert truth.counts["unanswered"] == 80 - len(truth.samples) > 0
    assert {s.identifier for s in truth.samples} & {0, 65_535}  # sequences wrap
    assert not truth.pure_ack_echoes


def test_malformed_kinds() -> None:
    blob, truth = generate("malformed", count=60)
    parsed = check_consistent(blob, truth)
    assert set(truth.malformed) == set(tg.MALFORMED_KINDS)
    assert all(n == 10 for n in truth.malformed.values())
    assert truth.counts["malformed"] == 60
    # the skip reasons the parser gives cover every kind of damage
    assert {"short TCP header", "bad TCP header length", "bad IPv4 header", "later fragment",
            "no timestamp option"} <= set(parsed.skipped)  # fmt: skip


def test_many_flows() -> None:
    blob, truth = generate("many_flows", flows=300, packets=9_000)
    packets = parse_capture(blob).packets
    tuples = {frozenset([(p.saddr, p.sport), (p.daddr, p.dport)]) for _, p in packets}
    assert len(tuples) == 300 == truth.counts["flows"]
    floors = [truth.min_path_rtt_ns[s.data_flow] for s in truth.data_driven_samples]
    assert min(floors) < 30_000_000 and max(floors) > 250_000_000


def test_generation_speed() -> None:
    started = time.process_time()
    _, truth = tg.bulk(1, packets=100_000, snaplen=128)
    assert truth.packets >= 100_000
    assert time.process_time() - started < 5.0


@pytest.mark.slow
def test_million_packet_bulk_is_quick() -> None:
    started = time.perf_counter()
    _, truth = tg.bulk(1, packets=1_000_000, snaplen=128)
    assert truth.packets >= 1_000_000
    assert time.perf_counter() - started < 60.0
