"""``limits``' in-process storage with expiry swept in slices, at most once a second.

The library's memory storage schedules a sweep after every increment, and each sweep
walks every key in one go on the event loop: with 100,000 active keys that is a stall
of tens of milliseconds, over and over. Here the sweep waits a second between runs and
yields to the loop every few thousand keys, so requests never queue behind it.
"""

from __future__ import annotations

import asyncio
import time

from limits.aio.storage import MemoryStorage

__all__ = ["SlicedMemoryStorage"]

SWEEP_EVERY = 1.0
SLICE = 2000


class SlicedMemoryStorage(MemoryStorage):
    # The library calls this name-mangled hook after each write; replacing it is the supported-by-subclass
    # way to change when expiry runs without copying the storage.
    async def _MemoryStorage__schedule_expiry(self) -> None:
        if self.timer is None or self.timer.done():
            self.timer = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        await asyncio.sleep(SWEEP_EVERY)
        now = time.time()
        expirations, storage, locks = self.expirations, self.storage, self.locks
        for position, key in enumerate(list(expirations)):
            deadline = expirations.get(key)
            if deadline is not None and deadline <= now and not (key in locks and locks[key].locked()):
                storage.pop(key, None)
                expirations.pop(key, None)
                locks.pop(key, None)
            if position % SLICE == SLICE - 1:
                await asyncio.sleep(0)
        for position, key in enumerate(list(self.events)):  # moving-window entries (unused by poolgate)
            entries = [e for e in self.events.get(key, []) if e.expiry > now]
            if entries:
                self.events[key] = entries
            else:
                self.events.pop(key, None)
            if position % SLICE == SLICE - 1:
                await asyncio.sleep(0)
