from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pytest

from app.metrics import CONTENT_TYPE, DEFAULT_LATENCY_BUCKETS, Metrics

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
VALUE = re.compile(r"[+-]?(?:Inf|NaN|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


@dataclass
class Family:
    help: str | None = None
    type: str | None = None
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def parse(text: str) -> dict[str, Family]:
    """A strict reader for the 0.0.4 text format: HELP and TYPE before samples, samples grouped by family."""
    assert text.endswith("\n")
    families: dict[str, Family] = {}
    current: str | None = None
    for line in text[:-1].split("\n"):
        if line.startswith("# "):
            _, keyword, name, rest = [*line.split(" ", 3), ""][:4]
            assert NAME.fullmatch(name), line
            fam = families.setdefault(name, Family())
            assert not fam.samples, f"{keyword} after samples: {line}"
            if keyword == "HELP":
                fam.help = rest
            else:
                assert keyword == "TYPE" and rest in SUFFIXES, line
                fam.type = rest
            current = name
            continue
        name, labels, value = parse_sample(line)
        assert current is not None and name.startswith(current), f"sample outside its family: {line}"
        fam = families[current]
        assert fam.type is not None and name[len(current):] in SUFFIXES[fam.type], line
        fam.samples.append((name, labels, value))
    for name, fam in families.items():
        assert fam.help and fam.type, name
    return families


def parse_sample(line: str) -> tuple[str, dict[str, str], float]:
    m = NAME.match(line)
    assert m, line
    name, i = m.group(), m.end()
    labels: dict[str, str] = {}
    if line[i] == "{":
        i += 1
        while line[i] != "}":
            lm = LABEL.match(line, i)
            assert lm and line[lm.end():lm.end() + 2] == '="', line
            i = lm.end() + 2
            chars: list[str] = []
            while line[i] != '"':
                if line[i] == "\\":
                    chars.append({"\\": "\\", '"': '"', "n": "\n"}[line[i + 1]])
                    i += 2
                else:
                    assert line[i] != "\n"
                    chars.append(line[i])
                    i += 1
            assert lm.group() not in labels, f"duplicate label: {line}"
            labels[lm.group()] = "".join(chars)
            i += 1
            if line[i] == ",":
                i += 1
        i += 1
    assert line[i] == " ", line
    raw = line[i + 1:]
    assert VALUE.fullmatch(raw), f"bad value {raw!r}"
    return name, labels, float(raw)


def samples(fams: dict[str, Family], name: str, family: str | None = None) -> dict[tuple[tuple[str, str], ...], float]:
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for sample_name, labels, value in fams[family or name].samples:
        if sample_name == name:
            key = tuple(sorted(labels.items()))
            assert key not in out, f"duplicate series {name}{labels}"
            out[key] = value
    return out


def value(fams: dict[str, Family], name: str, family: str | None = None, **labels: str) -> float:
    return samples(fams, name, family)[tuple(sorted(labels.items()))]


def request(m: Metrics, **overrides: object) -> None:
    kwargs: dict[str, object] = {
        "key_id": "key-1", "model": "gpt-4o", "upstream": "acct-1", "endpoint": "/v1/chat/completions",
        "status": 200, "latency_s": 0.2, "ttfb_s": 0.05, "input_tokens": 10, "output_tokens": 5,
        "cached_tokens": 0, "reasoning_tokens": 0, "cost_usd": 0.001,
    }
    kwargs.update(overrides)
    m.request(**kwargs)  # type: ignore[arg-type]


def render(m: Metrics, upstreams: list[dict[str, object]] | None = None) -> dict[str, Family]:
    return parse(m.render(upstreams or []).decode())


ALL_FAMILIES = {
    "poolgate_requests_total": "counter",
    "poolgate_tokens_total": "counter",
    "poolgate_cost_usd_total": "counter",
    "poolgate_request_duration_seconds": "histogram",
    "poolgate_time_to_first_byte_seconds": "histogram",
    "poolgate_quota_rejections_total": "counter",
    "poolgate_upstream_inflight": "gauge",
    "poolgate_upstream_usable": "gauge",
    "poolgate_upstream_cooling_down": "gauge",
    "poolgate_upstream_ejected": "gauge",
    "poolgate_upstream_consecutive_failures": "gauge",
    "poolgate_upstream_latency_ewma_seconds": "gauge",
    "poolgate_upstream_remaining_requests": "gauge",
}


def test_empty_metrics_render_every_family_with_help_and_type_and_no_samples() -> None:
    raw = Metrics().render()
    assert isinstance(raw, bytes) and raw.endswith(b"\n")
    fams = parse(raw.decode())
    assert {name: fam.type for name, fam in fams.items()} == ALL_FAMILIES
    assert all(not fam.samples for fam in fams.values())
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_request_counters_add_up_per_label_set() -> None:
    m = Metrics()
    for _ in range(3):
        request(m)
    request(m, status=429, upstream=None)
    request(m, key_id="key-2", endpoint="/v1/embeddings", output_tokens=0)
    fams = render(m)
    assert samples(fams, "poolgate_requests_total") == {
        (("endpoint", "/v1/chat/completions"), ("key", "key-1"), ("model", "gpt-4o"), ("status", "200"),
         ("upstream", "acct-1")): 3,
        (("endpoint", "/v1/chat/completions"), ("key", "key-1"), ("model", "gpt-4o"), ("status", "429"),
         ("upstream", "")): 1,
        (("endpoint", "/v1/embeddings"), ("key", "key-2"), ("model", "gpt-4o"), ("status", "200"),
         ("upstream", "acct-1")): 1,
    }


def test_tokens_add_up_by_kind_and_zero_increments_make_no_series() -> None:
    m = Metrics()
    request(m, input_tokens=10, output_tokens=5, cached_tokens=4, reasoning_tokens=0)
    request(m, input_tokens=7, output_tokens=0, cached_tokens=0, reasoning_tokens=3)
    request(m, upstream="acct-2", input_tokens=1, output_tokens=0, cached_tokens=0, reasoning_tokens=0)
    fams = render(m)
    tokens = {dict(k)["upstream"] + "/" + dict(k)["kind"]: v for k, v in samples(fams, "poolgate_tokens_total").items()}
    assert tokens == {"acct-1/input": 17, "acct-1/output": 5, "acct-1/cached": 4, "acct-1/reasoning": 3,
                      "acct-2/input": 1}


def test_cost_is_a_float_counter_per_key_and_model() -> None:
    m = Metrics()
    request(m, cost_usd=0.25)
    request(m, cost_usd=1.25)
    request(m, model="o3", cost_usd=0.001)
    request(m, model="free", cost_usd=0.0)
    fams = render(m)
    assert samples(fams, "poolgate_cost_usd_total") == {
        (("key", "key-1"), ("model", "gpt-4o")): 1.5,
        (("key", "key-1"), ("model", "o3")): 0.001,
        (("key", "key-1"), ("model", "free")): 0.0,
    }
    text = m.render().decode()
    assert 'poolgate_cost_usd_total{key="key-1",model="gpt-4o"} 1.5\n' in text
    assert 'poolgate_cost_usd_total{key="key-1",model="o3"} 0.001\n' in text


def test_duration_histogram_is_cumulative_with_inf_equal_to_count_and_exact_sum() -> None:
    m = Metrics()
    observations = [0.001, 0.005, 0.2, 0.2, 1.0, 7.5, 400.0]
    for latency in observations:
        request(m, latency_s=latency)
    request(m, model="other", latency_s=0.3)
    fams = render(m)
    name = "poolgate_request_duration_seconds"
    labels = {"model": "gpt-4o", "endpoint": "/v1/chat/completions"}
    series = samples(fams, name + "_bucket", name).items()
    buckets = {dict(k)["le"]: v for k, v in series if dict(k)["model"] == "gpt-4o"}
    les = list(buckets)
    assert les[-1] == "+Inf" and [float(le) for le in les[:-1]] == list(DEFAULT_LATENCY_BUCKETS)
    counts = list(buckets.values())
    assert counts == sorted(counts), "buckets must be cumulative"
    for le, count in buckets.items():
        assert count == sum(1 for o in observations if o <= float(le))
    assert buckets["0.005"] == 2 and buckets["1"] == 5 and buckets["300"] == 6
    assert buckets["+Inf"] == value(fams, name + "_count", name, **labels) == len(observations)
    assert value(fams, name + "_sum", name, **labels) == pytest.approx(sum(observations))
    assert value(fams, name + "_count", name, model="other", endpoint="/v1/chat/completions") == 1


def test_ttfb_histogram_only_counts_requests_that_have_one() -> None:
    m = Metrics()
    request(m, ttfb_s=0.05)
    request(m, ttfb_s=0.15)
    request(m, ttfb_s=None)
    request(m, endpoint="/v1/embeddings", ttfb_s=None)
    fams = render(m)
    name = "poolgate_time_to_first_byte_seconds"
    assert samples(fams, name + "_count", name) == {(("endpoint", "/v1/chat/completions"), ("model", "gpt-4o")): 2}
    assert value(fams, name + "_sum", name, model="gpt-4o", endpoint="/v1/chat/completions") == pytest.approx(0.2)
    duration = "poolgate_request_duration_seconds"
    assert value(fams, duration + "_count", duration, model="gpt-4o", endpoint="/v1/chat/completions") == 3


def test_custom_buckets_and_whole_numbers_render_without_a_decimal_point() -> None:
    m = Metrics(latency_buckets=(0.5, 1, 2))
    request(m, latency_s=1.0)
    request(m, latency_s=2.0)
    text = m.render().decode()
    series = 'poolgate_request_duration_seconds_{}{{model="gpt-4o",endpoint="/v1/chat/completions"{}}} {}\n'
    assert series.format("bucket", ',le="0.5"', 0) in text
    assert series.format("bucket", ',le="1"', 1) in text
    assert series.format("bucket", ',le="2"', 2) in text
    assert series.format("bucket", ',le="+Inf"', 2) in text
    assert series.format("sum", "", 3) in text
    parse(text)


@pytest.mark.parametrize("buckets", [(1.0, 0.5), (1.0, 1.0), (0.5, math.inf), (math.nan,)])
def test_bad_buckets_are_refused(buckets: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="buckets"):
        Metrics(latency_buckets=buckets)


def test_label_values_are_escaped() -> None:
    m = Metrics()
    nasty = 'a"b\\c\nd'
    request(m, key_id=nasty, model=nasty, upstream=nasty, endpoint=nasty)
    m.quota_rejected(key_id=nasty, kind="tokens")
    text = m.render([{"name": nasty, "inflight": 1}]).decode()
    assert 'key="a\\"b\\\\c\\nd"' in text
    assert "\nd" not in text
    fams = parse(text)
    [(labels, count)] = samples(fams, "poolgate_requests_total").items()
    assert dict(labels) == {"key": nasty, "model": nasty, "upstream": nasty, "endpoint": nasty, "status": "200"}
    assert count == 1
    assert value(fams, "poolgate_quota_rejections_total", key=nasty, kind="tokens") == 1
    assert value(fams, "poolgate_upstream_inflight", upstream=nasty) == 1


def test_quota_rejections_count_by_key_and_kind() -> None:
    m = Metrics()
    for kind in ("requests", "requests", "tokens", "concurrency", "budget"):
        m.quota_rejected(key_id="key-1", kind=kind)
    m.quota_rejected(key_id="key-2", kind="budget")
    fams = render(m)
    assert samples(fams, "poolgate_quota_rejections_total") == {
        (("key", "key-1"), ("kind", "requests")): 2,
        (("key", "key-1"), ("kind", "tokens")): 1,
        (("key", "key-1"), ("kind", "concurrency")): 1,
        (("key", "key-1"), ("kind", "budget")): 1,
        (("key", "key-2"), ("kind", "budget")): 1,
    }
    assert not fams["poolgate_requests_total"].samples


def test_upstream_gauges_come_from_snapshots_labelled_by_name() -> None:
    upstreams: list[dict[str, object]] = [
        {"id": "abc", "name": "acct-1", "tier": 0, "weight": 1.0, "inflight": 2, "cooling_down_s": 0.0,
         "ejected_s": 12.5, "consecutive_failures": 3, "latency_ewma_ms": 12.5, "remaining_requests": 99},
        {"id": "def", "name": "acct-2", "tier": 1, "weight": 0.5, "inflight": 0, "cooling_down_s": 4.2,
         "ejected_s": 0.0, "consecutive_failures": 0, "latency_ewma_ms": 0.0, "remaining_requests": None},
    ]
    m = Metrics()
    fams = render(m, upstreams)

    def gauge(name: str) -> dict[str, float]:
        return {dict(k)["upstream"]: v for k, v in samples(fams, f"poolgate_upstream_{name}").items()}

    assert gauge("inflight") == {"acct-1": 2, "acct-2": 0}
    assert gauge("cooling_down") == {"acct-1": 0, "acct-2": 1}
    assert gauge("ejected") == {"acct-1": 1, "acct-2": 0}
    assert gauge("consecutive_failures") == {"acct-1": 3, "acct-2": 0}
    assert gauge("latency_ewma_seconds") == {"acct-1": 0.0125, "acct-2": 0}
    assert gauge("remaining_requests") == {"acct-1": 99}
    text = m.render(upstreams).decode()
    assert 'poolgate_upstream_cooling_down{upstream="acct-2"} 1\n' in text
    assert 'poolgate_upstream_latency_ewma_seconds{upstream="acct-1"} 0.0125\n' in text
    assert "abc" not in text, "the label is the name, not the id"


def test_upstreams_can_be_any_iterable_and_a_generator_is_read_once() -> None:
    snaps = ({"id": str(i), "name": f"acct-{i}", "inflight": i} for i in range(3))
    fams = parse(Metrics().render(snaps).decode())
    assert {dict(k)["upstream"]: v for k, v in samples(fams, "poolgate_upstream_inflight").items()} == {
        "acct-0": 0, "acct-1": 1, "acct-2": 2,
    }
    assert not fams["poolgate_upstream_remaining_requests"].samples


def test_render_does_not_change_state() -> None:
    m = Metrics()
    request(m)
    m.quota_rejected(key_id="key-1", kind="requests")
    assert m.render() == m.render()
