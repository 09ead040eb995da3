"""Per-prefix aggregation (-a): traffic and RTTs summed per IP prefix and interval.

Instead of one line per RTT, every `interval` the aggregator reports, for every IPv4
/24 and IPv6 /48 (by default) that saw traffic: the packets and bytes received from it
(`rx`: packets whose source is in the prefix) and sent to it (`tx`: whose destination
is), each split into TCP with timestamps, TCP without, and other traffic; and the RTTs
of replies sent by hosts of the prefix (or, with `by_destination`, addressed to them)
as min, max and a histogram of 4 ms bins. docs/aggregation.md has the rules, taken
from ePPing; this module is their reference implementation.

It is sans-IO like the engine: `add_traffic` takes the packets of a batch as numpy
columns (`decode_traffic` builds them from a capture batch), `add_rtt` takes the RTT
events the engine produced for them, `report(now)` closes an interval. The prefix
tables are bounded and double-buffered exactly as the kernel's maps are: two copies,
one filled while the other is reported and cleared, each with a backup entry that
catches the traffic of new prefixes once it is full.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .config import AGGREGATE_BIN_WIDTH_NS, AGGREGATE_BINS, AggregateConfig, Config
from .engine import Engine
from .events import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    AggregateEvent,
    AggregateHeader,
    Event,
    RttEvent,
    TrafficCounts,
)
from .fastpath import (
    IPV6_EXTENSIONS,
    LINK_HEADER,
    TCP_USUAL,
    FastReplay,
    _field,
    _Fields,
    _l3_offsets,
    decode,
)
from .packet import TCP_SYN, PacketInfo, parse_packet
from .sources.pcap import CaptureReader

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
BOOL = npt.NDArray[np.bool_]

# Traffic classes, in the order of TrafficCounts' fields.
TCP_TS = 0
TCP_NOTS = 1
OTHER = 2
N_CLASSES = 3

BACKUP = -1  # the key of the backup entry of a table (reported as 0.0.0.0/0 or ::/0)
_IPV4_MAPPED = b"\x00" * 10 + b"\xff\xff"


@dataclass(slots=True)
class Traffic:
    """One row per packet of a batch; `counted`: an IPv4 or IPv6 packet whose IP header
    is valid, the only ones aggregated.

    `src`/`dst` hold what a prefix is cut from: the 32-bit IPv4 address, or the upper
    64 bits of the IPv6 address; `src_v6`/`dst_v6` say which (an IPv4-mapped IPv6
    address is an IPv4 one, as the kernel program sees it). `creates`: the packet
    enters the RTT pipeline (parsed and tracked), the only packets that may add a
    prefix to a table.
    """

    times: I64
    counted: BOOL
    src_v6: BOOL
    dst_v6: BOOL
    src: U64
    dst: U64
    length: I64
    cls: npt.NDArray[np.int8]
    creates: BOOL

    def part(self, rows: slice | I64) -> Traffic:
        return Traffic(
            self.times[rows],
            self.counted[rows],
            self.src_v6[rows],
            self.dst_v6[rows],
            self.src[rows],
            self.dst[rows],
            self.length[rows],
            self.cls[rows],
            self.creates[rows],
        )


def _tracked(info: PacketInfo, config: Config) -> bool:
    """engine.Engine._tracked without its counting: does the packet reach the pipeline?"""
    if info.proto == IPPROTO_TCP:
        return config.track_tcp and (config.include_syn or not info.tcp_flags & TCP_SYN)
    return config.track_icmp


def _parsed_rows(
    linktype: int, buf: bytes, offsets: I64, caplens: I64, wire_lens: I64, rows: I64
) -> list[PacketInfo | None]:
    """The parser's verdict for the few rows numpy cannot settle (scalar, one by one)."""
    infos: list[PacketInfo | None] = []
    for start, caplen, wire_len in zip(
        offsets[rows].tolist(), caplens[rows].tolist(), wire_lens[rows].tolist(), strict=True
    ):
        parsed = parse_packet(linktype, buf[start : start + caplen], wire_len)
        infos.append(None if isinstance(parsed, str) else parsed)
    return infos


