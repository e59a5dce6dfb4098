"""Replicas' shared channel on a real redis-server of the test's own: health news, late joiners, outages."""

from __future__ import annotations

import asyncio
import time

from app.fleet import Fleet, announce
from tests.support.redis import RedisServer, redis_server_fixture  # noqa: F401 (the redis_server fixture)


def listener(url: str) -> tuple[Fleet, list[tuple[str, float, float]], list[str]]:
    fleet = Fleet(url)
    heard: list[tuple[str, float, float]] = []
    changes: list[str] = []
    fleet.on_health = lambda upstream, cooldown, ejected: heard.append((upstream, cooldown, ejected))
    fleet.on_change = changes.append
    return fleet, heard, changes


async def until(check, within: float = 2.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_health_news_reaches_other_replicas_and_late_joiners(redis_server: RedisServer) -> None:
    sender, _, _ = listener(redis_server.url)
    receiver, heard, changes = listener(redis_server.url)
    for fleet in (sender, receiver):
        await fleet.start()
    try:
        await asyncio.wait_for(receiver.connected.wait(), 2)
        sender.share_health("up-1", 30.0, 0.0)
        await until(lambda: heard)
        assert heard == [("up-1", 30.0, 0.0)]
        assert await announce(redis_server.url, "keys")
        await until(lambda: changes == ["keys"])

        await asyncio.sleep(0.5)
        late, late_heard, _ = listener(redis_server.url)
        await late.start()
        await until(lambda: late_heard)
        ((upstream, cooldown, _),) = late_heard
        assert upstream == "up-1"
        assert 28.0 < cooldown < 29.7  # what is left of the 30 s, by Redis's count, not a clock reading
        await late.close()
    finally:
        await sender.close()
        await receiver.close()


async def test_while_redis_is_away_the_listener_waits_quietly_and_catches_up(redis_server: RedisServer) -> None:
    sender, _, _ = listener(redis_server.url)
    receiver, heard, _ = listener(redis_server.url)
    await receiver.start()
    try:
        await asyncio.wait_for(receiver.connected.wait(), 2)
        redis_server.stop()
        await until(lambda: not receiver.connected.is_set())
        cpu = time.process_time()
        await asyncio.sleep(2.0)
        assert time.process_time() - cpu < 0.3  # backing off, not spinning
        redis_server.start()
        sender.share_health("up-2", 0.0, 60.0)  # may be said before the receiver is back: it is stored too
        await until(lambda: heard, within=8.0)
        assert heard[0][0] == "up-2"
    finally:
        await sender.close()
        await receiver.close()
