"""Logging for serving processes: one line per record, its time formatted once per second, not per line
(the access log writes a line per relayed request)."""

from __future__ import annotations

import logging
import time

__all__ = ["configure"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Formatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(FORMAT)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int(record.msecs):03d}"


def configure(level: str) -> None:
    """Like ``logging.basicConfig(level=..., format=FORMAT)``, with the faster formatter, and without what
    no poolgate line shows (the caller's file and line, thread and process names), which every record
    would otherwise look up (the logging documentation's own advice for speed)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    if root.handlers:
        root.setLevel(level.upper())
        return
    handler = logging.StreamHandler()
    handler.setFormatter(_Formatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
