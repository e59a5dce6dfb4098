"""Usage rows written in batches by one background task: the request path only appends to a dict.

Each request is queued as ``started`` before its upstream call and finished after it; a flush
(every 25 ms while there is something to write, and on shutdown) writes what is queued in one
transaction, with the totals it adds to, so a request that started and ended between two flushes
is a single insert. Every process heartbeats in ``instances``; rows still ``started``
from a process that fell silent (a crash, a ``kill -9``) are marked ``interrupted`` by whichever
process notices.

Nothing is lost while the database refuses writes: rows wait in memory up to a bound, and past
it go to the spill file (``_spill``), replayed once the database takes writes again. A write
whose commit may have landed before its connection failed is retried without counting twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import Integer, Table, and_, bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app._db import write_transaction
from app.usage._rollup import UPSERTS, Rollups
from app.usage._spill import SpillFile
from app.usage._table import InstanceRow, UsageRow

__all__ = ["UsageRecorder"]

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
_FINISH = tuple(k for k in _STARTED if k != "finished_at")
HEARTBEAT_EVERY = 3.0
# Small batches often, not large ones seldom: preparing a batch runs on the event loop (about 4 us a row),
# and a request that arrives meanwhile waits for it. At 200 ms a flush under load held requests up to
# 2.4 ms (the p99 at one connection); at 25 ms, 1.3 ms, for the same CPU per request.
FLUSH_EVERY = 0.025
ORPHAN_SCAN_EVERY = 60.0
_CHUNK = 400  # ids per IN (...) list: well under any database's limit on bound parameters
_SLICE = 128  # rows prepared between two turns of the event loop (about half a millisecond)
_LENGTHS: dict[str, int] = {
    c.name: length for c in USAGE.columns if isinstance(length := getattr(c.type, "length", None), int)}
_INT32 = {c.name for c in USAGE.columns if type(c.type) is Integer}
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_LENGTH_ITEMS = tuple(_LENGTHS.items())
_INT32_NAMES = tuple(_INT32)


def _fit(row: dict[str, Any]) -> dict[str, Any]:
    """Values cut to what their columns hold. PostgreSQL refuses a longer string or an integer past
    32 bits (an upstream reporting nonsense token counts), and one refused row would hold back its
    whole batch at every retry; SQLite would store anything, so both now store the same."""
    fitted = row
    for name, limit in _LENGTH_ITEMS:
        value = row.get(name)
        if value.__class__ is str and len(value) > limit:
            if fitted is row:
                fitted = dict(row)
            fitted[name] = value[:limit]
    for name in _INT32_NAMES:
        value = row.get(name)
        if value.__class__ is int and not _INT32_MIN <= value <= _INT32_MAX:
            if fitted is row:
                fitted = dict(row)
            fitted[name] = min(max(value, _INT32_MIN), _INT32_MAX)
    return fitted


def _when(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


_COLUMNS = ("request_id", "key_id", "upstream", "model", "endpoint", "stream", "status", "http_status",
            "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "cost_usd", "latency_ms", "ttfb_ms",
            "error", "instance")
_NAMES = ", ".join((*_COLUMNS, "started_at", "finished_at"))
# Column names are this module's constants; every value is a bound parameter.
_INSERT_POSTGRES = (f"INSERT INTO usage ({_NAMES}) "  # noqa: S608
                    f"VALUES ({', '.join(f'${i}' for i in range(1, len(_COLUMNS) + 3))})")
_INSERT_SQLITE = (f"INSERT INTO usage ({_NAMES}) SELECT "  # noqa: S608
                  + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(_COLUMNS) + 2))
                  + " FROM json_each(?)")


_JSON_SQLITE = sqlite3.sqlite_version_info >= (3, 38)  # JSON functions built in; older: executemany
_SECOND: list[Any] = [-1, ""]


def _sqlite_moment(value: float | None) -> str | None:
    """A moment as SQLAlchemy stores a DateTime in SQLite (UTC, microseconds always written); the date and
    time of day are formatted once per second (a batch's rows mostly share a few)."""
    if value is None:
        return None
    second = int(value)
    if second != _SECOND[0]:
        _SECOND[0], _SECOND[1] = second, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
    return f"{_SECOND[1]}.{int((value - second) * 1_000_000):06d}"


async def _insert(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """The batch's new rows in one statement, without per-row statement compilation or type processing.

    On SQLite the rows go as one JSON array that SQLite itself unpacks (``json_each``): the writer
    thread binds one value and runs one statement with the GIL released. An ``executemany`` would take
    the GIL back for every row, and under load, with the event loop holding it, each of those waits
    cost up to the interpreter's switch interval: the writer fell behind at a few thousand rows a
    second and the queue grew without bound. On PostgreSQL, asyncpg's prepared ``executemany``.
    """
    style = conn.dialect.paramstyle
    if style == "qmark" and _JSON_SQLITE:
        values = []
        for count, row in enumerate(rows, 1):
            values.append((*(row.get(c) for c in _COLUMNS), _sqlite_moment(row["started_at"]),
                           _sqlite_moment(row.get("finished_at"))))
            if not count % _SLICE:
                await asyncio.sleep(0)
        await conn.exec_driver_sql(_INSERT_SQLITE, (msgspec.json.encode(values).decode(),))
    elif style == "numeric_dollar":
        await conn.exec_driver_sql(_INSERT_POSTGRES, [
            (*(row.get(c) for c in _COLUMNS), _when(row["started_at"]), _when(row.get("finished_at")))
            for row in rows])
    else:  # another driver: the portable way
        await conn.execute(USAGE.insert(), [_db_row(row) for row in rows])


async def _finish(conn: AsyncConnection, updates: dict[str, dict[str, Any]]) -> None:
    """Rows written as ``started`` in an earlier batch, finished: one statement on SQLite (as ``_insert``
    says why), an ``executemany`` elsewhere."""
    columns = sorted({k for row in updates.values() for k in row if k in _STARTED})
    if conn.dialect.paramstyle == "qmark" and _JSON_SQLITE:
        sets = ", ".join(f"{c} = json_extract(j.value, '$[{i}]')" for i, c in enumerate(columns, 1))
        batch = []
        for rid, values in updates.items():
            fitted = _fit({c: values.get(c) for c in columns})
            if "finished_at" in fitted:
                fitted["finished_at"] = _sqlite_moment(values.get("finished_at"))
            batch.append((rid, *(fitted[c] for c in columns)))
        await conn.exec_driver_sql(  # column names are this module's constants
            f"UPDATE usage SET {sets} FROM json_each(?) AS j "  # noqa: S608
            "WHERE usage.request_id = json_extract(j.value, '$[0]')", (msgspec.json.encode(batch).decode(),))
        return
    statement = update(USAGE).where(USAGE.c.request_id == bindparam("rid")).values(
        {c: bindparam(c) for c in columns})
    params = []
    for rid, values in updates.items():
        fitted = _fit({c: values.get(c) for c in columns})
        if "finished_at" in fitted:
            fitted["finished_at"] = _when(values.get("finished_at"))
        params.append({"rid": rid, **fitted})
    await conn.execute(statement, params)


def _db_row(row: dict[str, Any]) -> dict[str, Any]:
    """A fitted row (see ``_fit``) with its moments as the column type takes them."""
    out = dict(row)
    out["started_at"] = _when(row["started_at"])
    out["finished_at"] = _when(row.get("finished_at"))
    return out


class UsageRecorder:
    def __init__(self, engine: AsyncEngine, *, data_dir: Path | None = None, queue_limit: int = 20_000,
                 interval: float = FLUSH_EVERY, on_spill: Callable[[int], None] | None = None) -> None:
        self.engine = engine
        self.interval = interval
        self.queue_limit = queue_limit
        self.instance = secrets.token_hex(8)
        self.spill = SpillFile(data_dir, self.instance)
        self._started: dict[str, dict[str, Any]] = {}
        self._finished: dict[str, dict[str, Any]] = {}
        self._open: dict[str, dict[str, Any]] = {}
        """Rows written as ``started`` and not finished yet: what their finish adds to the totals."""
        self._uncertain = False
        """The last write failed where its commit may have landed: the next one checks before writing."""
        self._on_spill = on_spill
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._writing = asyncio.Lock()
        self._orphans_due = 0.0
        self.failing_since: float | None = None

    @property
    def queued(self) -> int:
        return len(self._started) + len(self._finished)

    async def open(self) -> None:
        now = datetime.now(UTC)
        async with write_transaction(self.engine) as conn:
            await conn.execute(INSTANCES.insert().values(id=self.instance, started_at=now, seen_at=now))
        await self.mark_interrupted()
        await self.replay()
        self._task = asyncio.create_task(self._run(), name="poolgate-usage")

    def started(self, request_id: str, values: dict[str, Any]) -> None:
        """``values``: key_id, model, endpoint, stream, started_at (epoch seconds)."""
        self._started[request_id] = {**_STARTED, "request_id": request_id, "instance": self.instance, **values}

    def finished(self, request_id: str, values: dict[str, Any]) -> None:
        """``values``: the columns of ``_STARTED`` as they ended (finished_at in epoch seconds)."""
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
                if self.spill.written or time.monotonic() >= self._orphans_due:
                    await self.replay()
            except Exception as exc:  # kept in memory (or spilled) and tried again next round
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                    log.warning("writing usage failed, will retry: %s", exc)
                self._spill_if_full()

    async def flush(self) -> int:
        """Write everything queued; on failure it stays queued for the next flush. One write at a time:
        a flush asked for while another writes waits for it, so when it returns everything queued before
        it was called is written (or still queued, on failure)."""
        async with self._writing:
            return await self._flush()

    async def _flush(self) -> int:
        if not self._started and not self._finished:
            return 0
        started, finished = self._started, self._finished
        self._started, self._finished = {}, {}
        try:
            async with write_transaction(self.engine) as conn:
                written = await self._write(conn, started, finished, check=self._uncertain)
        except BaseException:  # a cancelled write too: nothing taken from the queue is lost
            self._started = {**started, **self._started}
            self._finished = {**finished, **self._finished}
            self._uncertain = True
            raise
        self._uncertain = False
        if self.failing_since is not None:
            log.warning("writing usage works again after %.0fs", time.monotonic() - self.failing_since)
            self.failing_since = None
        for rid, row in started.items():
            if rid not in finished:
                self._open[rid] = {k: row[k] for k in ("key_id", "model", "started_at")}
        for rid in finished:
            self._open.pop(rid, None)
        return written

    async def _write(self, conn: AsyncConnection, started: dict[str, dict[str, Any]],
                     finished: dict[str, dict[str, Any]], *, check: bool) -> int:
        """Insert new rows, finish written ones, add to the totals; with ``check``, skip what is already there."""
        fresh = list(started.items())
        updates = {rid: values for rid, values in finished.items() if rid not in started}
        if check:
            existing = set(await _existing(conn, list(started)))
            fresh = [(rid, row) for rid, row in fresh if rid not in existing]
            still = await _still_started(conn, list(updates))
            updates = {rid: {**values, "opened": still[rid]} for rid, values in updates.items() if rid in still}
        rollups = Rollups()
        kept = []
        for count, (rid, row) in enumerate(fresh, 1):
            done = finished.get(rid)
            fitted = _fit({**row, **done} if done is not None else row)  # the totals group by what the row keeps
            kept.append(fitted)
            if fitted["status"] != "started":
                rollups.add(fitted)
            if not count % _SLICE:  # a large batch is prepared between requests, not in one stall
                await asyncio.sleep(0)
        for rid, values in updates.items():
            opened = values.get("opened") or self._open.get(rid)
            if opened is not None:
                rollups.add(_fit({**opened, **values}))
        if kept:
            await _insert(conn, kept)
        if updates:
            await _finish(conn, updates)
        if rollups:
            for table, rows in rollups.params().items():
                await conn.execute(text(UPSERTS[table]), rows)
        return len(kept) + len(updates)

    def _spill_if_full(self) -> None:
        """Past the bound, what has finished leaves memory for the spill file (starts of requests still
        running stay: there are only as many as there are requests in flight)."""
        if self.queued <= self.queue_limit:
            return
        entries: list[dict[str, Any]] = []
        for rid, values in list(self._finished.items()):
            row = self._started.get(rid)
            if row is not None:
                entries.append({"row": {**row, **values}})
                del self._started[rid]
            else:
                entries.append({"finish": {**values, "request_id": rid, "opened": self._open.get(rid)}})
            del self._finished[rid]
        if not entries:
            return
        try:
            self.spill.append(entries)
        except OSError as exc:  # the disk refuses too: keep them in memory, the last place left
            log.error("cannot spill %d usage rows to disk (%s); keeping them in memory", len(entries), exc)
            for entry in entries:
                if "row" in entry:
                    row = entry["row"]
                    self._started[row["request_id"]] = row
                    self._finished[row["request_id"]] = {k: row[k] for k in (*_FINISH, "finished_at")}
                else:
                    finish = dict(entry["finish"])
                    self._finished[finish.pop("request_id")] = finish
            return
        for entry in entries:
            if "finish" in entry:
                self._open.pop(entry["finish"]["request_id"], None)
        log.warning("usage database refuses writes: spilled %d rows to %s (replayed when it takes writes again)",
                    len(entries), self.spill.path)
        if self._on_spill is not None:
            self._on_spill(len(entries))

    async def replay(self) -> int:
        """Write what spill files hold (this process's and dead ones'); each entry counts once."""
        self._orphans_due = time.monotonic() + ORPHAN_SCAN_EVERY
        replayed = 0
        for path in await asyncio.to_thread(self.spill.files):
            with self.spill.claim(path) as entries:
                if not entries:
                    continue
                for start in range(0, len(entries), 2000):
                    chunk = entries[start : start + 2000]
                    rows = {e["row"]["request_id"]: e["row"] for e in chunk if "row" in e}
                    finishes = {e["finish"]["request_id"]: e["finish"] for e in chunk if "finish" in e}
                    async with write_transaction(self.engine) as conn:
                        replayed += await self._write(conn, rows, finishes, check=True)
                log.warning("replayed %d spilled usage entries from %s", len(entries), path.name)
        return replayed

    async def _heartbeat(self) -> None:
        async with write_transaction(self.engine) as conn:
            await conn.execute(update(INSTANCES).where(INSTANCES.c.id == self.instance)
                               .values(seen_at=datetime.now(UTC)))

    async def mark_interrupted(self) -> int:
        """Rows left ``started`` by processes that stopped heartbeating are ``interrupted`` (and counted)."""
        cutoff = datetime.now(UTC) - SILENT_AFTER
        silent = select(INSTANCES.c.id).where(and_(INSTANCES.c.seen_at < cutoff, INSTANCES.c.id != self.instance))
        stranded = USAGE.c.status == "started", USAGE.c.instance.in_(silent)
        async with write_transaction(self.engine) as conn:
            rows = (await conn.execute(select(USAGE.c.key_id, USAGE.c.model, USAGE.c.started_at).where(*stranded)
                                       .with_for_update())).all()
            count = 0
            if rows:
                result = await conn.execute(update(USAGE).where(*stranded)
                                            .values(status="interrupted", finished_at=datetime.now(UTC)))
                count = int(result.rowcount or 0)
                rollups = Rollups()
                for row in rows:
                    moment = row.started_at if row.started_at.tzinfo else row.started_at.replace(tzinfo=UTC)
                    rollups.add({"key_id": row.key_id, "model": row.model, "started_at": moment.timestamp(),
                                 "status": "interrupted"})
                for table, params in rollups.params().items():
                    await conn.execute(text(UPSERTS[table]), params)
            await conn.execute(INSTANCES.delete().where(INSTANCES.c.id.in_(silent), ~INSTANCES.c.id.in_(
                select(USAGE.c.instance).where(USAGE.c.status == "started"))))
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
        if self.queued:  # the database will not take them: the spill file keeps them for the next start
            limit, self.queue_limit = self.queue_limit, 0
            self._spill_if_full()
            self.queue_limit = limit
        with contextlib.suppress(Exception):
            async with write_transaction(self.engine) as conn:
                await conn.execute(INSTANCES.delete().where(INSTANCES.c.id == self.instance))


async def _existing(conn: AsyncConnection, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        query = select(USAGE.c.request_id).where(USAGE.c.request_id.in_(chunk))
        found.update(row[0] for row in await conn.execute(query))
    return found


async def _still_started(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Which of these rows are still ``started``, with what their finish adds to the totals."""
    pending = list(ids)
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(pending), _CHUNK):
        chunk = pending[start : start + _CHUNK]
        query = select(USAGE.c.request_id, USAGE.c.key_id, USAGE.c.model, USAGE.c.started_at).where(
            USAGE.c.request_id.in_(chunk), USAGE.c.status == "started")
        for row in await conn.execute(query):
            moment = row.started_at if row.started_at.tzinfo else row.started_at.replace(tzinfo=UTC)
            found[row.request_id] = {"key_id": row.key_id, "model": row.model, "started_at": moment.timestamp()}
    return found
