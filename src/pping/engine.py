"""The reference RTT engine: parsed packets and their time in, events out (sans-IO).

Theory of operation (the full specification is docs/algorithm.md; the kernel program
follows it stage by stage, with the same stage names):

A *flow* is one direction of a conversation; the two directions share one entry of the
flow table (keyed by the canonical tuple, lower endpoint first), because a packet
updates its own direction (it may be *timestamped*) and the reverse one (it may
*match* a timestamp the reverse direction created). Each packet goes through:

1. lookup_or_create_flow: find the entry; only a packet that could be timestamped
   (and does not close its direction) may create one.
2. update_forward: start the packet's direction if it was empty; count packets/bytes.
3. timestamp_packet: record (direction, identifier) -> time if the identifier is newer
   than every identifier seen so far in that direction (so only the first packet that
   carries an identifier is timestamped, and an RTT is never underestimated), and the
   per-flow rate limit allows it. With --burst N, a packet the rate limit lets through
   opens a sampling window, and up to N more packets with new identifiers within
   --burst-window of it are timestamped too (a delayed ACK may echo any of them).
4. update_reverse: the first reply opens the reverse direction (an opening event).
5. match_packet: look up (reverse direction, reply identifier); an entry found gives
   an RTT and is deleted at once. With bursts, only the first match of a window is
   reported; later ones feed min_rtt and srtt silently.
6. close_flows: FIN closes the packet's direction, RST both; the entry is removed when
   no direction remains active.

`expire(now)` is the periodic clean-up: stale timestamps and idle flows are removed,
and open directions that time out get a closing event. Then the pressure monitor
(pressure.py) may change the sampling scale and the flow timeouts, grow a table (the
capacity at which it refuses entries, `pressure.max_timestamps` and `max_flows`), and
write a statistics record.

Every table is bounded; a refused insert is counted and reported at most once a
second per table (MapFullEvent). A direction holds at most `config.outstanding_cap`
timestamps (fairness: a heavy flow cannot take the whole table).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .config import (
    MAP_FULL_WARN_INTERVAL_NS,
    Config,
    direction_is_old,
    direction_safe_age,
    timestamp_is_stale,
    timestamp_safe_age,
)
from .events import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    Counters,
    Event,
    EventReason,
    EventSource,
    Flow,
    FlowEvent,
    FlowEventType,
    MapFullEvent,
    RttEvent,
    StatsEvent,
    Table,
)
from .packet import TCP_SYN, PacketInfo
from .pressure import PressureMonitor

# Connection states of one direction.
EMPTY = 0  # never seen a packet that could be timestamped
WAITOPEN = 1  # seen, no reply yet
OPEN = 2  # a reply has been seen (opening event sent)
CLOSED = 3  # FIN or RST seen

FIXPOINT_SHIFT = 16
U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF
HALF_U32 = 1 << 31
CLOSING = FlowEventType.CLOSING

SKIP_SYN = "SYN (no --include-SYN)"
SKIP_UNTRACKED = "protocol not tracked"

# (link, proto, saddr, sport, daddr, dport): one direction, or the canonical flow key.
FlowKey = tuple[int, int, bytes, int, bytes, int]
TimestampKey = tuple[int, int, bytes, int, bytes, int, int]
LocalFilter = Callable[[PacketInfo], bool]


class FlowState:
    """State of one direction. `started` is when this incarnation began (see match).

    Sampling windows (only with bursts on): `last_timestamp` is when the current window
    opened, `burst_left` how many more packets it may timestamp; `previous_window` is
    when the window before it opened. `window_reported` / `previous_reported`: an RTT
    event was emitted for a timestamp of that window.
    """

    __slots__ = (
        "burst_left",
        "conn_state",
        "has_been_timestamped",
        "last_id",
        "last_timestamp",
        "min_rtt",
        "opening_reason",
        "outstanding",
        "previous_reported",
        "previous_window",
        "rec_bytes",
        "rec_pkts",
        "reply_flow",
        "sent_bytes",
        "sent_pkts",
        "srtt",
        "started",
        "window_reported",
    )

    def __init__(self) -> None:
        self.conn_state = EMPTY
        self.has_been_timestamped = False
        self.last_id = 0
        self.last_timestamp = 0
        self.started = 0
        self.min_rtt = 0
        self.srtt = 0
        self.outstanding = 0
        self.sent_pkts = 0
        self.sent_bytes = 0
        self.rec_pkts = 0
        self.rec_bytes = 0
        self.opening_reason = EventReason.NONE
        self.burst_left = 0
        self.previous_window = 0
        self.window_reported = False
        self.previous_reported = False
        # The Flow of this direction's RTT events (the replies' direction), made once:
        # one object per direction instead of one per event, which also lets a sink's
        # table of flows find it by identity.
        self.reply_flow: Flow | None = None

    def start(self, info: PacketInfo, now: int) -> None:
        self.conn_state = WAITOPEN
        self.last_timestamp = now
        self.started = now
        self.last_id = info.pid
        self.opening_reason = (
            info.event_reason
            if info.event_type == FlowEventType.OPENING
            else EventReason.FIRST_OBSERVED_PACKET
        )
        self.has_been_timestamped = False

    @property
    def active(self) -> bool:
        return WAITOPEN <= self.conn_state <= OPEN


class DualFlow:
    """One flow-table entry: both directions. `first` is the canonical key's direction."""

    __slots__ = ("closed", "first", "second")

    def __init__(self) -> None:
        self.first = FlowState()
        self.second = FlowState()
        # Both directions closed, but replies to timestamps already taken may still be
        # on their way (the ACK of a FIN, ACKs in flight when an RST passed): the entry
        # stays until they are matched or expire, or a new connection takes the tuple.
        self.closed = False

    @property
    def drained(self) -> bool:
        return self.first.outstanding == 0 and self.second.outstanding == 0


