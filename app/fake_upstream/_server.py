"""The fake OpenAI-compatible upstream: an aiohttp low-level server with scriptable faults."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from app.fake_upstream import _payloads as p
from app.fake_upstream._control import ControlApi
from app.fake_upstream._faults import Fault

_JSON = "application/json"
_SSE_HEADERS = (("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"))
_BAD_KEY = p.envelope("Incorrect API key provided", "invalid_request_error", "invalid_api_key")
_BAD_JSON = p.envelope(
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library "
    "correctly. The OpenAI API expects a JSON payload.)",
    "invalid_request_error",
    None,
)
_NOT_OBJECT = p.envelope("The request body must be a JSON object.", "invalid_request_error", None)
_NO_MODEL = p.envelope("you must provide a model parameter", "invalid_request_error", None, "model")
_NO_INPUT = p.envelope("'input' is a required property", "invalid_request_error", None, "input")
_RATE_LIMITED = p.envelope(
    "Rate limit reached for requests. Please try again later.", "requests", "rate_limit_exceeded"
)
_SERVER_ERROR = p.envelope(
    "The server had an error while processing your request. Sorry about that!", "server_error", None
)
_GARBAGE = b"<html>oops</html>"
_SHUTDOWN_GRACE = 0.5
_RESPONSES_KEPT = 10_000
_MAX_BODY = 256 * 1024 * 1024

_Route = Callable[[web.BaseRequest, int, dict[str, str], dict[str, Any], Fault | None], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the fake saw it, so tests can assert what a proxy actually forwarded."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    at: float


def _decode(raw: bytes) -> tuple[bool, Any]:
    """(ok, value): invalid JSON must be distinguishable from a literal `null` body."""
    if not raw:
        return False, None
    try:
        return True, msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return False, None


def _input_items(value: object) -> list[Any]:
    """A Responses ``input`` as items (a plain string is one user message)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return list(value) if isinstance(value, list) else []


