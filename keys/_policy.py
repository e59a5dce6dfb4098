"""What a key may do: which models, efforts, modalities; in which order; within which quotas.

Policies are immutable values. Model patterns are compiled once, so matching on the
hot path is one regular-expression call. Keys whose policies give the same model view share
one ``view_fingerprint``, which is what rendered views are cached under.
"""

from __future__ import annotations

import fnmatch
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
    "VERBOSITIES",
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
_PATTERN = re.compile(r"^[A-Za-z0-9*?][A-Za-z0-9._:/@+*?-]*$")
_NEVER = re.compile(r"(?!)")


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


def _compile(patterns: Sequence[str]) -> re.Pattern[str]:
    if not patterns:
        return _NEVER
    return re.compile("|".join(f"(?:{fnmatch.translate(p.lower())})" for p in patterns))


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
    priority_rules: tuple[str, ...] = ()
    tier: int = 0
    quotas: Quotas = field(default_factory=Quotas)
    _allow: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _rules: re.Pattern[str] = field(init=False, repr=False, compare=False)
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
        if not 0 <= self.tier <= 100:
            raise PolicyError(f"tier must be between 0 and 100, got {self.tier}")
        set_(self, "_allow", _compile(models))
        # One alternation, one group per rule: the group that matched is the rule's rank.
        set_(self, "_rules", re.compile("|".join(f"(?P<r{i}>{fnmatch.translate(r.lower())})"
                                                 for i, r in enumerate(rules)))
             if rules else _NEVER)
        view = [models, rules, self.allowed_reasoning_efforts, self.allowed_modalities, self.allowed_verbosities]
        set_(self, "view_fingerprint", hashlib.sha256(msgspec.json.encode(view)).hexdigest()[:20])

    def allows_model(self, names: Iterable[str]) -> bool:
        """True when any of a model's names (its id and aliases) matches an allowed pattern."""
        match = self._allow.match
        return any(match(name.lower()) for name in names)

    def rank(self, names: Sequence[str]) -> int:
        """Index of the first priority rule matching the model; models no rule names come last."""
        best = len(self.priority_rules)
        match = self._rules.match
        for name in names:
            found = match(name.lower())
            if found is not None and found.lastgroup is not None:
                best = min(best, int(found.lastgroup[1:]))
        return best

    def select(self, lowered_names: Sequence[Sequence[str]]) -> list[tuple[int, int]]:
        """Bulk form for catalog views: ``(rank, index)`` of each allowed model.

        ``lowered_names[i]`` holds model i's id and aliases, already lower-cased.
        """
        allow = self._allow.match
        rules = self._rules.match if self.priority_rules else None
        last = len(self.priority_rules)
        out: list[tuple[int, int]] = []
        for index, names in enumerate(lowered_names):
            for name in names:
                if allow(name):
                    break
            else:
                continue
            rank = last
            if rules is not None:
                for name in names:
                    found = rules(name)
                    if found is not None and found.lastgroup is not None:
                        rank = min(rank, int(found.lastgroup[1:]))
            out.append((rank, index))
        return out

    def to_dict(self) -> dict[str, object]:
        q = self.quotas
        return {
            "allowed_models": list(self.allowed_models),
            "allowed_reasoning_efforts": _list(self.allowed_reasoning_efforts),
            "allowed_modalities": _list(self.allowed_modalities),
            "allowed_verbosities": _list(self.allowed_verbosities),
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
        assert isinstance(quotas, dict)
        return Policy(
            allowed_models=tuple(data.get("allowed_models") or ()),  # type: ignore[arg-type]
            allowed_reasoning_efforts=_opt_tuple(data.get("allowed_reasoning_efforts")),
            allowed_modalities=_opt_tuple(data.get("allowed_modalities")),
            allowed_verbosities=_opt_tuple(data.get("allowed_verbosities")),
            priority_rules=tuple(data.get("priority_rules") or ()),  # type: ignore[arg-type]
            tier=int(data.get("tier") or 0),  # type: ignore[call-overload]
            quotas=Quotas(**quotas),
        )
    except (TypeError, AssertionError) as exc:
        raise PolicyError(f"stored policy is malformed: {exc}") from None


def _opt_tuple(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    assert isinstance(value, list | tuple)
    return tuple(str(v) for v in value)
