"""Docker's JSON progress messages (``pkg/jsonmessage``), as pull and push emit them.

A sink is any ``Callable[[dict], None]``; the daemon writes each dict as one line of the response. Byte progress is
rate-limited per layer (at most every 100 ms, and always at the end), as dockerd does, so a fast local pull does
not spend its time writing progress lines.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from matou.util.units import human_size as _human_size

Sink = Callable[[dict[str, Any]], None]
_INTERVAL = 0.1


def short_id(digest: str) -> str:
    """The 12 hex digits docker shows for a layer."""
    return digest.split(":", 1)[-1][:12]


def human_size(n: float) -> str:
    """go-units HumanSize: decimal units, 4 significant digits."""
    return _human_size(n, 4)


def bar_text(current: int, total: int) -> str:
    """What dockerd puts in the deprecated ``progress`` field (a 200-column terminal)."""
    if total <= 0:
        return f"{human_size(current):>8}"
    pct = min(int(current / total * 100) // 2, 50)
    box = "[" + "=" * pct + ">" + " " * max(50 - pct, 0) + "] "
    nums = f"{human_size(current):>8}/{human_size(total)}" if current <= total else f"{human_size(current):>8}"
    return box + nums


def status(text: str, id_: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"status": text}
    if id_:
        d["id"] = id_
    return d


def layer(id_: str, text: str) -> dict[str, Any]:
    return {"status": text, "progressDetail": {}, "id": id_}


def bar(id_: str, text: str, current: int, total: int) -> dict[str, Any]:
    return {"status": text, "progressDetail": {"current": current, "total": total},
            "progress": bar_text(current, total), "id": id_}


def aux(data: dict[str, Any]) -> dict[str, Any]:
    return {"progressDetail": {}, "aux": data}


class Reporter:
    """Thread-safe front of a sink: de-duplicates layer states and rate-limits byte progress."""

    def __init__(self, sink: Sink | None) -> None:
        self._sink = sink
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def emit(self, msg: dict[str, Any]) -> None:
        if self._sink is None:
            return
        with self._lock:
            self._sink(msg)

    def status(self, text: str, id_: str | None = None) -> None:
        self.emit(status(text, id_))

    def layer(self, id_: str, text: str) -> None:
        self.emit(layer(id_, text))

    def bytes(self, id_: str, text: str, current: int, total: int) -> None:
        if self._sink is None:
            return
        now = time.monotonic()
        key = id_ + "\0" + text
        with self._lock:
            if current < total and now - self._last.get(key, 0.0) < _INTERVAL:
                return
            self._last[key] = now
            self._sink(bar(id_, text, current, total))
