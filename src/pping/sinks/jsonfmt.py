"""JSON output: one array per file (`json`) or one object per line (`jsonl`).

Records are compact objects with ePPing's field names and order; times are integer
nanoseconds (timestamps since the Unix epoch), RTT counters are integers and
`match_on_egress` is a boolean:

    {"timestamp":1795627991102971732,"src_ip":"198.18.0.2","src_port":5201,
     "dest_ip":"198.18.0.1","dest_port":41356,"protocol":"TCP","rtt":14456300,
     "min_rtt":30275,"sent_packets":10,"sent_bytes":1000,"rec_packets":8,
     "rec_bytes":0,"match_on_egress":false}

Flow events carry `flow_event`, `reason` and `triggered_by` after the common fields,
map-full events `map_full` ("timestamps" or "flows"), and the counters summary is
`{"summary":{...},"final":true}`, the last record of the output. Pressure changes
are `{"timestamp":...,"pressure":"sampling_raised",...}` and statistics records
`{"timestamp":...,"statistics":{...},"final":false}` (docs/output-formats.md).

The `json` array is written one element per line: `[` before the first record,
`,` before every later one, `]` on its own line at the end. Every line is complete
when written, and the whole is one valid JSON document once closed. When the output
is a ReopenableFile, a reopen closes the array in the old file and starts a new one
in the new file, so each file is a document of its own.

Records are built with %-formatting rather than json.dumps (several times faster
per RTT event); the only strings interpolated are addresses, protocol names and fixed
words, which never need escaping, and the per-flow part is built once per flow
with json.dumps anyway.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from ..events import (
    AggregateEvent,
    AggregateHeader,
    Counters,
    Event,
    Flow,
    FlowEvent,
    MapFullEvent,
    PressureEvent,
    RttEvent,
    StatsEvent,
    Table,
    TrafficCounts,
)
from .columnar import FlowTexts, RttColumns, choice, integers, render
from .output import ReopenableFile, TextStream, write_ascii
from .standard import (
    FLOW_CACHE_LIMIT,
    ClockText,
    counters_text,
    flow_event_name,
    map_full_warning,
    reason_name,
    source_name,
)

TABLE_NAMES = {Table.TIMESTAMPS: "timestamps", Table.FLOWS: "flows"}

# %d also guarantees JSON integers whatever integer type a source hands over.
_RTT_RECORD = (
    '{"timestamp":%d,%s,"rtt":%d,"min_rtt":%d,"sent_packets":%d,"sent_bytes":%d,'
    '"rec_packets":%d,"rec_bytes":%d,"match_on_egress":%s}'
)


def _flow_fields(flow: Flow) -> str:
    return (
        f'"src_ip":{json.dumps(flow.src_ip)},"src_port":{int(flow.sport)},'
        f'"dest_ip":{json.dumps(flow.dest_ip)},"dest_port":{int(flow.dport)},'
        f'"protocol":{json.dumps(flow.protocol_name)}'
    )


def _traffic_json(counts: TrafficCounts) -> dict[str, dict[str, int]]:
    """ePPing's traffic object: only the classes that saw packets, only non-zero fields."""
    record: dict[str, dict[str, int]] = {}
    for name, packets, size in (
        ("TCP_TS", counts.tcp_ts_packets, counts.tcp_ts_bytes),
        ("TCP_noTS", counts.tcp_nots_packets, counts.tcp_nots_bytes),
        ("other", counts.other_packets, counts.other_bytes),
    ):
        if packets:
            record[name] = {"packets": packets} | ({"bytes": size} if size else {})
    return record


def aggregate_record(event: AggregateEvent) -> str:
    record: dict[str, object] = {
        "timestamp": event.timestamp,
        "ip_prefix": event.prefix,
        "rx_stats": _traffic_json(event.rx),
        "tx_stats": _traffic_json(event.tx),
    }
    if event.rtt_count:
        record |= {
            "count_rtt": event.rtt_count,
            "min_rtt": event.rtt_min,
            "mean_rtt": event.rtt_mean(),
            "median_rtt": event.rtt_percentile(50),
            "p95_rtt": event.rtt_percentile(95),
            "max_rtt": event.rtt_max,
            "histogram": list(event.histogram),
        }
    return json.dumps(record, separators=(",", ":"))


def aggregate_header_record(event: AggregateHeader) -> str:
    return json.dumps(
        {
            "timestamp": event.timestamp,
            "bins": event.bins,
            "bin_width_ns": event.bin_width,
            "aggregation_interval_ns": event.interval,
            "timeout_interval_ns": event.timeout,
            "ipv4_prefix_len": event.ipv4_prefix_len,
            "ipv6_prefix_len": event.ipv6_prefix_len,
        },
        separators=(",", ":"),
    )


def pressure_record(event: PressureEvent) -> str:
    return json.dumps(
        {
            "timestamp": event.timestamp,
            "pressure": event.change.name.lower(),
            "table": TABLE_NAMES.get(event.table, str(int(event.table))),
            "entries": event.entries,
            "capacity": event.capacity,
            "sampling_scale": event.sampling_scale,
            "rate_limit": event.rate_limit_ns,
            "timeout_divisor": event.timeout_divisor,
            "flow_timeout": event.flow_timeout_ns,
            "grown_to": event.grown_to,
        },
        separators=(",", ":"),
    )


