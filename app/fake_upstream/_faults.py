"""Scripted misbehaviour for the fake upstream: one `Fault` per upcoming /v1 POST request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

FaultKind = Literal[
    "rate_limited", "server_error", "client_error", "hang", "cut_after", "trickle", "garbage", "delay", "raw",
]

_KINDS: frozenset[str] = frozenset(get_args(FaultKind))


@dataclass(frozen=True, slots=True)
class Fault:
    """One scripted deviation from the happy path; build it with the helper functions, not directly.

    Only the fields relevant to `kind` are meaningful; the rest keep their defaults so a fault
    round-trips through JSON (`to_json` / `from_json`) for the out-of-process control API.
    """

    kind: FaultKind
    status: int = 200
    retry_after: float | None = None
    reset_requests: str | None = None
    body: bytes | None = None
    code: str | None = None
    chunks: int = 0
    interval: float = 0.0
    seconds: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()
    parts: tuple[bytes, ...] = ()
    repeat: int = 1

    def to_json(self) -> dict[str, Any]:
        """The JSON object `POST /_fake/script` accepts for this fault (so tests can script a subprocess)."""
        out: dict[str, Any] = {"kind": self.kind}
        match self.kind:
            case "rate_limited":
                out["retry_after"] = self.retry_after
                if self.reset_requests is not None:
                    out["reset_requests"] = self.reset_requests
            case "server_error" | "client_error" | "garbage":
                out["status"] = self.status
            case "cut_after":
                out["chunks"] = self.chunks
            case "trickle":
                out["interval"] = self.interval
            case "delay":
                out["seconds"] = self.seconds
            case "hang":
                pass
            case "raw":
                out.update(status=self.status, headers=[list(h) for h in self.headers],
                           parts=[part.decode("utf-8", "replace") for part in self.parts], repeat=self.repeat)
        if self.kind == "client_error":
            out["code"] = self.code
        if self.body is not None:
            out["body"] = self.body.decode("utf-8", "replace")
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Fault:
        """Parse one entry of a `/_fake/script` list; raises ValueError on anything malformed."""
        if not isinstance(obj, Mapping):
            raise ValueError("each fault must be a JSON object")
        kind = obj.get("kind")
        if kind not in _KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(_KINDS)}")
        body = _opt_body(obj.get("body"))
        try:
            match cast("FaultKind", kind):
                case "rate_limited":
                    retry = obj.get("retry_after", 1.0)
                    reset = obj.get("reset_requests")
                    return rate_limited(
                        None if retry is None else float(retry),
                        reset_requests=None if reset is None else str(reset),
                        body=body,
                    )
                case "server_error":
                    return server_error(int(obj.get("status", 500)), body=body)
                case "client_error":
                    return client_error(int(obj.get("status", 400)), str(obj.get("code", "invalid_request_error")))
                case "hang":
                    return hang()
                case "cut_after":
                    return cut_after(int(obj.get("chunks", 0)))
                case "trickle":
                    return trickle(float(obj.get("interval", 0.0)))
                case "garbage":
                    return garbage(int(obj.get("status", 200)))
                case "delay":
                    return delay(float(obj.get("seconds", 0.0)))
                case "raw":
                    pairs = [(str(name), str(value)) for name, value in obj.get("headers", [])]
                    return raw(int(obj.get("status", 200)), headers=pairs,
                               parts=[str(part).encode() for part in obj.get("parts", [])],
                               repeat=int(obj.get("repeat", 1)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad {kind} fault: {exc}") from exc
        raise AssertionError(kind)  # pragma: no cover - the match above is exhaustive


def _opt_body(value: object) -> bytes | None:
    """JSON carries text, the fault carries the exact bytes to send."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("body must be a string")
    return value.encode()


def _non_negative(name: str, value: float) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def rate_limited(
    retry_after: float | None = 1.0, *, reset_requests: str | None = None, body: bytes | None = None
) -> Fault:
    """429 with OpenAI's rate-limit envelope, `Retry-After` and/or `x-ratelimit-reset-requests`."""
    if retry_after is not None:
        _non_negative("retry_after", retry_after)
    return Fault("rate_limited", status=429, retry_after=retry_after, reset_requests=reset_requests, body=body)


def server_error(status: int = 500, body: bytes | None = None) -> Fault:
    """5xx with a server_error envelope, or exactly `body` as text/plain when given."""
    if not 500 <= status <= 599:
        raise ValueError(f"server_error status must be 5xx, got {status}")
    return Fault("server_error", status=status, body=body)


def client_error(status: int = 400, code: str = "invalid_request_error", *, body: bytes | None = None) -> Fault:
    """4xx with an OpenAI envelope carrying `code`, or exactly `body` (sent as JSON) when given."""
    if not 400 <= status <= 499:
        raise ValueError(f"client_error status must be 4xx, got {status}")
    return Fault("client_error", status=status, code=code, body=body)


def hang() -> Fault:
    """Accept the request and never answer, until the client leaves or the server stops."""
    return Fault("hang")


def cut_after(chunks: int) -> Fault:
    """Streaming: send `chunks` SSE events then close; non-streaming: headers + half the body then close."""
    _non_negative("chunks", chunks)
    return Fault("cut_after", chunks=chunks)


def trickle(interval: float) -> Fault:
    """Stream this one request with `interval` seconds between events."""
    _non_negative("interval", interval)
    return Fault("trickle", interval=interval)


def garbage(status: int = 200) -> Fault:
    """Answer with an HTML body that no JSON parser accepts."""
    if not 100 <= status <= 599:
        raise ValueError(f"garbage status must be a valid HTTP status, got {status}")
    return Fault("garbage", status=status)


def delay(seconds: float) -> Fault:
    """Wait before sending headers, then answer normally (slow time-to-first-byte)."""
    _non_negative("seconds", seconds)
    return Fault("delay", seconds=seconds)


def raw(status: int = 200, *, headers: Sequence[tuple[str, str]] = (), parts: Sequence[bytes] = (),
        repeat: int = 1) -> Fault:
    """Answer with exactly these headers (any names and values, none added but the framing) and body parts,
    each written on its own, the whole list ``repeat`` times; then close the connection. For upstreams that
    break the protocol: odd content types, headers no client should see, streams without event ends."""
    if not 100 <= status <= 599:
        raise ValueError(f"raw status must be a valid HTTP status, got {status}")
    if repeat < 1:
        raise ValueError("repeat must be >= 1")
    return Fault("raw", status=status, headers=tuple((str(k), str(v)) for k, v in headers),
                 parts=tuple(parts), repeat=repeat)
