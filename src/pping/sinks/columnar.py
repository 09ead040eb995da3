"""RTT events as columns, and the numpy tools that format them a batch at a time.

Live monitoring under load delivers RTT events by the hundred thousand per second;
building one object and one `%`-formatted line per event costs a few microseconds,
more than the kernel needs to produce it. The sinks therefore also accept
`RttColumns` (one numpy array per field, flows as small integer ids into a table of
`Flow`s) through `write_rtt_batch`, and build the text of the whole batch with numpy:

- a number becomes a right-aligned, zero-padded digit matrix (four digits per
  division, from a table of "0000".."9999"), with its length to hide the leading zeros;
- a flow's text is made once per flow (`FlowTexts`) and gathered by flow id;
- a line is the concatenation of such fields and literal text (`Line`): one byte
  matrix with a mask of the bytes that count, compacted with one boolean index.

The text is byte for byte what the event-at-a-time `write` prints (tests/test_sinks.py
compares them on random and edge-case events). Where numpy cannot be sure to agree
with Python's formatting (a float format whose rounding is a tie in decimal, RTTs
that print with an exponent), those rows are formatted by Python and put in place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..events import Flow, RttEvent

U64 = npt.NDArray[np.uint64]
Bytes2D = npt.NDArray[np.uint8]

# b"0000" .. b"9999" as little-endian uint32 words: four digits per gather.
_QUADS: npt.NDArray[np.uint32] = np.frombuffer(
    b"".join(b"%04d" % i for i in range(10_000)), dtype="<u4"
).copy()
_POW10: U64 = np.array([10**k for k in range(20)], dtype=np.uint64)
MAX_DIGITS = 20  # 2**64 - 1 has 20 digits


@dataclass
class RttColumns:
    """RTT events, one array per field, in delivery order.

    `flow_ids` index `flows`; a source keeps ids stable from batch to batch as long as
    it hands over the same `flows` list (a new list means new ids). Times are wall
    clock ns; counters are the timestamped direction's, as in `RttEvent`.
    """

    timestamp: U64
    flow_ids: npt.NDArray[np.intp]
    flows: list[Flow]
    rtt: U64
    min_rtt: U64
    sent_packets: U64
    sent_bytes: U64
    rec_packets: U64
    rec_bytes: U64
    match_on_egress: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.timestamp)

    def events(self) -> list[RttEvent]:
        """The same events as objects (for sinks without a batch method)."""
        flows = self.flows
        return [
            RttEvent(t, flows[f], r, m, sp, sb, rp, rb, e)
            for t, f, r, m, sp, sb, rp, rb, e in zip(
                self.timestamp.tolist(),
                self.flow_ids.tolist(),
                self.rtt.tolist(),
                self.min_rtt.tolist(),
                self.sent_packets.tolist(),
                self.sent_bytes.tolist(),
                self.rec_packets.tolist(),
                self.rec_bytes.tolist(),
                self.match_on_egress.tolist(),
                strict=True,
            )
        ]

    @classmethod
    def from_events(cls, events: Sequence[RttEvent]) -> RttColumns:
        """Columns for `events` (flows numbered in order of appearance)."""
        ids: dict[Flow, int] = {}
        flow_ids = [ids.setdefault(e.flow, len(ids)) for e in events]

        def column(name: str) -> U64:
            return np.array([getattr(e, name) for e in events], dtype=np.uint64)

        return cls(
            timestamp=column("timestamp"),
            flow_ids=np.array(flow_ids, dtype=np.intp),
            flows=list(ids),
            rtt=column("rtt"),
            min_rtt=column("min_rtt"),
            sent_packets=column("sent_packets"),
            sent_bytes=column("sent_bytes"),
            rec_packets=column("rec_packets"),
            rec_bytes=column("rec_bytes"),
            match_on_egress=np.array([e.match_on_egress for e in events], dtype=np.bool_),
        )


# -- numbers -------------------------------------------------------------------------


def digit_count(values: U64) -> npt.NDArray[np.intp]:
    """Decimal digits of each value (1 for 0)."""
    counts: npt.NDArray[np.intp] = np.searchsorted(_POW10[1:], values, side="right") + 1
    return counts


def digits(values: U64, width: int) -> Bytes2D:
    """The values as ASCII digits, right-aligned and zero-padded to `width` columns
    (the highest digits are dropped if a value has more)."""
    groups = -(-width // 4)
    words = np.empty((len(values), groups), dtype="<u4")
    rest = values
    for group in range(groups - 1, -1, -1):
        high = rest // np.uint64(10_000)
        words[:, group] = _QUADS[(rest - high * np.uint64(10_000)).astype(np.intp)]
        rest = high
    text: Bytes2D = words.view(np.uint8)
    return text[:, groups * 4 - width :]


@dataclass
class Field:
    """A column of text: `text` rows of equal width; `lengths` (None: all full) says how
    many bytes of each row count, at the right end (`right`) or at the left."""

    text: Bytes2D
    lengths: npt.NDArray[np.intp] | None = None
    right: bool = True

    @property
    def width(self) -> int:
        return int(self.text.shape[1])

    def put(self, rows: Sequence[int], texts: Sequence[bytes]) -> Field:
        """This field with `rows` replaced by `texts` (widened if they need it)."""
        if not rows:
            return self
        n = len(self.text)
        lengths = self.lengths if self.lengths is not None else np.full(n, self.width, np.intp)
        width = max(self.width, max(len(t) for t in texts))
        text = np.zeros((n, width), dtype=np.uint8)
        if self.right:
            text[:, width - self.width :] = self.text
        else:
            text[:, : self.width] = self.text
        lengths = lengths.copy()
        for row, value in zip(rows, texts, strict=True):
            raw = np.frombuffer(value, dtype=np.uint8)
            if self.right:
                text[row, width - len(raw) :] = raw
            else:
                text[row, : len(raw)] = raw
            lengths[row] = len(raw)
        return Field(text, lengths, self.right)


def integers(values: U64) -> Field:
    """`%d` of each value."""
    if len(values) == 0:
        return Field(np.zeros((0, 1), dtype=np.uint8))
    counts = digit_count(values)
    width = int(counts.max())
    if int(counts.min()) == width:
        return Field(digits(values, width))
    return Field(digits(values, width), counts)


def fixed(values: U64, width: int) -> Field:
    """`%0<width>d` of values known to have at most `width` digits."""
    return Field(digits(values, width))


def table_field(index: npt.NDArray[np.intp], words: Sequence[bytes]) -> Field:
    """`words[i]` for each i of `index`."""
    width = max(1, *(len(w) for w in words))
    table = np.zeros((len(words), width), dtype=np.uint8)
    for row, word in enumerate(words):
        table[row, : len(word)] = np.frombuffer(word, dtype=np.uint8)
    if all(len(w) == width for w in words):
        return Field(table[index])
    lengths = np.array([len(w) for w in words], dtype=np.intp)[index]
    return Field(table[index], lengths, right=False)


def choice(flags: npt.NDArray[np.bool_], if_true: bytes, if_false: bytes) -> Field:
    """One of two words per row."""
    return table_field(flags.astype(np.intp), (if_false, if_true))


# A batch spans a few seconds at most; beyond this many, seconds are looked up by sort.
_SECONDS_RANGE = 4096


def per_second(seconds: U64, text_of: Callable[[int], str]) -> Field:
    """`text_of(s)` for each second s (made once per distinct second)."""
    if len(seconds) == 0:
        return Field(np.zeros((0, 1), dtype=np.uint8))
    first = int(seconds.min())
    if int(seconds.max()) - first < _SECONDS_RANGE:
        index = (seconds - np.uint64(first)).astype(np.intp)
        distinct = range(first, first + int(index.max()) + 1)
    else:
        unique, inverse = np.unique(seconds, return_inverse=True)
        index = inverse.astype(np.intp).reshape(-1)
        distinct = unique.tolist()
    return table_field(index, [text_of(s).encode("ascii") for s in distinct])


def seconds_and_fraction(values: U64, unit: int) -> tuple[U64, U64]:
    """(values // unit, values % unit)."""
    whole = values // np.uint64(unit)
    return whole, values - whole * np.uint64(unit)


# printf's %g of a double computed as value / unit: exact with integers for values whose
# rounding to six digits is no decimal tie, which the double rounds the same way (its
# error, below 2**-53 relative, is smaller than the distance to the tie for values
# below 2**52). Other values, and those printed with an exponent, go through Python.
_G_EXACT_LIMIT = 1 << 52


def general6(values: U64, unit: int) -> list[Field]:
    """printf `%.6g` of `value / unit` (unit a power of ten, >= 10**4) for each value,
    as two fields: the integer part, then the point and the fraction."""
    scale = len(str(unit)) - 1
    n = len(values)
    count = digit_count(values)
    dropped = np.maximum(count - 6, 0)
    step = _POW10[dropped]
    kept = values // step
    remainder = values - kept * step
    half = step // np.uint64(2)
    tie = (dropped > 0) & (remainder == half)
    rounded = (kept + (remainder > half)) * step
    # Fixed notation needs an exponent X with -4 <= X < 6 (value in [1e-4, 1e6)).
    low = np.uint64(unit // 10_000)
    high = np.uint64(unit * 1_000_000)
    python = tie | (values >= np.uint64(_G_EXACT_LIMIT)) | (rounded < low) | (rounded >= high)
    whole, fraction = seconds_and_fraction(rounded, unit)
    whole_field = integers(whole)
    # The fraction with its trailing zeros removed, and no point when it is zero.
    zeros = np.zeros(n, dtype=np.intp)
    for k in range(1, scale):
        zeros += (fraction % np.uint64(10**k)) == 0
    fraction_text = np.empty((n, scale + 1), dtype=np.uint8)
    fraction_text[:, 0] = ord(".")
    fraction_text[:, 1:] = digits(fraction, scale)
    fraction_length = np.where(fraction == 0, 0, scale + 1 - zeros)
    special = np.flatnonzero(python).tolist()
    if special:
        texts = [b"%.6g" % (int(v) / unit) for v in values[special].tolist()]
        whole_field = whole_field.put(special, texts)
        fraction_length[special] = 0
    return [whole_field, Field(fraction_text, fraction_length, right=False)]


def fixed6(values: U64, unit: int) -> list[Field]:
    """printf `%.6f` of `value / unit` (unit a power of ten, >= 10**6) for each value:
    half-way cases of the decimal rounding, and values whose double is inexact, go
    through Python (the double decides which way they round)."""
    step = unit // 1_000_000
    whole, fraction = seconds_and_fraction(values, unit)
    micro, below = seconds_and_fraction(fraction, step)
    up = below > np.uint64(step // 2)
    micro = micro + up
    carry = micro == np.uint64(1_000_000)
    whole = whole + carry
    micro = np.where(carry, np.uint64(0), micro)
    text = np.empty((len(values), 7), dtype=np.uint8)
    text[:, 0] = ord(".")
    text[:, 1:] = digits(micro, 6)
    python = (below == np.uint64(step // 2)) | (values >= np.uint64(_G_EXACT_LIMIT))
    whole_field = integers(whole)
    special = np.flatnonzero(python).tolist()
    if not special:
        return [whole_field, Field(text)]
    lengths = np.full(len(values), 7, dtype=np.intp)
    lengths[special] = 0
    texts = [b"%.6f" % (int(v) / unit) for v in values[special].tolist()]
    return [whole_field.put(special, texts), Field(text, lengths, right=False)]


# -- flows ---------------------------------------------------------------------------


class FlowTexts:
    """The text of each flow of a source's flow table, by flow id, as a byte matrix."""

    def __init__(self, text_of: Callable[[Flow], str]) -> None:
        self._text_of = text_of
        self._source: list[Flow] | None = None
        self._rows: Bytes2D = np.zeros((0, 1), dtype=np.uint8)
        self._lengths: npt.NDArray[np.intp] = np.zeros(0, dtype=np.intp)

    def field(self, columns: RttColumns) -> Field:
        if self._source is not columns.flows:
            self._source = columns.flows
            self._rows = np.zeros((0, 1), dtype=np.uint8)
            self._lengths = np.zeros(0, dtype=np.intp)
        known = len(self._lengths)
        if len(columns.flows) > known:
            self._grow(columns.flows[known:])
        lengths = self._lengths[columns.flow_ids]
        width = int(lengths.max()) if len(lengths) else 1
        return Field(self._rows[:, :width][columns.flow_ids], lengths, right=False)

    def _grow(self, flows: Sequence[Flow]) -> None:
        texts = [self._text_of(flow).encode("ascii") for flow in flows]
        width = max(self._rows.shape[1], *(len(t) for t in texts))
        rows = np.zeros((len(self._rows) + len(texts), width), dtype=np.uint8)
        rows[: len(self._rows), : self._rows.shape[1]] = self._rows
        for i, text in enumerate(texts, start=len(self._rows)):
            rows[i, : len(text)] = np.frombuffer(text, dtype=np.uint8)
        self._rows = rows
        self._lengths = np.concatenate(
            (self._lengths, np.array([len(t) for t in texts], dtype=np.intp))
        )


# -- lines ---------------------------------------------------------------------------


class Line:
    """Literal text and fields, concatenated row by row."""

    def __init__(self, parts: Sequence[bytes | Field]) -> None:
        self.parts = parts

    def matrix(self, n: int) -> tuple[Bytes2D, npt.NDArray[np.bool_]]:
        """Every row padded to one width, and the mask of the bytes that count."""
        width = sum(len(p) if isinstance(p, bytes) else p.width for p in self.parts)
        text = np.empty((n, width), dtype=np.uint8)
        mask = np.ones((n, width), dtype=np.bool_)
        column = 0
        for part in self.parts:
            if isinstance(part, bytes):
                text[:, column : column + len(part)] = np.frombuffer(part, dtype=np.uint8)
                column += len(part)
                continue
            w = part.width
            text[:, column : column + w] = part.text
            if part.lengths is not None:
                positions = np.arange(w)
                if part.right:
                    mask[:, column : column + w] = positions >= (w - part.lengths)[:, None]
                else:
                    mask[:, column : column + w] = positions < part.lengths[:, None]
            column += w
        return text, mask

    def render(self, n: int) -> bytes:
        """The n lines, concatenated."""
        text, mask = self.matrix(n)
        if mask.all():
            return text.tobytes()
        return text[mask].tobytes()
