"""Hijacked connections for attach and exec (``Upgrade: tcp``, ``101 UPGRADED``), then raw bytes both ways.

aiohttp would parse the client's first stdin bytes as a new request, and it closes the connection when the
client half-closes (stdin EOF), which must not end the output stream. So after sending the 101 we take the
transport over with our own protocol: it keeps the write side open on EOF and forwards ``connection_lost`` to
aiohttp's protocol, so aiohttp still cleans up its handler. Bytes aiohttp had already buffered after the
request head are picked up through ``set_parser``.

docker-py (and docker-compose) read the stream from the raw socket under their HTTP response object: bytes that
arrived together with the 101 head sit in that object's buffer and are lost. So before the first byte of the
stream we wait until the client has read the head (on a Unix socket the kernel tells: SIOCOUTQ drops to 0).
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import socket
import termios
import time
from typing import Any

from aiohttp import web

from matou.util.detachkeys import parse as parse_detach_keys  # noqa: F401 (re-exported)

RAW = "application/vnd.docker.raw-stream"
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"


class _TailGrabber:
    """A payload parser that only collects what aiohttp buffered so far."""

    def __init__(self) -> None:
        self.data = bytearray()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.data += data
        return False, b""

    def feed_eof(self) -> None:
        pass


class Hijacked(asyncio.Protocol):
    def __init__(self, transport: asyncio.Transport, original: Any, initial: bytes) -> None:
        self.transport = transport
        self.original = original
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        if initial:
            self._queue.put_nowait(bytes(initial))
        self._writable = asyncio.Event()
        self._writable.set()
        self.closed = asyncio.Event()
        self.eof = False

    # asyncio.Protocol
    def data_received(self, data: bytes) -> None:
        self._queue.put_nowait(data)

    def eof_received(self) -> bool:
        self._queue.put_nowait(b"")
        return True  # keep our write side open: the client only closed stdin

    def connection_lost(self, exc: Exception | None) -> None:
        self._queue.put_nowait(b"")
        self.closed.set()
        self._writable.set()
        try:
            self.original.connection_lost(exc)
        except Exception:
            pass

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # use
    async def read(self) -> bytes:
        if self.eof:
            return b""
        data = await self._queue.get()
        if not data:
            self.eof = True
        return data

    async def write(self, data: bytes) -> None:
        if self.closed.is_set():
            raise ConnectionResetError("client went away")
        self.transport.write(data)
        await self._writable.wait()

    def close(self) -> None:
        if not self.closed.is_set():
            self.transport.close()


async def hijack(request: web.Request, content_type: str, *, head_first: bool = True) -> Hijacked:
    """Take over the connection. ``head_first``: on an upgrade, send nothing more until the client has read the
    response head (a client that reads the head through a buffered reader would swallow what follows it, as
    docker's CLI does); a client known to keep those bytes (matou's own, on /containers/run) skips the wait,
    which polls and costs ~1 ms."""
    upgrade = request.headers.get("Upgrade", "").lower() == "tcp" or "upgrade" in request.headers.get(
        "Connection", "").lower()
    if upgrade:
        resp = web.StreamResponse(status=101, reason="UPGRADED",
                                  headers={"Content-Type": content_type, "Connection": "Upgrade", "Upgrade": "tcp"})
    else:
        resp = web.StreamResponse(status=200, headers={"Content-Type": content_type})
    resp.force_close()
    await resp.prepare(request)
    proto = request.protocol
    transport = request.transport
    assert transport is not None
    grab = _TailGrabber()
    initial = b""
    if upgrade:
        try:
            proto.set_parser(grab)  # type: ignore[arg-type]
            initial = bytes(grab.data)
        except AssertionError:
            initial = b""
    h = Hijacked(transport, proto, initial)
    transport.set_protocol(h)
    if upgrade and head_first:
        await _head_consumed(transport)
    if not upgrade:
        # a plain POST: its body (if any) is the stdin
        body = await _drain_body(request)
        if body:
            h._queue.put_nowait(body)
    return h


async def _head_consumed(transport: asyncio.Transport, limit: float = 0.25) -> None:
    """Wait (at most ``limit`` seconds) until the peer has read everything sent so far, where that can be known."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return
    buf = array.array("i", [0])
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buf, True)  # SIOCOUTQ: bytes the peer has not read
        except OSError:
            return
        if buf[0] == 0:
            return
        await asyncio.sleep(0.0005)


async def _drain_body(request: web.Request) -> bytes:
    if not request.can_read_body:
        return b""
    try:
        return await asyncio.wait_for(request.content.read(), 0.05)
    except TimeoutError:
        return b""
