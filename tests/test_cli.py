"""The command line as users run it: options, exit codes, every test capture, I/O.

In-process runs call `pping.cli.main(argv, stdout=..., stderr=...)`; a few tests run
the installed console script in a subprocess, for what only a process shows (exit
status, signals, pipes, standard input). Subprocess tests that must act while pping
runs (SIGHUP, a pipe fed in parts) wait for pping to be blocked reading an empty pipe
(Linux /proc) rather than sleeping for a guessed time.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from pping.cli import _buffered, config_from_args, main, parse_args
from pping.engine import Engine
from pping.errors import CaptureError, OptionsError, OutputError
from pping.events import Counters
from pping.fastpath import fast_replay
from pping.replay import replay
from pping.sinks.jsonfmt import JsonLinesSink, summary_record
from pping.sinks.standard import counters_text
from pping.sources.pcap import CaptureReader, CaptureRecord

PCAPS = Path(__file__).parent / "data" / "pcaps"
CAPTURES = sorted(p for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng", ".cap"))
HANDSHAKE = PCAPS / "tcpdump__tcp-handshake-nano.pcap"
PING = PCAPS / "suricata__icmpv4-ping.pcap"  # 150 records, 75 ICMP echo RTTs
MULTI = PCAPS / "pcapplusplus__pcapng-example.pcapng"

# The captures CaptureReader refuses part way (CaptureError); checked against the
# reader itself by test_corrupt_captures_are_the_ones_the_reader_refuses.
CORRUPT = {
    "dpkt__truncated_dns_2.pcap",
    "gopacket__test901-le.pcapng",
    "libpcap__pcap-invalid-version-1.pcap",
    "libpcap__pcapng-invalid-vers-1.pcapng",
    "libpcap__pcapng-invalid-vers-2.pcapng",
    "libpcap__shb-option-too-long.pcapng",
    "suricata__bug-6875-fuzz.pcap",
    "suricata__http-mime-cut-short.pcap",
    "suricata__smtp-to-comma.pcap",
    "suricata__tls_DER-incomplete-header.pcap",
}

# Every protocol, every packet: as many events as the captures hold.
ALL = ("-T", "-C", "-r", "0", "-s")
FORMATS: dict[str, tuple[str, ...]] = {
    "standard": ("-F", "standard"),
    "json": ("-F", "json"),
    "jsonl": ("-F", "jsonl"),
    "ppviz": ("-F", "ppviz"),
    "machine": ("-m",),
}
TIMEOUT = 20  # seconds, for any one subprocess


# --- helpers --------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    out: str
    err: str


def run(*argv: object) -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], stdout=out, stderr=err)
    return Run(code, out.getvalue(), err.getvalue())


def pping_command() -> list[str]:
    """The console script next to this interpreter (the venv's), else `-m pping.cli`."""
    script = Path(sys.executable).with_name("pping")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "pping.cli"]


def spawn(*argv: object, **kwargs: Any) -> subprocess.Popen[bytes]:
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([*pping_command(), *map(str, argv)], **kwargs)


