"""Synthetic packet captures with exact ground truth, for testing pping.

Every scenario function returns ``(pcap_bytes, truth)``: a classic pcap file and a
`Truth` saying which RTT samples the capture contains. Nothing here imports pping.

Model
-----
Two TCP endpoints talk through a capture point. Each endpoint has a one-way delay
from the capture point to it (``to_me``) and one back (``from_me``), each a function
of time (constant, or piecewise linear for queueing). A packet an endpoint emits at
time ``e`` is captured at ``e + from_me(e)`` and reaches the peer at ``tc +
peer.to_me(tc)``. So the path RTT the capture point sees for data sent by A is
``B.to_me + B.from_me`` plus whatever B waits before answering (delayed ACK).

Endpoints run a small discrete-event TCP: paced senders (no congestion control),
receivers with delayed ACKs (every second in-order segment, or a timer for a lone
one), immediate (duplicate) ACKs with a SACK block for out-of-order data, immediate
ACKs for hole fills and FINs, fast retransmit on the third duplicate ACK (plus an RTO
at the end of a transfer), SYN handshakes, FIN closes and RST aborts. Timestamps
follow RFC 7323: TSval is the sender's clock (``ts_hz`` ticks, random offset and
phase, modulo 2^32); TSecr is TS.Recent, updated from a segment only when
``SEG.SEQ <= Last.ACK.sent`` and ``SEG.TSval >= TS.Recent`` (serial arithmetic). So a
delayed ACK of two segments echoes the earlier one, and a duplicate ACK echoes the last
in-order segment, never the out-of-order one.

ICMP echo is simpler: requests at intervals, replies after the path RTT plus a few
microseconds of processing, some requests unanswered.

Ground truth (computed from the packets as captured, after time rounding)
-------------------------------------------------------------------------
For each direction A of each connection and each identifier X (TSval, or ICMP echo
request sequence):

- ``t_first_sent_ns``: the first packet in A carrying X that has payload, SYN or FIN
  (for ICMP: the first request with sequence X);
- ``t_first_echo_ns``: the first later packet in the other direction with the ACK flag
  and TSecr == X (for ICMP: the first reply with sequence X);
- ``rtt_ns`` = the difference: a `Sample`. ``data_driven`` says whether the echoing
  packet was sent after a data/SYN/FIN segment carrying X had reached its sender, i.e.
  the RTT is the path plus at most the receiver's ACK delay, not an application pause.
  Every data-driven sample is ``>= min_path_rtt_ns[data_flow]``.
- identifiers that direction A carried only on pure ACKs (or RSTs) and that were echoed
  are listed apart in ``pure_ack_echoes``: their "RTT" includes application pauses and
  a correct pping never reports them.

This is the matcher of docs/algorithm.md without its filters: pping also skips
identifiers that are not newer than the last one (reordering), the first TSval seen
mid-flow, rate-limited ones, etc. So every RTT pping prints must be a sample (see
`Truth.is_valid_rtt`), but not every sample is printed.

Simplifications
---------------
No congestion control or receive window: senders pace segments at random gaps
(10-50 us by default) whatever the ACKs say. Losses and reordering hit data segments
only, on one hop each: drops after the capture point, reordering (a swap with the next
segment) before it. Recovery: fast retransmit on the third duplicate ACK, then at once
for each further hole that the receiver's SACK block reveals; an RTO only once the
sender has nothing left to send. Path delays never jitter and keep each hop FIFO.
TCP checksums are left zero (IPv4 header and ICMP checksums are correct); payload
bytes are zeros; no quick-ack mode, no window updates, no keepalives. Every
application decision (think times, chunk sizes) is drawn from the seeded generator,
so a seed and the parameters determine the capture byte for byte.

Usage
-----
>>> pcap, truth = bulk(seed=3, flows=2, packets=5_000, ip_version=6, encap="vlan")
>>> _ = open("/tmp/bulk.pcap", "wb").write(pcap)  # doctest: +SKIP
>>> truth.packets, len(truth.samples), len(truth.pure_ack_echoes)
(5002, 104, 40)
>>> all(s.rtt_ns >= truth.min_path_rtt_ns[s.data_flow] for s in truth.data_driven_samples)
True
>>> s = truth.samples[0]  # what pping would print for it: s.reply_flow, s.rtt_ns
>>> truth.is_valid_rtt(s.reply_flow, s.rtt_ns, s.t_first_echo_ns)
True

Capture options accepted by every scenario (see `CaptureOptions`): ``ip_version``
(4 or 6), ``link`` ("ether", "sll", "raw"), ``encap`` ("none", "vlan", "qinq"),
``resolution`` ("ns", "us"), ``snaplen`` (None = whole packets), ``start_ns``.

Command line (prints size and speed): ``python tests/tracegen.py bulk --set
packets=1000000 --set snaplen=128 -o /tmp/bulk.pcap``.
"""

from __future__ import annotations

import argparse
import ast
import functools
import gc
import heapq
import ipaddress
import itertools
import random
import struct
import sys
import time
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, ParamSpec, TypeVar

import numpy as np

__all__ = [
    "MALFORMED_KINDS",
    "SCENARIOS",
    "CaptureOptions",
    "FlowKey",
    "Sample",
    "Truth",
    "app_limited",
    "bulk",
    "delayed_ack",
    "fin_reuse",
    "handshake_rst",
    "icmp_echo",
    "loss",
    "malformed",
    "many_flows",
    "ramping_rtt",
    "reordering",
    "wraparound",
]

NS_PER_US = 1_000
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
MASK32 = 0xFFFFFFFF
HALF32 = 0x80000000

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_ICMPV6 = 1, 6, 58
ETH_IPV4, ETH_IPV6, ETH_VLAN, ETH_QINQ = 0x0800, 0x86DD, 0x8100, 0x88A8
ETH_UNKNOWN = 0x88B5  # IEEE "local experimental": nobody parses it
LINKTYPES = {"ether": 1, "raw": 101, "sll": 113}
ICMP_REQUEST = {4: 8, 6: 128}
ICMP_REPLY = {4: 0, 6: 129}
DEFAULT_START_NS = 1_700_000_000 * NS_PER_S
TCP_WINDOW = 4096
MALFORMED_KINDS = (
    "truncated_tcp",
    "options_cut",
    "bad_ihl",
    "bad_ts_length",
    "fragment",
    "garbage",
)

# Record kinds: what the direction object of a capture record describes.
KIND_TCP, KIND_ICMP, KIND_RAW = 0, 1, 2


# --------------------------------------------------------------------------- truth


def _mapped(ip: bytes) -> bytes:
    """16-byte form of an address, IPv4 as IPv4-mapped IPv6 (pping's convention)."""
    return ip if len(ip) == 16 else b"\x00" * 10 + b"\xff\xff" + ip


def _endpoint_text(addr: bytes, port: int) -> str:
    ip = ipaddress.IPv6Address(addr)
    v4 = ip.ipv4_mapped
    return f"{v4}:{port}" if v4 is not None else f"[{ip}]:{port}"


class FlowKey(NamedTuple):
    """One direction: same fields and address form as `pping.events.Flow`."""

    proto: int
    saddr: bytes
    sport: int
    daddr: bytes
    dport: int

    def reversed(self) -> FlowKey:
        return FlowKey(self.proto, self.daddr, self.dport, self.saddr, self.sport)

    def __str__(self) -> str:
        return f"{_endpoint_text(self.saddr, self.sport)}+{_endpoint_text(self.daddr, self.dport)}"


@dataclass(frozen=True, slots=True)
class Sample:
    """An identifier and its first echo (see the module docstring for the definition)."""

    data_flow: FlowKey
    identifier: int
    t_first_sent_ns: int
    t_first_echo_ns: int
    rtt_ns: int
    data_driven: bool

    @property
    def reply_flow(self) -> FlowKey:
        return self.data_flow.reversed()


@dataclass
class Truth:
    """What a capture proves. Times are absolute capture times in ns."""

    scenario: str
    seed: int
    linktype: int
    resolution_ns: int
    packets: int
    first_ns: int
    last_ns: int
    min_path_rtt_ns: dict[FlowKey, int]
    """Per timestamped (data) direction: no correct RTT sample can be smaller."""
    samples: list[Sample]
    """Every echoed identifier that had a data/SYN/FIN packet, by t_first_sent_ns."""
    pure_ack_echoes: list[Sample]
    """Identifiers carried only by pure ACKs/RSTs, and echoed: never a valid RTT."""
    valid_rtts: dict[tuple[FlowKey, int], set[int]]
    """(reply flow, identifier) -> RTTs the matcher may print (from `samples`, whether
    data-driven or not: pping cannot tell them apart; a set, as a reused 4-tuple can
    repeat an identifier)."""
    rtt_by_echo: dict[tuple[FlowKey, int], set[int]]
    """(reply flow, echo time) -> RTTs: pping prints the reply's time, not X."""
    malformed: dict[str, int] = field(default_factory=dict)
    """Malformed frames injected, by kind (see MALFORMED_KINDS)."""
    identifiers_sent: dict[FlowKey, list[tuple[int, int]]] = field(default_factory=dict)
    """Per direction: (t_first_sent_ns, identifier) of every identifier a data/SYN/FIN
    packet (or ICMP request) carried, echoed or not, in capture order: the packets
    pping's sampling chooses from."""
    counts: dict[str, int] = field(default_factory=dict)
    """packets, tcp_packets, icmp_packets, samples, data_driven_samples,
    pure_ack_echoes, malformed, and what the scenario documents (dropped, reordered,
    retransmissions, dupacks, delack_timer_acks, rsts, fins, connections, ...)."""

    @property
    def malformed_injected(self) -> int:
        return sum(self.malformed.values())

    @property
    def data_driven_samples(self) -> list[Sample]:
        return [s for s in self.samples if s.data_driven]

    def is_valid_rtt(self, reply_flow: FlowKey, rtt_ns: int, t_echo_ns: int | None = None) -> bool:
        """Whether pping may print `rtt_ns` for `reply_flow` (at reply time `t_echo_ns`)."""
        if t_echo_ns is not None:
            return rtt_ns in self.rtt_by_echo.get((reply_flow, t_echo_ns), ())
        return any(s.rtt_ns == rtt_ns for s in self.samples if s.data_flow == reply_flow.reversed())

    def min_rtt_for_reply(self, reply_flow: FlowKey) -> int:
        """The RTT floor of the direction `reply_flow` answers."""
        return self.min_path_rtt_ns[reply_flow.reversed()]


