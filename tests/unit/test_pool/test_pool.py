from __future__ import annotations

from collections import Counter

import pytest

from app.pool import ModelRoute, NoUpstream, Pool, PoolExhausted, UpstreamRecord, parse_reset, parse_routes
from app.pool._state import EJECT_AFTER, EJECT_BASE, UpstreamState
from keys import StoreError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(upstream_id: str, *, patterns: str = "gpt-5*,o3", tier: int = 0, weight: float = 1.0,
           max_concurrency: int | None = None, enabled: bool = True, revision: int = 1) -> UpstreamRecord:
    return UpstreamRecord(
        id=upstream_id, name=upstream_id, kind="openai", base_url=f"http://{upstream_id}/v1", credential=None,
        routes=parse_routes(patterns), weight=weight, tier=tier, max_concurrency=max_concurrency, enabled=enabled,
        removed=False, created_at=0.0, updated_at=0.0, revision=revision,
    )


def pool_of(*records: UpstreamRecord, strategy: str = "least_inflight") -> tuple[Pool, Clock]:
    clock = Clock()
    pool = Pool(store=None, vault=None, strategy=strategy, clock=clock)  # type: ignore[arg-type]
    pool.apply(records)
    return pool, clock


GPT5 = ("gpt-5",)


def test_only_upstreams_serving_the_model_are_candidates() -> None:
    pool, _ = pool_of(record("a", patterns="o3"), record("b", patterns="gpt-5*"))
    assert pool.choose(GPT5, 0).id == "b"
    with pytest.raises(NoUpstream, match="No upstream serves"):
        pool.choose(("claude-haiku-4-5",), 0)


def test_disabled_upstreams_are_never_chosen() -> None:
    pool, _ = pool_of(record("a", enabled=False), record("b"))
    assert {pool.choose(GPT5, 0).id for _ in range(50)} == {"b"}


def test_the_best_tier_the_key_may_use_comes_first() -> None:
    pool, clock = pool_of(record("premium", tier=0), record("backup", tier=1))
    assert {pool.choose(GPT5, 0).id for _ in range(50)} == {"premium"}
    assert {pool.choose(GPT5, 1).id for _ in range(50)} == {"backup"}  # a tier-1 key never uses tier 0
    pool.states["premium"].rate_limited({"retry-after": "5"}, clock())
    assert pool.choose(GPT5, 0).id == "backup"  # falls back while tier 0 cools down


def test_a_429_cools_an_upstream_until_it_says_so() -> None:
    pool, clock = pool_of(record("a"), record("b"))
    a = pool.states["a"]
    assert a.rate_limited({"x-ratelimit-reset-requests": "6m0s", "retry-after": "2"}, clock()) == 2.0
    tokens_out = {"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-reset-tokens": "20s",
                  "x-ratelimit-remaining-requests": "120", "x-ratelimit-remaining-tokens": "0"}
    assert a.rate_limited(tokens_out, clock()) == 20.0  # the limit that ran out decides
    wait = a.rate_limited({"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-remaining-requests": "0"}, clock())
    assert wait == 360.0
    assert {pool.choose(GPT5, 0).id for _ in range(30)} == {"b"}
    clock.now += 361
    assert "a" in {pool.choose(GPT5, 0).id for _ in range(60)}


def test_when_every_upstream_cools_down_the_pool_is_exhausted_until_the_earliest_recovery() -> None:
    pool, clock = pool_of(record("a"), record("b"))
    pool.states["a"].rate_limited({"retry-after": "7"}, clock())
    pool.states["b"].rate_limited({"retry-after": "3"}, clock())
    with pytest.raises(PoolExhausted) as info:
        pool.choose(GPT5, 0)
    assert info.value.retry_after == pytest.approx(3.0)


def test_five_failures_eject_for_30s_doubling_but_never_the_last_healthy_one() -> None:
    pool, clock = pool_of(record("a"), record("b"))
    a, b = pool.states["a"], pool.states["b"]
    for _ in range(EJECT_AFTER - 1):
        pool.report_failure(a, GPT5)
    assert a.available(clock())
    pool.report_failure(a, GPT5)
    assert a.ejected_until == clock() + EJECT_BASE
    for _ in range(EJECT_AFTER * 3):
        pool.report_failure(b, GPT5)  # b is now the last healthy one: it stays in
    assert b.available(clock())
    clock.now += EJECT_BASE + 1
    for _ in range(EJECT_AFTER):
        pool.report_failure(a, GPT5)
    assert a.ejected_until == clock() + 2 * EJECT_BASE  # doubled on repeat


def test_a_success_resets_the_failure_count() -> None:
    pool, clock = pool_of(record("a"), record("b"))
    a = pool.states["a"]
    for _ in range(EJECT_AFTER - 1):
        pool.report_failure(a, GPT5)
    a.succeeded(0.01, {})
    for _ in range(EJECT_AFTER - 1):
        pool.report_failure(a, GPT5)
    assert a.available(clock())


def test_every_candidate_ejected_is_503_not_429() -> None:
    pool, clock = pool_of(record("a"), record("b", patterns="o3"))
    a = pool.states["a"]
    a.ejected_until = clock() + 30
    with pytest.raises(NoUpstream, match="failing"):
        pool.choose(GPT5, 0)


