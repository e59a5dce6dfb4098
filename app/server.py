"""``create_app(settings)``: the Litestar application. Its lifespan builds every resource (each handed to
constructors what it needs), puts each on ``app.state`` under its own name, and closes them all.

Handlers get each resource through one ``Provide`` apiece. The relayed endpoints are plain ASGI
routes (``routes/openai.py``) that read the same resources from ``app.state``: they skip the
framework's per-request work, which buys nothing there (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.types import Message, Receive, Scope, Send
from sqlalchemy.exc import OperationalError, ProgrammingError

from app._db import create_engine, read_meta
from app._logs import configure as configure_logs
from app._memory import return_large_buffers
from app._redis import RedisLink
from app._sync import Refreshable, Syncer
from app.admin import AdminCache, AdminService, AdminStore, SignInGuard
from app.catalog import CatalogService
from app.crypto import Vault, VaultError
from app.errors import as_gateway_error, exception_handler
from app.fleet import Fleet, fleet_url
from app.metrics import Metrics
from app.pool import Pool, UpstreamState, UpstreamStore
from app.proxy import H1Transport, ProxyService, Relay, Transport, new_request_id
from app.proxy._continuity import Continuity
from app.proxy._owners import ResponseOwners
from app.quota import BudgetReload, OutputEstimates, QuotaService
from app.routes import route_handlers
from app.settings import Settings, SettingsError
from app.usage import UsageRecorder, spend_since
from keys import KeyCache, KeyStore

__all__ = ["Clock", "configure_logging", "create_app", "create_app_from_env", "serving"]

log = logging.getLogger("poolgate")

PROVIDED = (
    "settings", "engine", "vault", "key_cache", "catalog", "pool", "quota", "metrics", "recorder", "proxy", "syncer",
    "admins", "admin_service", "guard", "fleet", "continuity", "page_secret", "catalog_sync",
)


@dataclass(frozen=True, slots=True)
class Clock:
    """Time for the parts that measure it: injectable so tests move it instead of sleeping."""

    monotonic: Callable[[], float]
    wall: Callable[[], float]


def _provider(name: str) -> Provide:
    def provide(state: State) -> Any:
        return getattr(state, name)

    provide.__name__ = f"provide_{name}"
    return Provide(provide, sync_to_thread=False)


class _UpstreamSync:
    name = "upstreams"

    def __init__(self, pool: Pool, transport: Transport) -> None:
        self.pool, self.transport = pool, transport

    async def refresh(self) -> bool:
        if not await self.pool.refresh():
            return False
        await self.transport.prune(self.pool.states)
        return True


class _CatalogSync:
    """Reloads the operator's catalog file, and keeps views pre-rendered for the policies in use."""

    name = "catalog"

    def __init__(self, catalog: CatalogService, keys: KeyCache) -> None:
        self.catalog, self.keys = catalog, keys
        self._warmed: tuple[str, int] | None = None
        self.warm = False

    async def refresh(self) -> bool:
        self.catalog.reload_if_changed()
        seen = (self.catalog.catalog.version, self.keys.revision)
        if seen == self._warmed:
            return False
        await self.catalog.warm(self.keys.policies())
        self._warmed = seen
        self.warm = True
        return True


class _KeySync:
    name = "keys"

    def __init__(self, keys: KeyCache) -> None:
        self.keys = keys

    async def refresh(self) -> int:
        return await self.keys.refresh()


async def _request_id(message: Message, scope: Scope) -> None:
    """Every answer carries an ``x-request-id``; the relayed endpoints set their own (the usage row's)."""
    if message["type"] == "http.response.start":
        headers = list(message.get("headers", ()))
        if not any(name == b"x-request-id" for name, _ in headers):
            headers.append((b"x-request-id", new_request_id().encode()))
            message["headers"] = headers


