"""Output sinks: exact text of every format for every event type, JSON validity,
reopening (log rotation) and the counters summary."""

from __future__ import annotations

import errno
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pping.errors import OptionsError, OutputError
from pping.events import (
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
    Table,
)
from pping.sinks import (
    FORMATS,
    JsonArraySink,
    JsonLinesSink,
    MachineSink,
    PpvizSink,
    ReopenableFile,
    StandardSink,
    make_sink,
)
from pping.sinks.output import PENDING_BATCHES


def v4(a: int, b: int, c: int, d: int) -> bytes:
    return b"\0" * 10 + b"\xff\xff" + bytes([a, b, c, d])


SERVER = v4(198, 18, 0, 2)
CLIENT = v4(198, 18, 0, 1)
V6_A = bytes.fromhex("20010db8000000000000000000000001")
V6_B = bytes.fromhex("20010db800000000000000000000000b")

TCP4 = Flow(IPPROTO_TCP, SERVER, 5201, CLIENT, 41356)  # reply direction: server answers
TCP6 = Flow(IPPROTO_TCP, V6_A, 443, V6_B, 50000)
ICMP4 = Flow(IPPROTO_ICMP, v4(10, 0, 0, 2), 4711, v4(10, 0, 0, 1), 4711)
ICMP6 = Flow(IPPROTO_ICMPV6, V6_B, 99, V6_A, 99)

# 2026-11-25 17:32:36.559578291 UTC
T0 = 1_795_627_956_559_578_291
S = 1_000_000_000


def rtt(
    flow: Flow = TCP4,
    t: int = T0,
    rtt_ns: int = 14_456_300,
    min_ns: int = 30_275,
    sent: tuple[int, int] = (10, 14_480),
    rec: tuple[int, int] = (8, 0),
    egress: bool = False,
) -> RttEvent:
    return RttEvent(t, flow, rtt_ns, min_ns, sent[0], sent[1], rec[0], rec[1], egress)


OPEN = FlowEvent(T0 - 5 * S, TCP4, FlowEventType.OPENING, EventReason.SYN, EventSource.PACKET_DEST)
CLOSE_FIN = FlowEvent(
    T0 + 2 * S, TCP4, FlowEventType.CLOSING, EventReason.FIN, EventSource.PACKET_SOURCE
)
CLOSE_GC = FlowEvent(
    T0 + 300 * S,
    ICMP6,
    FlowEventType.CLOSING,
    EventReason.FLOW_TIMEOUT,
    EventSource.GARBAGE_COLLECTION,
)
TS_FULL = MapFullEvent(T0 + 1, TCP4, Table.TIMESTAMPS)
FLOWS_FULL = MapFullEvent(T0 + 2, TCP6, Table.FLOWS)


def counters() -> Counters:
    c = Counters(
        packets=1000,
        timestamps_created=40,
        timestamps_matched=30,
        timestamps_expired=5,
        timestamps_table_full=2,
        flows_created=4,
        flows_closed=1,
        flows_expired=1,
        flows_table_full=1,
        rtt_events=30,
    )
    c.skip("no-timestamp", 7)
    c.skip("non-ip", 3)
    return c


SUMMARY_TEXT = (
    "Summary: 1000 packets, 30 RTT events\n"
    "  skipped:    10 (no-timestamp: 7, non-ip: 3)\n"
    "  timestamps: 40 created, 30 matched, 5 expired, 2 refused (table full)\n"
    "  flows:      4 created, 1 closed, 1 expired, 1 refused (table full)\n"
)


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def run(fmt: str, events: list[Event], *, machine: bool = False) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    sink = make_sink(fmt, out, err, machine=machine)
    for event in events:
        sink.write(event)
    sink.close()
    return out.getvalue(), err.getvalue()


# --- make_sink -------------------------------------------------------------------


def test_formats_and_factory() -> None:
    assert FORMATS == ("standard", "ppviz", "json", "jsonl")
    kinds = {fmt: type(make_sink(fmt, io.StringIO(), io.StringIO())) for fmt in FORMATS}
    assert kinds == {
        "standard": StandardSink,
        "ppviz": PpvizSink,
        "json": JsonArraySink,
        "jsonl": JsonLinesSink,
    }
    assert type(make_sink("standard", io.StringIO(), io.StringIO(), machine=True)) is MachineSink
    assert type(make_sink("machine", io.StringIO(), io.StringIO())) is MachineSink


