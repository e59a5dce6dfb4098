"""The real Codex CLI as a gateway client: installed once under ``.cache/``, run hermetically, watched on the wire.

Codex is pinned: what it sends and what it accepts changes between releases, and these tests
pin the gateway to the behaviour measured for this version.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.support import wait_for
from tests.support.npm import NpmUnavailable, npm_package

__all__ = [
    "CODEX_VERSION",
    "CodexRun",
    "CodexUnavailable",
    "Recorder",
    "Seen",
    "codex_binary",
    "config_toml",
    "run_codex",
]

CODEX_VERSION = "0.169.0"
PROVIDER = "poolgate"
KEY_VARIABLE = "POOLGATE_KEY"


class CodexUnavailable(Exception):
    """Codex cannot be installed or run here (no npm, no network, a broken download): the tests skip."""


def _runs(folder: Path) -> bool:
    binary = folder / "node_modules" / ".bin" / "codex"
    try:
        version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return version.returncode == 0 and CODEX_VERSION in version.stdout


@functools.cache
def codex_binary() -> Path:
    """The pinned ``codex`` executable, installing it with npm on first use; raises CodexUnavailable."""
    try:
        folder = npm_package("@openai/codex", CODEX_VERSION, _runs)
    except NpmUnavailable as exc:
        raise CodexUnavailable(str(exc)) from None
    return folder / "node_modules" / ".bin" / "codex"


@dataclass
class CodexRun:
    """One ``codex exec --json`` run: exit code, the JSONL events, stderr and how long it took."""

    code: int
    events: list[dict[str, Any]]
    stderr: str
    seconds: float

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]

    @property
    def messages(self) -> list[str]:
        """The agent's answers, as ``codex exec`` prints them."""
        items = [e["item"] for e in self.of_type("item.completed")]
        return [i["text"] for i in items if i.get("type") == "agent_message"]

    @property
    def errors(self) -> list[str]:
        return [str(e.get("message")) for e in self.of_type("error")] + [
            str(e.get("error", {}).get("message")) for e in self.of_type("turn.failed")]

    @property
    def thread_id(self) -> str:
        return str(self.of_type("thread.started")[0]["thread_id"])

    @property
    def usage(self) -> dict[str, Any]:
        return dict(self.of_type("turn.completed")[-1]["usage"])

    def explain(self) -> str:
        return f"exit {self.code} after {self.seconds:.1f}s\nevents: {json.dumps(self.events)}\nstderr:\n{self.stderr}"


def _toml(value: object) -> str:
    """The TOML form of the few value types a codex config needs (JSON strings are TOML strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def config_toml(base_url: str, model: str | None, provider: Mapping[str, object], *, builtin: bool = False) -> str:
    """A config that talks only to the gateway, nothing phoning home: a custom provider with the catalog from
    the gateway, or (``builtin``) Codex's own OpenAI provider pointed at the gateway, as a user of
    ``openai_base_url`` has it (it always tries the Responses WebSocket first)."""
    lines = [f"model = {_toml(model)}"] if model is not None else []
    if builtin:
        lines += [f"openai_base_url = {_toml(base_url)}"]
    else:
        settings: dict[str, object] = {
            "name": "poolgate", "base_url": base_url, "env_key": KEY_VARIABLE, "wire_api": "responses",
            "model_catalog_url": base_url + "/models", **provider,
        }
        lines += [f"model_provider = {_toml(PROVIDER)}", "", f"[model_providers.{PROVIDER}]"]
        lines += [f"{name} = {_toml(value)}" for name, value in settings.items()]
    lines += ["", "[analytics]", "enabled = false", "", "[features]"]
    lines += [f"{feature} = false" for feature in ("apps", "plugins", "remote_plugin", "in_app_updates")]
    return "\n".join(lines) + "\n"


def run_codex(
    home: Path, base_url: str, key: str, prompt: str = "say hi", *, model: str | None = None,
    args: tuple[str, ...] = (), provider: Mapping[str, object] | None = None, timeout: float = 60.0,
    builtin: bool = False,
) -> CodexRun:
    """``codex exec --json`` once, in a fresh ``CODEX_HOME`` under ``home``, with stdin closed.

    ``provider`` adds or overrides provider settings (``stream_max_retries``, ...). The environment
    is built from scratch so no real credential, proxy or user config can leak into the run.
    """
    codex_home, workdir = home / "codex-home", home / "work"
    codex_home.mkdir(parents=True)
    workdir.mkdir()
    (codex_home / "config.toml").write_text(config_toml(base_url, model, provider or {}, builtin=builtin))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "CODEX_HOME": str(codex_home),
           "LANG": "C.UTF-8", KEY_VARIABLE: key}
    if builtin:
        env["CODEX_API_KEY"] = key
    # --strict-config: a misspelt setting fails the run instead of being silently ignored.
    command = [str(codex_binary()), "exec", "--skip-git-repo-check", "--ephemeral", "--strict-config", "--json",
               *args, prompt]
    started = time.monotonic()
    # A session of its own, so a timeout can end codex's native child along with the node launcher.
    process = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(f"codex did not finish within {timeout}s\nstdout:\n{stdout}\nstderr:\n{stderr}") from None
    seconds = time.monotonic() - started
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return CodexRun(process.returncode, events, stderr, seconds)


@dataclass(frozen=True)
class Seen:
    """One request exactly as codex sent it (all its headers), and the answer the gateway gave."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    answer_headers: dict[str, str]
    answer: bytes
    at: float
    """When the request arrived (``time.monotonic()``)."""

    def json(self) -> Any:
        return json.loads(self.body)

    def answer_json(self) -> Any:
        return json.loads(self.answer)


