"""The ceiling for /v1/models: the same framework and server returning fixed bytes, no auth, no quota."""

from __future__ import annotations

import os
from pathlib import Path

from litestar import Litestar, Response, get

BODY = Path(os.environ["BENCH_STATIC_BODY"]).read_bytes()


@get("/v1/models")
async def static_models() -> Response[bytes]:
    return Response(content=BODY, media_type="application/json")


app = Litestar(route_handlers=[static_models], openapi_config=None, logging_config=None)
