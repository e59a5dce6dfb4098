"""Usage that outlives its process: a clean stop commits every row; a killed one leaves rows the next start marks."""

from __future__ import annotations

import asyncio
import signal
import threading

import aiohttp

from tests.support import ServerProcess, query, wait_for

CHAT = [{"role": "user", "content": "hello there"}]


def rows(gateway, where: str = "1=1") -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    return query(gateway.settings, f"select * from usage where {where} order by id")


async def _burst(url: str, token: str, count: int, body: dict[str, object]) -> list[int]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one() -> int:
            async with session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
                await response.read()
                return response.status
        return list(await asyncio.gather(*(one() for _ in range(count))))


def test_sigterm_with_ten_streams_in_flight_commits_ten_rows(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}}, fake_options={"chunks": 100, "interval": 0.05}, process=True)
    url = gateway.server.base_url + "/v1/chat/completions"
    results: list[int] = []

    def run() -> None:
        results.extend(asyncio.run(_burst(url, gateway.keys["alice"], 10,
                                          {"model": "gpt-5", "messages": CHAT, "stream": True})))

    worker = threading.Thread(target=run)
    worker.start()
    fake = gateway.fakes["acct-1"]
    wait_for(lambda: fake.do(lambda: fake.fake.in_flight) == 10, what="10 streams in flight")
    assert gateway.server.process is not None
    gateway.server.process.send_signal(signal.SIGTERM)
    worker.join(timeout=30)
    gateway.server.process.wait(timeout=30)
    assert results == [200] * 10
    finished = rows(gateway)
    assert len(finished) == 10 and {r["status"] for r in finished} == {"ok"}
    assert all(r["output_tokens"] == 101 for r in finished)


def test_kill_9_mid_stream_leaves_rows_the_next_start_marks_interrupted(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}}, fake_options={"chunks": 400, "interval": 0.05}, process=True)
    stream = gateway.client().chat.completions.create(model="gpt-5", messages=CHAT, stream=True)
    next(iter(stream))
    wait_for(lambda: rows(gateway, "status = 'started'"), what="the started row to be written")
    assert gateway.server.process is not None
    gateway.server.process.kill()
    gateway.server.process.wait()
    stream.close()
    restarted = ServerProcess(gateway.settings).start()
    try:
        wait_for(lambda: [r["status"] for r in rows(gateway)] == ["interrupted"], timeout=30, interval=0.5,
                 what="the orphaned row to be marked interrupted")
        assert "marked 1 usage row(s) interrupted" in restarted.log()
    finally:
        restarted.stop()


