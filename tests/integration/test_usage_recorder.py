"""The usage writer: rows queued by the request path reach the database, whatever they hold, and nothing is
lost (or counted twice) while the database refuses writes."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app._db import write_transaction
from app.usage import summarize
from app.usage._recorder import UsageRecorder
from tests.support import eventually


def _request(recorder: UsageRecorder, request_id: str, model: str = "gpt-5", input_tokens: int = 10,
             key: str = "key-1") -> None:
    now = time.time()
    recorder.started(request_id, {"key_id": key, "model": model, "endpoint": "chat", "stream": False,
                                  "started_at": now})
    recorder.finished(request_id, {"status": "ok", "http_status": 200, "input_tokens": input_tokens,
                                   "output_tokens": 5, "cost_usd": 0.01, "latency_ms": 120.0, "finished_at": now})


async def _rows(engine: AsyncEngine, columns: str = "request_id, status") -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in await conn.execute(text(f"select {columns} from usage order by id"))]


async def _totals(engine: AsyncEngine) -> tuple[int, float]:
    from datetime import UTC, datetime, timedelta

    [row] = await summarize(engine, since=datetime.now(UTC) - timedelta(days=1), group_by=())
    return row.totals.requests, round(row.totals.cost_usd, 6)


async def test_values_too_big_for_their_columns_are_cut_and_the_batch_is_written(engine: AsyncEngine) -> None:
    recorder = UsageRecorder(engine)
    _request(recorder, "req-plain", "gpt-5", 10)
    _request(recorder, "req-odd", "m" * 300, 10**12)  # a very long model id; an upstream reporting nonsense
    assert await recorder.flush() == 2
    recorder.started("req-later", {"key_id": "key-1", "model": "gpt-5", "endpoint": "chat", "stream": True,
                                   "started_at": time.time()})
    assert await recorder.flush() == 1
    recorder.finished("req-later", {"status": "ok", "output_tokens": -(10**12), "error": "e" * 100})
    assert await recorder.flush() == 1  # a row finished after its start was written: an update
    assert await _rows(engine, "request_id, model, input_tokens, output_tokens, error") == [
        ("req-plain", "gpt-5", 10, 5, None),
        ("req-odd", "m" * 200, 2**31 - 1, 5, None),
        ("req-later", "gpt-5", 0, -(2**31), "e" * 64),
    ]


async def test_a_failed_write_loses_nothing_and_the_next_one_writes_the_finished_rows(engine: AsyncEngine) -> None:
    recorder = UsageRecorder(engine)
    _request(recorder, "req-1")  # started and finished between two flushes: one insert
    async with engine.begin() as conn:
        await conn.execute(text("alter table usage rename to usage_away"))  # the database refuses writes
    with pytest.raises(DBAPIError):
        await recorder.flush()
    async with engine.begin() as conn:
        await conn.execute(text("alter table usage_away rename to usage"))
    assert await recorder.flush() == 1
    assert await _rows(engine, "request_id, status, input_tokens, output_tokens") == [("req-1", "ok", 10, 5)]
    assert await _totals(engine) == (1, 0.01)  # the retry that checked first counted it once


async def test_stopping_while_a_write_waits_on_the_database_loses_no_row(engine: AsyncEngine) -> None:
    recorder = UsageRecorder(engine, interval=0.05)
    await recorder.open()
    _request(recorder, "req-1")
    async with write_transaction(engine) as blocker:  # another writer holds the database
        if engine.dialect.name == "postgresql":
            await blocker.execute(text("lock table usage in exclusive mode"))
        await asyncio.sleep(0.3)  # the writer's regular flush is now waiting for the lock
        stopping = asyncio.create_task(recorder.close())
        await asyncio.sleep(0.2)
    await stopping
    assert await _rows(engine) == [("req-1", "ok")]


async def test_past_its_bound_usage_spills_to_disk_and_is_replayed_once_the_database_takes_writes(
        engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="poolgate")
    spilled: list[int] = []  # what the metric poolgate_usage_spilled_rows_total counts
    recorder = UsageRecorder(engine, data_dir=tmp_path, queue_limit=100, interval=0.05, on_spill=spilled.append)
    await recorder.open()
    async with engine.begin() as conn:
        await conn.execute(text("alter table usage rename to usage_away"))  # the database refuses writes
    try:
        for n in range(450):
            _request(recorder, f"req-{n}")
            if n % 50 == 0:
                await asyncio.sleep(0.06)  # the writer tries (and fails) meanwhile
        # At most 100 queued rows (50 requests) may stay in memory: the rest goes to the spill file. (Waited
        # for as a count of spilled rows: while a write is being tried, its rows are in neither place.)
        await eventually(lambda: sum(spilled) >= 400, timeout=5, what="the rows past the bound to be spilled")
        spill = list(tmp_path.glob("usage-spill-*.jsonl"))
        assert len(spill) == 1 and spill[0].stat().st_mode & 0o777 == 0o600
        assert any("spilled" in r.getMessage() and str(spill[0]) in r.getMessage() for r in caplog.records)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("alter table usage_away rename to usage"))

    async def replayed() -> bool:
        return len(await _rows(engine)) == 450 and not list(tmp_path.glob("usage-spill-*.jsonl"))

    await eventually(replayed, timeout=10, what="the spilled rows to be replayed")
    await recorder.close()
    rows = await _rows(engine)
    assert sorted(r[0] for r in rows) == sorted(f"req-{n}" for n in range(450))  # every one, once
    assert {r[1] for r in rows} == {"ok"}
    assert await _totals(engine) == (450, 4.5)
    assert not list(tmp_path.glob("usage-spill-*.jsonl"))  # replayed, then removed


async def test_a_spill_file_replayed_twice_counts_each_request_once(engine: AsyncEngine, tmp_path: Path) -> None:
    # As after a crash between the replay's commit and the file's removal: the file is read again.
    recorder = UsageRecorder(engine, data_dir=tmp_path)
    entries = []
    for n in range(3):
        now = time.time()
        entries.append({"row": {"request_id": f"req-{n}", "key_id": "key-1", "model": "gpt-5", "endpoint": "chat",
                                "stream": False, "started_at": now, "instance": "gone", "status": "ok",
                                "upstream": "acct", "http_status": 200, "input_tokens": 1, "output_tokens": 1,
                                "cached_tokens": 0, "reasoning_tokens": 0, "cost_usd": 0.5, "latency_ms": 10.0,
                                "ttfb_ms": None, "error": None, "finished_at": now}})
    recorder.spill.append(entries)
    assert await recorder.replay() == 3
    recorder.spill.append(entries)
    assert await recorder.replay() == 0
    assert len(await _rows(engine)) == 3
    assert await _totals(engine) == (3, 1.5)


async def test_the_totals_count_what_the_rows_hold(engine: AsyncEngine) -> None:
    recorder = UsageRecorder(engine)
    _request(recorder, "a", key="k1")
    _request(recorder, "b", key="k2")
    await recorder.flush()
    recorder.started("c", {"key_id": "k1", "model": "o3", "endpoint": "chat", "stream": True,
                           "started_at": time.time()})
    await recorder.flush()  # started, not finished: in no total yet
    assert await _totals(engine) == (2, 0.02)
    recorder.finished("c", {"status": "error", "http_status": 502, "cost_usd": 0.0, "finished_at": time.time()})
    await recorder.flush()
    from datetime import UTC, datetime, timedelta

    rows = await summarize(engine, since=datetime.now(UTC) - timedelta(hours=1), group_by=("key", "model"))
    assert sorted((r.group["key"], r.group["model"], r.totals.requests, r.totals.errors) for r in rows) == [
        ("k1", "gpt-5", 1, 0), ("k1", "o3", 1, 1), ("k2", "gpt-5", 1, 0)]