def rtt_rate_fixpoint(rtt_rate: float) -> int:
    """The RTT multiplier as 16.16 fixed point, as the kernel stores it."""
    return int(rtt_rate * (1 << FIXPOINT_SHIFT))


def smoothed_rtt(previous: int, rtt: int) -> int:
    """srtt = 7/8 srtt + 1/8 rtt in integer arithmetic (the kernel's exact formula)."""
    if previous == 0:
        return rtt
    return previous - (previous >> 3) + (rtt >> 3)


def is_newer_identifier(proto: int, identifier: int, last_id: int) -> bool:
    """TCP timestamps only grow (RFC 7323 serial arithmetic); other ids only differ."""
    if proto == IPPROTO_TCP:
        return 0 < ((identifier - last_id) & U32) < HALF_U32
    return identifier != last_id


class Engine:
    """The pure-Python data path. Feed `process` packets in time order of capture."""

    def __init__(self, config: Config, is_local: LocalFilter | None = None) -> None:
        self.config = config
        self.is_local = None if config.include_local else is_local
        self.counters = Counters()
        self.flows: dict[FlowKey, DualFlow] = {}
        self.timestamps: dict[TimestampKey, int] = {}
        self.pressure = PressureMonitor(config)
        # The sampling interval in force: the configured one times the pressure
        # monitor's scale (set_sampling_scale), for -r and -R alike.
        self.rate_limit_ns = config.rate_limit_ns
        self._rtt_rate = rtt_rate_fixpoint(config.rtt_rate)
        self._outstanding_cap = config.outstanding_cap
        self._burst = config.burst_packets
        self._last_warning: list[int | None] = [None, None]  # per Table: last MapFullEvent

    # -- packets -----------------------------------------------------------------

    def count_skipped(self, reason: str) -> None:
        """A packet that never reached the engine (parse failure): count it."""
        self.counters.packets += 1
        self.counters.skip(reason)

    def flow_key(self, direction: FlowKey) -> tuple[FlowKey, bool]:
        """The flow-table key of a direction, and whether the direction is its first."""
        link, proto, saddr, sport, daddr, dport = direction
        if (saddr, sport) <= (daddr, dport):
            return direction, True
        return (link, proto, daddr, dport, saddr, sport), False

    def absorb_repeats(
        self,
        key: FlowKey,
        first: bool,
        packets: int,
        payload_bytes: int,
        limited_ids: Sequence[int] = (),
    ) -> None:
        """Account packets known to change nothing but counters (see fastpath.py).

        They were sent in one direction of flow `key` (its first direction if `first`);
        each counts as sent there and as received by the reverse direction, exactly as
        `process` would count it. `limited_ids` are, in order, the TCP identifiers of
        those that the static rate limit surely refused: each still moves `last_id`
        forward when it is newer, as in timestamp_packet.
        """
        self.counters.packets += packets
        dual = self.flows.get(key)
        if dual is None:
            return
        forward, reverse = (dual.first, dual.second) if first else (dual.second, dual.first)
        if EMPTY < forward.conn_state < CLOSED:
            forward.sent_pkts += packets
            forward.sent_bytes += payload_bytes
            last_id = forward.last_id
            for pid in limited_ids:
                if 0 < ((pid - last_id) & U32) < HALF_U32:
                    last_id = pid
            forward.last_id = last_id
        if EMPTY < reverse.conn_state < CLOSED:
            reverse.rec_pkts += packets
            reverse.rec_bytes += payload_bytes

    def direction_facts(self, key: FlowKey, first: bool) -> tuple[bool, bool]:
        """(started, quiet) of one direction of flow `key` (its first if `first`), for
        the fast path (fastpath.py), in one look-up.

        started: the direction is active in an entry that is not closed, so a packet of
        it cannot start it or replace the entry. quiet: a packet of it that is neither
        timestamped nor matched changes nothing but counters; not so if the entry is
        closed (the packet may delete it) or the reverse direction waits for its first
        reply (the packet opens it).
        """
        dual = self.flows.get(key)
        if dual is None:
            return False, True
        if dual.closed:
            return False, False
        forward, reverse = (dual.first, dual.second) if first else (dual.second, dual.first)
        return forward.active, reverse.conn_state != WAITOPEN

    def sampling_state(
        self, direction: FlowKey, starting_id: int | None = None
    ) -> tuple[int, int, bool] | None:
        """(last_id, last_timestamp, has_been_timestamped) of an active `direction`, when
        only these decide whether its next packets are timestamped (static rate limit,
        no bursts); else None. See fastpath.py."""
        if self._rtt_rate or self._burst:
            return None
        state = self._direction_state(direction)
        if state is not None and state.active:
            return state.last_id, state.last_timestamp, state.has_been_timestamped
        if starting_id is not None and (state is None or state.conn_state == EMPTY):
            # Given `starting_id`: the state right after a stampable packet without SYN,
            # FIN or RST, carrying that identifier, starts the direction (FlowState.start;
            # it waits for the first edge, so it is not timestamped itself), when its
            # flow entry exists or can be created.
            return starting_id, 0, False
        return None

    def process(
        self, info: PacketInfo, now: int, link: int = 0, is_ingress: bool = True
    ) -> list[Event]:
        """Run one parsed packet observed at `now` (ns) on `link` through the pipeline.

        The cheap tests of each stage are made here, so that the common packet (nothing
        to stamp, nothing to match) costs no further calls; each stage method repeats
        nothing and documents the rest.
        """
        self.counters.packets += 1
        (proto, saddr, sport, daddr, dport, pid, pid_valid, _reply_pid, reply_pid_valid,
         event_type, _reason, wait_first_edge, tcp_flags, payload, _len) = info  # fmt: skip
        # The common case (tracked TCP, no SYN) needs none of _tracked's checks.
        if (proto != IPPROTO_TCP or tcp_flags & TCP_SYN or not self.config.track_tcp) and (
            not self._tracked(info)
        ):
            return []
        events: list[Event] = []
        packet_key: FlowKey = (link, proto, saddr, sport, daddr, dport)
        forward_is_first = saddr < daddr or (saddr == daddr and sport <= dport)
        key = packet_key if forward_is_first else (link, proto, daddr, dport, saddr, sport)

        # lookup_or_create_flow
        dual = self.flows.get(key)
        if dual is None or (dual.closed and pid_valid and event_type < CLOSING):
            if dual is not None:
                del self.flows[key]  # a new connection reuses the tuple of a closed one
            dual = self._create_flow(key, info, now, events)
            if dual is None:
                return events
        if forward_is_first:
            forward, reverse = dual.first, dual.second
        else:
            forward, reverse = dual.second, dual.first
        # update_forward
        state = forward.conn_state
        if state == EMPTY and pid_valid:
            forward.start(info, now)
            state = WAITOPEN
        if EMPTY < state < CLOSED:
            forward.sent_pkts += 1
            forward.sent_bytes += payload
            # timestamp_packet: only a valid identifier, and (once stamped, or when
            # waiting for the first edge) only a newer one (RFC 7323 serial arithmetic
            # for TCP; any other value for ICMP).
            if pid_valid and (
                not (forward.has_been_timestamped or wait_first_edge)
                or (
                    0 < ((pid - forward.last_id) & U32) < HALF_U32
                    if proto == IPPROTO_TCP
                    else pid != forward.last_id
                )
            ):
                self._timestamp_packet(forward, packet_key, info, now, is_ingress, events)
        # update_reverse
        state = reverse.conn_state
        if EMPTY < state < CLOSED:
            if state == WAITOPEN and event_type != FlowEventType.CLOSING_BOTH:
                self._open_reverse(reverse, info, events)
            reverse.rec_pkts += 1
            reverse.rec_bytes += payload
        # match_packet (a CLOSED direction still matches while its entry exists: the ACK
        # of a FIN is a valid sample)
        if reverse.outstanding and reply_pid_valid and state != EMPTY:
            self._match_packet(reverse, packet_key, info, now, is_ingress, events)
        # close_flows
        if event_type >= CLOSING:
            self._close_flows(key, dual, forward, reverse, info, now, events)
        elif dual.closed and dual.drained:
            del self.flows[key]
        return events

    def _tracked(self, info: PacketInfo) -> bool:
        config = self.config
        if info.proto == IPPROTO_TCP:
            if not config.track_tcp:
                self.counters.skip(SKIP_UNTRACKED)
                return False
            if info.tcp_flags & TCP_SYN and not config.include_syn:
                self.counters.skip(SKIP_SYN)
                return False
            return True
        if not config.track_icmp:
            self.counters.skip(SKIP_UNTRACKED)
            return False
        return True

    @staticmethod
    def _reverse_key(key: FlowKey) -> FlowKey:
        link, proto, saddr, sport, daddr, dport = key
        return (link, proto, daddr, dport, saddr, sport)

    def _create_flow(
        self, key: FlowKey, info: PacketInfo, now: int, events: list[Event]
    ) -> DualFlow | None:
        """lookup_or_create_flow, second half: only a packet that could be timestamped
        and does not close its direction creates an entry, if the table has room."""
        closing = info.event_type in (FlowEventType.CLOSING, FlowEventType.CLOSING_BOTH)
        if not info.pid_valid or closing:
            return None
        if len(self.flows) >= self.pressure.max_flows:
            self.counters.flows_table_full += 1
            self._warn_full(Table.FLOWS, info, now, events)
            return None
        dual = DualFlow()
        self.flows[key] = dual
        self.counters.flows_created += 1
        return dual

    def _timestamp_packet(
        self,
        state: FlowState,
        packet_key: FlowKey,
        info: PacketInfo,
        now: int,
        is_ingress: bool,
        events: list[Event],
    ) -> None:
        """timestamp_packet, for an active direction and a valid, new identifier."""
        if is_ingress and self.is_local is not None and self.is_local(info):
            return
        state.last_id = info.pid
        last = state.last_timestamp
        if state.has_been_timestamped and (
            # the static limit, inline: it decides for most packets
            now < last
            or (not self._rtt_rate and now - last < self.rate_limit_ns)
            or (self._rtt_rate and self._rate_limited(state, now))
        ):
            # Refused by the rate limit: a packet of the window still open may join it.
            if not (state.burst_left and 0 <= now - last < self.config.burst_window_ns):
                return
            # The slot is used up even if the insert below fails (as the attempt is).
            state.burst_left -= 1
        else:
            # The attempt counts even if the table refuses the entry, so that a full
            # table does not let one flow retry on every packet (fairness between
            # flows). It opens a sampling window.
            state.has_been_timestamped = True
            state.last_timestamp = now
            if self._burst:
                state.previous_window = last
                state.previous_reported = state.window_reported
                state.window_reported = False
                state.burst_left = self._burst
        ts_key: TimestampKey = (*packet_key, info.pid)
        timestamps = self.timestamps
        existing = timestamps.get(ts_key)
        if existing is not None and existing >= state.started:
            return  # the same identifier is already waiting for its reply
        if (
            existing is None
            and self._outstanding_cap
            and state.outstanding >= self._outstanding_cap
        ):
            self.counters.timestamps_capped += 1  # fairness: this direction holds its share
            return
        if existing is None and len(timestamps) >= self.pressure.max_timestamps:
            self.counters.timestamps_table_full += 1
            self._warn_full(Table.TIMESTAMPS, info, now, events)
            return
        # An existing entry older than this direction's start is an orphan of an earlier
        # connection on the same tuple: it is replaced.
        timestamps[ts_key] = now
        if existing is None:
            state.outstanding += 1
        self.counters.timestamps_created += 1

    def _rate_limited(self, state: FlowState, now: int) -> bool:
        last = state.last_timestamp
        if now < last:
            return True
        rtt = state.srtt if self.config.use_srtt else state.min_rtt
        if self._rtt_rate and rtt:
            return now - last < ((self._rtt_rate * rtt) & U64) >> FIXPOINT_SHIFT
        return now - last < self.rate_limit_ns

    @staticmethod
    def _open_reverse(state: FlowState, info: PacketInfo, events: list[Event]) -> None:
        """update_reverse: the first reply opens a waiting direction."""
        state.conn_state = OPEN
        flow = state.reply_flow
        if flow is None:  # the reply's direction: the Flow of this direction's RTTs
            flow = state.reply_flow = Flow(
                info.proto, info.saddr, info.sport, info.daddr, info.dport
            )
        events.append(
            FlowEvent(
                state.last_timestamp,
                flow,
                FlowEventType.OPENING,
                state.opening_reason,
                EventSource.PACKET_DEST,
            )
        )

    def _match_packet(
        self,
        state: FlowState,
        packet_key: FlowKey,
        info: PacketInfo,
        now: int,
        is_ingress: bool,
        events: list[Event],
    ) -> None:
        """match_packet, for a direction with outstanding timestamps and a valid reply."""
        link, proto, saddr, sport, daddr, dport = packet_key
        ts_key: TimestampKey = (link, proto, daddr, dport, saddr, sport, info.reply_pid)
        sent = self.timestamps.get(ts_key)
        # An entry older than the direction's start belongs to an earlier connection.
        if sent is None or now < sent or sent < state.started:
            return
        rtt = now - sent
        del self.timestamps[ts_key]
        state.outstanding -= 1
        if state.min_rtt == 0 or rtt < state.min_rtt:
            state.min_rtt = rtt
        state.srtt = smoothed_rtt(state.srtt, rtt)
        self.counters.timestamps_matched += 1
        if self._burst and not _first_of_window(state, sent):
            return
        self.counters.rtt_events += 1
        flow = state.reply_flow
        if flow is None:  # the replies to this direction always come this way
            flow = state.reply_flow = Flow(proto, saddr, sport, daddr, dport)
        events.append(
            RttEvent(
                now,
                flow,
                rtt,
                state.min_rtt,
                state.sent_pkts,
                state.sent_bytes,
                state.rec_pkts,
                state.rec_bytes,
                not is_ingress,
            )
        )

    def _close_flows(
        self,
        key: FlowKey,
        dual: DualFlow,
        forward: FlowState,
        reverse: FlowState,
        info: PacketInfo,
        now: int,
        events: list[Event],
    ) -> None:
        event_type = info.event_type
        if event_type == FlowEventType.CLOSING or event_type == FlowEventType.CLOSING_BOTH:
            if forward.conn_state == OPEN:
                flow = Flow(info.proto, info.daddr, info.dport, info.saddr, info.sport)
                events.append(
                    FlowEvent(
                        now, flow, FlowEventType.CLOSING, info.event_reason, EventSource.PACKET_DEST
                    )
                )
            forward.conn_state = CLOSED
        if event_type == FlowEventType.CLOSING_BOTH:
            if reverse.conn_state == OPEN:
                flow = Flow(info.proto, info.saddr, info.sport, info.daddr, info.dport)
                events.append(
                    FlowEvent(
                        now,
                        flow,
                        FlowEventType.CLOSING,
                        info.event_reason,
                        EventSource.PACKET_SOURCE,
                    )
                )
            reverse.conn_state = CLOSED
        if not dual.closed and not forward.active and not reverse.active:
            dual.closed = True
            self.counters.flows_closed += 1
        if dual.closed and dual.drained:
            del self.flows[key]

    def _warn_full(self, table: Table, info: PacketInfo, now: int, events: list[Event]) -> None:
        last = self._last_warning[table]
        if last is not None and (now < last or now - last < MAP_FULL_WARN_INTERVAL_NS):
            return
        self._last_warning[table] = now
        flow = Flow(info.proto, info.saddr, info.sport, info.daddr, info.dport)
        events.append(MapFullEvent(now, flow, table))

    # -- clean-up ----------------------------------------------------------------

    def expire(self, now: int) -> list[Event]:
        """Periodic clean-up at time `now`: stale timestamps, then idle flows, then the
        pressure monitor's decisions and statistics."""
        # The occupancy the packets left, before the clean-up: what they had to live with.
        occupancy = (len(self.timestamps), len(self.flows))
        self._expire_timestamps(now)
        events = self._expire_flows(now)
        pressure = self.pressure
        scale = pressure.sampling_scale
        events += pressure.at_cleanup(now, *occupancy, self.counters, lambda: self.counters)
        if pressure.sampling_scale != scale:
            self.set_sampling_scale(pressure.sampling_scale)
        return events

    def set_sampling_scale(self, scale: int) -> None:
        """Sample `scale` times less often than configured (static and -R limits)."""
        self.rate_limit_ns = self.config.rate_limit_ns * scale
        self._rtt_rate = rtt_rate_fixpoint(self.config.rtt_rate) * scale

    def statistics(self, now: int, final: bool = True) -> StatsEvent:
        """A statistics record of the state at `now` (the end of a replay)."""
        return self.pressure.statistics(
            now, final, self.counters, len(self.timestamps), len(self.flows)
        )

    def _direction_state(self, key: FlowKey) -> FlowState | None:
        link, proto, saddr, sport, daddr, dport = key
        if (saddr, sport) <= (daddr, dport):
            dual = self.flows.get(key)
            return None if dual is None else dual.first
        dual = self.flows.get((link, proto, daddr, dport, saddr, sport))
        return None if dual is None else dual.second

    def _expire_timestamps(self, now: int) -> None:
        stale: list[TimestampKey] = []
        divisor = self.pressure.sampling_scale
        safe = timestamp_safe_age(divisor)
        for ts_key, sent in self.timestamps.items():
            if now - sent <= safe:
                continue  # kept whatever its direction's RTT: no look-up
            state = self._direction_state(ts_key[:6])
            srtt = state.srtt if state is not None else 0
            age = now - sent
            if timestamp_is_stale(age, srtt, divisor):
                stale.append(ts_key)
                if state is not None and sent >= state.started:
                    state.outstanding -= 1
        for ts_key in stale:
            del self.timestamps[ts_key]
        self.counters.timestamps_expired += len(stale)

    def _expire_flows(self, now: int) -> list[Event]:
        events: list[Event] = []
        dead: list[FlowKey] = []
        divisor = self.pressure.timeout_divisor
        safe = direction_safe_age(divisor)
        for key, dual in self.flows.items():
            # Both directions stamped lately: neither is old, so the entry stays if one
            # is active (the test below, without its calls).
            first, second = dual.first, dual.second
            if (
                now - first.last_timestamp <= safe
                and now - second.last_timestamp <= safe
                and (first.active or second.active)
            ):
                continue
            first_old = _is_flow_old(key[1], dual.first, now, divisor)
            second_old = _is_flow_old(key[1], dual.second, now, divisor)
            if (dual.first.active and not first_old) or (dual.second.active and not second_old):
                continue
            dead.append(key)
            _link, proto, saddr, sport, daddr, dport = key
            # Reported "backwards", as the reply direction, like every other event.
            if first_old and dual.first.conn_state == OPEN:
                events.append(_timeout_event(now, Flow(proto, daddr, dport, saddr, sport)))
            if second_old and dual.second.conn_state == OPEN:
                events.append(_timeout_event(now, Flow(proto, saddr, sport, daddr, dport)))
        for key in dead:
            del self.flows[key]
        self.counters.flows_expired += len(dead)
        return events


def _first_of_window(state: FlowState, sent: int) -> bool:
    """Is a match of the timestamp taken at `sent` the first of its sampling window?
    Marks the window as reported. Windows before the previous one are not tracked:
    their matches are always reported."""
    if sent >= state.last_timestamp:
        first = not state.window_reported
        state.window_reported = True
    elif sent >= state.previous_window:
        first = not state.previous_reported
        state.previous_reported = True
    else:
        first = True
    return first


def _is_flow_old(proto: int, state: FlowState, now: int, divisor: int) -> bool:
    if not state.active or state.last_timestamp > now:
        return False
    icmp = proto in (IPPROTO_ICMP, IPPROTO_ICMPV6)
    waiting = state.conn_state == WAITOPEN
    return bool(direction_is_old(now - state.last_timestamp, waiting, icmp, divisor))


def _timeout_event(now: int, flow: Flow) -> FlowEvent:
    return FlowEvent(
        now, flow, FlowEventType.CLOSING, EventReason.FLOW_TIMEOUT, EventSource.GARBAGE_COLLECTION
    )
