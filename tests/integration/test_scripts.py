"""The README's first commands, in a fresh copy of the checkout: ``scripts/serve`` installs only what serving
needs, and ``scripts/serve --background`` returns once the server answers, so the Quick start block can be
pasted at once (the commands after it find a migrated database and a listening server)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT, Http, free_port

pytestmark = pytest.mark.slow


def _checkout_copy(target: Path) -> Path:
    """The files git knows of (committed or not), as a fresh clone plus the work in progress would have."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_serve_in_the_background_then_the_quick_start_commands(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout")
    checkout = _checkout_copy(tmp_path / "poolgate")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POOLGATE_", "VIRTUAL_ENV"))}
    env["POOLGATE_DATA_DIR"] = str(tmp_path / "data")
    started = subprocess.run(["./scripts/serve", "--background", "--port", str(port)], cwd=checkout, env=env,
                             capture_output=True, text=True, timeout=600)
    pid_file = tmp_path / "data" / "poolgate.pid"
    try:
        assert started.returncode == 0, started.stderr
        assert f"serving on port {port}" in started.stdout
        python = checkout / ".venv" / "bin" / "python"
        for tool in ("pytest", "mypy", "ruff"):  # serving needs none of them
            assert subprocess.run([str(python), "-c", f"import {tool}"], capture_output=True).returncode != 0, tool
        created = subprocess.run([str(checkout / ".venv" / "bin" / "poolgate"), "keys", "create", "alice",
                                  "--models", "*", "--json"], cwd=checkout, env=env, capture_output=True, text=True,
                                 timeout=60)
        assert created.returncode == 0, created.stderr
        key = json.loads(created.stdout)["key"]
        assert Http(f"http://127.0.0.1:{port}").get("/v1/models", key=key).status == 200
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
