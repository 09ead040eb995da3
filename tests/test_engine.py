"""The reference engine, fed hand-made packets with exact times."""

from __future__ import annotations

import itertools

import pytest

from pping.config import NS_PER_MS, NS_PER_S, Config
from pping.engine import Engine, smoothed_rtt
from pping.events import (
    IPPROTO_ICMP,
    IPPROTO_TCP,
    EventReason,
    EventSource,
    FlowEvent,
    FlowEventType,
    MapFullEvent,
    RttEvent,
    Table,
)
from pping.packet import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, PacketInfo

A = b"\0" * 10 + b"\xff\xff" + bytes([198, 18, 0, 1])
B = b"\0" * 10 + b"\xff\xff" + bytes([198, 18, 0, 2])
MS = NS_PER_MS


def tcp(
    src: bytes,
    dst: bytes,
    tsval: int,
    tsecr: int,
    *,
    payload: int = 100,
    flags: int = TCP_ACK,
    sport: int | None = None,
    dport: int | None = None,
) -> PacketInfo:
    """A TCP packet from src to dst; ports default to A=40000, B=5201."""
    sport = sport if sport is not None else (40000 if src == A else 5201)
    dport = dport if dport is not None else (40000 if dst == A else 5201)
    event, reason = FlowEventType.NONE, EventReason.NONE
    if flags & TCP_RST:
        event, reason = FlowEventType.CLOSING_BOTH, EventReason.RST
    elif flags & TCP_FIN:
        event, reason = FlowEventType.CLOSING, EventReason.FIN
    elif flags & TCP_SYN:
        event = FlowEventType.OPENING
        reason = EventReason.SYN_ACK if flags & TCP_ACK else EventReason.SYN
    return PacketInfo(
        IPPROTO_TCP, src, sport, dst, dport,
        tsval, payload > 0 or bool(flags & (TCP_SYN | TCP_FIN)),
        tsecr, bool(flags & TCP_ACK),
        event, reason, not flags & TCP_SYN, flags, payload, payload + 66,
    )  # fmt: skip


def rtts(events: list) -> list[int]:
    return [e.rtt for e in events if isinstance(e, RttEvent)]


def run(engine: Engine, packets: list[tuple[int, PacketInfo]]) -> list:
    out: list = []
    for now, info in packets:
        out.extend(engine.process(info, now))
    return out


def test_first_packet_of_a_flow_waits_for_a_new_identifier() -> None:
    engine = Engine(Config(rate_limit_ns=0))
    events = run(
        engine,
        [
            (0, tcp(A, B, 100, 7)),  # mid-flow start: TSval 100 may have been sent earlier
            (1 * MS, tcp(A, B, 101, 7)),  # first new identifier: timestamped
            (2 * MS, tcp(A, B, 101, 7)),  # same identifier: never timestamped again
            (11 * MS, tcp(B, A, 8, 100, payload=0)),  # echoes 100: nothing stored
            (12 * MS, tcp(B, A, 8, 101, payload=0)),  # echoes 101: 11 ms
            (13 * MS, tcp(B, A, 9, 101, payload=0)),  # second echo: entry already gone
        ],
    )
    assert rtts(events) == [11 * MS]
    rtt = next(e for e in events if isinstance(e, RttEvent))
    assert rtt.flow.saddr == B and rtt.flow.sport == 5201  # the reply's own direction
    assert (rtt.sent_packets, rtt.sent_bytes) == (3, 300)
    assert (rtt.rec_packets, rtt.rec_bytes) == (2, 0)
    assert engine.timestamps == {}
    assert engine.counters.timestamps_created == 1
    assert engine.counters.timestamps_matched == 1


def test_opening_event_precedes_rtt_and_reports_the_first_observed_packet() -> None:
    engine = Engine(Config(rate_limit_ns=0))
    events = run(engine, [(0, tcp(A, B, 1, 0)), (1 * MS, tcp(A, B, 2, 0)),
                          (5 * MS, tcp(B, A, 9, 2, payload=0))])  # fmt: skip
    opening, rtt = events
    assert isinstance(opening, FlowEvent) and isinstance(rtt, RttEvent)
    assert opening.event_type == FlowEventType.OPENING
    assert opening.reason == EventReason.FIRST_OBSERVED_PACKET
    assert opening.source == EventSource.PACKET_DEST
    assert opening.flow.saddr == B
    assert opening.timestamp == 1 * MS  # the last time the opened direction was stamped
    assert rtt.rtt == 4 * MS


