"""The ppviz format: input for Kathie Nichols' ppviz visualiser, one RTT per line.

    <epoch s> <rtt s> <min rtt s> <flow>
    1795627991.102971732 0.014456300 0.000030275 198.18.0.2:5201+198.18.0.1:41356

All three numbers are exact decimal seconds with nine fractional digits (whole
nanoseconds). Flow events are not part of the format and are dropped; map-full
warnings, pressure changes, statistics records and the counters summary go to the
error stream.
"""

from __future__ import annotations

from ..events import Event, MapFullEvent, PressureEvent, RttEvent, StatsEvent
from .columnar import Bytes2D, RttColumns, digits, integers, render, seconds_and_fraction
from .output import write_ascii
from .standard import NS_PER_S, TextSink

# Seconds with nine decimals, from integer nanoseconds: exact, never an exponent.
# (%-formatting is measurably faster than f-strings with format specifications.)
_LINE = "%d.%09d %d.%09d %d.%09d %s\n"


class PpvizSink(TextSink):
    def write(self, event: Event) -> None:
        if type(event) is RttEvent:
            flow = self._flow_text.get(event.flow) or self._flow(event.flow)
            t, r, m = event.timestamp, event.rtt, event.min_rtt
            self._out.write(
                _LINE
                % (
                    t // NS_PER_S,
                    t % NS_PER_S,
                    r // NS_PER_S,
                    r % NS_PER_S,
                    m // NS_PER_S,
                    m % NS_PER_S,
                    flow,
                )
            )
        elif type(event) is MapFullEvent:
            self._warn(event)
        elif type(event) is PressureEvent or type(event) is StatsEvent:
            self._note(event)

    def write_rtt_batch(self, columns: RttColumns) -> None:
        """The lines `write` prints for these RTT events, built with numpy."""
        if not len(columns):
            return
        parts: list[bytes | Bytes2D] = []
        for values in (columns.timestamp, columns.rtt, columns.min_rtt):
            whole, ns = seconds_and_fraction(values, NS_PER_S)
            parts += [integers(whole), b".", digits(ns, 9), b" "]
        parts += [self._flow_columns.field(columns), b"\n"]
        write_ascii(self._out, render(parts))
