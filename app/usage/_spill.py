"""The spill file: where usage goes while the database refuses writes and memory is full.

One append-only file of JSON lines per serving process in the data directory (0600), locked
while written or replayed, so workers sharing the directory never interleave. A process that
finds its database writable again replays its own file, and any file a dead process left.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["SpillFile"]

PREFIX = "usage-spill-"
SUFFIX = ".jsonl"


class SpillFile:
    def __init__(self, directory: Path | None, instance: str) -> None:
        self.directory = directory
        self.path = None if directory is None else directory / f"{PREFIX}{instance}{SUFFIX}"
        self.written = 0
        """Entries written to this process's file since it was last replayed."""

    def append(self, entries: list[dict[str, Any]]) -> None:
        """Add entries for good (fsync'd); raises OSError when the disk refuses too."""
        if self.path is None:
            raise OSError("no data directory to spill usage into")
        data = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in entries).encode()
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # replayed and removed while this waited for the lock: write to a new file
                    continue
                os.write(fd, data)
                os.fsync(fd)
                break
            finally:
                os.close(fd)
        self.written += len(entries)

    def files(self) -> list[Path]:
        """Every spill file in the directory: this process's first, then those others left."""
        if self.directory is None:
            return []
        found = sorted(self.directory.glob(f"{PREFIX}*{SUFFIX}"))
        return sorted(found, key=lambda p: p != self.path)

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[list[dict[str, Any]] | None]:
        """The entries of one file, locked against writers for the block (None when another process holds
        it); the file is removed when the block ends without an error."""
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            yield None
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            with os.fdopen(os.dup(fd), "rb") as handle:
                lines = handle.read().splitlines()
            entries = []
            for line in lines:
                with contextlib.suppress(ValueError):  # a line cut by a crash mid-write
                    entries.append(json.loads(line))
            yield entries
            path.unlink(missing_ok=True)
            if path == self.path:
                self.written = 0
        finally:
            os.close(fd)
