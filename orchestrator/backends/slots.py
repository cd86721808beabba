"""Slots granted by rank rather than by arrival: the ready notebook with the best rank starts next.

asyncio.Semaphore wakes waiters in arrival order, and the local backend's steps arrive in plan order. Here
a free slot goes to the best-ranked waiter; grants are made on the next loop iteration, so the notebooks
that become ready at the same moment (all of them at the start) compete before the first is chosen.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any


class RankedSlots:
    def __init__(self, count: int) -> None:
        self._free = count
        self._waiting: list[tuple[Any, int, asyncio.Future[None]]] = []
        self._order = itertools.count()  # ties: first come, first served
        self._scheduled = False

    async def acquire(self, rank: Any = 0) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (rank, next(self._order), future))
        self._schedule()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # granted as it was cancelled: hand the slot on
            raise

    def release(self) -> None:
        self._free += 1
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._grant)

    def _grant(self) -> None:
        self._scheduled = False
        while self._free > 0 and self._waiting:
            _rank, _order, future = heapq.heappop(self._waiting)
            if future.cancelled():
                continue
            self._free -= 1
            future.set_result(None)
