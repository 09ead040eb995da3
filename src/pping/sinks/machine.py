"""Kathie Nichols' pping `-m` ("machine readable") line, one RTT per line.

    <epoch s>.<usec> <rtt s> <min rtt s> <fBytes> <dBytes> <pBytes> <flow>
    1795627991.102971 0.014456 0.000030 123000 61000 5200 198.18.0.2:5201+198.18.0.1:41356

The numbers are printed as her tool prints them: the capture time truncated to
microseconds, RTTs as seconds with six decimals (rounded), byte counts as integers.
The byte columns are rebuilt from what an RttEvent carries (see
docs/output-formats.md for how closely they follow hers):

- fBytes: bytes sent so far in the timestamped direction (`sent_bytes`);
- dBytes: fBytes of the previous RTT sample of the same flow (0 for the first);
- pBytes: bytes seen in the reply direction since the previous RTT sample of the same
  flow (`rec_bytes` minus its value at that sample).

Flow events are not part of the format (they only drop the per-flow state); map-full
warnings, pressure changes, statistics records and the counters summary go to the
error stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ..events import (
    Event,
    Flow,
    FlowEvent,
    FlowEventType,
    MapFullEvent,
    PressureEvent,
    RttEvent,
    StatsEvent,
)
from .columnar import U64, RttColumns, digits, fixed6, integers, render, seconds_and_fraction
from .output import TextStream, write_ascii
from .standard import FLOW_CACHE_LIMIT, NS_PER_S, TextSink

NS_PER_US = 1_000

# Her printf: "%" PRId64 ".%06d %.6f %.6f %.0f %.0f %.0f", then " %s\n" for the flow.
_LINE = "%d.%06d %.6f %.6f %d %d %d %s\n"

_CLOSING = (FlowEventType.CLOSING, FlowEventType.CLOSING_BOTH)


class MachineSink(TextSink):
    def __init__(self, out: TextStream, err: TextStream) -> None:
        super().__init__(out, err)
        # Per reply-direction flow: [flow text, sent_bytes and rec_bytes at its previous
        # RTT sample]. One dictionary, so one hash of the flow per event.
        self._state: dict[Flow, list[Any]] = {}
        self._closed = False

    def _new_flow(self, flow: Flow) -> list[Any]:
        state = self._state
        if len(state) >= FLOW_CACHE_LIMIT:
            # Bounded memory: forget the flow seen first (it restarts from zero).
            del state[next(iter(state))]
        entry: list[Any] = [str(flow), -1, -1]
        state[flow] = entry
        return entry

    def write(self, event: Event) -> None:
        if type(event) is RttEvent:
            entry = self._state.get(event.flow) or self._new_flow(event.flow)
            sent = event.sent_bytes
            rec = event.rec_bytes
            last_sent = entry[1]
            last_rec = entry[2]
            # First sample, or counters that went backwards (the data path restarted
            # the flow): count from zero.
            d_bytes = last_sent if 0 <= last_sent <= sent else 0
            p_bytes = rec - last_rec if 0 <= last_rec <= rec else rec
            entry[1] = sent
            entry[2] = rec
            t = event.timestamp
            self._out.write(
                _LINE
                % (
                    t // NS_PER_S,
                    t % NS_PER_S // NS_PER_US,
                    event.rtt / NS_PER_S,
                    event.min_rtt / NS_PER_S,
                    sent,
                    d_bytes,
                    p_bytes,
                    entry[0],
                )
            )
        elif type(event) is FlowEvent:
            if event.event_type in _CLOSING:
                self._state.pop(event.flow, None)
                self._state.pop(event.flow.reversed(), None)
        elif type(event) is MapFullEvent:
            self._warn(event)
        elif type(event) is PressureEvent or type(event) is StatsEvent:
            self._note(event)

    def write_rtt_batch(self, columns: RttColumns) -> None:
        """The lines `write` prints for these RTT events, built with numpy."""
        n = len(columns)
        if not n:
            return
        flows = self._batch_flows(columns)
        if flows is None:
            for event in columns.events():
                self.write(event)
            return
        group, entries = flows
        d_bytes, p_bytes = self._byte_columns(group, entries, columns)
        seconds, ns = seconds_and_fraction(columns.timestamp, NS_PER_S)
        text = render(
            [
                integers(seconds),
                b".",
                digits(ns // np.uint64(NS_PER_US), 6),
                b" ",
                *fixed6(columns.rtt, NS_PER_S),
                b" ",
                *fixed6(columns.min_rtt, NS_PER_S),
                b" ",
                integers(columns.sent_bytes),
                b" ",
                integers(d_bytes),
                b" ",
                integers(p_bytes),
                b" ",
                self._flow_columns.field(columns),
                b"\n",
            ]
        )
        write_ascii(self._out, text)

    def _batch_flows(
        self, columns: RttColumns
    ) -> tuple[npt.NDArray[np.intp], list[list[Any]]] | None:
        """Each event's flow as an index into a list of state entries (made for new
        flows, in order of first appearance, as `write` makes them); None when the
        state would overflow FLOW_CACHE_LIMIT (then `write` must forget flows in its
        own order)."""
        unique_ids, first, inverse = np.unique(
            columns.flow_ids, return_index=True, return_inverse=True
        )
        state = self._state
        entries: list[list[Any]] = []
        index_of: dict[Flow, int] = {}
        id_index = np.empty(len(unique_ids), dtype=np.intp)
        new = 0
        # In order of first appearance, so new flows enter the state as `write` adds them.
        for position in np.argsort(first, kind="stable").tolist():
            flow = columns.flows[int(unique_ids[position])]
            index = index_of.get(flow)
            if index is None:
                entry = state.get(flow)
                if entry is None:
                    new += 1
                    entry = [str(flow), -1, -1]
                index = index_of[flow] = len(entries)
                entries.append(entry)
            id_index[position] = index
        if len(state) + new > FLOW_CACHE_LIMIT:
            return None
        for flow, index in index_of.items():
            state.setdefault(flow, entries[index])
        group: npt.NDArray[np.intp] = id_index[inverse.reshape(-1)]
        return group, entries

    def _byte_columns(
        self, group: npt.NDArray[np.intp], entries: list[list[Any]], columns: RttColumns
    ) -> tuple[U64, U64]:
        """dBytes and pBytes of each event, from the previous sample of its flow (in
        the batch, or the state's), and the state left at each flow's last sample."""
        order = np.argsort(group, kind="stable")
        sorted_group = group[order]
        sent = columns.sent_bytes[order]
        rec = columns.rec_bytes[order]
        starts = np.ones(len(order), dtype=np.bool_)
        starts[1:] = sorted_group[1:] != sorted_group[:-1]
        last_sent = np.empty_like(sent)
        last_rec = np.empty_like(rec)
        last_sent[1:] = sent[:-1]
        last_rec[1:] = rec[:-1]
        known = np.ones(len(order), dtype=np.bool_)
        start_rows = np.flatnonzero(starts)
        for row, index in zip(start_rows.tolist(), sorted_group[start_rows].tolist(), strict=True):
            entry = entries[index]
            known[row] = entry[1] >= 0
            last_sent[row] = max(entry[1], 0)
            last_rec[row] = max(entry[2], 0)
        sent_ok = known & (last_sent <= sent)
        rec_ok = known & (last_rec <= rec)
        d_sorted = np.where(sent_ok, last_sent, np.uint64(0))
        p_sorted = np.where(rec_ok, rec - np.where(rec_ok, last_rec, np.uint64(0)), rec)
        ends = np.append(start_rows[1:] - 1, len(order) - 1)
        for row, index in zip(ends.tolist(), sorted_group[ends].tolist(), strict=True):
            entries[index][1] = int(sent[row])
            entries[index][2] = int(rec[row])
        d_bytes = np.empty_like(d_sorted)
        p_bytes = np.empty_like(p_sorted)
        d_bytes[order] = d_sorted
        p_bytes[order] = p_sorted
        return d_bytes, p_bytes
