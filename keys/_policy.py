"""What a key may do: which models, efforts, modalities; in which order; within which quotas.

Policies are immutable values. Model patterns are compiled once, so matching on the
hot path is one regular-expression call. Keys whose policies give the same model view share
one ``view_fingerprint``, which is what rendered views are cached under.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgspec

__all__ = [
    "BUDGET_PERIODS",
    "EFFORTS",
    "MODALITIES",
    "SERVICE_TIERS",
    "VERBOSITIES",
    "Matcher",
    "NameIndex",
    "Policy",
    "PolicyError",
    "Quotas",
    "validate_pattern",
]

BudgetPeriod = Literal["day", "week", "month"]
BUDGET_PERIODS: tuple[str, ...] = ("day", "week", "month")
EFFORTS: tuple[str, ...] = ("none", "minimal", "low", "medium", "high", "xhigh")
MODALITIES: tuple[str, ...] = ("text", "image", "audio", "video", "pdf", "embedding")
VERBOSITIES: tuple[str, ...] = ("low", "medium", "high")
SERVICE_TIERS: tuple[str, ...] = ("auto", "default", "flex", "scale", "priority")
_PATTERN = re.compile(r"^[A-Za-z0-9*?][A-Za-z0-9._:/@+*?-]*$")


class PolicyError(ValueError):
    """A policy value is not acceptable; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Quotas:
    """Per-key limits; None means unlimited."""

    rpm: int | None = None
    rpd: int | None = None
    tpm: int | None = None
    tpd: int | None = None
    max_concurrency: int | None = None
    budget_usd: float | None = None
    budget_period: BudgetPeriod | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "rpd", "tpm", "tpd", "max_concurrency"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 1_000_000_000:
                raise PolicyError(f"{name} must be between 1 and 1000000000, got {value}")
        if self.budget_usd is not None:
            if not 0 < self.budget_usd <= 10_000_000:
                raise PolicyError(f"budget must be a positive amount of USD, got {self.budget_usd}")
            if self.budget_period is None:
                raise PolicyError("a budget needs a period: day, week or month")
        elif self.budget_period is not None:
            raise PolicyError("a budget period was given without a budget amount")
        if self.budget_period is not None and self.budget_period not in BUDGET_PERIODS:
            raise PolicyError(f"budget period must be day, week or month, got {self.budget_period!r}")


def validate_pattern(pattern: str) -> str:
    """A model pattern: an id, an alias, or a glob with ``*`` and ``?``."""
    cleaned = pattern.strip()
    if not cleaned or not _PATTERN.match(cleaned) or len(cleaned) > 200:
        raise PolicyError(
            f"invalid model pattern {pattern!r}: use model ids, aliases or globs like 'gpt-5*' "
            "(letters, digits and . _ : / @ + - * ?)"
        )
    return cleaned


def _glob_regex(pattern: str) -> str:
    """A validated glob as a regex over one line: ``*`` and ``?`` never cross a newline."""
    return "".join("[^\n]*" if c == "*" else "[^\n]" if c == "?" else re.escape(c) for c in pattern)


class Matcher:
    """Compiled model patterns. Globs match canonical ids only; exact names match an id or an alias.

    Matching globs against canonical ids keeps an operator's alias from widening a key's
    access (an alias ``gpt-5-fast`` for a Claude model does not fall under ``gpt-5*``),
    while naming an alias exactly still grants its model.
    """

    __slots__ = ("_line", "_one", "exact", "globs")

    def __init__(self, patterns: Sequence[str]) -> None:
        lowered = [p.lower() for p in patterns]
        self.exact = frozenset(p for p in lowered if "*" not in p and "?" not in p)
        self.globs = tuple(p for p in lowered if "*" in p or "?" in p)
        body = "|".join(_glob_regex(g) for g in self.globs)
        self._one = re.compile(body).fullmatch if self.globs else None

    def matches(self, names: Sequence[str]) -> bool:
        """``names[0]`` is the canonical id, the rest its aliases (any case)."""
        if self._one is not None and self._one(names[0].lower()):
            return True
        return any(name.lower() in self.exact for name in names) if self.exact else False

    def find(self, index: NameIndex) -> set[int]:
        """Positions of every model in ``index`` this matcher accepts."""
        found = {index.by_name[name] for name in self.exact if name in index.by_name}
        for glob in self.globs:
            found |= index.glob(glob)
        return found


class NameIndex:
    """A catalog's model names laid out for bulk matching, built once per catalog version.

    Each glob is scanned over all canonical ids once (one regex pass over one text) and
    its matches are kept, so keys that share patterns share the work.
    """

    __slots__ = ("_globs", "by_name", "line_starts", "text")

    def __init__(self, models: Sequence[Sequence[str]]) -> None:
        ids = [names[0].lower() for names in models]
        self.text = "\n".join(ids)
        self.line_starts: dict[int, int] = {}
        offset = 0
        for position, model_id in enumerate(ids):
            self.line_starts[offset] = position
            offset += len(model_id) + 1
        self.by_name: dict[str, int] = {}
        for position, names in enumerate(models):
            for name in names:
                self.by_name.setdefault(name.lower(), position)
        self._globs: dict[str, frozenset[int]] = {}

    def glob(self, pattern: str) -> frozenset[int]:
        """Positions of the canonical ids a lower-cased glob matches (cached)."""
        hit = self._globs.get(pattern)
        if hit is None:
            line = re.compile(f"^{_glob_regex(pattern)}$", re.MULTILINE)
            starts = self.line_starts
            hit = self._globs[pattern] = frozenset(starts[m.start()] for m in line.finditer(self.text))
        return hit