def finish(proc: subprocess.Popen[bytes], data: bytes | None = None) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(data, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, (out or b"").decode(), (err or b"").decode()


@cache
def read_capture(path: Path) -> tuple[tuple[CaptureRecord, ...], str | None]:
    """The records CaptureReader yields, and the message of its CaptureError (or None)."""
    records: list[CaptureRecord] = []
    with path.open("rb") as stream, CaptureReader(stream, str(path)) as reader:
        try:
            records.extend(reader)
        except CaptureError as error:
            return tuple(records), str(error)
    return tuple(records), None


def oracle(path: Path, *options: str) -> tuple[list[str], Counters]:
    """The jsonl records of the events and the counters, by the plain (slow) replay of
    the records the reader yields: what pping must print, even if the capture is corrupt."""
    args = parse_args(["--read", str(path), *options])
    engine = Engine(config_from_args(args))
    encoder = JsonLinesSink(io.StringIO(), io.StringIO())
    records, _ = read_capture(path)
    events = [encoder.encode(e) for e in replay(engine, records, args.merge_interfaces)]
    return events, engine.counters


def endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def flow_text(r: dict[str, Any]) -> str:
    return f"{endpoint(r['src_ip'], r['src_port'])}+{endpoint(r['dest_ip'], r['dest_port'])}"


def reverse_text(r: dict[str, Any]) -> str:
    return f"{endpoint(r['dest_ip'], r['dest_port'])}+{endpoint(r['src_ip'], r['src_port'])}"


def clock(ns: int) -> str:
    sec, frac = divmod(ns, 10**9)
    return time.strftime("%H:%M:%S", time.localtime(sec)) + f".{frac:09d}"


def standard_lines(records: list[dict[str, Any]]) -> list[str]:
    """docs/output-formats.md, "standard", written out independently of the sink."""
    lines = []
    for r in records:
        head = f"{clock(r['timestamp'])}"
        if "rtt" in r:
            lines.append(
                f"{head} {r['rtt'] / 1e6:.6g} ms {r['min_rtt'] / 1e6:.6g} ms "
                f"{r['protocol']} {flow_text(r)}"
            )
        elif "flow_event" in r:
            lines.append(
                f"{head} {r['protocol']} {flow_text(r)} {r['flow_event']} due to "
                f"{r['reason']} from {r['triggered_by']}"
            )
    return lines


def seconds9(ns: int) -> str:
    return f"{ns // 10**9}.{ns % 10**9:09d}"


def ppviz_lines(records: list[dict[str, Any]]) -> list[str]:
    return [
        f"{seconds9(r['timestamp'])} {seconds9(r['rtt'])} {seconds9(r['min_rtt'])} {flow_text(r)}"
        for r in records
        if "rtt" in r
    ]


def machine_lines(records: list[dict[str, Any]]) -> list[str]:
    """Kathie Nichols' -m line; byte columns per reply flow, forgotten when it closes."""
    lines = []
    previous: dict[str, tuple[int, int]] = {}
    for r in records:
        if "rtt" in r:
            flow = flow_text(r)
            sent, rec = r["sent_bytes"], r["rec_bytes"]
            last_sent, last_rec = previous.get(flow, (-1, -1))
            d_bytes = last_sent if 0 <= last_sent <= sent else 0
            p_bytes = rec - last_rec if 0 <= last_rec <= rec else rec
            previous[flow] = (sent, rec)
            ts = r["timestamp"]
            lines.append(
                f"{ts // 10**9}.{ts % 10**9 // 1000:06d} {r['rtt'] / 1e9:.6f} "
                f"{r['min_rtt'] / 1e9:.6f} {sent} {d_bytes} {p_bytes} {flow}"
            )
        elif r.get("flow_event") == "closing":
            previous.pop(flow_text(r), None)
            previous.pop(reverse_text(r), None)
    return lines


def check_outputs(runs: dict[str, Run], events: list[str], counters: Counters) -> None:
    """Every format holds exactly `events` followed by the summary of `counters`."""
    summary = summary_record(counters, final=True)
    records = [json.loads(line) for line in events]

    jsonl = runs["jsonl"].out.splitlines()
    assert jsonl == [*events, summary]
    assert json.loads(jsonl[-1])["final"] is True

    document = runs["json"].out
    assert document.startswith("[") and document.endswith("]\n")
    assert json.loads(document) == [*records, json.loads(summary)]

    assert runs["standard"].out.splitlines() == standard_lines(records)
    assert runs["ppviz"].out.splitlines() == ppviz_lines(records)
    assert runs["machine"].out.splitlines() == machine_lines(records)


def check_one_line_error(result: Run, code: int) -> str:
    assert result.code == code, result.err
    assert "Traceback" not in result.err
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("pping: ")
    return lines[0]


def pipe_fill(fd: int) -> int:
    """Bytes waiting in the pipe whose (write) end is `fd`."""
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


def wait_until_blocked_reading(proc: subprocess.Popen[bytes]) -> None:
    """Wait until pping has read everything written to its standard input and sleeps in
    read() for more: it has then handled every complete record sent so far."""
    assert proc.stdin is not None
    fd = proc.stdin.fileno()
    wchan = Path(f"/proc/{proc.pid}/wchan")
    stat = Path(f"/proc/{proc.pid}/stat")
    if not wchan.exists():
        pytest.skip("needs Linux /proc to see that pping waits for input")
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, "pping ended early"
        try:
            where = wchan.read_text().strip()
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            where, state = "", "?"
        # Some kernels hide wchan ("0"); then a sleeping process with a drained pipe.
        waiting = where.endswith("pipe_read") or (where in ("", "0") and state == "S")
        if waiting and pipe_fill(fd) == 0:
            return
        time.sleep(0.002)
    raise AssertionError("pping never waited for more input")


def pcap_record_ends(data: bytes) -> list[int]:
    """Offsets just past each record of a little-endian classic pcap file."""
    assert data[:4] == b"\xd4\xc3\xb2\xa1"
    ends, pos = [], 24
    while pos < len(data):
        (caplen,) = struct.unpack_from("<I", data, pos + 8)
        pos += 16 + caplen
        ends.append(pos)
    assert ends[-1] == len(data)
    return ends


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# --- 1. options -----------------------------------------------------------------------

BAD_OPTIONS = [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--read", HANDSHAKE, "extra"], "unrecognized arguments: extra"),
    (["--read", HANDSHAKE, "-r", "abc"], "-r/--rate-limit: not a number: 'abc'"),
    (["--read", HANDSHAKE, "-r", "-1"], "-r/--rate-limit: must be a finite number >= 0"),
    (["--read", HANDSHAKE, "-r"], "-r/--rate-limit: expected one argument"),
    (["--read", HANDSHAKE, "-R", "nan"], "-R/--rtt-rate: must be a finite number >= 0"),
    (["--read", HANDSHAKE, "-R", "inf"], "-R/--rtt-rate: must be a finite number >= 0"),
    (["--read", HANDSHAKE, "-c", "-2"], "-c/--cleanup-interval: must be a finite number >= 0"),
    (["--read", HANDSHAKE, "-F", "xml"], "-F/--format: invalid choice: 'xml'"),
    (["--read", HANDSHAKE, "-t", "avg"], "-t/--rtt-type: invalid choice: 'avg'"),
    (["--read", HANDSHAKE, "-I", "ebpf"], "-I/--ingress-hook: invalid choice: 'ebpf'"),
    ([], "nothing to watch"),
    (["-F", "json"], "nothing to watch"),
    (["--read"], "--read: expected one argument"),
    (["--read", HANDSHAKE, "-i", "eth0"], "--read and -i cannot be combined"),
    (["--read", HANDSHAKE, "-m", "-F", "json"], "-m is a format of its own"),
    (["--read", HANDSHAKE, "--max-flows", "0"], "--max-flows: must be at least 1: '0'"),
    (["--read", HANDSHAKE, "--max-timestamps", "x"], "--max-timestamps: not an integer"),
    (["--read", HANDSHAKE, "--burst", "-1"], "--burst: must be between 0 and 255: '-1'"),
    (["--read", HANDSHAKE, "--burst", "1.5"], "--burst: not an integer: '1.5'"),
    (["--read", HANDSHAKE, "--burst", "256"], "--burst: must be between 0 and 255: '256'"),
    (["--read", HANDSHAKE, "--burst-window", "0"], "--burst-window: must be at least 1 ns"),
    (["--read", HANDSHAKE, "--burst-window", "1e-9"], "--burst-window: must be at least 1 ns"),
    (["--read", HANDSHAKE, "--burst-window", "nan"], "--burst-window: must be a finite number"),
]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            argv, message, id=" ".join("CAPTURE" if a == HANDSHAKE else str(a) for a in argv)
        )
        for argv, message in BAD_OPTIONS
    ],
)
def test_bad_options_one_line_exit_2(argv: list[object], message: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("-w", out, *argv)
    line = check_one_line_error(result, OptionsError.exit_code)
    assert message in line
    assert result.out == ""
    assert not out.exists(), "an invalid command line must not create the output file"


def test_live_mode_is_refused_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("-i", "nosuch0", "-w", out)  # tests/test_live.py watches real ones
    assert result.code != 0
    line = check_one_line_error(result, result.code)
    assert line == "pping: failed to attach to nosuch0: No such device"
    assert result.out == ""
    assert not out.exists()


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_capture_that_cannot_be_opened(what: str, tmp_path: Path) -> None:
    path = tmp_path / "missing.pcap" if what == "missing" else tmp_path
    reason = "No such file or directory" if what == "missing" else "Is a directory"
    result = run("--read", path, "-F", "json")
    assert result.code == CaptureError.exit_code
    assert "Traceback" not in result.err
    # The (empty) summary, then the error as the one and last "pping:" line.
    assert result.err == counters_text(Counters(), final=True) + (
        f"pping: {path}: cannot open: {reason}\n"
    )
    assert json.loads(result.out) == [{"summary": Counters().as_dict(), "final": True}]


# --- 2. every test capture, every format ----------------------------------------------


def test_corrupt_captures_are_the_ones_the_reader_refuses() -> None:
    refused = {p.name for p in CAPTURES if read_capture(p)[1] is not None}
    assert refused == CORRUPT
    assert len(CAPTURES) >= 60


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_every_capture_in_every_format(path: Path) -> None:
    records, error = read_capture(path)
    runs = {name: run("--read", path, *ALL, *fmt) for name, fmt in FORMATS.items()}
    events, counters = oracle(path, *ALL)
    assert counters.packets == len(records)

    expected_err = counters_text(counters, final=True)
    if error is not None:
        expected_err += f"pping: {error}\n"
    for name, result in runs.items():
        assert "Traceback" not in result.err, name
        assert result.code == (0 if error is None else CaptureError.exit_code), name
        # Summary (no table-full warnings here), then the one error line if any.
        assert result.err == expected_err, name
    check_outputs(runs, events, counters)
    assert json.loads(runs["json"].out)[-1]["summary"]["packets"] == len(records)


# A clean capture cut in three ways after 100 of its 150 records: every format must show
# what it shows for the first 100 records, then the reader's error, exit code 3.
CUTS = ["inside a record header", "inside a record's data", "record length corrupt"]


@pytest.mark.parametrize("how", CUTS)
def test_events_before_a_capture_error_are_all_printed(how: str, tmp_path: Path) -> None:
    data = PING.read_bytes()
    ends = pcap_record_ends(data)
    good = ends[99]
    if how == CUTS[0]:
        broken = data[: good + 7]
    elif how == CUTS[1]:
        broken = data[: good + 16 + 10]
    else:
        broken = data[: good + 8] + struct.pack("<I", 0x7FFFFFFF) + data[good + 12 :]
    prefix, capture = tmp_path / "prefix.pcap", tmp_path / "broken.pcap"
    prefix.write_bytes(data[:good])
    capture.write_bytes(broken)
    records, error = read_capture(capture)
    assert error is not None and len(records) == 100

    for name, fmt in FORMATS.items():
        clean = run("--read", prefix, *ALL, *fmt)
        result = run("--read", capture, *ALL, *fmt)
        assert clean.code == 0
        assert result.code == CaptureError.exit_code, name
        assert result.out == clean.out, name
        assert result.err == clean.err + f"pping: {error}\n", name
    jsonl = run("--read", capture, *ALL, "-F", "jsonl").out.splitlines()
    assert len(jsonl) == 1 + 50 + 1  # flow opening, 50 RTTs, summary
    assert json.loads(jsonl[-1])["summary"]["packets"] == 100


# --- 3. the console script on the corrupt captures ------------------------------------


def test_console_script_on_corrupt_captures() -> None:
    paths = sorted(p for p in CAPTURES if p.name in CORRUPT)
    procs = [(path, spawn("--read", path)) for path in paths]  # all at once: faster
    results = [(path, finish(proc)) for path, proc in procs]
    for path, (code, out, err) in results:
        _, error = read_capture(path)
        assert code == CaptureError.exit_code, path.name
        assert "Traceback" not in err, path.name
        lines = err.splitlines()
        assert lines[-1] == f"pping: {error}", path.name
        assert [line for line in lines if line.startswith("pping")] == [lines[-1]]
        assert lines[0].startswith("Summary: ")
        events, _ = oracle(path)
        assert len(out.splitlines()) == len(events)


# --- 4. standard input ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "options"),
    [(PING, ("-C", "-r", "0")), (MULTI, ("-r", "0", "-s", "-F", "jsonl")), (HANDSHAKE, ("-s",))],
    ids=lambda v: v.name if isinstance(v, Path) else " ".join(v),
)
def test_standard_input_gives_the_same_output(path: Path, options: tuple[str, ...]) -> None:
    from_file = spawn("--read", path, *options)
    from_pipe = spawn("--read", "-", *options, stdin=subprocess.PIPE)
    piped = finish(from_pipe, path.read_bytes())
    direct = finish(from_file)
    assert direct[0] == 0, direct[2]
    assert piped == direct
    assert piped[1].count("\n") >= 3


