"""Draw a stream of Docker JSON progress messages the way the docker CLI does (``pkg/jsonmessage``).

On a terminal every layer keeps one line that is redrawn in place (cursor up, erase line, rewrite, cursor down),
with docker's ``[====>    ]  12.3MB/45.6MB`` bars. When the output is not a terminal, bars are left out and each
state change is one plain line (``abc123: Pull complete``), so logs stay readable. Standard library only: the CLI's
start-up cost matters more than a fancier renderer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from matou.util.units import human_size as _human_size

ESC = "\x1b["


def human_size(n: float) -> str:
    """go-units HumanSize: decimal units, 4 significant digits."""
    return _human_size(n, 4)


def progress_text(detail: dict[str, Any], width: int) -> str:
    """JSONProgress.String()."""
    current = int(detail.get("current") or 0)
    total = int(detail.get("total") or 0)
    units = str(detail.get("units") or "")
    if current <= 0 and total <= 0:
        return ""
    if total <= 0:
        return f"{human_size(current):>8}" if not units else f"{current} {units}"
    pct = min(int(current / total * 100) // 2, 50)
    box = ""
    if width > 110:
        box = "[" + "=" * pct + ">" + " " * max(50 - pct, 0) + "] "
    if detail.get("hidecounts"):
        nums = ""
    elif not units:
        nums = f"{human_size(current):>8}/{human_size(total)}" if current <= total else f"{human_size(current):>8}"
    else:
        nums = f"{current}/{total} {units}"
    return box + nums


def error_of(msg: dict[str, Any]) -> str | None:
    detail = msg.get("errorDetail")
    if isinstance(detail, dict) and detail.get("message"):
        return str(detail["message"])
    if msg.get("error"):
        return str(msg["error"])
    return None


def terminal_width(out: TextIO) -> int:
    try:
        return os.get_terminal_size(out.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 200


def is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (ValueError, AttributeError):
        return False


class Display:
    """Feeds messages one at a time; ``error`` holds the first error message received."""

    def __init__(self, out: TextIO, tty: bool | None = None, on_aux: Callable[[Any], None] | None = None) -> None:
        self.out = out
        self.tty = is_terminal(out) if tty is None else tty
        self.width = terminal_width(out) if self.tty else 200
        self.on_aux = on_aux
        self.ids: dict[str, int] = {}
        self.error: str | None = None

    def feed(self, msg: dict[str, Any]) -> bool:
        """Draw one message; False once an error message arrived (it is not drawn)."""
        if "aux" in msg and msg["aux"] is not None:
            if self.on_aux is not None:
                self.on_aux(msg["aux"])
            return True
        w = self.out.write
        id_ = str(msg.get("id") or "")
        detail = msg.get("progressDetail")
        diff = 0
        if id_ and (detail is not None or msg.get("progress")):
            line = self.ids.get(id_)
            if line is None:
                line = len(self.ids)
                self.ids[id_] = line
                if self.tty:
                    w("\n")
            diff = len(self.ids) - line
            if self.tty and diff:
                w(f"{ESC}{diff}A")
        else:
            self.ids = {}
        err = error_of(msg)
        if err is not None:
            self.error = err
        else:
            self._line(msg, id_, detail)
        if id_ and self.tty and diff:
            w(f"{ESC}{diff}B")
        if self.tty:
            self.out.flush()
        return err is None

    def _line(self, msg: dict[str, Any], id_: str, detail: Any) -> None:
        w = self.out.write
        status = str(msg.get("status") or "")
        stream = str(msg.get("stream") or "")
        endl = ""
        bar = progress_text(detail, self.width) if isinstance(detail, dict) else ""
        if self.tty and not stream and detail is not None:
            w(f"{ESC}2K\r")
            endl = "\r"
        elif detail is not None and bar:
            return  # no bars when the output is not a terminal
        if id_:
            w(f"{id_}: ")
        if msg.get("from"):
            w(f"(from {msg['from']}) ")
        if detail is not None and self.tty:
            w(f"{status} {bar}{endl}")
        elif msg.get("progress"):
            w(f"{status} {msg['progress']}{endl}")
        elif stream:
            w(f"{stream}{endl}")
        else:
            w(f"{status}{endl}\n")


def display(messages: Iterable[dict[str, Any]], out: TextIO, tty: bool | None = None,
            on_aux: Callable[[Any], None] | None = None) -> str | None:
    """Draw a whole stream; returns the error message that ended it, if any."""
    d = Display(out, tty, on_aux)
    for m in messages:
        if not d.feed(m):
            break
    out.flush()
    return d.error


def drain(messages: Iterable[dict[str, Any]], on_aux: Callable[[Any], None] | None = None) -> str | None:
    """Read a stream without drawing it (``-q``); returns its error message, if any."""
    for m in messages:
        if m.get("aux") is not None and on_aux is not None:
            on_aux(m["aux"])
        err = error_of(m)
        if err is not None:
            return err
    return None
