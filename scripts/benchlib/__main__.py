from __future__ import annotations

import argparse
import sys

from scripts.benchlib import admin, models, proxy, quotas, replicas, turns

SUITES = {"admin": admin.main, "models": models.main, "proxy": proxy.main, "quotas": quotas.main,
          "replicas": replicas.main, "turns": turns.main}


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description="Run a benchmark suite and record it.")
    parser.add_argument("suite", choices=sorted(SUITES), help="which suite to run")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = parser.parse_args()
    return SUITES[args.suite](quick=args.quick, write=not args.no_write)


if __name__ == "__main__":
    sys.exit(main())