# ------------------------------------------------------------------- capture options


@dataclass(frozen=True)
class CaptureOptions:
    """How packets are framed and stamped; every scenario accepts these as keywords."""

    ip_version: int = 4
    link: str = "ether"
    encap: str = "none"
    resolution: str = "ns"
    snaplen: int | None = None
    start_ns: int = DEFAULT_START_NS

    def __post_init__(self) -> None:
        if self.ip_version not in (4, 6):
            raise ValueError("ip_version must be 4 or 6")
        if self.link not in LINKTYPES:
            raise ValueError(f"link must be one of {sorted(LINKTYPES)}")
        if self.encap not in ("none", "vlan", "qinq"):
            raise ValueError("encap must be none, vlan or qinq")
        if self.encap != "none" and self.link != "ether":
            raise ValueError("VLAN encapsulation needs the Ethernet link type")
        if self.resolution not in ("ns", "us"):
            raise ValueError("resolution must be ns or us")
        if self.snaplen is not None and self.snaplen < 1:
            raise ValueError("snaplen must be positive")
        if self.start_ns % NS_PER_S:
            raise ValueError("start_ns must be a whole second")

    @property
    def linktype(self) -> int:
        return LINKTYPES[self.link]

    @property
    def resolution_ns(self) -> int:
        return 1 if self.resolution == "ns" else NS_PER_US


# ------------------------------------------------------------------------ encoding


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4_header(
    src: bytes,
    dst: bytes,
    proto: int,
    payload_len: int,
    *,
    ihl: int = 5,
    frag: int = 0x4000,
    ident: int = 0,
) -> bytes:
    """20 bytes (IHL is written as given, even when wrong); DF set by default."""
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + payload_len, ident, frag, 64, proto, 0, src, dst
    )
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:]


def _ipv6_header(src: bytes, dst: bytes, next_header: int, payload_len: int) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, payload_len, next_header, 64, src, dst)


def _tcp_header(
    sport: int, dport: int, seq: int, ack: int, flags: int, options: bytes, doff: int | None = None
) -> bytes:
    if doff is None:
        doff = (20 + len(options)) // 4
    base = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, TCP_WINDOW, 0, 0)
    return base + options


def _ts_option(tsval: int, tsecr: int) -> bytes:
    """NOP NOP TS, as Linux sends it (12 bytes)."""
    return struct.pack("!BBBBII", 1, 1, 8, 10, tsval, tsecr)


def _syn_options(tsval: int, tsecr: int, mss: int) -> bytes:
    """MSS, SACK-permitted, TS, NOP, window scale: Linux's SYN layout (20 bytes)."""
    return struct.pack("!BBHBBBBIIBBBB", 2, 4, mss, 4, 2, 8, 10, tsval, tsecr, 1, 3, 3, 7)


def _sack_options(tsval: int, tsecr: int, left: int, right: int) -> bytes:
    """NOP NOP TS NOP NOP SACK(one block): a duplicate ACK's options (24 bytes)."""
    return _ts_option(tsval, tsecr) + struct.pack("!BBBBII", 1, 1, 5, 10, left, right)


def _mac(ip: bytes) -> bytes:
    return b"\x02\x00" + ip[-4:]


class _Wire:
    """Link-layer framing shared by every packet of one capture."""

    def __init__(self, opts: CaptureOptions) -> None:
        self.opts = opts
        self.tags = {
            "none": b"",
            "vlan": struct.pack("!HH", ETH_VLAN, 100),
            "qinq": struct.pack("!HHHH", ETH_QINQ, 200, ETH_VLAN, 100),
        }[opts.encap]

    def header(self, ethertype: int, src_mac: bytes, dst_mac: bytes, outgoing: bool) -> bytes:
        if self.opts.link == "raw":
            return b""
        if self.opts.link == "sll":
            return struct.pack("!HHH8sH", 4 if outgoing else 0, 1, 6, src_mac, ethertype)
        return dst_mac + src_mac + self.tags + struct.pack("!H", ethertype)

    @property
    def min_header(self) -> int:
        return {"raw": 0, "sll": 16, "ether": 14 + len(self.tags)}[self.opts.link]

    def pad(self, frame: bytes) -> bytes:
        """Ethernet frames are at least 60 bytes on the wire (the NIC pads them)."""
        if self.opts.link == "ether" and len(frame) < 60:
            return frame + b"\x00" * (60 - len(frame))
        return frame


_TCP_TS = struct.Struct("!HHIIBBHHHIII")  # base header + NOP NOP TS, doff = 8
_TS_KIND_LEN = 0x0101080A


class _TcpDir:
    """One direction of one TCP connection: its identity and its header templates."""

    kind = KIND_TCP

    def __init__(
        self,
        wire: _Wire,
        key: int,
        src: bytes,
        sport: int,
        dst: bytes,
        dport: int,
        outgoing: bool,
    ) -> None:
        self.key = key
        self.peer_key = key ^ 1
        self.wire = wire
        self.src, self.dst, self.sport, self.dport = src, dst, sport, dport
        self.v6 = len(src) == 16
        self.flow = FlowKey(IPPROTO_TCP, _mapped(src), sport, _mapped(dst), dport)
        ethertype = ETH_IPV6 if self.v6 else ETH_IPV4
        self.link = wire.header(ethertype, _mac(src), _mac(dst), outgoing)
        self._prefixes: dict[int, bytes] = {}

    def ip_header(self, l4_len: int, **v4_fields: int) -> bytes:
        if self.v6:
            return _ipv6_header(self.src, self.dst, IPPROTO_TCP, l4_len)
        return _ipv4_header(self.src, self.dst, IPPROTO_TCP, l4_len, **v4_fields)

    def _prefix(self, l4_len: int) -> bytes:
        prefix = self.link + self.ip_header(l4_len)
        self._prefixes[l4_len] = prefix
        return prefix

    def frame(
        self, flags: int, seq: int, ack: int, tsval: int, tsecr: int, plen: int, extra: Any
    ) -> bytes:
        """Link + IP + TCP headers (the payload, zeros, is the serializer's business)."""
        if extra is None:
            tcp = _TCP_TS.pack(
                self.sport, self.dport, seq, ack, 0x80, flags, TCP_WINDOW, 0, 0,
                _TS_KIND_LEN, tsval, tsecr,
            )  # fmt: skip
        elif extra[0] == "syn":
            tcp = _tcp_header(
                self.sport, self.dport, seq, ack, flags, _syn_options(tsval, tsecr, extra[1])
            )
        else:  # ("sack", left, right)
            opts = _sack_options(tsval, tsecr, extra[1], extra[2])
            tcp = _tcp_header(self.sport, self.dport, seq, ack, flags, opts)
        l4_len = len(tcp) + plen
        prefix = self._prefixes.get(l4_len) or self._prefix(l4_len)
        return prefix + tcp


class _IcmpDir:
    """One direction of an ICMP echo conversation (the echo id is both ports)."""

    kind = KIND_ICMP

    def __init__(
        self, wire: _Wire, key: int, src: bytes, dst: bytes, ident: int, outgoing: bool
    ) -> None:
        self.key = key
        self.peer_key = key ^ 1
        self.src, self.dst, self.ident = src, dst, ident
        self.v6 = len(src) == 16
        self.proto = IPPROTO_ICMPV6 if self.v6 else IPPROTO_ICMP
        self.flow = FlowKey(self.proto, _mapped(src), ident, _mapped(dst), ident)
        ethertype = ETH_IPV6 if self.v6 else ETH_IPV4
        self.link = wire.header(ethertype, _mac(src), _mac(dst), outgoing)

    def frame(
        self, icmp_type: int, seq: int, _a: int, _b: int, _c: int, _plen: int, payload: bytes
    ) -> bytes:
        body = struct.pack("!BBHHH", icmp_type, 0, 0, self.ident, seq) + payload
        if self.v6:
            pseudo = self.src + self.dst + struct.pack("!II", len(body), IPPROTO_ICMPV6)
            csum = _checksum(pseudo + body)
            ip = _ipv6_header(self.src, self.dst, IPPROTO_ICMPV6, len(body))
        else:
            csum = _checksum(body)
            ip = _ipv4_header(self.src, self.dst, IPPROTO_ICMP, len(body))
        return self.link + ip + body[:2] + struct.pack("!H", csum) + body[4:]


class _RawDir:
    """Pre-built frames (malformed packets): the record's extra holds the bytes."""

    kind = KIND_RAW
    key = peer_key = -1

    def frame(self, _a: int, _b: int, _c: int, _d: int, _e: int, _plen: int, extra: Any) -> bytes:
        return bytes(extra)


_RAW = _RawDir()


# -------------------------------------------------------------------------- delays


class _Delay:
    """A one-way delay in ns as a function of simulation time.

    Piecewise linear through `points` ((time, delay) pairs), flat outside them. Slopes
    must be above -1 so that a later packet never overtakes an earlier one.
    """

    __slots__ = ("const", "delays", "minimum", "times")

    def __init__(self, points: Iterable[tuple[int, int]]) -> None:
        pts = sorted(points)
        for (t0, d0), (t1, d1) in itertools.pairwise(pts):
            if t1 <= t0 or d1 - d0 <= -(t1 - t0):
                raise ValueError("delay points must have increasing times and slopes above -1")
        self.times = [t for t, _ in pts]
        self.delays = [d for _, d in pts]
        self.minimum = min(self.delays)
        self.const = self.delays[0] if len(pts) == 1 else None

    @classmethod
    def constant(cls, ns: int) -> _Delay:
        return cls([(0, ns)])

    def at(self, t: int) -> int:
        if self.const is not None:
            return self.const
        i = bisect_right(self.times, t)
        if i == 0:
            return self.delays[0]
        if i == len(self.times):
            return self.delays[-1]
        t0, t1 = self.times[i - 1], self.times[i]
        d0, d1 = self.delays[i - 1], self.delays[i]
        return d0 + (d1 - d0) * (t - t0) // (t1 - t0)


# ----------------------------------------------------------------------- simulator


def _before(a: int, b: int) -> bool:
    """a < b in 32-bit serial arithmetic (RFC 1982)."""
    return 0 < ((b - a) & MASK32) < HALF32


Record = tuple[int, int, Any, int, int, int, int, int, int, bool, Any]
"""(capture time, order, direction, flags/type, seq, ack, tsval, tsecr, payload length,
echo_ok, extra): one captured packet; times relative to the start of the capture."""

Item = tuple[int, int, int]
"""(gap before it in ns, payload length, flags): one segment a sender will emit."""


