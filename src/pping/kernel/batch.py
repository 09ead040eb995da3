"""Batch decoding of the ring buffer: a whole drained region at once, with numpy.

`decode_event` (program.py) unpacks one record at a time (~7 µs each with the event
objects). Here the region between the consumer and the producer positions is decoded
in three steps:

1. **Scan** the record headers for *runs*: consecutive records with the same length
   word (same size, same busy/discard bits). A run is found by reading a few headers
   in Python, then checking the headers of a long run with numpy in growing windows
   (strided views over the mapping, so a run of 100k RTT events costs a handful of
   numpy calls). A busy record ends the scan (it and everything after it wait);
   discarded records are skipped.
2. **Decode** each run as a strided structured array over the mapping (dtypes built
   from abi.py's ctypes layouts), copied out, and split by `event_type` into
   segments of one event type each, in ring order. After the copy the ring space is
   released, so the producer can reuse it while the events are converted.
3. **Convert**, only at the end: `EventBuilder.events()` builds `pping.events` objects
   (flows cached by their 44-byte key); `EventBuilder.rtt_columns()` turns an RTT
   segment into `RttColumns` (wall-clock times, flows as ids into a table kept from
   batch to batch) for the sinks' `write_rtt_batch`; or a consumer takes the arrays
   directly (`EventBatch.segments`, `EventBatch.array`).

The ring's data pages are mapped twice in a row (see ringbuf.py), so a region that
wraps around the end of the ring is contiguous and needs no special case.
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import KernelError
from ..events import (
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
from ..sinks.columnar import RttColumns
from . import abi
from .ringbuf import RingBuffer

BUSY = 1 << 31
DISCARD = 1 << 30
HEADER = 8
_LEN = struct.Struct("<I")

# Headers read one by one before numpy takes over a run; then windows of this many
# headers, growing fourfold.
_PROBE = 8
_FIRST_WINDOW = 64

FLOW_CACHE_LIMIT = 65536


def _scalar(ctype: Any) -> np.dtype[Any]:
    dtype: np.dtype[Any] = np.dtype(ctype)
    return dtype


def flat_dtype(event: type[ctypes.Structure]) -> np.dtype[Any]:
    """The numpy dtype of one event structure, with the flow key flattened.

    Fields: every scalar field of the structure (reserved ones left out), `key` (the
    whole flow key as 44 raw bytes, for caching flows), and the key's `proto`,
    `saddr`/`daddr` (16 raw bytes), `sport`/`dport`. Offsets come from the ctypes
    mirror, so they follow pping.h.
    """
    names: list[str] = []
    formats: list[Any] = []
    offsets: list[int] = []

    def add(name: str, fmt: Any, offset: int) -> None:
        names.append(name)
        formats.append(fmt)
        offsets.append(offset)

    for name, ctype in event._fields_:  # type: ignore[misc]
        offset = getattr(event, name).offset
        if name == "flow":
            add("key", f"V{ctypes.sizeof(abi.FlowKey)}", offset)
            for sub, sub_type in abi.FlowKey._fields_:  # type: ignore[misc]
                if sub.startswith("reserved"):
                    continue
                sub_offset = offset + getattr(abi.FlowKey, sub).offset
                if sub in ("saddr", "daddr"):
                    add(sub, f"V{ctypes.sizeof(sub_type)}", sub_offset)
                else:
                    add(sub, _scalar(sub_type), sub_offset)
        elif not name.startswith("reserved"):
            add(name, _scalar(ctype), offset)
    return np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": ctypes.sizeof(event)}
    )


RTT_DTYPE = flat_dtype(abi.RttEvent)
FLOW_DTYPE = flat_dtype(abi.FlowEvent)
MAP_FULL_DTYPE = flat_dtype(abi.MapFullEvent)
DTYPES: dict[int, np.dtype[Any]] = {
    abi.EVENT_TYPE_RTT: RTT_DTYPE,
    abi.EVENT_TYPE_FLOW: FLOW_DTYPE,
    abi.EVENT_TYPE_MAP_FULL: MAP_FULL_DTYPE,
}


def record_stride(size: int) -> int:
    """Bytes one record of `size` payload bytes takes in the ring (header, padding)."""
    return (size + HEADER + 7) & ~7


def scan(data: memoryview, start: int, end: int) -> tuple[list[tuple[int, int, int]], int]:
    """The committed runs in `data[start:end]` and the offset where reading stopped.

    A run is (offset of the first header, payload size, count). Discarded records
    are consumed but not returned; a busy record stops the scan.
    """
    runs: list[tuple[int, int, int]] = []
    unpack = _LEN.unpack_from
    pos = start
    while pos < end:
        length = unpack(data, pos)[0]
        if length & BUSY:
            break
        size = length & ~(BUSY | DISCARD)
        stride = record_stride(size)
        most = (end - pos) // stride
        if most < 1:
            raise KernelError(f"failed to read the ring buffer: record of {size} bytes overruns")
        count = 1
        while count < most and count < _PROBE and unpack(data, pos + count * stride)[0] == length:
            count += 1
        if count == _PROBE:
            window = _FIRST_WINDOW
            while count < most:
                upto = min(most, count + window)
                headers: npt.NDArray[np.uint32] = np.ndarray(
                    (upto - count,),
                    dtype="<u4",
                    buffer=data,
                    offset=pos + count * stride,
                    strides=(stride,),
                )
                differs = headers != length
                if differs.any():
                    count += int(differs.argmax())
                    break
                count = upto
                window *= 4
        if not length & DISCARD:
            runs.append((pos, size, count))
        pos += count * stride
    return runs, pos


@dataclass
class EventBatch:
    """Decoded events in ring order: segments of (event type, structured array)."""

    segments: list[tuple[int, npt.NDArray[Any]]] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(array) for _, array in self.segments)

    def counts(self) -> dict[int, int]:
        """Events per event type."""
        counts: dict[int, int] = {}
        for kind, array in self.segments:
            counts[kind] = counts.get(kind, 0) + len(array)
        return counts

    def array(self, kind: int) -> npt.NDArray[Any]:
        """Every event of one type (abi.EVENT_TYPE_*) as one structured array."""
        parts = [array for k, array in self.segments if k == kind]
        if not parts:
            return np.zeros(0, dtype=DTYPES[kind])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def decode_region(data: memoryview, runs: list[tuple[int, int, int]]) -> EventBatch:
    """The events of `runs` (from `scan`), copied out of `data`."""
    batch = EventBatch()
    segments = batch.segments
    for pos, size, count in runs:
        stride = record_stride(size)
        kinds: npt.NDArray[np.uint64] = np.ndarray(
            (count,), dtype="<u8", buffer=data, offset=pos + HEADER, strides=(stride,)
        )
        first = int(kinds[0])
        if count == 1 or not (kinds != first).any():
            changes = [0, count]
        else:
            changes = [0, *(np.flatnonzero(kinds[1:] != kinds[:-1]) + 1).tolist(), count]
        for lo, hi in itertools.pairwise(changes):
            kind = int(kinds[lo])
            dtype = DTYPES.get(kind)
            if dtype is None:
                raise KernelError(f"failed to decode an event: unknown type {kind}")
            if dtype.itemsize > size:
                raise KernelError(
                    f"failed to decode an event: type {kind} in a record of {size} bytes"
                )
            # Copied as whole records: numpy copies a structured array field by field,
            # ~15 times slower (58 against 4 ns an RTT event).
            records: npt.NDArray[np.void] = np.ndarray(
                (hi - lo,),
                dtype=np.dtype((np.void, dtype.itemsize)),
                buffer=data,
                offset=pos + HEADER + lo * stride,
                strides=(stride,),
            )
            array = records.copy().view(dtype)
            if segments and segments[-1][0] == kind:
                segments[-1] = (kind, np.concatenate((segments[-1][1], array)))
            else:
                segments.append((kind, array))
    return batch


def read_batch(ring: RingBuffer) -> EventBatch:
    """Every committed event in the ring, decoded; consumes them."""
    data, start, available = ring.region()
    if not available:
        return EventBatch()
    runs, stop = scan(data, start, start + available)
    batch = decode_region(data, runs)
    ring.consume(stop - start)
    return batch


# -- events objects ---------------------------------------------------------------------


# The event classes are frozen dataclasses: their __init__ sets each field through
# object.__setattr__, which costs more than the decoding. Building them by setting
# the slots directly gives equal objects at about half the cost.
def _slot_setters(cls: type) -> list[Any]:
    return [cls.__dict__[name].__set__ for name in cls.__slots__]  # type: ignore[attr-defined]


U64_MAX = (1 << 64) - 1


# Flow keys as five 64-bit words and one 32-bit word (44 bytes), for hashing.
_KEY_WORDS = 6
_KEY_OFFSET = abi.RttEvent.flow.offset
# Odd multipliers: the sum of the products has well mixed high bits, which pick a slot.
_HASH_MULTIPLIERS = np.array(
    [
        0x9E3779B97F4A7C15,
        0xC2B2AE3D27D4EB4F,
        0x165667B19E3779F9,
        0xD6E8FEB86659FD93,
        0xFF51AFD7ED558CCD,
        0xC4CEB9FE1A85EC53,
    ],
    dtype=np.uint64,
)
_SLOT_BITS = 18  # 4 slots per flow of a full table (FLOW_CACHE_LIMIT)
_ONES = np.ones(_KEY_WORDS, dtype=np.uint8)


def key_words(array: npt.NDArray[Any]) -> npt.NDArray[np.uint64]:
    """The flow key of each event (an RTT_DTYPE array) as `_KEY_WORDS` integers."""
    raw = np.ascontiguousarray(array).view(np.uint8).reshape(len(array), -1)
    key = raw[:, _KEY_OFFSET : _KEY_OFFSET + ctypes.sizeof(abi.FlowKey)]
    words = np.zeros((len(array), _KEY_WORDS), dtype=np.uint64)
    words[:, :5] = key[:, :40].view("<u8")
    words[:, 5] = key[:, 40:44].view("<u4")[:, 0]
    return words


class FlowTable:
    """Small integer ids for flow keys, stable from batch to batch; `flows[id]` is the
    flow. Once it holds more than FLOW_CACHE_LIMIT keys, numbering starts over with the
    next batch, in a new `flows` list (so holders of the old list know their ids are
    void): a batch's ids all come from one table.

    Looked up with numpy: a key's hash picks one slot of an array, which holds the id
    of the first key seen there; the slot's key is compared in full. Keys that find
    another key in their slot are looked up in a dict, one by one.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.flows: list[Flow] = []
        self._ids: dict[bytes, int] = {}
        self._keys = np.zeros((0, _KEY_WORDS), dtype=np.uint64)
        self._slots = np.full(1 << _SLOT_BITS, -1, dtype=np.intp)

    def ids(self, array: npt.NDArray[Any]) -> npt.NDArray[np.intp]:
        """The id of each event's flow (`array` an RTT_DTYPE array)."""
        if len(self._ids) > FLOW_CACHE_LIMIT:
            self._reset()
        words = key_words(array)
        slot = ((words @ _HASH_MULTIPLIERS) >> np.uint64(64 - _SLOT_BITS)).astype(np.intp)
        ids = self._slots[slot]
        found = ids >= 0
        if len(self._keys):
            found &= self._same_keys(ids, words)
        if found.all():
            return ids
        missing = np.flatnonzero(~found)
        self._look_up(array[missing], words[missing], slot[missing], ids, missing)
        return ids

    def _same_keys(
        self, ids: npt.NDArray[np.intp], words: npt.NDArray[np.uint64]
    ) -> npt.NDArray[np.bool_]:
        """Whether the key stored under each id is the event's (ids of -1: any answer).

        Counted over the six words with a product: numpy's all(axis=1) takes a loop per
        row, ~3 times slower (20 ns an event), and the fancy indexes it needed as much.
        """
        stored = self._keys.take(ids, axis=0, mode="clip")
        differing: npt.NDArray[np.uint8] = (stored != words).view(np.uint8) @ _ONES
        same: npt.NDArray[np.bool_] = differing == 0
        return same

    def _look_up(
        self,
        array: npt.NDArray[Any],
        words: npt.NDArray[np.uint64],
        slot: npt.NDArray[np.intp],
        ids: npt.NDArray[np.intp],
        rows: npt.NDArray[np.intp],
    ) -> None:
        """Set `ids[rows]` by the dict, adding the keys not seen yet."""
        table = self._ids
        flows = self.flows
        first = len(flows)
        keys = [bytes(row) for row in words]
        for i, key in enumerate(keys):
            found = table.get(key)
            if found is None:
                found = table[key] = len(flows)
                flows.append(
                    Flow(
                        int(array["proto"][i]),
                        array["saddr"][i].tobytes(),
                        int(array["sport"][i]),
                        array["daddr"][i].tobytes(),
                        int(array["dport"][i]),
                    )
                )
                if self._slots[slot[i]] < 0:
                    self._slots[slot[i]] = found
            ids[rows[i]] = found
        if len(flows) > first:
            added = np.array([np.frombuffer(k, dtype=np.uint64) for k in keys_of(table, first)])
            self._keys = np.concatenate((self._keys, added))


