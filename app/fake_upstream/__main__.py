"""Run the fake upstream as its own process, for demos and out-of-process benchmarks.

python -m app.fake_upstream --host 127.0.0.1 --port 9000 --models gpt-5,o3 --api-key KEY
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from app.fake_upstream._server import FakeUpstream


def _header(value: str) -> tuple[str, str]:
    name, sep, val = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {value!r}")
    return name.strip(), val.strip()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.fake_upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--models", default="gpt-5,o3,text-embedding-3-small", help="comma-separated model ids")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1")
    parser.add_argument("--chunks", type=int, default=4, help="reply length in stream pieces after the name tag")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between stream events")
    parser.add_argument("--name", default="fake", help="tag in replies and the x-fake-upstream header")
    parser.add_argument(
        "--ratelimit-header",
        action="append",
        type=_header,
        default=[],
        metavar="NAME=VALUE",
        help="extra header on every /v1 response (repeatable)",
    )
    parser.add_argument("--no-record", action="store_true", help="do not keep received requests (long benchmarks)")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    """Serve until SIGINT/SIGTERM, then stop cleanly so the port is freed before exit."""
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    upstream = FakeUpstream(
        name=args.name,
        models=models,
        api_key=args.api_key,
        chunks=args.chunks,
        interval=args.interval,
        ratelimit_headers=dict(args.ratelimit_header),
        record=not args.no_record,
    )
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    url = await upstream.start(args.host, args.port)
    sys.stdout.write(f"fake upstream listening on {url}\n")
    sys.stdout.flush()
    try:
        await done.wait()
    finally:
        await upstream.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.chunks < 0 or args.interval < 0:
        _parser().error("--chunks and --interval must be >= 0")
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
