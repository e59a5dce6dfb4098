"""poolgate: a self-hosted, OpenAI-compatible gateway over a pool of upstream accounts."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
