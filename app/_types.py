"""Type aliases shared across the app."""

from __future__ import annotations

from typing import Any, TypeAlias

from litestar import Request
from litestar.datastructures import State

__all__ = ["AnyRequest", "Body"]

AnyRequest: TypeAlias = Request[Any, Any, State]
Body: TypeAlias = bytes | bytearray
"""A request body as read: large ones are filled into one buffer in place (see ``routes._asgi.read_body``)."""
