"""The admin API under ``/admin/api/``: thin handlers over the admin service layer (``app.admin``).

JSON in the shapes the CLI's ``--json`` prints; errors in the OpenAI envelope. Reads need an admin
token of any role, changes the ``admin`` role. See docs/admin-api.md.
"""

from __future__ import annotations

import csv
import io
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from litestar import Response, Router, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath

from app._types import AnyRequest
from app.admin import AdminRecord, read_audit
from app.admin._openapi import openapi_document
from app.errors import InvalidRequestError
from app.routes._admin_auth import admin_for, trail
from app.usage import GROUPS, summarize

__all__ = ["admin_api_router", "key_view", "parse_moment"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_DURATION_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def _json(data: Any, status: int = 200) -> Response[bytes]:
    return Response(content=_encode(data), status_code=status, media_type="application/json")


async def _body(request: AnyRequest) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = _decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"We could not parse the JSON body of your request: {exc}") from None
    except RecursionError:
        raise InvalidRequestError("The JSON body of your request is nested too deeply.") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    return data


def key_view(record: Any) -> dict[str, Any]:
    data: dict[str, Any] = record.public(time.time())
    return data


def parse_moment(text: str | None, field: str, now: datetime) -> datetime | None:
    """``7d``/``24h``/``30m`` back from now, or an ISO date or time (UTC when naive)."""
    if text is None or not text.strip():
        return None
    value = text.strip()
    unit = value[-1:].lower()
    if unit in _DURATION_UNITS and value[:-1].replace(".", "", 1).isdigit():
        try:
            return now - timedelta(seconds=float(value[:-1]) * _DURATION_UNITS[unit])
        except OverflowError:
            raise InvalidRequestError(f"Invalid {field} {text!r}: that reaches before the year 1.",
                                      param=field) from None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequestError(f"Invalid {field} {text!r}: use a duration such as 7d or a date such as "
                                  "2026-11-01.", param=field) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# -- keys -------------------------------------------------------------------------------------------

@get("/keys")
async def list_keys(request: AnyRequest) -> Response[bytes]:
    await admin_for(request)
    service = request.app.state.admin_service
    include = request.query_params.get("include_revoked", "false").lower() in ("1", "true", "yes")
    return _json(await service.list_keys(include_revoked=include))


@post("/keys", status_code=201)
async def create_key(request: AnyRequest) -> Response[bytes]:
    admin = await admin_for(request, write=True)
    record, token = await request.app.state.admin_service.create_key(await _body(request), trail(admin))
    return _json({"id": record.id, "name": record.name, "key": token, **key_view(record)}, 201)


@get("/keys/{ref:str}")
async def get_key(request: AnyRequest, ref: FromPath[str]) -> Response[bytes]:
    await admin_for(request)
    return _json(key_view(await request.app.state.admin_service.get_key(ref)))


@patch("/keys/{ref:str}")
async def update_key(request: AnyRequest, ref: FromPath[str]) -> Response[bytes]:
    admin = await admin_for(request, write=True)
    record = await request.app.state.admin_service.update_key(ref, await _body(request), trail(admin))
    return _json(key_view(record))


@delete("/keys/{ref:str}", status_code=200)
async def revoke_key(request: AnyRequest, ref: FromPath[str]) -> Response[bytes]:
    admin = await admin_for(request, write=True)
    return _json(key_view(await request.app.state.admin_service.revoke_key(ref, trail(admin))))


@post("/keys/{ref:str}/rotate", status_code=200)
async def rotate_key(request: AnyRequest, ref: FromPath[str]) -> Response[bytes]:
    admin = await admin_for(request, write=True)
    body = await _body(request)
    grace = body.get("grace_seconds", 0)
    if isinstance(grace, bool) or not isinstance(grace, int | float) or grace < 0:
        raise InvalidRequestError("'grace_seconds' must be a number of seconds, 0 or more.", param="grace_seconds")
    record, token = await request.app.state.admin_service.rotate_key(ref, trail(admin), grace_seconds=float(grace))
    return _json({"id": record.id, "name": record.name, "key": token, **key_view(record)})


