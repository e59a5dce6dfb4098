"""What replicas tell each other through Redis: upstream health, and "the database changed".

The database stays the one source of truth, polled every sync interval; this channel only
makes news travel faster. An upstream that one replica sees rate-limited or failing is
cooled down or ejected on every replica within a second, and an admin change made with the
CLI wakes every replica's sync at once. Health is also kept as a Redis key that expires when
the cooldown does, so a replica that starts (or reconnects) late still learns it.

Times travel as durations ("cooling down for 12.5 s more"), never as clock readings, so
replicas whose clocks differ still agree. Redis being away never blocks a request: publishing
happens in the background with a short timeout, and the listener reconnects with backoff,
reloading what it missed each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import uuid
from collections.abc import Callable
from typing import Any

from app._redis import RedisAddress, RedisLink, RedisUnavailable, RespError, plain_redis_url, read_reply

__all__ = ["CHANNEL", "Fleet", "announce", "fleet_url"]

log = logging.getLogger("poolgate.fleet")

CHANNEL = "poolgate:events"
HEALTH_PREFIX = "poolgate:health:"
REPLICA_PREFIX = "poolgate:replica:"
SNAPSHOT_TTL_MS = 15_000
TIMEOUT = 1.0  # seconds for any one Redis call
PING_EVERY = 10.0  # seconds between pings on the subscription, to notice a silent disconnect


def fleet_url(limits_url: str) -> str | None:
    """The Redis that replicas share, taken from POOLGATE_LIMITS_URL; None when there is none."""
    return plain_redis_url(limits_url)


class Fleet:
    """This replica's end of the shared channel."""

    def __init__(self, url: str) -> None:
        self.instance = uuid.uuid4().hex
        self._address = RedisAddress(url)
        self._link = RedisLink(url, size=2, timeout=TIMEOUT)
        self.on_health: Callable[[str, float, float], None] | None = None
        """Called with (upstream id, seconds more cooling down, seconds more ejected)."""
        self.on_change: Callable[[str], None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()

    async def start(self, *, on_health: Callable[[str, float, float], None] | None = None,
                    on_change: Callable[[str], None] | None = None) -> None:
        """Listen for the other replicas' news: health with ``on_health``, admin changes with ``on_change``."""
        self.on_health = on_health or self.on_health
        self.on_change = on_change or self.on_change
        self._listener = asyncio.create_task(self._listen(), name="poolgate-fleet")

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=TIMEOUT)
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._link.close()

    # -- sending ----------------------------------------------------------------------------------

    def share_health(self, upstream_id: str, cooldown_in: float, ejected_in: float) -> None:
        """Tell the other replicas, in the background: seconds from now."""
        ttl_ms = math.ceil(max(cooldown_in, ejected_in) * 1000)
        if ttl_ms <= 0:
            return
        event = {"kind": "health", "origin": self.instance, "upstream": upstream_id,
                 "cooldown_in": cooldown_in, "ejected_in": ejected_in, "ttl_ms": ttl_ms}
        task = asyncio.create_task(self._publish_health(upstream_id, json.dumps(event), ttl_ms))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish_health(self, upstream_id: str, payload: str, ttl_ms: int) -> None:
        try:
            await self._link.call("SET", HEALTH_PREFIX + upstream_id, payload, "PX", ttl_ms)
            await self._link.call("PUBLISH", CHANNEL, payload)
        except (RedisUnavailable, RespError) as exc:  # the others find out for themselves, a little later
            log.warning("could not share upstream health through Redis: %s", exc)

    async def announce(self, what: str) -> bool:
        """Wake every replica's sync now (after an admin change made here)."""
        try:
            await self._link.call("PUBLISH", CHANNEL, json.dumps({"kind": "changed", "what": what}))
            return True
        except (RedisUnavailable, RespError) as exc:
            log.debug("could not announce the change through Redis: %s", exc)
            return False

    async def publish_snapshot(self, snapshot: dict[str, Any]) -> None:
        """This replica's live view of the pool, for the admin API's health page (expires if it dies)."""
        try:
            await self._link.call("SET", REPLICA_PREFIX + self.instance, json.dumps(snapshot), "PX", SNAPSHOT_TTL_MS)
        except (RedisUnavailable, RespError) as exc:
            log.debug("could not publish this replica's health: %s", exc)

    async def snapshots(self) -> list[dict[str, Any]]:
        """Every live replica's last snapshot."""
        found: list[dict[str, Any]] = []
        cursor: bytes | int = b"0"
        while True:
            reply = await self._link.call("SCAN", cursor, "MATCH", REPLICA_PREFIX + "*", "COUNT", 500)
            assert isinstance(reply, list)
            cursor, keys = reply
            for key in keys:
                payload = await self._link.call("GET", key)
                if isinstance(payload, bytes):
                    with contextlib.suppress(ValueError):
                        found.append(json.loads(payload))
            if cursor in (b"0", 0):
                return found

    # -- receiving --------------------------------------------------------------------------------

    async def _listen(self) -> None:
        backoff = 0.25
        while True:
            writer: asyncio.StreamWriter | None = None
            try:
                async with asyncio.timeout(TIMEOUT * 3):
                    reader, writer = await self._address.open()
                    writer.write(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(CHANNEL), CHANNEL.encode()))
                    await read_reply(reader)  # the subscription's confirmation
                    await self._load_health()
                self.connected.set()
                backoff = 0.25
                await self._read_events(reader, writer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                log.warning("replica events from Redis unavailable (%s); retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if writer is not None:
                    writer.close()

    async def _read_events(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Messages until the connection fails; a ping when quiet, so a silent loss is noticed."""
        while True:
            try:
                async with asyncio.timeout(PING_EVERY):
                    reply = await read_reply(reader)
            except TimeoutError:
                writer.write(b"*1\r\n$4\r\nPING\r\n")
                async with asyncio.timeout(TIMEOUT * 3):
                    reply = await read_reply(reader)
            if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                self.receive(reply[2])

    async def _load_health(self) -> None:
        """What other replicas said while this one was not listening."""
        cursor: bytes | int = b"0"
        while True:
            reply = await self._link.call("SCAN", cursor, "MATCH", HEALTH_PREFIX + "*", "COUNT", 500)
            assert isinstance(reply, list)
            cursor, keys = reply
            for key in keys:
                payload, left_ms = await self._link.call("GET", key), await self._link.call("PTTL", key)
                if isinstance(payload, bytes) and isinstance(left_ms, int) and left_ms > 0:
                    self.receive(payload, left_ms)
            if cursor in (b"0", 0):
                return

    def receive(self, payload: object, left_ms: int | None = None) -> None:
        """One event; ``left_ms`` is what remains of a stored event's time to live."""
        try:
            event: Any = json.loads(payload) if isinstance(payload, str | bytes) else None
            if not isinstance(event, dict) or event.get("origin") == self.instance:
                return
            if event.get("kind") == "health" and self.on_health is not None:
                elapsed = 0.0 if left_ms is None else max(0.0, (float(event["ttl_ms"]) - left_ms) / 1000)
                self.on_health(str(event["upstream"]), float(event["cooldown_in"]) - elapsed,
                               float(event["ejected_in"]) - elapsed)
            elif event.get("kind") == "changed" and self.on_change is not None:
                self.on_change(str(event.get("what", "")))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignored a malformed replica event: %s", exc)


async def announce(limits_url: str, what: str) -> bool:
    """After an admin change: wake every replica's sync now instead of at its next poll.

    Returns False when there is no Redis or it did not answer; the replicas' database poll
    picks the change up within the sync interval either way.
    """
    url = fleet_url(limits_url)
    if url is None:
        return False
    link = RedisLink(url, size=1, timeout=TIMEOUT)
    try:
        await link.call("PUBLISH", CHANNEL, json.dumps({"kind": "changed", "what": what}))
        return True
    except (RedisUnavailable, RespError) as exc:
        log.debug("could not announce the change through Redis: %s", exc)
        return False
    finally:
        await link.close()
