"""Which upstream account made which response, so a conversation that continues one goes back to it.

A response id (and the encrypted reasoning of a ``store: false`` conversation) belongs to the
account that made it: any other account answers ``previous_response_not_found``. Owners are
kept in memory (bounded, least recently used first out, with a time to live) and, when replicas
share a Redis, there too, so a follow-up that lands on another replica still finds its owner.
The key that made the response is kept with it: no other key may continue or read it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from app._redis import RedisLink, RedisUnavailable, RespError

__all__ = ["Owner", "ResponseOwners"]

log = logging.getLogger("poolgate.owners")

PREFIX = "poolgate:owner:"
KEPT = 200_000
TTL = 30 * 86_400.0  # OpenAI keeps stored responses 30 days
SHARE_WAIT = 1.0


class Owner(NamedTuple):
    upstream_id: str
    key_id: str
    model: str


class ResponseOwners:
    def __init__(self, link: RedisLink | None = None, *, kept: int = KEPT, ttl: float = TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._link = link
        self._kept = kept
        self._ttl = ttl
        self._clock = clock
        self._owners: OrderedDict[str, tuple[float, Owner]] = OrderedDict()
        self._pending: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._owners)

    async def remember(self, response_id: str, owner: Owner) -> None:
        """Known here at once; shared through Redis before this returns (one round trip, bounded), so the
        client cannot ask another replica before that replica can know."""
        if not response_id or len(response_id) > 200:
            return
        self._owners[response_id] = (self._clock() + self._ttl, owner)
        self._owners.move_to_end(response_id)
        while len(self._owners) > self._kept:
            self._owners.popitem(last=False)
        if self._link is not None:
            # Shielded: a client that leaves mid-answer does not stop the owner reaching the others.
            task = asyncio.get_running_loop().create_task(self._share(response_id, owner))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            try:
                await asyncio.wait_for(asyncio.shield(task), SHARE_WAIT)
            except TimeoutError:
                log.warning("sharing a response's owner through Redis took over %.1f s; going on", SHARE_WAIT)

    async def _share(self, response_id: str, owner: Owner) -> None:
        assert self._link is not None
        try:
            await self._link.call("SET", PREFIX + response_id, "|".join(owner), "PX", int(self._ttl * 1000))
        except (RedisUnavailable, RespError) as exc:  # this replica still knows; others fall back to routing
            log.warning("could not share a response's owner through Redis: %s", exc)

    async def owner(self, response_id: str) -> Owner | None:
        held = self._owners.get(response_id)
        if held is not None:
            if held[0] > self._clock():
                self._owners.move_to_end(response_id)
                return held[1]
            del self._owners[response_id]
        if self._link is None:
            return None
        try:
            value = await self._link.call("GET", PREFIX + response_id)
        except (RedisUnavailable, RespError) as exc:
            log.warning("could not read a response's owner from Redis: %s", exc)
            return None
        if not isinstance(value, bytes):
            return None
        parts = value.decode().split("|", 2)
        if len(parts) != 3:
            return None
        found = Owner(*parts)
        self._owners[response_id] = (self._clock() + self._ttl, found)
        return found

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=1)
        if self._link is not None:
            await self._link.close()