def create_app(settings: Settings, *, transport: Transport | None = None, clock: Clock | None = None) -> Litestar:
    """The app for ``settings``; ``transport`` replaces the upstream HTTP client (tests), ``clock`` the time."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await _open(app.state, settings, stack, transport, clock)
            # What start-up loaded (keys, catalog, framework) lives as long as the process: keep it out
            # of the collector's full passes, which otherwise pause every request for tens of ms.
            gc.collect()
            gc.freeze()
            yield

    return Litestar(
        route_handlers=route_handlers(settings),
        lifespan=[lifespan],
        dependencies={**{name: _provider(name) for name in PROVIDED}, "keys": _provider("key_cache")},
        exception_handlers={Exception: exception_handler},
        openapi_config=None,
        logging_config=None,
        debug=False,
        request_max_body_size=settings.max_body_bytes,
        state=State({"settings": settings}),
        before_send=[_request_id],
    )


async def _open(state: State, settings: Settings, stack: AsyncExitStack, transport: Transport | None,
                clock: Clock | None) -> None:
    """Build every resource in order, each handed what it needs; each registers its closing on ``stack``
    (so they close in the reverse order: the last usage rows are written before the engine goes)."""
    import time

    clock = clock or Clock(time.monotonic, time.time)
    _storage(state, settings, stack)
    _serving(state, settings, stack, transport or H1Transport(settings), clock)
    _administration(state, settings, clock)
    await _start(state, stack)


def _storage(state: State, settings: Settings, stack: AsyncExitStack) -> None:
    state.engine = create_engine(settings)
    stack.push_async_callback(state.engine.dispose)
    state.vault = Vault.from_settings(settings)
    state.metrics = Metrics()
    url = fleet_url(settings.limits_url)
    state.fleet = Fleet(url) if url is not None else None


def _serving(state: State, settings: Settings, stack: AsyncExitStack, transport: Transport, clock: Clock) -> None:
    """What the client endpoints use: keys, catalog, pool, quotas, usage, the relay."""
    engine, vault, metrics, fleet = state.engine, state.vault, state.metrics, state.fleet

    def share_health(upstream: UpstreamState) -> None:
        if fleet is not None:
            now = clock.monotonic()
            fleet.share_health(upstream.id, upstream.cooldown_until - now, upstream.ejected_until - now)

    state.key_cache = KeyCache(KeyStore(engine), clock.monotonic)
    state.catalog = CatalogService(settings.catalog_file)
    state.pool = pool = Pool(UpstreamStore(engine, vault), vault, settings.balancer, clock.monotonic,
                             on_health=share_health)
    state.quota = quota = QuotaService(
        settings.limits_url, settings.quota_fail_open,
        on_reject=lambda key_id, kind: metrics.quota_rejected(key_id=key_id, kind=kind), clock=clock.wall)
    stack.push_async_callback(quota.close)
    state.recorder = UsageRecorder(
        engine, data_dir=settings.data_dir if settings.data_dir.is_dir() else None,
        queue_limit=settings.usage_queue, on_spill=metrics.usage_spilled)
    state.transport = transport
    stack.push_async_callback(transport.close)
    url = fleet_url(settings.limits_url)
    owners = ResponseOwners(RedisLink(url, size=2, timeout=1.0) if url is not None else None)
    stack.push_async_callback(owners.close)
    state.continuity = continuity = Continuity(owners, pool, settings.owner_wait, clock.monotonic)
    state.proxy = ProxyService(Relay(pool, transport, settings), state.catalog, quota, state.recorder, metrics,
                               OutputEstimates(), owner_of=continuity.owner_of, on_answer=continuity.remember)


def _administration(state: State, settings: Settings, clock: Clock) -> None:
    """Admins, the sync loop over everything that changes elsewhere, and the admin service layer."""
    engine, keys, fleet = state.engine, state.key_cache, state.fleet
    state.admins = AdminCache(AdminStore(engine), clock.monotonic)
    state.guard = SignInGuard(clock.monotonic)
    state.catalog_sync = _CatalogSync(state.catalog, keys)
    parts: list[Refreshable] = [
        _KeySync(keys), _UpstreamSync(state.pool, state.transport), state.admins,
        BudgetReload(state.quota.budgets, keys, lambda since: spend_since(engine, since)), state.catalog_sync,
    ]
    if fleet is not None:
        parts.append(_ReplicaSnapshot(state))
    state.syncer = syncer = Syncer(parts, settings.sync_interval)

    async def refresh_here(what: str) -> None:
        await syncer.once()

    async def announce(what: str) -> bool:
        return await fleet.announce(what) if fleet is not None else False

    state.admin_service = AdminService(engine, state.vault, refresh=refresh_here, announce=announce)


async def _start(state: State, stack: AsyncExitStack) -> None:
    """The first loads (a database that is not ready stops the start in one line), then the background work."""
    return_large_buffers()
    try:
        await state.key_cache.refresh()
        await state.pool.refresh()
        await state.admins.refresh()
        await state.recorder.open()
        state.page_secret = bytes.fromhex(await read_meta(state.engine, "page_token_secret") or "")
    except (OperationalError, ProgrammingError) as exc:
        raise SettingsError(
            f"the database at POOLGATE_DATABASE_URL is not ready ({exc.orig}); run `poolgate db upgrade`"
        ) from None
    except VaultError as exc:
        raise SettingsError(str(exc)) from None
    stack.push_async_callback(state.recorder.close)
    await state.syncer.once()
    state.syncer.start()
    stack.push_async_callback(state.syncer.close)
    if state.fleet is not None:
        await state.fleet.start(on_health=state.pool.apply_shared, on_change=state.syncer.wake)
        stack.push_async_callback(state.fleet.close)


class _ReplicaSnapshot:
    """Every few seconds, this replica's view of the pool goes to Redis, for the admin API's health page."""

    name = "replica snapshot"
    EVERY = 5.0

    def __init__(self, state: State) -> None:
        self._state = state
        self._due = 0.0

    async def refresh(self) -> bool:
        import time

        if time.monotonic() < self._due:
            return False
        self._due = time.monotonic() + self.EVERY
        from app.routes.admin_api import replica_snapshot

        await self._state.fleet.publish_snapshot(replica_snapshot(self._state))
        return True


class _DeniedUpgradeFilter(logging.Filter):
    """uvicorn's WebSocket protocol logs an ERROR after any upgrade answered with a plain HTTP
    response (a 401 or 426 on /v1/responses), although the client got that answer as sent."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


