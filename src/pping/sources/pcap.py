"""Capture files: classic pcap and pcapng, plain or gzip-compressed, from a file or a pipe.

Two ways to read the same records, with the same errors:

- ``for rec in reader`` yields one `CaptureRecord` per packet;
- ``reader.iter_batches()`` yields `RecordBatch` objects (one interface, one ``bytes``
  buffer, numpy arrays of offsets, lengths and timestamps) for vectorised consumers.

Errors: every problem with the file (not a capture, unsupported version, corrupt or
truncated data, failed read, bad gzip data) is a `CaptureError` whose message is one
line starting with the capture's name. It is raised only after every good record that
precedes the problem has been yielded, so a capture that was cut short is analysed up
to the cut. Creating a reader does no I/O: the first error comes from iterating.

How it is fast: the input is read in chunks of up to 4 MiB (``read1`` where the stream
has it, so a live pipe is not waited on until a whole chunk has arrived); a record cut
by the end of a chunk is read again with the next one from a regular file, instead of
copying the next chunk to join it to the piece already read. A tight loop
only follows the length fields from record to record and notes where each one starts;
everything else (timestamps, lengths, the checks) is done with numpy on the whole chunk
at once. Records are then built by C-level ``map``/``zip`` without a Python frame per
packet, and batches need no per-packet Python work at all.

Decisions:

- Size bound: a record may hold at most ``max(snaplen, 262144)`` bytes (262144 is the
  largest snaplen that libpcap and Wireshark use for ordinary link types) and never
  more than 128 MiB whatever the snaplen claims; a pcapng block may be at most
  128 MiB + 64 KiB. A larger claim is corruption, reported before trying to read it.
- caplen > wire length: the wire length is raised to caplen (the packet was at least
  as long as what was captured of it).
- Classic pcap timestamp fractions out of range (usec >= 10**6, nsec >= 10**9) are kept
  as the fields say: ``sec * 10**9 + frac * unit``, so the excess carries into the
  seconds. Seconds are unsigned 32-bit (valid until 2106). The header's thiszone and
  sigfigs are ignored, as libpcap ignores them.
- Classic pcap versions: major 2 with any minor. Writers of versions 2.0-2.2, and some
  of 2.3, put the original length before the captured length; as libpcap does, 2.0-2.2
  are always swapped back, 2.3 when "caplen" is the larger of the two.
- The link type of a classic pcap file is the low 16 bits of the header's link-type
  field; the upper bits (FCS length and reserved bits) are ignored.
- pcapng versions: SHB 1.0 and 1.2 (1.2 was written by some tools for the same
  format); libpcap and Wireshark accept exactly these two, so other versions, 1.1
  included, are refused.
- pcapng timestamps are exact integer nanoseconds: ``ticks * 10**9 / ticks_per_second``
  (10**n or 2**n ticks per second from if_tsresol, 10**6 by default), rounded to the
  nearest nanosecond (halves up) when the tick is not a whole number of nanoseconds,
  plus if_tsoffset seconds (signed).
- A Simple Packet Block has no timestamp: it gets the timestamp of the last packet read
  before it, on any interface (0 if there was none), so time never goes backwards.
- pcapng timestamps are unsigned 64-bit tick counts (as in the specification, libpcap and
  Wireshark), so some real files have packets dated far in the future (the
  PcapPlusPlus pcapng-example file has an interface whose ticks are near 2**64: year
  586524). Records carry them exactly. Batches carry int64 nanoseconds, except a batch
  holding a time that int64 cannot (before 1678 or after 2262): its ``timestamps_ns``
  is an object array of the exact Python ints. Such a time is not an error: dropping
  the rest of the capture for it would be worse.
"""

from __future__ import annotations

import fcntl
import gzip
import os
import stat
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from itertools import chain, pairwise, repeat
from struct import Struct
from types import TracebackType
from typing import Any, BinaryIO, NamedTuple, NoReturn, cast

import numpy as np
import numpy.typing as npt

from ..errors import CaptureError

I64 = npt.NDArray[np.int64]

CHUNK_SIZE = 1 << 23  # bytes asked for per read; batches are at most one chunk
PIPE_SIZE = 1 << 20  # Linux's default /proc/sys/fs/pipe-max-size
DEFAULT_MAX_CAPLEN = 262144
HARD_MAX_CAPLEN = 128 << 20
MAX_BLOCK_LEN = HARD_MAX_CAPLEN + (64 << 10)

_NS = 1_000_000_000
_INT64_MAX = (1 << 63) - 1

_PCAP_US = 0xA1B2C3D4
_PCAP_NS = 0xA1B23C4D
_PCAP_KUZNETZOV = 0xA1B2CD34
_GZIP_MAGIC = b"\x1f\x8b"

_SHB = 0x0A0D0D0A
_IDB = 1
_PB = 2
_SPB = 3
_EPB = 6
_BOM_LE = b"\x4d\x3c\x2b\x1a"
_BOM_BE = b"\x1a\x2b\x3c\x4d"

