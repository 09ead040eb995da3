"""Fast capture replay: numpy finds the packets that can change nothing but counters.

In a bulk TCP transfer most packets repeat the identifiers of the packet before them in
the same direction (hundreds of segments share one TSval, every ACK echoes the same
TSecr until the next tick). Such a packet cannot be timestamped (its identifier is not
newer) and cannot match (the entry it would find was consumed or never existed), so
the engine's only work for it is to add to four counters. This module proves that
property for whole batches of packets with vectorised numpy code, gives the engine
only the other packets, one by one, in capture order, and adds the counters of the
skipped ones in bulk before anything can read them. The events are exactly those of
`replay.replay` (a parity test checks this on every test capture).

A packet i of direction X is a *repeat* when all of these hold:
- it was decoded here as TCP with a timestamp option at one of the two usual places,
  with no SYN, FIN or RST;
- the previous packet j of X in this batch is in the same *segment* (no clean-up and
  no packet this module could not classify between them), with no SYN, FIN, RST or
  unusual TCP packet of the same flow between them;
- i and j carry the same TSval, TSecr, ACK flag and the same "could be timestamped"
  flag (payload, SYN or FIN);
- i is not *possibly new*: a packet whose TSval differs from the previous packet of X
  that could be timestamped (or which is the first such packet) might be timestamped;
- no possibly-new packet of the same flow lies between j and i (it might create the
  entry i's TSecr would match, or start the reverse direction, which i would open).
Everything else (including ICMP, and any packet this module cannot decode) goes to the
engine, whose own parser decides.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .engine import Engine, FlowKey
from .events import IPPROTO_TCP, Event, EventReason, FlowEventType
from .packet import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, PacketInfo, parse_packet
from .replay import CleanupClock
from .sources.pcap import CaptureReader

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
BOOL = npt.NDArray[np.bool_]

# Parts of a batch shorter than this go to the engine one by one: planning has a fixed
# cost of a few dozen numpy calls.
SMALL_PART = 64

# Packet classes.
UNKNOWN = 0  # not understood here: may touch any flow, so it ends a segment
OTHER = 1  # valid IP, not TCP: touches no TCP flow
TCP_UNUSUAL = 2  # TCP whose flow is known but whose timestamp is not at a usual place
TCP_USUAL = 3  # TCP with the timestamp option decoded here

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
IPV6_EXTENSIONS = (0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254)

LINK_HEADER = {1: None, 113: 16, 276: 20, 101: 0, 228: 0, 229: 0, 0: 4}


@dataclass(slots=True)
class Decoded:
    """Columns of the header fields of one batch (one row per packet).

    Addresses are two 64-bit halves of the 16-byte form (IPv4-mapped for IPv4).
    """

    cls: npt.NDArray[np.int8]
    src_hi: U64
    src_lo: U64
    dst_hi: U64
    dst_lo: U64
    sport: I64
    dport: I64
    flags: I64
    tsval: I64
    tsecr: I64
    payload: I64

    def part(self, rows: slice) -> Decoded:
        """The columns of a run of consecutive rows (views, no copies)."""
        return Decoded(*(getattr(self, name)[rows] for name in COLUMNS))

    def direction_keys(self, rows: I64, link: int) -> list[FlowKey]:
        """The engine's keys of the directions of the packets in `rows`."""
        return list(
            zip(
                itertools.repeat(link), itertools.repeat(IPPROTO_TCP),
                _addresses(self.src_hi[rows], self.src_lo[rows]), self.sport[rows].tolist(),
                _addresses(self.dst_hi[rows], self.dst_lo[rows]), self.dport[rows].tolist(),
            )
        )  # fmt: skip


@functools.lru_cache(maxsize=1 << 16)
def _address_bytes(hi: int, lo: int) -> bytes:
    return hi.to_bytes(8, "big") + lo.to_bytes(8, "big")


@functools.lru_cache(maxsize=1 << 16)
def _low_address_bytes(lo: int) -> bytes:
    return _address_bytes(0, lo)


def _addresses(hi: U64, lo: U64) -> Iterator[bytes]:
    """The 16-byte addresses of these halves, through a cache (few distinct ones). With
    no high half (IPv4 only), the cache of one argument: it hashes the int itself, no
    tuple of two."""
    if not hi.any():
        return map(_low_address_bytes, lo.tolist())
    return map(_address_bytes, hi.tolist(), lo.tolist())


COLUMNS = ("cls", "src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport", "flags", "tsval",
           "tsecr", "payload")  # fmt: skip


class _Fields:
    """Big-endian fields at arbitrary byte positions of a buffer, gathered per column.

    One view of 64-bit words with a stride of one byte makes a read at any offset one
    fancy-indexing operation. Gathers are the cost here (random memory reads), so each
    read serves several neighbouring fields. Reads near the end of the buffer are
    clamped: they can only concern bytes past a packet's captured length, which the
    callers reject by that length anyway.
    """

    def __init__(self, buf: bytes) -> None:
        self.limit = max(len(buf) - 8, 0)
        data = buf if len(buf) >= 8 else buf + bytes(8 - len(buf))
        self.le64 = np.ndarray(shape=(len(data) - 7,), dtype="<u8", buffer=data, strides=(1,))

    def quad(self, pos: I64) -> U64:
        return self.le64[np.minimum(pos, self.limit)].byteswap()

    def short(self, pos: I64) -> I64:
        return (self.quad(pos) >> np.uint64(48)).astype(np.int64)

    def word(self, pos: I64) -> I64:
        return (self.quad(pos) >> np.uint64(32)).astype(np.int64)


def _is_vlan(ethertype: I64) -> BOOL:
    tagged: BOOL = (ethertype == 0x8100) | (ethertype == 0x88A8) | (ethertype == 0x9100)
    return tagged


