"""Usage rows written in batches by one background task: the request path only appends to a dict.

Each request is queued as ``started`` before its upstream call and finished after it; a
flush (every 200 ms, and on shutdown) writes what is queued in one transaction, so a
request that started and ended between two flushes is a single insert. Every process
heartbeats in ``instances``; rows still ``started`` from a process that fell silent
(a crash, a ``kill -9``) are marked ``interrupted`` by whichever process notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, Table, and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.usage._table import InstanceRow, UsageRow
from keys import write_transaction

__all__ = ["UsageRecorder", "spend_since"]

log = logging.getLogger("poolgate.usage")
USAGE: Table = UsageRow.__table__  # type: ignore[attr-defined]
INSTANCES: Table = InstanceRow.__table__  # type: ignore[attr-defined]
SILENT_AFTER = timedelta(seconds=15)
# Every column a finished row sets, as a started row has them, so one batch can mix both kinds.
_STARTED: dict[str, Any] = {
    "status": "started", "upstream": None, "http_status": None, "input_tokens": 0, "output_tokens": 0,
    "cached_tokens": 0, "reasoning_tokens": 0, "cost_usd": 0.0, "latency_ms": None, "ttfb_ms": None,
    "error": None, "finished_at": None,
}
HEARTBEAT_EVERY = 3.0
_LENGTHS: dict[str, int] = {
    c.name: length for c in USAGE.columns if isinstance(length := getattr(c.type, "length", None), int)}
_INT32 = {c.name for c in USAGE.columns if type(c.type) is Integer}
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _fit(row: dict[str, Any]) -> dict[str, Any]:
    """Values cut to what their columns hold. PostgreSQL refuses a longer string or an integer past
    32 bits (an upstream reporting nonsense token counts), and one refused row would hold back its
    whole batch at every retry; SQLite would store anything, so both now store the same."""
    fitted = dict(row)
    for name, value in row.items():
        if isinstance(value, str) and name in _LENGTHS:
            fitted[name] = value[: _LENGTHS[name]]
        elif isinstance(value, int) and name in _INT32:
            fitted[name] = min(max(value, _INT32_MIN), _INT32_MAX)
    return fitted


class UsageRecorder:
    def __init__(self, engine: AsyncEngine, *, interval: float = 0.2) -> None:
        self.engine = engine
        self.interval = interval
        self.instance = secrets.token_hex(8)
        self._started: dict[str, dict[str, Any]] = {}
        self._finished: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def open(self) -> None:
        now = datetime.now(UTC)
        async with write_transaction(self.engine) as conn:
            await conn.execute(INSTANCES.insert().values(id=self.instance, started_at=now, seen_at=now))
        await self.mark_interrupted()
        self._task = asyncio.create_task(self._run(), name="poolgate-usage")

    def started(self, request_id: str, values: dict[str, Any]) -> None:
        self._started[request_id] = {**_STARTED, "request_id": request_id, "instance": self.instance, **values}

    def finished(self, request_id: str, values: dict[str, Any]) -> None:
        self._finished[request_id] = values

    async def _run(self) -> None:
        beat = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)
            if self._stopping.is_set():
                return  # close() writes what is left
            try:
                await self.flush()
                beat += self.interval
                if beat >= HEARTBEAT_EVERY:
                    beat = 0.0
                    await self._heartbeat()
                    await self.mark_interrupted()
            except Exception as exc:  # kept in memory and tried again next round
                log.warning("writing usage failed, will retry: %s", exc)

    async def flush(self) -> int:
        """Write everything queued; on failure it stays queued for the next flush."""
        if not self._started and not self._finished:
            return 0
        started, finished = self._started, self._finished
        self._started, self._finished = {}, {}
        # A request that started and finished since the last flush is one insert. Both dicts stay
        # whole, so a failed write puts every start and finish back as it was.
        inserts = [_fit({**row, **finished[rid]} if rid in finished else row) for rid, row in started.items()]
        updates = [{"rid": rid, **_fit(values)} for rid, values in finished.items() if rid not in started]
        try:
            async with write_transaction(self.engine) as conn:
                if inserts:
                    await conn.execute(USAGE.insert(), inserts)
                if updates:
                    columns = sorted({k for row in updates for k in row if k != "rid"})
                    statement = update(USAGE).where(USAGE.c.request_id == bindparam("rid")).values(
                        {c: bindparam(c) for c in columns})
                    await conn.execute(statement, [{c: row.get(c) for c in ("rid", *columns)} for row in updates])
        except BaseException:  # a cancelled write too: nothing taken from the queue is lost
            self._started = {**started, **self._started}
            self._finished = {**finished, **self._finished}
            raise
        return len(inserts) + len(updates)

    async def _heartbeat(self) -> None:
        async with write_transaction(self.engine) as conn:
            await conn.execute(update(INSTANCES).where(INSTANCES.c.id == self.instance)
                               .values(seen_at=datetime.now(UTC)))

    async def mark_interrupted(self) -> int:
        """Rows left ``started`` by processes that stopped heartbeating are ``interrupted``."""
        cutoff = datetime.now(UTC) - SILENT_AFTER
        silent = select(INSTANCES.c.id).where(and_(INSTANCES.c.seen_at < cutoff, INSTANCES.c.id != self.instance))
        async with write_transaction(self.engine) as conn:
            result = await conn.execute(
                update(USAGE).where(USAGE.c.status == "started", USAGE.c.instance.in_(silent))
                .values(status="interrupted", finished_at=datetime.now(UTC))
            )
            await conn.execute(INSTANCES.delete().where(INSTANCES.c.id.in_(silent), ~INSTANCES.c.id.in_(
                select(USAGE.c.instance).where(USAGE.c.status == "started"))))
        count = int(result.rowcount or 0)
        if count:
            log.warning("marked %d usage row(s) interrupted: their process stopped without finishing them", count)
        return count

    async def close(self) -> None:
        """Stop the writer and flush what is left: a clean stop loses no row."""
        if self._task is not None:
            # Let a write under way end rather than cancel it halfway; a hung database gets 10 s.
            self._stopping.set()
            await asyncio.wait({self._task}, timeout=10)
            if not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        for _ in range(3):
            try:
                await self.flush()
                break
            except Exception as exc:
                log.error("final usage flush failed: %s", exc)
        with contextlib.suppress(Exception):
            async with write_transaction(self.engine) as conn:
                await conn.execute(INSTANCES.delete().where(INSTANCES.c.id == self.instance))


async def spend_since(engine: AsyncEngine, since: datetime) -> dict[str, float]:
    """USD spent per key since a moment, for budgets (one grouped query)."""
    from sqlalchemy import func

    query = (select(USAGE.c.key_id, func.coalesce(func.sum(USAGE.c.cost_usd), 0.0))
             .where(USAGE.c.started_at >= since).group_by(USAGE.c.key_id))
    async with engine.connect() as conn:
        return {row[0]: float(row[1]) for row in await conn.execute(query)}