def test_pure_acks_are_never_timestamped() -> None:
    engine = Engine(Config(rate_limit_ns=0))
    events = run(
        engine,
        [
            (0, tcp(A, B, 1, 0)),
            (1 * MS, tcp(B, A, 50, 1, payload=0)),
            (2 * MS, tcp(B, A, 51, 1, payload=0)),  # pure ACK with a new TSval
            (500 * MS, tcp(A, B, 2, 51)),  # app pause: echo of a pure ACK
        ],
    )
    assert rtts(events) == []
    # only A's data packet (TSval 2) was stamped; none of B's pure ACKs
    assert [key[2] for key in engine.timestamps] == [A]


def test_syn_is_skipped_unless_included() -> None:
    syn = tcp(A, B, 1000, 0, payload=0, flags=TCP_SYN)
    synack = tcp(B, A, 5000, 1000, payload=0, flags=TCP_SYN | TCP_ACK)
    without = Engine(Config(rate_limit_ns=0))
    assert run(without, [(0, syn), (3 * MS, synack)]) == []
    assert without.counters.skipped == {"SYN (no --include-SYN)": 2}
    with_syn = Engine(Config(rate_limit_ns=0, include_syn=True))
    events = run(with_syn, [(0, syn), (3 * MS, synack)])
    assert rtts(events) == [3 * MS]
    opening = events[0]
    assert opening.reason == EventReason.SYN


def test_static_rate_limit_and_its_reset() -> None:
    engine = Engine(Config(rate_limit_ns=100 * MS))
    packets = [(0, tcp(A, B, 1, 0))]
    # a new TSval every ms for 250 ms, each echoed 10 ms later
    for i in range(1, 251):
        packets.append((i * MS, tcp(A, B, 1 + i, 0)))
        packets.append((i * MS + 10 * MS, tcp(B, A, 1, 1 + i, payload=0)))
    packets.sort(key=lambda p: p[0])
    events = run(engine, packets)
    # timestamps at 1 ms (first), then first new id at >= 101 ms and >= 201 ms
    assert rtts(events) == [10 * MS] * 3
    assert engine.counters.timestamps_created == 3


def test_rtt_based_rate_limit_uses_fixed_point_multiple_of_min_rtt() -> None:
    engine = Engine(Config(rate_limit_ns=100 * MS, rtt_rate=0.5))
    packets = [(0, tcp(A, B, 1, 0))]
    for i in range(1, 101):
        packets.append((i * MS, tcp(A, B, 1 + i, 0)))
        packets.append((i * MS + 20 * MS, tcp(B, A, 1, 1 + i, payload=0)))
    packets.sort(key=lambda p: p[0])
    events = run(engine, packets)
    # first sample at 1 ms; until its reply (21 ms) the static 100 ms limit applies;
    # after that the limit is 0.5 * 20 ms = 10 ms: stamps at 1, 101 would be static...
    stamped = [e.timestamp - e.rtt for e in events if isinstance(e, RttEvent)]
    assert stamped[0] == 1 * MS
    gaps = [b - a for a, b in itertools.pairwise(stamped[1:])]
    assert all(gap == 10 * MS for gap in gaps)
    assert stamped[1] == 21 * MS  # first packet after the RTT became known and 10 ms passed


def test_new_identifier_rule_handles_wraparound_and_reordering() -> None:
    engine = Engine(Config(rate_limit_ns=0))
    top = 2**32 - 2
    events = run(
        engine,
        [
            (0, tcp(A, B, top, 0)),
            (1 * MS, tcp(A, B, top + 1, 0)),  # stamped
            (2 * MS, tcp(A, B, 0, 0)),  # wrapped: newer, stamped
            (3 * MS, tcp(A, B, top + 1, 0)),  # reordered old segment: not newer
            (4 * MS, tcp(A, B, 1, 0)),  # stamped
            (10 * MS, tcp(B, A, 5, top + 1, payload=0)),
            (11 * MS, tcp(B, A, 5, 0, payload=0)),
            (12 * MS, tcp(B, A, 5, 1, payload=0)),
        ],
    )
    assert rtts(events) == [9 * MS, 9 * MS, 8 * MS]
    assert engine.counters.timestamps_created == 3


