"""Command line: parse options, compose one source with one sink, map errors to exit codes."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import io
import math
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn, TextIO

from . import __version__
from .aggregate import Aggregator, aggregated_replay
from .config import (
    DEFAULT_BURST_WINDOW_NS,
    DEFAULT_HIGH_WATER,
    DEFAULT_LOW_WATER,
    MAX_BURST_PACKETS,
    MAX_OUTSTANDING_SHARE,
    MIN_OUTSTANDING_CAP,
    NS_PER_MS,
    NS_PER_S,
    AggregateConfig,
    Config,
)
from .engine import Engine
from .errors import OptionsError, OutputError, PpingError
from .fastpath import fast_replay
from .sinks import FORMATS, Sink, make_sink
from .sinks.output import FILE_BUFFER_SIZE, ReopenableFile
from .sources.pcap import open_capture


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line (and exit code 2) via OptionsError."""

    def error(self, message: str) -> NoReturn:
        raise OptionsError(message)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {text!r}")
    return value


def _burst_window_ms(text: str) -> float:
    value = _non_negative_float(text)
    if round(value * NS_PER_MS) < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 ns (0.000001 ms): {text!r}")
    return value


def _burst_packets(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value <= MAX_BURST_PACKETS:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_BURST_PACKETS}: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or positive: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pping",
        description="Passive RTT monitor: round-trip times from TCP timestamps and ICMP echo.",
    )
    source = parser.add_argument_group("source")
    source.add_argument(
        "-i",
        "--interface",
        action="append",
        metavar="IFACE",
        help="monitor a live interface (repeatable)",
    )
    source.add_argument(
        "--read", metavar="FILE", help="analyse a pcap or pcapng file ('-' for standard input)"
    )
    source.add_argument(
        "--datapath",
        choices=("python", "kernel"),
        default="python",
        help="--read: run the packets through the Python engine (default) or the "
        "kernel program (BPF_PROG_TEST_RUN; needs root and the built BPF object)",
    )
    source.add_argument(
        "--merge-interfaces",
        action="store_true",
        help="pcapng: treat all interfaces as one link (match across them)",
    )
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument(
        "-r",
        "--rate-limit",
        type=_non_negative_float,
        default=100.0,
        metavar="MS",
        help="minimum time between timestamps per flow "
        "direction in ms (0: no sampling; default 100)",
    )
    sampling.add_argument(
        "-R",
        "--rtt-rate",
        type=_non_negative_float,
        default=0.0,
        metavar="K",
        help="sampling interval = K x the flow's RTT "
        "(the static limit applies until an RTT is known)",
    )
    sampling.add_argument(
        "-t",
        "--rtt-type",
        choices=("min", "smoothed"),
        default="min",
        help="which RTT --rtt-rate multiplies (default min)",
    )
    sampling.add_argument(
        "--burst",
        type=_burst_packets,
        default=0,
        metavar="N",
        help="after a sampled packet, timestamp up to N more packets with new identifiers "
        "within --burst-window; one RTT is reported per burst (default 0: off)",
    )
    sampling.add_argument(
        "--burst-window",
        type=_burst_window_ms,
        default=DEFAULT_BURST_WINDOW_NS / NS_PER_MS,
        metavar="MS",
        help="how long after the sampled packet a burst may grow, in ms (default 4)",
    )
    sampling.add_argument(
        "-c",
        "--cleanup-interval",
        type=_non_negative_float,
        default=1.0,
        metavar="S",
        help="period of the table clean-up in s (0: off)",
    )
    sampling.add_argument(
        "--max-timestamps",
        type=_positive_int,
        default=None,
        metavar="N",
        help="size of the timestamp table",
    )
    sampling.add_argument(
        "--max-flows", type=_positive_int, default=None, metavar="N", help="size of the flow table"
    )
    pressure = parser.add_argument_group("pressure and statistics")
    pressure.add_argument(
        "--adaptive",
        action="store_true",
        help="adapt to full tables: sample less often while the timestamp table is above "
        "the high-water mark, shorten flow timeouts while the flow table is above it",
    )
    pressure.add_argument(
        "--max-timestamps-cap",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="grow the timestamp table (from --max-timestamps) by doubling while it is "
        "above the high-water mark, up to N entries (default 0: never grows)",
    )
    pressure.add_argument(
        "--max-flows-cap",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="grow the flow table (from --max-flows) the same way, up to N entries "
        "(default 0: never grows)",
    )
    pressure.add_argument(
        "--high-water",
        type=_positive_int,
        default=DEFAULT_HIGH_WATER,
        metavar="PCT",
        help="--adaptive, --max-*-cap: table occupancy that triggers a step or growth "
        f"(default {DEFAULT_HIGH_WATER})",
    )
    pressure.add_argument(
        "--low-water",
        type=_positive_int,
        default=DEFAULT_LOW_WATER,
        metavar="PCT",
        help=f"--adaptive: occupancy below which a step is undone (default {DEFAULT_LOW_WATER})",
    )
    pressure.add_argument(
        "--max-outstanding",
        type=_non_negative_int,
        default=None,
        metavar="K",
        help="timestamps one flow direction may hold at once (0: no cap; default "
        f"1/{MAX_OUTSTANDING_SHARE} of the timestamp table, at least {MIN_OUTSTANDING_CAP})",
    )
    pressure.add_argument(
        "--stats-interval",
        type=_non_negative_float,
        default=0.0,
        metavar="S",
        help="write a statistics record every S seconds (at clean-ups) and at the end",
    )
    protocols = parser.add_argument_group("protocols")
    protocols.add_argument("-T", "--tcp", action="store_true", help="track TCP (default)")
    protocols.add_argument("-C", "--icmp", action="store_true", help="track ICMP echo")
    protocols.add_argument(
        "-s",
        "--include-SYN",
        action="store_true",
        dest="include_syn",
        help="also timestamp SYN packets",
    )
    protocols.add_argument(
        "-l",
        "--include-local",
        action="store_true",
        help="also report RTTs whose reply is addressed to this host",
    )
    output = parser.add_argument_group("output")
    output.add_argument("-F", "--format", choices=FORMATS, default="standard")
    output.add_argument(
        "-m", "--machine", action="store_true", help="Kathie Nichols' machine-readable line format"
    )
    output.add_argument(
        "-w", "--write", metavar="FILE", help="write output to FILE (SIGHUP reopens it)"
    )
    _add_aggregation_options(parser)
    parser.add_argument(
        "-I",
        "--ingress-hook",
        choices=("tc", "xdp"),
        default="tc",
        help="live monitoring: run the ingress side at tc (default) or XDP; egress is tc",
    )
    parser.add_argument("-V", "--version", action="version", version=f"pping {__version__}")
    return parser