_U32LE = Struct("<I")
_NATIVE = "<" if sys.byteorder == "little" else ">"
_EMPTY = np.zeros(0, dtype=np.int64)

_tuple_new = tuple.__new__


class CaptureRecord(NamedTuple):
    """One captured packet."""

    interface: int
    """Global interface number: pcapng numbers the interfaces of all sections in the
    order their description blocks appear; classic pcap has only interface 0."""
    linktype: int
    """LINKTYPE_* value of the interface."""
    timestamp_ns: int
    """Capture time in nanoseconds since the Unix epoch, exact."""
    data: bytes
    """The captured bytes (shorter than ``wire_len`` when cut by the snaplen)."""
    wire_len: int
    """Length of the packet on the wire (at least ``len(data)``)."""


@dataclass(frozen=True)
class InterfaceInfo:
    """A capture interface, as described by the file.

    ``resolution_ns`` is the length of one timestamp tick in nanoseconds, exact:
    1000 for microseconds, 1 for nanoseconds, ``Fraction(1_000_000_000, 256)`` for
    if_tsresol 2**-8. ``tsoffset_s`` is pcapng's if_tsoffset, already added to the
    timestamps. ``section`` counts pcapng sections from 0.
    """

    interface: int
    linktype: int
    name: str | None
    resolution_ns: Fraction
    snaplen: int
    section: int = 0
    tsoffset_s: int = 0


@dataclass(frozen=True, eq=False)
class RecordBatch:
    """Consecutive records of one interface whose data lie in one buffer.

    Packet ``i`` is ``buffer[offsets[i]:offsets[i] + caplens[i]]``. The arrays have one
    element per packet and are int64, except ``timestamps_ns`` in a batch holding a
    time outside int64's range (see the module's notes): then it is an object array of
    exact Python ints, which consumers must check for (``timestamps_ns.dtype``).
    """

    interface: int
    linktype: int
    buffer: bytes
    offsets: I64
    caplens: I64
    wire_lens: I64
    timestamps_ns: npt.NDArray[Any]

    def __len__(self) -> int:
        return len(self.offsets)

    def records(self) -> Iterator[CaptureRecord]:
        """The batch as `CaptureRecord` objects."""
        starts = self.offsets.tolist()
        ends = (self.offsets + self.caplens).tolist()
        data = map(self.buffer.__getitem__, map(slice, starts, ends))
        rows = zip(
            repeat(self.interface),
            repeat(self.linktype),
            self.timestamps_ns.tolist(),
            data,
            self.wire_lens.tolist(),
        )
        return cast(Iterator[CaptureRecord], map(_tuple_new, repeat(CaptureRecord), rows))


class _Run(NamedTuple):
    """Records found in one buffer; ``ifaces`` is None when all are on ``iface``."""

    buf: bytes
    iface: int
    ifaces: I64 | None
    starts: I64
    caps: I64
    wires: I64
    ts: npt.NDArray[Any]  # int64, or object (exact Python ints) when beyond int64


class _NgIface(NamedTuple):
    gid: int
    ticks: int  # timestamp ticks per second
    mul: int  # nanoseconds per tick when that is a whole number, else 0
    off_ns: int
    bound: int
    snaplen: int


class _Section:
    """Byte order and interfaces of the current pcapng section."""

    def __init__(self, order: str) -> None:
        self.order = order
        self.u32 = np.dtype(order + "u4")
        self.ifaces: list[_NgIface] = []
        self.gids: I64 = _EMPTY
        self.bounds: I64 = _EMPTY
        self.step = Struct(order + "4xI")
        self.u32s = Struct(order + "I")

    def add(self, ifc: _NgIface) -> None:
        self.ifaces.append(ifc)
        self.gids = np.array([i.gid for i in self.ifaces], dtype=np.int64)
        self.bounds = np.array([i.bound for i in self.ifaces], dtype=np.int64)


class _Prefixed:
    """A readable made of bytes already read followed by the rest of a stream."""

    def __init__(self, head: bytes, read: Callable[[int], bytes]) -> None:
        self._head = head
        self._read = read

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0 or size >= len(self._head):
                head, self._head = self._head, b""
                return head
            head, self._head = self._head[:size], self._head[size:]
            return head
        return self._read(size if size >= 0 else CHUNK_SIZE)

    def seek(self, offset: int, whence: int = 0) -> int:
        raise OSError("the input cannot be rewound")


