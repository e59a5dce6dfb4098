"""Everything a serving process holds open, created and closed by the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.catalog import CatalogService
from app.crypto import Vault, VaultError
from app.db import create_engine, read_meta
from app.fleet import Fleet, fleet_url
from app.metrics import Metrics
from app.pool import Pool, UpstreamState, UpstreamStore
from app.proxy import ProxyService, Relay
from app.quota import QuotaService, period_bounds
from app.settings import Settings, SettingsError
from app.usage._recorder import UsageRecorder, spend_since
from keys import KeyCache, KeyStore

__all__ = ["Services"]

log = logging.getLogger("poolgate")
BUDGET_REFRESH = 5.0  # seconds between reloads of spend from the database


class Services:
    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.store = KeyStore(engine)
        self.keys = KeyCache(self.store)
        self.catalog = CatalogService(settings.catalog_file)
        self.quota = QuotaService(settings.limits_url, settings.quota_fail_open)
        self.vault = Vault.from_settings(settings)
        self.pool = Pool(UpstreamStore(engine, self.vault), self.vault, settings.balancer)
        self.relay = Relay(self.pool, settings)
        self.recorder = UsageRecorder(engine)
        self.metrics = Metrics()
        self.quota.on_reject = lambda key_id, kind: self.metrics.quota_rejected(key_id=key_id, kind=kind)
        self.proxy = ProxyService(self.relay, self.catalog, self.quota, self.recorder, self.metrics)
        self.last_sync = 0.0
        self.page_secret = b""
        self.views_warm = False
        self._sync_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        url = fleet_url(settings.limits_url)
        self.fleet = Fleet(url) if url is not None else None
        if self.fleet is not None:
            self.pool.on_health = self._share_health
            self.fleet.on_health = self.pool.apply_shared
            self.fleet.on_change = lambda _what: self._wake.set()

    def _share_health(self, state: UpstreamState) -> None:
        assert self.fleet is not None
        now = self.pool.clock()
        self.fleet.share_health(state.id, state.cooldown_until - now, state.ejected_until - now)

    @classmethod
    async def open(cls, settings: Settings) -> Services:
        engine = create_engine(settings)
        services = cls(settings, engine)
        try:
            await services.keys.refresh()
            await services.pool.refresh()
            await services.recorder.open()
            await services.refresh_budgets()
            services.page_secret = bytes.fromhex(await read_meta(engine, "page_token_secret") or "")
        except (OperationalError, ProgrammingError) as exc:
            await engine.dispose()
            raise SettingsError(
                f"the database at POOLGATE_DATABASE_URL is not ready ({exc.orig}); run `poolgate db upgrade`"
            ) from None
        except VaultError as exc:
            await engine.dispose()
            raise SettingsError(str(exc)) from None
        services.last_sync = time.monotonic()
        services._sync_task = asyncio.create_task(services._sync_forever(), name="poolgate-sync")
        if services.fleet is not None:
            await services.fleet.start()
        return services

    async def _sync_forever(self) -> None:
        """Pick up key, upstream and catalog changes made elsewhere: once per sync interval, or at
        once when another process announces a change through Redis."""
        interval = self.settings.sync_interval
        budgets_due = time.monotonic() + BUDGET_REFRESH
        await self.catalog.warm(self.keys.policies())
        self.views_warm = True
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            # Each step guards itself: nothing may end this loop, or revocations would stop arriving.
            changed = 0
            try:
                changed = await self.keys.refresh()
                self.last_sync = time.monotonic()
            except Exception as exc:  # the next round tries again; requests keep the last good cache
                log.warning("key sync failed, serving the cached keys: %s", exc)
            if time.monotonic() >= budgets_due:
                budgets_due = time.monotonic() + BUDGET_REFRESH
                try:
                    await self.refresh_budgets()
                except Exception as exc:
                    log.warning("budget refresh failed, keeping the running totals: %s", exc)
            try:
                if await self.pool.refresh():
                    await self.relay.prune()
            except Exception as exc:
                log.warning("upstream sync failed, keeping the current pool: %s", exc)
            try:
                if self.catalog.reload_if_changed() or changed:
                    await self.catalog.warm(self.keys.policies())
            except Exception:
                log.exception("catalog reload failed; still serving version %s", self.catalog.catalog.version)

    async def refresh_budgets(self) -> None:
        """Spend per budgeted key this period, from the usage rows every replica writes."""
        if not any(policy.quotas.budget_period for policy in self.keys.policies()):
            return  # the common case: no key has a budget, so no need to walk every cached key
        now = datetime.now(UTC)
        budgeted = [k for k in self.keys.records() if k.policy.quotas.budget_period is not None]
        periods = {k.policy.quotas.budget_period for k in budgeted}
        for period in periods:
            assert period is not None
            start, _ = period_bounds(period, now)
            spent = await spend_since(self.engine, start)
            for key in budgeted:
                if key.policy.quotas.budget_period == period:
                    self.quota.budgets.load(key.id, period, spent.get(key.id, 0.0), now)

    async def ready(self) -> tuple[bool, str]:
        if not self.views_warm:
            return False, "pre-rendering model views"
        stale = time.monotonic() - self.last_sync
        if stale > max(10.0, self.settings.sync_interval * 20):
            return False, f"key store not synced for {stale:.0f}s"
        try:
            async with asyncio.timeout(2.0), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            return False, f"database unreachable: {exc.__class__.__name__}"
        return True, "ready"

    async def close(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        if self.fleet is not None:
            await self.fleet.close()
        await self.relay.close()
        await self.recorder.close()
        await self.quota.close()
        await self.engine.dispose()
