"""Pinned npm packages for tests that drive real Node clients: installed once under ``.cache/``, shared by
every test process (an install takes a lock, and a directory is either complete or absent)."""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import ROOT

__all__ = ["CACHE", "NpmUnavailable", "npm_package"]

CACHE = ROOT / ".cache"
INSTALL_TIMEOUT = 900.0


class NpmUnavailable(Exception):
    """A package cannot be installed or run here (no npm, no network, a broken download): the tests skip."""


@contextmanager
def _install_lock(name: str) -> Iterator[None]:
    CACHE.mkdir(exist_ok=True)
    with (CACHE / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@functools.cache
def npm_package(package: str, version: str, works: Callable[[Path], bool] | None = None) -> Path:
    """The folder ``package@version`` is installed under (its ``node_modules`` inside), installing it with
    npm on first use; ``works(folder)`` says whether an install is whole. Raises :class:`NpmUnavailable`."""
    name = f"{package.strip('@').replace('/', '-')}-{version}"
    folder = CACHE / name

    def whole(directory: Path) -> bool:
        if not (directory / "node_modules" / package / "package.json").exists():
            return False
        return works is None or works(directory)

    if whole(folder):
        return folder
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise NpmUnavailable(f"node and npm are needed to install {package}")
    with _install_lock(name):
        if whole(folder):  # another process may have finished while we waited
            return folder
        for stale in CACHE.glob(f"{name}.tmp-*"):  # left by an install that was killed
            shutil.rmtree(stale, ignore_errors=True)
        staging = CACHE / f"{name}.tmp-{os.getpid()}"
        staging.mkdir(parents=True)
        command = [npm, "install", "--prefix", str(staging), "--no-save", "--no-audit", "--no-fund",
                   "--no-package-lock", "--loglevel=error", f"{package}@{version}"]
        try:
            done = subprocess.run(command, cwd=staging, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise NpmUnavailable(f"npm install {package}@{version} did not finish: {exc}") from None
        if done.returncode != 0 or not whole(staging):
            shutil.rmtree(staging, ignore_errors=True)
            lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
            reason = [line for line in lines if "complete log" not in line][:3]
            raise NpmUnavailable(f"npm install {package}@{version} failed: {' | '.join(reason)}")
        shutil.rmtree(folder, ignore_errors=True)  # a broken earlier install
        staging.rename(folder)
    if not whole(folder):
        raise NpmUnavailable(f"{package}@{version} installed in {folder} does not work")
    return folder
