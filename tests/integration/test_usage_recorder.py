"""The usage writer: rows queued by the request path reach the database, whatever they hold."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.usage._recorder import UsageRecorder
from keys import write_transaction


def _request(recorder: UsageRecorder, request_id: str, model: str, input_tokens: int) -> None:
    recorder.started(request_id, {"key_id": "key-1", "model": model, "endpoint": "chat", "stream": False,
                                  "started_at": datetime.now(UTC)})
    recorder.finished(request_id, {"status": "ok", "http_status": 200, "input_tokens": input_tokens,
                                   "output_tokens": 5, "finished_at": datetime.now(UTC)})


async def test_values_too_big_for_their_columns_are_cut_and_the_batch_is_written(engine: AsyncEngine) -> None:
    recorder = UsageRecorder(engine)
    _request(recorder, "req-plain", "gpt-5", 10)
    _request(recorder, "req-odd", "m" * 300, 10**12)  # a very long model id; an upstream reporting nonsense
    assert await recorder.flush() == 2
    recorder.started("req-later", {"key_id": "key-1", "model": "gpt-5", "endpoint": "chat", "stream": True,
                                   "started_at": datetime.now(UTC)})
    assert await recorder.flush() == 1
    recorder.finished("req-later", {"status": "ok", "output_tokens": -(10**12), "error": "e" * 100})
    assert await recorder.flush() == 1  # a row finished after its start was written: an update
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "select request_id, model, input_tokens, output_tokens, error from usage order by id"))).all()
    assert [tuple(r) for r in rows] == [
        ("req-plain", "gpt-5", 10, 5, None),
        ("req-odd", "m" * 200, 2**31 - 1, 5, None),
        ("req-later", "gpt-5", 0, -(2**31), "e" * 64),
    ]


async def test_a_failed_write_loses_nothing_and_the_next_one_writes_the_finished_rows(engine: AsyncEngine) -> None:
    recorder = UsageRecorder(engine)
    _request(recorder, "req-1", "gpt-5", 10)  # started and finished between two flushes: one insert
    async with engine.begin() as conn:
        await conn.execute(text("alter table usage rename to usage_away"))  # the database refuses writes
    with pytest.raises(DBAPIError):
        await recorder.flush()
    async with engine.begin() as conn:
        await conn.execute(text("alter table usage_away rename to usage"))
    assert await recorder.flush() == 1
    async with engine.connect() as conn:
        rows = (await conn.execute(text("select request_id, status, input_tokens, output_tokens from usage"))).all()
    assert [tuple(r) for r in rows] == [("req-1", "ok", 10, 5)]  # finished, not left "started"


async def test_stopping_while_a_write_waits_on_the_database_loses_no_row(engine: AsyncEngine) -> None:
    recorder = UsageRecorder(engine, interval=0.05)
    await recorder.open()
    _request(recorder, "req-1", "gpt-5", 10)
    async with write_transaction(engine) as blocker:  # another writer holds the database
        if engine.dialect.name == "postgresql":
            await blocker.execute(text("lock table usage in exclusive mode"))
        await asyncio.sleep(0.3)  # the writer's regular flush is now waiting for the lock
        stopping = asyncio.create_task(recorder.close())
        await asyncio.sleep(0.2)
    await stopping
    async with engine.connect() as conn:
        rows = (await conn.execute(text("select request_id, status from usage"))).all()
    assert [tuple(r) for r in rows] == [("req-1", "ok")]
