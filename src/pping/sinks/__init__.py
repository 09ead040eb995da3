"""Output sinks: turn events into text on an injected stream.

Every sink has the same three methods (`Sink`), and `make_sink` picks one from the
command line's `--format` and `-m`. The formats are described in
docs/output-formats.md.

The output formats also have `write_rtt_batch(columns)`: the same text for many RTT
events given as `columnar.RttColumns`, built with numpy; live monitoring uses it when
the sink has it (a sink without it gets every event through `write`).
"""

from __future__ import annotations

from typing import Protocol

from ..errors import OptionsError
from ..events import Counters, Event
from .jsonfmt import JsonArraySink, JsonLinesSink
from .machine import MachineSink
from .output import ReopenableFile, TextStream
from .ppviz import PpvizSink
from .standard import StandardSink

FORMATS = ("standard", "ppviz", "json", "jsonl")


class Sink(Protocol):
    def write(self, event: Event) -> None:
        """Format one event (RTT, flow or map-full)."""

    def write_counters(self, counters: Counters, final: bool) -> None:
        """Report the data path's counters; `final` for the end-of-run summary."""

    def close(self) -> None:
        """Finish the output (close a JSON array) and flush; the stream stays open."""


def make_sink(fmt: str, out: TextStream, err: TextStream, *, machine: bool = False) -> Sink:
    """The sink for `fmt` (one of FORMATS) writing to `out`, diagnostics to `err`.

    `machine` selects Kathie Nichols' `-m` line instead of the standard format; it
    replaces the human-readable output, so it only combines with "standard".
    `make_sink("machine", ...)` is accepted as a spelling of the same thing.
    """
    if fmt == "machine":
        fmt, machine = "standard", True
    if fmt not in FORMATS:
        raise OptionsError(f"unknown output format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if machine:
        if fmt != "standard":
            raise OptionsError(f"-m/--machine is an output format of its own; not with {fmt}")
        return MachineSink(out, err)
    if fmt == "standard":
        return StandardSink(out, err)
    if fmt == "ppviz":
        return PpvizSink(out, err)
    if fmt == "json":
        return JsonArraySink(out, err)
    return JsonLinesSink(out, err)


__all__ = [
    "FORMATS",
    "JsonArraySink",
    "JsonLinesSink",
    "MachineSink",
    "PpvizSink",
    "ReopenableFile",
    "Sink",
    "StandardSink",
    "TextStream",
    "make_sink",
]