def stats_record(event: StatsEvent) -> str:
    fields = asdict(event)
    timestamp, final = fields.pop("timestamp"), fields.pop("final")
    fields["rate_limit"] = fields.pop("rate_limit_ns")
    fields["flow_timeout"] = fields.pop("flow_timeout_ns")
    record = {"timestamp": timestamp, "statistics": fields, "final": final}
    return json.dumps(record, separators=(",", ":"))


def summary_record(counters: Counters, final: bool) -> str:
    return json.dumps({"summary": counters.as_dict(), "final": final}, separators=(",", ":"))


class JsonLinesSink:
    """One compact JSON object per line (JSON Lines); the summary is the last line."""

    def __init__(self, out: TextStream, err: TextStream) -> None:
        self._out = out
        self._err = err
        self._clock = ClockText()
        self._flow_json: dict[Flow, str] = {}
        self._flow_columns = FlowTexts(_flow_fields)
        self._closed = False

    def _fields(self, flow: Flow) -> str:
        text = _flow_fields(flow)
        if len(self._flow_json) >= FLOW_CACHE_LIMIT:
            self._flow_json.clear()
        self._flow_json[flow] = text
        return text

    def encode(self, event: Event) -> str:
        """The record for `event`, without separator or newline."""
        if type(event) is RttEvent:
            fields = self._flow_json.get(event.flow) or self._fields(event.flow)
            return _RTT_RECORD % (
                event.timestamp,
                fields,
                event.rtt,
                event.min_rtt,
                event.sent_packets,
                event.sent_bytes,
                event.rec_packets,
                event.rec_bytes,
                "true" if event.match_on_egress else "false",
            )
        if isinstance(event, AggregateEvent):
            return aggregate_record(event)
        if isinstance(event, AggregateHeader):
            return aggregate_header_record(event)
        if isinstance(event, PressureEvent):
            return pressure_record(event)
        if isinstance(event, StatsEvent):
            return stats_record(event)
        fields = self._flow_json.get(event.flow) or self._fields(event.flow)
        if type(event) is FlowEvent:
            return (
                f'{{"timestamp":{event.timestamp},{fields},'
                f'"flow_event":"{flow_event_name(event.event_type)}",'
                f'"reason":"{reason_name(event.reason)}",'
                f'"triggered_by":"{source_name(event.source)}"}}'
            )
        if type(event) is MapFullEvent:
            table = TABLE_NAMES.get(event.table, str(int(event.table)))
            return f'{{"timestamp":{event.timestamp},{fields},"map_full":"{table}"}}'
        raise TypeError(f"not an event: {event!r}")

    def encode_rtt_batch(self, columns: RttColumns, separator: bytes = b"") -> bytes | memoryview:
        """The records of these RTT events, each after `separator` and before a newline
        (what `encode` gives, built with numpy)."""
        text = render(
            [
                separator + b'{"timestamp":',
                integers(columns.timestamp),
                b",",
                self._flow_columns.field(columns),
                b',"rtt":',
                integers(columns.rtt),
                b',"min_rtt":',
                integers(columns.min_rtt),
                b',"sent_packets":',
                integers(columns.sent_packets),
                b',"sent_bytes":',
                integers(columns.sent_bytes),
                b',"rec_packets":',
                integers(columns.rec_packets),
                b',"rec_bytes":',
                integers(columns.rec_bytes),
                b',"match_on_egress":',
                choice(columns.match_on_egress, b"true", b"false"),
                b"}\n",
            ]
        )
        return text

    def write_rtt_batch(self, columns: RttColumns) -> None:
        """What `write` prints for each of these RTT events."""
        if len(columns):
            write_ascii(self._out, self.encode_rtt_batch(columns))

    def write(self, event: Event) -> None:
        self._out.write(self.encode(event) + "\n")
        if type(event) is MapFullEvent:
            self._err.write(map_full_warning(self._clock, event))

    def write_counters(self, counters: Counters, final: bool) -> None:
        self._out.write(summary_record(counters, final) + "\n")
        self._err.write(counters_text(counters, final))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._out.flush()


class JsonArraySink(JsonLinesSink):
    """One JSON array per output file, one element per line."""

    def __init__(self, out: TextStream, err: TextStream) -> None:
        super().__init__(out, err)
        self._sep = ""
        out.write("[")
        if isinstance(out, ReopenableFile):
            out.add_reopen_listener(self)

    def write(self, event: Event) -> None:
        self._out.write(f"{self._sep}{self.encode(event)}\n")
        self._sep = ","
        if type(event) is MapFullEvent:
            self._err.write(map_full_warning(self._clock, event))

    def write_rtt_batch(self, columns: RttColumns) -> None:
        """What `write` prints for each of these RTT events."""
        if not len(columns):
            return
        text = self.encode_rtt_batch(columns, b",")
        # Every record after a comma, but the first of the array.
        write_ascii(self._out, text[len(b",") - len(self._sep) :])
        self._sep = ","

    def write_counters(self, counters: Counters, final: bool) -> None:
        self._out.write(f"{self._sep}{summary_record(counters, final)}\n")
        self._sep = ","
        self._err.write(counters_text(counters, final))

    def before_reopen(self) -> None:
        if not self._closed:
            self._out.write("]\n")

    def after_reopen(self) -> None:
        if not self._closed:
            self._out.write("[")
            self._sep = ""

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._out.write("]\n")
            self._out.flush()
