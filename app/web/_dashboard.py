"""The dashboard at ``/admin/``: plain pages and forms over the admin service layer (``app.admin``).

Every page is rendered on the server and works without script (a small one only copies a new key);
charts are SVG drawn here. Reads need an admin session of any role, changes the ``admin`` role and a
CSRF token from the page that offered them. Changes go through the same service as the admin API and
the CLI: the same checks, the same audit entries, the same announcement to every replica.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Response, Router, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import Redirect

from app._types import AnyRequest
from app.admin import AdminRecord, AuditTrail, read_audit
from app.errors import GatewayError, as_gateway_error
from app.routes._admin_auth import admin_for
from app.routes.admin_api import health_report, usage_csv, usage_report
from app.usage import GROUPS, summarize
from app.usage._report import timeseries
from app.web._charts import bars
from app.web._render import page
from app.web._session import ADMIN_COOKIE, SIGNIN_COOKIE, Sessions, form_value

__all__ = ["dashboard_router"]

KEYS_PER_PAGE = 50
USAGE_ROWS_SHOWN = 500
RANGES = {"24h": (timedelta(hours=24), "hour"), "7d": (timedelta(days=7), "hour"), "30d": (timedelta(days=30), "day")}
LIST_FIELDS = ("allowed_models", "priority_rules", "allowed_reasoning_efforts", "allowed_modalities",
               "allowed_verbosities", "allowed_service_tiers")
QUOTA_FIELDS = ("rpm", "rpd", "tpm", "tpd", "max_concurrency")


class SignInNeeded(Exception):
    """No valid session: the page sends the browser to the sign-in page."""


class Viewer(Exception):
    """A viewer asked to change something."""


def _sessions(state: State) -> Sessions:
    return Sessions(state.page_secret, secure=state.settings.secure_cookies)


async def _session(request: AnyRequest, *, write: bool = False) -> tuple[AdminRecord, str]:
    """The signed-in admin and their session, or SignInNeeded; for a change, its CSRF token checked too."""
    state = request.app.state
    cookie = request.cookies.get(ADMIN_COOKIE)
    admin_id = _sessions(state).read(cookie)
    record = state.admins.get(admin_id) if admin_id else None
    if record is None or cookie is None:
        raise SignInNeeded
    if write:
        form = await request.form()
        if not _sessions(state).csrf_ok(cookie, form_value(form, "csrf")):
            raise SignInNeeded  # a form from elsewhere, or from an older session: sign in again
        if not record.may_change:
            raise Viewer
    return record, cookie


def _context(request: AnyRequest, record: AdminRecord, session: str, section: str, **more: Any) -> dict[str, Any]:
    return {"admin": record, "csrf": _sessions(request.app.state).csrf(session), "section": section,
            "flash": request.query_params.get("done", ""), "error": None, **more}


def _actor(record: AdminRecord) -> AuditTrail:
    return AuditTrail(f"{record.name} (admin {record.id})", "dashboard")


def _see(path: str, done: str = "") -> Redirect:
    return Redirect(path=path + (f"?done={done}" if done else ""), status_code=303)


def _problem(exc: Exception) -> GatewayError:
    return as_gateway_error(exc, "dashboard")


# -- signing in -----------------------------------------------------------------------------------


@get("/signin")
async def signin_page(request: AnyRequest) -> Response[bytes]:
    return _signin(request)


def _signin(request: AnyRequest, error: str | None = None, status: int = 200) -> Response[bytes]:
    state = request.app.state
    token = Sessions.signin_token()
    response = page("signin.mako", status, title="Sign in", error=error, csrf=token,
                    next=_safe_next(request.query_params.get("next")))
    _sessions(state).set_cookie(response, SIGNIN_COOKIE, token, "/admin/", request.url.scheme, max_age=3600)
    return response


def _safe_next(target: str | None) -> str:
    """Only a page of the dashboard itself (never another site) is where a sign-in may lead."""
    if target and target.startswith("/admin/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/admin/"


@post("/signin")
async def signin(request: AnyRequest) -> Response[bytes]:
    state = request.app.state
    form = await request.form()
    expected = request.cookies.get(SIGNIN_COOKIE)
    if not expected or form_value(form, "csrf") != expected:
        return _signin(request, "The sign-in form expired; please try again.", 400)
    try:
        record = await admin_for(request, token=form_value(form, "token"))
    except GatewayError as exc:
        return _signin(request, exc.message, exc.status_code)
    sessions = _sessions(state)
    response: Response[Any] = Redirect(path=_safe_next(form_value(form, "next")), status_code=303)
    sessions.set_cookie(response, ADMIN_COOKIE, sessions.make(record.id), "/admin/", request.url.scheme)
    sessions.clear_cookie(response, SIGNIN_COOKIE, "/admin/", request.url.scheme)
    return response


@post("/signout")
async def signout(request: AnyRequest) -> Response[Any]:
    response: Response[Any] = Redirect(path="/admin/signin", status_code=303)
    _sessions(request.app.state).clear_cookie(response, ADMIN_COOKIE, "/admin/", request.url.scheme)
    return response


# -- overview -------------------------------------------------------------------------------------


def _range(request: AnyRequest) -> tuple[str, datetime, str]:
    chosen = request.query_params.get("range", "24h")
    if chosen not in RANGES:
        chosen = "24h"
    span, step = RANGES[chosen]
    return chosen, datetime.now(UTC) - span, step


def _label(moment: str, step: str) -> str:
    return moment[5:10] + " " + moment[11:16] if step == "hour" else moment[:10]


def _charts(points: list[tuple[str, Any]], step: str) -> dict[str, str]:
    labels = [_label(moment, step) for moment, _ in points]
    requests = [(label, float(t.requests)) for label, (_, t) in zip(labels, points, strict=True)]
    errors = [float(t.errors) for _, t in points]
    tokens = [(label, float(t.input_tokens + t.output_tokens)) for label, (_, t) in zip(labels, points, strict=True)]
    cost = [(label, float(t.cost_usd)) for label, (_, t) in zip(labels, points, strict=True)]
    return {
        "requests": bars(requests, "Requests (errors in red)", overlay=errors),
        "tokens": bars(tokens, "Tokens", css="bar-tokens"),
        "cost": bars(cost, "Cost in USD", lambda v: f"${v:,.2f}" if v >= 1 or v == 0 else f"${v:.4f}",
                     css="bar-cost"),
    }


@get("/")
async def overview(request: AnyRequest) -> Response[bytes]:
    record, session = await _session(request)
    state = request.app.state
    chosen, since, step = _range(request)
    points = await timeseries(state.engine, since=since, step=step)
    top_keys = await summarize(state.engine, since=since, group_by=("key",), limit=10)
    top_models = await summarize(state.engine, since=since, group_by=("model",), limit=10)
    cache = state.key_cache
    totals = _sum(t for _, t in points)
    return page("overview.mako", **_context(
        request, record, session, "overview", title="Overview", range=chosen, ranges=list(RANGES),
        charts=_charts(points, step), totals=totals,
        top_keys=[(_key_name(cache, r.group["key"]), r.group["key"], r.totals) for r in top_keys],
        top_models=[(r.group["model"], r.totals) for r in top_models],
        upstreams=state.pool.snapshot(), live_keys=len(cache.records())))


def _key_name(cache: Any, key_id: str) -> str:
    record = cache.get(key_id)
    return record.name if record is not None else f"{key_id} (revoked)"


def _sum(items: Any) -> dict[str, float]:
    out = {"requests": 0.0, "errors": 0.0, "tokens": 0.0, "cost": 0.0}
    for t in items:
        out["requests"] += t.requests
        out["errors"] += t.errors
        out["tokens"] += t.input_tokens + t.output_tokens
        out["cost"] += t.cost_usd
    return out


# -- keys -----------------------------------------------------------------------------------------


@get("/keys")
async def keys_page(request: AnyRequest) -> Response[bytes]:
    record, session = await _session(request)
    state = request.app.state
    query = request.query_params
    search = (query.get("q") or "").strip().lower()
    revoked = query.get("show") == "revoked"
    now = time.time()
    if revoked:
        every = [k for k in await state.admin_service.list_keys(include_revoked=True) if k["status"] == "revoked"]
        found: list[Any] = [k for k in every if not search or search in str(k["name"]).lower() or search in k["id"]]
        found.sort(key=lambda k: str(k["name"]).lower())
    else:  # live keys: from memory, however many; only the page shown is rendered
        found = [r for r in state.key_cache.records() if not search or search in r.name.lower() or search in r.id]
        found.sort(key=lambda r: r.name.lower())
    number_text = query.get("page", "1")
    at = max(1, int(number_text)) if number_text.isdigit() else 1
    pages = max(1, -(-len(found) // KEYS_PER_PAGE))
    at = min(at, pages)
    shown = found[(at - 1) * KEYS_PER_PAGE: at * KEYS_PER_PAGE]
    rows = shown if revoked else [r.public(now) for r in shown]
    return page("keys.mako", **_context(request, record, session, "keys", title="Keys", keys=rows,
                                        count=len(found), page_number=at, pages=pages, search=search, revoked=revoked))


@get("/keys/new")
async def new_key_page(request: AnyRequest) -> Response[bytes]:
    record, session = await _session(request)
    return page("key_form.mako", **_context(request, record, session, "keys", title="New key", key=None, values={},
                                            usage=[], chart=""))


def _list(text: str) -> list[str] | None:
    """A comma-separated field: its items, or None (any) when left empty."""
    items = [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]
    return items or None


def _whole(text: str, empty: int | None) -> int | str | None:
    """A whole-number field: its number, ``empty`` when left blank, else the text (which the service refuses,
    saying what it wants)."""
    if not text:
        return empty
    return int(text) if text.isdigit() else text


def key_spec(form: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """The admin API's key shape from the form's fields (an empty field: no limit, any value)."""
    spec: dict[str, Any] = {}
    name = form_value(form, "name")
    if creating or name:
        spec["name"] = name
    for field in LIST_FIELDS:
        items = _list(form_value(form, field))
        if field == "allowed_models":
            if creating or items is not None:
                spec[field] = items or []
        elif field == "priority_rules":
            spec[field] = items or []
        else:
            spec[field] = items
    quotas: dict[str, Any] = {}
    for field in QUOTA_FIELDS:
        text = form_value(form, field).replace(",", "").replace("_", "")
        quotas[field] = _whole(text, None)
    budget = form_value(form, "budget_usd").lstrip("$")
    try:
        quotas["budget_usd"] = float(budget) if budget else None
    except ValueError:
        quotas["budget_usd"] = budget
    quotas["budget_period"] = form_value(form, "budget_period") or None if quotas["budget_usd"] is not None else None
    spec["quotas"] = quotas
    tier = form_value(form, "tier")
    spec["tier"] = _whole(tier, 0)
    expires = form_value(form, "expires_at")
    if creating:
        if expires:
            spec["expires_at"] = expires
    else:
        spec["expires_at"] = expires or None
        spec["disabled"] = form_value(form, "disabled") == "on"
    return spec


@post("/keys")
async def create_key(request: AnyRequest) -> Response[bytes]:
    record, session = await _session(request, write=True)
    form = await request.form()
    service = request.app.state.admin_service
    try:
        created, token = await service.create_key(key_spec(form, creating=True), _actor(record))
    except Exception as exc:
        problem = _problem(exc)
        return page("key_form.mako", problem.status_code, **_context(
            request, record, session, "keys", title="New key", key=None, values=dict(form), usage=[], chart="",
            error=problem.message))
    return page("key_secret.mako", 201, **_context(request, record, session, "keys", title="Key created",
                                                   key=created.public(time.time()), token=token, rotated=False))


@get("/keys/{ref:str}")
async def key_page(request: AnyRequest, ref: FromPath[str]) -> Response[bytes]:
    record, session = await _session(request)
    return await _key_page(request, record, session, ref)


async def _key_page(request: AnyRequest, record: AdminRecord, session: str, ref: str, *, error: str | None = None,
                    status: int = 200, values: Mapping[str, Any] | None = None) -> Response[bytes]:
    state = request.app.state
    try:
        key = await state.admin_service.get_key(ref)
    except Exception as exc:
        problem = _problem(exc)
        return page("message.mako", problem.status_code, **_context(request, record, session, "keys",
                                                                    title="No such key", message=problem.message))
    now = datetime.now(UTC)
    usage = await summarize(state.engine, since=now - timedelta(days=30), key_id=key.id, group_by=("model",))
    points = await timeseries(state.engine, since=now - timedelta(days=14), step="day", key_id=key.id)
    return page("key_form.mako", status, **_context(
        request, record, session, "keys", title=f"Key {key.name}", key=key.public(time.time()),
        values=values or {}, error=error, usage=usage,
        chart=bars([(m[:10], float(t.requests)) for m, t in points], "Requests per day, last 14 days",
                   overlay=[float(t.errors) for _, t in points])))


@post("/keys/{ref:str}")
async def update_key(request: AnyRequest, ref: FromPath[str]) -> Response[bytes]:
    record, session = await _session(request, write=True)
    form = await request.form()
    try:
        updated = await request.app.state.admin_service.update_key(ref, key_spec(form, creating=False),
                                                                   _actor(record))
    except Exception as exc:
        problem = _problem(exc)
        return await _key_page(request, record, session, ref, error=problem.message, status=problem.status_code,
                               values=dict(form))
    return _see(f"/admin/keys/{updated.id}", "saved")


@post("/keys/{ref:str}/rotate")
async def rotate_key(request: AnyRequest, ref: FromPath[str]) -> Response[bytes]:
    record, session = await _session(request, write=True)
    try:
        key, token = await request.app.state.admin_service.rotate_key(ref, _actor(record))
    except Exception as exc:
        return await _key_page(request, record, session, ref, error=_problem(exc).message, status=400)
    return page("key_secret.mako", **_context(request, record, session, "keys", title="Key rotated",
                                              key=key.public(time.time()), token=token, rotated=True))


@post("/keys/{ref:str}/revoke")
async def revoke_key(request: AnyRequest, ref: FromPath[str]) -> Response[bytes]:
    record, session = await _session(request, write=True)
    try:
        key = await request.app.state.admin_service.revoke_key(ref, _actor(record))
    except Exception as exc:
        return await _key_page(request, record, session, ref, error=_problem(exc).message, status=409)
    return _see(f"/admin/keys/{key.id}", "revoked")


# -- upstreams ------------------------------------------------------------------------------------


@get("/upstreams")
async def upstreams_page(request: AnyRequest) -> Response[bytes]:
    record, session = await _session(request)
    state = request.app.state
    stored = {u.id: u for u in await state.admin_service.list_upstreams()}
    live = {u["id"]: u for u in state.pool.snapshot()}
    now = time.monotonic()
    rows = [(u.public(), live.get(u.id)) for u in sorted(stored.values(), key=lambda u: (u.tier, u.name))]
    return page("upstreams.mako", **_context(request, record, session, "upstreams", title="Upstreams", rows=rows,
                                             monotonic=now, health=await health_report(state)))


def upstream_spec(form: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    for field in ("name", "base_url"):
        value = form_value(form, field)
        if creating or value:
            spec[field] = value
    models = _list(form_value(form, "models"))
    if creating or models:
        spec["models"] = models or []
    api_key = form_value(form, "api_key")
    if api_key:  # write-only: left empty, the stored one stays
        spec["api_key"] = api_key
    weight = form_value(form, "weight")
    if weight:
        try:
            spec["weight"] = float(weight)
        except ValueError:
            spec["weight"] = weight
    tier = form_value(form, "tier")
    if tier or not creating:
        spec["tier"] = _whole(tier, 0)
    limit = form_value(form, "max_concurrency")
    spec["max_concurrency"] = _whole(limit, None)
    return spec


@get("/upstreams/new")
async def new_upstream_page(request: AnyRequest) -> Response[bytes]:
    record, session = await _session(request)
    return page("upstream_form.mako", **_context(request, record, session, "upstreams", title="Add upstream",
                                                 upstream=None, values={}, test=None, live=None, monotonic=0.0))


@post("/upstreams")
async def create_upstream(request: AnyRequest) -> Response[bytes]:
    record, session = await _session(request, write=True)
    form = await request.form()
    try:
        created = await request.app.state.admin_service.create_upstream(upstream_spec(form, creating=True),
                                                                        _actor(record))
    except Exception as exc:
        problem = _problem(exc)
        values = {k: v for k, v in dict(form).items() if k != "api_key"}  # never sent back to the page
        return page("upstream_form.mako", problem.status_code, **_context(
            request, record, session, "upstreams", title="Add upstream", upstream=None, values=values,
            test=None, live=None, monotonic=0.0, error=problem.message))
    return _see(f"/admin/upstreams/{created.name}", "added")


@get("/upstreams/{ref:str}")
async def upstream_page(request: AnyRequest, ref: FromPath[str]) -> Response[bytes]:
    record, session = await _session(request)
    return await _upstream_page(request, record, session, ref)


async def _upstream_page(request: AnyRequest, record: AdminRecord, session: str, ref: str, *,
                         error: str | None = None, status: int = 200, test: dict[str, Any] | None = None,
                         values: Mapping[str, Any] | None = None) -> Response[bytes]:
    state = request.app.state
    try:
        upstream = await state.admin_service.get_upstream(ref)
    except Exception as exc:
        problem = _problem(exc)
        return page("message.mako", problem.status_code, **_context(
            request, record, session, "upstreams", title="No such upstream", message=problem.message))
    live = next((u for u in state.pool.snapshot() if u["id"] == upstream.id), None)
    return page("upstream_form.mako", status, **_context(
        request, record, session, "upstreams", title=f"Upstream {upstream.name}", upstream=upstream.public(),
        live=live, monotonic=time.monotonic(), values=values or {}, test=test, error=error))


@post("/upstreams/{ref:str}")
async def update_upstream(request: AnyRequest, ref: FromPath[str]) -> Response[bytes]:
    record, session = await _session(request, write=True)
    form = await request.form()
    try:
        updated = await request.app.state.admin_service.update_upstream(ref, upstream_spec(form, creating=False),
                                                                        _actor(record))
    except Exception as exc:
        problem = _problem(exc)
        values = {k: v for k, v in dict(form).items() if k != "api_key"}
        return await _upstream_page(request, record, session, ref, error=problem.message,
                                    status=problem.status_code, values=values)
    return _see(f"/admin/upstreams/{updated.name}", "saved")


@post("/upstreams/{ref:str}/enabled")
async def toggle_upstream(request: AnyRequest, ref: FromPath[str]) -> Response[bytes]:
    record, session = await _session(request, write=True)
    form = await request.form()
    enable = form_value(form, "enabled") == "true"
    try:
        updated = await request.app.state.admin_service.update_upstream(ref, {"enabled": enable}, _actor(record))
    except Exception as exc:
        return await _upstream_page(request, record, session, ref, error=_problem(exc).message, status=400)
    return _see(f"/admin/upstreams/{updated.name}", "enabled" if enable else "disabled")


@post("/upstreams/{ref:str}/test")
async def test_upstream(request: AnyRequest, ref: FromPath[str]) -> Response[bytes]:
    record, session = await _session(request, write=True)
    try:
        result = await request.app.state.admin_service.test_upstream(ref)
    except Exception as exc:
        return await _upstream_page(request, record, session, ref, error=_problem(exc).message, status=400)
    return await _upstream_page(request, record, session, ref, test=result)


@post("/upstreams/{ref:str}/remove")
async def remove_upstream(request: AnyRequest, ref: FromPath[str]) -> Response[bytes]:
    record, session = await _session(request, write=True)
    try:
        await request.app.state.admin_service.remove_upstream(ref, _actor(record))
    except Exception as exc:
        return await _upstream_page(request, record, session, ref, error=_problem(exc).message, status=400)
    return _see("/admin/upstreams", "removed")


# -- usage and audit ------------------------------------------------------------------------------


def _usage_query(request: AnyRequest) -> dict[str, str]:
    query = request.query_params
    fields = ("since", "until", "key", "model", "upstream", "group_by")
    return {name: (query.get(name) or "").strip() for name in fields}


@get("/usage")
async def usage_page(request: AnyRequest) -> Response[bytes]:
    record, session = await _session(request)
    state = request.app.state
    query = _usage_query(request)
    query["group_by"] = query["group_by"] or "key"
    error, report, chart = None, None, ""
    shown = {**query, "limit": str(USAGE_ROWS_SHOWN)}
    try:
        report = await usage_report(state, shown)
        since = datetime.fromisoformat(report["since"])
        until = datetime.fromisoformat(report["until"])
        step = "hour" if until - since <= timedelta(days=3) else "day"
        key_id = (await state.admin_service.get_key(query["key"])).id if query["key"] else None
        points = await timeseries(state.engine, since=since, until=until, step=step, key_id=key_id,
                                  model=query["model"] or None, upstream=query["upstream"] or None)
        chart = bars([(_label(m, step), float(t.requests)) for m, t in points], "Requests (errors in red)",
                     overlay=[float(t.errors) for _, t in points])
    except Exception as exc:
        error = _problem(exc).message
    csv_query = "&".join(f"{k}={v}" for k, v in query.items() if v)
    return page("usage.mako", 400 if error else 200, **_context(
        request, record, session, "usage", title="Usage", query=query, report=report, chart=chart, groups=GROUPS,
        csv_query=csv_query, error=error))


@get("/usage.csv")
async def usage_csv_download(request: AnyRequest) -> Response[bytes]:
    await _session(request)
    query = _usage_query(request)
    query["group_by"] = query["group_by"] or "key"
    report = await usage_report(request.app.state, query)
    return Response(content=usage_csv(report), media_type="text/csv",
                    headers={"content-disposition": 'attachment; filename="poolgate-usage.csv"'})


@get("/audit")
async def audit_page(request: AnyRequest) -> Response[bytes]:
    record, session = await _session(request)
    query = request.query_params
    before = query.get("before")
    entries = await read_audit(request.app.state.engine, limit=100,
                               before_id=int(before) if before and before.isdigit() else None,
                               action=query.get("action") or None, target=query.get("target") or None)
    return page("audit.mako", **_context(request, record, session, "audit", title="Audit", entries=entries,
                                         action=query.get("action") or "", target=query.get("target") or "",
                                         older=entries[-1]["id"] if len(entries) == 100 else None))


def _signin_redirect(request: AnyRequest, exc: Exception) -> Response[Any]:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        target = "/admin/"
    return Redirect(path=f"/admin/signin?next={target}", status_code=303)


def _viewer_refused(request: AnyRequest, exc: Exception) -> Response[bytes]:
    return page("message.mako", 403, title="Viewers may not change",
                message="Your admin role is viewer: you may read every page, and change nothing.")


def dashboard_router() -> Router:
    return Router(path="/admin", route_handlers=[
        signin_page, signin, signout, overview, keys_page, new_key_page, create_key, key_page, update_key,
        rotate_key, revoke_key, upstreams_page, new_upstream_page, create_upstream, upstream_page, update_upstream,
        toggle_upstream, test_upstream, remove_upstream, usage_page, usage_csv_download, audit_page,
    ], exception_handlers={SignInNeeded: _signin_redirect, Viewer: _viewer_refused},
        include_in_schema=False)

