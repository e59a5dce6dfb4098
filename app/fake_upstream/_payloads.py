"""OpenAI-shaped bodies and SSE events; deterministic so tests can assert exact text and usage."""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode

MODEL_CREATED = 1_700_000_000
EMBEDDING_DIMS = 8


def envelope(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    """OpenAI's error envelope, which SDKs and proxies parse for `code`."""
    return _encode({"error": {"message": message, "type": type_, "param": param, "code": code}})


@dataclass(frozen=True, slots=True)
class Script:
    """The reply text split into stream pieces, precomputed whenever name/chunks change."""

    pieces: tuple[str, ...]
    text: str
    chat_deltas: tuple[bytes, ...]

    @classmethod
    def build(cls, name: str, chunks: int) -> Script:
        """Piece 0 is the "[name] " tag so tests can tell which upstream answered."""
        pieces = (f"[{name}] ", *(f"tok{i}" if i == 0 else f" tok{i}" for i in range(chunks)))
        deltas = tuple(_encode({"content": p}) for p in pieces)
        return cls(pieces=pieces, text="".join(pieces), chat_deltas=deltas)

    @property
    def completion_tokens(self) -> int:
        """One token per piece: chunks + 1."""
        return len(self.pieces)


def _words(text: object) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def _content_words(content: object) -> int:
    """String content, or a list of parts of which only `text` fields count."""
    if isinstance(content, str):
        return _words(content)
    if isinstance(content, list):
        return sum(_words(part.get("text")) for part in content if isinstance(part, dict))
    return 0


def chat_prompt_tokens(body: dict[str, Any]) -> int:
    """Whitespace words over all message contents, at least 1."""
    messages = body.get("messages")
    total = 0
    if isinstance(messages, list):
        total = sum(_content_words(m.get("content")) for m in messages if isinstance(m, dict))
    return max(total, 1)


def responses_input_tokens(body: dict[str, Any]) -> int:
    """Whitespace words in `input` (a string or a list of message items), at least 1."""
    inp = body.get("input")
    if isinstance(inp, str):
        return max(_words(inp), 1)
    total = 0
    if isinstance(inp, list):
        for item in inp:
            if isinstance(item, str):
                total += _words(item)
            elif isinstance(item, dict):
                total += _content_words(item.get("content")) + _words(item.get("text"))
    return max(total, 1)


def chat_usage(prompt: int, completion: int) -> dict[str, Any]:
    """Chat usage including the detail objects real upstreams send (proxies read cached_tokens)."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def chat_completion(n: int, created: int, model: str, script: Script, prompt: int) -> bytes:
    """A non-streaming chat.completion body."""
    return _encode(
        {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": script.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": chat_usage(prompt, script.completion_tokens),
        }
    )


_ROLE_DELTA = b'{"role":"assistant","content":""}'


def chat_stream_events(
    n: int, created: int, model: str, script: Script, prompt: int, *, include_usage: bool
) -> list[bytes]:
    """Every `data:` event of a chat stream, built by splicing pre-encoded deltas into one template."""
    head = b'data: {"id":"chatcmpl-%d","object":"chat.completion.chunk","created":%d,"model":%s,' % (
        n,
        created,
        _encode(model),
    )
    head += b'"system_fingerprint":null,"choices":[{"index":0,"delta":'
    usage_null = b',"usage":null' if include_usage else b""
    tail = b',"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"
    events = [head + _ROLE_DELTA + tail]
    events.extend(head + delta + tail for delta in script.chat_deltas)
    events.append(head + b'{},"logprobs":null,"finish_reason":"stop"}]' + usage_null + b"}\n\n")
    if include_usage:
        usage = _encode(chat_usage(prompt, script.completion_tokens))
        events.append(head[: head.rindex(b'"choices"')] + b'"choices":[],"usage":' + usage + b"}\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def _message_item(n: int, status: str, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
    return {"type": "message", "id": f"msg_{n}", "status": status, "role": "assistant", "content": content}


def response_object(
    n: int, created: int, model: str, script: Script, prompt: int, *, done: bool = True,
    response_id: str | None = None, output: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Response object; `done=False` gives the in-progress shell the stream opens with; ``output`` replaces
    the scripted message (a compaction answers with its one item)."""
    usage = None
    if done:
        usage = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": script.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + script.completion_tokens,
        }
    if output is None:
        output = [_message_item(n, "completed", script.text)]
    return {
        "id": response_id or f"resp_{n}",
        "object": "response",
        "created_at": created,
        "status": "completed" if done else "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": model,
        "output": output if done else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "metadata": {},
        "usage": usage,
    }


