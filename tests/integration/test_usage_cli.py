"""Usage reports: ``summarize``/``key_totals`` over rows written as the gateway writes them (the recorder, with
its hourly and daily totals), and ``poolgate usage`` as an admin runs it."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text as sql
from sqlalchemy.ext.asyncio import AsyncEngine

from app._db import create_engine
from app.settings import Settings
from app.usage import UsageRecorder, UsageSummary, key_totals, spend_since, summarize
from keys import Policy
from tests.support import CliResult, _in_thread, create_key, poolgate

_ids = itertools.count()


@pytest.fixture
def now() -> datetime:
    """The moment the test's rows are dated from: read per test, since ``poolgate usage --since`` reads
    the clock when it runs (a moment read at import would be stale by the time a late test runs)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Use:
    key: str  # "alice"/"bob" in CLI tests (replaced by the key's id), any id in the store tests
    model: str
    status: str
    ago: timedelta
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None


def _h(hours: float) -> timedelta:
    return timedelta(hours=hours)


# alice: gpt-5 3 finished (1 error) + 1 in flight; o3 1 ok 10 days ago + 1 interrupted 5 days ago.
# bob: gpt-5 1 ok 20 h ago + 1 client_closed 30 h ago; gpt-5-mini 1 ok 40 days ago (outside the default 30 days).
ROWS = (
    Use("alice", "gpt-5", "ok", _h(2), 100, 50, 10, 5, 0.50, 100.0),
    Use("alice", "gpt-5", "ok", _h(3), 200, 100, 0, 0, 1.00, 300.0),
    Use("alice", "gpt-5", "error", _h(1), 0, 0, 0, 0, 0.0, 50.0),
    Use("alice", "gpt-5", "started", timedelta(minutes=10), 9999, 9999, 0, 0, 9.0),
    Use("alice", "o3", "ok", timedelta(days=10), 1000, 500, 0, 300, 2.00, 1000.0),
    Use("alice", "o3", "interrupted", timedelta(days=5), 10, 0, 0, 0, 0.01),
    Use("bob", "gpt-5", "ok", _h(20), 50, 25, 0, 0, 0.25, 200.0),
    Use("bob", "gpt-5", "client_closed", _h(30), 5, 1, 0, 0, 0.05, 400.0),
    Use("bob", "gpt-5-mini", "ok", timedelta(days=40), 10, 10, 0, 0, 5.00, 20.0),
)


async def _insert(engine: AsyncEngine, now: datetime, rows: Sequence[Use], ids: dict[str, str] | None = None) -> None:
    """Through the usage recorder, as the gateway writes them: rows and the totals reports read."""
    recorder = UsageRecorder(engine)
    for use in rows:
        started = (now - use.ago).timestamp()
        request_id = f"req-{next(_ids)}"
        recorder.started(request_id, {"key_id": (ids or {}).get(use.key, use.key), "model": use.model,
                                      "endpoint": "chat", "stream": False, "started_at": started})
        if use.status != "started":
            recorder.finished(request_id, {
                "upstream": "acct", "status": use.status, "http_status": 200, "input_tokens": use.input_tokens,
                "output_tokens": use.output_tokens, "cached_tokens": use.cached_tokens,
                "reasoning_tokens": use.reasoning_tokens, "cost_usd": use.cost_usd, "latency_ms": use.latency_ms,
                "ttfb_ms": None, "error": "upstream_error" if use.status == "error" else None,
                "finished_at": started + 1})
    await recorder.flush()


def _p50(summary: UsageSummary) -> float | None:
    return summary.totals.latency(0.5)


# --- the queries ------------------------------------------------------------------------------------


