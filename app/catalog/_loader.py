"""Build the catalog: the bundled file, merged with the operator's file.

The operator file (JSON, or TOML by its ``.toml`` suffix) may hold three things::

    models  = [{id = "gpt-5.1-codex", priority = 200}, {id = "my-llama", display_name = "Llama"}]
    hide    = ["gpt-4o*", "o3-mini"]        # ids or globs; hidden models vanish with their aliases
    aliases = {fast = "gpt-5.1-codex-mini"}

An entry whose id is already in the catalog overrides only the fields it names; any
other entry adds a model. A file that does not validate is refused whole.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import time
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from app.catalog._model import CatalogError, ModelInfo

__all__ = ["Catalog", "build_catalog", "load_bundled", "read_operator_file"]

_TOP_LEVEL = frozenset({"models", "hide", "aliases", "version"})


@dataclass(frozen=True, slots=True)
class Catalog:
    models: tuple[ModelInfo, ...]
    """Every visible model, highest catalog priority first, then by id."""
    by_name: dict[str, ModelInfo]
    """Canonical ids and aliases, each to its model."""
    version: str
    built_at: float = field(default_factory=time.time)
    providers: frozenset[str] = frozenset()

    def resolve(self, name: str) -> ModelInfo | None:
        return self.by_name.get(name)


def load_bundled() -> list[dict[str, Any]]:
    text = resources.files("app.catalog").joinpath("bundled.json").read_text(encoding="utf-8")
    data = json.loads(text)
    models = data["models"]
    assert isinstance(models, list)
    return models


def read_operator_file(path: Path) -> dict[str, Any]:
    """Parse the operator's file; raises CatalogError with the file name and the reason."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode()) if path.suffix.lower() == ".toml" else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: expected an object with models, hide and aliases")
    unknown = sorted(set(data) - _TOP_LEVEL)
    if unknown:
        raise CatalogError(f"{path}: unknown key {unknown[0]!r} (expected models, hide, aliases)")
    return data


def build_catalog(
    bundled: list[dict[str, Any]],
    operator: dict[str, Any] | None = None,
    *,
    source: str = "catalog file",
    created_default: int = 0,
    previous: Catalog | None = None,
) -> Catalog:
    """Merge, validate and index; ``previous`` keeps ``built_at`` when nothing changed."""
    merged: dict[str, dict[str, Any]] = {}
    for entry in bundled:
        merged[entry["id"]] = dict(entry)
    operator = operator or {}
    entries = operator.get("models", [])
    if not isinstance(entries, list):
        raise CatalogError(f"{source}: 'models' must be a list of model entries")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise CatalogError(f"{source}: models[{index}] needs a string 'id'")
        base = merged.get(entry["id"])
        if base is None:
            merged[entry["id"]] = {"created": created_default, **entry}
            continue
        combined = {**base, **entry}
        if isinstance(base.get("codex"), dict) and isinstance(entry.get("codex"), dict):
            combined["codex"] = {**base["codex"], **entry["codex"]}  # override only the codex fields named
        merged[entry["id"]] = combined

    hide = operator.get("hide", [])
    if not isinstance(hide, list) or not all(isinstance(h, str) for h in hide):
        raise CatalogError(f"{source}: 'hide' must be a list of model ids or globs")
    models: dict[str, ModelInfo] = {}
    for model_id, entry in merged.items():
        if any(fnmatch.fnmatchcase(model_id, pattern) for pattern in hide):
            continue
        try:
            models[model_id] = msgspec.convert(entry, ModelInfo).check()
        except msgspec.ValidationError as exc:
            raise CatalogError(f"{source}: model {model_id!r}: {exc}") from None
        except CatalogError as exc:
            raise CatalogError(f"{source}: {exc}") from None

    extra = operator.get("aliases", {})
    if not isinstance(extra, dict):
        raise CatalogError(f"{source}: 'aliases' must map alias names to model ids")
    for alias, target in extra.items():
        model = models.get(target) if isinstance(target, str) else None
        if model is None:
            raise CatalogError(f"{source}: alias {alias!r} points to unknown or hidden model {target!r}")
        models[model.id] = msgspec.structs.replace(model, aliases=tuple(dict.fromkeys((*model.aliases, alias))))

    by_name: dict[str, ModelInfo] = dict(models)
    for model in models.values():
        for alias in model.aliases:
            existing = by_name.get(alias)
            if not alias or any(c.isspace() for c in alias):
                raise CatalogError(f"{source}: model {model.id!r}: invalid alias {alias!r}")
            if existing is not None and existing.id != model.id:
                raise CatalogError(f"{source}: alias {alias!r} of {model.id!r} is already a name of {existing.id!r}")
            by_name[alias] = model

    ordered = tuple(sorted(models.values(), key=lambda m: (-m.priority, m.id)))
    version = hashlib.sha256(msgspec.json.encode(ordered)).hexdigest()[:12]
    if previous is not None and previous.version == version:
        return previous
    return Catalog(
        models=ordered, by_name=by_name, version=version, providers=frozenset(m.provider.lower() for m in ordered)
    )