class _Input:
    """The buffered input: ``buf[pos:]`` is what has been read and not yet consumed."""

    def __init__(
        self,
        read: Callable[[int], bytes],
        name: str,
        what: str = "read",
        rewind: Callable[[int], object] | None = None,
    ) -> None:
        self.read = read
        self.rewind = rewind  # moves the stream back by so many bytes (regular files)
        self.name = name
        self.what = what
        self.buf = b""
        self.pos = 0
        self.base = 0  # offset in the (decompressed) file of buf[0]
        self.eof = False
        self.error: CaptureError | None = None

    @property
    def left(self) -> int:
        return len(self.buf) - self.pos

    def ensure(self, need: int) -> bool:
        """Make at least ``need`` bytes available at ``pos``; False at the end of input."""
        have = len(self.buf) - self.pos
        if have >= need:
            return True
        if self.eof:
            return False
        parts = [self.buf[self.pos :]] if have else []
        self.base += self.pos
        self.pos = 0
        if have and self.rewind is not None:
            # Read the unconsumed bytes again as the start of the next chunk: cheaper
            # than copying the whole chunk to join it to them.
            try:
                self.rewind(have)
                parts, have = [], 0
            except (OSError, ValueError):
                self.rewind = None
        while have < need:
            try:
                data = self.read(max(CHUNK_SIZE, need - have))
            except EOFError as exc:
                self.error = CaptureError(f"{self.name}: compressed data ends early ({exc})")
                data = b""
            except (OSError, ValueError, zlib.error) as exc:
                self.error = CaptureError(f"{self.name}: {self.what} error: {exc}")
                data = b""
            if isinstance(data, str):
                self.error = CaptureError(f"{self.name}: the input is a text stream, not binary")
                data = b""
            if not data:
                self.eof = True
                break
            parts.append(data)
            have += len(data)
        self.buf = b"".join(parts)
        return have >= need


def _rewinder(stream: Any) -> Callable[[int], object] | None:
    """How to move a regular file back by some bytes; None for other streams."""
    try:
        if not (stream.seekable() and stat.S_ISREG(os.fstat(stream.fileno()).st_mode)):
            return None
    except (OSError, ValueError, AttributeError):
        return None
    return lambda size: stream.seek(-size, os.SEEK_CUR)


def _reader_of(stream: Any) -> Callable[[int], bytes]:
    read1 = getattr(stream, "read1", None)
    return cast(Callable[[int], bytes], read1 if callable(read1) else stream.read)


def _len_problem(blen: int) -> str | None:
    if blen & 3:
        return f"length {blen} is not a multiple of 4"
    if blen < 12:
        return f"length {blen} is less than 12"
    if blen > MAX_BLOCK_LEN:
        return f"length {blen} is more than the bound of {MAX_BLOCK_LEN}"
    return None