async def test_summarize_groups_by_key_and_model_most_expensive_first(engine: AsyncEngine, now: datetime) -> None:
    await _insert(engine, now, ROWS)
    rows = await summarize(engine, since=now - timedelta(days=30))
    assert [(r.group["key"], r.group["model"]) for r in rows] == [("alice", "o3"), ("alice", "gpt-5"), ("bob", "gpt-5")]
    o3, gpt5, bob = rows
    t = o3.totals
    assert (t.requests, t.errors, t.input_tokens, t.output_tokens, t.cached_tokens, t.reasoning_tokens) == (
        2, 1, 1010, 500, 0, 300)
    assert t.cost_usd == pytest.approx(2.01)
    assert 500 < (_p50(o3) or 0) <= 1000  # one timed request of 1000 ms, in the (500, 1000] bucket
    # the started row (9999 tokens, $9) is left out; the error counts as a request and an error
    t = gpt5.totals
    assert (t.requests, t.errors, t.input_tokens, t.output_tokens) == (3, 1, 300, 150)
    assert (t.cached_tokens, t.reasoning_tokens) == (10, 5)
    assert t.cost_usd == pytest.approx(1.5)
    assert 50 <= (_p50(gpt5) or 0) <= 100  # the median of 50, 100, 300, as the histogram estimates it
    assert (bob.totals.requests, bob.totals.errors) == (2, 1)  # client_closed counts as an error
    assert 200 <= (_p50(bob) or 0) <= 400  # between 200 and 400


async def test_summarize_over_everything_and_filters_combine(engine: AsyncEngine, now: datetime) -> None:
    await _insert(engine, now, ROWS)
    everything = await summarize(engine, since=now - timedelta(days=365))
    assert [(r.group["key"], r.group["model"]) for r in everything] == [
        ("bob", "gpt-5-mini"), ("alice", "o3"), ("alice", "gpt-5"), ("bob", "gpt-5")]
    assert sum(r.totals.requests for r in everything) == 8
    since = now - timedelta(days=365)
    only = await summarize(engine, since=since, key_id="bob", model="gpt-5")
    assert [(r.group["key"], r.group["model"], r.totals.requests) for r in only] == [("bob", "gpt-5", 2)]
    assert await summarize(engine, since=since, key_id="nobody") == []
    recent = await summarize(engine, model="gpt-5", since=now - _h(24))
    assert [(r.group["key"], r.totals.requests, r.totals.errors, r.totals.input_tokens, r.totals.output_tokens)
            for r in recent] == [("alice", 3, 1, 300, 150), ("bob", 1, 0, 50, 25)]
    assert recent[0].totals.cost_usd == pytest.approx(1.5) and recent[1].totals.cost_usd == pytest.approx(0.25)


async def test_summarize_ties_on_cost_go_to_the_busier_group_and_missing_latency_is_none(
        engine: AsyncEngine, now: datetime) -> None:
    await _insert(engine, now, [
        Use("k1", "a", "ok", _h(1), cost_usd=1.0),
        Use("k2", "a", "ok", _h(1), cost_usd=0.5),
        Use("k2", "a", "ok", _h(1), cost_usd=0.5),
        Use("k3", "a", "started", _h(1), cost_usd=5.0),
    ])
    rows = await summarize(engine, since=now - _h(6))
    assert [(r.group["key"], r.totals.requests) for r in rows] == [("k2", 2), ("k1", 1)]
    assert _p50(rows[0]) is None


async def test_since_is_compared_in_utc_whatever_its_time_zone(engine: AsyncEngine, now: datetime) -> None:
    await _insert(engine, now, ROWS)
    moment = now - _h(2.5)  # after the 3 h old row, before the 2 h and 1 h old ones
    plus_five = moment.astimezone(timezone(timedelta(hours=5)))
    naive_utc = moment.replace(tzinfo=None)
    for since in (moment, plus_five, naive_utc):
        rows = await summarize(engine, since=since, key_id="alice")
        assert [(r.group["model"], r.totals.requests) for r in rows] == [("gpt-5", 2)], since


async def test_a_range_that_cuts_hours_counts_exactly_the_rows_inside_it(engine: AsyncEngine, now: datetime) -> None:
    await _insert(engine, now, [Use("k", "a", "ok", timedelta(minutes=m)) for m in (5, 50, 70, 125, 185, 1500)])
    for minutes in (1, 30, 60, 100, 180, 200, 1440, 2000):
        rows = await summarize(engine, since=now - timedelta(minutes=minutes), group_by=())
        expected = sum(1 for m in (5, 50, 70, 125, 185, 1500) if m <= minutes)
        assert rows[0].totals.requests == expected, minutes
    past = await summarize(engine, since=now - _h(3), until=now - _h(1), group_by=())
    assert past[0].totals.requests == 2  # 70 and 125 minutes ago: an end in the past is exact too