@pytest.mark.parametrize("fmt", ["standard", "json"])
def test_unbuffered_python_gives_the_same_output(fmt: str) -> None:
    """PYTHONUNBUFFERED=1 (many container images set it) changes no byte of output."""
    argv = ("--read", MULTI, "-r", "0", "-s", "-F", fmt)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    buffered = finish(spawn(*argv, env=env))
    unbuffered = finish(spawn(*argv, env={**env, "PYTHONUNBUFFERED": "1"}))
    assert buffered[0] == 0, buffered[2]
    assert unbuffered == buffered
    assert buffered[1].count("\n") >= 3


def test_standard_output_is_buffered_even_when_python_is_not() -> None:
    """One system call per line would cost more than the analysis (25k RTTs/s)."""
    read_end, write_end = os.pipe()
    try:
        with open(write_end, "w", closefd=False, buffering=1) as unbuffered:
            unbuffered.reconfigure(write_through=True)
            stream = _buffered(unbuffered)
            assert stream is not unbuffered
            stream.write("one line\n" * 10)
            assert pipe_fill(write_end) == 0
            stream.flush()
            assert os.read(read_end, 1000) == b"one line\n" * 10
        buffered = io.StringIO()
        assert _buffered(buffered) is buffered  # already buffered (or not a file)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_no_numpy_threads_are_started() -> None:
    """pping never uses BLAS; its thread pool would only take CPU from the other core."""
    code = "import os, pping.cli; print(len(os.listdir('/proc/self/task')))"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "1"


