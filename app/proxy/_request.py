"""Reading a client's request: what it asks for, whether the key may ask it, and what to send on.

Only the top level of the body is decoded, into raw slices of the client's bytes; each field
poolgate needs is then decoded on its own, and big arrays (``messages``, ``input``, ``tools``)
are never built into Python objects: the checks that look inside them are byte scans. So a
request costs about its own size in memory however it is shaped, and the client's bytes go
upstream untouched unless a field must change (the model's name at that upstream, a stream that
should report usage, a reasoning effort, verbosity or service tier the key requires), in which
case only that field is re-encoded and the rest is copied as it came.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from app._types import Body
from app.access import resolve_model
from app.catalog import Catalog, ModelInfo, trim_model
from app.errors import InvalidRequestError, PermissionDeniedError
from keys import SERVICE_TIERS, KeyRecord

__all__ = ["ClientRequest", "parse_request"]

_top = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_any = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

# The "type" of every part that carries something other than text, wherever it stands (a message's
# content, a function call's output, a computer screenshot, a prompt variable, ...).
_PART_MODALITIES = {
    "image_url": "image", "input_image": "image", "image": "image", "computer_screenshot": "image",
    "input_audio": "audio", "audio": "audio",
    "file": "pdf", "input_file": "pdf",
    "video_url": "video", "input_video": "video",
}
_PART_TYPE = re.compile(rb'"type"\s*:\s*"(' + b"|".join(k.encode() for k in _PART_MODALITIES) + rb')"')
_MODEL_FIELD = re.compile(rb'"model"\s*:\s*"')
# \u0020-\u007e spelled as escapes, bar the quote and the backslash (which would change the structure):
# a type name written that way reads the same to an upstream, so the scans read it so too.
_ASCII_ESCAPE = re.compile(rb"\\u00(2[013-9a-fA-F]|[3-4][0-9a-fA-F]|5[0-9abd-fABD-F]|6[0-9a-fA-F]|7[0-9a-eA-E])")
_KEY_TOKEN = re.compile(rb'\s*"((?:[^"\\]|\\.)*)"\s*:\s*', re.DOTALL)
_SEPARATOR = re.compile(rb"\s*([,}])")
_SESSION_HEADERS = ("session-id", "session_id", "x-session-id")
_DENSE_TOOLS = 256 * 1024
_QUICK_CHECK = 16 * 1024


def _ascii(raw: Body) -> Body:
    if b"\\u00" not in raw:
        return raw
    return _ASCII_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)


class _ToolHead(msgspec.Struct):
    type: Any = None
    model: Any = None


_tools = msgspec.json.Decoder(list[_ToolHead]).decode


@dataclass(slots=True)
class ClientRequest:
    endpoint: str
    raw: Body
    fields: dict[str, msgspec.Raw] = field(repr=False)
    model: ModelInfo
    requested_model: str
    stream: bool
    sticky: str | None = None
    previous_response_id: str | None = None
    service_tier: str | None = None
    max_output: int | None = None
    """The output limit the client set (``max_tokens`` and its kin), if any."""
    changes: dict[str, bytes] = field(default_factory=dict)
    """Top-level fields to send re-encoded (values already JSON), besides the model's name."""
    size: int = 0

    @property
    def injected_usage(self) -> bool:
        """True when poolgate, not the client, asks a chat stream for its usage chunk."""
        return "stream_options" in self.changes

    def upstream_body(self, upstream_model: str) -> Body:
        """The bytes to send: the client's own unless a field has to change."""
        changes = self.changes
        if upstream_model == self.requested_model and not changes:
            return self.raw
        parts: list[bytes] = []
        for name, value in self.fields.items():
            if name == "model":
                parts.append(b'"model":' + _encode(upstream_model))
            elif name in changes:
                parts.append(_encode(name) + b":" + changes[name])
            else:
                parts.append(_encode(name) + b":" + bytes(value))
        for name, new in changes.items():
            if name not in self.fields:
                parts.append(_encode(name) + b":" + new)
        return b"{" + b",".join(parts) + b"}"

    def forget_body(self) -> None:
        """Drop the client's bytes once no retry can need them (a stream under way holds no copy)."""
        self.raw = b""
        self.fields = {}


