"""The /_fake/* HTTP control surface, so a fake running in another process can be scripted too."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from app.fake_upstream._faults import Fault

if TYPE_CHECKING:
    from app.fake_upstream._server import FakeUpstream

_encode = msgspec.json.Encoder().encode


def _reply(payload: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_encode(payload), headers={"Content-Type": "application/json"})


class _BadRequest(Exception):
    """A malformed control call; answered with 400 and the reason."""


class ControlApi:
    """Routes /_fake/script, /_fake/config, /_fake/reset, /_fake/requests and /_fake/stats."""

    def __init__(self, upstream: FakeUpstream) -> None:
        self._up = upstream

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Dispatch one control call; these are never recorded and never consume faults."""
        key = (request.method, request.path)
        try:
            match key:
                case ("POST", "/_fake/script"):
                    return await self._script(request)
                case ("POST", "/_fake/config"):
                    return await self._config(request)
                case ("POST", "/_fake/reset"):
                    self._up.reset()
                    return _reply({"ok": True})
                case ("GET", "/_fake/requests"):
                    return _reply(
                        [
                            {"method": r.method, "path": r.path, "headers": r.headers, "body": r.body}
                            for r in self._up.requests
                        ]
                    )
                case ("GET", "/_fake/stats"):
                    up = self._up
                    return _reply({"in_flight": up.in_flight, "cancelled": up.cancelled, "received": len(up.requests)})
        except _BadRequest as exc:
            return _reply({"error": str(exc)}, 400)
        return _reply({"error": f"no such endpoint: {request.method} {request.path}"}, 404)

    @staticmethod
    async def _json(request: web.BaseRequest) -> Any:
        raw = await request.read()
        if not raw.strip():
            return None
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise _BadRequest(f"invalid JSON: {exc}") from exc

    async def _script(self, request: web.BaseRequest) -> web.Response:
        data = await self._json(request)
        items = data if isinstance(data, list) else [data]
        try:
            faults = [Fault.from_json(item) for item in items]
        except ValueError as exc:
            raise _BadRequest(str(exc)) from exc
        self._up.script(*faults)
        return _reply({"queued": len(faults), "pending": self._up.pending_faults})

    async def _config(self, request: web.BaseRequest) -> web.Response:
        data = await self._json(request)
        if not isinstance(data, dict):
            raise _BadRequest("config must be a JSON object")
        chunks, interval, headers = data.get("chunks"), data.get("interval"), data.get("ratelimit_headers")
        if chunks is not None and (not isinstance(chunks, int) or isinstance(chunks, bool)):
            raise _BadRequest("chunks must be an integer")
        if interval is not None and (not isinstance(interval, int | float) or isinstance(interval, bool)):
            raise _BadRequest("interval must be a number")
        if headers is not None and (
            not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values())
        ):
            raise _BadRequest("ratelimit_headers must be an object of strings")
        try:
            self._up.configure(
                chunks=chunks, interval=None if interval is None else float(interval), ratelimit_headers=headers
            )
        except ValueError as exc:
            raise _BadRequest(str(exc)) from exc
        up = self._up
        return _reply({"chunks": up.chunks, "interval": up.interval, "ratelimit_headers": up.ratelimit_headers})
