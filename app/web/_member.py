"""The member page at ``/me/``: a key holder signs in with their poolgate key and sees their own models,
quotas and usage, nothing of any other key.

The session names the key and signs a fingerprint of its secret: rotating or revoking the key ends it.
Failed sign-ins count against the address, as the admin sign-in's do.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from litestar import Response, Router, get, post
from litestar.datastructures import State
from litestar.response import Redirect

from app._types import AnyRequest
from app.access import authenticate
from app.errors import GatewayError
from app.routes._admin_auth import client_address
from app.routes.usage import usage_body
from app.usage._report import timeseries
from app.web._charts import bars
from app.web._render import page
from app.web._session import MEMBER_COOKIE, SIGNIN_COOKIE, Sessions, fingerprint, form_value
from keys import KeyRecord

__all__ = ["member_router"]

_decode = msgspec.json.Decoder().decode


def _sessions(state: State) -> Sessions:
    return Sessions(state.page_secret, secure=state.settings.secure_cookies)


def _member(request: AnyRequest) -> tuple[KeyRecord, str] | None:
    """The key behind the session, if it is still active and unrotated."""
    state = request.app.state
    cookie = request.cookies.get(MEMBER_COOKIE)
    sessions = _sessions(state)
    key_id = sessions.subject_of(cookie)
    record = state.key_cache.get(key_id) if key_id else None
    if record is None or cookie is None or record.status(time.time()) != "active":
        return None
    if sessions.read(cookie, fingerprint(record.secret_digest)) != record.id:
        return None
    return record, cookie


def _signin(request: AnyRequest, error: str | None = None, status: int = 200) -> Response[bytes]:
    token = Sessions.signin_token()
    response = page("member_signin.mako", status, title="Your poolgate key", error=error, csrf=token)
    _sessions(request.app.state).set_cookie(response, SIGNIN_COOKIE, token, "/me/", request.url.scheme,
                                            max_age=3600)
    return response


@get("/")
async def member_page(request: AnyRequest) -> Response[bytes]:
    found = _member(request)
    if found is None:
        return _signin(request)
    key, session = found
    state = request.app.state
    view = state.catalog.view(key.policy, served=state.pool.served())
    models = [_decode(item) for item in view.items]
    usage = await usage_body(key, state.engine, state.quota)
    points = await timeseries(state.engine, since=datetime.now(UTC) - timedelta(days=30), step="day", key_id=key.id)
    chart = bars([(moment[:10], float(t.requests)) for moment, t in points], "Your requests per day, last 30 days",
                 overlay=[float(t.errors) for _, t in points])
    tokens = bars([(moment[:10], float(t.input_tokens + t.output_tokens)) for moment, t in points],
                  "Your tokens per day, last 30 days", css="bar-tokens")
    return page("member.mako", title="Your poolgate key", key=key.public(time.time()), models=models, usage=usage,
                windows=await state.quota.left(key), chart=chart, tokens_chart=tokens,
                csrf=_sessions(state).csrf(session), base_url=_base_url(request), error=None)


def _base_url(request: AnyRequest) -> str:
    return f"{request.url.scheme}://{request.url.netloc}/v1"


@post("/signin")
async def member_signin(request: AnyRequest) -> Response[Any]:
    state = request.app.state
    form = await request.form()
    expected = request.cookies.get(SIGNIN_COOKIE)
    if not expected or form_value(form, "csrf") != expected:
        return _signin(request, "The sign-in form expired; please try again.", 400)
    address = client_address(request.scope)
    wait = state.guard.blocked_for(address)
    if wait:
        return _signin(request, f"Too many failed sign-ins from this address; try again in {wait:.0f} s.", 429)
    try:
        key = await authenticate({"authorization": f"Bearer {form_value(form, 'key')}"}, state.key_cache)
    except GatewayError as exc:
        state.guard.failed(address)
        return _signin(request, exc.message, exc.status_code)
    sessions = _sessions(state)
    response: Response[Any] = Redirect(path="/me/", status_code=303)
    sessions.set_cookie(response, MEMBER_COOKIE, sessions.make(key.id, fingerprint(key.secret_digest)), "/me/",
                        request.url.scheme)
    sessions.clear_cookie(response, SIGNIN_COOKIE, "/me/", request.url.scheme)
    return response


@post("/signout")
async def member_signout(request: AnyRequest) -> Response[Any]:
    response: Response[Any] = Redirect(path="/me/", status_code=303)
    found = _member(request)
    form = await request.form()
    if found is not None and _sessions(request.app.state).csrf_ok(found[1], form_value(form, "csrf")):
        _sessions(request.app.state).clear_cookie(response, MEMBER_COOKIE, "/me/", request.url.scheme)
    return response


def member_router() -> Router:
    return Router(path="/me", route_handlers=[member_page, member_signin, member_signout], include_in_schema=False)