def _add_aggregation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("aggregation (docs/aggregation.md)")
    group.add_argument(
        "-a",
        "--aggregate",
        type=_whole_number,
        metavar="S",
        help="report per-prefix traffic and RTT statistics every S seconds instead of every RTT",
    )
    group.add_argument(
        "--aggregate-subnets-v4",
        type=_whole_number,
        metavar="LEN",
        help="-4 LEN: IPv4 prefix length to aggregate on (default 24)",
    )
    group.add_argument(
        "--aggregate-subnets-v6",
        type=_whole_number,
        metavar="LEN",
        help="-6 LEN: IPv6 prefix length to aggregate on (default 48, at most 64)",
    )
    group.add_argument(
        "--aggregate-reverse",
        action="store_true",
        help="give each RTT to the prefix of the reply's destination, not its source",
    )
    group.add_argument(
        "--aggregate-timeout",
        type=_whole_number,
        metavar="S",
        help="forget prefixes idle for S seconds (default 30; 0: never)",
    )
    group.add_argument(
        "--max-prefixes",
        type=_whole_number,
        metavar="N",
        help="size of each prefix table, the backup entry included (default 16384)",
    )


AGGREGATE_DETAILS = ("aggregate_subnets_v4", "aggregate_subnets_v6", "aggregate_timeout",
                     "max_prefixes")  # fmt: skip


def aggregate_config_from_args(args: argparse.Namespace) -> AggregateConfig | None:
    """The -a configuration, or None without -a (its detail options then refused)."""
    if args.aggregate is None:
        given = [name for name in AGGREGATE_DETAILS if getattr(args, name) is not None]
        if given or args.aggregate_reverse:
            raise OptionsError("the aggregation options (-4, -6, --aggregate-*) need -a")
        return None
    extra: dict[str, int] = {}
    for name, field in zip(
        AGGREGATE_DETAILS, ("ipv4_prefix_len", "ipv6_prefix_len", "timeout_ns", "max_prefixes"),
        strict=True,
    ):  # fmt: skip
        value = getattr(args, name)
        if value is not None:
            extra[field] = value * NS_PER_S if name == "aggregate_timeout" else value
    return AggregateConfig(
        interval_ns=args.aggregate * NS_PER_S, by_destination=args.aggregate_reverse, **extra
    )