def parse_request(raw: Body, endpoint: str, key: KeyRecord, catalog: Catalog,
                  headers: Mapping[str, str]) -> ClientRequest:
    """Decode and check a request before any upstream is called; raises the client-facing errors."""
    fields = _decode_top(raw)
    name = _field(fields, "model")
    if not isinstance(name, str) or not name:
        raise InvalidRequestError("You must provide a model parameter.", param="model")
    stream = _field(fields, "stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequestError("'stream' must be true or false.", param="stream")
    model = resolve_model(catalog, key, name)
    base_endpoint = "responses" if endpoint.startswith("responses") else endpoint
    if base_endpoint not in model.supported_endpoints:
        raise PermissionDeniedError(
            f"The model '{name}' is not served on this endpoint; it supports {', '.join(model.supported_endpoints)}.",
            code="endpoint_not_allowed", param="model",
        )
    request = ClientRequest(
        endpoint, raw, fields, model, name, stream and endpoint in ("chat_completions", "responses"), size=len(raw),
    )
    policy = key.policy
    if endpoint != "embeddings":
        _check_effort(request, key)
        _check_verbosity(request, key)
        _check_service_tier(request, key)
    if policy.allowed_modalities is not None:
        _check_modalities(raw, endpoint, policy.allowed_modalities)
    if "tools" in fields:
        _check_tool_models(fields["tools"], catalog, key)
    request.max_output = _max_output(fields)
    if request.stream and endpoint == "chat_completions":
        options = _field(fields, "stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            merged = {**(options if isinstance(options, dict) else {}), "include_usage": True}
            request.changes["stream_options"] = _encode(merged)
    request.sticky = _sticky(fields, headers)
    previous = _field(fields, "previous_response_id")
    if previous is not None:
        if not isinstance(previous, str) or not previous:
            raise InvalidRequestError("'previous_response_id' must be a response id.", param="previous_response_id")
        request.previous_response_id = previous
    return request


def _decode_top(raw: Body) -> dict[str, msgspec.Raw]:
    try:
        fields = _top(raw)
    except msgspec.ValidationError:
        raise InvalidRequestError("The request body must be a JSON object.") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"We could not parse the JSON body of your request: {exc}") from None
    except RecursionError:
        raise InvalidRequestError("The JSON body of your request is nested too deeply.") from None
    _refuse_duplicates(raw, fields)
    return fields


def _refuse_duplicates(raw: Body, fields: dict[str, msgspec.Raw]) -> None:
    """A top-level key given twice is refused: upstreams differ on which one wins, so the request an
    upstream runs could differ from the one checked here (``{"model":"a","model":"b"}``).

    Walks the top level in the client's order; each value must be exactly the one decoded for its
    key, which holds only when no key came twice (escaped spellings of one name included).
    A small body in which each key's quoted name occurs once, with no escape that could spell a name another
    way, has no duplicate: that is checked first, in C, and the walk is for the rest."""
    if len(raw) <= _QUICK_CHECK and b"\\u" not in raw and b"\\/" not in raw:
        for name in fields:
            if raw.count(b'"' + name.encode() + b'"') != 1:
                break
        else:
            return
    view = memoryview(raw)
    pos = raw.index(b"{") + 1
    seen: set[str] = set()
    while True:
        match = _KEY_TOKEN.match(raw, pos)
        if match is None:
            return  # "{}" or the closing brace: msgspec has already checked the syntax
        key = _any(b'"' + match.group(1) + b'"')
        if key in seen or key not in fields:
            raise InvalidRequestError(f"The field '{key}' is given more than once.", param=str(key))
        seen.add(key)
        value = fields[key]
        start = match.end()
        end = start + len(memoryview(value))
        if view[start:end] != memoryview(value):
            raise InvalidRequestError(f"The field '{key}' is given more than once.", param=str(key))
        separator = _SEPARATOR.match(raw, end)
        if separator is None or separator.group(1) == b"}":
            return
        pos = separator.end()


def _field(fields: dict[str, msgspec.Raw], name: str, default: Any = None) -> Any:
    raw = fields.get(name)
    if raw is None:
        return default
    try:
        return _any(raw)
    except RecursionError:
        raise InvalidRequestError(f"'{name}' is nested too deeply.", param=name) from None


def _object(fields: dict[str, msgspec.Raw], name: str) -> dict[str, Any]:
    value = _field(fields, name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequestError(f"'{name}' must be an object.", param=name)
    return value


def _max_output(fields: dict[str, msgspec.Raw]) -> int | None:
    for name in ("max_output_tokens", "max_completion_tokens", "max_tokens"):
        value = _field(fields, name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _check_effort(request: ClientRequest, key: KeyRecord) -> None:
    """Refuse an effort the key may not use; choose one for the client when the default is not allowed."""
    if request.endpoint.startswith("responses"):
        reasoning = _object(request.fields, "reasoning")
        effort, param = reasoning.get("effort"), "reasoning.effort"
    else:
        reasoning, effort, param = {}, _field(request.fields, "reasoning_effort"), "reasoning_effort"
    allowed = key.policy.allowed_reasoning_efforts
    if allowed is None:
        return
    model = request.model
    if effort is not None:
        if effort not in allowed:
            raise PermissionDeniedError(
                f"This API key may not use reasoning effort {effort!r}; allowed: {', '.join(allowed) or 'none'}.",
                code="reasoning_effort_not_allowed", param=param,
            )
        return
    if not model.supported_reasoning_levels or model.default_reasoning_level in allowed:
        return
    trimmed = trim_model(model, key.policy)
    chosen = trimmed.default_reasoning_level if trimmed is not None else None
    if chosen is None:
        raise PermissionDeniedError(
            f"This API key may not use any reasoning effort of the model '{model.id}'.",
            code="reasoning_effort_not_allowed", param=param,
        )
    if request.endpoint.startswith("responses"):
        request.changes["reasoning"] = _encode({**reasoning, "effort": chosen})
    else:
        request.changes["reasoning_effort"] = _encode(chosen)


def _check_verbosity(request: ClientRequest, key: KeyRecord) -> None:
    """The same for verbosity: chat's ``verbosity``, Responses' ``text.verbosity``."""
    if request.endpoint.startswith("responses"):
        text = _object(request.fields, "text")
        verbosity, param = text.get("verbosity"), "text.verbosity"
    else:
        text, verbosity, param = {}, _field(request.fields, "verbosity"), "verbosity"
    allowed = key.policy.allowed_verbosities
    if allowed is None:
        return
    if verbosity is not None:
        if verbosity not in allowed:
            raise PermissionDeniedError(
                f"This API key may not use verbosity {verbosity!r}; allowed: {', '.join(allowed) or 'none'}.",
                code="verbosity_not_allowed", param=param,
            )
        return
    model = request.model
    if not model.support_verbosity or (model.default_verbosity or "medium") in allowed:
        return
    trimmed = trim_model(model, key.policy)
    chosen = trimmed.default_verbosity if trimmed is not None else None
    if chosen is None:
        raise PermissionDeniedError(
            f"This API key may not use any verbosity of the model '{model.id}'.",
            code="verbosity_not_allowed", param=param,
        )
    if request.endpoint.startswith("responses"):
        request.changes["text"] = _encode({**text, "verbosity": chosen})
    else:
        request.changes["verbosity"] = _encode(chosen)


def _check_service_tier(request: ClientRequest, key: KeyRecord) -> None:
    tier = _field(request.fields, "service_tier")
    if tier is not None and not isinstance(tier, str):
        raise InvalidRequestError("'service_tier' must be a string.", param="service_tier")
    allowed = key.policy.allowed_service_tiers
    if tier is not None:
        if allowed is not None and tier not in allowed:
            raise PermissionDeniedError(
                f"This API key may not use service tier {tier!r}; allowed: {', '.join(allowed) or 'none'}.",
                code="service_tier_not_allowed", param="service_tier",
            )
        request.service_tier = tier
        return
    if allowed is None or "auto" in allowed or "default" in allowed:
        return
    if not allowed:
        raise PermissionDeniedError("This API key may not use any service tier.", code="service_tier_not_allowed",
                                    param="service_tier")
    chosen = min(allowed, key=SERVICE_TIERS.index)
    request.service_tier = chosen
    request.changes["service_tier"] = _encode(chosen)


def _check_modalities(raw: Body, endpoint: str, allowed: tuple[str, ...]) -> None:
    """Every part that carries an image, audio, a file or video, wherever it stands in the body."""
    for match in _PART_TYPE.finditer(_ascii(raw)):
        modality = _PART_MODALITIES[match.group(1).decode()]
        if modality not in allowed:
            raise PermissionDeniedError(
                f"This API key may not send {modality} input.", code="modality_not_allowed",
                param="messages" if endpoint == "chat_completions" else "input",
            )


def _check_tool_models(raw_tools: msgspec.Raw, catalog: Catalog, key: KeyRecord) -> None:
    """A tool that names a model (``image_generation`` does) runs that model: the key must allow it."""
    tools = bytes(raw_tools)
    if not _MODEL_FIELD.search(_ascii(tools)):
        return
    if len(tools) > _DENSE_TOOLS and tools.count(b"{") * 24 > len(tools):
        raise InvalidRequestError("'tools' holds too many objects.", param="tools")
    try:
        heads = _tools(tools)
    except msgspec.ValidationError:
        raise InvalidRequestError("'tools' must be a list of objects.", param="tools") from None
    except (msgspec.DecodeError, RecursionError):
        raise InvalidRequestError("'tools' is not valid JSON.", param="tools") from None
    for index, head in enumerate(heads):
        if head.model is None:
            continue
        name = head.model
        if not isinstance(name, str) or not name:
            raise InvalidRequestError("A tool's 'model' must be a model id.", param=f"tools[{index}].model")
        model = catalog.resolve(name)
        names = model.names if model is not None else (name,)
        if not key.policy.allows_model(names):
            raise PermissionDeniedError(
                f"This API key may not use the model '{name}'.", code="model_not_allowed",
                param=f"tools[{index}].model",
            )


def _sticky(fields: dict[str, msgspec.Raw], headers: Mapping[str, str]) -> str | None:
    """What keeps one conversation on one upstream: the prompt cache key, else a session header."""
    key = _field(fields, "prompt_cache_key")
    if isinstance(key, str) and key:
        return key
    for header in _SESSION_HEADERS:
        value = headers.get(header)
        if value:
            return str(value)
    return None