def test_min_and_smoothed_rtt() -> None:
    engine = Engine(Config(rate_limit_ns=0))
    packets = [(0, tcp(A, B, 1, 0))]
    samples = [30, 10, 20]
    t = 0
    for i, ms in enumerate(samples):
        t += 100 * MS
        packets.append((t, tcp(A, B, 2 + i, 0)))
        packets.append((t + ms * MS, tcp(B, A, 1, 2 + i, payload=0)))
    events = [e for e in run(engine, packets) if isinstance(e, RttEvent)]
    assert [e.min_rtt for e in events] == [30 * MS, 10 * MS, 10 * MS]
    state = engine.flows[next(iter(engine.flows))]
    forward = state.first  # A sorts below B
    first = 30 * MS  # the first sample is taken as it is
    second = first - (first >> 3) + (10 * MS >> 3)  # then 7/8 old + 1/8 new, in integers
    third = second - (second >> 3) + (20 * MS >> 3)
    assert forward.srtt == third
    assert smoothed_rtt(smoothed_rtt(smoothed_rtt(0, 30 * MS), 10 * MS), 20 * MS) == third


def test_fin_closes_one_direction_and_its_ack_still_matches() -> None:
    engine = Engine(Config(rate_limit_ns=0))
    events = run(
        engine,
        [
            (0, tcp(A, B, 1, 0)),
            (1 * MS, tcp(A, B, 2, 0)),
            (5 * MS, tcp(B, A, 70, 2)),  # opens A->B, B's data: B->A first packet
            (6 * MS, tcp(A, B, 3, 70, payload=0, flags=TCP_FIN | TCP_ACK)),
            (9 * MS, tcp(B, A, 71, 3, payload=0)),  # ACK of the FIN: 3 ms
        ],
    )
    closing = [e for e in events if isinstance(e, FlowEvent) and e.event_type == 2]
    assert len(closing) == 1
    assert closing[0].reason == EventReason.FIN
    assert closing[0].flow.saddr == B  # printed as the reply direction
    assert closing[0].source == EventSource.PACKET_DEST
    assert rtts(events) == [4 * MS, 3 * MS]


def test_rst_closes_both_and_deletes_flow_then_tuple_reuse_starts_fresh() -> None:
    engine = Engine(Config(rate_limit_ns=0))
    events = run(
        engine,
        [
            (0, tcp(A, B, 1, 0)),
            (1 * MS, tcp(A, B, 2, 0)),  # stamped, never answered
            (2 * MS, tcp(B, A, 70, 1)),  # opens A->B; B->A starts
            (3 * MS, tcp(B, A, 71, 1)),  # B->A stamped
            (4 * MS, tcp(A, B, 3, 71, payload=0)),  # opens B->A + RTT 1 ms
            (5 * MS, tcp(A, B, 3, 71, payload=0, flags=TCP_RST)),
        ],
    )
    closing = [e for e in events if isinstance(e, FlowEvent) and e.event_type == 2]
    assert [(e.source, e.reason) for e in closing] == [
        (EventSource.PACKET_DEST, EventReason.RST),
        (EventSource.PACKET_SOURCE, EventReason.RST),
    ]
    # (A->B, 2) still waits for its reply: the closed entry lingers for it
    (dual,) = engine.flows.values()
    assert dual.closed and engine.counters.flows_closed == 1
    # A new connection reusing the tuple replaces the closed entry; its clock happens
    # to repeat TSval 2, and the old entry (an orphan now) must not match it.
    later = run(
        engine,
        [(10 * MS, tcp(A, B, 1, 0)), (11 * MS, tcp(A, B, 5, 0)), (20 * MS, tcp(B, A, 9, 2))],
    )
    assert rtts(later) == []


