"""Opaque page tokens for ``GET /v1/models``: signed for one key and one filtered view."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Protocol

__all__ = ["PageTokenError", "make_page_token", "read_page_token"]


class PageTokenError(ValueError):
    """A page token that is forged, from another key or filter, or from an older catalog."""


class _Paged(Protocol):
    @property
    def catalog_version(self) -> str: ...

    @property
    def filter_tag(self) -> str: ...


def make_page_token(view: _Paged, offset: int, secret: bytes, subject: str) -> str:
    """An opaque token for the page at ``offset``, signed with the server's secret for one key."""
    payload = f"{view.catalog_version}|{view.filter_tag}|{offset}".encode()
    mac = hmac.new(secret, subject.encode() + b"|" + payload, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(payload + b"|" + mac).decode().rstrip("=")


def read_page_token(token: str, view: _Paged, secret: bytes, subject: str) -> int:
    """The offset a token stands for; raises PageTokenError for any token not made for this view."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload, mac = raw[:-13], raw[-12:]
        if raw[-13:-12] != b"|":
            raise ValueError
        version, tag, offset_text = payload.decode().rsplit("|", 2)
        offset = int(offset_text)
    except (ValueError, UnicodeDecodeError):
        raise PageTokenError("page_token is not valid") from None
    expected = hmac.new(secret, subject.encode() + b"|" + payload, hashlib.sha256).digest()[:12]
    if not hmac.compare_digest(mac, expected) or tag != view.filter_tag or offset < 0:
        raise PageTokenError("page_token is not valid for this key and filter")
    if version != view.catalog_version:
        raise PageTokenError("page_token is stale: the model catalog changed; list again from the first page")
    return offset
