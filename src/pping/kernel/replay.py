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
- Clean-up: run here at the moments of `replay.CleanupClock`, on the maps, with the
  rules of `Engine.expire` (see `_expire`), followed by the engine's pressure monitor
  (pressure.py), whose sampling scale is written to the program's `sampling` global.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

import numpy as np

from ..config import (
    Config,
    direction_is_old,
    timestamp_is_stale,
)
from ..errors import KernelError
from ..events import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    Counters,
    Event,
    EventReason,
    EventSource,
    Flow,
    FlowEvent,
    FlowEventType,
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


def _reverse_key(key: bytes) -> bytes:
    """The reverse direction of a packed struct flow_key."""
    return key[:8] + key[24:40] + key[8:24] + key[42:44] + key[40:42]


def _is_first(key: bytes) -> bool:
    """(saddr, sport) <= (daddr, dport) for a packed struct flow_key (ports in host order)."""
    saddr, daddr = key[8:24], key[24:40]
    if saddr != daddr:
        return saddr < daddr
    return int.from_bytes(key[40:42], "little") <= int.from_bytes(key[42:44], "little")


def _flow_of(key: bytes, reverse: bool) -> Flow:
    proto = key[4]
    saddr, daddr = key[8:24], key[24:40]
    sport = int.from_bytes(key[40:42], "little")
    dport = int.from_bytes(key[42:44], "little")
    if reverse:
        return Flow(proto, daddr, dport, saddr, sport)
    return Flow(proto, saddr, sport, daddr, dport)


def load_replay_program(config: Config) -> PpingProgram:
    """The kernel program in replay mode (time and link from the test-run context)."""
    return PpingProgram(
        config,
        replay=True,
        programs=(abi.PROGRAM_INGRESS,),
        ringbuf_bytes=REPLAY_RINGBUF_BYTES,
        preallocate=False,
    )