def _ip_version(ethertype: I64) -> I64:
    return np.where(ethertype == ETH_IPV4, 4, np.where(ethertype == ETH_IPV6, 6, 0))


def _field(quad: U64, offset: int, size: int) -> I64:
    """The big-endian field of `size` bytes at `offset` within 64-bit reads."""
    shift = np.uint64(64 - 8 * (offset + size))
    return ((quad >> shift) & np.uint64((1 << (8 * size)) - 1)).astype(np.int64)


def _l3_offsets(linktype: int, f: _Fields, base: I64) -> tuple[I64, I64]:
    """(offset of the IP header from the packet start, IP version, or 0: not IP / unsure)."""
    n = len(base)
    if linktype == 1:
        # One read covers the ethertype and, behind a first VLAN tag, the next one.
        head = f.quad(base + 12)
        outer = (head >> np.uint64(48)).astype(np.int64)
        inner = ((head >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.int64)
        one_tag = _is_vlan(outer)
        two_tags = one_tag & _is_vlan(inner)
        ethertype = np.where(one_tag, inner, outer)
        pos = np.where(one_tag, 16, 12)
        if two_tags.any():
            at = np.flatnonzero(two_tags)
            ethertype[at] = f.short(base[at] + 20)
            pos[at] = 20
        ethertype = np.where(_is_vlan(ethertype), 0, ethertype)  # a third tag: not ours
        return pos + 2, _ip_version(ethertype)
    if linktype in (113, 276):
        ethertype = f.short(base + (14 if linktype == 113 else 0))
        version = _ip_version(ethertype)
        return np.full(n, LINK_HEADER[linktype] or 0, dtype=np.int64), version
    start = LINK_HEADER[linktype] or 0
    l3 = np.full(n, start, dtype=np.int64)
    nibble = f.short(base + start) >> 12
    version = np.where((nibble == 4) | (nibble == 6), nibble, 0)
    if linktype == 228:
        version = np.where(nibble == 4, 4, 0)
    elif linktype == 229:
        version = np.where(nibble == 6, 6, 0)
    elif linktype == 0:
        # DLT_NULL's family word is in the writer's byte order: accept a family that
        # agrees with the IP version in either order, as the engine's parser does.
        word = f.word(base)
        family = np.where(word < 256, word, np.where(word & 0xFFFFFF == 0, word >> 24, -1))
        version = np.where(
            (family == 2) & (nibble == 4),
            4,
            np.where(np.isin(family, (10, 24, 28, 30)) & (nibble == 6), 6, 0),
        )
    return l3, version


def decode(linktype: int, buf: bytes, offsets: I64, caplens: I64) -> Decoded:
    """Vectorised header decoding of one batch; rows it cannot vouch for are UNKNOWN."""
    n = len(offsets)
    f = _Fields(buf)
    base = offsets
    l3, version = _l3_offsets(linktype, f, base)
    ip = base + l3
    ip0, ip8, ip16 = f.quad(ip), f.quad(ip + 8), f.quad(ip + 16)
    first = _field(ip0, 0, 1)
    v4 = (version == 4) & ((first >> 4) == 4) & (caplens >= l3 + 20)
    v6 = (version == 6) & ((first >> 4) == 6) & (caplens >= l3 + 40)
    ihl = (first & 15) * 4
    total = _field(ip0, 2, 2)
    v4 &= (ihl >= 20) & (total >= ihl) & ((_field(ip0, 6, 2) & 0x1FFF) == 0)
    v6_plen = _field(ip0, 4, 2)
    v6 &= v6_plen > 0
    proto = np.where(v4, _field(ip8, 1, 1), np.where(v6, _field(ip0, 6, 1), -1))
    l4 = np.where(v4, l3 + ihl, l3 + 40)
    ip_payload = np.where(v4, total - ihl, v6_plen)

    cls = np.full(n, UNKNOWN, dtype=np.int8)
    # IPv6 extension headers (and anything odd) stay UNKNOWN; other protocols cannot
    # touch a TCP flow.
    cls[(v4 | v6) & (proto != IPPROTO_TCP) & ~np.isin(proto, IPV6_EXTENSIONS)] = OTHER
    tcp = (v4 | v6) & (proto == IPPROTO_TCP) & (l4 + 20 <= caplens)
    th = base + l4
    tcp0, tcp8, opt = f.quad(th), f.quad(th + 8), f.quad(th + 20)
    doff = (_field(tcp8, 4, 1) >> 4) * 4
    tcp &= doff >= 20
    cls[tcp] = TCP_UNUSUAL
    head = _field(opt, 0, 4)
    nop_nop_ts = head == 0x0101080A
    ts_first = (head >> 16) == 0x080A
    ts_at = np.where(nop_nop_ts, 24, 22)  # from the start of the TCP header
    timestamps = f.quad(th + ts_at)  # TSval, then TSecr
    usual = tcp & (nop_nop_ts | ts_first) & (ts_at + 8 <= doff) & (l4 + ts_at + 8 <= caplens)
    cls[usual] = TCP_USUAL

    mapped = np.uint64(0xFFFF00000000)
    src_lo = mapped | _field(ip8, 4, 4).astype(np.uint64)
    dst_lo = mapped | _field(ip16, 0, 4).astype(np.uint64)
    src_hi = np.zeros(n, dtype=np.uint64)
    dst_hi = src_hi
    if v6.any():  # the IPv6 addresses, read only when there are some
        src_hi = np.where(v4, src_hi, ip8)
        src_lo = np.where(v4, src_lo, ip16)
        dst_hi = np.where(v4, dst_hi, f.quad(np.where(v4, 0, ip + 24)))
        dst_lo = np.where(v4, dst_lo, f.quad(np.where(v4, 0, ip + 32)))
    return Decoded(
        cls=cls,
        src_hi=src_hi,
        src_lo=src_lo,
        dst_hi=dst_hi,
        dst_lo=dst_lo,
        sport=_field(tcp0, 0, 2),
        dport=_field(tcp0, 2, 2),
        flags=_field(tcp8, 5, 1),
        tsval=_field(timestamps, 0, 4),
        tsecr=_field(timestamps, 4, 4),
        payload=np.maximum(ip_payload - doff, 0),
    )


def _ranks(values: npt.NDArray[Any]) -> I64:
    """Dense ids (0, 1, ...) of the distinct values, in sorted order."""
    inverse: I64 = np.unique(values, return_inverse=True)[1].reshape(-1).astype(np.int64)
    return inverse


def _endpoint_ids(dec: Decoded, rows: I64) -> tuple[I64, I64, int] | None:
    """Ids of the (address, port) source and destination endpoints of `rows`, equal
    exactly when the endpoints are, and a bound of the ids; None if not IPv4 only."""
    src_lo, dst_lo = dec.src_lo[rows], dec.dst_lo[rows]
    mapped = np.uint64(0xFFFF00000000)
    if dec.src_hi[rows].any() or dec.dst_hi[rows].any():
        return None
    if not (np.all(src_lo & ~np.uint64(0xFFFFFFFF) == mapped)
            and np.all(dst_lo & ~np.uint64(0xFFFFFFFF) == mapped)):  # fmt: skip
        return None
    # IPv4 only: address and port fit one integer.
    low = np.uint64(0xFFFFFFFF)
    src = ((src_lo & low).astype(np.int64) << 16) | dec.sport[rows]
    dst = ((dst_lo & low).astype(np.int64) << 16) | dec.dport[rows]
    return src, dst, 1 << 48


def _dense_endpoint_ids(dec: Decoded, rows: I64) -> tuple[I64, I64, int]:
    """Dense ids (0, 1, ...) of the source and destination endpoints of `rows`."""
    m = len(rows)
    lo = np.concatenate([dec.src_lo[rows], dec.dst_lo[rows]])
    ports = np.concatenate([dec.sport[rows], dec.dport[rows]])
    hi = np.concatenate([dec.src_hi[rows], dec.dst_hi[rows]])
    hi_id, lo_id = _ranks(hi), _ranks(lo)
    address = _ranks(hi_id * (int(lo_id.max()) + 1) + lo_id)
    ids = _ranks(address * 65536 + ports)
    return ids[:m], ids[m:], int(ids.max()) + 1


def _mix(x: U64) -> U64:
    """splitmix64's finaliser: every input bit affects every output bit."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    mixed: U64 = x ^ (x >> np.uint64(31))
    return mixed


def _flow_order(dec: Decoded, rows: I64) -> tuple[I64, I64, I64]:
    """(flow order, flow ids, reverse side) of the TCP `rows` of a batch.

    The flow order lists the rows by flow, then in capture order; flow ids are dense;
    the reverse side is 1 for a packet from the larger endpoint id to the smaller.

    One sort does it: its keys are a flow number above the row's index. With few
    enough endpoints the flow number is exact; otherwise it is a hash of the two
    endpoints, checked afterwards (rows of one hash must be of one flow) and replaced
    by exact dense ids on the rare collision.
    """
    m = len(rows)
    shift = max(m.bit_length(), 1)
    index = np.arange(m, dtype=np.int64)
    exact = _endpoint_ids(dec, rows)
    for attempt in ("hash", "dense"):
        src, dst, bound = exact if attempt == "hash" and exact else _dense_endpoint_ids(dec, rows)
        low, high = np.minimum(src, dst), np.maximum(src, dst)
        if bound * bound < 1 << (62 - shift):
            number = low * bound + high
        else:
            mixed = _mix(_mix(low.astype(np.uint64)) ^ high.astype(np.uint64))
            number = (mixed >> np.uint64(shift + 1)).astype(np.int64)
        # Sorting the keys themselves is faster than an argsort; the row index is in
        # their low bits, the flow number (non-negative, < 2**(63 - shift)) above.
        keys = np.sort((number << shift) | index)
        by_flow = keys & ((1 << shift) - 1)
        ordered = keys >> shift
        same = ordered[1:] == ordered[:-1]
        if bound * bound >= 1 << (62 - shift) and not (
            np.array_equal(low[by_flow][1:][same], low[by_flow][:-1][same])
            and np.array_equal(high[by_flow][1:][same], high[by_flow][:-1][same])
        ):
            continue  # two flows share a hash
        flow = np.empty(m, dtype=np.int64)
        flow[by_flow] = np.cumsum(np.r_[True, ~same]) - 1
        return by_flow, flow, (src > dst).astype(np.int64)
    raise AssertionError("dense endpoint ids cannot collide")


def _echo_created_between(
    flow: I64, tsval: I64, tsecr: I64, rows: I64, creators: BOOL, prev: I64, candidates: BOOL
) -> BOOL:
    """For each candidate i: is there a creator k of the same flow, prev[i] < k < i, whose
    TSval equals i's TSecr (so k may have stored the entry that i would match)?"""
    hit = np.zeros(len(flow), dtype=bool)
    ks = np.flatnonzero(creators)
    if len(ks) == 0:
        return hit
    k_key = (flow[ks] << 32) | tsval[ks]
    order = np.lexsort((rows[ks], k_key))
    k_key, k_row = k_key[order], rows[ks][order]
    qs = np.flatnonzero(candidates)
    q_key = (flow[qs] << 32) | tsecr[qs]
    lo = np.minimum(np.searchsorted(k_key, q_key, side="left"), len(k_key) - 1)
    found = k_key[lo] == q_key
    # A key that the next sorted key repeats: several creators with one (flow, TSval).
    shared = np.zeros(len(k_key), dtype=bool)
    shared[:-1] = k_key[1:] == k_key[:-1]
    single = np.flatnonzero(found & ~shared[lo])
    k_at = k_row[lo[single]]
    q_single = qs[single]
    hit[q_single] = (k_at > rows[prev[q_single]]) & (k_at < rows[q_single])
    # Rare: several creators with one (flow, TSval); look at each.
    for at in np.flatnonzero(found & shared[lo]).tolist():
        q = qs[at]
        after, before = rows[prev[q]], rows[q]
        span = k_row[lo[at] : int(np.searchsorted(k_key, q_key[at], side="right"))]
        hit[q] = bool(np.any((span > after) & (span < before)))
    return hit


def _pending(
    code: I64,
    where: I64,
    member: I64,
    name_row: I64,
    payload: I64,
    limited: BOOL,
    tsval: I64,
) -> dict[int, list[Pending]]:
    """Sum the repeats by `code` (one flow direction at one place; codes grow with the
    place) into entries of (a row naming the direction, packets, payload bytes, the
    TSvals of the rate-limited ones in capture order), listed by place. `member` is in
    flow order, so each code's members are in capture order."""
    if len(code) == 0:
        return {}
    if int(code.max()) > 8 * len(code) + 4096:  # sparse (many segments): compact first
        code = np.unique(code, return_inverse=True)[1].reshape(-1)
    limited_ids: dict[int, list[int]] = {}
    picked = np.flatnonzero(limited[member])
    for c, pid in zip(code[picked].tolist(), tsval[member[picked]].tolist(), strict=True):
        limited_ids.setdefault(c, []).append(pid)
    # Codes are small non-negative integers: count by direct indexing, no sorting. Every
    # repeat with one code has the same place and the same direction.
    counts = np.bincount(code)
    sums = np.bincount(code, weights=payload[member]).astype(np.int64)
    place = np.zeros(len(counts), dtype=np.int64)
    place[code] = where
    name = np.zeros(len(counts), dtype=np.int64)
    name[code] = name_row[member]
    used = np.flatnonzero(counts)
    entries: list[Pending] = list(
        zip(
            name[used].tolist(),
            counts[used].tolist(),
            sums[used].tolist(),
            map(limited_ids.get, used.tolist(), itertools.repeat(())),
            strict=False,  # the last one is endless
        )
    )
    # Codes grow with the place: each place's entries are one slice of the list.
    places = place[used]
    starts = np.flatnonzero(np.r_[True, places[1:] != places[:-1]])
    ends = np.r_[starts[1:], len(used)]
    slices = map(slice, starts.tolist(), ends.tolist())
    return dict(zip(places[starts].tolist(), map(entries.__getitem__, slices), strict=True))


Pending = tuple[int, int, int, Sequence[int]]
"""Repeats of one direction to account at one place: (a row naming the direction,
packets, payload bytes, TSvals of those the rate limit refused, in order)."""


@dataclass(slots=True)
class Plan:
    """What to do with one batch: which packets the engine sees, and the counters of the
    others, to be added just before the engine next sees their flow (`pending`, keyed by
    the packet index of that next packet) or at the end of their segment
    (`pending_at_end`, keyed by segment)."""

    engine_rows: I64
    segment: I64
    repeats: int
    pending: dict[int, list[Pending]]
    pending_at_end: dict[int, list[Pending]]


Outstanding = Callable[[I64, I64], BOOL]
"""(rows, identifiers) -> may the engine hold an entry for (reverse direction of the
row's packet, identifier)? Used to prove that a packet echoing a new identifier
cannot match."""


Sampling = Callable[[I64, I64, int], list[tuple[int, int, bool] | None]]
"""(rows, starting identifiers, flows in the part) -> the engine's (last_id,
last_timestamp, has_been_timestamped) for the direction of each row's packet, or None
when these alone do not decide sampling. A starting identifier other than -1 is that
of a packet of the part (no SYN, FIN or RST) that is the direction's first stampable
packet: for a direction that packet will start, the state right after it."""


def _refused(
    candidates: BOOL,
    rows: I64,
    name_row: I64,
    settled: BOOL,
    flow: I64,
    direction: I64,
    tsval: I64,
    times: I64,
    rate_limit_ns: int,
    sampling: Sampling,
    start_id: I64,
) -> BOOL:
    """Possibly new packets that timestamp_packet will surely refuse.

    Within a stretch where nothing can reset a flow (`settled`: segment 0, no eventful
    packet of the flow before), only a direction's own possibly new packets change what decides
    its sampling (last_id, last_timestamp, has_been_timestamped); the other direction's
    packets do not. Replaying the newer-identifier rule and the static rate limit over
    them, from the engine's state (or, for a direction that its first stampable packet
    starts in this part, `start_id`, from the state that packet leaves), tells which are
    refused (they change last_id at most) and which may be stamped (the engine sees
    those, and does what this replay assumed).
    """
    m = len(flow)
    refused = np.zeros(m, dtype=bool)
    pick = np.flatnonzero(candidates & settled)
    if len(pick) == 0:
        return refused
    order = pick[np.argsort(direction[pick], kind="stable")]
    starts = np.flatnonzero(np.r_[True, direction[order][1:] != direction[order][:-1]])
    firsts = order[starts]
    states = sampling(name_row[firsts], start_id[direction[firsts]], int(flow.max()) + 1)
    ends = np.r_[starts[1:], len(order)].tolist()
    members, pids, nows = order.tolist(), tsval[order].tolist(), times[rows[order]].tolist()
    for begin, end, state in zip(starts.tolist(), ends, states, strict=True):
        if state is None:
            continue
        last_id, last_ts, stamped = state
        for k in range(begin, end):
            pid, now = pids[k], nows[k]
            if not 0 < ((pid - last_id) & 0xFFFFFFFF) < 1 << 31:
                refused[members[k]] = True  # not newer: nothing changes
                continue
            last_id = pid
            if stamped and (now < last_ts or now - last_ts < rate_limit_ns):
                refused[members[k]] = True  # rate-limited: only last_id moved
                continue
            stamped, last_ts = True, now  # an attempt: the engine takes it from here
    return refused


def _count_before(flag: BOOL, flow: I64, by_flow: I64) -> I64:
    """For each member: how many members of its flow before it (in capture order) have
    `flag` set."""
    m = len(flow)
    f_sorted = flow[by_flow]
    counted = flag[by_flow].astype(np.int64)
    inclusive = np.cumsum(counted)
    head = np.ones(m, dtype=bool)
    head[1:] = f_sorted[1:] != f_sorted[:-1]
    start_of_flow = np.maximum.accumulate(np.where(head, np.arange(m), 0))
    before_sorted = inclusive - counted - (inclusive[start_of_flow] - counted[start_of_flow])
    before = np.empty(m, dtype=np.int64)
    before[by_flow] = before_sorted
    return before


Started = Callable[[I64], BOOL]
"""rows -> is the direction of each row's packet active in the engine, in an entry
that is not closed? Such a packet cannot start its direction."""


def _always(rows: I64, identifiers: I64) -> BOOL:
    return np.ones(len(rows), dtype=bool)


def _created_before(
    flow: I64, tsval: I64, tsecr: I64, rows: I64, creators: BOOL, queries: I64
) -> BOOL:
    """For each query i: did a creator k of the same flow, k < i, carry TSval == i's TSecr?"""
    ks = np.flatnonzero(creators)
    if len(ks) == 0:
        return np.zeros(len(queries), dtype=bool)
    # The earliest creator of each (flow, TSval): sorted by key, then row.
    k_key = (flow[ks] << 32) | tsval[ks]
    order = np.lexsort((rows[ks], k_key))
    k_key, k_row = k_key[order], rows[ks][order]
    first = np.r_[True, k_key[1:] != k_key[:-1]]
    k_key, k_row = k_key[first], k_row[first]
    q_key = (flow[queries] << 32) | tsecr[queries]
    at = np.minimum(np.searchsorted(k_key, q_key), len(k_key) - 1)
    hit: BOOL = (k_key[at] == q_key) & (k_row[at] < rows[queries])
    return hit


def plan_batch(
    dec: Decoded,
    segment: I64,
    outstanding: Outstanding | None = None,
    times: I64 | None = None,
    sampling: Sampling | None = None,
    rate_limit_ns: int = 0,
    started: Started | None = None,
    quiet: Started | None = None,
) -> Plan:
    """Find the repeats of a batch (see the module docstring)."""
    n = len(dec.cls)
    rows = np.flatnonzero(dec.cls >= TCP_UNUSUAL)
    m = len(rows)
    if m == 0:
        return Plan(np.arange(n, dtype=np.int64), segment, 0, {}, {})
    seg = segment[rows]
    seg_base = int(seg.min())
    # Segments never decrease along the capture: the flow order is also by segment.
    by_flow, flow, reverse_side = _flow_order(dec, rows)
    # Each direction is named by its first packet in the batch: the engine is asked
    # about a direction through that row only, so that the answers can be cached.
    direction = flow * 2 + reverse_side
    first_row = np.full(int(direction.max()) + 1, n, dtype=np.int64)
    np.minimum.at(first_row, direction, rows)
    name_row = first_row[direction]
    flags = dec.flags[rows]
    tsval = dec.tsval[rows]
    tsecr = dec.tsecr[rows]
    payload = dec.payload[rows]
    could_stamp = (payload > 0) | ((flags & (TCP_SYN | TCP_FIN)) != 0)
    ack = (flags & TCP_ACK) != 0
    eventful = ((flags & (TCP_SYN | TCP_FIN | TCP_RST)) != 0) | (dec.cls[rows] == TCP_UNUSUAL)
    # Nothing before it in the batch can have reset its flow (segment 0, no eventful
    # packet of the flow before).
    settled = (seg == 0) & (_count_before(eventful, flow, by_flow) == 0)

    # A run is a stretch of one flow within one segment up to (and including) an
    # eventful packet.
    f_sorted, s_sorted, e_sorted = flow[by_flow], seg[by_flow], eventful[by_flow]
    run_start = np.ones(m, dtype=bool)
    run_start[1:] = (f_sorted[1:] != f_sorted[:-1]) | (s_sorted[1:] != s_sorted[:-1])
    run_start[1:] |= e_sorted[:-1]
    run = np.empty(m, dtype=np.int64)
    run[by_flow] = np.cumsum(run_start)
    group = run * 2 + reverse_side  # one direction within one run
    # Runs are numbered in flow order, so this order is almost sorted already: the
    # stable sort only separates the two directions within each run.
    by_group = by_flow[np.argsort(group[by_flow], kind="stable")]
    g_sorted = group[by_group]
    same_group_as_prev = np.zeros(m, dtype=bool)
    same_group_as_prev[1:] = g_sorted[1:] == g_sorted[:-1]

    # Possibly new: a stampable packet whose TSval differs from the previous stampable
    # packet of its group (or the first such: it may also start its direction).
    possibly_new = np.zeros(m, dtype=bool)
    starter = np.zeros(m, dtype=bool)
    start_id = np.full(len(first_row), -1, dtype=np.int64)  # by direction
    stampable = by_group[could_stamp[by_group]]
    if len(stampable):
        sg = group[stampable]
        sv = tsval[stampable]
        first = np.ones(len(stampable), dtype=bool)
        first[1:] = sg[1:] != sg[:-1]
        new = first.copy()
        new[1:] |= sv[1:] != sv[:-1]
        possibly_new[stampable[new]] = True
        starter[stampable[first]] = True
        # A first packet whose direction the engine already runs, with nothing before
        # it in the batch that could have ended that, starts nothing.
        if started is not None:
            known = np.flatnonzero(starter & settled)
            if len(known):
                starter[known[started(name_row[known])]] = False
                # The others may start their direction: from the identifier they carry.
                fresh = known[starter[known]]
                start_id[direction[fresh]] = tsval[fresh]
    disruptive = eventful | starter

    # Candidate repeats, judged against the previous packet of the same group. A pure
    # ACK's own TSval does not matter (it is never timestamped).
    prev = np.empty(m, dtype=np.int64)
    prev[by_group[1:]] = by_group[:-1]
    prev[by_group[0]] = by_group[0]
    has_prev = np.empty(m, dtype=bool)
    has_prev[by_group] = same_group_as_prev
    repeat = has_prev & (dec.cls[rows] == TCP_USUAL) & ~disruptive & (ack == ack[prev])
    # ... with nothing disruptive of the same flow in between,
    d_sorted = np.cumsum(disruptive[by_flow])
    d_count = np.empty(m, dtype=np.int64)
    d_count[by_flow] = d_sorted
    repeat &= d_count == d_count[prev]
    # ... whose TSval is not new, or is surely refused by the static rate limit,
    # (a surely refused packet does not create an entry either)
    limited = np.zeros(m, dtype=bool)
    if sampling is not None and times is not None:
        limited = _refused(
            possibly_new & ~starter, rows, name_row, settled, flow, direction, tsval, times,
            rate_limit_ns, sampling, start_id,
        )  # fmt: skip
    creators = possibly_new & ~limited
    repeat &= ~possibly_new | limited
    # ... echoing what the previous packet echoed, with no possibly new packet in
    # between that carries it,
    same_echo = tsecr == tsecr[prev]
    repeat &= ~same_echo | ~_echo_created_between(
        flow, tsval, tsecr, rows, creators & ~starter, prev, repeat & same_echo
    )
    # ... or echoing something new that no entry can hold: neither one of the engine's
    # entries nor one a possibly new packet of this batch (before it) may have created.
    echo_changed = repeat & ~same_echo
    # A first packet of its direction in the batch has no previous packet to lean on,
    # but the engine's state can stand in for it: nothing before it in the batch that
    # could touch its flow, a reverse direction it will not open (quiet), and, as above,
    # no entry its echo could match.
    first_ones = (
        ~has_prev & (dec.cls[rows] == TCP_USUAL) & ~disruptive & (~possibly_new | limited)
        & (seg == 0)
    )  # fmt: skip
    if quiet is not None and first_ones.any():
        first_ones &= _count_before(disruptive, flow, by_flow) == 0
        ask = np.flatnonzero(first_ones)
        first_ones[ask] = quiet(name_row[ask])
        repeat |= first_ones
        echo_changed |= first_ones
    changed = np.flatnonzero(echo_changed)
    if len(changed):
        might = _created_before(flow, tsval, tsecr, rows, creators, changed)
        unknown = changed[~might]
        might[~might] = (outstanding or _always)(name_row[unknown], tsecr[unknown])
        repeat[changed[might]] = False

    # Where the counters of each repeat are added: before the next non-repeat packet of
    # its flow in the same segment, else at the end of the segment.
    r_sorted = repeat[by_flow]
    positions = np.where(~r_sorted, np.arange(m), m)
    next_pos = np.minimum.accumulate(positions[::-1])[::-1]
    nxt = np.minimum(next_pos, m - 1)
    same_run = (next_pos < m) & (f_sorted[nxt] == f_sorted) & (s_sorted[nxt] == s_sorted)
    pending: dict[int, list[Pending]] = {}
    pending_at_end: dict[int, list[Pending]] = {}
    rep_pos = np.flatnonzero(r_sorted)
    if len(rep_pos):
        member = by_flow[rep_pos]
        side = reverse_side[member]
        to_row = same_run[rep_pos]
        # Before a packet of the flow: that packet names the flow.
        target = rows[by_flow[nxt[rep_pos[to_row]]]]
        pending = _pending(
            target * 2 + side[to_row], target, member[to_row], name_row, payload, limited, tsval
        )
        # At the end of a segment: one entry per flow and direction.
        at_end = ~to_row
        segs = s_sorted[rep_pos[at_end]]
        code = ((segs - seg_base) * (int(flow.max()) + 1) + f_sorted[rep_pos[at_end]]) * 2
        code += side[at_end]
        pending_at_end = _pending(code, segs, member[at_end], name_row, payload, limited, tsval)
    engine_rows = np.ones(n, dtype=bool)
    engine_rows[rows[repeat]] = False
    return Plan(np.flatnonzero(engine_rows), segment, int(repeat.sum()), pending, pending_at_end)


def cleanup_points(clock: CleanupClock, times: I64) -> list[int]:
    """Rows before which the periodic clean-up runs (the same rule as replay.replay)."""
    points: list[int] = []
    if clock.interval_ns <= 0 or len(times) == 0:
        return points
    start = 0
    if clock.next_due is None:
        clock.next_due = int(times[0]) + clock.interval_ns
        start = 1
    while True:
        row = int(np.searchsorted(times[start:], clock.next_due, side="left")) + start
        if row >= len(times):
            return points
        points.append(row)
        clock.next_due = int(times[row]) + clock.interval_ns
        start = row + 1


def _tcp_meaning(flags: int) -> tuple[FlowEventType, EventReason, bool]:
    """(event, reason, wait_first_edge) of a TCP packet with these flags (packet.py)."""
    if flags & TCP_RST:
        return FlowEventType.CLOSING_BOTH, EventReason.RST, not flags & TCP_SYN
    if flags & TCP_FIN:
        return FlowEventType.CLOSING, EventReason.FIN, not flags & TCP_SYN
    if flags & TCP_SYN:
        reason = EventReason.SYN_ACK if flags & TCP_ACK else EventReason.SYN
        return FlowEventType.OPENING, reason, False
    return FlowEventType.NONE, EventReason.NONE, True


_MEANINGS = [_tcp_meaning(flags) for flags in range(256)]
TCP_EVENT = [meaning[0] for meaning in _MEANINGS]
TCP_REASON = [meaning[1] for meaning in _MEANINGS]
TCP_WAIT = [meaning[2] for meaning in _MEANINGS]
_tuple_new = tuple.__new__


def _tcp_infos(dec: Decoded, rows: I64, wire_lens: I64) -> list[PacketInfo | None]:
    """PacketInfo of each TCP_USUAL row among `rows` (None for the others), built from
    the decoded columns: the values packet.parse_packet gives, which the parity tests
    hold both to. Built column by column and assembled by C-level map and zip (no
    Python frame per packet)."""
    flags = dec.flags[rows]
    payload = dec.payload[rows]
    flag_list = flags.tolist()
    fields = zip(
        itertools.repeat(IPPROTO_TCP),
        _addresses(dec.src_hi[rows], dec.src_lo[rows]),
        dec.sport[rows].tolist(),
        _addresses(dec.dst_hi[rows], dec.dst_lo[rows]),
        dec.dport[rows].tolist(),
        dec.tsval[rows].tolist(),
        ((payload > 0) | ((flags & (TCP_SYN | TCP_FIN)) != 0)).tolist(),
        dec.tsecr[rows].tolist(),
        ((flags & TCP_ACK) != 0).tolist(),
        map(TCP_EVENT.__getitem__, flag_list),
        map(TCP_REASON.__getitem__, flag_list),
        map(TCP_WAIT.__getitem__, flag_list),
        flag_list,
        payload.tolist(),
        wire_lens[rows].tolist(),
    )
    infos: list[PacketInfo | None] = list(map(_tuple_new, itertools.repeat(PacketInfo), fields))
    for i in np.flatnonzero(dec.cls[rows] != TCP_USUAL).tolist():
        infos[i] = None
    return infos


Direction = tuple[FlowKey, FlowKey, bool]
"""The engine's key of a direction, its flow's key, and whether it is that flow's first
direction."""


class _EngineView:
    """What the planner asks the engine about the directions of one batch part, and the
    counters of repeats given back to it.

    The planner names each direction by its first row in the part, so the keys of a
    direction are built once per part however often it is asked about, and the
    answers of one look-up serve several questions (the engine does not change while a
    part is planned).
    """

    def __init__(self, engine: Engine, dec: Decoded, link: int) -> None:
        self.engine = engine
        self.dec = dec
        self.link = link
        self.directions: dict[int, Direction] = {}
        self.facts: dict[int, tuple[bool, bool]] = {}

    def lookup(self, rows: list[int]) -> list[Direction]:
        directions = self.directions
        missing = [row for row in dict.fromkeys(rows) if row not in directions]
        if missing:
            flow_key = self.engine.flow_key
            keys = self.dec.direction_keys(np.array(missing, dtype=np.int64), self.link)
            for row, key in zip(missing, keys, strict=True):
                directions[row] = (key, *flow_key(key))
        return [directions[row] for row in rows]

    def _facts(self, rows: I64) -> list[tuple[bool, bool]]:
        """Engine.direction_facts of each row's direction."""
        facts = self.facts
        wanted = rows.tolist()
        missing = [row for row in dict.fromkeys(wanted) if row not in facts]
        if missing:
            ask = self.engine.direction_facts
            for row, (_, key, first) in zip(missing, self.lookup(missing), strict=True):
                facts[row] = ask(key, first)
        return [facts[row] for row in wanted]

    def started(self, rows: I64) -> BOOL:
        """For each row's direction: does the engine run it already (not closed)?"""
        return np.array([fact[0] for fact in self._facts(rows)], dtype=bool).reshape(-1)

    def quiet(self, rows: I64) -> BOOL:
        """For each row's direction: would a packet of it that is neither timestamped
        nor matched leave its flow entry alone?"""
        return np.array([fact[1] for fact in self._facts(rows)], dtype=bool).reshape(-1)

    def sampling(self, rows: I64, start_ids: I64, flows: int) -> list[tuple[int, int, bool] | None]:
        engine = self.engine
        state = engine.sampling_state
        directions = self.lookup(rows.tolist())
        # A direction is started only if its flow entry can be created: sure when the
        # table has room for every flow of the part.
        if len(engine.flows) + flows > engine.pressure.max_flows:
            return [state(direction[0]) for direction in directions]
        return [
            state(direction[0], None if start_id < 0 else start_id)
            for direction, start_id in zip(directions, start_ids.tolist(), strict=True)
        ]

    def outstanding(self, rows: I64, identifiers: I64) -> BOOL:
        """Does the engine hold (reverse direction of each row's packet, identifier)?"""
        timestamps = self.engine.timestamps
        found = np.zeros(len(rows), dtype=bool)
        if not timestamps:
            return found
        # Most identifiers are held by no entry at all: rule those out in one step.
        held = np.sort(
            np.fromiter((key[6] for key in timestamps), dtype=np.int64, count=len(timestamps))
        )
        at = np.minimum(np.searchsorted(held, identifiers), len(held) - 1)
        ask = np.flatnonzero(held[at] == identifiers)
        directions = self.lookup(rows[ask].tolist())
        for i, direction, identifier in zip(
            ask.tolist(), directions, identifiers[ask].tolist(), strict=True
        ):
            link, proto, saddr, sport, daddr, dport = direction[0]
            found[i] = (link, proto, daddr, dport, saddr, sport, identifier) in timestamps
        return found

    def absorb(self, entries: list[Pending]) -> None:
        """Give the engine the counters of repeats (see Engine.absorb_repeats)."""
        directions = self.directions
        absorb = self.engine.absorb_repeats
        for rep, count, total, limited_ids in entries:
            direction = directions.get(rep)
            if direction is None:
                direction = self.lookup([rep])[0]
            absorb(direction[1], direction[2], count, total, limited_ids)


class FastReplay:
    """Replay record batches through an engine, skipping provable repeats."""

    def __init__(self, engine: Engine, merge_interfaces: bool = False) -> None:
        self.engine = engine
        self.merge_interfaces = merge_interfaces
        self.clock = CleanupClock(engine.config.cleanup_interval_ns)

    def supported(self, linktype: int) -> bool:
        return linktype in LINK_HEADER and self.engine.config.track_tcp

    def run_batch(
        self,
        linktype: int,
        interface: int,
        buf: bytes,
        offsets: I64,
        caplens: I64,
        wire_lens: I64,
        times: I64,
    ) -> Iterator[Event]:
        n = len(offsets)
        if n == 0:
            return
        link = 0 if self.merge_interfaces else interface
        monotonic = bool(np.all(times[1:] >= times[:-1]))
        if not (monotonic and self.supported(linktype)):
            yield from self._slow(linktype, link, buf, offsets, caplens, wire_lens, times)
            return
        points = cleanup_points(self.clock, times)
        whole = decode(linktype, buf, offsets, caplens)
        # The clean-ups split the batch: each part is planned after the clean-up before
        # it ran, so the engine's state the planner reads is the one the part starts from.
        for begin, end in itertools.pairwise([0, *points, n]):
            if begin == end:
                continue
            if begin in points:
                yield from self.engine.expire(int(times[begin]))
            part = slice(begin, end)
            columns = (offsets[part], caplens[part], wire_lens[part], times[part])
            if end - begin < SMALL_PART:
                yield from self._slow(linktype, link, buf, *columns, clock=False)
                continue
            dec = whole.part(part)
            view = _EngineView(self.engine, dec, link)
            boundary = np.zeros(end - begin + 1, dtype=np.int64)
            boundary[np.flatnonzero(dec.cls == UNKNOWN) + 1] = 1
            plan = plan_batch(
                dec,
                np.cumsum(boundary[:-1]),
                outstanding=view.outstanding,
                times=columns[3],
                sampling=view.sampling,
                rate_limit_ns=self.engine.rate_limit_ns,  # in force (pressure.py)
                started=view.started,
                quiet=view.quiet,
            )
            yield from self._execute(plan, dec, view, linktype, buf, *columns)

    def _execute(
        self,
        plan: Plan,
        dec: Decoded,
        view: _EngineView,
        linktype: int,
        buf: bytes,
        offsets: I64,
        caplens: I64,
        wire_lens: I64,
        times: I64,
    ) -> Iterator[Event]:
        engine = self.engine
        process = engine.process
        absorb = view.absorb
        link = view.link
        pending = plan.pending
        at_end = plan.pending_at_end
        rows = plan.engine_rows
        columns = zip(
            rows.tolist(),
            plan.segment[rows].tolist(),
            dec.cls[rows].tolist(),
            times[rows].tolist(),
            offsets[rows].tolist(),
            caplens[rows].tolist(),
            wire_lens[rows].tolist(),
            _tcp_infos(dec, rows, wire_lens),
            strict=True,
        )
        for row, seg, cls, now, start, caplen, wire_len, info in columns:
            if cls == UNKNOWN:
                entries = at_end.pop(seg, None)
                if entries:
                    absorb(entries)
            else:
                entries = pending.pop(row, None)
                if entries:
                    absorb(entries)
            if info is None:
                parsed = parse_packet(linktype, buf[start : start + caplen], wire_len)
                if isinstance(parsed, str):
                    engine.count_skipped(parsed)
                    continue
                info = parsed
            events = process(info, now, link)
            if events:
                yield from events
        for entries in at_end.values():
            absorb(entries)
        at_end.clear()
        assert not pending, "a repeat's counters were never added"

    def _slow(
        self,
        linktype: int,
        link: int,
        buf: bytes,
        offsets: I64,
        caplens: I64,
        wire_lens: I64,
        times: I64,
        clock: bool = True,
    ) -> Iterator[Event]:
        engine = self.engine
        for start, caplen, wire_len, now in zip(
            offsets.tolist(), caplens.tolist(), wire_lens.tolist(), times.tolist(), strict=True
        ):
            if clock and self.clock.due(now):
                yield from engine.expire(now)
            info = parse_packet(linktype, buf[start : start + caplen], wire_len)
            if isinstance(info, str):
                engine.count_skipped(info)
                continue
            events = engine.process(info, now, link)
            if events:
                yield from events


def fast_replay(
    engine: Engine, reader: CaptureReader, merge_interfaces: bool = False
) -> Generator[Event, None, None]:
    """The events of `replay.replay`, computed batch by batch (see the module doc)."""
    fast = FastReplay(engine, merge_interfaces)
    last: int | None = None
    for batch in reader.iter_batches():
        times = batch.timestamps_ns
        if len(times):
            last = int(times[-1])
        if times.dtype != np.int64:  # a time beyond int64: exact ints, the slow way
            link = 0 if merge_interfaces else batch.interface
            yield from fast._slow(
                batch.linktype, link, batch.buffer, batch.offsets, batch.caplens,
                batch.wire_lens, times,
            )  # fmt: skip
            continue
        yield from fast.run_batch(
            batch.linktype, batch.interface, batch.buffer, batch.offsets, batch.caplens,
            batch.wire_lens, times,
        )  # fmt: skip
    if engine.config.stats_interval_ns and last is not None:
        yield engine.statistics(last)
