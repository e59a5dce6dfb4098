"""``create_app(settings)``: the Litestar application; its lifespan owns every resource."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide

from app.errors import exception_handler
from app.routes import ROUTES
from app.services import Services
from app.settings import Settings

__all__ = ["create_app", "create_app_from_env"]


def _services(state: State) -> Services:
    services: Services = state.services
    return services


def create_app(settings: Settings) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services = await Services.open(settings)
        app.state.services = services
        # What start-up loaded (keys, catalog, framework) lives as long as the process: keep it out
        # of the collector's full passes, which otherwise pause every request for tens of ms.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await services.close()

    return Litestar(
        route_handlers=ROUTES,
        lifespan=[lifespan],
        dependencies={"services": Provide(_services, sync_to_thread=False)},
        exception_handlers={Exception: exception_handler},
        openapi_config=None,
        logging_config=None,
        debug=False,
        request_max_body_size=settings.max_body_bytes,
    )


class _DeniedUpgradeFilter(logging.Filter):
    """uvicorn's WebSocket protocol logs an ERROR after any upgrade answered with a plain HTTP
    response (our 426 for /v1/responses), although the client got that answer as sent."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


def create_app_from_env() -> Litestar:
    """Factory for ``uvicorn --factory``: settings from the environment."""
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.error").addFilter(_DeniedUpgradeFilter())
    return create_app(settings)
