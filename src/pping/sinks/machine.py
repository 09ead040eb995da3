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
from .output import TextStream
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