def test_corrupt_capture_on_standard_input() -> None:
    path = PCAPS / "dpkt__truncated_dns_2.pcap"
    code, _, err = finish(spawn("--read", "-", stdin=subprocess.PIPE), path.read_bytes())
    _, error = read_capture(path)
    assert error is not None
    assert code == CaptureError.exit_code
    assert err.splitlines()[-1] == "pping: <stdin>" + error.removeprefix(str(path))


# --- 5. output file, SIGHUP -----------------------------------------------------------


def test_write_to_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    expected = run("--read", PING, "-C", "-r", "0", "-F", "jsonl")
    result = run("--read", PING, "-C", "-r", "0", "-F", "jsonl", "-w", out)
    assert result.code == 0
    assert result.out == ""
    assert result.err == expected.err
    assert out.read_text() == expected.out
    assert len(expected.out.splitlines()) == 77


def test_write_refuses_an_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    out.write_text("keep me\n")
    result = run("--read", PING, "-C", "-F", "json", "-w", out)
    line = check_one_line_error(result, OutputError.exit_code)
    assert line == f"pping: cannot open output file {out}: File exists"
    assert result.out == ""
    assert out.read_text() == "keep me\n"
    nowhere = tmp_path / "no" / "such" / "dir"
    line = check_one_line_error(run("--read", PING, "-w", nowhere), OutputError.exit_code)
    assert line == f"pping: cannot open output file {nowhere}: No such file or directory"


