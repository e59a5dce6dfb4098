"""What ships starts and serves: the single-file build, and the container image's install steps.

Each artifact is built from this checkout and run outside it, with nothing but a bare Python and
what the artifact carries: migrations and the bundled catalog must come from inside it. Building
installs every dependency (about 40 s each), so results are kept under ``.cache/packaging/``, keyed
by the wheel's bytes (hatchling builds it reproducibly), the build scripts and the Python running
the tests: any source change builds again; a fresh checkout (CI) always builds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import ROOT, GiveUp, Http, free_port, wait_for

pytestmark = pytest.mark.slow

CACHE = ROOT / ".cache" / "packaging"
WHEEL_INSTALL = ROOT / "scripts" / "wheel-install"
BUILD_INPUTS = [ROOT / "pyproject.toml", ROOT / "scripts" / "build", WHEEL_INSTALL]
# The interpreter the venv was made from, started with -S: no site-packages but what the artifact brings.
BARE_PYTHON = [getattr(sys, "_base_executable", sys.executable), "-S"]


def test_single_file_build_serves(cache_entry: Path, tmp_path: Path) -> None:
    pyz = _cached(cache_entry / "poolgate.pyz", lambda out: _run(["bash", str(ROOT / "scripts" / "build"), str(out)]))
    poolgate = [*BARE_PYTHON, str(pyz)]
    env = _clean_env(tmp_path, SHIV_ROOT=str(cache_entry / "shiv"))

    with _serving(poolgate, env, tmp_path) as http:
        _check_serves(poolgate, env, tmp_path, http)


def test_dockerfile_install_steps_work_in_a_clean_virtualenv(wheel: Path, cache_entry: Path, tmp_path: Path) -> None:
    # The image runs scripts/wheel-install (mounted into the final stage) for every package it installs.
    steps = _dockerfile_install_steps()
    assert [[Path(step[0]).name, step[1]] for step in steps] == [["wheel-install", "build"], ["wheel-install", "venv"]]
    venv = _cached(cache_entry / "venv", lambda out: _run(["bash", str(WHEEL_INSTALL), "venv", str(out), str(wheel)]))
    poolgate = [str(venv / "bin" / "poolgate")]
    env = _clean_env(tmp_path)

    installed = _run([str(venv / "bin" / "python"), "-c", "import app; print(app.__file__)"], env=env, cwd=tmp_path)
    assert Path(installed.strip()).is_relative_to(venv), "the venv must run its own copy of poolgate"
    with _serving(poolgate, env, tmp_path) as http:
        _check_serves(poolgate, env, tmp_path, http)


def _check_serves(poolgate: list[str], env: dict[str, str], cwd: Path, http: Http) -> None:
    """Migrated (a key can be stored), the key reaches the server, the bundled catalog answers."""
    _run([*poolgate, "upstreams", "add", "any", "--base-url", "http://127.0.0.1:9/v1", "--models", "*"],
         env=env, cwd=cwd)
    created = json.loads(_run([*poolgate, "keys", "create", "smoke", "--models", "*", "--json"], env=env, cwd=cwd))

    def models() -> list[str]:
        response = http.get("/v1/models", key=created["key"])
        return [item["id"] for item in response.json()["data"]] if response.status == 200 else []

    served = wait_for(models, timeout=10, what="the new key to list models")
    bundled = json.loads((ROOT / "app" / "catalog" / "bundled.json").read_text())["models"]
    assert set(served) == {model["id"] for model in bundled}
    # The dashboard's templates and assets come from inside the artifact too.
    signin = http.get("/admin/signin")
    assert signin.status == 200 and b"Admin token" in signin.body
    for asset in ("poolgate.css", "poolgate.js", "favicon.svg"):
        assert http.get(f"/admin/static/{asset}").status == 200, asset


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built the way the image's first stage builds it."""
    out = tmp_path_factory.mktemp("wheel")
    return Path(_run(["bash", str(WHEEL_INSTALL), "build", str(out)], env={**os.environ, "PYTHON": sys.executable}))


@pytest.fixture(scope="module")
def cache_entry(wheel: Path) -> Path:
    digest = hashlib.sha256(f"{sys.version} {platform.machine()}".encode())
    for path in [wheel, *BUILD_INPUTS]:
        digest.update(path.read_bytes())
    entry = CACHE / digest.hexdigest()[:16]
    entry.mkdir(parents=True, exist_ok=True)
    os.utime(entry)
    # About 0.4 GB an entry: keep this one and the one used before it (a run still using it, or an edit undone).
    entries = sorted((path for path in CACHE.iterdir() if path.is_dir()), key=lambda path: path.stat().st_mtime)
    for old in entries[:-2]:
        shutil.rmtree(old, ignore_errors=True)
    return entry


def _cached(target: Path, make: Callable[[Path], object]) -> Path:
    """``make(target)`` once per cache entry; one left half-made by a run that died is made again."""
    done = target.with_name(target.name + ".done")
    with target.with_name(target.name + ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent runs wait for one build instead of racing
        if not done.exists():
            if target.is_dir():
                shutil.rmtree(target)
            target.unlink(missing_ok=True)
            make(target)
            done.touch()
    return target


def _dockerfile_install_steps() -> list[list[str]]:
    """The Dockerfile's RUN lines that install Python packages, as argument lists."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    runs = [line.split(None, 1)[1] for line in text.splitlines() if line.startswith("RUN ")]
    steps = []
    for run in runs:
        words = [word for word in shlex.split(run) if not word.startswith("--mount=")]
        if "pip" in run or any(word.endswith("wheel-install") for word in words):
            steps.append(words[1:] if words[0] == "bash" else words)
    return steps


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment less anything that could lead a process back into the checkout or its venv."""
    drop = ("POOLGATE_", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "SHIV_")
    env = {name: value for name, value in os.environ.items() if not name.startswith(drop)}
    env.update({"POOLGATE_DATA_DIR": str(home / "data"), "POOLGATE_HOST": "127.0.0.1", "COLUMNS": "200"}, **extra)
    return env


def _run(command: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{shlex.join(command)} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc.stdout.strip()


@contextmanager
def _serving(poolgate: list[str], env: dict[str, str], cwd: Path) -> Iterator[Http]:
    """``poolgate serve`` on a free port, until /readyz answers 200; stopped with SIGTERM."""
    port = free_port()
    http = Http(f"http://127.0.0.1:{port}")
    log_path = cwd / f"serve-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*poolgate, "serve"], cwd=cwd, env={**env, "POOLGATE_PORT": str(port)}, stdout=log, stderr=log
        )

    def ready() -> bool:
        if process.poll() is not None:
            raise GiveUp(f"poolgate serve exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            return http.get("/readyz").status == 200
        except OSError:
            return False

    try:
        # A first run of the single file unpacks and compiles it before it can serve.
        wait_for(ready, timeout=120, interval=0.2, what=f"/readyz on port {port}")
        yield http
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
