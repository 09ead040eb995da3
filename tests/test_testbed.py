"""The live test bed: namespaces come and go cleanly, and the delay relay delays truly.

Needs root (namespaces, veth, AF_PACKET); skipped otherwise. About 15 s in all.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from pping import testbed
from pping.testbed import TcpInfo, Testbed, TestbedError, ping, tcp_bulk

REASON = testbed.unavailable_reason()
pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(REASON is not None, reason=REASON or ""),
]
needs_ping = pytest.mark.skipif(
    shutil.which("ping") is None,
    reason="the system ping is missing (Debian: apt-get install iputils-ping)",
)

ONE_WAY_MS = 7.5
RATE_BPS = 20e6


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True)
    return {link["ifname"] for link in json.loads(out.stdout)}


def test_namespaces_created_and_removed() -> None:
    links_before = root_links()
    with Testbed(delay_ms=1.0) as tb:
        names = tb.namespaces
        assert len(names) == 3 and len(set(names)) == 3
        assert set(names) <= set(testbed.list_namespaces())
        assert tb.relay is not None
        out = tb.run(tb.relay, ["ip", "-br", "link"]).stdout
        assert "to_client" in out and "to_server" in out
        addrs = tb.run(tb.client, ["ip", "-br", "addr", "show", "eth0"]).stdout
        assert "198.18.0.1/24" in addrs and "fd00:198:18::1/64" in addrs
        assert "tentative" not in tb.run(tb.client, ["ip", "addr"]).stdout  # nodad
        assert all(not any(state.values()) for state in tb.offload_state.values())
        assert root_links() == links_before  # the veths live only inside the namespaces
        relay = tb._relay_proc
        assert relay is not None and relay.proc.poll() is None
    assert not set(names) & set(testbed.list_namespaces())
    assert root_links() == links_before
    assert relay.proc.poll() is not None  # the relay process is gone too


def test_removed_after_exception_in_block() -> None:
    with pytest.raises(RuntimeError, match="boom"), Testbed(delay_ms=1.0) as tb:
        names = tb.namespaces
        relay = tb._relay_proc
        raise RuntimeError("boom")
    assert not set(names) & set(testbed.list_namespaces())
    assert relay is not None and relay.proc.poll() is not None


def test_stale_namespaces_of_dead_processes_are_removed() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"pping-{dead.pid}-0-client"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in testbed.cleanup_stale()
        assert name not in testbed.list_namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_direct_variant_and_tcp_info_offsets_match_ss() -> None:
    """Two namespaces over one veth; our tcp_info decoding agrees with `ss -ti`."""
    with Testbed(relay=False) as tb:
        assert len(tb.namespaces) == 2 and tb.relay is None
        with pytest.raises(TestbedError):
            tb.relay_stats()
        listener = tb.socket(tb.server)
        listener.bind((tb.server.addr(), 0))
        listener.listen(1)
        client = tb.socket(tb.client)
        with listener, client:
            client.connect(listener.getsockname())
            conn, _ = listener.accept()
            with conn:
                for _ in range(20):  # a few round trips give rtt and min_rtt samples
                    client.sendall(b"x" * 1000)
                    conn.recv(4096)
                    conn.sendall(b"y")
                    client.recv(16)
                time.sleep(0.05)
                info = TcpInfo.of(client)
                ss = tb.run(tb.client, ["ss", "-tni", "state", "established"]).stdout
        assert info.timestamps and info.snd_mss == 1448 and info.bytes_acked == 20001
        rtt, rttvar = (float(x) for x in _ss_field(ss, "rtt").split("/"))
        assert info.rtt_us == round(rtt * 1000) and info.rttvar_us == round(rttvar * 1000)
        assert info.min_rtt_us == round(float(_ss_field(ss, "minrtt")) * 1000)
        assert int(_ss_field(ss, "bytes_acked")) == info.bytes_acked
        assert int(_ss_field(ss, "segs_out")) == info.segs_out


def _ss_field(ss: str, key: str) -> str:
    for word in ss.split():
        if word.startswith(key + ":"):
            return word.split(":", 1)[1]
    raise AssertionError(f"no {key} in ss output: {ss}")


@pytest.fixture(scope="module")
def delayed() -> Iterator[Testbed]:
    with Testbed(delay_ms=ONE_WAY_MS) as tb:
        yield tb


@needs_ping
@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_relay_delay_seen_by_ping(
    delayed: Testbed, ipv6: bool, record_property: Callable[[str, object], None]
) -> None:
    delayed.reset_relay_stats()
    result = ping(delayed, count=30, interval=0.02, ipv6=ipv6)
    stats = delayed.relay_stats()
    record_property("ping_median_ms", result.median_ms)
    record_property("relay_lateness_p99_us", stats.lateness.p99_us)
    print(f"ping {'v6' if ipv6 else 'v4'}: median {result.median_ms} ms; {stats.lateness}")
    assert result.received == result.transmitted == 30
    assert 2 * ONE_WAY_MS <= result.median_ms <= 2 * ONE_WAY_MS + 1.0
    assert min(result.rtts_ms) >= 2 * ONE_WAY_MS
    c2s, s2c = stats.directions["client_to_server"], stats.directions["server_to_client"]
    assert c2s.frames >= 30 and s2c.frames >= 30
    assert stats.lateness.count == stats.frames
    assert 0 < stats.lateness.p50_us <= stats.lateness.p99_us < 2000


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_relay_delay_seen_by_tcp(
    delayed: Testbed, ipv6: bool, record_property: Callable[[str, object], None]
) -> None:
    delayed.reset_relay_stats()
    (conn,) = tcp_bulk(delayed, seconds=3.0, rate_bps=RATE_BPS, ipv6=ipv6)
    stats = delayed.relay_stats()
    record_property("min_rtt_us", conn.sender.min_rtt_us)
    record_property("throughput_bps", conn.throughput_bps)
    record_property("relay_lateness_p99_us", stats.lateness.p99_us)
    print(
        f"tcp {'v6' if ipv6 else 'v4'}: min_rtt {conn.sender.min_rtt_us} us, "
        f"srtt {conn.sender.rtt_us} us, {conn.throughput_bps / 1e6:.2f} Mbit/s, "
        f"retrans {conn.sender.total_retrans}; relay {stats.frames} frames, {stats.lateness}"
    )
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    assert socket.inet_pton(family, conn.server[0])  # the address family asked for
    assert conn.sender.timestamps
    assert conn.bytes_received == conn.bytes_sent == conn.sender.bytes_acked - 1
    assert 0.85 * RATE_BPS <= conn.throughput_bps <= 1.05 * RATE_BPS
    assert 2 * ONE_WAY_MS * 1000 <= conn.sender.min_rtt_us < 2 * ONE_WAY_MS * 1000 + 2000
    c2s = stats.directions["client_to_server"]
    assert c2s.bytes >= conn.bytes_sent  # every data byte crossed the relay
    assert c2s.oversize == 0 and c2s.dropped == 0  # offloads are really off
    assert stats.kernel_timestamps > 0.99 * stats.frames
    assert 0 < stats.lateness.p50_us <= stats.lateness.p99_us < 2000


@needs_ping
def test_asymmetric_delay() -> None:
    with Testbed(delay_ms=(10.0, 2.0)) as tb:
        result = ping(tb, count=10, interval=0.02)
        stats = tb.relay_stats()
    assert 12.0 <= result.median_ms <= 13.0
    assert stats.directions["client_to_server"].delay_ms == 10.0
    assert stats.directions["server_to_client"].delay_ms == 2.0