async def test_whole_hours_and_days_are_read_from_the_running_totals_not_the_rows(
        engine: AsyncEngine, now: datetime) -> None:
    """Reports and budget reloads cost a few rows per key and hour, however many requests there were: whole
    hours come from the totals kept as rows are written (here, the rows of those hours are gone)."""
    await _insert(engine, now, ROWS)
    before = await key_totals(engine, "alice", since=now - timedelta(days=30))
    spent = await spend_since(engine, now - timedelta(days=30))
    hour_start = now.replace(minute=0, second=0, microsecond=0)
    async with engine.begin() as conn:
        gone = await conn.execute(sql("delete from usage where started_at < :edge and status != 'started'"),
                                  {"edge": hour_start - _h(1)})
    assert gone.rowcount >= 5
    since = (now - timedelta(days=30)).replace(minute=0, second=0, microsecond=0)  # whole hours only
    assert await key_totals(engine, "alice", since=since) == before
    assert await spend_since(engine, since) == pytest.approx(spent)


async def test_key_totals_sum_one_key_over_every_model(engine: AsyncEngine, now: datetime) -> None:
    await _insert(engine, now, ROWS)
    totals = await key_totals(engine, "alice", since=now - timedelta(days=30))
    assert totals == {"requests": 5, "input_tokens": 1310, "output_tokens": 650, "cached_tokens": 10,
                      "reasoning_tokens": 305, "cost_usd": pytest.approx(3.51)}
    assert isinstance(totals["requests"], int) and isinstance(totals["cost_usd"], float)
    recent = await key_totals(engine, "alice", since=now - _h(6))
    assert (recent["requests"], recent["input_tokens"], recent["cost_usd"]) == (3, 300, pytest.approx(1.5))
    assert await key_totals(engine, "nobody", since=now - _h(6)) == {
        "requests": 0, "input_tokens": 0, "output_tokens": 0, "cached_tokens": 0, "reasoning_tokens": 0,
        "cost_usd": 0.0}


# --- poolgate usage ---------------------------------------------------------------------------------


@pytest.fixture
def ids(settings: Settings, now: datetime) -> dict[str, str]:
    """Two real keys and the usage rows above, written under their ids."""
    alice, _ = create_key(settings, "alice", Policy(allowed_models=("*",)))
    bob, _ = create_key(settings, "bob", Policy(allowed_models=("*",)))
    key_ids = {"alice": alice.id, "bob": bob.id}

    async def go() -> None:
        engine = create_engine(settings)
        try:
            await _insert(engine, now, ROWS, key_ids)
        finally:
            await engine.dispose()

    _in_thread(go)
    return key_ids


def _usage(settings: Settings, *args: str) -> dict[str, Any]:
    result = poolgate(settings, "usage", *args, "--json")
    assert result.code == 0, result.stderr
    data: dict[str, Any] = result.json()
    return data


def _groups(data: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(row["key_name"], row["model"], row["requests"]) for row in data["rows"]]


def _one_line_error(result: CliResult, message: str) -> None:
    assert result.code == 1, result.stdout
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_the_default_report_covers_30_days_per_key_and_model(settings: Settings, ids: dict[str, str]) -> None:
    data = _usage(settings)
    assert set(data) == {"since", "rows", "totals"}
    since = datetime.fromisoformat(data["since"])
    assert since.tzinfo is not None
    assert abs(since - (datetime.now(UTC) - timedelta(days=30))) < timedelta(minutes=5)
    assert _groups(data) == [("alice", "o3", 2), ("alice", "gpt-5", 3), ("bob", "gpt-5", 2)]
    first = data["rows"][0]
    assert list(first) == ["key_id", "key_name", "model", "requests", "errors", "input_tokens", "output_tokens",
                           "cached_tokens", "reasoning_tokens", "cost_usd", "p50_latency_ms"]
    assert first["key_id"] == ids["alice"]
    assert (first["errors"], first["input_tokens"], first["reasoning_tokens"]) == (1, 1010, 300)
    assert first["cost_usd"] == pytest.approx(2.01) and 500 < first["p50_latency_ms"] <= 1000
    gpt5 = data["rows"][1]
    assert (gpt5["errors"], gpt5["input_tokens"], gpt5["output_tokens"], gpt5["cached_tokens"]) == (1, 300, 150, 10)
    assert 50 <= gpt5["p50_latency_ms"] <= 100
    assert data["totals"] == {"requests": 7, "errors": 3, "input_tokens": 1365, "output_tokens": 676,
                              "cached_tokens": 10, "reasoning_tokens": 305, "cost_usd": pytest.approx(3.81)}


