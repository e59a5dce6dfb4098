"""Removing an upstream's credential from anything relayed: an upstream may echo the key it was sent
(in an error, a debug field, an event), and that must never reach a client.

Two searches per chunk of bytes (the whole secret, then its tail, which partial quotes such as
``sk-proj-abc...wxyz`` keep); both are C-speed substring scans, measured in docs/BENCHMARKS.md.
"""

from __future__ import annotations

__all__ = ["MASK", "Redactor"]

MASK = b"***"
_MIN_SECRET = 8
_TAIL = 8


class Redactor:
    __slots__ = ("_secret", "_tail")

    def __init__(self, secret: str | None) -> None:
        raw = (secret or "").encode("utf-8", "surrogateescape")
        self._secret = raw if len(raw) >= _MIN_SECRET else b""
        self._tail = raw[-_TAIL:] if len(raw) > 2 * _TAIL else b""

    def __bool__(self) -> bool:
        return bool(self._secret)

    def scrub(self, data: bytes) -> bytes:
        secret = self._secret
        if not secret:
            return data
        if secret in data:
            data = data.replace(secret, MASK)
        tail = self._tail
        if tail and tail in data:
            data = data.replace(tail, MASK)
        return data

    def scrub_text(self, text: str) -> str:
        return self.scrub(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")
