"""A counting reverse proxy in front of a registry: what the tests measure at the registry.

It records every request (method, path, status) and the body bytes it served per path, and can hold a blob
download after a given number of bytes until the test releases it (to kill matoud mid-pull). It forwards the
client's Host header, so the registry's Location headers and token realm point back at the proxy.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from tests.registry.helpers import free_port

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
        "proxy-authenticate", "content-length"}


@dataclass
class Seen:
    method: str
    path: str
    query: str
    status: int
    range: str | None


@dataclass
class Hold:
    after: int
    release: threading.Event = field(default_factory=threading.Event)
    reached: threading.Event = field(default_factory=threading.Event)


class CountingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.seen: list[Seen] = []
        self.served: dict[str, int] = defaultdict(int)
        self.holds: dict[str, Hold] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reset(self) -> None:
        with self._lock:
            self.seen.clear()
            self.served.clear()

    def requests(self, method: str | None = None, contains: str = "") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if (method is None or s.method == method) and contains in s.path]

    def blob_uploads(self) -> list[Seen]:
        """Completed blob uploads (the PUT that ends an upload session)."""
        return [s for s in self.requests("PUT", "/blobs/uploads/") if s.status in (201, 204)]

    def hold(self, path_suffix: str, after: int) -> Hold:
        h = Hold(after)
        self.holds[path_suffix] = h
        return h

    # ------------------------------------------------------------------ server
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = None
        if request.body_exists:
            body = await request.read()
        async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                         data=body, allow_redirects=False) as up:
            resp = web.StreamResponse(status=up.status, reason=up.reason)
            for k, v in up.headers.items():
                if k.lower() not in _HOP:
                    resp.headers.add(k, v)
            if up.headers.get("Content-Length") is not None:
                resp.content_length = int(up.headers["Content-Length"])
            with self._lock:
                self.seen.append(Seen(request.method, request.path, request.query_string, up.status,
                                      request.headers.get("Range")))
            await resp.prepare(request)
            hold = next((h for s, h in self.holds.items() if request.path.endswith(s)), None)
            if request.method != "HEAD":
                sent = 0
                async for chunk in up.content.iter_chunked(1 << 16):
                    if hold is not None and not hold.release.is_set() and sent + len(chunk) >= hold.after:
                        part = chunk[:max(0, hold.after - sent)]
                        if part:
                            await resp.write(part)
                            sent += len(part)
                            with self._lock:
                                self.served[request.path] += len(part)
                        chunk = chunk[len(part):]
                        hold.reached.set()
                        while not hold.release.is_set():
                            await asyncio.sleep(0.02)
                            if request.transport is None or request.transport.is_closing():
                                return resp
                    if chunk:
                        await resp.write(chunk)
                        sent += len(chunk)
                        with self._lock:
                            self.served[request.path] += len(chunk)
            await resp.write_eof()
            return resp

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def main() -> None:
            self._stop = asyncio.Event()
            self._session = aiohttp.ClientSession(auto_decompress=False)
            app = web.Application(client_max_size=0)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", self.port)
            await site.start()
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()
            await self._session.close()

        loop.run_until_complete(main())
        loop.close()

    def start(self) -> CountingProxy:
        self._session: aiohttp.ClientSession | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def stop(self) -> None:
        for h in self.holds.values():
            h.release.set()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
