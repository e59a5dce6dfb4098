"""The live catalog: built at start, rebuilt when the operator file changes."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from app.catalog._loader import Catalog, build_catalog, load_bundled, read_operator_file
from app.catalog._model import CatalogError, parse_version
from app.catalog._views import ModelView, Served, ViewCache
from keys import Policy

__all__ = ["CatalogService"]

log = logging.getLogger("poolgate.catalog")


class CatalogService:
    def __init__(self, catalog_file: Path | None) -> None:
        self._file = catalog_file
        self._bundled: list[dict[str, Any]] = load_bundled()
        self._stamp: tuple[int, int] | None = None
        self._views = ViewCache()
        self._thresholds: tuple[Catalog | None, list[tuple[int, ...]]] = (None, [])
        self.last_error: str | None = None
        self.catalog: Catalog = self._build()

    def _file_stamp(self) -> tuple[int, int] | None:
        if self._file is None:
            return None
        try:
            st = os.stat(self._file)
        except OSError:
            return (-1, -1)
        return (st.st_mtime_ns, st.st_size)

    def _build(self, previous: Catalog | None = None) -> Catalog:
        """Raises CatalogError when the operator file is missing or invalid."""
        self._stamp = self._file_stamp()
        if self._file is None:
            return build_catalog(self._bundled, previous=previous)
        operator = read_operator_file(self._file)
        created = int(self._stamp[0] // 1_000_000_000) if self._stamp else 0
        return build_catalog(
            self._bundled, operator, source=str(self._file), created_default=created, previous=previous
        )

    def reload_if_changed(self) -> bool:
        """Rebuild when the file changed; on error keep serving the old catalog and log why."""
        if self._file is None or self._file_stamp() == self._stamp:
            return False
        try:
            catalog = self._build(self.catalog)
        except CatalogError as exc:
            if str(exc) != self.last_error:
                log.error("catalog file rejected, still serving version %s: %s", self.catalog.version, exc)
            self.last_error = str(exc)
            return False
        self.last_error = None
        changed = catalog is not self.catalog
        if changed:
            log.info("catalog reloaded: version %s, %d models", catalog.version, len(catalog.models))
        self.catalog = catalog
        return changed

    async def warm(self, policies: Iterable[Policy]) -> None:
        await self._views.warm(self.catalog, policies)

    def view(
        self,
        policy: Policy,
        endpoint: str | None = None,
        provider: str | None = None,
        client_version: tuple[int, ...] | None = None,
        served: Served | None = None,
    ) -> ModelView:
        if client_version is not None:
            client_version = self._version_class(client_version)
        return self._views.get(self.catalog, policy, endpoint, provider, client_version, served)

    def served_ids(self, served: Served) -> frozenset[str]:
        """The ids of the catalog's models some upstream serves."""
        models = self.catalog.models
        return frozenset(models[i].id for i in self._views.renderer(self.catalog).served(served))

    def _version_class(self, client_version: tuple[int, ...]) -> tuple[int, ...]:
        """The newest minimal_client_version the client meets: clients alike see the same view, so
        any number of version strings cost one cached view per catalog threshold, not one each."""
        catalog = self.catalog
        if self._thresholds[0] is not catalog:
            found = {parse_version(m.minimal_client_version) for m in catalog.models if m.minimal_client_version}
            self._thresholds = (catalog, sorted(v for v in found if v is not None))
        met = [v for v in self._thresholds[1] if v <= client_version]
        return met[-1] if met else (0,)