class _Serving:
    """What the server runs: the relayed POSTs straight to their handlers, everything else to the app.

    The framework's per-request layers (its exception middleware, router, request-id hook) cost about a
    tenth of a relayed request's CPU and do nothing there: those handlers answer every outcome, errors
    included, with their own envelope and ``x-request-id``. Lifespan and every other path go to the app.
    """

    def __init__(self, app: Litestar) -> None:
        from app.routes.openai import HOT_PATHS

        self.app = app
        self.hot = HOT_PATHS
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope.get("method") == "POST":
            handler = self.hot.get(scope["path"])
            if handler is not None:
                scope["app"] = self.app
                try:
                    await handler(scope, receive, send)
                except Exception as exc:  # a bug: the framework's handler would have made it a 500 envelope
                    from app.routes._asgi import send_error

                    with contextlib.suppress(Exception):  # (unless the answer had already begun)
                        await send_error(send, as_gateway_error(exc, f"POST {scope['path']}"))
                return
        await self.app(scope, receive, send)


def configure_logging(level: str) -> None:
    """Logging for a serving process: poolgate's format, and no line for upgrades refused on purpose."""
    configure_logs(level)
    logging.getLogger("uvicorn.error").addFilter(_DeniedUpgradeFilter())


def serving(app: Litestar) -> Any:
    """The ASGI callable to give the server for ``app`` (see ``_Serving``)."""
    return _Serving(app)


def create_app_from_env() -> Any:
    """Factory for ``uvicorn --factory``: settings from the environment."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return serving(create_app(settings))
