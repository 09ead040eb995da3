"""Live demo: pping watching real traffic over a path of known delay.

``python -m pping.demo`` (as root, after ``make -C bpf``) builds a test bed
(src/pping/testbed.py: client and server namespaces joined through a relay that holds
every frame ``--delay-ms`` each way), starts ``pping -i eth0`` in the client's
namespace, runs a paced TCP transfer and a ping through the path, prints pping's
output as it comes (the standard format), stops pping with SIGINT and removes
everything. The last line compares the smallest RTT pping reported with the path's
configured round trip and with the sender's own view (tcp_info min_rtt).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import TextIO

from .errors import KernelError, PpingError
from .kernel.program import object_path
from .testbed import BulkResult, PingResult, Testbed, ping, tcp_bulk, unavailable_reason


def _unavailable() -> str | None:
    reason = unavailable_reason()
    if reason is not None:
        return reason
    try:
        object_path()
    except KernelError as error:
        return str(error)
    return None


def _rtt_ms(line: str) -> float | None:
    """The RTT of a standard-format RTT line (`time rtt ms min ms proto flow`)."""
    fields = line.split()
    if len(fields) >= 7 and fields[2] == "ms" and fields[4] == "ms":
        try:
            return float(fields[1])
        except ValueError:
            return None
    return None


def _relay(stream: TextIO, to: TextIO, rtts: list[float]) -> None:
    for line in stream:
        to.write(line)
        to.flush()
        rtt = _rtt_ms(line)
        if rtt is not None:
            rtts.append(rtt)


def run_demo(delay_ms: float, seconds: float, rate_mbps: float, rate_limit_ms: float) -> int:
    out = sys.stdout
    path_rtt_ms = 2 * delay_ms
    print(
        f"pping live demo: client 198.18.0.1 <-> relay ({delay_ms:g} ms each way, "
        f"{path_rtt_ms:g} ms round trip) <-> server 198.18.0.2",
        file=out,
    )
    with Testbed(delay_ms=delay_ms) as tb:
        command = [
            sys.executable, "-m", "pping.cli", "-i", "eth0", "-T", "-C",
            "-r", f"{rate_limit_ms:g}",
        ]  # fmt: skip
        print(f"$ ip netns exec {tb.client.netns} pping {' '.join(command[3:])}", file=out)
        out.flush()
        pping = tb.popen(
            tb.client, command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert pping.stdout is not None and pping.stderr is not None
        rtts: list[float] = []
        printer = threading.Thread(target=_relay, args=(pping.stdout, out, rtts), daemon=True)
        printer.start()
        try:
            time.sleep(1.0)  # loading and attaching take a fraction of a second
            if pping.poll() is not None:
                sys.stderr.write(pping.stderr.read())
                return pping.returncode or 1
            ping_result: list[PingResult] = []
            pinger = None
            if shutil.which("ping") is not None:
                count = max(int(seconds / 0.2), 1)

                def pinging() -> None:
                    ping_result.append(ping(tb, count=count, interval=0.2))

                pinger = threading.Thread(target=pinging, daemon=True)
                pinger.start()
            bulk: list[BulkResult] = tcp_bulk(tb, seconds=seconds, rate_bps=rate_mbps * 1e6)
            if pinger is not None:
                pinger.join(seconds + 30)
            time.sleep(0.3)  # the last replies
        finally:
            if pping.poll() is None:
                pping.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                pping.wait(20)
            if pping.poll() is None:
                pping.kill()
                pping.wait()
            printer.join(5)
            sys.stderr.write(pping.stderr.read())
            sys.stderr.flush()
    if not rtts:
        print("pping reported no RTT", file=out)
        return 1
    sender = bulk[0].sender
    print(
        f"min RTT: pping {min(rtts):.3f} ms, path {path_rtt_ms:.3f} ms (configured), "
        f"TCP sender {sender.min_rtt_us / 1000:.3f} ms (tcp_info min_rtt); "
        f"{len(rtts)} RTTs, {bulk[0].throughput_bps / 1e6:.1f} Mbit/s",
        file=out,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pping.demo", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--delay-ms", type=float, default=7.5, help="one-way delay (7.5)")
    parser.add_argument("--seconds", type=float, default=4.0, help="traffic duration (4)")
    parser.add_argument("--rate-mbps", type=float, default=20.0, help="TCP rate (20)")
    parser.add_argument(
        "-r", "--rate-limit", type=float, default=100.0, help="pping's -r in ms (100)"
    )
    args = parser.parse_args(argv)
    reason = _unavailable()
    if reason is not None:
        print(f"pping demo: {reason}", file=sys.stderr)
        return 1
    try:
        return run_demo(args.delay_ms, args.seconds, args.rate_mbps, args.rate_limit)
    except PpingError as error:
        print(f"pping demo: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
