"""Drive a data path with the records of a capture file.

The capture's own clock is the engine's clock: each packet is processed at its capture
time, and the periodic clean-up runs whenever capture time has advanced by the clean-up
interval, so replaying a capture is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .engine import Engine
from .events import Event
from .packet import parse_packet
from .sources.pcap import CaptureRecord


class CleanupClock:
    """Says when the periodic clean-up is due, in capture time."""

    def __init__(self, interval_ns: int) -> None:
        self.interval_ns = interval_ns
        self.next_due: int | None = None

    def due(self, now: int) -> bool:
        if self.interval_ns <= 0:
            return False
        if self.next_due is None:
            self.next_due = now + self.interval_ns
            return False
        if now < self.next_due:
            return False
        # One clean-up at the current time, however long the gap: a capture may jump
        # by years, and the outcome of many empty clean-ups equals that of one.
        self.next_due = now + self.interval_ns
        return True


def replay(
    engine: Engine, records: Iterable[CaptureRecord], merge_interfaces: bool = False
) -> Iterator[Event]:
    """Events of the engine for each record, in order, with clean-ups interleaved
    (and, with --stats-interval, a final statistics record at the last packet's time).

    Each interface of a capture is its own observation point (link) unless
    `merge_interfaces` says they all watch one link.
    """
    clock = CleanupClock(engine.config.cleanup_interval_ns)
    process = engine.process
    now: int | None = None
    for record in records:
        now = record.timestamp_ns
        if clock.due(now):
            yield from engine.expire(now)
        info = parse_packet(record.linktype, record.data, record.wire_len)
        if isinstance(info, str):
            engine.count_skipped(info)
            continue
        events = process(info, now, 0 if merge_interfaces else record.interface)
        if events:
            yield from events
    if engine.config.stats_interval_ns and now is not None:
        yield engine.statistics(now)  # the final statistics record
