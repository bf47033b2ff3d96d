"""The wire protocol between matoud and the monitors (and the spawner).

Every connection starts with one JSON request line from the daemon. Replies and events are JSON lines,
except on stream connections (attach, exec), where the monitor sends Docker's multiplexed frames::

    [stream, 0, 0, 0, size (4 bytes, big endian)] + payload
    stream 1 = stdout, 2 = stderr, 3 = a JSON control message ({"exit_code": n} at the end, {"error": ...})

and the daemon sends raw stdin bytes; shutting down its write side closes the container's stdin.

The daemon strips or forwards the frames: for non-tty containers, frames 1 and 2 are exactly what Docker's
attach API sends, so they pass through untouched.

The control connection (made on the spawner's socket) starts with the MonitorConfig line; with ``wait_for_go``
the daemon then sends ``{"op": "go", "launch_hint": {...}}`` once the bundle is written (closing instead lets
the monitor go without creating anything). The monitor answers ``{"ok": true, "pid", ...}`` as soon as the init
is cloned, or ``{"ok": false, "error", "exit_code"}``; later requests on it are ``start``, ``kill`` and the
like, and its last line is the exit event.
"""

from __future__ import annotations

import json
import struct

TYPE_CHECKING = False  # typing costs the spawner (and every fork of it) ~0.5 MB: annotations only
if TYPE_CHECKING:
    from typing import Any

STDIN, STDOUT, STDERR, CONTROL = 0, 1, 2, 3
HEADER = struct.Struct(">BxxxL")


def frame(stream: int, data: bytes) -> bytes:
    return HEADER.pack(stream, len(data)) + data


def control(msg: dict[str, Any]) -> bytes:
    return frame(CONTROL, json.dumps(msg).encode())


def line(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg).encode() + b"\n"


class FrameParser:
    """Incremental parser for frames arriving in arbitrary chunks."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out = []
        while len(self._buf) >= HEADER.size:
            stream, size = HEADER.unpack_from(self._buf)
            if len(self._buf) < HEADER.size + size:
                break
            out.append((stream, self._buf[HEADER.size:HEADER.size + size]))
            self._buf = self._buf[HEADER.size + size:]
        return out
