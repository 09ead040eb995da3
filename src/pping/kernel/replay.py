"""Replay a capture through the kernel program (BPF_PROG_TEST_RUN), not the engine.

`kernel_replay` gives exactly the events and counters of `pping.replay.replay` with
`pping.engine.Engine` (tests/test_kernel_parity.py checks it on every test capture);
the per-packet work is the kernel program's, the rest is done here as the live loader
will do it:

- Link layers: the program parses Ethernet (with VLAN tags, MPLS, PPPoE). A packet of
  another link type is converted to an Ethernet frame carrying what packet.py would
  parse after the link header: the same bytes, so the program reaches the same
  verdict. A link header that packet.py itself refuses (too short, unknown family,
  unsupported link type...) is counted here with packet.py's reason.
- Size: BPF_PROG_TEST_RUN takes 14 to 3712 bytes, and an IPv4 (IPv6) frame only if
  it holds 20 (40) bytes of IP header. A shorter frame is "truncated" (counted here,
  as packet.py counts it). A longer one is cut, which changes nothing (payload
  comes from the IP lengths) unless its headers reach past the cut; then the packet
  is parsed here and the program gets a minimal frame with the same parse.
- Time and link: the context's `tstamp` carries the capture time minus `base` (the
  program's clock is 64-bit, capture times are not), `mark` the interface.
- Clean-up: at the moments of `replay.CleanupClock`, the kernel's clean-up program
  (kernel/cleanup.py), as live monitoring runs it, with the lifetimes the engine's
  pressure monitor (pressure.py) sets; then that monitor decides, and its sampling scale
  and the tables' capacities are written to the program's `sampling` global.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

import numpy as np

from ..aggregate import IntervalClock
from ..config import (
    AggregateConfig,
    Config,
)
from ..errors import KernelError
from ..events import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    AggregateHeader,
    Counters,
    Event,
)
from ..packet import (
    ETH_P_IP,
    ETH_P_IPV6,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPNET,
    LINKTYPE_IPOIB,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NFLOG,
    LINKTYPE_NULL,
    LINKTYPE_PKTAP,
    LINKTYPE_PPP,
    LINKTYPE_RAW,
    LINKTYPE_RAW_12,
    LINKTYPE_RAW_14,
    MAX_NFLOG_TLVS,
    PPP_IP,
    PPP_IPV6,
    SKIP_BAD_LINK,
    SKIP_LINKTYPE,
    SKIP_NOT_IP,
    SKIP_TRUNCATED,
    PacketInfo,
    parse_packet,
)
from ..pressure import PressureMonitor
from ..replay import CleanupClock
from ..sources.pcap import CaptureRecord
from . import abi, libbpf
from .aggregate import KernelAggregates
from .cleanup import KernelCleanup
from .program import PpingProgram, decode_event

U64_MAX = libbpf.U64_MAX
# The program's clock starts this far before the first packet, so that captures whose
# time goes backwards stay representable; see _kernel_time.
TIME_MARGIN = 1 << 62
LINK_MAX = 0xFFFFFFFF
REPLAY_RINGBUF_BYTES = 1 << 16  # drained after every packet: a few events at most

_ETH_SRC_DST = bytes(12)
_ETH_IPV4 = _ETH_SRC_DST + ETH_P_IP.to_bytes(2, "big")
_ETH_IPV6 = _ETH_SRC_DST + ETH_P_IPV6.to_bytes(2, "big")

_NULL_AF_INET = 2
_NULL_AF_INET6 = frozenset((10, 24, 28, 30))
_IPNET_AF_INET = 2
_IPNET_AF_INET6 = 26
_NFLOG_PAYLOAD = 9
_IPOIB_HEADER = 44
_PKTAP_INNER = frozenset(
    (
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW_12,
        LINKTYPE_RAW_14,
        LINKTYPE_RAW,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
    )
)
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U32_LE = struct.Struct("<I")
_TLV_LE = struct.Struct("<HH")
_PKTAP = struct.Struct("<II")


# -- link layers -------------------------------------------------------------------


def _ethertype_frame(ethertype: int, payload: bytes) -> bytes:
    return _ETH_SRC_DST + _U16.pack(ethertype) + payload


def _ip_by_version(payload: bytes) -> bytes | str:
    if not payload:
        return SKIP_TRUNCATED
    version = payload[0] >> 4
    if version == 4:
        return _ETH_IPV4 + payload
    if version == 6:
        return _ETH_IPV6 + payload
    return SKIP_NOT_IP


def _by_family(family: int, payload: bytes) -> bytes | str:
    if family == _NULL_AF_INET:
        return _ETH_IPV4 + payload
    if family in _NULL_AF_INET6:
        return _ETH_IPV6 + payload
    return SKIP_NOT_IP


def _null(data: bytes) -> bytes | str:
    if len(data) < 4:
        return SKIP_TRUNCATED
    family = _U32_LE.unpack_from(data)[0]
    if family > 0xFFFF:
        family = _U32.unpack_from(data)[0]
    return _by_family(family, data[4:])


def _loop(data: bytes) -> bytes | str:
    if len(data) < 4:
        return SKIP_TRUNCATED
    return _by_family(_U32.unpack_from(data)[0], data[4:])


def _ppp(data: bytes) -> bytes | str:
    off = 2 if len(data) >= 2 and data[0] == 0xFF and data[1] == 0x03 else 0
    if off >= len(data):
        return SKIP_TRUNCATED
    protocol = data[off]
    if protocol & 1:
        off += 1
    else:
        if len(data) - off < 2:
            return SKIP_TRUNCATED
        protocol = _U16.unpack_from(data, off)[0]
        off += 2
    if protocol == PPP_IP:
        return _ETH_IPV4 + data[off:]
    if protocol == PPP_IPV6:
        return _ETH_IPV6 + data[off:]
    return SKIP_NOT_IP


def _sll(data: bytes) -> bytes | str:
    if len(data) < 16:
        return SKIP_TRUNCATED
    return _ethertype_frame(_U16.unpack_from(data, 14)[0], data[16:])


def _sll2(data: bytes) -> bytes | str:
    if len(data) < 20:
        return SKIP_TRUNCATED
    return _ethertype_frame(_U16.unpack_from(data, 0)[0], data[20:])


def _ipoib(data: bytes) -> bytes | str:
    if len(data) < _IPOIB_HEADER:
        return SKIP_TRUNCATED
    return _ethertype_frame(_U16.unpack_from(data, _IPOIB_HEADER - 4)[0], data[_IPOIB_HEADER:])


def _ipnet(data: bytes) -> bytes | str:
    if len(data) < 24:
        return SKIP_TRUNCATED
    family = data[1]
    if family == _IPNET_AF_INET:
        return _ETH_IPV4 + data[24:]
    if family == _IPNET_AF_INET6:
        return _ETH_IPV6 + data[24:]
    return SKIP_NOT_IP


def _nflog(data: bytes) -> bytes | str:
    end = len(data)
    if end < 4:
        return SKIP_TRUNCATED
    family = data[0]
    if family == 2:
        header = _ETH_IPV4
    elif family == 10:
        header = _ETH_IPV6
    else:
        return SKIP_NOT_IP
    off = 4
    for _ in range(MAX_NFLOG_TLVS):
        if end - off < 4:
            return SKIP_TRUNCATED
        length, tlv_type = _TLV_LE.unpack_from(data, off)
        if length < 4:
            return SKIP_BAD_LINK
        if tlv_type == _NFLOG_PAYLOAD:
            return header + data[off + 4 : min(off + length, end)]
        off += (length + 3) & ~3
    return SKIP_BAD_LINK


def _pktap(data: bytes) -> bytes | str:
    if len(data) < 8:
        return SKIP_TRUNCATED
    length, inner = _PKTAP.unpack_from(data)
    if length < 8:
        return SKIP_BAD_LINK
    if inner not in _PKTAP_INNER:
        return SKIP_LINKTYPE
    if len(data) < length:
        return SKIP_TRUNCATED
    return to_ethernet(inner, data[length:])


def _ethernet(data: bytes) -> bytes | str:
    return data if len(data) >= 14 else SKIP_TRUNCATED


_CONVERTERS: dict[int, Callable[[bytes], bytes | str]] = {
    LINKTYPE_ETHERNET: _ethernet,
    LINKTYPE_NULL: _null,
    LINKTYPE_LOOP: _loop,
    LINKTYPE_PPP: _ppp,
    LINKTYPE_RAW_12: _ip_by_version,
    LINKTYPE_RAW_14: _ip_by_version,
    LINKTYPE_RAW: _ip_by_version,
    LINKTYPE_LINUX_SLL: _sll,
    LINKTYPE_LINUX_SLL2: _sll2,
    LINKTYPE_IPOIB: _ipoib,
    LINKTYPE_IPNET: _ipnet,
    LINKTYPE_IPV4: lambda data: _ETH_IPV4 + data,
    LINKTYPE_IPV6: lambda data: _ETH_IPV6 + data,
    LINKTYPE_NFLOG: _nflog,
    LINKTYPE_PKTAP: _pktap,
}


def to_ethernet(linktype: int, data: bytes) -> bytes | str:
    """The Ethernet frame the kernel program parses as packet.py parses `data`, or the
    skip reason packet.py gives the link header itself."""
    convert = _CONVERTERS.get(linktype)
    if convert is None:
        return SKIP_LINKTYPE
    frame: bytes | str = convert(bytes(data))
    return frame


_MIN_IPV4_FRAME = 14 + 20
_MIN_IPV6_FRAME = 14 + 40


def _refused_by_test_run(frame: bytes) -> bool:
    """BPF_PROG_TEST_RUN refuses (EINVAL) an IPv4 or IPv6 frame shorter than Ethernet
    plus the IP header; packet.py calls exactly these frames "truncated"."""
    ethertype = frame[12:14]
    return (ethertype == b"\x08\x00" and len(frame) < _MIN_IPV4_FRAME) or (
        ethertype == b"\x86\xdd" and len(frame) < _MIN_IPV6_FRAME
    )


def minimal_frame(info: PacketInfo) -> bytes:
    """An Ethernet frame that packet.py (and so the program) parses into `info`.

    TCP and ICMPv6 go in IPv6 (an IPv4-mapped address is kept as it is: the key is
    the same), ICMP in IPv4; the IP length fields carry the payload.
    """
    if info.proto == IPPROTO_ICMP:
        icmp = bytes((8 if info.pid_valid else 0, 0, 0, 0)) + struct.pack(
            "!HH", info.sport, info.pid if info.pid_valid else info.reply_pid
        )
        header = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 28 + info.payload, 0, 0, 64, 1, 0,
            info.saddr[12:], info.daddr[12:],
        )  # fmt: skip
        return _ETH_IPV4 + header + icmp
    if info.proto == IPPROTO_ICMPV6:
        l4 = bytes((128 if info.pid_valid else 129, 0, 0, 0)) + struct.pack(
            "!HH", info.sport, info.pid if info.pid_valid else info.reply_pid
        )
        plen = 8 + info.payload
    else:
        l4 = struct.pack(
            "!HHIIBBHHHBBBBII", info.sport, info.dport, 0, 0, 8 << 4, info.tcp_flags, 0, 0, 0,
            1, 1, 8, 10, info.pid, info.reply_pid,
        )  # fmt: skip
        plen = 32 + info.payload
    header = struct.pack("!IHBB16s16s", 6 << 28, plen, info.proto, 64, info.saddr, info.daddr)
    return _ETH_IPV6 + header + l4


def fit_frame(frame: bytes, wire_len: int) -> bytes | str:
    """A frame of at most TEST_RUN_MAX_PACKET bytes that parses as `frame` does, or the
    skip reason when `frame` is not a packet the program would use."""
    cut = frame[: libbpf.TEST_RUN_MAX_PACKET]
    whole = parse_packet(LINKTYPE_ETHERNET, frame, wire_len)
    if parse_packet(LINKTYPE_ETHERNET, cut, wire_len) == whole:
        return cut
    if isinstance(whole, str):
        return whole
    return minimal_frame(whole)


# -- the replay ----------------------------------------------------------------------


def load_replay_program(config: Config, aggregate: AggregateConfig | None = None) -> PpingProgram:
    """The kernel program in replay mode (time and link from the test-run context)."""
    return PpingProgram(
        config,
        replay=True,
        programs=(abi.PROGRAM_INGRESS,),
        ringbuf_bytes=REPLAY_RINGBUF_BYTES,
        preallocate=False,
        aggregate=aggregate,
    )


_IP_ETHERTYPES = (ETH_P_IP, ETH_P_IPV6)
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)


def located_by_decoder(linktype: int, data: bytes) -> bool:
    """Whether the Python data path's batch decoder finds the IP header of this packet
    (aggregate.decode_traffic): it counts every IP packet it finds, the others only if
    the RTT parser accepts them; the program is told which rule applies."""
    if linktype == LINKTYPE_ETHERNET:
        pos = 12
        for _ in range(3):
            ethertype = int.from_bytes(data[pos : pos + 2], "big")
            if ethertype not in _VLAN_TPIDS:
                return ethertype in _IP_ETHERTYPES
            pos += 4
        return False
    if linktype == LINKTYPE_LINUX_SLL:
        return int.from_bytes(data[14:16], "big") in _IP_ETHERTYPES
    if linktype == LINKTYPE_LINUX_SLL2:
        return int.from_bytes(data[0:2], "big") in _IP_ETHERTYPES
    version = data[0] >> 4 if data else 0
    if linktype == LINKTYPE_RAW:
        return version in (4, 6)
    if linktype == LINKTYPE_IPV4:
        return version == 4
    if linktype == LINKTYPE_IPV6:
        return version == 6
    if linktype == LINKTYPE_NULL and len(data) >= 5:
        word = int.from_bytes(data[:4], "big")
        family = word if word < 256 else (word >> 24 if word & 0xFFFFFF == 0 else -1)
        version = data[4] >> 4
        return (family == _NULL_AF_INET and version == 4) or (
            family in _NULL_AF_INET6 and version == 6
        )
    return False


class KernelReplay:
    """One capture replay through a freshly loaded program (in replay mode)."""

    def __init__(
        self,
        config: Config,
        merge_interfaces: bool = False,
        program: PpingProgram | None = None,
        aggregate: AggregateConfig | None = None,
    ) -> None:
        self.config = config
        self.merge_interfaces = merge_interfaces
        # A program loaded by `load_replay_program(config)` may be passed in (and is
        # then reset, and left open): loading costs tens of milliseconds.
        self.owns_program = program is None
        if program is None:
            program = load_replay_program(config, aggregate)
        else:
            program.reset()
        self.program = program
        self.runner = libbpf.TestRunner(self.program.program_fds[abi.PROGRAM_INGRESS])
        # -a: the prefix maps, and the end of the current interval (capture time).
        self.aggregates: KernelAggregates | None = None
        self.agg_clock: IntervalClock | None = None
        if aggregate is not None:
            self.aggregates = KernelAggregates(program, aggregate)
            self.agg_clock = IntervalClock(aggregate.interval_ns)
        self.clock = CleanupClock(config.cleanup_interval_ns)
        self.cleanup = KernelCleanup(program)
        # Counted here: packets whose link header packet.py refuses.
        self.counters = Counters()
        # Kernel time = capture time - base (None until the first packet).
        self.base: int | None = None
        # Whether moving the clock had to clamp a time (see _rebase).
        self.clamped = False
        self.pressure = PressureMonitor(config)

    def close(self) -> None:
        if self.owns_program:
            self.program.close()

    # -- packets -------------------------------------------------------------------

    def run(self, records: Iterable[CaptureRecord]) -> Iterator[Event]:
        if self.aggregates is None:
            yield from self._run(records)
            return
        last: int | None = None
        for record in records:
            now = record.timestamp_ns
            if last is None:
                yield self._aggregate_header(now)
            last = now
            yield from self._run((record,))
        if last is not None:
            yield from self._aggregate_report(last)

    def _aggregate_header(self, now: int) -> AggregateHeader:
        assert self.aggregates is not None
        config = self.aggregates.config
        return AggregateHeader(
            now, abi.AGG_BINS, abi.AGG_BIN_WIDTH_NS, config.interval_ns, config.timeout_ns,
            config.ipv4_prefix_len, config.ipv6_prefix_len,
        )  # fmt: skip

    def _aggregate_report(self, now: int) -> list[Event]:
        assert self.aggregates is not None
        if self.base is None:
            # Nothing reached the program: its maps are empty.
            return []
        return list(self.aggregates.report(now, self.base))

    def _aggregate_context(self, record: CaptureRecord, traffic_only: bool) -> None:
        """-a: the packet's length on the wire and how the program counts it."""
        flags = 0 if located_by_decoder(record.linktype, record.data) else abi.AGG_FLAG_PARSED_ONLY
        if traffic_only:
            flags |= abi.AGG_FLAG_TRAFFIC_ONLY
        self.runner.set_cb(abi.AGG_CB_WIRE_LEN, min(record.wire_len, 0xFFFFFFFF))
        self.runner.set_cb(abi.AGG_CB_FLAGS, flags)

    def _run(self, records: Iterable[CaptureRecord]) -> Iterator[Event]:
        clock_due = self.clock.due
        run = self.runner.run
        ring = self.program.ring
        assert ring is not None
        merge = self.merge_interfaces
        counters = self.counters
        max_packet = libbpf.TEST_RUN_MAX_PACKET
        agg_clock = self.agg_clock
        now: int | None = None
        for record in records:
            now = record.timestamp_ns
            if agg_clock is not None:
                due = agg_clock.due(now)
                if due is not None:
                    yield from self._aggregate_report(due)
            if clock_due(now):
                yield from self._expire(now)
            frame: bytes | str
            traffic_only: bytes | None = None
            if record.linktype == LINKTYPE_ETHERNET:
                frame = record.data
                if len(frame) < 14:
                    frame = SKIP_TRUNCATED
            else:
                frame = to_ethernet(record.linktype, record.data)
            if not isinstance(frame, str):
                size = len(frame)
                if size > max_packet:
                    whole = frame
                    frame = fit_frame(frame, record.wire_len)
                    if isinstance(frame, str) and agg_clock is not None:
                        # Not for the RTT pipeline, but its traffic counts (-a).
                        traffic_only = whole[:max_packet]
                elif size < _MIN_IPV6_FRAME and _refused_by_test_run(frame):
                    frame = SKIP_TRUNCATED
            if isinstance(frame, str):
                counters.packets += 1
                counters.skip(frame)
                if traffic_only is None:
                    continue
                frame = traffic_only
            link = 0 if merge else record.interface
            if link > LINK_MAX:
                raise KernelError(f"failed to replay: interface number {link} is too large")
            base = self.base
            if base is None or not 0 <= now - base <= U64_MAX:
                if self._rebase(now - TIME_MARGIN):
                    self.clamped = True
                base = now - TIME_MARGIN
            if agg_clock is not None:
                self._aggregate_context(record, traffic_only is not None)
            run(frame, now - base, link)
            if ring.pending():
                for data in ring.read():
                    yield decode_event(data, base)
        if self.config.stats_interval_ns and now is not None:
            yield self.pressure.statistics(now, True, self.totals(), *self._occupancy())

    def _rebase(self, new_base: int) -> list[tuple[int, Any, Any]]:
        """Move the program's clock so that it starts at capture time `new_base`.

        Every time in the maps is shifted to the new clock. A time that the new clock
        cannot hold (more than ~146 years before the new packet, or after it by more
        than ~438) is clamped; it is then older (or newer) than anything the
        comparisons of the specification can tell apart, except with clean-up off.
        A time of 0 means "never set" (an empty direction's times, a previous burst
        window that never was) and stays 0, as in the engine. Returns the entries with
        a clamped time, as (map fd, key, value buffer).
        """
        old_base = self.base
        self.base = new_base
        if old_base is None:
            return []
        shift = old_base - new_base
        clamped: list[tuple[int, Any, Any]] = []

        def move(fd: int, keys: Any, values: Any, times: Any) -> Any:
            """`times` (one row per key) on the new clock; notes the clamped rows."""
            moved = [int(v) + shift if v else 0 for v in times.ravel().tolist()]
            kept = [min(max(v, 0), U64_MAX) for v in moved]
            changed = np.array([a != b for a, b in zip(moved, kept, strict=True)])
            for row in np.flatnonzero(changed.reshape(len(keys), -1).any(axis=1)).tolist():
                clamped.append((fd, keys[row : row + 1], values[row : row + 1].copy()))
            return np.array(kept, dtype=np.uint64).reshape(times.shape)

        program = self.program
        if self.aggregates is not None:
            self.aggregates.shift_times(shift)
        keys, flows = libbpf.map_lookup_batch(
            program.flows_fd, abi.FLOW_KEY_DTYPE, abi.DUAL_FLOW_DTYPE
        )
        if len(keys):
            for field in ("last_timestamp", "started", "previous_window"):
                flows["dir"][field] = move(program.flows_fd, keys, flows, flows["dir"][field])
            libbpf.map_update_batch(program.flows_fd, keys, flows)
        ts_keys, sent = libbpf.map_lookup_batch(
            program.timestamps_fd, abi.TIMESTAMP_KEY_DTYPE, np.dtype(np.uint64)
        )
        if len(ts_keys):
            moved = move(program.timestamps_fd, ts_keys, sent, sent)
            libbpf.map_update_batch(program.timestamps_fd, ts_keys, moved)
        warning = np.zeros(1, dtype=abi.WARNING_STATE_DTYPE)
        for table in range(abi.NR_TABLES):
            index = np.array([table], dtype=np.uint32)
            libbpf.map_lookup(program.warnings_fd, index, warning)
            if warning["valid"][0]:
                warning["last"] = move(program.warnings_fd, index, warning, warning["last"])
                libbpf.map_update(program.warnings_fd, index, warning)
        return clamped

    # -- clean-up ------------------------------------------------------------------

    def _expire(self, now: int) -> list[Event]:
        """The kernel's clean-up at capture time `now`."""
        if self.base is None:
            # Nothing reached the program yet: its maps are empty.
            return self._after_cleanup(now, 0, 0)
        clamped: list[tuple[int, Any, Any]] = []
        if not 0 <= now - self.base <= U64_MAX:
            # The clean-up needs `now` on the program's clock: move the clock before
            # it, not after (the packet that follows would move it anyway). A clamped
            # time is more than 2^62 ns old (or in the future) either way, which every
            # lifetime tells apart the same; what counts as clamped is what survives.
            clamped = self._rebase(now - TIME_MARGIN)
        base = self.base
        pressure = self.pressure
        cleanup = self.cleanup
        events = cleanup.run(now - base, base, pressure.sampling_scale, pressure.timeout_divisor)
        if any(libbpf.map_lookup(fd, key, value) for fd, key, value in clamped):
            self.clamped = True
        # The occupancy the packets left, before this clean-up (Engine.expire).
        return events + self._after_cleanup(now, cleanup.timestamp_entries, cleanup.flow_entries)

    def _after_cleanup(self, now: int, timestamp_entries: int, flow_entries: int) -> list[Event]:
        """Engine.expire's last step: the pressure monitor's decisions and statistics;
        a new sampling scale or capacity goes to the program."""
        pressure = self.pressure
        limits = pressure.limits
        events = pressure.at_cleanup(
            now, timestamp_entries, flow_entries, self.counters, self.totals
        )
        if pressure.limits != limits:
            self.program.set_limits(*pressure.limits)
        return events

    def _occupancy(self) -> tuple[int, int]:
        """Entries of the timestamp and flow tables."""
        program = self.program
        timestamps, _ = libbpf.map_lookup_batch(
            program.timestamps_fd, abi.TIMESTAMP_KEY_DTYPE, np.dtype(np.uint64)
        )
        flows, _ = libbpf.map_lookup_batch(
            program.flows_fd, abi.FLOW_KEY_DTYPE, abi.DUAL_FLOW_DTYPE
        )
        return len(timestamps), len(flows)

    def totals(self) -> Counters:
        """Everything counted so far, in the kernel and here."""
        totals = Counters()
        self._add_counts(totals)
        return totals

    def _add_counts(self, counters: Counters) -> int:
        """Add the kernel's and this replay's counts to `counters`; returns the events
        the ring buffer lost."""
        lost = self.program.add_counters(counters)
        own = self.counters
        counters.packets += own.packets
        for reason, count in own.skipped.items():
            counters.skip(reason, count)
        counters.timestamps_expired += self.cleanup.timestamps_expired
        counters.flows_expired += self.cleanup.flows_expired
        for name in ("sampling_raised", "sampling_relaxed", "timeout_shortened",
                     "timeout_restored", "timestamps_grown", "flows_grown"):  # fmt: skip
            setattr(counters, name, getattr(counters, name) + getattr(own, name))
        return lost

    def finish(self, counters: Counters, check: bool = True) -> None:
        """Add everything counted (kernel and here) to `counters`; with `check`, fail
        if the ring buffer lost events."""
        lost = self._add_counts(counters)
        if lost and check:
            raise KernelError(f"failed to replay: {lost} events lost (ring buffer full)")


def kernel_replay(
    reader: Iterable[CaptureRecord],
    config: Config,
    merge_interfaces: bool = False,
    counters: Counters | None = None,
    program: PpingProgram | None = None,
    aggregate: AggregateConfig | None = None,
) -> Generator[Event, None, None]:
    """Events of the kernel program for each record, in order, with clean-ups.

    The same events as `pping.replay.replay(Engine(config), reader, merge_interfaces)`.
    When the replay ends (or stops early), the totals are added to `counters`. A
    `program` from `load_replay_program(config)` (same config) is reused, not closed.
    """
    totals = counters if counters is not None else Counters()
    session = KernelReplay(config, merge_interfaces, program, aggregate)
    try:
        yield from session.run(reader)
    except BaseException:
        # The counts so far are kept (the CLI prints them after a capture error).
        session.finish(totals, check=False)
        raise
    else:
        session.finish(totals)
    finally:
        session.close()