def _seconds(value: float) -> str:
    """Header form of a number of seconds, as given: 1.0 -> "1", 0.5 -> "0.5"."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _json(status: int, body: bytes, headers: dict[str, str]) -> web.Response:
    headers["Content-Type"] = _JSON
    return web.Response(status=status, body=body, headers=headers)


class FakeUpstream:
    """A local OpenAI-compatible server whose replies, pacing and failures tests fully control.

    Built on aiohttp's low-level server (no router, no access log) because benchmarks put a proxy
    in front of it and must measure the proxy, not the fake.
    """

    def __init__(
        self,
        *,
        name: str = "fake",
        models: Sequence[str] = ("gpt-5", "o3", "text-embedding-3-small"),
        api_key: str | None = None,
        chunks: int = 4,
        interval: float = 0.0,
        ratelimit_headers: Mapping[str, str] | None = None,
        record: bool = True,
    ) -> None:
        self.name = name
        self.models: tuple[str, ...] = tuple(models)
        self.api_key = api_key
        self.record = record
        self.requests: list[Received] = []
        self.in_flight = 0
        self.cancelled = 0
        self.base_url = ""
        self.port = 0
        self.chunks = chunks
        self.interval = interval
        self.ratelimit_headers: dict[str, str] = dict(ratelimit_headers or {})
        self._auth = None if api_key is None else f"Bearer {api_key}"
        self._model_set = frozenset(self.models)
        self._models_body = p.models_body(self.models)
        self._faults: deque[Fault] = deque()
        self._counter = 0
        self._runner: web.ServerRunner | None = None
        self._stopped = asyncio.Event()
        self._stopping = False
        self._control = ControlApi(self)
        self._routes: dict[tuple[str, str], _Route] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/responses"): self._responses,
            ("POST", "/v1/responses/compact"): self._compact,
            ("POST", "/v1/embeddings"): self._embeddings,
        }
        self._tag = re.sub(r"[^a-z0-9]", "", name.lower()) or "fake"
        self.responses: OrderedDict[str, dict[str, Any]] = OrderedDict()
        """Responses this account made, by id: each id (and each compaction it made) is this account's
        alone, as an OpenAI account's are; another account answers ``previous_response_not_found``."""
        self._script = p.Script.build(name, chunks)
        self._base_headers: dict[str, str] = {}
        self.configure()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Bind and serve; returns the base URL ending in /v1 (port 0 picks a free port)."""
        if self._runner is not None:
            raise RuntimeError("FakeUpstream is already started")
        self._stopped = asyncio.Event()
        self._stopping = False
        # handler_cancellation: a client that goes away cancels its handler, so in_flight drops at once.
        server = web.Server(self._dispatch, handler_cancellation=True, access_log=None,
                            request_factory=self._request_factory)
        runner = web.ServerRunner(server, shutdown_timeout=_SHUTDOWN_GRACE)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{shown}:{self.port}/v1"
        return self.base_url

    def _request_factory(self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any
                         ) -> web.BaseRequest:
        """Requests as aiohttp makes them, but taking bodies as large as tests send (its default stops at 1 MiB)."""
        return web.BaseRequest(message, payload, protocol, writer, task, asyncio.get_running_loop(),
                               client_max_size=_MAX_BODY)

    async def stop(self) -> None:
        """Release hung requests, then close every connection; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping = True
        self._stopped.set()
        try:
            await runner.cleanup()
        finally:
            self._stopping = False

    # -- test control --------------------------------------------------------------------------

    def script(self, *faults: Fault) -> None:
        """Queue faults; each one is consumed by the next /v1 POST request, first in first out."""
        self._faults.extend(faults)

    def configure(
        self,
        *,
        chunks: int | None = None,
        interval: float | None = None,
        ratelimit_headers: Mapping[str, str] | None = None,
    ) -> None:
        """Change reply length, pacing or advertised rate-limit headers for later requests."""
        if chunks is not None:
            if chunks < 0:
                raise ValueError("chunks must be >= 0")
            self.chunks = chunks
        if interval is not None:
            if interval < 0:
                raise ValueError("interval must be >= 0")
            self.interval = interval
        if ratelimit_headers is not None:
            self.ratelimit_headers = dict(ratelimit_headers)
        self._script = p.Script.build(self.name, self.chunks)
        self._base_headers = {**self.ratelimit_headers, "x-fake-upstream": self.name}

    def reset(self) -> None:
        """Forget recorded requests and queued faults (configuration and counters stay)."""
        self.requests.clear()
        self._faults.clear()

    @property
    def pending_faults(self) -> int:
        """How many scripted faults are still waiting for a request."""
        return len(self._faults)

    # -- dispatch ------------------------------------------------------------------------------

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path == "/v1" or path.startswith("/v1/"):
            return await self._serve_v1(request)
        return await self._control.handle(request)

    def _count_cancel(self) -> None:
        if not self._stopping:
            self.cancelled += 1

    async def _serve_v1(self, request: web.BaseRequest) -> web.StreamResponse:
        self.in_flight += 1
        try:
            return await self._v1(request)
        except asyncio.CancelledError:
            self._count_cancel()
            raise
        finally:
            self.in_flight -= 1

    async def _v1(self, request: web.BaseRequest) -> web.StreamResponse:
        raw = await request.read()
        self._counter += 1
        n = self._counter
        headers = {**self._base_headers, "x-request-id": f"req_{n}"}
        ok, body = _decode(raw)
        method, path = request.method, request.path
        if self.record:
            lowered = {k.lower(): v for k, v in request.headers.items()}
            self.requests.append(Received(method, path, lowered, body, raw, time.monotonic()))
        if self._auth is not None and request.headers.get("Authorization") != self._auth:
            return _json(401, _BAD_KEY, headers)
        fault = self._faults.popleft() if method == "POST" and self._faults else None
        if fault is not None:
            early = await self._early_fault(request, fault, headers)
            if early is not None:
                return early
        if path.startswith("/v1/responses/") and path != "/v1/responses/compact":
            return self._response_endpoint(method, path, headers)
        if method == "GET":
            return self._get(path, headers)
        route = self._routes.get((method, path))
        if route is None:
            msg = f"Invalid URL ({method} {path})"
            return _json(404, p.envelope(msg, "invalid_request_error", None), headers)
        if not ok:
            return _json(400, _BAD_JSON, headers)
        if not isinstance(body, dict):
            return _json(400, _NOT_OBJECT, headers)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _json(400, _NO_MODEL, headers)
        if model not in self._model_set:
            return _json(404, self._no_model(model), headers)
        return await route(request, n, headers, body, fault)

    @staticmethod
    def _no_model(model: str) -> bytes:
        msg = f"The model `{model}` does not exist or you do not have access to it."
        return p.envelope(msg, "invalid_request_error", "model_not_found")

    def _get(self, path: str, headers: dict[str, str]) -> web.Response:
        if path == "/v1/models":
            return _json(200, self._models_body, headers)
        prefix = "/v1/models/"
        if path.startswith(prefix):
            model = path[len(prefix) :]
            if model in self._model_set:
                return _json(200, msgspec.json.encode(p.model_object(model)), headers)
            return _json(404, self._no_model(model), headers)
        return _json(404, p.envelope(f"Invalid URL (GET {path})", "invalid_request_error", None), headers)

    async def _early_fault(
        self, request: web.BaseRequest, fault: Fault, headers: dict[str, str]
    ) -> web.StreamResponse | None:
        """Faults that replace the answer; None lets the request continue (delay, trickle, cut_after)."""
        match fault.kind:
            case "rate_limited":
                if fault.retry_after is not None:
                    headers["Retry-After"] = _seconds(fault.retry_after)
                if fault.reset_requests is not None:
                    headers["x-ratelimit-reset-requests"] = fault.reset_requests
                if fault.body is None:
                    return _json(429, _RATE_LIMITED, headers)
                is_json = fault.body.lstrip()[:1] in (b"{", b"[")
                headers["Content-Type"] = _JSON if is_json else "text/plain"
                return web.Response(status=429, body=fault.body, headers=headers)
            case "server_error":
                if fault.body is None:
                    return _json(fault.status, _SERVER_ERROR, headers)
                headers["Content-Type"] = "text/plain"
                return web.Response(status=fault.status, body=fault.body, headers=headers)
            case "client_error":
                if fault.body is not None:
                    return _json(fault.status, fault.body, headers)
                code = fault.code or "invalid_request_error"
                env = p.envelope(f"Scripted client error ({code})", "invalid_request_error", code)
                return _json(fault.status, env, headers)
            case "garbage":
                headers["Content-Type"] = "text/html"
                return web.Response(status=fault.status, body=_GARBAGE, headers=headers)
            case "hang":
                await self._stopped.wait()
                resp = web.Response(status=503, headers=headers)
                self._cut(request, resp)
                return resp
            case "delay":
                await asyncio.sleep(fault.seconds)
            case "raw":
                return await self._raw(request, fault)
            case "trickle" | "cut_after":
                pass
        return None

    async def _raw(self, request: web.BaseRequest, fault: Fault) -> web.StreamResponse:
        resp = web.StreamResponse(status=fault.status)
        for name, value in fault.headers:
            resp.headers.add(name, value)
        try:
            await resp.prepare(request)
            for _ in range(fault.repeat):
                for part in fault.parts:
                    await resp.write(part)
            await resp.write_eof()
        except ConnectionError:
            self._count_cancel()
            return resp
        resp.force_close()  # then close the connection: nothing of this answer may linger on it
        return resp

    # -- OpenAI endpoints ----------------------------------------------------------------------

    async def _chat(
        self, request: web.BaseRequest, n: int, headers: dict[str, str], body: dict[str, Any], fault: Fault | None
    ) -> web.StreamResponse:
        model, script, created = body["model"], self._script, int(time.time())
        prompt = p.chat_prompt_tokens(body)
        if body.get("stream") is True:
            opts = body.get("stream_options")
            usage = isinstance(opts, dict) and opts.get("include_usage") is True
            events = p.chat_stream_events(n, created, model, script, prompt, include_usage=usage)
            return await self._stream(request, headers, events, fault)
        return await self._reply(request, headers, p.chat_completion(n, created, model, script, prompt), fault)

    async def _responses(
        self, request: web.BaseRequest, n: int, headers: dict[str, str], body: dict[str, Any], fault: Fault | None
    ) -> web.StreamResponse:
        model, script, created = body["model"], self._script, int(time.time())
        refused = self._refuse_foreign(body, headers)
        if refused is not None:
            return refused
        items = _input_items(body.get("input"))
        prompt = p.responses_input_tokens(body)
        response_id = f"resp_{self._tag}_{n}"
        compaction = None
        if items and isinstance(items[-1], dict) and items[-1].get("type") == "compaction_trigger":
            compaction = self._compaction_item(n, items)
        output = [compaction] if compaction is not None else None
        self._keep(response_id, p.response_object(n, created, model, script, prompt, response_id=response_id,
                                                  output=output), items, body.get("store") is not False)
        if body.get("stream") is True:
            if compaction is not None:
                events = p.compaction_stream_events(n, created, model, script, prompt, response_id, compaction)
            else:
                events = p.response_stream_events(n, created, model, script, prompt, response_id=response_id)
            return await self._stream(request, headers, events, fault)
        payload = p.response_body(n, created, model, script, prompt, response_id=response_id, output=output)
        return await self._reply(request, headers, payload, fault)

    async def _compact(
        self, request: web.BaseRequest, n: int, headers: dict[str, str], body: dict[str, Any], fault: Fault | None
    ) -> web.StreamResponse:
        """``POST /v1/responses/compact``: the conversation's input in, one encrypted compaction item out."""
        refused = self._refuse_foreign(body, headers)
        if refused is not None:
            return refused
        items = _input_items(body.get("input"))
        prompt = p.responses_input_tokens(body)
        answer = {"id": f"resp_{self._tag}_{n}", "object": "response.compaction", "created_at": int(time.time()),
                  "output": [self._compaction_item(n, items)],
                  "usage": {"input_tokens": prompt, "output_tokens": 1, "total_tokens": prompt + 1}}
        return await self._reply(request, headers, msgspec.json.encode(answer), fault)

    def _compaction_item(self, n: int, items: list[Any]) -> dict[str, Any]:
        digest = hashlib.sha256(msgspec.json.encode(items)).hexdigest()[:16]
        return {"type": "compaction", "id": f"cmp_{self._tag}_{n}", "encrypted_content": f"{self._tag}:{digest}"}

    def _refuse_foreign(self, body: dict[str, Any], headers: dict[str, str]) -> web.Response | None:
        """What another account made cannot be continued here: its response ids, its compactions."""
        previous = body.get("previous_response_id")
        if previous is not None and not self.responses.get(previous, {}).get("stored"):
            return _json(400, p.envelope(f"Previous response with id '{previous}' not found.",
                                         "invalid_request_error", "previous_response_not_found",
                                         "previous_response_id"), headers)
        for item in _input_items(body.get("input")):
            if isinstance(item, dict) and item.get("type") == "compaction":
                content = item.get("encrypted_content")
                if not isinstance(content, str) or not content.startswith(self._tag + ":"):
                    return _json(400, p.envelope("The encrypted content of a compaction item could not be "
                                                 "verified.", "invalid_request_error", "invalid_encrypted_content",
                                                 "input"), headers)
        return None

    def _keep(self, response_id: str, response: dict[str, Any], items: list[Any], stored: bool) -> None:
        self.responses[response_id] = {"response": response, "input": items, "stored": stored}
        while len(self.responses) > _RESPONSES_KEPT:
            self.responses.popitem(last=False)

    def _response_endpoint(self, method: str, path: str, headers: dict[str, str]) -> web.Response:
        """``GET|DELETE /v1/responses/{id}``, ``POST .../cancel``, ``GET .../input_items``: this account's own."""
        rest = path[len("/v1/responses/"):]
        response_id, _, action = rest.partition("/")
        kept = self.responses.get(response_id)
        allowed = {"": ("GET", "DELETE"), "cancel": ("POST",), "input_items": ("GET",)}.get(action)
        if allowed is None or method not in allowed:
            return _json(404, p.envelope(f"Invalid URL ({method} {path})", "invalid_request_error", None), headers)
        if kept is None or not kept["stored"]:
            return _json(404, p.envelope(f"Response with id '{response_id}' not found.", "invalid_request_error",
                                         None), headers)
        if action == "input_items":
            data = [{"id": f"in_{i}", **item} if isinstance(item, dict) else item
                    for i, item in enumerate(kept["input"])]
            return _json(200, msgspec.json.encode({"object": "list", "data": data, "has_more": False}), headers)
        if method == "DELETE":
            del self.responses[response_id]
            return _json(200, msgspec.json.encode({"id": response_id, "object": "response.deleted",
                                                   "deleted": True}), headers)
        return _json(200, msgspec.json.encode(kept["response"]), headers)

    async def _embeddings(
        self, request: web.BaseRequest, n: int, headers: dict[str, str], body: dict[str, Any], fault: Fault | None
    ) -> web.StreamResponse:
        raw_input = body.get("input")
        if isinstance(raw_input, str):
            inputs = [raw_input]
        elif isinstance(raw_input, list) and raw_input:
            inputs = [x if isinstance(x, str) else msgspec.json.encode(x).decode() for x in raw_input]
        else:
            return _json(400, _NO_INPUT, headers)
        b64 = body.get("encoding_format") == "base64"
        return await self._reply(request, headers, p.embeddings_body(body["model"], inputs, base64_format=b64), fault)

    # -- writing -------------------------------------------------------------------------------

    def _cut(self, request: web.BaseRequest, resp: web.StreamResponse) -> None:
        """Drop the connection from our side: what a crashed or overloaded upstream looks like."""
        resp.force_close()
        transport = request.transport
        if transport is not None:
            transport.close()

    async def _reply(
        self, request: web.BaseRequest, headers: dict[str, str], payload: bytes, fault: Fault | None
    ) -> web.StreamResponse:
        if fault is None or fault.kind != "cut_after":
            return _json(200, payload, headers)
        headers["Content-Type"] = _JSON
        resp = web.StreamResponse(status=200, headers=headers)
        resp.content_length = len(payload)
        try:
            await resp.prepare(request)
            await resp.write(payload[: max(1, len(payload) // 2)])
        except ConnectionError:
            self._count_cancel()
            return resp
        self._cut(request, resp)
        return resp

    async def _stream(
        self, request: web.BaseRequest, headers: dict[str, str], events: list[bytes], fault: Fault | None
    ) -> web.StreamResponse:
        """Write each SSE event on its own so it leaves at once; pace with `interval` or a trickle fault."""
        pace = self.interval
        cut = fault is not None and fault.kind == "cut_after"
        if fault is not None and fault.kind == "trickle":
            pace = fault.interval
        elif fault is not None and cut:
            events = events[: fault.chunks]
        headers.update(_SSE_HEADERS)
        resp = web.StreamResponse(status=200, headers=headers)
        try:
            await resp.prepare(request)
            writer = request.writer
            for i, event in enumerate(events):
                if i and pace > 0:
                    await asyncio.sleep(pace)
                await resp.write(event)
                await writer.drain()
        except ConnectionError:
            self._count_cancel()
            return resp
        if cut:
            self._cut(request, resp)
        return resp
