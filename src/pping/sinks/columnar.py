"""RTT events as columns, and the numpy tools that format them a batch at a time.

Live monitoring under load delivers RTT events by the hundred thousand per second;
building one object and one `%`-formatted line per event costs a few microseconds,
more than the kernel needs to produce it. The sinks therefore also accept
`RttColumns` (one numpy array per field, flows as small integer ids into a table of
`Flow`s) through `write_rtt_batch`, and build the text of the whole batch with numpy:

- every field is a byte matrix, one row per event, in which NUL bytes are padding;
- a number becomes digits four at a time (a table of "0000".."9999"), its leading
  zeros NULs;
- a flow's text is made once per flow (`FlowTexts`) and gathered by flow id;
- a line is the fields and the literal texts side by side in one matrix (`render`;
  the literal columns are filled once per layout), NULs squeezed out at the end.

The text is byte for byte what the event-at-a-time `write` prints
(tests/test_columnar.py compares them on random and edge-case events). printf's
`%.6g` and `%.6f` of a double are reproduced with integers, the double deciding
decimal ties; RTTs that print with an exponent, and values from 2**52 on, are
formatted by Python and put in place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..events import Flow, RttEvent

U64 = npt.NDArray[np.uint64]
Bytes2D = npt.NDArray[np.uint8]


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
#
# Every field is a byte matrix, one row per event, where NUL bytes are padding: a row's
# text is its non-NUL bytes (no format prints a NUL), wherever the padding lies. A line
# is then the fields side by side with the NULs squeezed out, so no field needs its
# own lengths or alignment.


def _words(texts: Sequence[bytes]) -> npt.NDArray[np.uint32]:
    """Texts of up to four bytes as little-endian uint32 words, NUL-padded."""
    return np.frombuffer(b"".join(t.ljust(4, b"\0") for t in texts), dtype="<u4").copy()


class _DigitTables:
    """Texts of numbers as uint32 words, looked up by value."""

    def __init__(self) -> None:
        # Four digits: "0000".."9999", and the same without leading zeros ("\0\0\00"..).
        self.quads = _words([b"%04d" % i for i in range(10_000)])
        self.leading = _words([(b"%d" % i).rjust(4, b"\0") for i in range(10_000)])
        # Fractions of six digits as two groups of three: ".ddd" and "ddd", with or
        # without the trailing zeros ("%g" drops them; nothing is left of a zero fraction).
        self.point_full = _words([b".%03d" % i for i in range(1000)])
        self.point_trimmed = _words(
            [(b".%03d" % i).rstrip(b"0") if i else b"" for i in range(1000)]
        )
        self.three_full = _words([b"%03d" % i for i in range(1000)])
        self.three_trimmed = _words([(b"%03d" % i).rstrip(b"0") for i in range(1000)])


@functools.cache
def _digit_tables() -> _DigitTables:
    """Built on first use, not at import: replaying a capture never formats a batch,
    and building them took ~5 ms of every start."""
    return _DigitTables()


_POW10: U64 = np.array([10**k for k in range(20)], dtype=np.uint64)
_TEN_THOUSAND = np.uint64(10_000)
_THOUSAND = np.uint64(1000)


def digit_count(values: U64) -> npt.NDArray[np.intp]:
    """Decimal digits of each value (1 for 0)."""
    counts: npt.NDArray[np.intp] = np.searchsorted(_POW10[1:], values, side="right") + 1
    return counts


def _text(words: npt.NDArray[np.uint32]) -> Bytes2D:
    text: Bytes2D = words.view(np.uint8)
    return text


def digits(values: U64, width: int) -> Bytes2D:
    """The values as ASCII digits, zero-padded to `width` columns (`%0<width>d`; the
    highest digits are dropped if a value has more)."""
    quads = _digit_tables().quads
    groups = -(-width // 4)
    words = np.empty((len(values), groups), dtype="<u4")
    rest = values
    for group in range(groups - 1, -1, -1):
        high = rest // _TEN_THOUSAND
        words[:, group] = quads[(rest - high * _TEN_THOUSAND).astype(np.intp)]
        rest = high
    return _text(words)[:, groups * 4 - width :]


def integers(values: U64) -> Bytes2D:
    """`%d` of each value (leading zeros as padding)."""
    if not len(values):
        return np.zeros((0, 1), dtype=np.uint8)
    width = len(str(int(values.max())))
    if len(str(int(values.min()))) == width:
        return digits(values, width)  # one width (times, mostly): no padding
    tables = _digit_tables()
    groups = -(-width // 4)
    words = np.empty((len(values), groups), dtype="<u4")
    rest = values
    for group in range(groups - 1, -1, -1):
        high = rest // _TEN_THOUSAND
        low = (rest - high * _TEN_THOUSAND).astype(np.intp)
        # Digits above the top one are padding; the last group always shows one digit.
        leading = tables.leading[low]
        if group < groups - 1:
            leading = np.where(rest > 0, leading, np.uint32(0))
        words[:, group] = np.where(high > 0, tables.quads[low], leading)
        rest = high
    return _text(words)[:, groups * 4 - width :]


def table_field(index: npt.NDArray[np.intp], words: Sequence[bytes]) -> Bytes2D:
    """`words[i]` for each i of `index`."""
    width = max(1, *(len(w) for w in words))
    table = np.zeros((len(words), width), dtype=np.uint8)
    for row, word in enumerate(words):
        table[row, : len(word)] = np.frombuffer(word, dtype=np.uint8)
    field: Bytes2D = table.take(index, axis=0)  # whole rows: ~4x faster than table[index]
    return field


def choice(flags: npt.NDArray[np.bool_], if_true: bytes, if_false: bytes) -> Bytes2D:
    """One of two words per row."""
    return table_field(flags.astype(np.intp), (if_false, if_true))


# A batch spans a few seconds at most; beyond this many, seconds are looked up by sort.
_SECONDS_RANGE = 4096


def per_second(seconds: U64, text_of: Callable[[int], str]) -> Bytes2D:
    """`text_of(s)` for each second s (made once per distinct second)."""
    if len(seconds) == 0:
        return np.zeros((0, 1), dtype=np.uint8)
    first = int(seconds.min())
    if int(seconds.max()) - first < _SECONDS_RANGE:
        index = (seconds - np.uint64(first)).astype(np.intp)
        distinct: Sequence[int] = range(first, first + int(index.max()) + 1)
    else:
        unique, inverse = np.unique(seconds, return_inverse=True)
        index = inverse.astype(np.intp).reshape(-1)
        distinct = unique.tolist()
    return table_field(index, [text_of(s).encode("ascii") for s in distinct])


def seconds_and_fraction(values: U64, unit: int) -> tuple[U64, U64]:
    """(values // unit, values % unit)."""
    whole = values // np.uint64(unit)
    return whole, values - whole * np.uint64(unit)


def put(field: Bytes2D, rows: Sequence[int], texts: Sequence[bytes]) -> Bytes2D:
    """`field` with `rows` replaced by `texts` (widened if they need it)."""
    if not rows:
        return field
    width = max(field.shape[1], *(len(t) for t in texts))
    wider = np.zeros((len(field), width), dtype=np.uint8)
    wider[:, width - field.shape[1] :] = field
    for row, text in zip(rows, texts, strict=True):
        wider[row] = 0
        wider[row, width - len(text) :] = np.frombuffer(text, dtype=np.uint8)
    return wider


def _six_decimals(fraction: U64, trimmed: bool) -> Bytes2D:
    """ "." and six digits of fractions below 10**6; `trimmed`: without trailing zeros
    (nothing for 0)."""
    tables = _digit_tables()
    high = fraction // _THOUSAND
    low = (fraction - high * _THOUSAND).astype(np.intp)
    high_index = high.astype(np.intp)
    words = np.empty((len(fraction), 2), dtype="<u4")
    if trimmed:
        words[:, 0] = np.where(
            low == 0, tables.point_trimmed[high_index], tables.point_full[high_index]
        )
        words[:, 1] = tables.three_trimmed[low]
    else:
        words[:, 0] = tables.point_full[high_index]
        words[:, 1] = tables.three_full[low]
    return _text(words)


# printf's %g/%f of a double computed as value / unit, from the integers: for values
# below 2**52 the double (the correctly rounded quotient) is on the same side of every
# rounding boundary as the exact quotient, except at decimal ties, where the double's
# side decides (`_side`), or, when the double is the tie itself, round-half-even.
# Larger values, and %g's exponent forms, go through Python.
_EXACT_LIMIT = np.uint64(1 << 52)
_SPLIT = 134217729.0  # 2**27 + 1: Dekker's split of a double into two halves


def _halves(x: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    scaled = _SPLIT * x
    high = scaled - (scaled - x)
    return high, x - high


def _side(values: U64, unit: int) -> npt.NDArray[np.float64]:
    """Positive where the double nearest to value / unit is above the exact quotient,
    negative below, zero when equal (values below 2**53, unit exactly representable);
    from the exact error of the product quotient * unit (Dekker's two-product)."""
    exact = values.astype(np.float64)
    quotient = exact / unit
    product = quotient * unit
    q_high, q_low = _halves(quotient)
    u_high, u_low = _halves(np.array([float(unit)]))
    error = ((q_high * u_high - product) + q_high * u_low + q_low * u_high) + q_low * u_low
    # quotient * unit - value = (product - value) + error; the first difference is exact.
    side: npt.NDArray[np.float64] = (product - exact) + error
    return side


def _round_ties(
    up: npt.NDArray[np.bool_], ties: npt.NDArray[np.intp], values: U64, kept: U64, unit: int
) -> None:
    """Set `up` at the `ties` rows (decimal ties) the way printf rounds the double."""
    side = _side(values[ties], unit)
    odd = (kept[ties] & np.uint64(1)) == 1
    up[ties] = (side > 0) | ((side == 0) & odd)


def general6(values: U64, unit: int) -> list[Bytes2D]:
    """printf `%.6g` of `value / unit` for each value (unit 10**6: ns as ms), as two
    fields: the integer part, then the point and the fraction."""
    assert unit == 10**6, "the fraction is six digits"
    count = digit_count(values)
    dropped = np.maximum(count - 6, 0)
    step = _POW10[dropped]
    kept = values // step
    remainder = values - kept * step
    half = step >> np.uint64(1)
    up = remainder > half
    ties = np.flatnonzero((remainder == half) & (dropped > 0))
    if len(ties):
        _round_ties(up, ties, values, kept, unit)
    rounded = (kept + up.astype(np.uint64)) * step
    # Fixed notation needs an exponent X with -4 <= X < 6 (value in [1e-4, 1e6)).
    exponent_form = (rounded < np.uint64(unit // 10_000)) | (rounded >= np.uint64(unit * 10**6))
    python = np.flatnonzero(exponent_form | (values >= _EXACT_LIMIT)).tolist()
    whole, fraction = seconds_and_fraction(rounded, unit)
    whole_text = integers(whole)
    fraction_text = _six_decimals(fraction, trimmed=True)
    if python:
        texts = [b"%.6g" % (int(v) / unit) for v in values[python].tolist()]
        whole_text = put(whole_text, python, texts)
        fraction_text[python] = 0
    return [whole_text, fraction_text]


def fixed6(values: U64, unit: int) -> list[Bytes2D]:
    """printf `%.6f` of `value / unit` for each value (unit 10**9: ns as s), as two
    fields: the integer part, then the point and six digits."""
    assert unit == 10**9, "rounding to microseconds"
    step = unit // 10**6
    whole, fraction = seconds_and_fraction(values, unit)
    micro, below = seconds_and_fraction(fraction, step)
    up = below > np.uint64(step // 2)
    ties = np.flatnonzero(below == np.uint64(step // 2))
    if len(ties):
        _round_ties(up, ties, values, micro, unit)
    micro = micro + up.astype(np.uint64)
    carry = micro == np.uint64(10**6)
    whole = whole + carry.astype(np.uint64)
    micro = np.where(carry, np.uint64(0), micro)
    python = np.flatnonzero(values >= _EXACT_LIMIT).tolist()
    whole_text = integers(whole)
    fraction_text = _six_decimals(micro, trimmed=False)
    if python:
        texts = [b"%.6f" % (int(v) / unit) for v in values[python].tolist()]
        whole_text = put(whole_text, python, texts)
        fraction_text[python] = 0
    return [whole_text, fraction_text]


# -- flows -------------------------------------------------------------------------


class FlowTexts:
    """The text of each flow of a source's flow table, by flow id, as a byte matrix."""

    def __init__(self, text_of: Callable[[Flow], str]) -> None:
        self._text_of = text_of
        self._source: list[Flow] | None = None
        self._rows: Bytes2D = np.zeros((0, 1), dtype=np.uint8)
        self._lengths: npt.NDArray[np.intp] = np.zeros(0, dtype=np.intp)

    def field(self, columns: RttColumns) -> Bytes2D:
        if self._source is not columns.flows:
            self._source = columns.flows
            self._rows = np.zeros((0, 1), dtype=np.uint8)
            self._lengths = np.zeros(0, dtype=np.intp)
        known = len(self._lengths)
        if len(columns.flows) > known:
            self._grow(columns.flows[known:])
        ids = columns.flow_ids
        width = int(self._lengths[ids].max()) if len(ids) else 1
        field: Bytes2D = self._rows.take(ids, axis=0)[:, :width]
        return field

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

# Line layouts seen, with a matrix whose literal columns are filled: a batch only
# copies its fields in. A sink uses one layout or a few (numbers' widths vary).
_TEMPLATES: dict[tuple[bytes | int, ...], Bytes2D] = {}
_TEMPLATES_LIMIT = 256


def _template(layout: tuple[bytes | int, ...], rows: int) -> Bytes2D:
    template = _TEMPLATES.get(layout)
    if template is None or len(template) < rows:
        if len(_TEMPLATES) >= _TEMPLATES_LIMIT:
            _TEMPLATES.clear()
        width = sum(len(p) if isinstance(p, bytes) else p for p in layout)
        template = np.empty((max(rows, 1024), width), dtype=np.uint8)
        column = 0
        for part in layout:
            if isinstance(part, bytes):
                template[:, column : column + len(part)] = np.frombuffer(part, dtype=np.uint8)
                column += len(part)
            else:
                column += part
        _TEMPLATES[layout] = template
    return template[:rows]


def render(parts: Sequence[bytes | Bytes2D]) -> bytes | memoryview:
    """Each row's fields and literal texts concatenated, NUL padding left out; all rows
    one after the other."""
    fields = [p for p in parts if not isinstance(p, bytes)]
    rows = len(fields[0])
    layout = tuple(p if isinstance(p, bytes) else int(p.shape[1]) for p in parts)
    text = _template(layout, rows)
    column = 0
    for part in parts:
        if isinstance(part, bytes):
            column += len(part)
        else:
            width = part.shape[1]
            _rows_of(text[:, column : column + width])[:] = _rows_of(part)
            column += width
    return _without_nuls(text)


def _rows_of(field: Bytes2D) -> npt.NDArray[np.void]:
    """Each row of `field` as one element: numpy copies a row of a few bytes as one
    item, where a byte matrix costs it a loop per row (2-3 times slower)."""
    rows: npt.NDArray[np.void] = field.view(np.dtype((np.void, field.shape[1])))[:, 0]
    return rows


# Removing NULs: bytes.replace finds each with memchr and copies the text between them,
# the fastest way when they are few (numbers of one width, flows of one length); numpy's
# boolean index costs about half a nanosecond a byte whatever their number.
_FEW_NULS_PER_ROW = 16


_SAMPLE_ROWS = 64  # the choice is made on about this many rows spread over the batch


def _without_nuls(text: Bytes2D) -> bytes | memoryview:
    flat = text.reshape(-1)
    sample = text[:: max(1, len(text) // _SAMPLE_ROWS)]
    nuls = sample.size - int(np.count_nonzero(sample))
    if nuls <= _FEW_NULS_PER_ROW * len(sample):
        return flat.tobytes().replace(b"\0", b"")
    return memoryview(flat[flat != 0])
