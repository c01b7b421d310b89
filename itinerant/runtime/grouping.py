"""Group commit's queue: handled records wait here while the group before them is delivered,
then leave together as the next group. Bounded: a full queue holds the consumer back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

Item = TypeVar("Item")


class GroupQueue(Generic[Item]):
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._pending: list[Item] = []
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    async def add(self, item: Item) -> None:
        while len(self._pending) >= self._limit:  # backpressure: the broker is slower than us
            self._room.clear()
            await self._room.wait()
        self._pending.append(item)
        self._wakeup.set()

    async def groups(self) -> AsyncIterator[list[Item]]:
        """Everything queued since the last group, as soon as there is any; forever."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                group, self._pending = self._pending, []
                self._room.set()
                yield group