def _choices(values: Iterable[str] | None, allowed: tuple[str, ...], what: str) -> tuple[str, ...] | None:
    if values is None:
        return None
    out: list[str] = []
    for raw in values:
        value = raw.strip().lower()
        if value not in allowed:
            raise PolicyError(f"unknown {what} {raw!r}: expected {', '.join(allowed)}")
        if value not in out:
            out.append(value)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Policy:
    """A key's rights. ``None`` for a choice list means "no restriction"."""

    allowed_models: tuple[str, ...] = ()
    allowed_reasoning_efforts: tuple[str, ...] | None = None
    allowed_modalities: tuple[str, ...] | None = None
    allowed_verbosities: tuple[str, ...] | None = None
    allowed_service_tiers: tuple[str, ...] | None = None
    priority_rules: tuple[str, ...] = ()
    tier: int = 0
    quotas: Quotas = field(default_factory=Quotas)
    _allow: Matcher = field(init=False, repr=False, compare=False)
    _rules: tuple[Matcher, ...] = field(init=False, repr=False, compare=False)
    view_fingerprint: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        models = tuple(dict.fromkeys(validate_pattern(p) for p in self.allowed_models))
        rules = tuple(dict.fromkeys(validate_pattern(p) for p in self.priority_rules))
        set_ = object.__setattr__
        set_(self, "allowed_models", models)
        set_(self, "priority_rules", rules)
        set_(self, "allowed_reasoning_efforts",
             _choices(self.allowed_reasoning_efforts, EFFORTS, "reasoning effort"))
        set_(self, "allowed_modalities", _choices(self.allowed_modalities, MODALITIES, "modality"))
        set_(self, "allowed_verbosities", _choices(self.allowed_verbosities, VERBOSITIES, "verbosity"))
        set_(self, "allowed_service_tiers", _choices(self.allowed_service_tiers, SERVICE_TIERS, "service tier"))
        if not 0 <= self.tier <= 100:
            raise PolicyError(f"tier must be between 0 and 100, got {self.tier}")
        set_(self, "_allow", Matcher(models))
        set_(self, "_rules", tuple(Matcher([rule]) for rule in rules))
        view = [models, rules, self.allowed_reasoning_efforts, self.allowed_modalities, self.allowed_verbosities]
        set_(self, "view_fingerprint", hashlib.sha256(msgspec.json.encode(view)).hexdigest()[:20])

    def allows_model(self, names: Sequence[str]) -> bool:
        """Whether the key may call a model; ``names`` is its canonical id, then its aliases."""
        return self._allow.matches(names)

    def rank(self, names: Sequence[str]) -> int:
        """Index of the first priority rule naming the model; models no rule names come last."""
        for position, rule in enumerate(self._rules):
            if rule.matches(names):
                return position
        return len(self._rules)

    def select(self, index: NameIndex) -> list[tuple[int, int]]:
        """Bulk form for catalog views: ``(rank, position)`` of every allowed model, by position."""
        allowed = self._allow.find(index)
        if not allowed:
            return []
        last = len(self._rules)
        ranks: dict[int, int] = {}
        for position, rule in enumerate(self._rules):
            for found in rule.find(index):
                ranks.setdefault(found, position)
        return [(ranks.get(p, last), p) for p in sorted(allowed)]

    def to_dict(self) -> dict[str, object]:
        q = self.quotas
        return {
            "allowed_models": list(self.allowed_models),
            "allowed_reasoning_efforts": _list(self.allowed_reasoning_efforts),
            "allowed_modalities": _list(self.allowed_modalities),
            "allowed_verbosities": _list(self.allowed_verbosities),
            "allowed_service_tiers": _list(self.allowed_service_tiers),
            "priority_rules": list(self.priority_rules),
            "tier": self.tier,
            "quotas": {
                "rpm": q.rpm, "rpd": q.rpd, "tpm": q.tpm, "tpd": q.tpd,
                "max_concurrency": q.max_concurrency,
                "budget_usd": q.budget_usd, "budget_period": q.budget_period,
            },
        }


def _list(values: tuple[str, ...] | None) -> list[str] | None:
    return None if values is None else list(values)


def policy_from_dict(data: dict[str, object]) -> Policy:
    """Inverse of :meth:`Policy.to_dict`; raises PolicyError on values that do not fit."""
    try:
        quotas = data.get("quotas") or {}
        if not isinstance(quotas, dict):
            raise PolicyError("stored policy is malformed: quotas is not an object")
        return Policy(
            allowed_models=tuple(data.get("allowed_models") or ()),  # type: ignore[arg-type]
            allowed_reasoning_efforts=_opt_tuple(data.get("allowed_reasoning_efforts")),
            allowed_modalities=_opt_tuple(data.get("allowed_modalities")),
            allowed_verbosities=_opt_tuple(data.get("allowed_verbosities")),
            allowed_service_tiers=_opt_tuple(data.get("allowed_service_tiers")),
            priority_rules=tuple(data.get("priority_rules") or ()),  # type: ignore[arg-type]
            tier=int(data.get("tier") or 0),  # type: ignore[call-overload]
            quotas=Quotas(**quotas),
        )
    except (TypeError, ValueError, KeyError) as exc:
        if isinstance(exc, PolicyError):
            raise
        raise PolicyError(f"stored policy is malformed: {exc}") from None


def _opt_tuple(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise PolicyError(f"stored policy is malformed: expected a list, got {type(value).__name__}")
    return tuple(str(v) for v in value)