def decode_traffic(
    linktype: int,
    buf: bytes,
    offsets: I64,
    caplens: I64,
    wire_lens: I64,
    times: I64,
    config: Config,
) -> Traffic:
    """The Traffic rows of a capture batch (docs/aggregation.md, "What is counted").

    Vectorised for the link types the fast path decodes; the parser itself decides
    only for TCP packets without a timestamp option at its usual place, ICMP, IPv6
    packets with extension headers, and packets whose IP header numpy does not find
    (these count only if the parser accepts them).
    """
    if linktype not in LINK_HEADER:
        return _traffic_by_parser(linktype, buf, offsets, caplens, wire_lens, times, config)
    t, proto, version = _ip_headers(linktype, buf, offsets, caplens, wire_lens, times)
    dec = decode(linktype, buf, offsets, caplens)
    usual = dec.cls == TCP_USUAL  # TCP with its timestamp option where Linux puts it
    tcp_ts = usual.copy()
    t.creates = usual & config.track_tcp
    if not config.include_syn:
        t.creates &= (dec.flags & TCP_SYN) == 0
    unsettled = (
        t.counted
        & ~usual
        & (
            (proto == IPPROTO_TCP)
            | (proto == IPPROTO_ICMP)
            | (proto == IPPROTO_ICMPV6)
            | ((version == 6) & np.isin(proto, IPV6_EXTENSIONS))
        )
    )
    parse = functools.partial(_parsed_rows, linktype, buf, offsets, caplens, wire_lens)
    rows = np.flatnonzero(unsettled)
    for row, info in zip(rows.tolist(), parse(rows), strict=True):
        if info is not None:
            tcp_ts[row] = info.proto == IPPROTO_TCP
            t.creates[row] = _tracked(info, config)
    # Where numpy finds no IP header (MPLS, PPPoE, not IP...), the parser has the last
    # word: a packet it accepts counts, with its addresses.
    rows = np.flatnonzero(version == 0)
    for row, info in zip(rows.tolist(), parse(rows), strict=True):
        if info is not None:
            t.counted[row] = True
            t.src_v6[row], t.src[row] = _address_key(info.saddr)
            t.dst_v6[row], t.dst[row] = _address_key(info.daddr)
            proto[row] = info.proto
            tcp_ts[row] = info.proto == IPPROTO_TCP
            t.creates[row] = _tracked(info, config)
    cls = np.where(tcp_ts, TCP_TS, np.where(proto == IPPROTO_TCP, TCP_NOTS, OTHER))
    t.cls = cls.astype(np.int8)
    t.creates &= t.counted
    return t


def _ip_headers(
    linktype: int, buf: bytes, offsets: I64, caplens: I64, wire_lens: I64, times: I64
) -> tuple[Traffic, I64, I64]:
    """Traffic rows from the IP headers alone (class and `creates` still to be set),
    the protocol of the fixed IP header, and the IP version the link layer gives
    (0: numpy finds no IP header)."""
    f = _Fields(buf)
    l3, version = _l3_offsets(linktype, f, offsets)
    ip = offsets + l3
    ip0, ip8, ip16 = f.quad(ip), f.quad(ip + 8), f.quad(ip + 16)
    first = _field(ip0, 0, 1)
    ihl = (first & 15) * 4
    v4 = (version == 4) & ((first >> 4) == 4) & (caplens >= l3 + 20)
    v4 &= (ihl >= 20) & (_field(ip0, 2, 2) >= ihl)
    v6 = (version == 6) & ((first >> 4) == 6) & (caplens >= l3 + 40) & (_field(ip0, 4, 2) > 0)
    proto = np.where(v4, _field(ip8, 1, 1), _field(ip0, 6, 1))
    dst_hi, dst_lo = f.quad(ip + 24), f.quad(ip + 32)
    src_v6 = v6 & ~_mapped(ip8, ip16)
    dst_v6 = v6 & ~_mapped(dst_hi, dst_lo)
    low = np.uint64(0xFFFFFFFF)
    src = np.where(v4, _field(ip8, 4, 4).astype(np.uint64), np.where(src_v6, ip8, ip16 & low))
    dst = np.where(v4, _field(ip16, 0, 4).astype(np.uint64), np.where(dst_v6, dst_hi, dst_lo & low))
    n = len(offsets)
    traffic = Traffic(
        times=times,
        counted=v4 | v6,
        src_v6=src_v6,
        dst_v6=dst_v6,
        src=src,
        dst=dst,
        length=wire_lens.astype(np.int64),
        cls=np.full(n, OTHER, dtype=np.int8),
        creates=np.zeros(n, dtype=bool),
    )
    return traffic, proto, version