def keys_of(table: dict[bytes, int], first: int) -> list[bytes]:
    """The keys of `table` with ids from `first` on, in id order (a dict keeps the
    order of insertion, which is id order)."""
    return list(table)[first:]


class EventBuilder:
    """Turns decoded batches into `pping.events` objects (keeps a cache of flows), or
    RTT segments into columns (keeps a table of flow ids)."""

    def __init__(self) -> None:
        self._flows: dict[bytes, Flow] = {}
        self._flow_table = FlowTable()

    def rtt_columns(self, array: npt.NDArray[Any], time_base: int) -> RttColumns | None:
        """An RTT segment as columns, times made wall clock by adding `time_base`; None
        when a time would leave 0..2**64-1 (then only objects hold it exactly)."""
        kernel_time = array["timestamp"]
        if len(array) and not int(kernel_time.min()) + time_base >= 0:
            return None
        if len(array) and int(kernel_time.max()) + time_base > U64_MAX:
            return None
        if time_base >= 0:
            timestamp = kernel_time + np.uint64(time_base)
        else:
            timestamp = kernel_time - np.uint64(-time_base)
        flow_ids = self._flow_table.ids(array)  # first: it may start a new table
        return RttColumns(
            timestamp=timestamp,
            flow_ids=flow_ids,
            flows=self._flow_table.flows,
            rtt=array["rtt"],
            min_rtt=array["min_rtt"],
            sent_packets=array["sent_pkts"],
            sent_bytes=array["sent_bytes"],
            rec_packets=array["rec_pkts"],
            rec_bytes=array["rec_bytes"],
            match_on_egress=array["match_on_egress"] != 0,
        )

    def _flows_of(self, array: npt.NDArray[Any]) -> list[Flow]:
        cache = self._flows
        keys: list[bytes] = array["key"].tolist()
        flows = [cache.get(key) for key in keys]
        if None in flows:
            if len(cache) + len(keys) > FLOW_CACHE_LIMIT:
                cache.clear()
            proto = array["proto"].tolist()
            saddr = array["saddr"].tolist()
            sport = array["sport"].tolist()
            daddr = array["daddr"].tolist()
            dport = array["dport"].tolist()
            for i, key in enumerate(keys):
                if flows[i] is None:
                    made = cache.get(key)
                    if made is None:
                        made = Flow(proto[i], saddr[i], sport[i], daddr[i], dport[i])
                        cache[key] = made
                    flows[i] = made
        return flows  # type: ignore[return-value]

    def rtt_events(self, array: npt.NDArray[Any], time_base: int) -> list[Event]:
        flows = self._flows_of(array)
        new = RttEvent.__new__
        s_ts, s_flow, s_rtt, s_min, s_sp, s_sb, s_rp, s_rb, s_egress = _RTT_SETTERS
        out: list[Event] = []
        append = out.append
        for ts, flow, rtt, min_rtt, sp, sb, rp, rb, egress in zip(
            array["timestamp"].tolist(),
            flows,
            array["rtt"].tolist(),
            array["min_rtt"].tolist(),
            array["sent_pkts"].tolist(),
            array["sent_bytes"].tolist(),
            array["rec_pkts"].tolist(),
            array["rec_bytes"].tolist(),
            array["match_on_egress"].astype(bool).tolist(),
            strict=True,
        ):
            event = new(RttEvent)
            s_ts(event, ts + time_base)
            s_flow(event, flow)
            s_rtt(event, rtt)
            s_min(event, min_rtt)
            s_sp(event, sp)
            s_sb(event, sb)
            s_rp(event, rp)
            s_rb(event, rb)
            s_egress(event, egress)
            append(event)
        return out

    def flow_events(self, array: npt.NDArray[Any], time_base: int) -> list[Event]:
        flows = self._flows_of(array)
        return [
            FlowEvent(
                ts + time_base, flow, FlowEventType(kind), EventReason(reason), EventSource(source)
            )
            for ts, flow, kind, reason, source in zip(
                array["timestamp"].tolist(),
                flows,
                array["flow_event_type"].tolist(),
                array["reason"].tolist(),
                array["source"].tolist(),
                strict=True,
            )
        ]

    def map_full_events(self, array: npt.NDArray[Any], time_base: int) -> list[Event]:
        flows = self._flows_of(array)
        return [
            MapFullEvent(ts + time_base, flow, Table(table))
            for ts, flow, table in zip(
                array["timestamp"].tolist(), flows, array["table"].tolist(), strict=True
            )
        ]

    def events(self, batch: EventBatch, time_base: int) -> list[Event]:
        """The batch's events in ring order; `time_base` + kernel time = event time."""
        out: list[Event] = []
        # Tens of thousands of new objects would set off the cyclic garbage collector
        # many times over (they hold no cycles): pause it while they are built.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for kind, array in batch.segments:
                if kind == abi.EVENT_TYPE_RTT:
                    out.extend(self.rtt_events(array, time_base))
                elif kind == abi.EVENT_TYPE_FLOW:
                    out.extend(self.flow_events(array, time_base))
                else:
                    out.extend(self.map_full_events(array, time_base))
        finally:
            if collecting:
                gc.enable()
        return out

    def iter_events(self, batch: EventBatch, time_base: int) -> Iterator[Event]:
        """Like `events`, one segment converted at a time."""
        for kind, array in batch.segments:
            one = EventBatch([(kind, array)])
            yield from self.events(one, time_base)


_RTT_SETTERS = _slot_setters(RttEvent)
if list(RttEvent.__slots__) != [
    "timestamp", "flow", "rtt", "min_rtt", "sent_packets", "sent_bytes", "rec_packets",
    "rec_bytes", "match_on_egress",
]:  # fmt: skip
    raise ImportError("pping.events.RttEvent changed: update kernel/batch.py")
