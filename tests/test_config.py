"""The clean-up rules' safe ages (config.py): below them nothing can be removed."""

from __future__ import annotations

import pytest

from pping.config import (
    NS_PER_MS,
    direction_is_old,
    direction_safe_age,
    timestamp_is_stale,
    timestamp_safe_age,
)

SRTTS = [0, 1, NS_PER_MS, 25 * NS_PER_MS, 300 * NS_PER_MS, 10**10]


@pytest.mark.parametrize("divisor", [1, 2, 8, 64, 1024])
def test_no_timestamp_is_stale_up_to_the_safe_age(divisor: int) -> None:
    safe = timestamp_safe_age(divisor)
    for srtt in SRTTS:
        for age in (0, safe // 2, safe):
            assert not timestamp_is_stale(age, srtt, divisor)
    # The bound is tight: just above it some direction's timestamp goes.
    assert any(timestamp_is_stale(safe + 1, srtt, divisor) for srtt in SRTTS)


@pytest.mark.parametrize("divisor", [1, 2, 8, 64, 1024])
def test_no_direction_is_old_up_to_the_safe_age(divisor: int) -> None:
    safe = direction_safe_age(divisor)
    for waiting in (False, True):
        for icmp in (False, True):
            for age in (0, safe // 2, safe):
                assert not direction_is_old(age, waiting, icmp, divisor)
    assert direction_is_old(safe + 1, True, True, divisor)
