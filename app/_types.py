"""Type aliases shared across the app."""

from __future__ import annotations

from typing import Any, TypeAlias

from litestar import Request
from litestar.datastructures import State

__all__ = ["AnyRequest"]

AnyRequest: TypeAlias = Request[Any, Any, State]