def response_body(n: int, created: int, model: str, script: Script, prompt: int, *,
                  response_id: str | None = None, output: list[dict[str, Any]] | None = None) -> bytes:
    """A non-streaming /v1/responses body."""
    return _encode(response_object(n, created, model, script, prompt, response_id=response_id, output=output))


def compaction_stream_events(n: int, created: int, model: str, script: Script, prompt: int, response_id: str,
                             item: dict[str, Any]) -> list[bytes]:
    """A compaction's stream: the response opens, its one ``compaction`` item is added and done, it completes."""
    shell = response_object(n, created, model, script, prompt, done=False, response_id=response_id)
    payloads: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": shell}),
        ("response.output_item.added", {"output_index": 0, "item": item}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed", {"response": response_object(n, created, model, script, prompt,
                                                            response_id=response_id, output=[item])}),
    ]
    return [
        b"event: %s\ndata: %s\n\n" % (kind.encode(), _encode({"type": kind, "sequence_number": seq, **data}))
        for seq, (kind, data) in enumerate(payloads)
    ]


def response_stream_events(n: int, created: int, model: str, script: Script, prompt: int, *,
                           response_id: str | None = None) -> list[bytes]:
    """The full typed-event sequence of a /v1/responses stream, each with a sequence_number."""
    item_id = f"msg_{n}"
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    final_part = {"type": "output_text", "text": script.text, "annotations": []}
    payloads: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": response_object(n, created, model, script, prompt, done=False,
                                                           response_id=response_id)}),
        ("response.in_progress", {"response": response_object(n, created, model, script, prompt, done=False,
                                                               response_id=response_id)}),
        ("response.output_item.added", {"output_index": 0, "item": _message_item(n, "in_progress", None)}),
        ("response.content_part.added", {**where, "part": {"type": "output_text", "text": "", "annotations": []}}),
    ]
    payloads.extend(("response.output_text.delta", {**where, "delta": p, "logprobs": []}) for p in script.pieces)
    payloads += [
        ("response.output_text.done", {**where, "text": script.text, "logprobs": []}),
        ("response.content_part.done", {**where, "part": final_part}),
        ("response.output_item.done", {"output_index": 0, "item": _message_item(n, "completed", script.text)}),
        ("response.completed", {"response": response_object(n, created, model, script, prompt,
                                                            response_id=response_id)}),
    ]
    return [
        b"event: %s\ndata: %s\n\n" % (kind.encode(), _encode({"type": kind, "sequence_number": seq, **data}))
        for seq, (kind, data) in enumerate(payloads)
    ]


def embedding_vector(text: str) -> list[float]:
    """Eight floats in [-1, 1] from a hash of the text: stable across runs and processes."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 127.5 - 1.0, 6) for b in digest[:EMBEDDING_DIMS]]


def embeddings_body(model: str, inputs: Sequence[str], *, base64_format: bool) -> bytes:
    """A /v1/embeddings body; base64 is what the openai SDK asks for by default."""
    data: list[dict[str, Any]] = []
    for i, text in enumerate(inputs):
        vec = embedding_vector(text)
        value: object = vec
        if base64_format:
            value = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    prompt = max(sum(_words(t) for t in inputs), 1)
    return _encode(
        {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}
    )


def models_body(models: Sequence[str]) -> bytes:
    """The /v1/models list."""
    return _encode({"object": "list", "data": [model_object(m) for m in models]})


def model_object(model: str) -> dict[str, Any]:
    """One entry of the /v1/models list."""
    return {"id": model, "object": "model", "created": MODEL_CREATED, "owned_by": "fake"}