def test_factory_rejects_unknown_format_and_machine_combinations() -> None:
    with pytest.raises(OptionsError):
        make_sink("csv", io.StringIO(), io.StringIO())
    for fmt in ("ppviz", "json", "jsonl"):
        with pytest.raises(OptionsError):
            make_sink(fmt, io.StringIO(), io.StringIO(), machine=True)


# --- standard --------------------------------------------------------------------


@pytest.mark.usefixtures("utc")
def test_standard_rtt_lines() -> None:
    out, err = run(
        "standard",
        [
            rtt(),
            rtt(TCP6, T0 + 1 * S + 5, rtt_ns=1_234_567_891, min_ns=999),
            rtt(ICMP4, T0 + 2 * S, rtt_ns=20_000_000, min_ns=100_000),
            rtt(ICMP6, T0 + 3 * S, rtt_ns=1_500_000_000_000, min_ns=1),
        ],
    )
    assert out == (
        "17:32:36.559578291 14.4563 ms 0.030275 ms TCP 198.18.0.2:5201+198.18.0.1:41356\n"
        "17:32:37.559578296 1234.57 ms 0.000999 ms TCP [2001:db8::1]:443+[2001:db8::b]:50000\n"
        "17:32:38.559578291 20 ms 0.1 ms ICMP 10.0.0.2:4711+10.0.0.1:4711\n"
        "17:32:39.559578291 1.5e+06 ms 1e-06 ms ICMPv6 [2001:db8::b]:99+[2001:db8::1]:99\n"
    )
    assert err == ""


@pytest.mark.usefixtures("utc")
def test_standard_flow_events() -> None:
    out, err = run("standard", [OPEN, CLOSE_FIN, CLOSE_GC])
    assert out == (
        "17:32:31.559578291 TCP 198.18.0.2:5201+198.18.0.1:41356 opening due to SYN from dest\n"
        "17:32:38.559578291 TCP 198.18.0.2:5201+198.18.0.1:41356 closing due to FIN from src\n"
        "17:37:36.559578291 ICMPv6 [2001:db8::b]:99+[2001:db8::1]:99"
        " closing due to flow timeout from garbage collection\n"
    )
    assert err == ""


@pytest.mark.usefixtures("utc")
def test_standard_flow_event_names() -> None:
    events: list[Event] = [
        FlowEvent(T0, TCP4, FlowEventType.CLOSING_BOTH, EventReason.RST, EventSource.PACKET_DEST),
        FlowEvent(T0, TCP4, FlowEventType.OPENING, EventReason.SYN_ACK, EventSource.PACKET_SOURCE),
        FlowEvent(
            T0,
            ICMP4,
            FlowEventType.OPENING,
            EventReason.FIRST_OBSERVED_PACKET,
            EventSource.PACKET_DEST,
        ),
    ]
    out, _ = run("standard", events)
    assert [line.split(" ", 3)[3] for line in out.splitlines()] == [
        "closing due to RST from dest",
        "opening due to SYN-ACK from src",
        "opening due to first observed packet from dest",
    ]


@pytest.mark.usefixtures("utc")
def test_standard_map_full_goes_to_err() -> None:
    out, err = run("standard", [TS_FULL, FLOWS_FULL])
    assert out == ""
    assert err == (
        "17:32:36.559578292 Warning: Unable to create timestamp entry for flow"
        " 198.18.0.2:5201+198.18.0.1:41356\n"
        "17:32:36.559578293 Warning: Unable to create flow entry for flow"
        " [2001:db8::1]:443+[2001:db8::b]:50000\n"
    )


def test_standard_uses_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # A POSIX TZ string needs no time zone database: five hours west of UTC.
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    try:
        out, _ = run("standard", [rtt()])
    finally:
        monkeypatch.undo()
        time.tzset()
    assert out.startswith("12:32:36.559578291 14.4563 ms ")


@pytest.mark.usefixtures("utc")
def test_standard_time_cache_follows_seconds() -> None:
    times = [T0, T0 + 1, T0 + S, T0 + 3600 * S, T0 + 3600 * S + 7]
    out, _ = run("standard", [rtt(t=t) for t in times])
    assert [line[:18] for line in out.splitlines()] == [
        "17:32:36.559578291",
        "17:32:36.559578292",
        "17:32:37.559578291",
        "18:32:36.559578291",
        "18:32:36.559578298",
    ]