def _mapped(hi: U64, lo: U64) -> BOOL:
    """Is the IPv6 address (two 64-bit halves) IPv4-mapped (::ffff:a.b.c.d)?"""
    mapped: BOOL = (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
    return mapped


def _traffic_by_parser(
    linktype: int,
    buf: bytes,
    offsets: I64,
    caplens: I64,
    wire_lens: I64,
    times: I64,
    config: Config,
) -> Traffic:
    """Link types numpy does not decode: only the packets the parser accepts count."""
    infos = _parsed_rows(linktype, buf, offsets, caplens, wire_lens, np.arange(len(offsets)))
    n = len(infos)
    counted = np.zeros(n, dtype=bool)
    src_v6 = np.zeros(n, dtype=bool)
    dst_v6 = np.zeros(n, dtype=bool)
    src = np.zeros(n, dtype=np.uint64)
    dst = np.zeros(n, dtype=np.uint64)
    cls = np.full(n, OTHER, dtype=np.int8)
    creates = np.zeros(n, dtype=bool)
    for row, info in enumerate(infos):
        if info is None:
            continue
        counted[row] = True
        src_v6[row], src[row] = _address_key(info.saddr)
        dst_v6[row], dst[row] = _address_key(info.daddr)
        cls[row] = TCP_TS if info.proto == IPPROTO_TCP else OTHER
        creates[row] = _tracked(info, config)
    return Traffic(
        times, counted, src_v6, dst_v6, src, dst, wire_lens.astype(np.int64), cls, creates
    )


def _address_key(address: bytes) -> tuple[bool, int]:
    """(IPv6?, what a prefix is cut from: the IPv4 address or the upper half of the
    IPv6 one) of a 16-byte address."""
    if address[:12] == _IPV4_MAPPED:
        return False, int.from_bytes(address[12:], "big")
    return True, int.from_bytes(address[:8], "big")


def _interleave(first: npt.NDArray[Any], second: npt.NDArray[Any]) -> npt.NDArray[Any]:
    both = np.empty(2 * len(first), dtype=first.dtype)
    both[0::2] = first
    both[1::2] = second
    return both


@dataclass(slots=True)
class _Lookups:
    """Prefix lookups in packet order: key, family, may create, time, the column of the
    entry's counts (rx or tx, by class), bytes."""

    keys: U64
    v6: BOOL
    creates: BOOL
    times: I64
    column: I64
    length: I64

    def part(self, rows: I64) -> _Lookups:
        return _Lookups(
            self.keys[rows], self.v6[rows], self.creates[rows], self.times[rows],
            self.column[rows], self.length[rows],
        )  # fmt: skip


class Entry:
    """The statistics of one prefix in one table copy."""

    __slots__ = ("bins", "counts", "last_updated", "rtt_max", "rtt_min")

    def __init__(self) -> None:
        self.counts = np.zeros(4 * N_CLASSES, dtype=np.int64)  # rx pkts, rx bytes, tx ...
        self.bins = np.zeros(AGGREGATE_BINS, dtype=np.int64)
        self.rtt_min = 0
        self.rtt_max = 0
        self.last_updated = 0

    def empty(self) -> bool:
        return not self.counts.any()

    def clear(self) -> None:
        """Forget the reported figures; `last_updated` stays for the idle timeout."""
        self.counts[:] = 0
        self.bins[:] = 0
        self.rtt_min = self.rtt_max = 0

    def add_rtt(self, rtt: int) -> None:
        if not self.bins.any() or rtt < self.rtt_min:
            self.rtt_min = rtt
        self.rtt_max = max(self.rtt_max, rtt)
        self.bins[min(rtt // AGGREGATE_BIN_WIDTH_NS, AGGREGATE_BINS - 1)] += 1

    def traffic(self, offset: int) -> TrafficCounts:
        c = self.counts.tolist()
        return TrafficCounts(
            c[offset], c[offset + 3], c[offset + 1], c[offset + 4], c[offset + 2], c[offset + 5]
        )


class IntervalClock:
    """When intervals end, in capture time: on a grid of `interval` from the first
    packet; after a gap longer than an interval, one report at the first boundary it
    passed, and the grid goes on from there."""

    def __init__(self, interval_ns: int) -> None:
        self.interval_ns = interval_ns
        self.next_due: int | None = None

    def due(self, now: int) -> int | None:
        """The boundary to report before a packet at `now`, if one has passed."""
        if self.next_due is None:
            self.next_due = now + self.interval_ns
            return None
        if now < self.next_due:
            return None
        due = self.next_due
        self.next_due = due + ((now - due) // self.interval_ns + 1) * self.interval_ns
        return due

    def points(self, times: I64) -> list[tuple[int, int]]:
        """`due` for each of `times` in turn: (row, boundary) where one is reported."""
        points: list[tuple[int, int]] = []
        if len(times) == 0:
            return points
        start = 0
        if self.next_due is None:
            self.next_due = int(times[0]) + self.interval_ns
            start = 1
        while True:
            late = np.flatnonzero(times[start:] >= self.next_due)
            if late.size == 0:
                return points
            row = start + int(late[0])
            due = self.due(int(times[row]))
            assert due is not None
            points.append((row, due))
            start = row + 1


class Aggregator:
    """The prefix tables of both families, double-buffered; see the module doc."""

    def __init__(self, config: AggregateConfig) -> None:
        self.config = config
        self.prefix_len = (config.ipv4_prefix_len, config.ipv6_prefix_len)
        self.masks = (
            (0xFFFFFFFF << (32 - config.ipv4_prefix_len)) & 0xFFFFFFFF,
            ((1 << 64) - 1 << (64 - config.ipv6_prefix_len)) & ((1 << 64) - 1),
        )
        # copies[instance][family]: prefix key -> entry. The backup entry is there from
        # the start and takes one of the max_prefixes places (as ePPing's).
        self.copies: list[list[dict[int, Entry]]] = [
            [self._fresh_table(family) for family in (0, 1)] for _ in (0, 1)
        ]
        self.active = 0
        self.clock = IntervalClock(config.interval_ns)

    def _fresh_table(self, family: int) -> dict[int, Entry]:
        return {BACKUP: Entry()} if self.prefix_len[family] > 0 else {}

    def header(self, now: int) -> AggregateHeader:
        c = self.config
        return AggregateHeader(
            now,
            AGGREGATE_BINS,
            AGGREGATE_BIN_WIDTH_NS,
            c.interval_ns,
            c.timeout_ns,
            c.ipv4_prefix_len,
            c.ipv6_prefix_len,
        )

    # -- the interval clock (capture time) --------------------------------------

    def report_points(self, times: I64) -> list[tuple[int, int]]:
        """(row, boundary) pairs: before `row` the interval ending at `boundary` is
        reported (see IntervalClock)."""
        return self.clock.points(times)

    # -- accounting ---------------------------------------------------------------

    def add_traffic(self, traffic: Traffic) -> None:
        """Count the rows (in order, all within the current interval)."""
        rows = np.flatnonzero(traffic.counted)
        if rows.size == 0:
            return
        t = traffic.part(rows)
        # Each packet looks up its source prefix (rx), then its destination prefix (tx).
        lookups = _Lookups(
            keys=_interleave(t.src, t.dst),
            v6=_interleave(t.src_v6, t.dst_v6),
            creates=np.repeat(t.creates, 2),
            times=np.repeat(t.times, 2),
            column=_interleave(t.cls.astype(np.int64), t.cls.astype(np.int64) + 2 * N_CLASSES),
            length=np.repeat(t.length, 2),
        )
        for family in (0, 1):
            chosen = np.flatnonzero(lookups.v6 == bool(family))
            if chosen.size:
                self._add_family(family, lookups.part(chosen))

    def _add_family(self, family: int, lookups: _Lookups) -> None:
        table = self.copies[self.active][family]
        n = len(lookups.keys)
        prefixes, inverse = np.unique(
            lookups.keys & np.uint64(self.masks[family]), return_inverse=True
        )
        inverse = inverse.reshape(-1)
        known = np.array([int(k) in table for k in prefixes.tolist()], dtype=bool)
        # New prefixes get a place in the order they are first met by a packet that may
        # create one, while places are free; the others fall to the backup entry.
        created_at = np.full(len(prefixes), n, dtype=np.int64)
        creating = np.flatnonzero(lookups.creates)
        if creating.size:
            first_ids, first = np.unique(inverse[creating], return_index=True)
            order = np.argsort(creating[first], kind="stable")
            free = self.config.max_prefixes - len(table)
            for index, position in zip(
                first_ids[order].tolist(), creating[first][order].tolist(), strict=True
            ):
                if free <= 0:
                    break
                if not known[index]:
                    created_at[index] = position
                    free -= 1
        found = known[inverse] | (created_at[inverse] <= np.arange(n))
        slot = np.where(found, inverse, len(prefixes))  # len(prefixes): the backup entry
        sums = np.zeros((len(prefixes) + 1, 4 * N_CLASSES), dtype=np.int64)
        np.add.at(sums, (slot, lookups.column), 1)
        np.add.at(sums, (slot, lookups.column + N_CLASSES), lookups.length)
        # Capture times beyond int64 come as Python ints (object arrays).
        latest = np.zeros(len(prefixes) + 1, dtype=lookups.times.dtype)
        np.maximum.at(latest, slot, lookups.times)
        for s in np.flatnonzero(sums.any(axis=1)).tolist():
            key = BACKUP if s == len(prefixes) else int(prefixes[s])
            entry = table.get(key)
            if entry is None:
                if key == BACKUP:
                    continue  # prefix length 0: no backup entry, the packets are lost
                entry = table[key] = Entry()  # a created prefix
            entry.counts += sums[s]
            entry.last_updated = max(entry.last_updated, int(latest[s]))

    def add_rtt(self, event: RttEvent) -> None:
        """An RTT of the reply `event.flow`: to its source's prefix (or destination's)."""
        address = event.flow.daddr if self.config.by_destination else event.flow.saddr
        is_v6, raw = _address_key(address)
        family = int(is_v6)
        table = self.copies[self.active][family]
        entry = table.get(raw & self.masks[family]) or table.get(BACKUP)
        if entry is not None:
            entry.add_rtt(event.rtt)

    # -- reporting ------------------------------------------------------------------

    def report(self, now: int) -> list[AggregateEvent]:
        """Close the interval at `now`: switch copies, report and clear the filled one,
        dropping prefixes idle for longer than the timeout."""
        filled = self.active
        self.active ^= 1
        return [
            event
            for family in (0, 1)
            for event in report_table(self.config, family, self.copies[filled][family], now)
        ]


def report_table(
    config: AggregateConfig, family: int, table: dict[int, Entry], now: int
) -> list[AggregateEvent]:
    """Report a filled table copy at `now` and prepare it for its next turn: the
    prefixes with traffic are reported, then cleared, or removed if idle for longer than
    the timeout (as are idle prefixes without traffic). The backup entry stays."""
    prefix_len = (config.ipv4_prefix_len, config.ipv6_prefix_len)[family]
    events: list[AggregateEvent] = []
    for key in sorted(table):
        entry = table[key]
        expired = (
            key != BACKUP
            and prefix_len > 0
            and config.timeout_ns > 0
            and now - entry.last_updated > config.timeout_ns
        )
        if not entry.empty():
            events.append(_event(now, prefix_text(key, family, prefix_len), entry))
            if not expired:
                entry.clear()
        if expired:
            del table[key]
    return events


def _event(now: int, prefix: str, entry: Entry) -> AggregateEvent:
    count = int(entry.bins.sum())
    used = min(entry.rtt_max // AGGREGATE_BIN_WIDTH_NS + 1, AGGREGATE_BINS) if count else 0
    return AggregateEvent(
        timestamp=now,
        prefix=prefix,
        rx=entry.traffic(0),
        tx=entry.traffic(2 * N_CLASSES),
        rtt_min=entry.rtt_min,
        rtt_max=entry.rtt_max,
        histogram=tuple(entry.bins[:used].tolist()),
        bin_width=AGGREGATE_BIN_WIDTH_NS,
    )


def prefix_text(key: int, family: int, prefix_len: int) -> str:
    if key == BACKUP:
        return "0.0.0.0/0" if family == 0 else "::/0"
    if family == 0:
        return f"{ipaddress.IPv4Address(key)}/{prefix_len}"
    return f"{ipaddress.IPv6Address(key << 64)}/{prefix_len}"


def aggregated_replay(
    engine: Engine,
    reader: CaptureReader,
    aggregator: Aggregator,
    merge_interfaces: bool = False,
) -> Generator[Event, None, None]:
    """fastpath.fast_replay with -a: flow and map-full events pass, RTT events go into
    the aggregates, and a report closes every interval (the last, partial one at the
    time of the last packet)."""
    fast = FastReplay(engine, merge_interfaces)
    header_sent = False
    last_time: int | None = None
    for batch in reader.iter_batches():
        times = batch.timestamps_ns
        if len(times) == 0:
            continue
        if not header_sent:
            header_sent = True
            yield aggregator.header(int(times[0]))
        traffic = decode_traffic(
            batch.linktype, batch.buffer, batch.offsets, batch.caplens, batch.wire_lens,
            times, engine.config,
        )  # fmt: skip
        points = aggregator.report_points(times)
        bounds = [0, *(row for row, _ in points), len(times)]
        dues: list[int | None] = [None, *(due for _, due in points)]
        for (begin, end), due in zip(itertools.pairwise(bounds), dues, strict=True):
            if due is not None:
                yield from aggregator.report(due)
            if begin == end:
                continue
            part = slice(begin, end)
            aggregator.add_traffic(traffic.part(part))
            columns = (
                batch.buffer, batch.offsets[part], batch.caplens[part], batch.wire_lens[part],
                times[part],
            )  # fmt: skip
            if times.dtype == np.int64:
                events = fast.run_batch(batch.linktype, batch.interface, *columns)
            else:  # times beyond the year 2262: exact ints, the slow way (as fast_replay)
                link = 0 if merge_interfaces else batch.interface
                events = fast._slow(batch.linktype, link, *columns)
            yield from _absorb(aggregator, events)
        last_time = int(times[-1])
    if last_time is not None:
        yield from aggregator.report(last_time)


def _absorb(aggregator: Aggregator, events: Iterator[Event]) -> Iterator[Event]:
    for event in events:
        if type(event) is RttEvent:
            aggregator.add_rtt(event)
        else:
            yield event