class KernelReplay:
    """One capture replay through a freshly loaded program (in replay mode)."""

    def __init__(
        self, config: Config, merge_interfaces: bool = False, program: PpingProgram | None = None
    ) -> None:
        self.config = config
        self.merge_interfaces = merge_interfaces
        # A program loaded by `load_replay_program(config)` may be passed in (and is
        # then reset, and left open): loading costs tens of milliseconds.
        self.owns_program = program is None
        if program is None:
            program = load_replay_program(config)
        else:
            program.reset()
        self.program = program
        self.runner = libbpf.TestRunner(self.program.program_fds[abi.PROGRAM_INGRESS])
        self.clock = CleanupClock(config.cleanup_interval_ns)
        # Counted here: packets whose link header packet.py refuses, and the clean-up.
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
        clock_due = self.clock.due
        run = self.runner.run
        ring = self.program.ring
        assert ring is not None
        merge = self.merge_interfaces
        counters = self.counters
        max_packet = libbpf.TEST_RUN_MAX_PACKET
        now: int | None = None
        for record in records:
            now = record.timestamp_ns
            if clock_due(now):
                yield from self._expire(now)
            frame: bytes | str
            if record.linktype == LINKTYPE_ETHERNET:
                frame = record.data
                if len(frame) < 14:
                    frame = SKIP_TRUNCATED
            else:
                frame = to_ethernet(record.linktype, record.data)
            if not isinstance(frame, str):
                size = len(frame)
                if size > max_packet:
                    frame = fit_frame(frame, record.wire_len)
                elif size < _MIN_IPV6_FRAME and _refused_by_test_run(frame):
                    frame = SKIP_TRUNCATED
            if isinstance(frame, str):
                counters.packets += 1
                counters.skip(frame)
                continue
            link = 0 if merge else record.interface
            if link > LINK_MAX:
                raise KernelError(f"failed to replay: interface number {link} is too large")
            base = self.base
            if base is None or not 0 <= now - base <= U64_MAX:
                self._rebase(now - TIME_MARGIN)
                base = now - TIME_MARGIN
            run(frame, now - base, link)
            if ring.pending():
                for data in ring.read():
                    yield decode_event(data, base)
        if self.config.stats_interval_ns and now is not None:
            yield self.pressure.statistics(now, True, self.totals(), *self._occupancy())

    def _rebase(self, new_base: int) -> None:
        """Move the program's clock so that it starts at capture time `new_base`.

        Every time in the maps is shifted to the new clock. A time that the new clock
        cannot hold (more than ~146 years before the new packet, or after it by more
        than ~438) is clamped; it is then older (or newer) than anything the
        comparisons of the specification can tell apart, except with clean-up off.
        A time of 0 means "never set" (an empty direction's times, a previous burst
        window that never was) and stays 0, as in the engine.
        """
        old_base = self.base
        self.base = new_base
        if old_base is None:
            return
        shift = old_base - new_base

        def move(values: Any) -> Any:
            moved = [int(v) + shift if v else 0 for v in values.ravel().tolist()]
            clamped = [min(max(v, 0), U64_MAX) for v in moved]
            if clamped != moved:
                self.clamped = True
            return np.array(clamped, dtype=np.uint64).reshape(values.shape)

        program = self.program
        keys, flows = libbpf.map_lookup_batch(
            program.flows_fd, abi.FLOW_KEY_DTYPE, abi.DUAL_FLOW_DTYPE
        )
        if len(keys):
            for field in ("last_timestamp", "started", "previous_window"):
                flows["dir"][field] = move(flows["dir"][field])
            libbpf.map_update_batch(program.flows_fd, keys, flows)
        ts_keys, sent = libbpf.map_lookup_batch(
            program.timestamps_fd, abi.TIMESTAMP_KEY_DTYPE, np.dtype(np.uint64)
        )
        if len(ts_keys):
            libbpf.map_update_batch(program.timestamps_fd, ts_keys, move(sent))
        warning = np.zeros(1, dtype=abi.WARNING_STATE_DTYPE)
        index = np.zeros(1, dtype=np.uint32)
        for table in range(abi.NR_TABLES):
            index[0] = table
            libbpf.map_lookup(program.warnings_fd, index, warning)
            if warning["valid"][0]:
                warning["last"] = move(warning["last"])
                libbpf.map_update(program.warnings_fd, index, warning)

    # -- clean-up ------------------------------------------------------------------

    def _expire(self, now: int) -> list[Event]:
        """Engine.expire on the program's maps: stale timestamps, then idle flows."""
        base = self.base
        if base is None:
            # Nothing reached the program yet: its maps are empty.
            return self._after_cleanup(now, 0, 0)
        program = self.program
        flow_keys, flows = libbpf.map_lookup_batch(
            program.flows_fd, abi.FLOW_KEY_DTYPE, abi.DUAL_FLOW_DTYPE
        )
        raw_keys = flow_keys.tobytes()
        size = abi.FLOW_KEY_DTYPE.itemsize
        key_bytes = [raw_keys[i * size : (i + 1) * size] for i in range(len(flow_keys))]
        row_of = {key: row for row, key in enumerate(key_bytes)}
        states = flows["dir"]
        outstanding = states["outstanding"].astype(np.int64)
        srtt = states["srtt"].tolist()
        started = states["started"].tolist()

        # Timestamps (Engine._expire_timestamps).
        ts_keys, sent_times = libbpf.map_lookup_batch(
            program.timestamps_fd, abi.TIMESTAMP_KEY_DTYPE, np.dtype(np.uint64)
        )
        raw_ts = ts_keys.tobytes()
        ts_size = abi.TIMESTAMP_KEY_DTYPE.itemsize
        stale = []
        divisor = self.pressure.sampling_scale
        for i, kernel_sent in enumerate(sent_times.tolist()):
            sent = kernel_sent + base
            if now <= sent:
                continue
            direction = raw_ts[i * ts_size : i * ts_size + size]
            if _is_first(direction):
                row, side = row_of.get(direction), 0
            else:
                row, side = row_of.get(_reverse_key(direction)), 1
            state_srtt = srtt[row][side] if row is not None else 0
            age = now - sent
            if timestamp_is_stale(age, state_srtt, divisor):
                stale.append(i)
                if row is not None and sent >= started[row][side] + base:
                    outstanding[row, side] -= 1
        libbpf.map_delete_batch(program.timestamps_fd, ts_keys[stale])
        self.counters.timestamps_expired += len(stale)

        # Flows (Engine._expire_flows), in the engine's order: creation order.
        events: list[Event] = []
        dead = []
        divisor = self.pressure.timeout_divisor
        conn = states["conn_state"].tolist()
        last = states["last_timestamp"].tolist()
        for row in np.argsort(flows["seq"], kind="stable").tolist():
            key = key_bytes[row]
            proto = key[4]
            old = [
                _is_flow_old(proto, conn[row][side], last[row][side] + base, now, divisor)
                for side in (0, 1)
            ]
            active = [abi.CONN_WAITOPEN <= conn[row][side] <= abi.CONN_OPEN for side in (0, 1)]
            if (active[0] and not old[0]) or (active[1] and not old[1]):
                continue
            dead.append(row)
            # Reported "backwards", as the reply direction, like every other event.
            if old[0] and conn[row][0] == abi.CONN_OPEN:
                events.append(_timeout_event(now, _flow_of(key, reverse=True)))
            if old[1] and conn[row][1] == abi.CONN_OPEN:
                events.append(_timeout_event(now, _flow_of(key, reverse=False)))
        libbpf.map_delete_batch(program.flows_fd, flow_keys[dead])
        self.counters.flows_expired += len(dead)

        changed = np.flatnonzero((outstanding != states["outstanding"]).any(axis=1))
        changed = np.setdiff1d(changed, np.array(dead, dtype=np.int64))
        if len(changed):
            updated = flows[changed]
            updated["dir"]["outstanding"] = outstanding[changed].astype(np.uint32)
            libbpf.map_update_batch(program.flows_fd, flow_keys[changed], updated)
        # The occupancy the packets left, before this clean-up (Engine.expire).
        return events + self._after_cleanup(now, len(ts_keys), len(flow_keys))

    def _after_cleanup(self, now: int, timestamp_entries: int, flow_entries: int) -> list[Event]:
        """Engine.expire's last step: the pressure monitor's decisions and statistics;
        a new sampling scale goes to the program."""
        pressure = self.pressure
        scale = pressure.sampling_scale
        events = pressure.at_cleanup(
            now, timestamp_entries, flow_entries, self.counters, self.totals
        )
        if pressure.sampling_scale != scale:
            self.program.set_sampling_scale(pressure.sampling_scale)
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
        for name in ("timestamps_expired", "flows_expired", "sampling_raised",
                     "sampling_relaxed", "timeout_shortened", "timeout_restored"):  # fmt: skip
            setattr(counters, name, getattr(counters, name) + getattr(own, name))
        return lost

    def finish(self, counters: Counters, check: bool = True) -> None:
        """Add everything counted (kernel and here) to `counters`; with `check`, fail
        if the ring buffer lost events."""
        lost = self._add_counts(counters)
        if lost and check:
            raise KernelError(f"failed to replay: {lost} events lost (ring buffer full)")


