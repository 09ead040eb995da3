"""-a through both data paths: the kernel program's prefix maps (BPF_PROG_TEST_RUN)
must give exactly the output of the Python aggregator, record for record."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pping.cli import main
from test_aggregate import CAPTURE, pcap
from test_kernel_parity import CAPTURES, SYNTHETIC, _skip_reason, synthetic

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason())),
]

OPTION_SETS = {
    "default": ["-a", "1"],
    "both-protocols": ["-a", "1", "-T", "-C", "-s", "-r", "0"],
    "reverse-short-prefixes": ["-a", "2", "-4", "16", "-6", "64", "--aggregate-reverse"],
    "tiny-tables-timeout": ["-a", "1", "--max-prefixes", "3", "--aggregate-timeout", "1", "-C"],
    "one-prefix": ["-a", "3", "-4", "0", "-6", "0", "-T", "-C"],
    "bursts": ["-a", "1", "-r", "100", "--burst", "4", "-s"],  # one RTT per window
}


def outputs(path: Path, options: list[str]) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    results = []
    for datapath in ("python", "kernel"):
        out, err = io.StringIO(), io.StringIO()
        argv = ["--read", str(path), "-F", "jsonl", "--datapath", datapath, *options]
        code = main(argv, stdout=out, stderr=err)
        results.append((code, out.getvalue(), err.getvalue()))
    return results[0], results[1]


def assert_same(path: Path, options: list[str]) -> None:
    python, kernel = outputs(path, options)
    assert python == kernel


@pytest.mark.parametrize("options", list(OPTION_SETS), ids=str)
@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_test_captures(capture: Path, options: str) -> None:
    assert_same(capture, OPTION_SETS[options])


# Fewer option sets on the larger synthetic captures: the slowest tests of the suite.
SYNTHETIC_OPTION_SETS = ("default", "reverse-short-prefixes", "tiny-tables-timeout")


@pytest.mark.parametrize("options", SYNTHETIC_OPTION_SETS, ids=str)
@pytest.mark.parametrize("index", range(len(SYNTHETIC)), ids=lambda i: str(SYNTHETIC[i]))
def test_synthetic_captures(tmp_path: Path, index: int, options: str) -> None:
    path = tmp_path / "synthetic.pcap"
    path.write_bytes(synthetic(index))
    assert_same(path, OPTION_SETS[options])


@pytest.mark.parametrize("options", list(OPTION_SETS), ids=str)
def test_hand_built_capture(tmp_path: Path, options: str) -> None:
    path = tmp_path / "capture.pcap"
    path.write_bytes(pcap(CAPTURE))
    python, kernel = outputs(path, OPTION_SETS[options])
    assert python == kernel
    assert '"ip_prefix"' in kernel[1]