def test_summary_text_on_err_for_text_formats() -> None:
    for fmt, machine in (("standard", False), ("ppviz", False), ("standard", True)):
        out, err = io.StringIO(), io.StringIO()
        sink = make_sink(fmt, out, err, machine=machine)
        sink.write_counters(counters(), final=True)
        sink.close()
        assert out.getvalue() == ""
        assert err.getvalue() == SUMMARY_TEXT


def test_interim_summary_and_no_skips() -> None:
    out, err = io.StringIO(), io.StringIO()
    sink = make_sink("standard", out, err)
    sink.write_counters(Counters(packets=5), final=False)
    assert err.getvalue() == (
        "Counters so far: 5 packets, 0 RTT events\n"
        "  skipped:    0\n"
        "  timestamps: 0 created, 0 matched, 0 expired, 0 refused (table full)\n"
        "  flows:      0 created, 0 closed, 0 expired, 0 refused (table full)\n"
    )


# --- ppviz -----------------------------------------------------------------------


def test_ppviz_lines() -> None:
    out, err = run(
        "ppviz",
        [
            OPEN,
            rtt(t=1_795_627_991_102_971_732),
            rtt(TCP6, 1_795_627_992_000_000_001, rtt_ns=1_234_567_891, min_ns=999),
            rtt(ICMP4, 1_795_627_993 * S, rtt_ns=20_000_000, min_ns=20_000_000),
            CLOSE_FIN,
        ],
    )
    assert out == (
        "1795627991.102971732 0.014456300 0.000030275 198.18.0.2:5201+198.18.0.1:41356\n"
        "1795627992.000000001 1.234567891 0.000000999 [2001:db8::1]:443+[2001:db8::b]:50000\n"
        "1795627993.000000000 0.020000000 0.020000000 10.0.0.2:4711+10.0.0.1:4711\n"
    )
    assert err == ""


@pytest.mark.usefixtures("utc")
def test_ppviz_map_full_goes_to_err() -> None:
    out, err = run("ppviz", [TS_FULL])
    assert out == ""
    assert err.endswith(
        "Warning: Unable to create timestamp entry for flow 198.18.0.2:5201+198.18.0.1:41356\n"
    )


def test_ppviz_fields_parse_like_ppviz() -> None:
    # ppviz splits on single spaces, wants 4 (or 7) fields and splits the flow on "+".
    out, _ = run("ppviz", [rtt(TCP6)])
    fields = out.rstrip("\n").split(" ")
    assert len(fields) == 4
    assert float(fields[0]) == pytest.approx(T0 / S)
    src, dst = fields[3].split("+")
    assert (src, dst) == ("[2001:db8::1]:443", "[2001:db8::b]:50000")


# --- machine (-m) ----------------------------------------------------------------


def test_machine_lines_and_byte_columns() -> None:
    events: list[Event] = [
        OPEN,
        rtt(t=1_795_627_991_102_971_732, sent=(10, 14_480), rec=(8, 520)),
        rtt(
            TCP6,
            1_795_627_991_500_000_000,
            rtt_ns=1_234_567_891,
            min_ns=999,
            sent=(3, 300),
            rec=(3, 90),
        ),
        rtt(t=1_795_627_992_000_000_999, rtt_ns=15_000_000, sent=(30, 43_440), rec=(20, 1_300)),
        rtt(t=1_795_627_993_999_999_999, rtt_ns=14_000_000, sent=(50, 72_400), rec=(25, 1_300)),
        CLOSE_FIN,  # forgets the flow: the next sample starts from zero again
        rtt(t=1_795_627_995 * S, sent=(2, 1_448), rec=(1, 0)),
    ]
    out, err = run("standard", events, machine=True)
    assert out == (
        "1795627991.102971 0.014456 0.000030 14480 0 520 198.18.0.2:5201+198.18.0.1:41356\n"
        "1795627991.500000 1.234568 0.000001 300 0 90 [2001:db8::1]:443+[2001:db8::b]:50000\n"
        "1795627992.000000 0.015000 0.000030 43440 14480 780 198.18.0.2:5201+198.18.0.1:41356\n"
        "1795627993.999999 0.014000 0.000030 72400 43440 0 198.18.0.2:5201+198.18.0.1:41356\n"
        "1795627995.000000 0.014456 0.000030 1448 0 0 198.18.0.2:5201+198.18.0.1:41356\n"
    )
    assert err == ""