def test_write_error_on_output_is_one_line(tmp_path: Path) -> None:
    """A failing write (here: disk full) is an OutputError, not a traceback."""
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    with open("/dev/full", "wb") as full:
        code, out, err = finish(spawn("--read", PING, "-C", "-r", "0", stdout=full))
    assert code == OutputError.exit_code
    assert out == ""  # standard output was the file
    assert "Traceback" not in err
    assert err.splitlines()[-1] == "pping: cannot write output: No space left on device"
    assert [line for line in err.splitlines() if line.startswith("pping")] == [err.splitlines()[-1]]


class Feeder:
    """pping reading a capture from a pipe that the test fills in two parts."""

    def __init__(self, tmp_path: Path, *options: object) -> None:
        data = PING.read_bytes()
        self.cut = pcap_record_ends(data)[74]  # 75 of 150 records: 37.5 ping pairs
        self.data = data
        self.prefix = tmp_path / "first-part.pcap"
        self.prefix.write_bytes(data[: self.cut])
        self.proc = spawn("--read", "-", "-C", "-r", "0", *options, stdin=subprocess.PIPE)

    def first_part(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(self.data[: self.cut])
        self.proc.stdin.flush()
        wait_until_blocked_reading(self.proc)

    def rest(self) -> tuple[int, str, str]:
        return finish(self.proc, self.data[self.cut :])


def test_sighup_reopens_the_output_file(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    rotated = tmp_path / "out.json.1"
    feeder = Feeder(tmp_path, "-F", "json", "-w", out)
    try:
        feeder.first_part()
        out.rename(rotated)
        feeder.proc.send_signal(signal.SIGHUP)
    finally:
        code, stdout, stderr = feeder.rest()
    assert code == 0, stderr
    assert stdout == ""
    whole = run("--read", PING, "-C", "-r", "0", "-F", "json")
    assert stderr == whole.err
    first, second = rotated.read_text(), out.read_text()
    for text in (first, second):
        assert text.startswith("[") and text.endswith("]\n")
    first_doc, second_doc = json.loads(first), json.loads(second)
    # Exactly the events of the records sent before the signal are in the old file ...
    before = json.loads(run("--read", feeder.prefix, "-C", "-r", "0", "-F", "json").out)
    assert first_doc == before[:-1]
    assert len(first_doc) == 38  # flow opening and 37 RTTs
    # ... the others and the final summary in the new one, nothing lost or repeated.
    assert first_doc + second_doc == json.loads(whole.out)
    assert second_doc[-1]["final"] is True


def test_sighup_when_the_file_was_not_moved(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    feeder = Feeder(tmp_path, "-F", "json", "-w", out)
    try:
        feeder.first_part()
        feeder.proc.send_signal(signal.SIGHUP)
    finally:
        code, stdout, stderr = feeder.rest()
    assert code == 0, stderr
    assert stdout == ""
    whole = run("--read", PING, "-C", "-r", "0", "-F", "json")
    warning = f"pping: warning: cannot open output file {out}: File exists; still writing"
    assert stderr == warning + " to the old file\n" + whole.err
    assert out.read_text() == whole.out
    assert sorted(tmp_path.iterdir()) == sorted([feeder.prefix, out])


def test_reopen_warning_goes_to_the_given_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process: SIGHUP raised after the first event, the file not moved away."""
    real_replay = fast_replay

    def hangup_after_first_event(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for number, event in enumerate(real_replay(*args, **kwargs)):
            yield event
            if number == 0:
                signal.raise_signal(signal.SIGHUP)

    monkeypatch.setattr("pping.cli.fast_replay", hangup_after_first_event)
    out = tmp_path / "out.json"
    result = run("--read", PING, "-C", "-r", "0", "-F", "json", "-w", out)
    monkeypatch.undo()
    whole = run("--read", PING, "-C", "-r", "0", "-F", "json")
    assert result.code == 0
    assert result.err == (
        f"pping: warning: cannot open output file {out}: File exists; still writing to the "
        "old file\n" + whole.err
    )
    assert out.read_text() == whole.out


def test_sighup_is_ignored_on_standard_output(tmp_path: Path) -> None:
    feeder = Feeder(tmp_path, "-F", "jsonl")
    try:
        feeder.first_part()
        feeder.proc.send_signal(signal.SIGHUP)
    finally:
        code, stdout, stderr = feeder.rest()
    whole = run("--read", PING, "-C", "-r", "0", "-F", "jsonl")
    assert code == 0, f"SIGHUP ended pping (status {code})"
    assert (stdout, stderr) == (whole.out, whole.err)


def test_sighup_handler_is_restored_after_main(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGHUP)
    run("--read", HANDSHAKE, "-w", tmp_path / "out")
    run("--read", HANDSHAKE)
    assert signal.getsignal(signal.SIGHUP) == before


# --- 6. a pcapng file whose interfaces' clocks are far apart --------------------------


@pytest.mark.parametrize("merge", [False, True], ids=["per-interface", "merged"])
def test_multi_interface_clocks_never_give_huge_rtts(merge: bool) -> None:
    records, error = read_capture(MULTI)
    assert error is None
    clocks: dict[int, int] = {}
    for record in records:
        clocks.setdefault(record.interface, record.timestamp_ns)
    assert len(clocks) == 2 and abs(clocks[1] - clocks[0]) > 10**9 * 3600 * 24 * 365 * 1000

    extra = ("--merge-interfaces",) if merge else ()
    result = run("--read", MULTI, "-r", "0", "-s", "-F", "jsonl", *extra)
    assert result.code == 0, result.err
    lines = [json.loads(line) for line in result.out.splitlines()]
    rtts = [r["rtt"] for r in lines if "rtt" in r]
    assert len(rtts) == 31
    assert all(0 < rtt <= 60 * 10**9 for rtt in rtts)
    assert all(0 < r["min_rtt"] <= r["rtt"] for r in lines if "rtt" in r)
    assert lines[-1]["summary"]["packets"] == len(records) == 159


# --- 7. exact output on a TCP handshake -----------------------------------------------

HANDSHAKE_FLOW = {
    "src_ip": "137.116.81.94",
    "src_port": 80,
    "dest_ip": "131.155.215.69",
    "dest_port": 46656,
    "protocol": "TCP",
}
HANDSHAKE_BACK = {
    "src_ip": "131.155.215.69",
    "src_port": 46656,
    "dest_ip": "137.116.81.94",
    "dest_port": 80,
    "protocol": "TCP",
}
SIZES = {"sent_packets": 1, "sent_bytes": 0, "rec_packets": 1, "rec_bytes": 0}
HANDSHAKE_SUMMARY = {
    "packets": 3,
    "skipped": {},
    "timestamps_created": 2,
    "timestamps_matched": 2,
    "timestamps_expired": 0,
    "timestamps_table_full": 0,
    "timestamps_capped": 0,
    "flows_created": 1,
    "flows_closed": 0,
    "flows_expired": 0,
    "flows_table_full": 0,
    "rtt_events": 2,
    "sampling_raised": 0,
    "sampling_relaxed": 0,
    "timeout_shortened": 0,
    "timeout_restored": 0,
    "timestamps_grown": 0,
    "flows_grown": 0,
}
HANDSHAKE_SUMMARY_TEXT = (
    "Summary: 3 packets, 2 RTT events\n"
    "  skipped:    0\n"
    "  timestamps: 2 created, 2 matched, 0 expired, 0 refused (table full)\n"
    "  flows:      1 created, 0 closed, 0 expired, 0 refused (table full)\n"
)


def test_handshake_jsonl() -> None:
    result = run("--read", HANDSHAKE, "-s", "-r", "0", "-F", "jsonl")
    assert result.code == 0
    assert [json.loads(line) for line in result.out.splitlines()] == [
        {
            "timestamp": 1418145369924505488,
            **HANDSHAKE_FLOW,
            "flow_event": "opening",
            "reason": "SYN",
            "triggered_by": "dest",
        },
        {
            "timestamp": 1418145370052027262,
            **HANDSHAKE_FLOW,
            "rtt": 127521774,
            "min_rtt": 127521774,
            **SIZES,
            "match_on_egress": False,
        },
        {
            "timestamp": 1418145370052027262,
            **HANDSHAKE_BACK,
            "flow_event": "opening",
            "reason": "SYN-ACK",
            "triggered_by": "dest",
        },
        {
            "timestamp": 1418145370052115157,
            **HANDSHAKE_BACK,
            "rtt": 87895,
            "min_rtt": 87895,
            **SIZES,
            "match_on_egress": False,
        },
        {"summary": HANDSHAKE_SUMMARY, "final": True},
    ]
    # Compact objects, ePPing's field order.
    assert result.out.splitlines()[1] == (
        '{"timestamp":1418145370052027262,"src_ip":"137.116.81.94","src_port":80,'
        '"dest_ip":"131.155.215.69","dest_port":46656,"protocol":"TCP","rtt":127521774,'
        '"min_rtt":127521774,"sent_packets":1,"sent_bytes":0,"rec_packets":1,"rec_bytes":0,'
        '"match_on_egress":false}'
    )


def test_handshake_ppviz() -> None:
    result = run("--read", HANDSHAKE, "-s", "-r", "0", "-F", "ppviz")
    assert result.code == 0
    assert result.out.splitlines() == [
        "1418145370.052027262 0.127521774 0.127521774 137.116.81.94:80+131.155.215.69:46656",
        "1418145370.052115157 0.000087895 0.000087895 131.155.215.69:46656+137.116.81.94:80",
    ]


def test_handshake_machine() -> None:
    result = run("--read", HANDSHAKE, "-s", "-r", "0", "-m")
    assert result.code == 0
    assert result.out.splitlines() == [
        "1418145370.052027 0.127522 0.127522 0 0 0 137.116.81.94:80+131.155.215.69:46656",
        "1418145370.052115 0.000088 0.000088 0 0 0 131.155.215.69:46656+137.116.81.94:80",
    ]


def test_handshake_standard_in_utc(utc: None) -> None:
    result = run("--read", HANDSHAKE, "-s", "-r", "0")
    assert result.code == 0
    assert result.out.splitlines() == [
        "17:16:09.924505488 TCP 137.116.81.94:80+131.155.215.69:46656 opening due to SYN from dest",
        "17:16:10.052027262 127.522 ms 127.522 ms TCP 137.116.81.94:80+131.155.215.69:46656",
        "17:16:10.052027262 TCP 131.155.215.69:46656+137.116.81.94:80 opening due to SYN-ACK "
        "from dest",
        "17:16:10.052115157 0.087895 ms 0.087895 ms TCP 131.155.215.69:46656+137.116.81.94:80",
    ]


def test_standard_format_uses_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "XXX-2")  # POSIX: two hours east of UTC, no tz database
    time.tzset()
    try:
        result = run("--read", HANDSHAKE, "-s", "-r", "0")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert [line[:18] for line in result.out.splitlines()] == [
        "19:16:09.924505488",
        "19:16:10.052027262",
        "19:16:10.052027262",
        "19:16:10.052115157",
    ]


def test_handshake_without_syn_option_gives_no_rtt() -> None:
    result = run("--read", HANDSHAKE, "-r", "0", "-F", "jsonl")
    assert result.code == 0
    records = [json.loads(line) for line in result.out.splitlines()]
    assert not [r for r in records if "rtt" in r]
    assert records[-1]["summary"]["rtt_events"] == 0


# --- 8. the summary -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS), ids=str)
def test_summary_on_stderr(fmt: str) -> None:
    result = run("--read", HANDSHAKE, "-s", "-r", "0", *FORMATS[fmt])
    assert result.code == 0
    assert result.err == HANDSHAKE_SUMMARY_TEXT


def test_summary_is_the_last_json_element() -> None:
    records, _ = read_capture(HANDSHAKE)
    result = run("--read", HANDSHAKE, "-s", "-r", "0", "-F", "json")
    document = json.loads(result.out)
    assert document[-1] == {"summary": HANDSHAKE_SUMMARY, "final": True}
    assert document[-1]["summary"]["packets"] == len(records)
    assert [next(iter(r)) for r in document[:-1]] == ["timestamp"] * 4
    assert result.out.splitlines()[-1] == "]"


def test_empty_capture() -> None:
    for path in (PCAPS / "tcpdump__empty.pcap", PCAPS / "tcpdump__empty.pcapng"):
        result = run("--read", path, "-F", "json")
        assert result.code == 0
        assert json.loads(result.out) == [{"summary": Counters().as_dict(), "final": True}]
        assert Counters().as_dict() == {**dict.fromkeys(HANDSHAKE_SUMMARY, 0), "skipped": {}}


# --- 9. the reader of the output goes away --------------------------------------------


@pytest.mark.parametrize("fmt", ["standard", "jsonl"])
def test_broken_pipe_after_one_line(fmt: str) -> None:
    """`pping --read FILE | head -1`: a small pipe and one line read guarantee that pping
    still has output to write when the reading end is closed."""
    expected = run("--read", PING, "-C", "-r", "0", "-F", fmt).out
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
        proc = spawn("--read", PING, "-C", "-r", "0", "-F", fmt, stdout=write_end)
    finally:
        os.close(write_end)
    line = b""
    with os.fdopen(read_end, "rb", buffering=0) as reader:
        while not line.endswith(b"\n"):
            byte = reader.read(1)
            assert byte, "pping wrote no complete line"
            line += byte
    assert len(expected) > 4096 + len(line)
    code, _, err = finish(proc)
    assert line.decode() == expected.splitlines(keepends=True)[0]
    assert code == 0, err
    assert "Traceback" not in err
    assert "Exception ignored" not in err