def test_icmp_echo_uses_sequence_and_requires_tracking() -> None:
    def echo(src: bytes, dst: bytes, seq: int, reply: bool) -> PacketInfo:
        return PacketInfo(
            IPPROTO_ICMP, src, 7, dst, 7, 0 if reply else seq, not reply,
            seq if reply else 0, reply, FlowEventType.NONE, EventReason.NONE,
            False, 0, 56, 98,
        )  # fmt: skip

    packets = [
        (0, echo(A, B, 1, False)),
        (5 * MS, echo(B, A, 1, True)),
        (1000 * MS, echo(A, B, 2, False)),
        (3000 * MS, echo(A, B, 3, False)),
        (3007 * MS, echo(B, A, 3, True)),
    ]
    assert rtts(run(Engine(Config(rate_limit_ns=0)), packets)) == []
    icmp = Engine(Config(rate_limit_ns=0, track_icmp=True))
    assert rtts(run(icmp, packets)) == [5 * MS, 7 * MS]


def test_timestamp_table_full_is_counted_and_warned_once_per_second() -> None:
    engine = Engine(Config(rate_limit_ns=0, max_timestamps=2))
    packets = [(0, tcp(A, B, 1, 0))]
    for i in range(1, 6):
        packets.append((i * MS, tcp(A, B, 1 + i, 0)))
    events = run(engine, packets)
    assert engine.counters.timestamps_created == 2
    assert engine.counters.timestamps_table_full == 3
    warnings = [e for e in events if isinstance(e, MapFullEvent)]
    assert len(warnings) == 1 and warnings[0].table == Table.TIMESTAMPS


def test_flow_table_full() -> None:
    engine = Engine(Config(rate_limit_ns=0, max_flows=1))
    run(engine, [(0, tcp(A, B, 1, 0)), (1, tcp(A, B, 1, 0, sport=1, dport=2))])
    assert engine.counters.flows_table_full == 1
    assert len(engine.flows) == 1


def test_expire_removes_stale_timestamps_and_idle_flows_with_timeout_events() -> None:
    engine = Engine(Config(rate_limit_ns=0))
    run(
        engine,
        [
            (0, tcp(A, B, 1, 0)),
            (1 * MS, tcp(A, B, 2, 0)),
            (11 * MS, tcp(B, A, 50, 2)),  # rtt 10 ms, opens A->B
            (12 * MS, tcp(A, B, 3, 50)),  # stamped, never answered
        ],
    )
    assert len(engine.timestamps) == 1
    assert engine.expire(12 * MS + 81 * MS) == []  # older than 8 x srtt, but a delayed
    assert len(engine.timestamps) == 1  # ACK may still come: at least 200 ms
    engine.expire(12 * MS + 200 * MS)
    assert len(engine.timestamps) == 1
    engine.expire(12 * MS + 201 * MS)
    assert engine.timestamps == {} and engine.counters.timestamps_expired == 1
    assert engine.expire(11 * MS + 300 * NS_PER_S) == []  # both open, not idle enough
    events = engine.expire(12 * MS + 300 * NS_PER_S + 1)
    assert [(e.reason, e.source, e.flow.saddr) for e in events] == [
        (EventReason.FLOW_TIMEOUT, EventSource.GARBAGE_COLLECTION, B),
        (EventReason.FLOW_TIMEOUT, EventSource.GARBAGE_COLLECTION, A),
    ]
    assert engine.flows == {}


def test_links_are_separate_observation_points() -> None:
    engine = Engine(Config(rate_limit_ns=0))
    engine.process(tcp(A, B, 1, 0), 0, link=0)
    engine.process(tcp(A, B, 2, 0), 1 * MS, link=0)
    assert rtts(engine.process(tcp(B, A, 1, 2), 5 * MS, link=1)) == []
    assert rtts(engine.process(tcp(B, A, 1, 2), 6 * MS, link=0)) == [5 * MS]


def test_time_going_backwards_never_gives_negative_rtt() -> None:
    engine = Engine(Config(rate_limit_ns=0))
    events = run(engine, [(100 * MS, tcp(A, B, 1, 0)), (101 * MS, tcp(A, B, 2, 0)),
                          (50 * MS, tcp(B, A, 1, 2))])  # fmt: skip
    assert rtts(events) == []


