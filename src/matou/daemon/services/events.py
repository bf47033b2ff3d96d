"""The event bus behind GET /events: Docker's event shape, a bounded history, live subscribers."""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # container | image | network | volume | daemon | builder
    action: str
    id: str
    attributes: dict[str, str]
    time_nano: int

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "Type": self.type,
            "Action": self.action,
            "Actor": {"ID": self.id, "Attributes": dict(self.attributes)},
            "scope": "local",
            "time": self.time_nano // 1_000_000_000,
            "timeNano": self.time_nano,
        }
        # pre-1.22 fields docker still sends
        if self.type in ("container", "image"):
            d["status"] = self.action
            d["id"] = self.id
            if "image" in self.attributes:
                d["from"] = self.attributes["image"]
        return d


class EventBus:
    def __init__(self, history: int = 1024) -> None:
        self.history: collections.deque[Event] = collections.deque(maxlen=history)
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(self, type_: str, action: str, id_: str, attributes: dict[str, str] | None = None) -> None:
        """Thread-safe: may be called from worker threads."""
        ev = Event(type_, action, id_, dict(attributes or {}), time.time_ns())
        loop = self._loop
        if loop is None:
            self._deliver(ev)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._deliver(ev)
        else:
            loop.call_soon_threadsafe(self._deliver, ev)

    def _deliver(self, ev: Event) -> None:
        self.history.append(ev)
        for q in list(self._subscribers):
            if q.qsize() < 10000:
                q.put_nowait(ev)

    def subscribe(self) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(q)