@dataclass
class Recorder:
    """A pass-through HTTP proxy between codex and the gateway that notes every request on the wire.

    The gateway's own logs only show what reached an upstream; this shows what codex asked
    for, including requests the gateway refused and every retry. Bodies and headers pass
    through unchanged and streams are forwarded as they arrive.
    """

    target: str
    seen: list[Seen] = field(default_factory=list)
    base_url: str = ""

    _HOP = frozenset({"host", "connection", "keep-alive", "content-length", "transfer-encoding"})

    def __post_init__(self) -> None:
        self._forwarding = 0  # requests not yet in ``seen``: only the recorder's loop changes it
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.base_url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)

    async def _start(self) -> str:
        self._session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=120))
        self._runner = web.ServerRunner(web.Server(self._forward), shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _forward(self, request: web.BaseRequest) -> web.StreamResponse:
        self._forwarding += 1
        try:
            return await self._relay(request)
        finally:
            self._forwarding -= 1

    async def _relay(self, request: web.BaseRequest) -> web.StreamResponse:
        arrived = time.monotonic()
        sent = {k.lower(): v for k, v in request.headers.items()}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in self._HOP}
        if "upgrade" in request.headers.get("connection", "").lower():  # a WebSocket handshake: pass it on as asked
            headers["Connection"] = request.headers["connection"]
        body = await request.read()
        answer = bytearray()
        async with self._session.request(
            request.method, self.target + str(request.rel_url), data=body or None, headers=headers,
            allow_redirects=False, skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        ) as upstream:
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in self._HOP}
            response = web.StreamResponse(status=upstream.status, headers=out)
            try:
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    answer += chunk
                    await response.write(chunk)
                await response.write_eof()
            except ConnectionResetError:  # codex hung up once it had what it needed; nothing to pass on
                pass
            finally:
                self.seen.append(Seen(request.method, str(request.rel_url), sent, body, upstream.status,
                                      {k.lower(): v for k, v in out.items()}, bytes(answer), arrived))
            return response

    def requests(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        """What codex asked for so far, optionally only one method and path (query ignored).

        Waits (up to 5 s) for requests still being forwarded: one is noted only after its answer has been
        passed on, so codex can have its answer, and even have exited, before it is in ``seen``.
        """
        wait_for(lambda: self._forwarding == 0, timeout=5.0, interval=0.01,
                 what="the recorder to finish forwarding requests in progress")
        return sorted((s for s in list(self.seen) if (method is None or s.method == method)
                       and (path is None or s.path.partition("?")[0] == path)), key=lambda s: s.at)

    def stop(self) -> None:
        async def close() -> None:
            await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