def test_max_concurrency_is_respected() -> None:
    pool, _ = pool_of(record("a", max_concurrency=2), record("b"))
    pool.states["a"].inflight = 2
    assert {pool.choose(GPT5, 0).id for _ in range(30)} == {"b"}


@pytest.mark.parametrize("strategy", ["least_inflight", "round_robin", "weighted_random", "latency", "usage"])
def test_every_strategy_spreads_load_over_healthy_upstreams(strategy: str) -> None:
    pool, _ = pool_of(record("a"), record("b"), record("c"), strategy=strategy)
    if strategy == "usage":
        for name, remaining in (("a", 10), ("b", 90), ("c", 50)):
            pool.states[name].read_capacity({"x-ratelimit-remaining-requests": str(remaining),
                                             "x-ratelimit-limit-requests": "100"})
        picks = Counter(pool.choose(GPT5, 0).id for _ in range(3000))
        assert picks["b"] > picks["c"] > picks["a"] > 0  # in proportion to what each has left
        return
    picks = Counter(pool.choose(GPT5, 0).id for _ in range(600))
    assert set(picks) == {"a", "b", "c"}


def test_least_inflight_prefers_the_less_loaded_and_respects_weight() -> None:
    pool, _ = pool_of(record("busy"), record("idle"))
    pool.states["busy"].inflight = 50
    picks = Counter(pool.choose(GPT5, 0).id for _ in range(400))
    assert picks["idle"] > picks["busy"] * 2
    heavy, _ = pool_of(record("big", weight=9), record("small", weight=1), strategy="weighted_random")
    picks = Counter(heavy.choose(GPT5, 0).id for _ in range(1000))
    assert picks["big"] > picks["small"] * 4


def test_stickiness_keeps_a_conversation_on_one_upstream_and_moves_only_when_it_drops_out() -> None:
    pool, clock = pool_of(record("a"), record("b"), record("c"))
    homes = {f"conv-{i}": pool.choose(GPT5, 0, sticky=f"conv-{i}").id for i in range(60)}
    assert len(set(homes.values())) == 3
    assert all(pool.choose(GPT5, 0, sticky=c).id == home for c, home in homes.items())
    pool.states["a"].rate_limited({"retry-after": "30"}, clock())
    for conversation, home in homes.items():
        moved = pool.choose(GPT5, 0, sticky=conversation).id
        assert moved != "a"
        if home != "a":
            assert moved == home  # the others' conversations stay where they were


def test_an_edited_upstream_keeps_its_live_state_and_its_requests_in_flight() -> None:
    pool, clock = pool_of(record("a", max_concurrency=1), record("b"))
    held = pool.states["a"]
    held.inflight += 1  # a request in flight holds this object
    pool.states["a"].rate_limited({"retry-after": "30"}, clock())
    pool.apply([record("a", weight=2, max_concurrency=1, revision=2), record("b")])
    assert pool.states["a"] is held and held.weight == 2
    held.inflight -= 1  # that request ends
    clock.now += 31
    assert pool.states["a"].available(clock())  # not stuck at its concurrency limit


def test_model_renames_per_upstream() -> None:
    state = UpstreamState(record("a", patterns="o3=o3-2025-04-16,gpt-5*"), {})
    assert state.upstream_model(("o3", "o3-2025-04-16")) == "o3-2025-04-16"
    assert state.upstream_model(("gpt-5",)) == "gpt-5"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2", 2.0), ("0.5", 0.5), ("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3s", 3723.0), ("bad", None),
     ("", None), (None, None)],
)
def test_reset_headers_are_parsed(text: str | None, seconds: float | None) -> None:
    assert parse_reset(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_route_parsing_refuses_renaming_a_glob_and_empty_lists() -> None:
    assert parse_routes("gpt-5*, o3=o3-2025-04-16") == (ModelRoute("gpt-5*"), ModelRoute("o3", "o3-2025-04-16"))
    with pytest.raises(StoreError, match="only an exact model id"):
        parse_routes("gpt-5*=x")
    with pytest.raises(StoreError, match="at least one"):
        parse_routes(" , ")


def test_the_last_healthy_upstream_of_a_model_is_never_ejected_even_if_others_serve_other_models() -> None:
    pool, clock = pool_of(record("only-gpt5", patterns="gpt-5*"), record("embeddings", patterns="text-embedding-*"))
    for _ in range(EJECT_AFTER * 2):
        pool.report_failure(pool.states["only-gpt5"], GPT5)
    assert pool.states["only-gpt5"].available(clock())


def test_round_robin_rotates_each_set_of_candidates_on_its_own() -> None:
    pool, _ = pool_of(record("a", patterns="gpt-5*,o3"), record("b", patterns="gpt-5*,o3"), record("c", patterns="o3"),
                      strategy="round_robin")
    gpt5 = [pool.choose(GPT5, 0).id for _ in range(4)]
    o3 = [pool.choose(("o3",), 0).id for _ in range(6)]
    assert sorted(gpt5) == ["a", "a", "b", "b"] and sorted(o3) == ["a", "a", "b", "b", "c", "c"]
