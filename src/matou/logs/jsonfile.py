"""Docker's json-file log driver: one JSON object per line, ``{"log","stream","time"}``, with rotation.

Writer (used by the per-container monitor): lines are split at '\\n'; a line longer than 16 KiB is written in
pieces without the trailing newline, as Docker does. Rotation renames ``x.log`` -> ``x.log.1`` -> ... and keeps
``max_file`` files in all, so a reader following the log sees a rename and moves on.

Reader (used by the daemon for ``logs``): tail, since/until, and follow across rotations. A partial last line
(the monitor was killed mid-write) is ignored, never half-parsed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

MAX_LINE = 16 * 1024


def parse_size(v: str | int | None) -> int:
    """Docker's size strings for --log-opt max-size: 10m, 1g, 512k, 100 (bytes). 0/-1 = unlimited."""
    if v is None or v == "":
        return -1
    if isinstance(v, int):
        return v
    s = v.strip().lower().rstrip("b")
    mult = 1
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}
    if s and s[-1] in units:
        mult = units[s[-1]]
        s = s[:-1].rstrip("i")
    try:
        return int(float(s) * mult)
    except ValueError:
        raise ValueError(f"invalid size: {v!r}") from None


def rfc3339nano(ts: float) -> str:
    t = time.gmtime(ts)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int((ts % 1) * 1e9):09d}Z"


@dataclass(frozen=True, slots=True)
class Entry:
    stream: str
    data: bytes
    time: str
    ts: float


class Writer:
    """Appends entries; rotates by size. Not thread-safe (the monitor is single-threaded)."""

    def __init__(self, path: str, max_size: int = -1, max_file: int = 1) -> None:
        self.path = path
        self.max_size = max_size
        self.max_file = max(1, max_file)
        self._partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size

    def write(self, stream: str, data: bytes, ts: float | None = None) -> None:
        buf = self._partial.get(stream, b"") + data
        lines: list[bytes] = []
        while True:
            i = buf.find(b"\n")
            if i < 0:
                break
            lines.append(buf[: i + 1])
            buf = buf[i + 1:]
        while len(buf) >= MAX_LINE:
            lines.append(buf[:MAX_LINE])
            buf = buf[MAX_LINE:]
        self._partial[stream] = buf
        if lines:
            self._emit(stream, lines, ts)

    def flush_partial(self, ts: float | None = None) -> None:
        for stream, buf in list(self._partial.items()):
            if buf:
                self._partial[stream] = b""
                self._emit(stream, [buf], ts)

    def _emit(self, stream: str, lines: list[bytes], ts: float | None) -> None:
        t = rfc3339nano(ts if ts is not None else time.time())
        out = b"".join(
            json.dumps({"log": ln.decode("utf-8", "replace"), "stream": stream, "time": t},
                       ensure_ascii=False).encode() + b"\n" for ln in lines)
        if self.max_size > 0 and self._size + len(out) > self.max_size and self._size > 0:
            self._rotate()
        view = memoryview(out)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._size += len(out)

    def _rotate(self) -> None:
        os.close(self._fd)
        if self.max_file <= 1:
            os.truncate(self.path, 0)
        else:
            for i in range(self.max_file - 1, 0, -1):
                src = self.path if i == 1 else f"{self.path}.{i - 1}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i}")
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._size = 0

    def close(self) -> None:
        self.flush_partial()
        os.close(self._fd)


def _parse(line: bytes) -> Entry | None:
    try:
        d = json.loads(line)
        from matou.logs.timeparse import parse_ts

        return Entry(d.get("stream", "stdout"), d.get("log", "").encode(), d.get("time", ""), parse_ts(d.get("time", "")))
    except (ValueError, AttributeError):
        return None


def _files(path: str, max_file: int = 100) -> list[str]:
    """Oldest first."""
    out = []
    for i in range(max_file, 0, -1):
        p = f"{path}.{i}"
        if os.path.exists(p):
            out.append(p)
    if os.path.exists(path):
        out.append(path)
    return out


def _read_complete_lines(path: str) -> list[bytes]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    end = data.rfind(b"\n")
    if end < 0:
        return []
    return data[: end + 1].splitlines()


def read(path: str, *, tail: int = -1, since: float = 0, until: float = 0) -> list[Entry]:
    """All entries (or the last ``tail``) within the time window, oldest first."""
    lines: list[bytes] = []
    for p in _files(path):
        lines.extend(_read_complete_lines(p))
    entries = [e for e in (_parse(ln) for ln in lines) if e is not None]
    if since:
        entries = [e for e in entries if e.ts >= since]
    if until:
        entries = [e for e in entries if e.ts <= until]
    if tail >= 0:
        entries = entries[-tail:] if tail else []
    return entries


class Follower:
    """Yields entries appended after construction, across rotations. ``poll()`` returns what is new."""

    def __init__(self, path: str, start_at_end: bool = True) -> None:
        self.path = path
        self._f = None
        self._ino = None
        self._buf = b""
        self._open(seek_end=start_at_end)

    def _open(self, seek_end: bool) -> None:
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            self._f = None
            return
        if seek_end:
            f.seek(0, os.SEEK_END)
        self._f = f
        self._ino = os.fstat(f.fileno()).st_ino

    def poll(self) -> list[Entry]:
        out: list[Entry] = []
        if self._f is None:
            self._open(seek_end=False)
            if self._f is None:
                return out
        out.extend(self._drain())
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return out
        if st.st_ino != self._ino or st.st_size < self._f.tell():
            # rotated: finish the old file, then read the new one from its start
            out.extend(self._drain())
            self._f.close()
            self._buf = b""
            self._open(seek_end=False)
            out.extend(self._drain())
        return out

    def _drain(self) -> Iterator[Entry]:
        assert self._f is not None
        data = self._f.read()
        if not data:
            return iter(())
        self._buf += data
        end = self._buf.rfind(b"\n")
        if end < 0:
            return iter(())
        complete, self._buf = self._buf[: end + 1], self._buf[end + 1:]
        return iter([e for e in (_parse(ln) for ln in complete.splitlines()) if e is not None])

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
