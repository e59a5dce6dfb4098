"""Reading a client's request: what it asks for, whether the key may ask it, and what to send on.

The body is decoded once. It is re-encoded only when something must change (the model's
name for the chosen upstream, a stream that should report usage, a reasoning effort
the key must use); otherwise the client's bytes go upstream untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from app.access import resolve_model
from app.catalog import ModelInfo, trim_model
from app.errors import InvalidRequestError, PermissionDeniedError
from keys import KeyRecord

__all__ = ["ClientRequest", "parse_request"]

DEFAULT_OUTPUT = 4096  # reserved for a request that sets no output limit; settled to the real count after
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_PART_MODALITIES = {
    "image_url": "image", "input_image": "image", "image": "image",
    "input_audio": "audio", "audio": "audio",
    "file": "pdf", "input_file": "pdf",
    "video_url": "video", "input_video": "video",
}


@dataclass(slots=True)
class ClientRequest:
    endpoint: str
    raw: bytes
    body: dict[str, Any]
    model: ModelInfo
    requested_model: str
    stream: bool
    inject_effort: str | None
    sticky: str | None

    @property
    def injected_usage(self) -> bool:
        """True when poolgate, not the client, asks a chat stream for its usage chunk."""
        if not self.stream or self.endpoint != "chat_completions":
            return False
        options = self.body.get("stream_options")
        return not (isinstance(options, dict) and options.get("include_usage") is True)

    @property
    def estimate_tokens(self) -> int:
        """Tokens to reserve before the call: the input (about 4 bytes a token) plus the most it may write."""
        prompt = len(self.raw) // 4 + 1
        if self.endpoint == "embeddings":
            return prompt
        for name in ("max_output_tokens", "max_completion_tokens", "max_tokens"):
            value = self.body.get(name)
            if isinstance(value, int) and value > 0:
                return prompt + value
        return prompt + min(self.model.max_output_tokens or DEFAULT_OUTPUT, DEFAULT_OUTPUT)

    def upstream_body(self, upstream_model: str) -> bytes:
        """The bytes to send: the client's own unless a field has to change."""
        changes: dict[str, Any] = {}
        if upstream_model != self.requested_model:
            changes["model"] = upstream_model
        if self.injected_usage:
            options = self.body.get("stream_options")
            changes["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        if self.inject_effort is not None:
            if self.endpoint == "responses":
                reasoning = self.body.get("reasoning")
                base = reasoning if isinstance(reasoning, dict) else {}
                changes["reasoning"] = {**base, "effort": self.inject_effort}
            else:
                changes["reasoning_effort"] = self.inject_effort
        if not changes:
            return self.raw
        return _encode({**self.body, **changes})


def parse_request(raw: bytes, endpoint: str, key: KeyRecord, catalog: Any, headers: Any) -> ClientRequest:
    """Decode and check a request before any upstream is called; raises the client-facing errors."""
    try:
        body = _decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"We could not parse the JSON body of your request: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise InvalidRequestError("You must provide a model parameter.", param="model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequestError("'stream' must be true or false.", param="stream")
    model = resolve_model(catalog, key, name)
    if endpoint not in model.supported_endpoints:
        raise PermissionDeniedError(
            f"The model '{name}' is not served on this endpoint; it supports {', '.join(model.supported_endpoints)}.",
            code="endpoint_not_allowed", param="model",
        )
    policy = key.policy
    inject = _check_effort(body, endpoint, model, key) if endpoint != "embeddings" else None
    if policy.allowed_modalities is not None:
        for modality in _modalities(body, endpoint):
            if modality not in policy.allowed_modalities:
                raise PermissionDeniedError(
                    f"This API key may not send {modality} input.", code="modality_not_allowed",
                    param="input" if endpoint != "chat_completions" else "messages",
                )
    sticky = _sticky(body, headers)
    return ClientRequest(endpoint, raw, body, model, name, stream and endpoint != "embeddings", inject, sticky)


def _check_effort(body: dict[str, Any], endpoint: str, model: ModelInfo, key: KeyRecord) -> str | None:
    """Refuse an effort the key may not use; choose one for the client when the default is not allowed."""
    if endpoint == "responses":
        reasoning = body.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
        param = "reasoning.effort"
    else:
        effort = body.get("reasoning_effort")
        param = "reasoning_effort"
    allowed = key.policy.allowed_reasoning_efforts
    if allowed is None or not model.supported_reasoning_levels:
        return None
    if effort is not None:
        if effort not in allowed:
            raise PermissionDeniedError(
                f"This API key may not use reasoning effort {effort!r}; allowed: {', '.join(allowed)}.",
                code="reasoning_effort_not_allowed", param=param,
            )
        return None
    if model.default_reasoning_level in allowed:
        return None
    trimmed = trim_model(model, key.policy)
    if trimmed is None:
        raise PermissionDeniedError(
            f"This API key may not use any reasoning effort of the model '{model.id}'.",
            code="reasoning_effort_not_allowed", param=param,
        )
    chosen: str | None = trimmed["metadata"]["default_reasoning_level"]
    return chosen


def _parts(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                yield item
                yield from _parts(item.get("content"))


def _modalities(body: dict[str, Any], endpoint: str) -> set[str]:
    source = body.get("messages") if endpoint == "chat_completions" else body.get("input")
    found = set()
    for part in _parts(source):
        modality = _PART_MODALITIES.get(str(part.get("type")))
        if modality is not None:
            found.add(modality)
    return found


def _sticky(body: dict[str, Any], headers: Any) -> str | None:
    """What keeps one conversation on one upstream: the prompt cache key, else a session header."""
    key = body.get("prompt_cache_key")
    if isinstance(key, str) and key:
        return key
    for header in ("session-id", "session_id", "x-session-id"):
        value = headers.get(header)
        if value:
            return str(value)
    return None