def test_machine_counters_going_backwards_restart_from_zero() -> None:
    events: list[Event] = [rtt(sent=(10, 5000), rec=(5, 700)), rtt(sent=(1, 100), rec=(1, 50))]
    out, _ = run("standard", events, machine=True)
    assert [line.split(" ")[3:6] for line in out.splitlines()] == [
        ["5000", "0", "700"],
        ["100", "0", "50"],
    ]


def test_machine_icmp_and_reverse_close() -> None:
    # A closing event reported for the other direction forgets the flow too.
    close_rev = FlowEvent(
        T0,
        ICMP4.reversed(),
        FlowEventType.CLOSING,
        EventReason.FLOW_TIMEOUT,
        EventSource.GARBAGE_COLLECTION,
    )
    events: list[Event] = [
        rtt(
            ICMP4,
            1_795_627_991 * S,
            rtt_ns=20_000_000,
            min_ns=20_000_000,
            sent=(1, 56),
            rec=(1, 56),
        ),
        close_rev,
        rtt(
            ICMP4,
            1_795_627_992 * S,
            rtt_ns=21_000_000,
            min_ns=20_000_000,
            sent=(2, 112),
            rec=(2, 112),
        ),
    ]
    out, _ = run("standard", events, machine=True)
    assert out == (
        "1795627991.000000 0.020000 0.020000 56 0 56 10.0.0.2:4711+10.0.0.1:4711\n"
        "1795627992.000000 0.021000 0.020000 112 0 112 10.0.0.2:4711+10.0.0.1:4711\n"
    )


# --- json and jsonl --------------------------------------------------------------

RTT_JSON = (
    '{"timestamp":1795627956559578291,"src_ip":"198.18.0.2","src_port":5201,'
    '"dest_ip":"198.18.0.1","dest_port":41356,"protocol":"TCP","rtt":14456300,'
    '"min_rtt":30275,"sent_packets":10,"sent_bytes":14480,"rec_packets":8,"rec_bytes":0,'
    '"match_on_egress":false}'
)
RTT6_JSON = (
    '{"timestamp":1795627956559578291,"src_ip":"2001:db8::b","src_port":99,'
    '"dest_ip":"2001:db8::1","dest_port":99,"protocol":"ICMPv6","rtt":1000,'
    '"min_rtt":1000,"sent_packets":1,"sent_bytes":56,"rec_packets":1,"rec_bytes":56,'
    '"match_on_egress":true}'
)
OPEN_JSON = (
    '{"timestamp":1795627951559578291,"src_ip":"198.18.0.2","src_port":5201,'
    '"dest_ip":"198.18.0.1","dest_port":41356,"protocol":"TCP","flow_event":"opening",'
    '"reason":"SYN","triggered_by":"dest"}'
)
CLOSE_GC_JSON = (
    '{"timestamp":1795628256559578291,"src_ip":"2001:db8::b","src_port":99,'
    '"dest_ip":"2001:db8::1","dest_port":99,"protocol":"ICMPv6","flow_event":"closing",'
    '"reason":"flow timeout","triggered_by":"garbage collection"}'
)
TS_FULL_JSON = (
    '{"timestamp":1795627956559578292,"src_ip":"198.18.0.2","src_port":5201,'
    '"dest_ip":"198.18.0.1","dest_port":41356,"protocol":"TCP","map_full":"timestamps"}'
)
FLOWS_FULL_JSON = (
    '{"timestamp":1795627956559578293,"src_ip":"2001:db8::1","src_port":443,'
    '"dest_ip":"2001:db8::b","dest_port":50000,"protocol":"TCP","map_full":"flows"}'
)
SUMMARY_JSON = (
    '{"summary":{"packets":1000,"skipped":{"no-timestamp":7,"non-ip":3},'
    '"timestamps_created":40,"timestamps_matched":30,"timestamps_expired":5,'
    '"timestamps_table_full":2,"timestamps_capped":0,"flows_created":4,"flows_closed":1,'
    '"flows_expired":1,"flows_table_full":1,"rtt_events":30,"sampling_raised":0,'
    '"sampling_relaxed":0,"timeout_shortened":0,"timeout_restored":0,"timestamps_grown":0,'
    '"flows_grown":0},"final":true}'
)

ALL_EVENTS: list[Event] = [
    OPEN,
    rtt(),
    rtt(ICMP6, rtt_ns=1000, min_ns=1000, sent=(1, 56), rec=(1, 56), egress=True),
    TS_FULL,
    FLOWS_FULL,
    CLOSE_GC,
]
ALL_JSON = [OPEN_JSON, RTT_JSON, RTT6_JSON, TS_FULL_JSON, FLOWS_FULL_JSON, CLOSE_GC_JSON]