# -- upstreams --------------------------------------------------------------------------------------

@get("/upstreams")
async def list_upstreams(request: AnyRequest) -> Response[bytes]:
    await admin_for(request)
    return _json([r.public() for r in await request.app.state.admin_service.list_upstreams()])


@post("/upstreams", status_code=201)
async def create_upstream(request: AnyRequest) -> Response[bytes]:
    admin = await admin_for(request, write=True)
    record = await request.app.state.admin_service.create_upstream(await _body(request), trail(admin))
    return _json(record.public(), 201)


@get("/upstreams/{ref:str}")
async def get_upstream(request: AnyRequest, ref: FromPath[str]) -> Response[bytes]:
    await admin_for(request)
    return _json((await request.app.state.admin_service.get_upstream(ref)).public())


@patch("/upstreams/{ref:str}")
async def update_upstream(request: AnyRequest, ref: FromPath[str]) -> Response[bytes]:
    admin = await admin_for(request, write=True)
    record = await request.app.state.admin_service.update_upstream(ref, await _body(request), trail(admin))
    return _json(record.public())


@delete("/upstreams/{ref:str}", status_code=200)
async def remove_upstream(request: AnyRequest, ref: FromPath[str]) -> Response[bytes]:
    admin = await admin_for(request, write=True)
    return _json((await request.app.state.admin_service.remove_upstream(ref, trail(admin))).public())


@post("/upstreams/{ref:str}/test", status_code=200)
async def test_upstream(request: AnyRequest, ref: FromPath[str]) -> Response[bytes]:
    await admin_for(request, write=True)
    return _json(await request.app.state.admin_service.test_upstream(ref))


# -- usage, health, audit ---------------------------------------------------------------------------

async def usage_report(state: State, query: Any) -> dict[str, Any]:
    """The usage report for a query (since, until, key, model, upstream, group_by); shared with the dashboard."""
    now = datetime.now(UTC)
    since = parse_moment(query.get("since"), "since", now) or now - timedelta(days=7)
    until = parse_moment(query.get("until"), "until", now) or now
    if until <= since:
        raise InvalidRequestError("'until' must be after 'since'.", param="until")
    group_by = tuple(dict.fromkeys(g.strip() for g in (query.get("group_by") or "key,model").split(",")
                                   if g.strip()))
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown:
        raise InvalidRequestError(f"Unknown group_by {unknown[0]!r}: expected {', '.join(GROUPS)}.", param="group_by")
    limit_text = query.get("limit")
    limit = None
    if limit_text:
        if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= int(limit_text) <= 100_000:
            raise InvalidRequestError("'limit' must be a number of rows from 1 to 100000.", param="limit")
        limit = int(limit_text)
    key_id = None
    if query.get("key"):
        key_id = (await state.admin_service.get_key(query["key"])).id
    scope: dict[str, Any] = {"since": since, "until": until, "key_id": key_id, "model": query.get("model") or None,
                             "upstream": query.get("upstream") or None}
    try:
        rows = await summarize(state.engine, **scope, group_by=group_by, limit=limit)
    except ValueError as exc:
        raise InvalidRequestError(str(exc), param="group_by") from None
    names = await _key_names(state, {r.group["key"] for r in rows if "key" in r.group})
    out_rows = []
    for row in rows:
        item: dict[str, Any] = dict(row.group)
        if "key" in item:
            item["key_name"] = names.get(item["key"])
        item.update(row.totals.as_dict())
        out_rows.append(item)
    from app.usage import merge

    if limit is not None and len(rows) == limit:  # the rows are the costliest groups; the totals are all of them
        [whole] = await summarize(state.engine, **scope, group_by=())
        total = whole.totals.as_dict()
    else:
        total = merge(r.totals for r in rows).as_dict()
    return {"since": since.isoformat(), "until": until.isoformat(), "group_by": list(group_by), "rows": out_rows,
            "totals": total, "has_more": limit is not None and len(rows) == limit}


