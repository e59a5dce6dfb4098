"""Quota windows in a ``limits`` storage (the path for Redis Sentinel and Cluster URLs), here on the library's
in-memory storage: the same all-or-nothing windows as poolgate's own, and a URL it cannot use refused in one line."""
from __future__ import annotations

import pytest

from app.quota import QuotaService
from app.quota._limits import LimitsWindows, limits_storage
from app.settings import SettingsError


async def test_a_request_takes_every_window_or_none() -> None:
    windows = LimitsWindows(limits_storage("memory://"))
    minute_and_day = [(3, 60), (4, 86_400)]
    for _ in range(3):
        assert all(w.allowed for w in await windows.take_all("REQ:alice", minute_and_day, 1))
    refused = await windows.take_all("REQ:alice", minute_and_day, 1)
    assert not all(w.allowed for w in refused)
    assert [w.remaining for w in refused] == [0, 1]  # the day window kept its place: nothing was taken
    assert all(w.allowed for w in await windows.take_all("REQ:bob", minute_and_day, 1))  # per key


async def test_settling_past_the_limit_is_recorded_so_the_next_request_waits() -> None:
    windows = LimitsWindows(limits_storage("memory://"))
    await windows.take_all("TOK:alice", [(100, 60)], 90)
    [settled] = await windows.take_all("TOK:alice", [(100, 60)], 50, force=True)
    assert settled.remaining == 0
    [next_one] = await windows.take_all("TOK:alice", [(100, 60)], 1)
    assert not next_one.allowed and next_one.reset_in > 0


def test_a_limits_url_it_cannot_use_stops_the_start_in_one_line() -> None:
    with pytest.raises(SettingsError, match="POOLGATE_LIMITS_URL"):
        QuotaService.check_url("nosuchscheme://somewhere")
