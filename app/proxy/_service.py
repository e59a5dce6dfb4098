"""One proxied request from start to end: read, check, relay, account."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any

from litestar import Response
from litestar.response import Stream

from app._types import AnyRequest
from app.catalog import CatalogService
from app.errors import GatewayError
from app.proxy._relay import Outcome, Relay
from app.proxy._request import parse_request
from keys import KeyRecord

__all__ = ["CLIENT_CLOSED", "ProxyService"]

CLIENT_CLOSED = 499  # the conventional status for "the client went away first"; never sent


class ProxyService:
    def __init__(self, relay: Relay, catalog: CatalogService) -> None:
        self.relay = relay
        self.catalog = catalog

    async def handle(
        self, request: AnyRequest, endpoint: str, key: KeyRecord, key_headers: dict[str, str]
    ) -> Response[Any]:
        raw = await request.body()
        client_request = parse_request(raw, endpoint, key, self.catalog.catalog, request.headers)
        outcome = Outcome(key.id, client_request.model.id, endpoint, client_request.stream)
        try:
            response = await _unless_client_leaves(
                request, self.relay.relay(client_request, request.headers, key.policy.tier, key_headers, outcome)
            )
        except GatewayError as exc:
            outcome.status, outcome.error = exc.status_code, exc.code
            outcome.log()
            raise
        if response is None:
            outcome.status, outcome.error = CLIENT_CLOSED, "client_closed"
            outcome.log()
            return Response(content=b"", status_code=CLIENT_CLOSED)
        if not isinstance(response, Stream):
            outcome.log()  # a stream logs itself when it ends
        return response


async def _unless_client_leaves(request: AnyRequest, work: Awaitable[Response[Any]]) -> Response[Any] | None:
    """Run ``work`` until it answers, or cancel it (and the upstream call in it) if the client disconnects.

    Once a stream is handed to the framework, the framework's own disconnect watch takes over.
    """
    task: asyncio.Task[Response[Any]] = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():  # this handler itself was cancelled: take the upstream call down with it
            task.cancel()
    if task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def _disconnected(request: AnyRequest) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
