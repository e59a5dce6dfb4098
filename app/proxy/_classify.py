"""What an upstream's answer means for the request: pass it on, or try another upstream.

A decision made from the status and the headers alone, before any of the body is read,
so a retry never follows a byte sent to the client.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

__all__ = ["Verdict", "classify", "media_type"]


class Verdict(enum.Enum):
    STREAM = "stream"
    """A 2xx event stream the client asked for: relay it event by event."""
    WHOLE = "whole"
    """A 2xx JSON answer: read it whole and pass it on."""
    CLIENT_ERROR = "client_error"
    """A 4xx the client's request caused: pass it on; it never counts against the upstream."""
    RATE_LIMITED = "rate_limited"
    """The account is rate-limited: cool it down and try another."""
    FAILED = "failed"
    """The upstream's fault (5xx, a redirect, our credential refused, not JSON): count it, try another."""


def media_type(headers: Mapping[str, str]) -> str:
    """``application/json`` from ``application/json; charset=utf-8``, lower-cased."""
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _is_json(kind: str) -> bool:
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def classify(status: int, headers: Mapping[str, str], wants_stream: bool) -> tuple[Verdict, str]:
    """The verdict, and for a failure the reason a client may read (never a quote of the answer)."""
    if status == 429:
        return Verdict.RATE_LIMITED, "The upstream account is rate-limited."
    if status >= 500 or status in (401, 407):  # the upstream's fault, or our credential for it
        return Verdict.FAILED, f"An upstream answered with status {status}."
    if 300 <= status < 400:
        return Verdict.FAILED, f"An upstream answered with a redirect ({status})."
    if status >= 400:
        return Verdict.CLIENT_ERROR, ""
    if status < 200:
        return Verdict.FAILED, f"An upstream answered with status {status}."
    kind = media_type(headers)
    if wants_stream and kind == "text/event-stream":
        return Verdict.STREAM, ""
    if _is_json(kind):
        return Verdict.WHOLE, ""
    return Verdict.FAILED, "An upstream answered with something that is not JSON."