def _ticks_to_ns(raw: npt.NDArray[np.uint64], ifc: _NgIface) -> npt.NDArray[Any]:
    """Timestamps in ticks to ns since the epoch: int64 when every value fits, else exact
    Python ints in an object array."""
    if len(raw) == 0:
        return _EMPTY
    top = int(raw.max())
    off = ifc.off_ns
    if ifc.mul:
        if top * ifc.mul + abs(off) <= _INT64_MAX:
            return cast(npt.NDArray[Any], raw.astype(np.int64) * ifc.mul + off)
        return np.array([r * ifc.mul + off for r in raw.tolist()], dtype=object)
    ticks = ifc.ticks
    half = ticks // 2
    # rem * 10**9 must fit in uint64, and the result in int64.
    if ticks * _NS < (1 << 64) and (top // ticks + 1) * _NS + abs(off) <= _INT64_MAX:
        t = np.uint64(ticks)
        sec = (raw // t).astype(np.int64)
        frac = (((raw % t) * np.uint64(_NS) + np.uint64(half)) // t).astype(np.int64)
        return cast(npt.NDArray[Any], sec * _NS + frac + off)
    return np.array([(r * _NS + half) // ticks + off for r in raw.tolist()], dtype=object)


def _int64_if_possible(ts: npt.NDArray[Any]) -> npt.NDArray[Any]:
    values = ts.tolist()
    if all(-(1 << 63) <= v <= _INT64_MAX for v in values):
        return np.array(values, dtype=np.int64)
    return ts


def _one_tick_to_ns(raw: int, ifc: _NgIface) -> int:
    if ifc.mul:
        return raw * ifc.mul + ifc.off_ns
    return (raw * _NS + ifc.ticks // 2) // ifc.ticks + ifc.off_ns


class CaptureReader:
    """Reads one capture (pcap or pcapng, maybe gzip-compressed) from a binary stream.

    The stream is read once, front to back, and need not be seekable. `interfaces` is
    filled as interface descriptions are read. Iterate over the reader for records, or
    call `iter_batches` for batches; either can be done once.
    """

    def __init__(self, stream: BinaryIO, name: str = "<capture>") -> None:
        self.name = name
        self.interfaces: dict[int, InterfaceInfo] = {}
        self.format: str | None = None  # "pcap" or "pcapng", known once reading started
        self.compressed = False
        self._stream = stream
        self._owns_stream = False
        self._started = False
        self._count = 0  # records found so far (yielded, or about to be)
        self._linktypes: list[int] = []
        self._last_ts = 0  # timestamp of the last packet, for Simple Packet Blocks
        self._sections = 0
        self._base = 0  # file offset of the pcapng buffer being walked, for messages
        self._sec = _Section("<")  # the current pcapng section

    # -- public API ------------------------------------------------------------------

    def __iter__(self) -> Iterator[CaptureRecord]:
        return chain.from_iterable(map(self._expand, self._runs()))

    def iter_batches(self, max_records: int = 131072) -> Iterator[RecordBatch]:
        """Yield the records as batches of at most ``max_records`` records of one
        interface (consecutive records of the file, in file order)."""
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        for run in self._runs():
            yield from self._batches(run, max_records)

    def close(self) -> None:
        """Close the stream if this reader opened it (`open_capture` on a path)."""
        if self._owns_stream:
            self._stream.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- records and batches from runs -----------------------------------------------

    def _expand(self, run: _Run) -> Iterator[CaptureRecord]:
        buf = run.buf
        starts = run.starts.tolist()
        ends = (run.starts + run.caps).tolist()
        data = map(buf.__getitem__, map(slice, starts, ends))
        if run.ifaces is None:
            ifaces: Iterator[int] | list[int] = repeat(run.iface)
            linktypes: Iterator[int] = repeat(self._linktypes[run.iface])
        else:
            ifaces = run.ifaces.tolist()
            linktypes = map(self._linktypes.__getitem__, ifaces)
        rows = zip(ifaces, linktypes, run.ts.tolist(), data, run.wires.tolist(), strict=False)
        return cast(Iterator[CaptureRecord], map(_tuple_new, repeat(CaptureRecord), rows))

    def _batches(self, run: _Run, max_records: int) -> Iterator[RecordBatch]:
        n = len(run.starts)
        if run.ifaces is None:
            groups = [(0, n, run.iface)]
        else:  # cut where the interface changes
            cuts = (np.flatnonzero(np.diff(run.ifaces)) + 1).tolist()
            groups = [(a, b, int(run.ifaces[a])) for a, b in pairwise([0, *cuts, n])]
        exact = run.ts.dtype != np.int64
        for a, b, gid in groups:
            linktype = self._linktypes[gid]
            for lo in range(a, b, max_records):
                hi = min(lo + max_records, b)
                ts = run.ts[lo:hi]
                if exact:
                    ts = _int64_if_possible(ts)
                yield RecordBatch(
                    gid,
                    linktype,
                    run.buf,
                    run.starts[lo:hi],
                    run.caps[lo:hi],
                    run.wires[lo:hi],
                    ts,
                )

    # -- reading ---------------------------------------------------------------------

    def _runs(self) -> Iterator[_Run]:
        if self._started:
            raise CaptureError(f"{self.name}: capture already read")
        self._started = True
        inp = _Input(_reader_of(self._stream), self.name, rewind=_rewinder(self._stream))
        if inp.ensure(2) and inp.buf.startswith(_GZIP_MAGIC):
            gz = gzip.GzipFile(fileobj=_Prefixed(inp.buf, inp.read), mode="rb")
            inp = _Input(gz.read1, self.name, "gzip")
            self.compressed = True
        if not inp.ensure(4):
            if inp.error is not None:
                raise inp.error
            if inp.left == 0:
                raise CaptureError(f"{self.name}: empty file, not a capture")
            raise CaptureError(f"{self.name}: file too short to be a capture ({inp.left} bytes)")
        head = inp.buf[inp.pos : inp.pos + 4]
        magic_le = int.from_bytes(head, "little")
        magic_be = int.from_bytes(head, "big")
        if magic_le in (_PCAP_US, _PCAP_NS):
            yield from self._pcap_runs(inp, "<")
        elif magic_be in (_PCAP_US, _PCAP_NS):
            yield from self._pcap_runs(inp, ">")
        elif magic_le == _SHB:
            yield from self._ng_runs(inp)
        elif _PCAP_KUZNETZOV in (magic_le, magic_be):
            raise CaptureError(
                f"{self.name}: modified (Kuznetzov) pcap format is not supported; "
                "convert it with editcap"
            )
        else:
            raise CaptureError(f"{self.name}: not a pcap or pcapng file (magic 0x{head.hex()})")

    # -- classic pcap ----------------------------------------------------------------

    def _pcap_runs(self, inp: _Input, order: str) -> Iterator[_Run]:
        name = self.name
        if not inp.ensure(24):
            if inp.error is not None:
                raise inp.error
            raise CaptureError(
                f"{name}: file ends inside the pcap file header ({inp.left} of 24 bytes)"
            )
        fields = Struct(order + "IHHiIII").unpack_from(inp.buf, inp.pos)
        magic, major, minor, _zone, _sigfigs, snaplen, network = fields
        if major != 2:
            raise CaptureError(
                f"{name}: unsupported pcap version {major}.{minor} (only 2.x can be read)"
            )
        self.format = "pcap"
        unit = 1 if magic == _PCAP_NS else 1000
        linktype = network & 0xFFFF
        self._linktypes.append(linktype)
        self.interfaces[0] = InterfaceInfo(0, linktype, None, Fraction(unit), snaplen)
        inp.pos += 24
        bound = min(max(snaplen, DEFAULT_MAX_CAPLEN), HARD_MAX_CAPLEN)
        # Where the captured length is: 0: at +8 (2.4); 1: at +12 (2.0-2.2, swapped);
        # 2: the smaller of the two (2.3, swapped by some writers).
        layout = 1 if minor < 3 else 2 if minor == 3 else 0
        step = Struct(order + ("12xI" if layout == 1 else "8xI")).unpack_from
        pair = Struct(order + "8xII").unpack_from
        u32 = np.dtype(order + "u4")
        need = 16
        while True:
            if not inp.ensure(need):
                self._pcap_eof(inp, pair, layout)
                return
            buf = inp.buf
            n = len(buf)
            offs: list[int] = []
            app = offs.append
            p = inp.pos
            # The hot loop: follow the lengths, note where each record starts. It ends
            # when the next length is not in the buffer (struct.error).
            try:
                if layout == 2:
                    while True:
                        app(p)
                        a, b = pair(buf, p)
                        p += (a if a <= b else b) + 16
                else:
                    while True:
                        app(p)
                        p += step(buf, p)[0] + 16
            except struct.error:
                pass
            o = np.array(offs, dtype=np.int64)
            m = len(o) - 1  # records whose length was read
            caps = np.diff(o) - 16
            complete = int(np.searchsorted(o[1:], n, side="right"))
            over = caps > bound
            first_over = int(over.argmax()) if m and over.any() else m
            good = min(complete, first_over)
            if good:
                self._count += good
                yield self._pcap_run(buf, o[:good], caps[:good], u32, unit, layout)
            if first_over <= complete and first_over < m:
                raise CaptureError(
                    f"{name}: corrupt record header at byte {inp.base + int(o[good])}: "
                    f"packet {self._count + 1} claims {int(caps[good])} bytes, more than "
                    f"the bound of {bound}"
                )
            inp.pos = int(o[good])
            need = 16 + int(caps[good]) if good < m else 16

    def _pcap_run(
        self, buf: bytes, o: I64, caps: I64, u32: np.dtype[Any], unit: int, layout: int
    ) -> _Run:
        # Records are not aligned: a view of a 32-bit word at every byte offset.
        at = np.ndarray(shape=(len(buf) - 3,), dtype=u32, buffer=buf, strides=(1,))
        ts = at[o].astype(np.int64) * _NS + at[o + 4].astype(np.int64) * unit
        if layout == 0:
            wire = at[o + 12].astype(np.int64)
        elif layout == 1:
            wire = at[o + 8].astype(np.int64)
        else:
            wire = np.maximum(at[o + 8], at[o + 12]).astype(np.int64)
        return _Run(buf, 0, None, o + 16, caps, np.maximum(wire, caps), ts)

    def _pcap_eof(
        self, inp: _Input, pair: Callable[[bytes, int], tuple[Any, ...]], layout: int
    ) -> None:
        if inp.error is not None:
            raise inp.error
        left = inp.left
        if left == 0:
            return
        packet = self._count + 1
        if left < 16:
            raise CaptureError(
                f"{self.name}: file ends inside the header of packet {packet} ({left} of 16 bytes)"
            )
        a, b = pair(inp.buf, inp.pos)
        cap = a if layout == 0 else b if layout == 1 else min(a, b)
        raise CaptureError(
            f"{self.name}: file ends inside packet {packet} "
            f"(record needs {cap} bytes, {left - 16} left)"
        )

    # -- pcapng ----------------------------------------------------------------------

    def _ng_runs(self, inp: _Input) -> Iterator[_Run]:
        self.format = "pcapng"
        name = self.name
        sec = self._sec
        while True:
            # At a block boundary: validate the block there and buffer it whole.
            if not inp.ensure(8):
                self._ng_eof(inp)
                return
            buf, pos = inp.buf, inp.pos
            if _U32LE.unpack_from(buf, pos)[0] == _SHB:
                sec = self._sec = self._ng_shb(inp)
                continue
            blen = sec.step.unpack_from(buf, pos)[0]
            problem = _len_problem(blen)
            if problem is not None:
                raise CaptureError(
                    f"{name}: corrupt pcapng block at byte {inp.base + pos}: {problem}"
                )
            if not inp.ensure(blen):
                self._ng_truncated(inp)
            # Walk the blocks in the buffer; the first one is whole. Blocks are 4-byte
            # aligned in the file (lengths are multiples of 4 from the first SHB on), so
            # the buffer is seen as 32-bit words from the first aligned byte ``r``, and
            # offsets are word numbers ``w`` (byte ``r + 4 * w``).
            self._base = inp.base
            buf = inp.buf
            n = len(buf)
            r = -inp.base % 4
            nw = (n - r) // 4
            words = np.frombuffer(buf, dtype=sec.u32, count=nw, offset=r)
            offs: list[int] = []
            app = offs.append
            w = (inp.pos - r) >> 2
            try:
                if sec.order == _NATIVE:
                    mv = memoryview(buf)[r : r + 4 * nw].cast("I")
                    while True:
                        app(w)
                        w += (mv[w + 1] >> 2) or 1
                else:
                    step = sec.step.unpack_from
                    while True:
                        app(w)
                        w += (step(buf, r + 4 * w)[0] >> 2) or 1
            except (IndexError, struct.error):
                pass
            ow = np.array(offs[:-1], dtype=np.int64)  # blocks whose header is in buf
            nb = len(ow)
            o = r + 4 * ow
            types = words[ow].astype(np.int64)
            lens = words[ow + 1].astype(np.int64)
            sane = ((lens & 3) == 0) & (lens >= 12) & (lens <= MAX_BLOCK_LEN) & (o + lens <= n)
            trail = np.full(nb, -1, dtype=np.int64)
            whole = np.flatnonzero(sane)
            trail[whole] = words[ow[whole] + (lens[whole] >> 2) - 1]
            plain_epb = sane & (trail == lens) & (types == _EPB) & (lens >= 32)
            stops = np.flatnonzero(~plain_epb).tolist()
            stops.append(nb)
            pieces: list[_Run] = []
            slow: list[list[int]] = [[], [], [], [], []]
            start = 0
            error: str | None = None
            for s in stops:
                if s > start:
                    error = self._ng_epbs(buf, words, ow[start:s], lens[start:s], sec, pieces, slow)
                    if error is not None:
                        break
                if s == nb:
                    inp.pos = r + 4 * offs[nb]
                    break
                bpos = int(o[s])
                if not sane[s] or types[s] == _SHB:
                    inp.pos = bpos  # dealt with at the top of the loop
                    break
                if trail[s] != lens[s]:
                    error = (
                        f"corrupt pcapng block at byte {inp.base + bpos}: trailing length "
                        f"{int(trail[s])} differs from leading length {int(lens[s])}"
                    )
                    break
                error = self._ng_block(buf, bpos, int(types[s]), int(lens[s]), sec, slow)
                if error is not None:
                    break
                start = s + 1
            if slow[0]:
                pieces.append(self._slow_run(buf, slow))
            if pieces:
                yield self._join(buf, pieces)
            if error is not None:
                raise CaptureError(f"{name}: {error}")

    def _ng_epbs(
        self,
        buf: bytes,
        words: npt.NDArray[np.uint32],
        ow: I64,
        lens: I64,
        sec: _Section,
        pieces: list[_Run],
        slow: list[list[int]],
    ) -> str | None:
        """Enhanced packet blocks at word offsets ``ow`` (well framed) to a piece; an
        error message for the first bad one, after adding the good ones before it."""
        if slow[0]:
            pieces.append(self._slow_run(buf, slow))
        o = -self._base % 4 + 4 * ow
        iid, caps, wires = (words[ow + k].astype(np.int64) for k in (2, 5, 6))
        nif = len(sec.ifaces)
        unknown = iid >= nif
        known_iid = np.where(unknown, 0, iid)
        bad = unknown | (caps > lens - 32)
        if nif:
            bad |= caps > sec.bounds[known_iid]
        good = int(bad.argmax()) if bad.any() else len(o)
        error: str | None = None
        if good < len(o):
            packet = self._count + good + 1
            at = f"packet {packet} (block at byte {self._base + int(o[good])})"
            if unknown[good]:
                error = (
                    f"{at} refers to interface {int(iid[good])}, but its section has "
                    f"{nif} interface(s)"
                )
            elif caps[good] > lens[good] - 32:
                error = (
                    f"{at} claims {int(caps[good])} captured bytes in a block of "
                    f"{int(lens[good])} bytes"
                )
            else:
                error = (
                    f"{at} claims {int(caps[good])} bytes, more than the bound of "
                    f"{int(sec.bounds[known_iid[good]])}"
                )
            iid, caps, wires, o, ow = iid[:good], caps[:good], wires[:good], o[:good], ow[:good]
        if good:
            ts_hi = words[ow + 3].astype(np.uint64)
            raw = (ts_hi << np.uint64(32)) | words[ow + 4].astype(np.uint64)
            first = int(iid[0])
            if bool((iid == first).all()):
                ts = _ticks_to_ns(raw, sec.ifaces[first])
            else:  # each interface has its own clock
                parts = []
                for i in np.unique(iid).tolist():
                    mask = iid == i
                    parts.append((mask, _ticks_to_ns(raw[mask], sec.ifaces[i])))
                obj = any(t.dtype != np.int64 for _, t in parts)
                ts = np.empty(good, dtype=object if obj else np.int64)
                for mask, t in parts:
                    ts[mask] = t
            self._last_ts = int(ts[-1])
            self._count += good
            pieces.append(_Run(buf, 0, sec.gids[iid], o + 28, caps, np.maximum(wires, caps), ts))
        return error

    def _ng_block(
        self, buf: bytes, pos: int, btype: int, blen: int, sec: _Section, slow: list[list[int]]
    ) -> str | None:
        """A well-framed block other than an ordinary EPB; an error message or None."""
        if btype == _IDB:
            return self._ng_idb(buf, pos, blen, sec)
        if btype not in (_EPB, _PB, _SPB):
            return None  # NRB, ISB, DSB, custom, ...: skipped
        packet = self._count + len(slow[0]) + 1
        at = f"packet {packet} (block at byte {self._base + pos})"
        if btype == _SPB:
            if blen < 16:
                return f"{at}: simple packet block of {blen} bytes is too short"
            if not sec.ifaces:
                return f"{at}: simple packet block in a section without interfaces"
            ifc = sec.ifaces[0]
            wire = sec.u32s.unpack_from(buf, pos + 8)[0]
            cap = min(wire, blen - 16)
            if ifc.snaplen:
                cap = min(cap, ifc.snaplen)
            ts = self._last_ts
            start = pos + 12
        else:
            if blen < 32:
                return f"{at}: packet block of {blen} bytes is too short"
            if btype == _EPB:
                iid, hi, lo, cap, wire = Struct(sec.order + "IIIII").unpack_from(buf, pos + 8)
            else:  # obsolete Packet Block: 16-bit interface id, 16-bit drops count
                iid, _drops, hi, lo, cap, wire = Struct(sec.order + "HHIIII").unpack_from(
                    buf, pos + 8
                )
            if iid >= len(sec.ifaces):
                return (
                    f"{at} refers to interface {iid}, but its section has "
                    f"{len(sec.ifaces)} interface(s)"
                )
            ifc = sec.ifaces[iid]
            if cap > blen - 32:
                return f"{at} claims {cap} captured bytes in a block of {blen} bytes"
            if cap > ifc.bound:
                return f"{at} claims {cap} bytes, more than the bound of {ifc.bound}"
            ts = _one_tick_to_ns((hi << 32) | lo, ifc)
            self._last_ts = ts
            start = pos + 28
        for lst, v in zip(slow, (ifc.gid, start, cap, max(wire, cap), ts), strict=True):
            lst.append(v)
        return None

    def _ng_idb(self, buf: bytes, pos: int, blen: int, sec: _Section) -> str | None:
        at = f"interface description block at byte {self._base + pos}"
        if blen < 20:
            return f"{at} is too short ({blen} bytes)"
        linktype, _reserved, snaplen = Struct(sec.order + "HHI").unpack_from(buf, pos + 8)
        opt = Struct(sec.order + "HH").unpack_from
        p = pos + 16
        end = pos + blen - 4
        ticks = 1_000_000
        tsoffset = 0
        if_name: str | None = None
        while p + 4 <= end:
            code, olen = opt(buf, p)
            if code == 0:
                break
            v = p + 4
            if v + olen > end:
                return f"{at}: option {code} of {olen} bytes overruns the block"
            if code == 2:
                if_name = buf[v : v + olen].decode("utf-8", "replace").rstrip("\x00")
            elif code == 9:
                if olen < 1:
                    return f"{at}: empty if_tsresol option"
                r = buf[v]
                ticks = 1 << (r & 0x7F) if r & 0x80 else 10**r
            elif code == 14:
                if olen != 8:
                    return f"{at}: if_tsoffset option of {olen} bytes (should be 8)"
                tsoffset = Struct(sec.order + "q").unpack_from(buf, v)[0]
            p = v + ((olen + 3) & ~3)
        gid = len(self._linktypes)
        bound = min(max(snaplen, DEFAULT_MAX_CAPLEN), HARD_MAX_CAPLEN)
        mul = _NS // ticks if _NS % ticks == 0 else 0
        sec.add(_NgIface(gid, ticks, mul, tsoffset * _NS, bound, snaplen))
        self._linktypes.append(linktype)
        self.interfaces[gid] = InterfaceInfo(
            gid,
            linktype,
            if_name,
            Fraction(_NS, ticks),
            snaplen,
            section=self._sections - 1,
            tsoffset_s=tsoffset,
        )
        return None

    def _ng_shb(self, inp: _Input) -> _Section:
        name = self.name
        self._sections += 1
        if not inp.ensure(12):
            self._ng_truncated(inp)
        buf, pos = inp.buf, inp.pos
        at = f"section header block at byte {inp.base + pos}"
        bom = buf[pos + 8 : pos + 12]
        if bom == _BOM_LE:
            sec = _Section("<")
        elif bom == _BOM_BE:
            sec = _Section(">")
        else:
            raise CaptureError(f"{name}: {at} has a bad byte-order magic 0x{bom.hex()}")
        blen = sec.u32s.unpack_from(buf, pos + 4)[0]
        problem = _len_problem(blen) or (f"length {blen} is less than 28" if blen < 28 else None)
        if problem is not None:
            raise CaptureError(f"{name}: corrupt pcapng {at}: {problem}")
        if not inp.ensure(blen):
            self._ng_truncated(inp)
        buf, pos = inp.buf, inp.pos
        trail = sec.u32s.unpack_from(buf, pos + blen - 4)[0]
        if trail != blen:
            raise CaptureError(
                f"{name}: corrupt pcapng {at}: trailing length {trail} differs from "
                f"leading length {blen}"
            )
        major, minor = Struct(sec.order + "HH").unpack_from(buf, pos + 12)
        if major != 1 or minor not in (0, 2):
            raise CaptureError(
                f"{name}: unsupported pcapng version {major}.{minor} in the {at} "
                "(1.0 and 1.2 can be read)"
            )
        inp.pos = pos + blen
        return sec

    def _ng_eof(self, inp: _Input) -> None:
        """At the end of input: return if it ends cleanly between blocks, else raise."""
        if inp.error is not None or inp.left:
            self._ng_truncated(inp)

    def _ng_truncated(self, inp: _Input) -> NoReturn:
        """The input ended (or failed) inside the block at ``inp.pos``."""
        if inp.error is not None:
            raise inp.error
        left = inp.left
        name = self.name
        at = inp.base + inp.pos
        if left < 8:
            raise CaptureError(
                f"{name}: file ends inside the header of the block at byte {at} ({left} of 8 bytes)"
            )
        btype = _U32LE.unpack_from(inp.buf, inp.pos)[0]
        order = "<"
        if btype == _SHB:
            if left < 12:
                raise CaptureError(
                    f"{name}: file ends inside the section header block at byte {at} "
                    f"({left} of 12 bytes)"
                )
            order = ">" if inp.buf[inp.pos + 8 : inp.pos + 12] == _BOM_BE else "<"
        else:
            order = self._sec.order
        btype, blen = Struct(order + "II").unpack_from(inp.buf, inp.pos)
        if btype in (_EPB, _PB, _SPB):
            what = f"packet {self._count + 1}"
        elif btype == _SHB:
            what = f"the section header block at byte {at}"
        else:
            what = f"a pcapng block of type 0x{btype:08x} at byte {at}"
        raise CaptureError(
            f"{name}: file ends inside {what} (block needs {blen} bytes, {left} left)"
        )

    def _slow_run(self, buf: bytes, slow: list[list[int]]) -> _Run:
        gids, starts, caps, wires, ts = slow
        self._count += len(gids)
        objs = any(not -(1 << 63) <= t <= _INT64_MAX for t in ts)
        run = _Run(
            buf,
            0,
            np.array(gids, dtype=np.int64),
            np.array(starts, dtype=np.int64),
            np.array(caps, dtype=np.int64),
            np.array(wires, dtype=np.int64),
            np.array(ts, dtype=object if objs else np.int64),
        )
        for lst in slow:
            lst.clear()
        return run

    @staticmethod
    def _join(buf: bytes, pieces: list[_Run]) -> _Run:
        if len(pieces) == 1:
            return pieces[0]
        ifaces = [p.ifaces for p in pieces if p.ifaces is not None]
        return _Run(
            buf,
            0,
            np.concatenate(ifaces),
            np.concatenate([p.starts for p in pieces]),
            np.concatenate([p.caps for p in pieces]),
            np.concatenate([p.wires for p in pieces]),
            np.concatenate([p.ts for p in pieces]),
        )


def _grow_pipe(stream: BinaryIO) -> None:
    """Ask for a 1 MiB pipe buffer when reading a pipe: ``read1`` then returns large
    chunks when the writer is ahead (64 KiB pipes cost about half the batch speed),
    and still returns at once what a slow live writer has sent. Best effort."""
    try:
        fd = stream.fileno()
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (OSError, ValueError, AttributeError):
        pass


def open_capture(path: str) -> CaptureReader:
    """A reader for the capture file at ``path``; ``"-"`` is standard input."""
    if path == "-":
        _grow_pipe(sys.stdin.buffer)
        return CaptureReader(sys.stdin.buffer, "<stdin>")
    try:
        stream = open(path, "rb")  # noqa: SIM115 - the reader owns and closes it
    except OSError as exc:
        raise CaptureError(f"{path}: cannot open: {exc.strerror or exc}") from None
    reader = CaptureReader(stream, path)
    reader._owns_stream = True
    return reader
