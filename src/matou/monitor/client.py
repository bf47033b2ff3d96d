"""The daemon's side of the monitor protocol (asyncio)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from matou.errors import Conflict, NotFound, SystemError_, Unavailable
from matou.monitor import protocol as P


class MonitorGone(Unavailable):
    """The monitor is not running (the container has exited, or never started)."""


async def _read_line(reader: asyncio.StreamReader) -> dict[str, Any]:
    raw = await reader.readline()
    if not raw:
        raise MonitorGone("the container's monitor closed the connection")
    return json.loads(raw)


def _raise(msg: dict[str, Any]) -> None:
    if not msg.get("ok", True):
        err = msg.get("error", "monitor error")
        code = msg.get("exit_code", 125)
        e: Exception
        if "not running" in err or "is not running" in err:
            e = Conflict(err)
        elif "no such" in err.lower():
            e = NotFound(err)
        else:
            e = SystemError_(err)
        e.exit_code = code  # type: ignore[attr-defined]
        raise e


class MonitorConnection:
    """A request/response connection to a running container's monitor."""

    def __init__(self, sock_path: str) -> None:
        self.sock_path = sock_path

    async def open(self, request: dict[str, Any]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if not os.path.exists(self.sock_path):
            raise MonitorGone("container is not running")
        try:
            reader, writer = await asyncio.open_unix_connection(self.sock_path, limit=1 << 20)
        except (ConnectionRefusedError, FileNotFoundError):
            raise MonitorGone("container is not running") from None
        writer.write(P.line(request))
        await writer.drain()
        return reader, writer

    async def call(self, op: str, **kw: Any) -> dict[str, Any]:
        reader, writer = await self.open({"op": op, **kw})
        try:
            msg = await _read_line(reader)
        finally:
            writer.close()
        _raise(msg)
        return msg


class PendingMonitor:
    """A monitor asked for with Spawner.begin()."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wait_for_go: bool) -> None:
        self.reader = reader
        self.writer = writer
        self.wait_for_go = wait_for_go

    async def go(self, launch_hint: dict[str, Any] | None = None,
                 ) -> tuple[dict[str, Any], asyncio.StreamReader, asyncio.StreamWriter]:
        """Create the container; returns the monitor's first reply and the control channel. ``launch_hint``
        (runtime.spec.launch_hint of the bundle's config.json) lets the built-in runtime clone at once."""
        if self.wait_for_go:
            self.writer.write(P.line({"op": "go", "launch_hint": launch_hint} if launch_hint else {"op": "go"}))
        await self.writer.drain()
        msg = await _read_line(self.reader)
        if not msg.get("ok"):
            self.writer.close()
            _raise(msg)
        return msg, self.reader, self.writer

    def abort(self) -> None:
        self.writer.close()


class Spawner:
    """Starts and restarts the spawner process; hands out monitor control channels."""

    def __init__(self, sock_path: str, python: str, env: dict[str, str] | None = None) -> None:
        self.sock_path = sock_path
        self.python = python
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def ensure(self) -> None:
        async with self._lock:
            if self.proc is not None and self.proc.returncode is None:
                return
            self.proc = await asyncio.create_subprocess_exec(
                self.python, "-m", "matou.monitor.spawner", "--socket", self.sock_path,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, env=self.env)
            assert self.proc.stdout is not None
            line = await self.proc.stdout.readline()
            if line.strip() != b"ready":
                raise SystemError_("the monitor spawner failed to start")

    async def spawn(self, config: dict[str, Any]) -> tuple[dict[str, Any], asyncio.StreamReader, asyncio.StreamWriter]:
        """Ask for a monitor; returns its first reply (container created) and the control channel."""
        return await (await self.begin(config, wait_for_go=False)).go()

    async def begin(self, config: dict[str, Any], *, wait_for_go: bool = True) -> PendingMonitor:
        """Ask for a monitor before the bundle is ready: it sets itself up meanwhile, and creates the container
        on ``go()``. ``abort()`` (or closing) lets it go without creating anything."""
        await self.ensure()
        try:
            reader, writer = await asyncio.open_unix_connection(self.sock_path, limit=1 << 20)
        except (ConnectionRefusedError, FileNotFoundError):
            self.proc = None
            await self.ensure()
            reader, writer = await asyncio.open_unix_connection(self.sock_path, limit=1 << 20)
        writer.write(P.line({**config, "wait_for_go": True} if wait_for_go else config))
        return PendingMonitor(reader, writer, wait_for_go)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
        self.proc = None