def test_since_takes_durations_and_dates(settings: Settings, ids: dict[str, str]) -> None:
    week = _usage(settings, "--since", "7d")
    assert _groups(week) == [("alice", "gpt-5", 3), ("bob", "gpt-5", 2), ("alice", "o3", 1)]
    o3 = week["rows"][2]
    assert (o3["errors"], o3["p50_latency_ms"]) == (1, None)  # only the interrupted row, which has no latency
    day = _usage(settings, "--since", "24h")
    assert _groups(day) == [("alice", "gpt-5", 3), ("bob", "gpt-5", 1)]
    assert day["totals"]["requests"] == 4 and day["totals"]["cost_usd"] == pytest.approx(1.75)
    date = (datetime.now(UTC) - timedelta(days=60)).date().isoformat()
    old = _usage(settings, "--since", date)
    assert datetime.fromisoformat(old["since"]) == datetime.fromisoformat(date).replace(tzinfo=UTC)
    assert _groups(old)[0] == ("bob", "gpt-5-mini", 1) and old["totals"]["requests"] == 8
    stamp = (datetime.now(UTC) - _h(2.5)).replace(tzinfo=None).isoformat(timespec="seconds")  # naive = UTC
    assert _groups(_usage(settings, "--since", stamp)) == [("alice", "gpt-5", 2)]


def test_an_empty_window_has_no_rows_and_zero_totals(settings: Settings, ids: dict[str, str]) -> None:
    data = _usage(settings, "--since", "1m")  # only the request still in flight is that recent
    assert data["rows"] == []
    assert data["totals"] == {"requests": 0, "errors": 0, "input_tokens": 0, "output_tokens": 0,
                              "cached_tokens": 0, "reasoning_tokens": 0, "cost_usd": 0.0}
    human = poolgate(settings, "usage", "--since", "1m")
    assert human.code == 0 and "no finished requests" in human.stdout


def test_key_by_name_or_id_and_model_filters(settings: Settings, ids: dict[str, str]) -> None:
    by_name = _usage(settings, "--key", "bob")
    by_id = _usage(settings, "--key", ids["bob"])
    assert _groups(by_name) == _groups(by_id) == [("bob", "gpt-5", 2)]
    assert by_name["rows"][0]["key_id"] == ids["bob"]
    assert by_name["totals"]["cost_usd"] == pytest.approx(0.30)
    o3 = _usage(settings, "--model", "o3")
    assert _groups(o3) == [("alice", "o3", 2)]
    both = _usage(settings, "--key", "alice", "--model", "gpt-5", "--since", "90m")
    assert _groups(both) == [("alice", "gpt-5", 1)]  # only the error an hour ago
    assert both["totals"]["errors"] == 1
    assert _usage(settings, "--key", "bob", "--model", "o3")["rows"] == []


def test_the_table_shows_keys_models_costs_and_a_total(settings: Settings, ids: dict[str, str]) -> None:
    result = poolgate(settings, "usage")
    assert result.code == 0, result.stderr
    out = result.stdout
    for text in ("key", "model", "requests", "errors", "input tokens", "output tokens", "cost", "p50 latency",
                 f"{ids['alice']} (alice)", f"{ids['bob']} (bob)", "gpt-5", "o3", "$2.0100", "$1.5000",
                 "$0.3000", "1,010", "total", "$3.8100", "1,365"):
        assert text in out, text
    assert "gpt-5-mini" not in out and "9,999" not in out
    lines = out.splitlines()
    total_line = next(line for line in lines if "total" in line and "$3.8100" in line)
    assert lines.index(total_line) > max(i for i, line in enumerate(lines) if "(bob)" in line)


@pytest.mark.parametrize(("args", "message"), [
    (("--since", "yesterday"), "invalid --since 'yesterday': use a duration such as 7d or a date such as 2026-11-01"),
    (("--since", "7x"), "invalid --since '7x': use a duration such as 7d"),
    (("--since", "2999-01-01"), "invalid --since '2999-01-01': it is in the future"),
    (("--key", "nobody"), "no key with id or name 'nobody'"),
])
def test_bad_input_is_one_line_and_exit_code_1(settings: Settings, args: tuple[str, ...], message: str) -> None:
    _one_line_error(poolgate(settings, "usage", *args), message)
    _one_line_error(poolgate(settings, "usage", *args, "--json"), message)
