"""Requests in flight per key: in this process, or in Redis so that a key's limit holds across replicas.

In Redis each key has a sorted set of the requests it holds, scored by when their lease ends.
A replica renews the leases of its own requests while they run (all of them in one call), so a
replica that dies frees its places within one lease, and a request that ends frees its place at
once. Redis's own clock decides expiry, so replicas whose clocks differ still agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Coroutine
from typing import Any, Protocol

from app._redis import RedisLink, RedisUnavailable, Script
from app.quota._windows import STORE_TIMEOUT, QuotaStoreUnavailable

__all__ = ["InFlight", "LocalInflight", "SharedInflight"]

log = logging.getLogger("poolgate.quota")

LEASE = 60.0  # seconds a place is held without renewal
PREFIX = "poolgate:inflight:"

_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "
_ACQUIRE = Script(_NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
""")
# KEYS: every key with places here; ARGV: lease, then per key the count of its tokens and the tokens.
_RENEW = Script(_NOW + """
local lease, at = tonumber(ARGV[1]), 2
for i = 1, #KEYS do
  local count = tonumber(ARGV[at])
  for j = 1, count do redis.call('ZADD', KEYS[i], 'XX', now + lease, ARGV[at + j]) end
  redis.call('PEXPIRE', KEYS[i], lease)
  at = at + count + 1
end
return 1
""")
_COUNT = Script(_NOW + "return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')")


class InFlight(Protocol):
    """A key's requests in flight: counted here, or across replicas in Redis."""

    async def acquire(self, key_id: str, limit: int) -> str | None:
        """A place, as a token to give back, or None when the key is at its limit."""
        ...

    async def release(self, key_id: str, token: str) -> None: ...

    async def count(self, key_id: str) -> int: ...

    async def close(self) -> None: ...


class LocalInflight:
    """Plain counters: one event loop, so no lock is needed."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    async def acquire(self, key_id: str, limit: int) -> str | None:
        count = self._counts.get(key_id, 0)
        if count >= limit:
            return None
        self._counts[key_id] = count + 1
        return key_id

    async def release(self, key_id: str, token: str) -> None:
        self._counts[key_id] = max(0, self._counts.get(key_id, 1) - 1)

    async def count(self, key_id: str) -> int:
        return self._counts.get(key_id, 0)

    async def close(self) -> None:
        return None


class SharedInflight:
    def __init__(self, url: str, lease: float = LEASE) -> None:
        self._link = RedisLink(url, timeout=STORE_TIMEOUT)
        self.lease_ms = int(lease * 1000)
        self._held: dict[str, set[str]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def _call(self, script: Script, keys: list[str], *args: str | int) -> int:
        try:
            reply = await self._link.run(script, keys, list(args))
        except RedisUnavailable as exc:
            raise QuotaStoreUnavailable(str(exc)) from exc
        assert isinstance(reply, int)
        return reply

    async def acquire(self, key_id: str, limit: int) -> str | None:
        token = secrets.token_hex(8)
        try:
            granted = await self._call(_ACQUIRE, [PREFIX + key_id], limit, self.lease_ms, token)
        except BaseException:
            # Redis may have taken the place before the answer was lost: give it back, unasked.
            self._in_background(self._remove(key_id, token))
            raise
        if not granted:
            return None
        self._held.setdefault(key_id, set()).add(token)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_forever(), name="poolgate-inflight-leases")
        return token

    async def release(self, key_id: str, token: str) -> None:
        held = self._held.get(key_id)
        if held is not None:
            held.discard(token)
            if not held:
                del self._held[key_id]
        await self._remove(key_id, token)

    async def _remove(self, key_id: str, token: str) -> None:
        try:
            await self._link.call("ZREM", PREFIX + key_id, token)
        except RedisUnavailable as exc:  # the lease runs out on its own
            log.debug("could not free a place in flight for key %s: %s", key_id, exc)
        except Exception as exc:
            log.warning("could not free a place in flight for key %s: %s", key_id, exc)

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def count(self, key_id: str) -> int:
        return await self._call(_COUNT, [PREFIX + key_id])

    async def _renew_forever(self) -> None:
        while self._held:
            await asyncio.sleep(self.lease_ms / 3000)
            keys: list[str] = []
            args: list[str | int] = [self.lease_ms]
            for key_id, tokens in self._held.items():
                keys.append(PREFIX + key_id)
                args += [len(tokens), *tokens]
            if not keys:
                continue
            try:
                await self._call(_RENEW, keys, *args)
            except Exception as exc:  # tried again next round, well before the leases run out
                log.warning("could not renew %d key(s)' places in flight: %s", len(keys), exc)

    async def close(self) -> None:
        tasks = [*self._background, *([self._renewer] if self._renewer is not None else [])]
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._link.close()
