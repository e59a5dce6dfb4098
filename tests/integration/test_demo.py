"""``poolgate demo`` answers with no account configured, through the real SDK."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import openai

from app.settings import Settings
from tests.support import ROOT, env_for, free_port, wait_for


def test_the_demo_serves_a_streamed_answer_with_its_printed_key(settings: Settings) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app", "demo", "--port", str(port), "--interval", "0"],
                            cwd=ROOT, env={**env_for(settings), "COLUMNS": "300"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = ""
        assert proc.stdout is not None
        while "demo key" not in output:
            line = proc.stdout.readline()
            assert line, output
            output += line
        token = re.search(r"pg_\w+", output)
        assert token is not None
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=token.group(0), max_retries=0)
        wait_for(lambda: client.models.list().data, timeout=20, what="the demo server")
        chunks = list(client.chat.completions.create(model="gpt-5", stream=True,
                                                     messages=[{"role": "user", "content": "hi"}]))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.startswith("[demo] tok0")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        if proc.stdout:
            proc.stdout.close()