async def _key_names(state: State, ids: set[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    missing = set()
    for key_id in ids:
        record = state.key_cache.get(key_id)
        if record is not None:
            names[key_id] = record.name
        else:
            missing.add(key_id)
    if missing:
        from keys import KeyStore

        every = await KeyStore(state.engine).names()
        names.update({k: every[k] for k in missing if k in every})
    return names


_CSV_COUNTS = ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")


def _decimal(amount: float) -> str:
    """USD as plain decimals (0.00001025, not 1.025e-05), as spreadsheets and people read them."""
    return f"{amount:.10f}".rstrip("0").rstrip(".") or "0"


def usage_csv(report: dict[str, Any]) -> bytes:
    out = io.StringIO()
    groups = list(report["group_by"]) + (["key_name"] if "key" in report["group_by"] else [])
    writer = csv.writer(out)
    writer.writerow([*groups, *_CSV_COUNTS, "cost_usd", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms"])
    for row in report["rows"]:
        latency = row["latency_ms"]
        writer.writerow([*(row.get(g) for g in groups), *(row[c] for c in _CSV_COUNTS), _decimal(row["cost_usd"]),
                         latency["p50"], latency["p95"], latency["p99"]])
    return out.getvalue().encode()


@get("/usage")
async def usage(request: AnyRequest) -> Response[bytes]:
    await admin_for(request)
    report = await usage_report(request.app.state, request.query_params)
    if request.query_params.get("format") == "csv":
        return Response(content=usage_csv(report), media_type="text/csv",
                        headers={"content-disposition": 'attachment; filename="poolgate-usage.csv"'})
    return _json(report)


async def health_report(state: State) -> dict[str, Any]:
    """Each upstream's live state as every replica sees it (this one always; others through Redis)."""
    here = replica_snapshot(state)
    replicas = [here]
    if state.fleet is not None:
        try:
            others = await state.fleet.snapshots()
        except Exception:  # Redis away: this replica's view still stands
            others = []
        replicas += [r for r in others if r.get("instance") != here["instance"]]
    return {"replicas": replicas}


def replica_snapshot(state: State) -> dict[str, Any]:
    instance = state.fleet.instance if state.fleet is not None else state.recorder.instance
    return {"instance": instance, "host": socket.gethostname(), "pid": os.getpid(),
            "at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "upstreams": state.pool.snapshot()}


@get("/health")
async def health(request: AnyRequest) -> Response[bytes]:
    await admin_for(request)
    return _json(await health_report(request.app.state))


@get("/audit")
async def audit(request: AnyRequest) -> Response[bytes]:
    await admin_for(request)
    query = request.query_params
    limit_text = query.get("limit", "100")
    if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= int(limit_text) <= 1000:
        raise InvalidRequestError("'limit' must be 1 to 1000.", param="limit")
    before = query.get("before")
    if before is not None and not (before.isascii() and before.isdigit() and int(before) < 2**63):
        raise InvalidRequestError("'before' must be an entry id.", param="before")
    entries = await read_audit(request.app.state.engine, limit=int(limit_text),
                               before_id=int(before) if before else None, action=query.get("action") or None,
                               actor=query.get("actor") or None, target=query.get("target") or None)
    return _json({"entries": entries, "next_before": entries[-1]["id"] if len(entries) == int(limit_text) else None})


@get("/me")
async def whoami(request: AnyRequest) -> Response[bytes]:
    record: AdminRecord = await admin_for(request)
    return _json(record.public())


@get("/openapi.json")
async def openapi(request: AnyRequest) -> Response[bytes]:
    return Response(content=openapi_document(), media_type="application/json")


ADMIN_API_HANDLERS = [
    list_keys, create_key, get_key, update_key, revoke_key, rotate_key,
    list_upstreams, create_upstream, get_upstream, update_upstream, remove_upstream, test_upstream,
    usage, health, audit, whoami, openapi,
]


def admin_api_router() -> Router:
    return Router(path="/admin/api", route_handlers=ADMIN_API_HANDLERS)
