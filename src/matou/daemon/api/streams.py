"""Bridges between aiohttp's async bodies and the synchronous services that run in worker threads.

Archive work (load, save, import, cp) is synchronous code in a thread; these adapters let it read the
request body and write the response body with backpressure, one round trip per chunk (1 MiB).
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

from aiohttp import web


class BodyReader(io.RawIOBase):
    """A blocking reader over an aiohttp request body, for use from a worker thread."""

    def __init__(self, request: web.Request, loop: asyncio.AbstractEventLoop) -> None:
        self._content = request.content
        self._loop = loop
        self._buf = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if not self._buf and not self._eof:
            fut = asyncio.run_coroutine_threadsafe(self._content.read(1 << 20), self._loop)
            data = fut.result()
            if not data:
                self._eof = True
            self._buf = data
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class ResponseWriter(io.RawIOBase):
    """A blocking writer into a prepared StreamResponse, for use from a worker thread."""

    def __init__(self, resp: web.StreamResponse, loop: asyncio.AbstractEventLoop) -> None:
        self._resp = resp
        self._loop = loop

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        if data:
            asyncio.run_coroutine_threadsafe(self._resp.write(data), self._loop).result()
        return len(data)


def buffered_reader(request: web.Request) -> io.BufferedReader:
    return io.BufferedReader(BodyReader(request, asyncio.get_running_loop()), 1 << 20)


def buffered_writer(resp: web.StreamResponse) -> io.BufferedWriter:
    return io.BufferedWriter(ResponseWriter(resp, asyncio.get_running_loop()), 1 << 20)


async def json_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    return resp


async def write_json_line(resp: web.StreamResponse, obj: dict[str, Any]) -> None:
    await resp.write(json.dumps(obj).encode() + b"\r\n")


def error_message(exc: BaseException) -> dict[str, Any]:
    msg = str(exc) or type(exc).__name__
    return {"errorDetail": {"message": msg}, "error": msg}