@pytest.mark.parametrize("is_local", [True, False])
def test_local_filter_only_applies_to_ingress(is_local: bool) -> None:
    engine = Engine(Config(rate_limit_ns=0), is_local=lambda info: is_local)
    engine.process(tcp(A, B, 1, 0), 0, is_ingress=True)
    engine.process(tcp(A, B, 2, 0), 1 * MS, is_ingress=True)
    events = engine.process(tcp(B, A, 1, 2), 4 * MS, is_ingress=False)
    assert rtts(events) == ([] if is_local else [3 * MS])
    if not is_local:
        assert events[-1].match_on_egress is True
    lifted = Engine(Config(rate_limit_ns=0, include_local=True), is_local=lambda info: True)
    lifted.process(tcp(A, B, 1, 0), 0)
    lifted.process(tcp(A, B, 2, 0), 1 * MS)
    assert rtts(lifted.process(tcp(B, A, 1, 2), 4 * MS, is_ingress=False)) == [3 * MS]


def test_replies_in_flight_after_rst_still_match_then_the_entry_goes() -> None:
    engine = Engine(Config(rate_limit_ns=0))
    events = run(
        engine,
        [
            (0, tcp(A, B, 1, 0)),
            (1 * MS, tcp(A, B, 2, 0)),  # stamped
            (2 * MS, tcp(A, B, 3, 0)),  # stamped
            (3 * MS, tcp(A, B, 4, 0, payload=0, flags=TCP_RST | TCP_ACK)),
            (21 * MS, tcp(B, A, 9, 2, payload=0)),  # ACKs sent before B saw the RST
            (22 * MS, tcp(B, A, 9, 3, payload=0)),
        ],
    )
    assert rtts(events) == [20 * MS, 20 * MS]
    assert engine.flows == {}  # drained: gone with the last reply


def test_ack_of_the_last_fin_matches() -> None:
    engine = Engine(Config(rate_limit_ns=0))
    events = run(
        engine,
        [
            (0, tcp(A, B, 1, 0)),
            (1 * MS, tcp(A, B, 2, 0)),
            (5 * MS, tcp(B, A, 50, 2)),
            (6 * MS, tcp(A, B, 3, 50, payload=0, flags=TCP_FIN | TCP_ACK)),
            (7 * MS, tcp(B, A, 51, 3, payload=0, flags=TCP_FIN | TCP_ACK)),  # 1 ms
            (12 * MS, tcp(A, B, 4, 51, payload=0)),  # ACK of B's FIN: 5 ms
        ],
    )
    assert rtts(events) == [4 * MS, 1 * MS, 5 * MS]
    assert engine.flows == {}


# -- bursts (docs/algorithm.md, timestamp_packet and match_packet) --------------------


def burst_engine(burst: int, *, rate_limit_ms: int = 100, **config: int) -> Engine:
    return Engine(
        Config(
            rate_limit_ns=rate_limit_ms * MS, burst_packets=burst, burst_window_ns=4 * MS, **config
        )
    )


def stamped_ids(engine: Engine) -> dict[int, int]:
    """identifier -> time of every waiting timestamp."""
    return {key[6]: sent for key, sent in engine.timestamps.items()}


def test_burst_timestamps_n_more_packets_then_the_rate_limit_rules_again() -> None:
    engine = burst_engine(2)
    packets = [(0, tcp(A, B, 1, 0))]  # starts the direction
    packets += [(i * MS, tcp(A, B, 1 + i, 0)) for i in range(1, 5)]
    packets += [(101 * MS, tcp(A, B, 200, 0)), (102 * MS, tcp(A, B, 201, 0))]
    run(engine, packets)
    # 1 ms opens a window, 2 and 3 ms join it (N = 2 reached), 4 ms is refused; 101 ms
    # passes the rate limit (counted from the window's opening) and opens the next.
    assert stamped_ids(engine) == {2: 1 * MS, 3: 2 * MS, 4: 3 * MS, 200: 101 * MS, 201: 102 * MS}
    state = engine.flows[engine.flow_key((0, IPPROTO_TCP, A, 40000, B, 5201))[0]].first
    assert state.last_timestamp == 101 * MS and state.burst_left == 1


def test_burst_window_is_half_open() -> None:
    engine = burst_engine(5)
    packets = [(0, tcp(A, B, 1, 0)), (1 * MS, tcp(A, B, 2, 0))]
    packets += [(5 * MS - 1, tcp(A, B, 3, 0)), (5 * MS, tcp(A, B, 4, 0))]
    run(engine, packets)
    assert stamped_ids(engine) == {2: 1 * MS, 3: 5 * MS - 1}