class _Sim:
    """The event loop and the capture point's record list."""

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, Callable[[Any], None], Any]] = []
        self.order = itertools.count()
        self.now = 0
        self.records: list[Record] = []
        self.counts: Counter[str] = Counter()

    def at(self, t: int, fn: Callable[[Any], None], arg: Any = None) -> None:
        heapq.heappush(self.heap, (t, next(self.order), fn, arg))

    def run(self) -> None:
        heap, pop = self.heap, heapq.heappop
        while heap:
            t, _, fn, arg = pop(heap)
            self.now = t
            fn(arg)


class _App:
    """What an application does when its endpoint tells it something (default: nothing)."""

    def on_established(self, ep: _Endpoint) -> None:
        pass

    def on_data(self, ep: _Endpoint, nbytes: int) -> None:
        """Called inside packet processing: schedule reactions, never send directly."""


class _Endpoint:
    """One TCP endpoint: a paced sender and an RFC 7323 / delayed-ACK receiver."""

    def __init__(
        self,
        sim: _Sim,
        rng: random.Random,
        out: _TcpDir,
        to_me: _Delay,
        from_me: _Delay,
        *,
        hz: int,
        mss: int,
        delack_ns: int,
        clock_offset: int | None = None,
    ) -> None:
        self.sim, self.rng, self.out = sim, rng, out
        self.to_me, self.from_me = to_me, from_me
        self.peer: _Endpoint = self
        self.app: _App = _App()
        self.on_closed: Callable[[_Endpoint], None] | None = None
        self.hz = hz
        self.clock_offset = rng.getrandbits(32) if clock_offset is None else clock_offset
        self.clock_phase = rng.randrange(max(1, NS_PER_S // hz))
        self.mss, self.delack_ns = mss, delack_ns
        self.iss = rng.getrandbits(32)
        self.snd_nxt = self.snd_una = self.iss
        self.rcv_nxt = self.last_ack_sent = 0
        self.ts_recent = 0
        self.ts_recent_data = False  # a data/SYN/FIN segment carrying ts_recent arrived
        self.synced = self.established = self.closed = False
        self.fin_sent = self.fin_rcvd = False
        self.close_on_fin = True
        self.ack_pending = 0
        self.delack_deadline: int | None = None
        self.delack_armed = False
        self.ooo: list[list[int]] = []  # out-of-order blocks [start, end)
        self.ooo_fin_end: int | None = None
        self.feeds: deque[Iterator[Item]] = deque()
        self.upcoming: Item | None = None
        self.pumping = False
        self.sent: dict[int, int] | None = None  # seq -> payload, when recovering losses
        self.rto_ns = 0
        self.dupacks = 0
        self.high_sacked = self.iss  # highest right edge of a SACK block received
        self.retransmitted: set[int] = set()
        self.drop_prob = self.reorder_prob = 0.0
        self.since_impaired = 0

    # ------------------------------------------------------------------ clock

    def tsval(self, t: int) -> int:
        return (self.clock_offset + (t + self.clock_phase) * self.hz // NS_PER_S) & MASK32

    # --------------------------------------------------------------- emitting

    def _emit(
        self,
        flags: int,
        plen: int,
        seq: int | None = None,
        extra: Any = None,
        delay: int = 0,
        drop: bool = False,
    ) -> None:
        """Send one segment now: record it at the capture point, deliver it to the peer."""
        sim = self.sim
        now = sim.now
        if seq is None:
            seq = self.snd_nxt
            advance = plen + 1 if flags & (SYN | FIN) else plen
            if advance:
                self.snd_nxt = (seq + advance) & MASK32
        tsval = (self.clock_offset + (now + self.clock_phase) * self.hz // NS_PER_S) & MASK32
        if self.synced:
            flags |= ACK
            ack = self.last_ack_sent = self.rcv_nxt
            tsecr, echo_ok = self.ts_recent, self.ts_recent_data
            self.ack_pending = 0
            self.delack_deadline = None
        else:
            ack = tsecr = 0
            echo_ok = False
        d = self.from_me
        tc = now + (d.at(now) if d.const is None else d.const) + delay
        order = next(sim.order)
        sim.records.append(
            (tc, order, self.out, flags, seq, ack, tsval, tsecr, plen, echo_ok, extra)
        )
        if not drop:
            peer = self.peer
            d = peer.to_me
            arrival = tc + (d.at(tc) if d.const is None else d.const)
            seg = (flags, seq, ack, tsval, plen, extra)
            heapq.heappush(sim.heap, (arrival, order, peer._receive, seg))

    def connect(self, _: Any = None) -> None:
        self._emit(SYN, 0, extra=("syn", self.mss))

    def queue(self, items: Iterable[Item]) -> None:
        """Segments to send after what is already queued, each `gap` after the previous."""
        self.feeds.append(iter(items))
        if not self.pumping and not self.closed:
            self.upcoming = self._take()
            if self.upcoming is not None:
                self.pumping = True
                self.sim.at(self.sim.now + self.upcoming[0], self._pump)

    def close(self, _: Any = None) -> None:
        """Application close: a FIN after whatever is queued."""
        self.queue([(0, 0, FIN)])

    def abort(self, _: Any = None) -> None:
        """Application abort: RST (with ACK and timestamps, as Linux's active reset)."""
        if self.closed:
            return
        self.sim.counts["rsts"] += 1
        self._emit(RST, 0)
        self._shutdown()

    def _take(self) -> Item | None:
        feeds = self.feeds
        while feeds:
            item = next(feeds[0], None)
            if item is not None:
                return item
            feeds.popleft()
        return None

    def _pump(self, _: Any) -> None:
        item = self.upcoming
        if item is None or self.closed:
            self.pumping = False
            return
        upcoming = self.upcoming = self._take()
        _, plen, flags = item
        delay, drop = 0, False
        if plen and (self.drop_prob or self.reorder_prob):
            delay, drop = self._impair(upcoming)
        if flags & FIN:
            self.fin_sent = True
        if self.sent is not None and plen:
            self.sent[self.snd_nxt] = plen
        self._emit(flags, plen, delay=delay, drop=drop)
        if upcoming is not None:
            heapq.heappush(
                self.sim.heap, (self.sim.now + upcoming[0], next(self.sim.order), self._pump, None)
            )
        else:
            self.pumping = False
            if self.sent is not None:
                self.sim.at(self.sim.now + self.rto_ns, self._rto)

    def _impair(self, upcoming: Item | None) -> tuple[int, bool]:
        """Maybe drop this data segment after the capture point, or hold it back before
        the capture point until just after the next one (a swap)."""
        self.since_impaired += 1
        if self.since_impaired < 8 or upcoming is None or not upcoming[1]:
            return 0, False
        r = self.rng.random()
        if r < self.drop_prob:
            self.since_impaired = 0
            self.sim.counts["dropped"] += 1
            return 0, True
        if r < self.drop_prob + self.reorder_prob and upcoming[0] < NS_PER_MS:
            self.since_impaired = 0
            self.sim.counts["reordered"] += 1
            return upcoming[0] + self.rng.randrange(1_000, 5_000), False
        return 0, False

    def _retransmit(self, seq: int, again: bool = False) -> None:
        """Resend the segment at `seq` with a new TSval (once, unless `again`)."""
        plen = self.sent.get(seq) if self.sent is not None else None
        if plen is None or self.closed or (seq in self.retransmitted and not again):
            return
        self.retransmitted.add(seq)
        self.sim.counts["retransmissions"] += 1
        self._emit(PSH, plen, seq=seq)

    def _rto(self, _: Any) -> None:
        if self.closed or self.snd_una == self.snd_nxt:
            return
        self.sim.counts["rto"] += 1
        self._retransmit(self.snd_una, again=True)
        self.sim.at(self.sim.now + self.rto_ns, self._rto)

    def _shutdown(self) -> None:
        self.closed = True
        self.feeds.clear()
        self.upcoming = None
        self.delack_deadline = None

    # -------------------------------------------------------------- receiving

    def _receive(self, seg: tuple[int, int, int, int, int, Any]) -> None:
        if self.closed:
            return
        flags, seq, ack, tsval, plen, extra = seg
        if flags & RST:
            self._shutdown()
            return
        if flags & SYN:
            self._on_syn(flags, seq, ack, tsval)
            return
        if not self.synced:
            return
        if flags & ACK:
            self._on_ack(
                ack, plen, flags, extra if extra is not None and extra[0] == "sack" else None
            )
        fin = flags & FIN
        carries = plen or fin
        # RFC 7323 section 4.3: TS.Recent follows the left edge of the window.
        if tsval != self.ts_recent:
            if ((self.last_ack_sent - seq) & MASK32) < HALF32 and (
                (tsval - self.ts_recent) & MASK32
            ) < HALF32:
                self.ts_recent = tsval
                self.ts_recent_data = bool(carries)
        elif carries:
            self.ts_recent_data = True
        if carries:
            self._on_data(seq, plen, fin)
        if self.fin_rcvd and self.fin_sent and self.snd_una == self.snd_nxt:
            self._shutdown()
            if self.on_closed is not None:
                self.on_closed(self)

    def _on_syn(self, flags: int, seq: int, ack: int, tsval: int) -> None:
        if self.synced:
            return
        self.synced = True
        self.rcv_nxt = (seq + 1) & MASK32
        self.ts_recent, self.ts_recent_data = tsval, True
        if flags & ACK:  # SYN-ACK at the client: the third ACK, then the application
            self.snd_una = ack
            self._emit(0, 0)
            self.established = True
            self.sim.at(self.sim.now, self.app.on_established, self)
        else:
            self._emit(SYN, 0, extra=("syn", self.mss))

    def _on_ack(self, ack: int, plen: int, flags: int, sack: tuple[str, int, int] | None) -> None:
        if not self.established:
            self.established = True
            self.sim.at(self.sim.now, self.app.on_established, self)
        una = self.snd_una
        if sack is not None and _before(self.high_sacked, sack[2]):
            self.high_sacked = sack[2]
        if ack != una and ((ack - una) & MASK32) < HALF32:
            self.snd_una = ack
            self.dupacks = 0
            # The receiver holds data beyond a new left edge: the segment there is lost
            # (the path keeps order), so resend it at once, as SACK recovery would.
            if _before(ack, self.high_sacked):
                self._retransmit(ack)
        elif ack == una and not plen and not flags & FIN and una != self.snd_nxt:
            self.dupacks += 1
            if self.dupacks == 3:
                self._retransmit(una)

    def _on_data(self, seq: int, plen: int, fin: int) -> None:
        rcv = self.rcv_nxt
        end = (seq + plen + (1 if fin else 0)) & MASK32
        if seq == rcv:
            filled = bool(self.ooo)
            if filled:
                end = self._absorb_ooo(end)
                if self.ooo_fin_end == end:
                    fin = 1
            self.rcv_nxt = end
            if plen:
                self.app.on_data(self, ((end - seq) & MASK32) - (1 if fin else 0))
            if fin:
                self.fin_rcvd = True
                if self.close_on_fin and not self.fin_sent:  # passive close: FIN+ACK at once
                    self._shutdown_sending()
                    self.fin_sent = True
                    self._emit(FIN, 0)
                else:
                    self._emit(0, 0)
            elif filled or self.ack_pending:  # a hole filled, or the second segment
                self._emit(0, 0)
            else:
                self.ack_pending = 1
                self._arm_delack()
        elif ((seq - rcv) & MASK32) < HALF32:  # beyond a hole: duplicate ACK with SACK
            block = self._store_ooo(seq, end)
            if fin:
                self.ooo_fin_end = end
            self.sim.counts["dupacks"] += 1
            self._emit(0, 0, extra=("sack", block[0], block[1]))
        else:  # old data (a spurious retransmission): ACK at once
            self._emit(0, 0)

    def _shutdown_sending(self) -> None:
        self.feeds.clear()
        self.upcoming = None

    def _store_ooo(self, seq: int, end: int) -> list[int]:
        for block in self.ooo:
            if block[1] == seq:
                block[1] = end
                return block
            if block[0] == end:
                block[0] = seq
                return block
            if block[0] == seq:
                return block
        block = [seq, end]
        self.ooo.append(block)
        return block

    def _absorb_ooo(self, rcv: int) -> int:
        """Move the left edge over every out-of-order block it now reaches."""
        merged = True
        while merged:
            merged = False
            for block in self.ooo:
                if ((rcv - block[0]) & MASK32) < HALF32:
                    if ((block[1] - rcv) & MASK32) < HALF32:
                        rcv = block[1]
                    self.ooo.remove(block)
                    merged = True
                    break
        return rcv

    def _arm_delack(self) -> None:
        self.delack_deadline = self.sim.now + self.delack_ns
        if not self.delack_armed:
            self.delack_armed = True
            self.sim.at(self.delack_deadline, self._delack_fire)

    def _delack_fire(self, _: Any) -> None:
        deadline = self.delack_deadline
        if deadline is None or self.closed:
            self.delack_armed = False
        elif deadline > self.sim.now:  # re-armed since: one timer event per endpoint
            self.sim.at(deadline, self._delack_fire)
        else:
            self.delack_armed = False
            self.sim.counts["delack_timer_acks"] += 1
            self._emit(0, 0)


# ---------------------------------------------------------------------------- apps


def _paced(rng: random.Random, nbytes: int, mss: int, gap_ns: tuple[int, int]) -> list[Item]:
    """`nbytes` as back-to-back segments (first one at once), PSH on the last."""
    items: list[Item] = []
    while nbytes > 0:
        plen = min(mss, nbytes)
        nbytes -= plen
        gap = rng.randint(*gap_ns) if items else 0
        items.append((gap, plen, 0 if nbytes else PSH))
    return items


def _bulk_feed(
    rng: random.Random,
    segments: int,
    mss: int,
    gap_ns: tuple[int, int],
    pause_prob: float,
    pause_ns: tuple[int, int],
) -> Iterator[Item]:
    """A long paced transfer with an occasional application pause."""
    rnd = rng.random
    lo, span = gap_ns[0], gap_ns[1] - gap_ns[0]
    plo, pspan = pause_ns[0], pause_ns[1] - pause_ns[0]
    for _ in range(segments):
        gap = lo + int(rnd() * span)
        if rnd() < pause_prob:
            gap += plo + int(rnd() * pspan)
        yield (gap, mss, 0)


class _Sender(_App):
    """Sends a prepared feed once the connection is up; optionally closes after it."""

    def __init__(self, feed: Iterable[Item], close: bool = False) -> None:
        self.feed, self.close = feed, close

    def on_established(self, ep: _Endpoint) -> None:
        ep.queue(self.feed)
        if self.close:
            ep.close()


@dataclass
class _Exchange:
    request: int
    chunks: list[int]
    server_thinks: list[int]  # before each chunk, ns
    client_think: int  # after the whole response, ns


class _Requester(_App):
    """Client of a request/response protocol: request, wait for the response, think."""

    def __init__(self, script: list[_Exchange], gap_ns: tuple[int, int], rng: random.Random):
        self.script, self.gap_ns, self.rng = script, gap_ns, rng
        self.index = self.received = 0

    def on_established(self, ep: _Endpoint) -> None:
        self._request(ep)

    def _request(self, ep: _Endpoint) -> None:
        ep.queue(_paced(self.rng, self.script[self.index].request, ep.mss, self.gap_ns))

    def on_data(self, ep: _Endpoint, nbytes: int) -> None:
        self.received += nbytes
        exchange = self.script[self.index]
        if self.received < sum(exchange.chunks):
            return
        self.received = 0
        self.index += 1
        then = ep.sim.now + exchange.client_think
        ep.sim.at(then, self._request if self.index < len(self.script) else ep.close, ep)


class _Responder(_App):
    """Server: after each whole request, sends the response in chunks, thinking first."""

    def __init__(self, script: list[_Exchange], gap_ns: tuple[int, int], rng: random.Random):
        self.script, self.gap_ns, self.rng = script, gap_ns, rng
        self.index = self.received = 0

    def on_data(self, ep: _Endpoint, nbytes: int) -> None:
        self.received += nbytes
        exchange = self.script[self.index]
        if self.received < exchange.request:
            return
        self.received -= exchange.request
        self.index += 1
        t = ep.sim.now
        for think, size in zip(exchange.server_thinks, exchange.chunks, strict=True):
            t += think
            ep.sim.at(t, ep.queue, _paced(self.rng, size, ep.mss, self.gap_ns))


# ------------------------------------------------------------------------- scenario


class _Scenario:
    """Addresses, connections, the event loop and the final assembly of one capture."""

    def __init__(self, name: str, seed: int, options: dict[str, Any]) -> None:
        self.name, self.seed = name, seed
        self.opts = CaptureOptions(**options)
        self.rng = random.Random(seed)
        self.wire = _Wire(self.opts)
        self.sim = _Sim()
        self.keys = itertools.count(0, 2)
        self.floors: dict[int, tuple[FlowKey, int]] = {}  # direction key -> (flow, floor)

    # ------------------------------------------------------------- addresses

    def client_ip(self, i: int) -> bytes:
        return self._ip(0xC6120000, "fd00:0:0:18::", i)

    def server_ip(self, i: int) -> bytes:
        return self._ip(0xC6130000, "fd00:0:0:19::", i)

    def _ip(self, v4_base: int, v6_base: str, i: int) -> bytes:
        if not 0 <= i < 65534:
            raise ValueError("address index out of range")
        if self.opts.ip_version == 4:
            return struct.pack("!I", v4_base + 1 + i)
        return (int(ipaddress.IPv6Address(v6_base)) + 1 + i).to_bytes(16, "big")

    # ----------------------------------------------------------- connections

    def tcp(
        self,
        client: tuple[bytes, int],
        server: tuple[bytes, int],
        *,
        server_to: _Delay,
        server_from: _Delay,
        client_delay: _Delay,
        hz: int = 1000,
        mss: int = 1448,
        delack_ns: int = 40 * NS_PER_MS,
        clock_offsets: tuple[int | None, int | None] = (None, None),
    ) -> tuple[_Endpoint, _Endpoint]:
        """A client (near the capture point) and a server endpoint, wired together."""
        key = next(self.keys)
        up = _TcpDir(self.wire, key, client[0], client[1], server[0], server[1], True)
        down = _TcpDir(self.wire, key + 1, server[0], server[1], client[0], client[1], False)
        common: dict[str, Any] = {"hz": hz, "mss": mss, "delack_ns": delack_ns}
        c = _Endpoint(
            self.sim, self.rng, up, client_delay, client_delay,
            clock_offset=clock_offsets[0], **common,
        )  # fmt: skip
        s = _Endpoint(
            self.sim, self.rng, down, server_to, server_from,
            clock_offset=clock_offsets[1], **common,
        )  # fmt: skip
        c.peer, s.peer = s, c
        self.floors[up.key] = (up.flow, server_to.minimum + server_from.minimum)
        self.floors[down.key] = (down.flow, 2 * client_delay.minimum)
        return c, s

    def icmp_dirs(self, client: bytes, server: bytes, ident: int) -> tuple[_IcmpDir, _IcmpDir]:
        key = next(self.keys)
        return (
            _IcmpDir(self.wire, key, client, server, ident, True),
            _IcmpDir(self.wire, key + 1, server, client, ident, False),
        )

    @staticmethod
    def synchronize(c: _Endpoint, s: _Endpoint) -> None:
        """Both ends as if the handshake happened before the capture started."""
        for a in (c, s):
            a.synced = a.established = True
            a.snd_nxt = a.snd_una = (a.iss + 1) & MASK32
        for a, b in ((c, s), (s, c)):
            a.rcv_nxt = a.last_ack_sent = b.snd_nxt
            a.ts_recent = (b.tsval(0) - 1) & MASK32

    # -------------------------------------------------------------- assembly

    def finish(
        self, malformed: int = 0, kinds: Iterable[str] = MALFORMED_KINDS
    ) -> tuple[bytes, Truth]:
        self.sim.run()
        records = _time_ordered(self.sim.records)
        injected: Counter[str] = Counter()
        if malformed:
            records = _inject_malformed(self, records, malformed, tuple(kinds), injected)
        res, start = self.opts.resolution_ns, self.opts.start_ns
        samples, pure, counts, sent = _match(records, res, start)
        pcap = _serialize(records, self.opts)
        valid: dict[tuple[FlowKey, int], set[int]] = {}
        by_echo: dict[tuple[FlowKey, int], set[int]] = {}
        for s in samples:
            valid.setdefault((s.reply_flow, s.identifier), set()).add(s.rtt_ns)
            by_echo.setdefault((s.reply_flow, s.t_first_echo_ns), set()).add(s.rtt_ns)
        counts.update(self.sim.counts)
        counts["samples"] = len(samples)
        counts["data_driven_samples"] = sum(s.data_driven for s in samples)
        counts["pure_ack_echoes"] = len(pure)
        counts["malformed"] = sum(injected.values())
        return pcap, Truth(
            scenario=self.name,
            seed=self.seed,
            linktype=self.opts.linktype,
            resolution_ns=res,
            packets=len(records),
            first_ns=start + _quantize(records[0][0], res) if records else start,
            last_ns=start + _quantize(records[-1][0], res) if records else start,
            min_path_rtt_ns=self._floors(res),
            samples=samples,
            pure_ack_echoes=pure,
            valid_rtts=valid,
            rtt_by_echo=by_echo,
            malformed=dict(injected),
            counts=dict(counts),
            identifiers_sent=sent,
        )

    def _floors(self, res: int) -> dict[FlowKey, int]:
        """Path RTT floors; with coarse timestamps a sample may look up to one tick shorter."""
        floors: dict[FlowKey, int] = {}
        for flow, floor in self.floors.values():
            if res > 1:
                floor = max(0, floor - res + 1)
                floor = -(-floor // res) * res
            floors[flow] = min(floor, floors.get(flow, floor))
        return floors


def _time_ordered(records: list[Record]) -> list[Record]:
    """Records by capture time; ties keep their order (emission order)."""
    times = np.fromiter((r[0] for r in records), dtype=np.int64, count=len(records))
    return [records[i] for i in np.argsort(times, kind="stable").tolist()]


def _quantize(t: int, res: int) -> int:
    return t - t % res


# -------------------------------------------------------------------- the matcher


def _match(
    records: list[Record], res: int, start: int
) -> tuple[list[Sample], list[Sample], Counter[str], dict[FlowKey, list[tuple[int, int]]]]:
    """The ground-truth matcher over the capture as written (times rounded to `res`);
    also every identifier sent per direction (Truth.identifiers_sent)."""
    # (direction key << 32 | identifier) -> [t_first_sent, t_first_echo, data_driven, dir]
    first_data: dict[int, list[Any]] = {}
    first_pure: dict[int, list[Any]] = {}
    n_tcp = n_icmp = 0
    for t, _, d, flags, seq, _ack, tsval, tsecr, plen, echo_ok, _extra in records:
        kind = d.kind
        if kind == KIND_TCP:
            n_tcp += 1
            t = start + t - t % res
            if flags & ACK:
                k = d.peer_key << 32 | tsecr
                entry = first_data.get(k)
                if entry is None:
                    entry = first_pure.get(k)
                    if entry is not None and entry[1] is None:
                        entry[1] = t
                elif entry[1] is None:
                    entry[1], entry[2] = t, echo_ok
            k = d.key << 32 | tsval
            if plen or flags & (SYN | FIN):
                if k not in first_data:
                    first_data[k] = [t, None, False, d]
            elif k not in first_pure:
                first_pure[k] = [t, None, False, d]
        elif kind == KIND_ICMP:
            n_icmp += 1
            t = start + t - t % res
            if flags in (8, 128):
                first_data.setdefault(d.key << 32 | seq, [t, None, True, d])
            else:
                entry = first_data.get(d.peer_key << 32 | seq)
                if entry is not None and entry[1] is None:
                    entry[1] = t
    samples = [
        Sample(e[3].flow, k & MASK32, e[0], e[1], e[1] - e[0], e[2])
        for k, e in first_data.items()
        if e[1] is not None
    ]
    pure = [
        Sample(e[3].flow, k & MASK32, e[0], e[1], e[1] - e[0], False)
        for k, e in first_pure.items()
        if e[1] is not None and k not in first_data
    ]
    samples.sort(key=lambda s: (s.t_first_sent_ns, s.t_first_echo_ns))
    pure.sort(key=lambda s: (s.t_first_sent_ns, s.t_first_echo_ns))
    counts = Counter(packets=len(records), tcp_packets=n_tcp, icmp_packets=n_icmp)
    sent: dict[FlowKey, list[tuple[int, int]]] = {}
    for k, e in first_data.items():  # dicts keep insertion order: capture order
        sent.setdefault(e[3].flow, []).append((e[0], k & MASK32))
    return samples, pure, counts, sent


# ------------------------------------------------------------------- serialization


def _serialize(records: list[Record], opts: CaptureOptions) -> bytes:
    res, start = opts.resolution_ns, opts.start_ns
    magic = 0xA1B23C4D if res == 1 else 0xA1B2C3D4
    header = struct.pack("<IHHiIII", magic, 2, 4, 0, 0, opts.snaplen or 262144, opts.linktype)
    snap = opts.snaplen or 1 << 62
    out = [header]
    append = out.append
    rec_header = struct.Struct("<IIII").pack
    pack_tcp = _TCP_TS.pack
    zeros: dict[int, bytes] = {}  # payload bytes, one shared object per length
    for t, _, d, a, b, c, e, f, plen, _ok, extra in records:
        if extra is None:  # the common TCP segment: NOP NOP TS options (inlined for speed)
            l4_len = 32 + plen
            prefix = d._prefixes.get(l4_len) or d._prefix(l4_len)
            tcp = pack_tcp(d.sport, d.dport, b, c, 0x80, a, TCP_WINDOW, 0, 0, _TS_KIND_LEN, e, f)
            frame = prefix + tcp
            hlen = len(frame)
            wire_len = hlen + plen
            incl = wire_len if wire_len <= snap else snap
        else:
            frame = d.frame(a, b, c, e, f, plen, extra)
            hlen = len(frame)
            wire_len = hlen + plen
            if d.kind == KIND_RAW:  # `plen` is what the capture did not keep
                incl = hlen if hlen <= snap else snap
            else:
                incl = wire_len if wire_len <= snap else snap
        if incl < hlen:
            frame = frame[:incl]
        t += start
        if res != 1:
            t -= t % res
        sec, ns = divmod(t, NS_PER_S)
        append(rec_header(sec, ns // res, incl, wire_len) + frame)
        if incl > hlen:
            n = incl - hlen
            append(zeros.get(n) or zeros.setdefault(n, bytes(n)))
    return b"".join(out)


# ------------------------------------------------------------------------ malformed


def _inject_malformed(
    sc: _Scenario, records: list[Record], count: int, kinds: tuple[str, ...], injected: Counter[str]
) -> list[Record]:
    """`count` malformed frames between valid packets, cycling through `kinds`.

    Frames that imitate TCP copy a real flow seen so far, with a TSval newer than its
    last one and a TSecr echoing the last data TSval of the other direction: a parser
    that accepted them would report an RTT the truth does not contain.
    """
    unknown = set(kinds) - set(MALFORMED_KINDS)
    if unknown:
        raise ValueError(f"unknown malformed kinds: {sorted(unknown)}")
    rng = sc.rng
    if count > len(records) - 1:
        raise ValueError("more malformed packets than gaps between packets")
    positions = sorted(rng.sample(range(1, len(records)), count))
    plan = [kinds[i % len(kinds)] for i in range(count)]
    rng.shuffle(plan)
    last: dict[int, Record] = {}
    last_data_tsval: dict[int, int] = {}
    dirs: dict[int, _TcpDir] = {}
    out: list[Record] = []
    p = 0
    for i, rec in enumerate(records):
        while p < count and positions[p] == i:
            kind = plan[p]
            if not dirs:  # nothing to imitate yet
                kind = "garbage"
            frame, wire_len = _malformed_frame(sc, kind, rng, dirs, last, last_data_tsval)
            t = (out[-1][0] + rec[0]) // 2
            out.append((t, 0, _RAW, 0, 0, 0, 0, 0, wire_len - len(frame), False, frame))
            injected[kind] += 1
            p += 1
        out.append(rec)
        d = rec[2]
        if d.kind == KIND_TCP:
            dirs[d.key] = d
            last[d.key] = rec
            if rec[8]:
                last_data_tsval[d.key] = rec[6]
    return out


def _malformed_frame(
    sc: _Scenario,
    kind: str,
    rng: random.Random,
    dirs: dict[int, _TcpDir],
    last: dict[int, Record],
    last_data_tsval: dict[int, int],
) -> tuple[bytes, int]:
    """(captured bytes, length on the wire) of one malformed frame."""
    if kind == "garbage":
        return _garbage(sc.wire, rng)
    d = dirs[rng.choice(sorted(dirs))]
    rec = last[d.key]
    seq, ack = rec[4], rec[5]
    tsval = (last_data_tsval.get(d.key, rec[6]) + 1) & MASK32
    tsecr = last_data_tsval.get(d.peer_key, rec[7])
    ts = _ts_option(tsval, tsecr)
    tcp = _tcp_header(d.sport, d.dport, seq, ack, ACK | PSH, ts)
    payload = b"\x00" * 100
    if kind == "truncated_tcp":  # the capture stops inside the 20-byte TCP header
        frame = d.link + d.ip_header(len(tcp) + 100) + tcp + payload
        cut = len(frame) - len(tcp) - 100 + rng.randint(1, 19)
        return frame[:cut], len(frame)
    if kind == "options_cut":
        cut = rng.randint(1, 11)
        if rng.random() < 0.5:  # the capture stops inside the options
            frame = d.link + d.ip_header(len(tcp) + 100) + tcp + payload
            return frame[: len(frame) - len(tcp) - 100 + 20 + cut], len(frame)
        # the IP packet ends inside the options its TCP header announces
        frame = sc.wire.pad(d.link + d.ip_header(20 + cut) + tcp[: 20 + cut])
        return frame, len(frame)
    if kind == "bad_ihl":
        if d.v6:  # an IPv4 packet between made-up hosts
            d = _TcpDir(sc.wire, -1, b"\xc6\x12\xff\xfe", 40000, b"\xc6\x13\xff\xfe", 443, True)
            tcp = _tcp_header(40000, 443, seq, ack, ACK | PSH, ts)
        ihl = rng.choice([0, 1, 2, 3, 4, 15])
        frame = d.link + _ipv4_header(d.src, d.dst, IPPROTO_TCP, len(tcp), ihl=ihl) + tcp
        return frame, len(frame)  # 52 bytes of IP: shorter than an IHL of 15 says
    if kind == "bad_ts_length":
        options = rng.choice(
            [
                struct.pack("!BBBBI", 1, 1, 8, 8, tsval) + b"\x00" * 4,  # length 8
                struct.pack("!BBBBII", 1, 1, 8, 12, tsval, tsecr) + b"\x00\x00\x01\x01",  # 12
                struct.pack("!BBBBII", 1, 1, 8, 0, tsval, tsecr),  # 0: loops a naive walker
            ]
        )
        tcp = _tcp_header(d.sport, d.dport, seq, ack, ACK | PSH, options)
        frame = d.link + d.ip_header(len(tcp) + 100) + tcp + payload
        return frame, len(frame)
    if kind == "fragment":  # a later fragment whose bytes look like a TCP header
        offset = rng.randint(1, 180)
        more = 1 if rng.random() < 0.5 else 0
        ident = rng.randint(1, 0xFFFF)
        if d.v6:
            body = struct.pack("!BBHI", IPPROTO_TCP, 0, offset << 3 | more, ident) + tcp + payload
            frame = d.link + _ipv6_header(d.src, d.dst, 44, len(body)) + body
        else:
            frag = offset | (0x2000 if more else 0)
            ip = _ipv4_header(d.src, d.dst, IPPROTO_TCP, len(tcp) + 100, frag=frag, ident=ident)
            frame = d.link + ip + tcp + payload
        return frame, len(frame)
    raise ValueError(f"unknown malformed kind {kind!r}")


def _garbage(wire: _Wire, rng: random.Random) -> tuple[bytes, int]:
    """Random bytes that no parser can take for IP: a runt, a bad IP version, or an
    unknown link protocol."""
    variant = rng.randrange(3)
    if variant == 0 or (variant == 2 and wire.opts.link == "raw"):
        # shorter than any link header plus an IPv4 header, whatever the bytes say
        frame = rng.randbytes(rng.randint(1, 19))
        return frame, len(frame)
    mac_a, mac_b = b"\x02\x00\xc6\x12\xff\xfd", b"\x02\x00\xc6\x13\xff\xfd"
    if variant == 1:
        version = rng.choice([0, 1, 2, 3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15])
        body = bytes([version << 4 | rng.randrange(16)]) + rng.randbytes(rng.randint(19, 80))
        frame = wire.header(ETH_IPV4, mac_a, mac_b, True) + body
    else:
        frame = wire.header(ETH_UNKNOWN, mac_a, mac_b, True) + rng.randbytes(rng.randint(20, 80))
    frame = wire.pad(frame)
    return frame, len(frame)


# ------------------------------------------------------------------------ scenarios


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _scenario(fn: Callable[_P, _T]) -> Callable[_P, _T]:
    """Run a scenario with the cyclic garbage collector paused: scenarios allocate
    millions of small acyclic tuples, and collecting would triple their run time."""

    @functools.wraps(fn)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return run


def _ms(value: float) -> int:
    return round(value * NS_PER_MS)


def _us_range(r: tuple[float, float]) -> tuple[int, int]:
    return round(r[0] * NS_PER_US), round(r[1] * NS_PER_US)


def _ms_range(r: float | tuple[float, float]) -> tuple[int, int]:
    if isinstance(r, (int, float)):
        return _ms(r), _ms(r)
    return _ms(r[0]), _ms(r[1])


class _Pair(NamedTuple):
    client: _Endpoint
    server: _Endpoint
    start_ns: int
    rtt_ns: int


def _bulk_flows(
    sc: _Scenario,
    *,
    flows: int,
    packets: int,
    rtt_ms: float | tuple[float, float],
    gap_us: tuple[float, float],
    mss: int,
    delack_ms: float,
    pause_prob: float,
    pause_ms: tuple[float, float],
    handshake: bool,
    ts_hz: int,
    start_spread_ms: float = 10.0,
    server_to: Callable[[int], _Delay] | None = None,
    clock_offset: Callable[[], int] | None = None,
    configure: Callable[[_Endpoint], None] | None = None,
    bidirectional: bool = False,
    engine: str = "auto",
) -> list[_Pair]:
    """`flows` transfers client -> server totalling about `packets` packets.

    engine "auto" computes plain one-way flows (no handshake, no impairment) directly,
    flow by flow (`_one_way_records`); "events" runs every flow through the event loop.
    Both give the same packets; each flow draws from its own random stream so that
    they do.
    """
    if flows < 1 or packets < 3 * flows:
        raise ValueError("need at least one flow and three packets per flow")
    if engine not in ("auto", "events"):
        raise ValueError("engine must be auto or events")
    direct = engine == "auto" and not (handshake or bidirectional or configure)
    rng = sc.rng
    # one-way: two segments per delayed ACK; both ways: ACKs ride on the data
    segments = max(1, round(packets / (2 if bidirectional else 1.5) / flows))
    rtt_lo, rtt_hi = _ms_range(rtt_ms)
    gaps, pauses = _us_range(gap_us), _ms_range(pause_ms)
    pairs = []
    for i in range(flows):
        rtt = rng.randint(rtt_lo, rtt_hi)
        near = _Delay.constant(
            rng.randint(20 * NS_PER_US, max(20 * NS_PER_US, min(500 * NS_PER_US, rtt // 4)))
        )
        to_server = server_to(rtt) if server_to else _Delay.constant(rtt - rtt // 2)
        offsets = (clock_offset(), clock_offset()) if clock_offset else (None, None)
        c, s = sc.tcp(
            (sc.client_ip(i % 4000), 33000 + i // 4000),
            (sc.server_ip(i % 97), 5201),
            server_to=to_server,
            server_from=_Delay.constant(rtt // 2),
            client_delay=near,
            hz=ts_hz,
            mss=mss,
            delack_ns=_ms(delack_ms),
            clock_offsets=offsets,
        )
        if configure is not None:
            configure(c)
        start = rng.randint(0, _ms(start_spread_ms))
        flow_rng = random.Random(rng.getrandbits(64))
        feed = _bulk_feed(flow_rng, segments, mss, gaps, pause_prob, pauses)
        pairs.append(_Pair(c, s, start, rtt))
        if direct:
            sc.synchronize(c, s)
            sc.sim.records.extend(_one_way_records(sc.sim, c, s, start, feed))
            continue
        c.app = _Sender(feed)
        if bidirectional:
            s.app = _Sender(_bulk_feed(flow_rng, segments, mss, gaps, pause_prob, pauses))
        if handshake:
            sc.sim.at(start, c.connect)
        else:
            sc.synchronize(c, s)
            sc.sim.at(start, c.app.on_established, c)
            sc.sim.at(start, s.app.on_established, s)
    sc.sim.counts["flows"] = flows
    return pairs


def _one_way_records(
    sim: _Sim, c: _Endpoint, s: _Endpoint, start: int, feed: Iterable[Item]
) -> list[Record]:
    """The packets the event loop would produce for a one-way transfer c -> s with no
    handshake, loss or reordering, computed in one pass without it: each segment of c
    echoes the ACKs that reached c before it left, and s ACKs every second segment or
    when its delayed-ACK timer fires. (Events at the very same nanosecond might be
    ordered differently than in the event loop; with random gaps that does not occur.)
    """
    c_out, s_in, s_out, c_in = c.from_me, s.to_me, s.from_me, c.to_me
    c_offset, c_phase, c_hz = c.clock_offset, c.clock_phase, c.hz
    s_offset, s_phase, s_hz = s.clock_offset, s.clock_phase, s.hz
    c_dir, s_dir = c.out, s.out
    c_ack, s_seq = c.rcv_nxt, s.snd_nxt
    c_recent = c.ts_recent  # c's TS.Recent
    rcv = last_ack = s.rcv_nxt  # s's receive state
    ts_recent, ts_data = s.ts_recent, s.ts_recent_data
    delack = s.delack_ns
    deadline: int | None = None
    order = sim.order
    records: list[Record] = []
    append = records.append
    in_flight: deque[tuple[int, int]] = deque()  # ACKs on their way to c: (arrival, tsval)
    timer_acks = 0

    def ack(t: int) -> None:
        tc = t + (s_out.const if s_out.const is not None else s_out.at(t))
        tsval = (s_offset + (t + s_phase) * s_hz // NS_PER_S) & MASK32
        append((tc, next(order), s_dir, ACK, s_seq, rcv, tsval, ts_recent, 0, ts_data, None))
        in_flight.append((tc + (c_in.const if c_in.const is not None else c_in.at(tc)), tsval))

    seq, e = c.snd_nxt, start
    for gap, plen, _ in feed:
        e += gap
        tc = e + (c_out.const if c_out.const is not None else c_out.at(e))
        r = tc + (s_in.const if s_in.const is not None else s_in.at(tc))
        if deadline is not None and deadline < r:  # s's timer fires before this arrives
            ack(deadline)
            last_ack, deadline = rcv, None
            timer_acks += 1
        while in_flight and in_flight[0][0] <= e:  # c takes in the ACKs that reached it
            tsv = in_flight.popleft()[1]
            if ((tsv - c_recent) & MASK32) < HALF32:
                c_recent = tsv
        tsval = (c_offset + (e + c_phase) * c_hz // NS_PER_S) & MASK32
        append((tc, next(order), c_dir, ACK, seq, c_ack, tsval, c_recent, plen, False, None))
        if tsval != ts_recent:  # RFC 7323 TS.Recent
            if ((last_ack - seq) & MASK32) < HALF32 and ((tsval - ts_recent) & MASK32) < HALF32:
                ts_recent, ts_data = tsval, True
        else:
            ts_data = True
        rcv = seq = (seq + plen) & MASK32
        if deadline is None:
            deadline = r + delack
        else:
            ack(r)
            last_ack, deadline = rcv, None
    if deadline is not None:
        ack(deadline)
        timer_acks += 1
    if timer_acks:
        sim.counts["delack_timer_acks"] += timer_acks
    return records


@_scenario
def bulk(
    seed: int = 0,
    *,
    flows: int = 1,
    packets: int = 20_000,
    rtt_ms: float | tuple[float, float] = 20.0,
    gap_us: tuple[float, float] = (10.0, 50.0),
    mss: int = 1448,
    delack_ms: float = 40.0,
    pause_prob: float = 0.002,
    pause_ms: tuple[float, float] = (1.0, 100.0),
    handshake: bool = False,
    bidirectional: bool = False,
    ts_hz: int = 1000,
    engine: str = "auto",
    **options: Any,
) -> tuple[bytes, Truth]:
    """Bulk transfers client -> server: a segment every `gap_us`, now and then an
    application pause; the receiver ACKs every second segment (40 ms timer for a lone
    one). `rtt_ms` is each flow's constant data path RTT, or a (low, high) range to
    draw from. About `packets` packets in all. Without `handshake` the capture starts
    mid-connection. With `bidirectional` the server sends as much at the same time:
    then a pure ACK and a data segment often share a TSval, and the first echo after
    the data segment may answer the pure ACK (a sample with data_driven False, which
    can be below the path RTT). `engine="events"` forces the general simulator (the
    default computes plain one-way flows directly; same packets, much faster)."""
    sc = _Scenario("bulk", seed, options)
    _bulk_flows(
        sc, flows=flows, packets=packets, rtt_ms=rtt_ms, gap_us=gap_us, mss=mss,
        delack_ms=delack_ms, pause_prob=pause_prob, pause_ms=pause_ms,
        handshake=handshake, ts_hz=ts_hz, bidirectional=bidirectional, engine=engine,
    )  # fmt: skip
    return sc.finish()


@_scenario
def many_flows(
    seed: int = 0,
    *,
    flows: int = 2_000,
    packets: int = 200_000,
    rtt_ms: tuple[float, float] = (1.0, 300.0),
    gap_us: tuple[float, float] = (10.0, 50.0),
    pause_prob: float = 0.05,
    pause_ms: tuple[float, float] = (1.0, 100.0),
    start_spread_ms: float = 1_000.0,
    handshake: bool = False,
    mss: int = 1448,
    ts_hz: int = 1000,
    engine: str = "auto",
    **options: Any,
) -> tuple[bytes, Truth]:
    """Thousands of concurrent bursty transfers with path RTTs drawn from `rtt_ms`,
    starting within `start_spread_ms`. Clients 198.18.x.y (fd00:0:0:18::x), servers
    198.19.x.y (fd00:0:0:19::x), every 4-tuple distinct."""
    sc = _Scenario("many_flows", seed, options)
    _bulk_flows(
        sc, flows=flows, packets=packets, rtt_ms=rtt_ms, gap_us=gap_us, mss=mss,
        delack_ms=40.0, pause_prob=pause_prob, pause_ms=pause_ms, handshake=handshake,
        ts_hz=ts_hz, start_spread_ms=start_spread_ms, engine=engine,
    )  # fmt: skip
    return sc.finish()


@_scenario
def ramping_rtt(
    seed: int = 0,
    *,
    flows: int = 1,
    duration_s: float = 4.0,
    rtt_ms: tuple[float, float] = (10.0, 200.0),
    gap_us: tuple[float, float] = (200.0, 600.0),
    ts_hz: int = 1000,
    **options: Any,
) -> tuple[bytes, Truth]:
    """A queue builds between the capture point and the receiver: the path RTT grows
    linearly from rtt_ms[0] to rtt_ms[1] over the first half of `duration_s`, then falls
    back. Truth's floor is rtt_ms[0]."""
    lo, hi = _ms(rtt_ms[0]), _ms(rtt_ms[1])
    duration = round(duration_s * NS_PER_S)
    mean_gap = (gap_us[0] + gap_us[1]) / 2 * NS_PER_US
    packets = max(3, round(duration / mean_gap * 1.5)) * flows

    def ramp(_rtt: int) -> _Delay:
        base = lo - lo // 2
        return _Delay([(0, base), (duration // 2, base + hi - lo), (duration, base)])

    sc = _Scenario("ramping_rtt", seed, options)
    _bulk_flows(
        sc, flows=flows, packets=packets, rtt_ms=rtt_ms[0], gap_us=gap_us, mss=1448,
        delack_ms=40.0, pause_prob=0.0, pause_ms=(0.0, 0.0), handshake=False,
        ts_hz=ts_hz, start_spread_ms=0.0, server_to=ramp,
    )  # fmt: skip
    sc.sim.counts["rtt_low_ns"], sc.sim.counts["rtt_high_ns"] = lo, hi
    return sc.finish()


@_scenario
def reordering(
    seed: int = 0,
    *,
    flows: int = 2,
    packets: int = 6_000,
    reorder_prob: float = 0.03,
    rtt_ms: float | tuple[float, float] = (5.0, 50.0),
    ts_hz: int = 1000,
    **options: Any,
) -> tuple[bytes, Truth]:
    """Bulk flows where some data segments reach the capture point just after the
    segment sent after them (a swap); the receiver sends a duplicate ACK for the
    early one, then an ACK when the late one fills the hole. counts["reordered"]."""

    def configure(c: _Endpoint) -> None:
        c.reorder_prob = reorder_prob

    sc = _Scenario("reordering", seed, options)
    _bulk_flows(
        sc, flows=flows, packets=packets, rtt_ms=rtt_ms, gap_us=(100.0, 400.0), mss=1448,
        delack_ms=40.0, pause_prob=0.002, pause_ms=(1.0, 60.0), handshake=False,
        ts_hz=ts_hz, configure=configure,
    )  # fmt: skip
    return sc.finish()


@_scenario
def loss(
    seed: int = 0,
    *,
    flows: int = 2,
    packets: int = 6_000,
    loss_prob: float = 0.01,
    rtt_ms: float | tuple[float, float] = (5.0, 50.0),
    ts_hz: int = 1000,
    **options: Any,
) -> tuple[bytes, Truth]:
    """Bulk flows where some data segments are lost after the capture point: the
    receiver sends duplicate ACKs echoing the last in-order segment's TSval, the sender
    retransmits on the third one (new TSval) and the hole fills. counts["dropped"],
    ["retransmissions"], ["dupacks"]."""

    def configure(c: _Endpoint) -> None:
        c.drop_prob = loss_prob
        c.sent = {}
        c.rto_ns = 3 * _ms_range(rtt_ms)[1] + 200 * NS_PER_MS

    sc = _Scenario("loss", seed, options)
    _bulk_flows(
        sc, flows=flows, packets=packets, rtt_ms=rtt_ms, gap_us=(100.0, 400.0), mss=1448,
        delack_ms=40.0, pause_prob=0.0, pause_ms=(0.0, 0.0), handshake=False,
        ts_hz=ts_hz, configure=configure,
    )  # fmt: skip
    return sc.finish()


@_scenario
def wraparound(
    seed: int = 0,
    *,
    flows: int = 2,
    ticks_before_wrap: int = 1_000,
    duration_s: float = 3.0,
    ts_hz: int = 1000,
    gap_us: tuple[float, float] = (200.0, 600.0),
    **options: Any,
) -> tuple[bytes, Truth]:
    """Bulk flows whose TSval clocks (both ends) start within `ticks_before_wrap`
    ticks of 2^32 and wrap during the capture. counts["wrapped_directions"]."""
    if ticks_before_wrap < 1 or ticks_before_wrap >= duration_s * ts_hz / 2:
        raise ValueError("the clocks must wrap within the first half of the capture")
    sc = _Scenario("wraparound", seed, options)
    mean_gap = (gap_us[0] + gap_us[1]) / 2 * NS_PER_US
    packets = max(3, round(duration_s * NS_PER_S / mean_gap * 1.5)) * flows

    def offset() -> int:
        return (1 << 32) - sc.rng.randint(max(1, ticks_before_wrap // 2), ticks_before_wrap)

    _bulk_flows(
        sc, flows=flows, packets=packets, rtt_ms=(5.0, 40.0), gap_us=gap_us, mss=1448,
        delack_ms=40.0, pause_prob=0.0, pause_ms=(0.0, 0.0), handshake=False,
        ts_hz=ts_hz, start_spread_ms=0.0, clock_offset=offset,
    )  # fmt: skip
    pcap, truth = sc.finish()
    truth.counts["wrapped_directions"] = _count_wraps(sc.sim.records)
    return pcap, truth


@_scenario
def delayed_ack(
    seed: int = 0,
    *,
    flows: int = 4,
    duration_s: float = 10.0,
    rtt_ms: tuple[float, float] = (10.0, 60.0),
    gap_us: tuple[float, float] = (1200.0, 1800.0),
    ts_hz: int = 1000,
    **options: Any,
) -> tuple[bytes, Truth]:
    """Flows that send a segment every `gap_us` (more than one TS tick: each segment
    has a new TSval) to a receiver that ACKs every second segment. Each ACK echoes the
    first segment of its pair (RFC 7323), so the second segment of a pair is never
    echoed: a sampler that picks one packet misses about half the time. No pauses;
    path RTTs drawn from `rtt_ms`."""
    if gap_us[0] * NS_PER_US * ts_hz <= NS_PER_S:
        raise ValueError("segments must be more than one TS tick apart")
    sc = _Scenario("delayed_ack", seed, options)
    mean_gap = (gap_us[0] + gap_us[1]) / 2 * NS_PER_US
    packets = max(3, round(duration_s * NS_PER_S / mean_gap * 1.5)) * flows
    _bulk_flows(
        sc, flows=flows, packets=packets, rtt_ms=rtt_ms, gap_us=gap_us, mss=1448,
        delack_ms=40.0, pause_prob=0.0, pause_ms=(0.0, 0.0), handshake=False,
        ts_hz=ts_hz, start_spread_ms=0.0,
    )  # fmt: skip
    return sc.finish()


def _count_wraps(records: list[Record]) -> int:
    previous: dict[int, int] = {}
    wrapped: set[int] = set()
    for rec in records:
        d = rec[2]
        if d.kind != KIND_TCP:
            continue
        before = previous.get(d.key)
        if before is not None and rec[6] < before and before - rec[6] > HALF32:
            wrapped.add(d.key)
        previous[d.key] = rec[6]
    return len(wrapped)


@_scenario
def app_limited(
    seed: int = 0,
    *,
    connections: int = 3,
    requests: int = 6,
    request_bytes: tuple[int, int] = (100, 600),
    chunk_bytes: tuple[int, int] = (200, 6_000),
    chunks: tuple[int, int] = (1, 3),
    think_ms: tuple[float, float] = (100.0, 600.0),
    client_think_ms: tuple[float, float] = (50.0, 400.0),
    rtt_ms: float | tuple[float, float] = (5.0, 60.0),
    ts_hz: int = 1000,
    **options: Any,
) -> tuple[bytes, Truth]:
    """Request/response with think times. Each response comes in `chunks` pushes, each
    after a server think time; the client sends pure ACKs in between, so the next push
    echoes a pure ACK's TSval: a naive matcher would report the think time
    (truth.pure_ack_echoes). Connections open with a handshake and close with FINs."""
    sc = _Scenario("app_limited", seed, options)
    rng = sc.rng
    rtt_lo, rtt_hi = _ms_range(rtt_ms)
    gap = (10 * NS_PER_US, 50 * NS_PER_US)
    for i in range(connections):
        script = [
            _Exchange(
                request=rng.randint(*request_bytes),
                chunks=[rng.randint(*chunk_bytes) for _ in range(n)],
                server_thinks=[rng.randint(*_ms_range(think_ms)) for _ in range(n)],
                client_think=rng.randint(*_ms_range(client_think_ms)),
            )
            for n in (rng.randint(*chunks) for _ in range(requests))
        ]
        rtt = rng.randint(rtt_lo, rtt_hi)
        c, s = sc.tcp(
            (sc.client_ip(i), 40000 + i),
            (sc.server_ip(i), 443),
            server_to=_Delay.constant(rtt - rtt // 2),
            server_from=_Delay.constant(rtt // 2),
            client_delay=_Delay.constant(rng.randint(50, 300) * NS_PER_US),
            hz=ts_hz,
        )
        c.app = _Requester(script, gap, rng)
        s.app = _Responder(script, gap, rng)
        sc.sim.at(rng.randint(0, 50 * NS_PER_MS), c.connect)
        sc.sim.counts["requests"] += requests
        sc.sim.counts["chunks"] += sum(len(x.chunks) for x in script)
    sc.sim.counts["connections"] = connections
    return sc.finish()


class _Generations(_App):
    """Opens connection after connection on one 4-tuple, each with a clock that starts
    below the previous connection's last TSval (so stale state would reject it)."""

    def __init__(self, sc: _Scenario, generations: int, segments: int, rtt: int, hz: int) -> None:
        self.sc, self.generations, self.segments, self.rtt = sc, generations, segments, rtt
        self.hz = hz
        self.done = 0
        self.last_tsvals = (0, 0)

    def start(self, _: Any = None) -> None:
        sc, rng = self.sc, self.sc.rng
        if self.done:
            offsets: tuple[int | None, int | None] = tuple(  # type: ignore[assignment]
                (t - rng.randint(100_000, 10_000_000)) & MASK32 for t in self.last_tsvals
            )
        else:
            offsets = (None, None)
        c, s = sc.tcp(
            (sc.client_ip(0), 50000),
            (sc.server_ip(0), 80),
            server_to=_Delay.constant(self.rtt - self.rtt // 2),
            server_from=_Delay.constant(self.rtt // 2),
            client_delay=_Delay.constant(200 * NS_PER_US),
            hz=self.hz,
            clock_offsets=offsets,
        )
        uploader = c if self.done % 2 == 0 else s
        feed = _bulk_feed(rng, self.segments, 1448, (20 * NS_PER_US, 80 * NS_PER_US), 0.0, (0, 0))
        uploader.app = _Sender(feed, close=True)
        c.on_closed = self._closed(c, s)
        c.connect()
        self.sc.sim.counts["connections"] += 1

    def _closed(self, c: _Endpoint, s: _Endpoint) -> Callable[[_Endpoint], None]:
        def closed(_ep: _Endpoint) -> None:
            now = self.sc.sim.now
            self.last_tsvals = (c.tsval(now), s.tsval(now))
            self.done += 1
            if self.done < self.generations:
                self.sc.sim.at(now + self.sc.rng.randint(1, 50) * NS_PER_MS, self.start)

        return closed


@_scenario
def fin_reuse(
    seed: int = 0,
    *,
    generations: int = 2,
    segments: int = 200,
    rtt_ms: float = 20.0,
    ts_hz: int = 1000,
    **options: Any,
) -> tuple[bytes, Truth]:
    """Connections on one 4-tuple, one after the other: handshake, a transfer (client
    to server, then server to client, alternating), FIN / FIN-ACK / ACK; the next one
    starts a few ms later with a clock below the previous one's. counts["fins"]."""
    sc = _Scenario("fin_reuse", seed, options)
    _Generations(sc, generations, segments, _ms(rtt_ms), ts_hz).start()
    pcap, truth = sc.finish()
    truth.counts["fins"] = sum(1 for r in sc.sim.records if r[2].kind == KIND_TCP and r[3] & FIN)
    return pcap, truth


@_scenario
def handshake_rst(
    seed: int = 0,
    *,
    flows: int = 4,
    rst_flows: int = 2,
    segments: int = 400,
    rtt_ms: float | tuple[float, float] = (5.0, 80.0),
    ts_hz: int = 1000,
    **options: Any,
) -> tuple[bytes, Truth]:
    """Flows opened by SYN / SYN-ACK / ACK with timestamps (the SYN-ACK echoes the
    SYN's TSval: a valid sample, and the third ACK echoes the SYN-ACK's); `rst_flows`
    of them are aborted mid-transfer by an RST from either end. counts["rsts"]."""
    if not 0 <= rst_flows <= flows:
        raise ValueError("rst_flows must be between 0 and flows")
    sc = _Scenario("handshake_rst", seed, options)
    rng = sc.rng
    pairs = _bulk_flows(
        sc, flows=flows, packets=round(segments * 1.5) * flows, rtt_ms=rtt_ms,
        gap_us=(50.0, 200.0), mss=1448, delack_ms=40.0, pause_prob=0.0,
        pause_ms=(0.0, 0.0), handshake=True, ts_hz=ts_hz, start_spread_ms=20.0,
    )  # fmt: skip
    for pair in pairs[:rst_flows]:  # somewhere in the middle of the transfer
        when = pair.start_ns + 2 * pair.rtt_ns + rng.randint(1, segments // 2) * 125 * NS_PER_US
        sc.sim.at(when, rng.choice((pair.client, pair.server)).abort)
    return sc.finish()


@_scenario
def icmp_echo(
    seed: int = 0,
    *,
    pingers: int = 3,
    count: int = 100,
    interval_ms: float = 10.0,
    rtt_ms: float | tuple[float, float] = (1.0, 100.0),
    unanswered_prob: float = 0.1,
    start_seq: int = 1,
    **options: Any,
) -> tuple[bytes, Truth]:
    """Echo requests (ICMP, or ICMPv6 with ip_version=6) every `interval_ms` from each
    pinger to its own host; replies after the path RTT plus 5-50 us of processing; each
    request unanswered with `unanswered_prob`. Sequences start at `start_seq` (wrap at
    2^16). counts["requests"], ["replies"], ["unanswered"]."""
    sc = _Scenario("icmp_echo", seed, options)
    rng, sim = sc.rng, sc.sim
    v = sc.opts.ip_version
    rtt_lo, rtt_hi = _ms_range(rtt_ms)

    def echo(t: int, d: _IcmpDir, icmp_type: int, seq: int, payload: bytes) -> None:
        sim.records.append((t, next(sim.order), d, icmp_type, seq, 0, 0, 0, 0, True, payload))

    for i in range(pingers):
        ident = rng.randint(1, 0xFFFF)
        req_dir, rep_dir = sc.icmp_dirs(sc.client_ip(i), sc.server_ip(i), ident)
        rtt = rng.randint(rtt_lo, rtt_hi)
        near = rng.randint(20, 200) * NS_PER_US
        to_far, from_far = rtt - rtt // 2, rtt // 2
        sc.floors[req_dir.key] = (req_dir.flow, rtt)
        t = rng.randint(0, _ms(interval_ms))
        for n in range(count):
            seq = (start_seq + n) & 0xFFFF
            payload = struct.pack("!Q", t) + bytes(range(16, 64))
            tc = t + near
            echo(tc, req_dir, ICMP_REQUEST[v], seq, payload)
            sim.counts["requests"] += 1
            if rng.random() < unanswered_prob:
                sim.counts["unanswered"] += 1
            else:
                echo(tc + to_far + rng.randint(5, 50) * NS_PER_US + from_far,
                     rep_dir, ICMP_REPLY[v], seq, payload)  # fmt: skip
                sim.counts["replies"] += 1
            t += _ms(interval_ms) + rng.randint(0, 100 * NS_PER_US)
    sim.counts["pingers"] = pingers
    return sc.finish()


@_scenario
def malformed(
    seed: int = 0,
    *,
    count: int = 60,
    kinds: Iterable[str] = MALFORMED_KINDS,
    flows: int = 2,
    packets: int = 4_000,
    ts_hz: int = 1000,
    **options: Any,
) -> tuple[bytes, Truth]:
    """A valid bulk capture (with handshakes) with `count` malformed frames mixed in,
    cycling through `kinds` (see MALFORMED_KINDS): the capture cut inside the TCP
    header or its options, an IP packet shorter than its TCP header, IPv4 IHL < 5 or
    beyond the packet, a TS option of length 8/12/0, non-first IPv4/IPv6 fragments
    that look like TCP, runts / bad IP versions / unknown ethertypes. They imitate real
    flows, so accepting one would print a wrong RTT. truth.malformed counts each kind."""
    sc = _Scenario("malformed", seed, options)
    _bulk_flows(
        sc, flows=flows, packets=packets, rtt_ms=(5.0, 50.0), gap_us=(50.0, 200.0),
        mss=1448, delack_ms=40.0, pause_prob=0.002, pause_ms=(1.0, 50.0), handshake=True,
        ts_hz=ts_hz,
    )  # fmt: skip
    return sc.finish(malformed=count, kinds=kinds)


SCENARIOS: dict[str, Callable[..., tuple[bytes, Truth]]] = {
    "bulk": bulk,
    "ramping_rtt": ramping_rtt,
    "reordering": reordering,
    "loss": loss,
    "wraparound": wraparound,
    "app_limited": app_limited,
    "fin_reuse": fin_reuse,
    "icmp_echo": icmp_echo,
    "malformed": malformed,
    "handshake_rst": handshake_rst,
    "many_flows": many_flows,
    "delayed_ack": delayed_ack,
}


# ------------------------------------------------------------------- command line


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic capture; print its truth.")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE",
        help="a scenario or capture option, e.g. packets=1000000 or ip_version=6",
    )  # fmt: skip
    parser.add_argument("-o", "--output", help="pcap file to write")
    args = parser.parse_args(argv)
    kwargs: dict[str, Any] = {}
    for item in args.set:
        name, _, value = item.partition("=")
        try:
            kwargs[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[name] = value
    started = time.perf_counter()
    pcap, truth = SCENARIOS[args.scenario](args.seed, **kwargs)
    elapsed = time.perf_counter() - started
    if args.output:
        with open(args.output, "wb") as f:
            f.write(pcap)
    print(
        f"{truth.packets} packets, {len(pcap)} bytes, {len(truth.samples)} samples "
        f"({len(truth.data_driven_samples)} data-driven), "
        f"{len(truth.pure_ack_echoes)} pure-ACK echoes, {truth.malformed_injected} malformed; "
        f"{elapsed:.2f} s ({truth.packets / elapsed:,.0f} packets/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(_main())
