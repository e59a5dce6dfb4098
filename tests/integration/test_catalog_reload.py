"""The operator's catalog file is picked up while serving; a broken edit keeps the old catalog."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from app.settings import Settings
from keys import Policy
from tests.support import ServerProcess, add_upstreams, create_key, poolgate, wait_for


def _write(path: Path, data: dict[str, object] | str) -> None:
    """Replace the file in one step (a temporary file, then a rename): the server never reads half of it."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(data if isinstance(data, str) else json.dumps(data))
    os.replace(tmp, path)


def test_edits_are_served_and_broken_edits_keep_the_old_catalog(
    tmp_path: Path, make_settings: Callable[..., Settings],
) -> None:
    catalog_file = tmp_path / "catalog.json"
    _write(catalog_file, {"models": [{"id": "house-model", "display_name": "House", "priority": 500}]})
    settings = make_settings(sync_interval=0.1, catalog_file=catalog_file)
    _, token = create_key(settings, "ops", Policy(allowed_models=("*",)))
    add_upstreams(settings, [{"name": "any", "base_url": "http://127.0.0.1:9/v1", "models": "*"}])
    server = ServerProcess(settings).start()
    try:
        http = server.http
        first = http.get("/v1/models", token).json()
        assert first["data"][0]["id"] == "house-model"

        _write(catalog_file, {"models": [{"id": "house-model", "priority": 500}], "aliases": {"house": "house-model"},
                              "hide": ["gpt-4o*"]})
        second = wait_for(lambda: (b := http.get("/v1/models", token).json())["catalog_version"]
                          != first["catalog_version"] and b, what="the edited catalog")
        assert "gpt-4o" not in [m["id"] for m in second["data"]]
        assert http.get("/v1/models/house", token).json()["id"] == "house-model"
        assert second["catalog_age_seconds"] <= 2

        _write(catalog_file, '{"models": [{"id": "house-model", "priority": "high"}]}')
        wait_for(lambda: "catalog file rejected" in server.log(), what="the error in the log")
        assert "priority" in server.log()
        still = http.get("/v1/models", token).json()
        assert still["catalog_version"] == second["catalog_version"]
    finally:
        server.stop()


def test_a_broken_catalog_file_stops_start_up_with_one_line(
    tmp_path: Path, make_settings: Callable[..., Settings],
) -> None:
    catalog_file = tmp_path / "catalog.toml"
    catalog_file.write_text("models = [ { id = 'x', context_window = 'big' } ]")
    settings = make_settings(catalog_file=catalog_file)
    for command in (["models", "list"], ["serve", "--port", "1"]):
        result = poolgate(settings, *command)
        assert result.code == 1
        assert str(catalog_file) in result.stderr and "context_window" in result.stderr
        assert "Traceback" not in result.stderr