def test_burst_keeps_the_new_identifier_rule() -> None:
    engine = burst_engine(1)
    packets = [(0, tcp(A, B, 1, 0)), (1 * MS, tcp(A, B, 2, 0))]
    # the same TSval again, then an older one: neither is new, neither takes the slot
    packets += [(1_500_000, tcp(A, B, 2, 0)), (2 * MS, tcp(A, B, 1, 0))]
    packets += [(3 * MS, tcp(A, B, 3, 0))]
    run(engine, packets)
    assert stamped_ids(engine) == {2: 1 * MS, 3: 3 * MS}


def test_burst_slot_is_used_up_when_the_table_is_full() -> None:
    engine = burst_engine(2, max_timestamps=1)
    packets = [
        (0, tcp(A, B, 1, 0)),
        (1 * MS, tcp(A, B, 2, 0)),  # opens the window: the only entry
        (1_500_000, tcp(A, B, 3, 0)),  # joins the burst: the table is full
        (2 * MS, tcp(B, A, 9, 2, payload=0)),  # matches 2: the table has room again
        (2_500_000, tcp(A, B, 4, 0)),  # the last slot
        (3 * MS, tcp(A, B, 5, 0)),  # no slot left
    ]
    events = run(engine, packets)
    assert engine.counters.timestamps_table_full == 1
    assert [e.table for e in events if isinstance(e, MapFullEvent)] == [Table.TIMESTAMPS]
    assert stamped_ids(engine) == {4: 2_500_000}


def test_one_rtt_event_per_window_and_every_match_feeds_min_and_srtt() -> None:
    engine = burst_engine(1)
    packets = [
        (0, tcp(A, B, 1, 0)),
        (1 * MS, tcp(A, B, 2, 0)),  # window 1 opens
        (2 * MS, tcp(A, B, 3, 0)),  # joins it
        (21 * MS, tcp(B, A, 9, 2, payload=0)),  # rtt 20 ms: reported
        (21_500_000, tcp(B, A, 10, 3, payload=0)),  # rtt 19.5 ms: silent
        (101 * MS, tcp(A, B, 4, 0)),  # window 2 opens
        (131 * MS, tcp(B, A, 11, 4, payload=0)),  # rtt 30 ms: reported
    ]
    events = run(engine, packets)
    reported = [(e.rtt, e.min_rtt) for e in events if isinstance(e, RttEvent)]
    assert reported == [(20 * MS, 20 * MS), (30 * MS, 19_500_000)]
    assert engine.counters.timestamps_matched == 3
    assert engine.counters.rtt_events == 2
    state = engine.flows[engine.flow_key((0, IPPROTO_TCP, A, 40000, B, 5201))[0]].first
    srtt = smoothed_rtt(smoothed_rtt(smoothed_rtt(0, 20 * MS), 19_500_000), 30 * MS)
    assert state.srtt == srtt


def test_replies_of_the_previous_window_are_reported_once() -> None:
    """Windows opening faster than replies come back (rate limit shorter than the RTT):
    the current and the previous window are told apart by their opening times; older
    windows are not tracked and report every match."""
    engine = burst_engine(1, rate_limit_ms=2)
    sends = [(1, 2), (2.5, 3), (4, 4), (5.5, 5), (7, 6), (8.5, 7)]  # (ms, TSval)
    packets = [(0, tcp(A, B, 1, 0))]
    packets += [(round(ms * MS), tcp(A, B, tsval, 0)) for ms, tsval in sends]
    # windows open at 1, 4 and 7 ms, each joined 1.5 ms later; replies after all three
    packets += [(20 * MS + tsval, tcp(B, A, 9, tsval, payload=0)) for _, tsval in sends]
    events = run(engine, packets)
    echoed = [e.timestamp - 20 * MS for e in events if isinstance(e, RttEvent)]
    # window 1 is older than the previous one: both of its replies are reported
    assert echoed == [2, 3, 4, 6]


def test_without_rate_limit_every_packet_opens_its_own_window() -> None:
    engine = burst_engine(3, rate_limit_ms=0)
    packets = [(0, tcp(A, B, 1, 0))]
    packets += [(i * MS, tcp(A, B, 1 + i, 0)) for i in range(1, 6)]
    packets += [(20 * MS + i, tcp(B, A, 9, 1 + i, payload=0)) for i in range(1, 6)]
    events = run(engine, packets)
    assert len(rtts(events)) == 5
