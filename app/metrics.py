"""Prometheus metrics without a metrics library: plain dict counters, formatted only when scraped.

Updates run on every request, so they are dict increments and one ``bisect``; all text
formatting happens in :meth:`Metrics.render`. The object is meant to live on one event
loop: updates are not locked, which is safe because nothing awaits between read and write.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from itertools import pairwise

__all__ = ["CONTENT_TYPE", "DEFAULT_LATENCY_BUCKETS", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
)


class _Histogram:
    """Per-bucket (not cumulative) counts plus a running sum; cumulated at render time."""

    __slots__ = ("counts", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size  # one slot per finite bucket, then one for +Inf
        self.total = 0.0


class Metrics:
    """In-process counters and histograms, rendered in the Prometheus text exposition format (0.0.4)."""

    def __init__(self, latency_buckets: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS) -> None:
        buckets = tuple(float(b) for b in latency_buckets)
        if any(not math.isfinite(b) for b in buckets):
            raise ValueError("latency buckets must be finite; +Inf is always added")
        if any(a >= b for a, b in pairwise(buckets)):
            raise ValueError("latency buckets must be strictly increasing")
        self._buckets = buckets
        self._le = (*(_fmt(b) for b in buckets), "+Inf")
        self._requests: dict[tuple[str, str, str, str, int], int] = {}
        self._tokens: dict[tuple[str, str, str, str], int] = {}
        self._cost: dict[tuple[str, str], float] = {}
        self._duration: dict[tuple[str, str], _Histogram] = {}
        self._ttfb: dict[tuple[str, str], _Histogram] = {}
        self._quota: dict[tuple[str, str], int] = {}
        self.spilled_rows = 0
        """Usage rows written to the spill file because the database refused them."""

    def request(
        self, *, key_id: str, model: str, upstream: str | None, endpoint: str, status: int,
        latency_s: float, ttfb_s: float | None, input_tokens: int, output_tokens: int,
        cached_tokens: int, reasoning_tokens: int, cost_usd: float,
    ) -> None:
        """Count one finished request; non-positive token and cost increments are dropped (counters never fall)."""
        up = upstream or ""
        rk = (key_id, model, up, endpoint, status)
        self._requests[rk] = self._requests.get(rk, 0) + 1
        tokens = self._tokens
        if input_tokens > 0:
            tk = (key_id, model, up, "input")
            tokens[tk] = tokens.get(tk, 0) + input_tokens
        if output_tokens > 0:
            tk = (key_id, model, up, "output")
            tokens[tk] = tokens.get(tk, 0) + output_tokens
        if cached_tokens > 0:
            tk = (key_id, model, up, "cached")
            tokens[tk] = tokens.get(tk, 0) + cached_tokens
        if reasoning_tokens > 0:
            tk = (key_id, model, up, "reasoning")
            tokens[tk] = tokens.get(tk, 0) + reasoning_tokens
        ck = (key_id, model)
        self._cost[ck] = self._cost.get(ck, 0.0) + (cost_usd if cost_usd > 0 else 0.0)
        hk = (model, endpoint)
        self._observe(self._duration, hk, latency_s)
        if ttfb_s is not None:
            self._observe(self._ttfb, hk, ttfb_s)

    def usage_spilled(self, rows: int) -> None:
        self.spilled_rows += rows

    def quota_rejected(self, *, key_id: str, kind: str) -> None:
        """Count a request refused by a quota; kind is "requests", "tokens", "concurrency" or "budget"."""
        k = (key_id, kind)
        self._quota[k] = self._quota.get(k, 0) + 1

    def _observe(self, store: dict[tuple[str, str], _Histogram], key: tuple[str, str], value: float) -> None:
        hist = store.get(key)
        if hist is None:
            hist = store[key] = _Histogram(len(self._le))
        hist.counts[bisect_left(self._buckets, value)] += 1
        hist.total += value

    def render(self, upstreams: Iterable[Mapping[str, object]] = (),
               extra: Iterable[tuple[str, str, str, float]] = ()) -> bytes:
        """The whole exposition; ``upstreams`` are pool snapshots, turned into gauges labelled by name;
        ``extra`` are (name, type, help, value) samples without labels."""
        out: list[str] = []
        for name, kind, help_, value in extra:
            _family(out, name, kind, help_)
            out.append(f"{name} {_fmt(value)}\n")

        _family(out, "poolgate_requests_total", "counter",
                "Requests handled, by API key id, model, upstream, endpoint and HTTP status.")
        for (key, model, up, endpoint, status), n in sorted(self._requests.items()):
            out.append(f'poolgate_requests_total{{key="{_esc(key)}",model="{_esc(model)}",upstream="{_esc(up)}",'
                       f'endpoint="{_esc(endpoint)}",status="{status}"}} {n}\n')

        _family(out, "poolgate_tokens_total", "counter",
                "Tokens used, by API key id, model, upstream and kind (input, output, cached, reasoning).")
        for (key, model, up, kind), n in sorted(self._tokens.items()):
            out.append(f'poolgate_tokens_total{{key="{_esc(key)}",model="{_esc(model)}",upstream="{_esc(up)}",'
                       f'kind="{_esc(kind)}"}} {n}\n')

        _family(out, "poolgate_cost_usd_total", "counter", "Estimated spend in US dollars, by API key id and model.")
        for (key, model), usd in sorted(self._cost.items()):
            out.append(f'poolgate_cost_usd_total{{key="{_esc(key)}",model="{_esc(model)}"}} {_fmt(usd)}\n')

        self._histogram(out, "poolgate_request_duration_seconds",
                        "Time from request received to response finished, by model and endpoint.", self._duration)
        self._histogram(out, "poolgate_time_to_first_byte_seconds",
                        "Time from request received to the first response byte, by model and endpoint.", self._ttfb)

        _family(out, "poolgate_quota_rejections_total", "counter",
                "Requests refused by a quota, by API key id and kind (requests, tokens, concurrency, budget).")
        for (key, kind), n in sorted(self._quota.items()):
            out.append(f'poolgate_quota_rejections_total{{key="{_esc(key)}",kind="{_esc(kind)}"}} {n}\n')

        _upstream_gauges(out, list(upstreams))
        return "".join(out).encode()

    def _histogram(self, out: list[str], name: str, help_: str, store: dict[tuple[str, str], _Histogram]) -> None:
        _family(out, name, "histogram", help_)
        for (model, endpoint), hist in sorted(store.items(), key=lambda item: item[0]):
            labels = f'model="{_esc(model)}",endpoint="{_esc(endpoint)}"'
            cumulative = 0
            for le, n in zip(self._le, hist.counts, strict=True):
                cumulative += n
                out.append(f'{name}_bucket{{{labels},le="{le}"}} {cumulative}\n')
            out.append(f"{name}_sum{{{labels}}} {_fmt(hist.total)}\n")
            out.append(f"{name}_count{{{labels}}} {cumulative}\n")


_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("poolgate_upstream_inflight", "inflight", "Requests in flight to the upstream."),
    ("poolgate_upstream_usable", "usable",
     "1 when the upstream can be used, 0 when it cannot (its credential cannot be decrypted here)."),
    ("poolgate_upstream_cooling_down", "cooling_down_s", "1 while the upstream is cooling down after a 429, else 0."),
    ("poolgate_upstream_ejected", "ejected_s", "1 while the upstream is ejected after repeated failures, else 0."),
    ("poolgate_upstream_consecutive_failures", "consecutive_failures", "Failures since the last success."),
    ("poolgate_upstream_latency_ewma_seconds", "latency_ewma_ms", "Moving average of upstream latency."),
    ("poolgate_upstream_remaining_requests", "remaining_requests",
     "Requests left in the upstream's rate-limit window, as last reported by it."),
)


def _upstream_gauges(out: list[str], upstreams: list[Mapping[str, object]]) -> None:
    """One gauge family per snapshot field; a missing or None field leaves that upstream's sample out."""
    labels = [_esc(str(u.get("name") or u.get("id") or "")) for u in upstreams]
    for name, field, help_ in _GAUGES:
        _family(out, name, "gauge", help_)
        for label, snap in zip(labels, upstreams, strict=True):
            value = _number(snap.get(field))
            if value is None:
                continue
            if field in {"cooling_down_s", "ejected_s"}:
                value = 1 if value > 0 else 0
            elif field == "latency_ewma_ms":
                value = value / 1000
            out.append(f'{name}{{upstream="{label}"}} {_fmt(value)}\n')


def _family(out: list[str], name: str, kind: str, help_: str) -> None:
    out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n")


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    return None


def _esc(value: str) -> str:
    """Label-value escaping from the text format: backslash, double quote and newline."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _fmt(value: float) -> str:
    """Shortest round-tripping text: ``3`` for whole numbers, ``repr`` otherwise, Go spellings for specials."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)
