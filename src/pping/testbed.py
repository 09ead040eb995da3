"""Live test bed: network namespaces, a user-space delay relay, and traffic.

Everything here needs root and iproute2; nothing is sent outside the namespaces this
module creates, and only 198.18.0.0/15 and fd00::/8 addresses are used.

Layout of ``Testbed(delay_ms=7.5)`` (the relay variant)::

    client ns                relay ns                         server ns
    eth0 198.18.0.1 ==veth== to_client  <-- relay -->  to_server ==veth== eth0 198.18.0.2
         fd00:198:18::1                 (AF_PACKET,                    fd00:198:18::2
                                         holds each frame
                                         delay_ms per direction)

The relay bridges the two relay-side interfaces at layer 2 (client and server share one
subnet; there is no default route, so traffic to any other address fails at once).
``Testbed(relay=False)`` joins client and server over a single veth pair instead.

Example::

    from pping.testbed import Testbed, ping, tcp_bulk

    with Testbed(delay_ms=7.5) as tb:          # adds 15 ms of round-trip time
        print(ping(tb, count=20, interval=0.02).median_ms)       # ~15.1
        (conn,) = tcp_bulk(tb, seconds=3, rate_bps=20e6)
        print(conn.sender.min_rtt_us, conn.throughput_bps)        # ~15100, ~2e7
        print(tb.relay_stats().lateness.p99_us)                   # relay's own lateness
        tb.run(tb.client, ["ip", "addr"])                         # any command in a ns

``python -m pping.testbed up --delay-ms 7.5`` sets a test bed up and holds it until
interrupted, for trying pping by hand.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import ctypes.util
import fcntl
import functools
import gc
import itertools
import json
import math
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from pping.errors import PpingError

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
PREFIX = "pping"
_NAME_RE = re.compile(r"^pping-(\d+)-(\d+)-(client|relay|server)$")

CLIENT_IPV4 = "198.18.0.1"
SERVER_IPV4 = "198.18.0.2"
CLIENT_IPV6 = "fd00:198:18::1"
SERVER_IPV6 = "fd00:198:18::2"
CLIENT_MAC = "02:70:70:00:00:01"
SERVER_MAC = "02:70:70:00:00:02"
RELAY_CLIENT_SIDE_MAC = "02:70:70:00:00:11"
RELAY_SERVER_SIDE_MAC = "02:70:70:00:00:12"

# Linux constants the socket module does not export (x86-64 and arm64 values).
_CLONE_NEWNET = 0x40000000
_SIOCETHTOOL = 0x8946
_ETHTOOL_SGRO = 0x2C
_ETHTOOL_SGSO = 0x24
_ETHTOOL_STSO = 0x1F
_ETHTOOL_STXCSUM = 0x17
_ETHTOOL_SSG = 0x19
_ETHTOOL_GGRO = 0x2B
_ETHTOOL_GGSO = 0x23
_ETHTOOL_GTSO = 0x1E
_ETHTOOL_GTXCSUM = 0x16
_ETH_P_ALL = 0x0003
_SOL_PACKET = 263
_PACKET_ADD_MEMBERSHIP = 1
_PACKET_MR_PROMISC = 1
_PACKET_OUTGOING = 4
_PACKET_IGNORE_OUTGOING = 23
_SO_RCVBUFFORCE = 33
_SO_SNDBUFFORCE = 32
_SO_TIMESTAMPNS = 35  # == SCM_TIMESTAMPNS (old, 64-bit timespec on 64-bit hosts)
_SO_MAX_PACING_RATE = 47
_PR_SET_TIMERSLACK = 29
_TCPI_OPT_TIMESTAMPS = 1

_LATENESS_BINS = 20_000  # 1 us bins up to 20 ms, then one overflow bin


class TestbedError(PpingError):
    """Setting up, using or tearing down the live test bed failed."""

    __test__ = False  # not a pytest test class


# --------------------------------------------------------------------------- helpers


def unavailable_reason() -> str | None:
    """Why a test bed cannot be built here (None when it can): tests skip with this."""
    if os.geteuid() != 0:
        return "the live test bed needs root (network namespaces, veth, AF_PACKET)"
    if shutil.which("ip") is None:
        return "the live test bed needs iproute2's `ip`"
    if not Path("/proc/self/ns/net").exists():
        return "this kernel has no network namespaces"
    return None


_libc: ctypes.CDLL | None = None


def _libc_handle() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def _enter_netns(name: str) -> None:
    """Move the calling OS thread (only it) into the named network namespace."""
    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc_handle().setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def spawn_in_netns(netns: str, fn: Callable[[], T], *, name: str | None = None) -> Future[T]:
    """Run ``fn`` in a new thread that has entered ``netns``; its result is the future's.

    setns affects only that thread, so the caller stays where it was. Sockets that ``fn``
    creates belong to ``netns`` for their whole life, whichever thread uses them later.
    """
    fut: Future[T] = Future()

    def body() -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            _enter_netns(netns)
            fut.set_result(fn())
        except BaseException as exc:
            fut.set_exception(exc)

    threading.Thread(target=body, name=name or f"netns:{netns}", daemon=True).start()
    return fut


def run_in_netns(netns: str, fn: Callable[[], T], timeout: float | None = None) -> T:
    """Run ``fn`` inside ``netns`` (in a helper thread) and return its result."""
    return spawn_in_netns(netns, fn).result(timeout)


def _ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise TestbedError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _write_sysctls(values: dict[str, str]) -> None:
    """Write /proc/sys keys; call inside a namespace thread (net.* keys are per netns)."""
    for key, value in values.items():
        Path("/proc/sys", *key.split(".")).write_text(value)


def _ethtool_value(sock: socket.socket, ifname: str, cmd: int, data: int = 0) -> int:
    buf = ctypes.create_string_buffer(struct.pack("II", cmd, data), 8)
    ifr = bytearray(struct.pack("16sP", ifname.encode(), ctypes.addressof(buf)).ljust(40, b"\0"))
    fcntl.ioctl(sock.fileno(), _SIOCETHTOOL, ifr)
    return int(struct.unpack("II", buf.raw)[1])


def set_offloads(ifname: str, enabled: bool) -> dict[str, bool]:
    """Switch GRO, GSO, TSO, TX checksumming and scatter-gather of ``ifname``.

    Must run inside the interface's namespace. Uses the ethtool ioctl directly, so the
    ethtool program is not needed. Returns the resulting state (name -> on).
    """
    setters = [
        ("gro", _ETHTOOL_SGRO),
        ("gso", _ETHTOOL_SGSO),
        ("tso", _ETHTOOL_STSO),
        ("tx-checksum", _ETHTOOL_STXCSUM),
        ("sg", _ETHTOOL_SSG),
    ]
    if enabled:
        setters.reverse()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _name, cmd in setters:
            try:
                _ethtool_value(s, ifname, cmd, int(enabled))
            except OSError as exc:
                if exc.errno not in (95, 22):  # EOPNOTSUPP, EINVAL: not adjustable here
                    raise
        getters = {
            "gro": _ETHTOOL_GGRO,
            "gso": _ETHTOOL_GGSO,
            "tso": _ETHTOOL_GTSO,
            "tx-checksum": _ETHTOOL_GTXCSUM,
        }
        return {name: bool(_ethtool_value(s, ifname, cmd)) for name, cmd in getters.items()}


def cleanup_stale(prefix: str = PREFIX) -> list[str]:
    """Delete namespaces left by test-bed processes that no longer exist (e.g. killed)."""
    removed: list[str] = []
    if not NETNS_DIR.is_dir():
        return removed
    for entry in NETNS_DIR.iterdir():
        m = _NAME_RE.match(entry.name)
        if not m or not entry.name.startswith(prefix + "-"):
            continue
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)
            continue  # owner alive (maybe another test run): not ours to touch
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _ip("netns", "del", entry.name, check=False)
        removed.append(entry.name)
    return removed


def list_namespaces() -> list[str]:
    """Names of all named network namespaces (``ip netns list``)."""
    out = _ip("netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


# --------------------------------------------------------------------------- relay stats


@dataclass(frozen=True)
class LatenessStats:
    """Relay lateness: actual minus intended hold time of each frame, in microseconds.

    Measured from the kernel's receive timestamp of the frame to just before its send,
    so it includes the relay's wake-up and receive latency (1 us resolution).
    """

    count: int
    mean_us: float
    stdev_us: float
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatenessStats:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class DirectionStats:
    """What the relay did in one direction."""

    delay_ms: float
    frames: int
    bytes: int
    dropped: int  # frames whose send failed
    oversize: int  # frames longer than the MTU allows (offloads left on?): dropped
    pending: int  # frames held at the time of the report
    max_queue: int
    lateness: LatenessStats


@dataclass(frozen=True)
class RelayStats:
    """A report of the delay relay; directions are 'client_to_server'/'server_to_client'."""

    elapsed_s: float
    realtime: bool
    kernel_timestamps: int  # frames timed by the kernel's receive timestamp
    user_timestamps: int  # frames timed at user-space receive (fallback)
    directions: dict[str, DirectionStats]
    lateness: LatenessStats  # both directions together
    receive_latency: LatenessStats  # kernel receive stamp to the relay reading the frame

    @property
    def frames(self) -> int:
        return sum(d.frames for d in self.directions.values())

    @property
    def bytes(self) -> int:
        return sum(d.bytes for d in self.directions.values())

    @classmethod
    def from_json(cls, text: str) -> RelayStats:
        d = json.loads(text)
        dirs = {
            name: DirectionStats(
                **{k: v for k, v in dd.items() if k != "lateness"},
                lateness=LatenessStats.from_dict(dd["lateness"]),
            )
            for name, dd in d["directions"].items()
        }
        return cls(
            elapsed_s=d["elapsed_s"],
            realtime=d["realtime"],
            kernel_timestamps=d["kernel_timestamps"],
            user_timestamps=d["user_timestamps"],
            directions=dirs,
            lateness=LatenessStats.from_dict(d["lateness"]),
            receive_latency=LatenessStats.from_dict(d["receive_latency"]),
        )


# --------------------------------------------------------------------------- relay process


class _Lateness:
    __slots__ = ("count", "hist", "max_ns", "sum_ns", "sumsq_us")

    def __init__(self) -> None:
        self.hist = [0] * (_LATENESS_BINS + 1)
        self.count = 0
        self.sum_ns = 0
        self.sumsq_us = 0.0
        self.max_ns = 0

    def add(self, lat_ns: int) -> None:
        if lat_ns < 0:
            lat_ns = 0
        b = lat_ns // 1000
        self.hist[b if b < _LATENESS_BINS else _LATENESS_BINS] += 1
        self.count += 1
        self.sum_ns += lat_ns
        self.sumsq_us += (lat_ns / 1000.0) ** 2
        if lat_ns > self.max_ns:
            self.max_ns = lat_ns

    def merged(self, other: _Lateness) -> _Lateness:
        out = _Lateness()
        out.hist = [a + b for a, b in zip(self.hist, other.hist, strict=True)]
        out.count = self.count + other.count
        out.sum_ns = self.sum_ns + other.sum_ns
        out.sumsq_us = self.sumsq_us + other.sumsq_us
        out.max_ns = max(self.max_ns, other.max_ns)
        return out

    def _quantile(self, q: float) -> float:
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for b, n in enumerate(self.hist):
            seen += n
            if seen >= rank:
                # upper edge of the 1 us bin (conservative), overflow bin -> the max
                return self.max_ns / 1000.0 if b == _LATENESS_BINS else float(b + 1)
        return self.max_ns / 1000.0

    def report(self) -> dict[str, float]:
        mean = self.sum_ns / 1000.0 / self.count if self.count else 0.0
        var = self.sumsq_us / self.count - mean * mean if self.count else 0.0
        return {
            "count": self.count,
            "mean_us": round(mean, 3),
            "stdev_us": round(math.sqrt(max(var, 0.0)), 3),
            "p50_us": self._quantile(0.50),
            "p90_us": self._quantile(0.90),
            "p99_us": self._quantile(0.99),
            "p999_us": self._quantile(0.999),
            "max_us": self.max_ns / 1000.0,
        }


class _Direction:
    __slots__ = (
        "bytes",
        "delay_ns",
        "dropped",
        "frames",
        "label",
        "lat",
        "max_queue",
        "oversize",
        "queue",
        "rx",
        "tx",
    )

    def __init__(self, label: str, rx: socket.socket, tx: socket.socket, delay_ns: int) -> None:
        self.label = label
        self.rx = rx
        self.tx = tx
        self.delay_ns = delay_ns
        self.queue: deque[tuple[int, bytes]] = deque()
        self.reset()

    def reset(self) -> None:
        self.frames = 0
        self.bytes = 0
        self.dropped = 0
        self.oversize = 0
        self.max_queue = len(self.queue)
        self.lat = _Lateness()

    def report(self) -> dict[str, Any]:
        return {
            "delay_ms": self.delay_ns / 1e6,
            "frames": self.frames,
            "bytes": self.bytes,
            "dropped": self.dropped,
            "oversize": self.oversize,
            "pending": len(self.queue),
            "max_queue": self.max_queue,
            "lateness": self.lat.report(),
        }


def _open_packet_socket(ifname: str) -> socket.socket:
    # Protocol 0 at creation: the socket receives nothing until bound to its interface.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    with contextlib.suppress(OSError):  # since 4.20; we also check pkttype per frame
        s.setsockopt(_SOL_PACKET, _PACKET_IGNORE_OUTGOING, 1)
    for force, plain in ((_SO_RCVBUFFORCE, socket.SO_RCVBUF), (_SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            s.setsockopt(socket.SOL_SOCKET, force, 8 << 20)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, plain, 8 << 20)
    s.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    s.bind((ifname, _ETH_P_ALL))
    ifindex = socket.if_nametoindex(ifname)
    mreq = struct.pack("iHH8s", ifindex, _PACKET_MR_PROMISC, 0, b"")
    s.setsockopt(_SOL_PACKET, _PACKET_ADD_MEMBERSHIP, mreq)
    return s


def _realtime_minus_monotonic() -> int:
    best = None
    for _ in range(3):
        a = time.monotonic_ns()
        r = time.clock_gettime_ns(time.CLOCK_REALTIME)
        b = time.monotonic_ns()
        if best is None or b - a < best[0]:
            best = (b - a, r - (a + b) // 2)
    assert best is not None
    return best[1]


def _relay_main(
    if_a: str,
    if_b: str,
    delay_ab_ns: int,
    delay_ba_ns: int,
    mtu: int,
    realtime: bool,
) -> int:
    """The relay process: forwards frames both ways between two interfaces, delayed.

    Control on stdin, one command a line: ``stats`` (print a JSON report), ``reset``
    (zero the counters), ``stop`` or end of file (print the final report and exit).
    Prints ``ready`` once both sockets are bound.
    """
    gc.disable()  # the loop makes no reference cycles; a collection would be a stall
    libc = _libc_handle()
    libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)  # wake as close to the deadline as possible
    is_rt = False
    if realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
            is_rt = True
        except OSError:
            pass
    sa = _open_packet_socket(if_a)
    sb = _open_packet_socket(if_b)
    ab = _Direction("client_to_server", sa, sb, delay_ab_ns)
    ba = _Direction("server_to_client", sb, sa, delay_ba_ns)
    dirs = (ab, ba)
    by_fd = {sa.fileno(): ab, sb.fileno(): ba}
    ctl = sys.stdin.fileno()
    os.set_blocking(ctl, False)
    out = sys.stdout
    bufsize = max(2048, mtu + 64)
    ancsize = socket.CMSG_SPACE(16)
    dontwait = socket.MSG_DONTWAIT
    trunc = socket.MSG_TRUNC
    sol_socket = socket.SOL_SOCKET
    mono = time.monotonic_ns
    offset = _realtime_minus_monotonic()
    next_offset = mono() + 1_000_000_000
    counts = {"kernel": 0, "user": 0}
    rx_lat = _Lateness()
    started = mono()
    ctl_buf = b""

    def report() -> str:
        lat = ab.lat.merged(ba.lat)
        return json.dumps(
            {
                "elapsed_s": (mono() - started) / 1e9,
                "realtime": is_rt,
                "kernel_timestamps": counts["kernel"],
                "user_timestamps": counts["user"],
                "directions": {d.label: d.report() for d in dirs},
                "lateness": lat.report(),
                "receive_latency": rx_lat.report(),
            }
        )

    out.write("ready\n")
    out.flush()
    rlist = [sa.fileno(), sb.fileno(), ctl]
    while True:
        now = mono()
        timeout_ns = -1
        for d in dirs:
            q = d.queue
            while q and q[0][0] <= now:
                due, frame = q.popleft()
                try:
                    d.tx.send(frame)
                except OSError:
                    d.dropped += 1
                    continue
                now = mono()
                d.lat.add(now - due)
                d.frames += 1
                d.bytes += len(frame)
            if q:
                wait = q[0][0] - now
                if timeout_ns < 0 or wait < timeout_ns:
                    timeout_ns = wait
        ready, _, _ = select.select(rlist, [], [], None if timeout_ns < 0 else timeout_ns / 1e9)
        for fd in ready:
            if fd == ctl:
                chunk = os.read(ctl, 4096)
                if not chunk:
                    out.write(report() + "\n")
                    out.flush()
                    return 0
                ctl_buf += chunk
                while b"\n" in ctl_buf:
                    line, ctl_buf = ctl_buf.split(b"\n", 1)
                    cmd = line.strip().decode()
                    if cmd == "stats":
                        out.write(report() + "\n")
                    elif cmd == "reset":
                        for d in dirs:
                            d.reset()
                        counts["kernel"] = counts["user"] = 0
                        rx_lat = _Lateness()
                        started = mono()
                        out.write("ok\n")
                    elif cmd == "stop":
                        out.write(report() + "\n")
                        out.flush()
                        return 0
                    else:
                        out.write(json.dumps({"error": f"unknown command {cmd!r}"}) + "\n")
                    out.flush()
                continue
            d = by_fd[fd]
            rx = d.rx
            q = d.queue
            delay = d.delay_ns
            for _ in range(256):  # bounded batch: due frames must not wait for a flood
                try:
                    data, anc, flags, addr = rx.recvmsg(bufsize, ancsize, dontwait)
                except BlockingIOError:
                    break
                if addr[2] == _PACKET_OUTGOING:
                    continue
                if flags & trunc:
                    d.oversize += 1
                    continue
                t_user = mono()
                t_rx = 0
                for level, kind, cdata in anc:
                    if level == sol_socket and kind == _SO_TIMESTAMPNS and len(cdata) >= 16:
                        sec, nsec = struct.unpack_from("qq", cdata)
                        t_rx = sec * 1_000_000_000 + nsec - offset
                # A kernel stamp must be recent and not in the future; else time it now.
                if t_user - 1_000_000_000 < t_rx <= t_user + 100_000:
                    counts["kernel"] += 1
                    rx_lat.add(t_user - t_rx)
                else:
                    t_rx = t_user
                    counts["user"] += 1
                q.append((t_rx + delay, data))
            if len(q) > d.max_queue:
                d.max_queue = len(q)
        if now >= next_offset:
            offset = _realtime_minus_monotonic()
            next_offset = now + 1_000_000_000


class _RelayProcess:
    """Parent-side handle of the relay process (started with ``ip netns exec``)."""

    def __init__(
        self,
        netns: str,
        if_a: str,
        if_b: str,
        delays_ms: tuple[float, float],
        mtu: int,
        rt: bool,
    ) -> None:
        pkg_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH", "")) if p)
        argv = [
            "ip", "netns", "exec", netns,
            sys.executable, "-m", "pping.testbed", "relay",
            "--if-a", if_a, "--if-b", if_b,
            "--delay-ab-ns", str(round(delays_ms[0] * 1e6)),
            "--delay-ba-ns", str(round(delays_ms[1] * 1e6)),
            "--mtu", str(mtu),
        ]  # fmt: skip
        if rt:
            argv.append("--realtime")
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        line = self._readline(10.0)
        if line.strip() != "ready":
            err = self._kill()
            raise TestbedError(f"delay relay did not start: {line.strip()} {err}".strip())
        self.final: RelayStats | None = None

    def _readline(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            return ""
        return self.proc.stdout.readline()

    def _kill(self) -> str:
        self.proc.kill()
        try:
            _, err = self.proc.communicate(timeout=5)
        except (subprocess.TimeoutExpired, ValueError):
            err = ""
        return (err or "").strip()

    def command(self, cmd: str) -> str:
        with self._lock:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().strip() if self.proc.stderr else ""
                raise TestbedError(f"delay relay exited with {self.proc.returncode}: {err}")
            assert self.proc.stdin is not None
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
            line = self._readline(10.0)
            if not line:
                raise TestbedError(f"delay relay did not answer {cmd!r}")
            return line

    def stats(self) -> RelayStats:
        if self.final is not None:
            return self.final
        return RelayStats.from_json(self.command("stats"))

    def reset(self) -> None:
        self.command("reset")

    def stop(self) -> RelayStats | None:
        if self.final is not None or self.proc.poll() is not None:
            return self.final
        try:
            self.final = RelayStats.from_json(self.command("stop"))
            self.proc.wait(timeout=5)
        except (TestbedError, OSError, ValueError, subprocess.TimeoutExpired):
            self._kill()
        finally:
            for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()
        return self.final


# --------------------------------------------------------------------------- test bed


@dataclass(frozen=True)
class Node:
    """One namespace of the test bed and its test interface."""

    role: str  # "client", "relay" or "server"
    netns: str
    ifname: str | None = None  # None for the relay, which has two (see Testbed)
    ipv4: str | None = None
    ipv6: str | None = None
    mac: str | None = None

    def addr(self, ipv6: bool = False) -> str:
        a = self.ipv6 if ipv6 else self.ipv4
        if a is None:
            raise TestbedError(f"{self.role} has no {'IPv6' if ipv6 else 'IPv4'} address")
        return a


_counter = itertools.count()
_live: weakref.WeakSet[Testbed] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for tb in list(_live):
        tb.close()


class Testbed:
    """Namespaces client/relay/server (or client/server), veths, addresses; a context manager.

    ``delay_ms`` is the relay's one-way delay, one number for both directions or a pair
    (client->server, server->client). ``relay=False`` joins client and server directly.
    ``offloads=False`` (the default) switches GRO/GSO/TSO/checksum offload off on every
    veth end and sets gso_max_segs 1 on client and server, so packets are MTU-sized with
    real checksums everywhere, tc hooks included (the relay needs that). ``realtime``
    runs the relay under SCHED_FIFO for less jitter. (It sleeps until each deadline; spinning
    instead was tried and dropped: with SCHED_FIFO it runs into RT throttling, without it
    CFS preempts it, and either way p99 lateness grew to milliseconds under load.)
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        delay_ms: float | tuple[float, float] = 0.0,
        *,
        relay: bool = True,
        mtu: int = 1500,
        offloads: bool = False,
        realtime: bool = True,
        static_neighbors: bool = True,
        prefix: str = PREFIX,
    ) -> None:
        if isinstance(delay_ms, tuple):
            self.delays_ms = (float(delay_ms[0]), float(delay_ms[1]))
        else:
            self.delays_ms = (float(delay_ms), float(delay_ms))
        if not relay and any(self.delays_ms):
            raise TestbedError("a delay needs the relay (relay=True)")
        if relay and offloads:
            raise TestbedError("the relay needs offloads off (GSO frames exceed the MTU)")
        self.with_relay = relay
        self.mtu = mtu
        self.offloads = offloads
        self.realtime = realtime
        self.static_neighbors = static_neighbors
        n = next(_counter)
        base = f"{prefix}-{os.getpid()}-{n}"
        self.client = Node("client", f"{base}-client", "eth0", CLIENT_IPV4, CLIENT_IPV6, CLIENT_MAC)
        self.server = Node("server", f"{base}-server", "eth0", SERVER_IPV4, SERVER_IPV6, SERVER_MAC)
        self.relay: Node | None = Node("relay", f"{base}-relay") if relay else None
        self.relay_ifnames = ("to_client", "to_server")
        self._created: list[str] = []
        self._relay_proc: _RelayProcess | None = None
        self._closed = False
        self.offload_state: dict[str, dict[str, bool]] = {}

    # -- lifecycle

    @property
    def nodes(self) -> list[Node]:
        return [self.client, *([self.relay] if self.relay else []), self.server]

    @property
    def namespaces(self) -> list[str]:
        return [n.netns for n in self.nodes]

    def __enter__(self) -> Testbed:
        cleanup_stale()
        _live.add(self)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _setup(self) -> None:
        for node in self.nodes:
            _ip("netns", "add", node.netns)
            self._created.append(node.netns)
        end_sysctls = {
            "net.ipv6.conf.all.accept_dad": "0",
            "net.ipv6.conf.default.accept_dad": "0",
            "net.ipv6.conf.default.router_solicitations": "0",
            "net.ipv4.tcp_no_metrics_save": "1",  # each connection starts afresh
        }
        run_in_netns(self.client.netns, lambda: _write_sysctls(end_sysctls), 10)
        run_in_netns(self.server.netns, lambda: _write_sysctls(end_sysctls), 10)
        c, s = self.client, self.server
        assert c.ifname and s.ifname
        if self.relay is not None:
            r = self.relay
            off = {
                "net.ipv6.conf.all.disable_ipv6": "1",  # a bridge: no stack of its own
                "net.ipv6.conf.default.disable_ipv6": "1",
            }
            run_in_netns(r.netns, lambda: _write_sysctls(off), 10)
            rc, rs = self.relay_ifnames
            _ip("link", "add", rc, "address", RELAY_CLIENT_SIDE_MAC, "mtu", str(self.mtu),
                "type", "veth", "peer", "name", c.ifname, "address", CLIENT_MAC,
                "mtu", str(self.mtu), "netns", c.netns, netns=r.netns)  # fmt: skip
            _ip("link", "add", rs, "address", RELAY_SERVER_SIDE_MAC, "mtu", str(self.mtu),
                "type", "veth", "peer", "name", s.ifname, "address", SERVER_MAC,
                "mtu", str(self.mtu), "netns", s.netns, netns=r.netns)  # fmt: skip
            ends = [(c.netns, c.ifname), (r.netns, rc), (r.netns, rs), (s.netns, s.ifname)]
        else:
            _ip("link", "add", c.ifname, "address", CLIENT_MAC, "mtu", str(self.mtu),
                "type", "veth", "peer", "name", s.ifname, "address", SERVER_MAC,
                "mtu", str(self.mtu), "netns", s.netns, netns=c.netns)  # fmt: skip
            ends = [(c.netns, c.ifname), (s.netns, s.ifname)]
        for ns, ifname in ends:
            state = run_in_netns(ns, functools.partial(set_offloads, ifname, self.offloads), 10)
            self.offload_state[f"{ns}/{ifname}"] = state
            if not self.offloads and any(state.values()):
                raise TestbedError(f"could not switch offloads off on {ns}/{ifname}: {state}")
        if not self.offloads:
            # TCP always builds GSO skbs and only segments them below the tc egress hook;
            # one segment per skb makes even that hook see wire-sized packets.
            for me in (c, s):
                assert me.ifname
                _ip("link", "set", me.ifname, "gso_max_segs", "1", netns=me.netns)
        for node in self.nodes:
            _ip("link", "set", "lo", "up", netns=node.netns)
        for ns, ifname in ends:
            _ip("link", "set", ifname, "up", netns=ns)
        for me, peer in ((c, s), (s, c)):
            assert me.ifname and peer.mac
            _ip("addr", "add", f"{me.ipv4}/24", "dev", me.ifname, netns=me.netns)
            _ip("addr", "add", f"{me.ipv6}/64", "dev", me.ifname, "nodad", netns=me.netns)
            if self.static_neighbors:  # no ARP/ND round trips inside measurements
                for addr in (peer.ipv4, peer.ipv6):
                    assert addr
                    _ip("neigh", "replace", addr, "lladdr", peer.mac, "dev", me.ifname,
                        "nud", "permanent", netns=me.netns)  # fmt: skip
        if self.relay is not None:
            self._relay_proc = _RelayProcess(
                self.relay.netns,
                *self.relay_ifnames,
                self.delays_ms,
                self.mtu,
                self.realtime,
            )

    def close(self) -> None:
        """Stop the relay and delete every namespace (with it, every veth). Idempotent."""
        if self._closed:
            return
        self._closed = True
        _live.discard(self)
        try:
            if self._relay_proc is not None:
                self._relay_proc.stop()
        finally:
            names = set(self._created)
            if NETNS_DIR.is_dir():  # also any that an interrupt kept from being recorded
                names.update(e.name for e in NETNS_DIR.iterdir() if e.name in self.namespaces)
            for ns in sorted(names):
                _ip("netns", "del", ns, check=False)
            self._created.clear()

    # -- doing things inside

    def relay_stats(self) -> RelayStats:
        """The relay's report so far (after close: its final report)."""
        if self._relay_proc is None:
            raise TestbedError("this test bed has no relay")
        return self._relay_proc.stats()

    def reset_relay_stats(self) -> None:
        """Zero the relay's counters and lateness histogram."""
        if self._relay_proc is None:
            raise TestbedError("this test bed has no relay")
        self._relay_proc.reset()

    def netns_argv(self, node: Node, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run inside ``node``'s namespace."""
        return ["ip", "netns", "exec", node.netns, *argv]

    def run(
        self,
        node: Node,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = 60,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside ``node``'s namespace and capture its output (text)."""
        proc = subprocess.run(
            self.netns_argv(node, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and proc.returncode != 0:
            raise TestbedError(
                f"{' '.join(argv)} in {node.role} exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc

    def popen(self, node: Node, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a command inside ``node``'s namespace; the caller owns and ends it."""
        return subprocess.Popen(self.netns_argv(node, argv), **kwargs)

    def call(self, node: Node, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run a callable in a thread inside ``node``'s namespace; return its result."""
        return run_in_netns(node.netns, fn, timeout)

    def spawn(self, node: Node, fn: Callable[[], T]) -> Future[T]:
        """Start a callable in a thread inside ``node``'s namespace."""
        return spawn_in_netns(node.netns, fn)

    def socket(
        self, node: Node, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM
    ) -> socket.socket:
        """A socket that lives in ``node``'s namespace (usable from any thread)."""
        return self.call(node, lambda: socket.socket(family, type), 10)


# --------------------------------------------------------------------------- traffic


@dataclass(frozen=True)
class TcpInfo:
    """The fields of Linux ``struct tcp_info`` we use (times in microseconds).

    Offsets are those of include/uapi/linux/tcp.h, stable since their introduction:
    tcpi_rtt at 68, tcpi_min_rtt at 148 (checked against ``ss -ti`` by the tests).
    """

    state: int
    options: int
    rto_us: int
    snd_mss: int
    rcv_mss: int
    unacked: int
    lost: int
    retrans: int
    pmtu: int
    rtt_us: int
    rttvar_us: int
    snd_ssthresh: int
    snd_cwnd: int
    rcv_rtt_us: int
    total_retrans: int
    pacing_rate: int  # bytes/s
    max_pacing_rate: int
    bytes_acked: int
    bytes_received: int
    segs_out: int
    segs_in: int
    notsent_bytes: int
    min_rtt_us: int
    data_segs_out: int
    delivery_rate: int  # bytes/s
    bytes_sent: int
    bytes_retrans: int

    _LAYOUT = (
        ("state", 0, "B"),
        ("options", 5, "B"),
        ("rto_us", 8, "I"),
        ("snd_mss", 16, "I"),
        ("rcv_mss", 20, "I"),
        ("unacked", 24, "I"),
        ("lost", 32, "I"),
        ("retrans", 36, "I"),
        ("pmtu", 60, "I"),
        ("rtt_us", 68, "I"),
        ("rttvar_us", 72, "I"),
        ("snd_ssthresh", 76, "I"),
        ("snd_cwnd", 80, "I"),
        ("rcv_rtt_us", 92, "I"),
        ("total_retrans", 100, "I"),
        ("pacing_rate", 104, "Q"),
        ("max_pacing_rate", 112, "Q"),
        ("bytes_acked", 120, "Q"),
        ("bytes_received", 128, "Q"),
        ("segs_out", 136, "I"),
        ("segs_in", 140, "I"),
        ("notsent_bytes", 144, "I"),
        ("min_rtt_us", 148, "I"),
        ("data_segs_out", 156, "I"),
        ("delivery_rate", 160, "Q"),
        ("bytes_sent", 200, "Q"),
        ("bytes_retrans", 208, "Q"),
    )

    @property
    def timestamps(self) -> bool:
        """Whether the connection negotiated TCP timestamps (TCPI_OPT_TIMESTAMPS)."""
        return bool(self.options & _TCPI_OPT_TIMESTAMPS)

    @classmethod
    def decode(cls, raw: bytes) -> TcpInfo:
        vals: dict[str, int] = {}
        for name, off, fmt in cls._LAYOUT:
            size = struct.calcsize(fmt)
            vals[name] = struct.unpack_from("=" + fmt, raw, off)[0] if off + size <= len(raw) else 0
        return cls(**vals)

    @classmethod
    def of(cls, sock: socket.socket) -> TcpInfo:
        return cls.decode(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 512))


@dataclass(frozen=True)
class BulkResult:
    """One paced TCP connection of ``tcp_bulk``: addresses, bytes, both ends' tcp_info."""

    client: tuple[str, int]
    server: tuple[str, int]
    bytes_sent: int
    bytes_received: int
    duration_s: float
    sender: TcpInfo  # client side, read once everything was acknowledged
    receiver: TcpInfo  # server side, read before it closed

    @property
    def throughput_bps(self) -> float:
        return self.bytes_received * 8 / self.duration_s if self.duration_s > 0 else 0.0


def tcp_bulk(
    testbed: Testbed,
    seconds: float,
    rate_bps: float,
    ipv6: bool = False,
    *,
    connections: int = 1,
    chunk: int = 16384,
) -> list[BulkResult]:
    """Client sends to server for ``seconds``, each connection paced to ``rate_bps`` of payload.

    Pacing is done twice: the application sends ``chunk`` bytes on a schedule, and the
    socket's SO_MAX_PACING_RATE (10 % above the rate) spreads segments out in between.
    TCP timestamps stay on (Linux's default). Returns one result per connection.
    """
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    srv_addr = testbed.server.addr(ipv6)
    listener = testbed.socket(testbed.server, family)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((srv_addr, 0))
    listener.listen(connections)
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def receive(conn: socket.socket) -> tuple[int, TcpInfo]:
        got = 0
        buf = bytearray(1 << 16)
        with conn:
            conn.settimeout(seconds + 30)
            while True:
                n = conn.recv_into(buf)
                if n == 0:
                    break
                got += n
            info = TcpInfo.of(conn)
        return got, info

    def serve() -> list[tuple[tuple[str, int], int, TcpInfo]]:
        results: list[tuple[tuple[str, int], int, TcpInfo]] = []
        with listener:
            accepted = [listener.accept() for _ in range(connections)]
        futs = []
        for conn, peer in accepted:
            fut: Future[tuple[int, TcpInfo]] = Future()
            threading.Thread(target=_into_future, args=(fut, receive, conn), daemon=True).start()
            futs.append((peer, fut))
        for peer, fut in futs:
            got, info = fut.result(seconds + 60)
            results.append(((peer[0], peer[1]), got, info))
        return results

    def send(sock: socket.socket) -> tuple[tuple[str, int], int, float, TcpInfo]:
        payload = b"\x5a" * chunk
        with sock:
            sock.settimeout(10)
            sock.connect((srv_addr, port))
            sock.setsockopt(socket.SOL_SOCKET, _SO_MAX_PACING_RATE, int(rate_bps * 1.1 / 8))
            local = sock.getsockname()
            interval = chunk * 8 / rate_bps
            start = time.monotonic()
            deadline = start + seconds
            next_at = start
            sent = 0
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                if next_at > now:
                    time.sleep(min(next_at, deadline) - now)
                    continue
                sock.sendall(payload)
                sent += chunk
                next_at += interval
            # wait until every byte is acknowledged, then read the sender's view
            until = time.monotonic() + 10
            info = TcpInfo.of(sock)
            while (info.unacked or info.notsent_bytes) and time.monotonic() < until:
                time.sleep(0.005)
                info = TcpInfo.of(sock)
            duration = time.monotonic() - start
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(30)
            while sock.recv(4096):
                pass
        return (local[0], local[1]), sent, duration, info

    server_fut: Future[list[tuple[tuple[str, int], int, TcpInfo]]] = Future()
    threading.Thread(target=_into_future, args=(server_fut, serve), daemon=True).start()
    client_futs: list[Future[tuple[tuple[str, int], int, float, TcpInfo]]] = []
    for _ in range(connections):
        sock = testbed.socket(testbed.client, family)
        fut: Future[tuple[tuple[str, int], int, float, TcpInfo]] = Future()
        threading.Thread(target=_into_future, args=(fut, send, sock), daemon=True).start()
        client_futs.append(fut)
    sent_results = [f.result(seconds + 60) for f in client_futs]
    recv_by_peer = {peer: (got, info) for peer, got, info in server_fut.result(seconds + 60)}
    results = []
    for local, sent, duration, info in sent_results:
        got, rinfo = recv_by_peer[local]
        results.append(
            BulkResult(
                client=local,
                server=(srv_addr, port),
                bytes_sent=sent,
                bytes_received=got,
                duration_s=duration,
                sender=info,
                receiver=rinfo,
            )
        )
    return results


def _into_future(fut: Future[Any], fn: Callable[..., Any], *args: Any) -> None:
    try:
        fut.set_result(fn(*args))
    except BaseException as exc:
        fut.set_exception(exc)


@dataclass(frozen=True)
class PingResult:
    """What the system ``ping`` printed: one RTT (ms) per reply received."""

    transmitted: int
    received: int
    rtts_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        if not self.rtts_ms:
            raise TestbedError("ping got no replies")
        s = sorted(self.rtts_ms)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


_PING_RTT = re.compile(r"icmp_seq=(\d+).*time=([0-9.]+) ms")
_PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")


def ping(
    testbed: Testbed,
    count: int,
    interval: float,
    ipv6: bool = False,
    *,
    size: int = 56,
    timeout: float = 2.0,
) -> PingResult:
    """Run the system ``ping`` from the client to the server; returns the RTTs it printed."""
    exe = shutil.which("ping")
    if exe is None:
        raise TestbedError("the system ping is missing (Debian: apt-get install iputils-ping)")
    argv = [
        exe, "-n", "-6" if ipv6 else "-4",
        "-c", str(count), "-i", f"{interval:g}", "-s", str(size), "-W", f"{timeout:g}",
        testbed.server.addr(ipv6),
    ]  # fmt: skip
    proc = testbed.run(testbed.client, argv, check=False, timeout=count * interval + timeout + 30)
    m = _PING_SUMMARY.search(proc.stdout)
    if m is None:
        raise TestbedError(f"ping failed ({proc.returncode}): {proc.stderr.strip()}")
    rtts = [float(t) for _, t in _PING_RTT.findall(proc.stdout)]
    return PingResult(int(m.group(1)), int(m.group(2)), rtts)


# --------------------------------------------------------------------------- command line


def _hold(tb: Testbed) -> None:
    c, s = tb.client, tb.server
    print(f"client  netns {c.netns}  dev {c.ifname}  {c.ipv4}  {c.ipv6}")
    if tb.relay is not None:
        print(f"relay   netns {tb.relay.netns}  one-way delay {tb.delays_ms} ms")
    print(f"server  netns {s.netns}  dev {s.ifname}  {s.ipv4}  {s.ipv6}")
    print(f"try: ip netns exec {c.netns} ping {s.ipv4}      (Ctrl-C removes everything)")
    sys.stdout.flush()
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pping.testbed", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="set up a test bed and hold it until interrupted")
    up.add_argument("--delay-ms", type=float, default=7.5, help="one-way delay (default 7.5)")
    up.add_argument("--direct", action="store_true", help="no relay: client<->server veth")
    rl = sub.add_parser("relay", help="(internal) the delay relay process")
    rl.add_argument("--if-a", required=True)
    rl.add_argument("--if-b", required=True)
    rl.add_argument("--delay-ab-ns", type=int, required=True)
    rl.add_argument("--delay-ba-ns", type=int, required=True)
    rl.add_argument("--mtu", type=int, default=1500)
    rl.add_argument("--realtime", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "relay":
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us via stdin
        return _relay_main(
            args.if_a,
            args.if_b,
            args.delay_ab_ns,
            args.delay_ba_ns,
            args.mtu,
            args.realtime,
        )
    reason = unavailable_reason()
    if reason:
        print(reason, file=sys.stderr)
        return 1

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    with Testbed(0.0 if args.direct else args.delay_ms, relay=not args.direct) as tb:
        _hold(tb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