def config_from_args(args: argparse.Namespace) -> Config:
    track_tcp = args.tcp or not args.icmp
    extra = {}
    if args.max_timestamps is not None:
        extra["max_timestamps"] = args.max_timestamps
    if args.max_flows is not None:
        extra["max_flows"] = args.max_flows
    return Config(
        rate_limit_ns=round(args.rate_limit * NS_PER_MS),
        rtt_rate=args.rtt_rate,
        use_srtt=args.rtt_type == "smoothed",
        cleanup_interval_ns=round(args.cleanup_interval * NS_PER_S),
        track_tcp=track_tcp,
        track_icmp=args.icmp,
        include_syn=args.include_syn,
        include_local=args.include_local,
        burst_packets=args.burst,
        burst_window_ns=round(args.burst_window * NS_PER_MS),
        max_outstanding=args.max_outstanding,
        adaptive=args.adaptive,
        max_timestamps_cap=args.max_timestamps_cap,
        max_flows_cap=args.max_flows_cap,
        high_water=args.high_water,
        low_water=args.low_water,
        stats_interval_ns=round(args.stats_interval * NS_PER_S),
        **extra,
    )


# ePPing's short options for the prefix lengths. argparse cannot hold them: an option
# that looks like a negative number makes it read every negative value ("-r -1") as an
# option. So they are spelled out before parsing, unless they are an option's value.
PREFIX_OPTIONS = {"-4": "--aggregate-subnets-v4", "-6": "--aggregate-subnets-v6"}