def _is_flow_old(proto: int, conn_state: int, last_timestamp: int, now: int, divisor: int) -> bool:
    if not abi.CONN_WAITOPEN <= conn_state <= abi.CONN_OPEN or last_timestamp > now:
        return False
    icmp = proto in (IPPROTO_ICMP, IPPROTO_ICMPV6)
    waiting = conn_state == abi.CONN_WAITOPEN
    return bool(direction_is_old(now - last_timestamp, waiting, icmp, divisor))


def _timeout_event(now: int, flow: Flow) -> FlowEvent:
    return FlowEvent(
        now, flow, FlowEventType.CLOSING, EventReason.FLOW_TIMEOUT, EventSource.GARBAGE_COLLECTION
    )


def kernel_replay(
    reader: Iterable[CaptureRecord],
    config: Config,
    merge_interfaces: bool = False,
    counters: Counters | None = None,
    program: PpingProgram | None = None,
) -> Generator[Event, None, None]:
    """Events of the kernel program for each record, in order, with clean-ups.

    The same events as `pping.replay.replay(Engine(config), reader, merge_interfaces)`.
    When the replay ends (or stops early), the totals are added to `counters`. A
    `program` from `load_replay_program(config)` (same config) is reused, not closed.
    """
    totals = counters if counters is not None else Counters()
    session = KernelReplay(config, merge_interfaces, program)
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
