"""Each package's ``__all__`` says what others use of it: every name there exists, and is used outside it."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from tests.support import ROOT

PACKAGES = sorted(p.parent for p in [*(ROOT / "app").glob("*/__init__.py"), ROOT / "keys" / "__init__.py"])
SOURCES = [p for folder in ("app", "keys", "tests", "scripts", "alembic") for p in (ROOT / folder).rglob("*")
           if p.is_file() and (p.suffix == ".py" or p.parent.name in ("scripts",)) and "__pycache__" not in p.parts]


def _module(package: Path) -> str:
    return ".".join(package.relative_to(ROOT).parts)


@pytest.mark.parametrize("package", PACKAGES, ids=_module)
def test_every_exported_name_exists_and_is_used_outside_its_package(package: Path) -> None:
    module = importlib.import_module(_module(package))
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{_module(package)} has no __all__"
    missing = [name for name in exported if not hasattr(module, name)]
    assert not missing, f"{_module(package)}.__all__ names what it does not have: {missing}"
    outside = "\n".join(p.read_text(errors="replace") for p in SOURCES if not p.is_relative_to(package))
    unused = [name for name in exported if not re.search(rf"\b{re.escape(name)}\b", outside)]
    assert not unused, f"{_module(package)}.__all__ exports what nothing outside it uses: {unused}"