def run_with_summary(fmt: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    sink = make_sink(fmt, out, err)
    for event in ALL_EVENTS:
        sink.write(event)
    sink.write_counters(counters(), final=True)
    sink.close()
    return out.getvalue(), err.getvalue()


@pytest.mark.usefixtures("utc")
def test_jsonl_exact_records_and_summary_last() -> None:
    out, err = run_with_summary("jsonl")
    assert out == "\n".join([*ALL_JSON, SUMMARY_JSON]) + "\n"
    records = [json.loads(line) for line in out.splitlines()]
    assert records[-1]["summary"] == counters().as_dict()
    # Map-full warnings and the summary text also reach a human on err.
    assert err == (
        "17:32:36.559578292 Warning: Unable to create timestamp entry for flow"
        " 198.18.0.2:5201+198.18.0.1:41356\n"
        "17:32:36.559578293 Warning: Unable to create flow entry for flow"
        " [2001:db8::1]:443+[2001:db8::b]:50000\n" + SUMMARY_TEXT
    )


@pytest.mark.usefixtures("utc")
def test_json_array_exact_text_and_summary_last() -> None:
    out, err = run_with_summary("json")
    assert out == "[" + "\n,".join([*ALL_JSON, SUMMARY_JSON]) + "\n]\n"
    records = json.loads(out)
    assert isinstance(records, list)
    assert len(records) == len(ALL_EVENTS) + 1
    assert records[-1] == {"summary": counters().as_dict(), "final": True}
    assert err.endswith(SUMMARY_TEXT)


def test_json_field_order_and_types() -> None:
    out, _ = run("json", [OPEN, rtt(TCP6, egress=True), FLOWS_FULL])
    flow_ev, rtt_ev, full_ev = json.loads(out)
    common = ["timestamp", "src_ip", "src_port", "dest_ip", "dest_port", "protocol"]
    assert list(rtt_ev) == [
        *common,
        "rtt",
        "min_rtt",
        "sent_packets",
        "sent_bytes",
        "rec_packets",
        "rec_bytes",
        "match_on_egress",
    ]
    assert list(flow_ev) == [*common, "flow_event", "reason", "triggered_by"]
    assert list(full_ev) == [*common, "map_full"]
    for key in (
        "timestamp",
        "src_port",
        "dest_port",
        "rtt",
        "min_rtt",
        "sent_packets",
        "sent_bytes",
        "rec_packets",
        "rec_bytes",
    ):
        assert type(rtt_ev[key]) is int
    assert rtt_ev["match_on_egress"] is True
    assert rtt_ev["src_ip"] == "2001:db8::1"  # no brackets inside JSON strings


def test_json_unknown_protocol_is_a_string() -> None:
    flow = Flow(132, CLIENT, 1, SERVER, 2)
    out, _ = run("jsonl", [rtt(flow)])
    assert json.loads(out)["protocol"] == "132"


def test_json_empty_output_is_an_empty_array() -> None:
    out, _ = run("json", [])
    assert out == "[]\n"
    assert json.loads(out) == []
    out, _ = run("jsonl", [])
    assert out == ""


def test_json_interim_summaries() -> None:
    out, _err = io.StringIO(), io.StringIO()
    sink = make_sink("json", out, _err)
    sink.write(rtt())
    sink.write_counters(Counters(packets=1), final=False)
    sink.write(rtt())
    sink.write_counters(Counters(packets=2), final=True)
    sink.close()
    records = json.loads(out.getvalue())
    assert [r.get("final") for r in records] == [None, False, None, True]
    assert records[-1]["summary"]["packets"] == 2


def test_close_is_idempotent() -> None:
    out = io.StringIO()
    sink = make_sink("json", out, io.StringIO())
    sink.close()
    sink.close()
    assert out.getvalue() == "[]\n"


# --- reopening (SIGHUP, log rotation) --------------------------------------------


def test_json_reopen_produces_two_valid_documents(tmp_path: Path) -> None:
    path = tmp_path / "pping.json"
    rotated = tmp_path / "pping.json.1"
    out = ReopenableFile(path)
    sink = make_sink("json", out, io.StringIO())
    sink.write(OPEN)
    sink.write(rtt())
    os.rename(path, rotated)  # what logrotate does before signalling
    assert out.reopen() is True
    sink.write(rtt(t=T0 + S))
    sink.write_counters(counters(), final=True)
    sink.close()
    out.close()
    first = json.loads(rotated.read_text())
    second = json.loads(path.read_text())
    assert [r.get("flow_event") for r in first] == ["opening", None]
    assert [r["timestamp"] for r in second[:-1]] == [T0 + S]
    assert second[-1]["summary"] == counters().as_dict()


def test_json_reopen_without_events_in_between(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    out = ReopenableFile(path)
    sink = make_sink("json", out, io.StringIO())
    os.rename(path, tmp_path / "old.json")
    out.reopen()
    sink.close()
    out.close()
    assert json.loads((tmp_path / "old.json").read_text()) == []
    assert json.loads(path.read_text()) == []


def test_reopen_fails_if_file_was_not_moved(tmp_path: Path) -> None:
    # Like ePPing (fopen "ax"): never clobber; keep writing to the current file.
    path = tmp_path / "out.json"
    out = ReopenableFile(path)
    sink = make_sink("json", out, io.StringIO())
    sink.write(rtt())
    with pytest.raises(OutputError, match="cannot open output file"):
        out.reopen()
    sink.write(rtt(t=T0 + S))
    sink.close()
    out.close()
    assert len(json.loads(path.read_text())) == 2


def test_jsonl_and_standard_reopen(tmp_path: Path) -> None:
    for fmt in ("jsonl", "standard"):
        path = tmp_path / f"out.{fmt}"
        out = ReopenableFile(path)
        sink = make_sink(fmt, out, io.StringIO())
        sink.write(rtt())
        os.rename(path, tmp_path / f"old.{fmt}")
        out.reopen()
        sink.write(rtt(t=T0 + S))
        sink.close()
        out.close()
        assert len((tmp_path / f"old.{fmt}").read_text().splitlines()) == 1
        assert len(path.read_text().splitlines()) == 1


def test_reopenable_file_open_modes(tmp_path: Path) -> None:
    path = tmp_path / "exists.txt"
    path.write_text("earlier\n")
    with pytest.raises(OutputError):
        ReopenableFile(path)
    with ReopenableFile(path, exclusive=False) as out:
        out.write("later\n")
    assert path.read_text() == "earlier\nlater\n"
    with pytest.raises(OutputError):
        ReopenableFile(tmp_path / "missing-dir" / "x.json")


def test_reopenable_stdout_ignores_reopen() -> None:
    stream = io.StringIO()
    out = ReopenableFile(stdout=stream)
    assert not out.is_file
    sink = make_sink("json", out, io.StringIO())
    sink.write(rtt())
    assert out.reopen() is False
    sink.close()
    out.close()  # flushes, does not close standard output
    assert not stream.closed
    assert len(json.loads(stream.getvalue())) == 1


# --- the output thread (byte batches) ----------------------------------------------


def test_byte_batches_and_text_keep_their_order(tmp_path: Path) -> None:
    """More batches than the output thread holds, text in between, a flush that does
    not wait, a reopen: every file has what was written to it, in order."""
    path = tmp_path / "out"
    want = [[], []]
    with ReopenableFile(path) as out:
        for i in range(4 * PENDING_BATCHES):
            batch = b"%d batch\n" % i * (1 + i % 1000)
            out.write_bytes(memoryview(batch) if i % 2 else batch)
            want[i >= 2 * PENDING_BATCHES].append(batch)
            if i % 5 == 0:
                out.write(f"{i} text\n")
                want[i >= 2 * PENDING_BATCHES].append(f"{i} text\n".encode())
            out.flush()
            if i == 2 * PENDING_BATCHES - 1:
                os.rename(path, tmp_path / "first")
                out.reopen()
    assert (tmp_path / "first").read_bytes() == b"".join(want[0])
    assert path.read_bytes() == b"".join(want[1])


class _FullDisk(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_batch_write_is_raised_by_the_next_call() -> None:
    out = ReopenableFile(stdout=io.TextIOWrapper(io.BufferedWriter(_FullDisk()), "ascii"))
    out.write_bytes(b"x" * (1 << 20))  # larger than the buffer: written at once
    with pytest.raises(OSError, match="No space left"):
        out.write("next record\n")
    out.write_bytes(b"dropped\n")  # the error is raised once; later batches are dropped
    out.close()