def _spell_out_prefix_options(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    takes_value = {
        name for action in parser._actions if action.nargs != 0 for name in action.option_strings
    }
    spelled: list[str] = []
    for i, token in enumerate(argv):
        if i > 0 and argv[i - 1] in takes_value:
            spelled.append(token)
        elif token in PREFIX_OPTIONS:
            spelled.append(PREFIX_OPTIONS[token])
        elif token[:2] in PREFIX_OPTIONS and len(token) > 2:  # -424: "-4" "24"
            spelled.extend((PREFIX_OPTIONS[token[:2]], token[2:]))
        else:
            spelled.append(token)
    return spelled


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(
        _spell_out_prefix_options(parser, list(sys.argv[1:] if argv is None else argv))
    )
    if args.read is None and not args.interface:
        raise OptionsError("nothing to watch: give --read FILE or -i IFACE")
    if args.read is not None and args.interface:
        raise OptionsError("--read and -i cannot be combined")
    if args.machine and args.format != "standard":
        raise OptionsError("-m is a format of its own: do not combine it with -F")
    if args.aggregate is not None and (args.machine or args.format == "ppviz"):
        raise OptionsError("-a: the ppviz and -m formats have no aggregated output")
    aggregate_config_from_args(args)  # validates
    return args


# glibc's mallopt parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _keep_freed_memory() -> None:
    """Let glibc's malloc keep the memory a capture replay frees, for its next batch.

    Every batch allocates and frees the same large blocks again (the 8 MiB chunk read,
    half-megabyte numpy columns). By default glibc maps a block that large afresh and
    unmaps it when freed, or trims the heap top, so each batch faults its memory in
    again page by page (a third of the page faults of a capture of 4000 flows, ~9 % of
    its run time). Blocks up to 32 MiB (glibc's maximum) now come from the heap, and
    the heap is not trimmed. The peak memory stays what one batch needs. Elsewhere
    than glibc, nothing changes.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)


def _enable_gc() -> None:
    """Turn the cyclic collector back on without its scanning, at its next run, every
    object made while it was off (the engine's tables: ~13 ms at the end of a capture of
    4000 flows): freezing then unfreezing moves them all to the oldest generation, which
    is only collected when it has grown by a quarter."""
    gc.freeze()
    gc.unfreeze()
    gc.enable()


def run_capture(
    args: argparse.Namespace,
    sink: Sink,
    reopen_flag: list[bool],
    out: ReopenableFile,
    err: TextIO | None = None,
) -> None:
    config = config_from_args(args)
    engine = Engine(config)
    _keep_freed_memory()
    # The engine's state holds no reference cycles; the cyclic collector would only
    # rescan its growing tables again and again (a third of the run time on captures
    # with many flows).
    gc.disable()
    try:
        with open_capture(args.read) as reader:
            aggregate = aggregate_config_from_args(args)
            if args.datapath == "kernel":
                from .kernel.replay import kernel_replay  # only when asked: ctypes, libbpf

                events = kernel_replay(
                    reader, config, args.merge_interfaces, engine.counters, aggregate=aggregate
                )
            elif aggregate is not None:
                aggregator = Aggregator(aggregate)
                events = aggregated_replay(engine, reader, aggregator, args.merge_interfaces)
            else:
                events = fast_replay(engine, reader, args.merge_interfaces)
            # closing(): if the sink fails mid-way, the data path still finishes its
            # bookkeeping (the kernel replay adds its counters) before the summary.
            with contextlib.closing(events):
                for event in events:
                    if reopen_flag[0]:
                        reopen_flag[0] = False
                        _reopen(out, err if err is not None else sys.stderr)
                    sink.write(event)
    finally:
        # The events gathered so far and the counters are never lost, even on a
        # corrupt capture: the error is reported after them.
        _enable_gc()
        sink.write_counters(engine.counters, final=True)
        sink.close()
        out.close()


def run_live(
    args: argparse.Namespace,
    sink: Sink,
    reopen_flag: list[bool],
    out: ReopenableFile,
    err: TextIO | None = None,
) -> None:
    from .sources.kernel import LiveMonitor  # only for live monitoring: ctypes, libbpf

    errors = err if err is not None else sys.stderr
    monitor: LiveMonitor | None = None

    def on_wake() -> None:
        if reopen_flag[0]:
            reopen_flag[0] = False
            _reopen(out, errors)
        out.flush()  # live output is read as it comes, often through a pipe

    try:
        monitor = LiveMonitor(
            config_from_args(args),
            args.interface,
            ingress_hook=args.ingress_hook,
            err=errors,
            aggregate=aggregate_config_from_args(args),
        )
        monitor.run(sink, on_wake=on_wake)
    finally:
        try:
            if monitor is not None:
                monitor.close()  # detach (again: idempotent), unload
        finally:
            # Counters only when monitoring started: a refused start has none.
            if monitor is not None and monitor.final_counters is not None:
                sink.write_counters(monitor.final_counters, final=True)
            sink.close()
            out.close()


def _reopen(out: ReopenableFile, err: TextIO) -> None:
    """SIGHUP: start a new output file; on failure keep writing to the old one."""
    try:
        out.reopen()
    except OutputError as error:
        print(f"pping: warning: {error}; still writing to the old file", file=err)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (tests pass a StringIO): nothing to flush later


def _buffered(stream: TextIO) -> TextIO:
    """Standard output with a write buffer, even under PYTHONUNBUFFERED=1 (set in many
    container images), which would make every line a system call: at 25k RTTs a second
    that costs more than the analysis. pping flushes where output must be seen: after
    each batch of live events, and at exit. A terminal stays line-buffered."""
    if not getattr(stream, "write_through", False):
        return stream
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return stream  # not a real file (tests pass a StringIO)
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(
        io.BufferedWriter(raw, FILE_BUFFER_SIZE),
        encoding=stream.encoding,
        errors=stream.errors,
        line_buffering=raw.isatty(),
    )


def main(
    argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    err = stderr if stderr is not None else sys.stderr
    try:
        args = parse_args(argv)
        if args.interface:
            from .sources.kernel import preflight

            preflight(args.interface)  # a refused start creates no output file
        out = ReopenableFile(args.write, stdout if stdout is not None else _buffered(sys.stdout))
        sink = make_sink("machine" if args.machine else args.format, out, err)
        reopen_flag = [False]

        def on_hangup(signum: int, frame: FrameType | None) -> None:
            reopen_flag[0] = True

        # Always caught: with -w it reopens the file, on standard output it is ignored
        # (out.reopen() does nothing), as documented; uncaught it would kill pping.
        previous = signal.signal(signal.SIGHUP, on_hangup)
        try:
            run = run_live if args.interface else run_capture
            run(args, sink, reopen_flag, out, err)
        finally:
            if previous is not None:
                signal.signal(signal.SIGHUP, previous)
    except PpingError as error:
        print(f"pping: {error}", file=err)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (e.g. `pping ... | head`): not an error.
        # Point standard output at /dev/null so that the interpreter's final flush
        # does not fail again on the broken pipe.
        _silence_stdout()
        return 0
    except OSError as error:
        # Writing the output failed (disk full, I/O error): the reader converts its own
        # OSErrors to CaptureError, so this one is the output's. One line, exit code 4.
        print(f"pping: cannot write output: {error.strerror or error}", file=err)
        return OutputError.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
