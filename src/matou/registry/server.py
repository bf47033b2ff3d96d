"""``matou registry serve``: the aiohttp application and its process lifecycle.

One process, one event loop. Index queries run inline (SQLite answers in tens of microseconds; a thread
hop would cost more), blob bodies stream through the storage driver, blobs go out with sendfile. Pull
counts are batched in memory and written every few seconds and at shutdown. Online garbage collection,
when ``gc.interval`` is set, runs in a worker thread. SIGTERM and SIGINT stop the server gracefully;
SIGKILL is safe too (see storage/base.py and core.py for the ordering that makes it so).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from aiohttp import web

from matou.registry.api.distribution import DistributionApi
from matou.registry.api.management import ManagementApi
from matou.registry.api.token import TokenApi
from matou.registry.api.v1 import V1Api
from matou.registry.config import RegistryConfig
from matou.registry.core import Registry
from matou.registry.web.pages import WebPages

_FLUSH_SECONDS = 5.0


def _limit_malloc_arenas() -> None:
    """glibc gives every thread (aiohttp's file and GC workers) its own malloc arena; two are plenty here."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def build_app(reg: Registry) -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    v2 = DistributionApi(reg)
    tok = TokenApi(reg)
    v1 = V1Api(reg)
    mgmt = ManagementApi(reg)
    pages = WebPages(reg)
    app.router.add_route("*", "/v2/{tail:.*}", v2.dispatch)
    app.router.add_route("*", "/v2", v2.dispatch)
    app.router.add_get("/token", tok.get)
    app.router.add_post("/token", tok.post)
    app.router.add_get("/v1/_ping", v1.ping)
    app.router.add_get("/v1/search", v1.search)
    app.router.add_route("*", "/api/v1/{tail:.*}", mgmt.dispatch)
    app.router.add_get("/", pages.index)
    app.router.add_get("/login", pages.login)
    app.router.add_get("/r/{name:.+}", pages.repo)
    app["registry"] = reg
    return app


async def _background(reg: Registry, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    interval = reg.cfg.gc.interval
    next_gc = loop.time() + interval if interval > 0 else None
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), _FLUSH_SECONDS)
        try:
            reg.flush_pulls()
        except Exception as e:  # noqa: BLE001 - a busy database must not stop the server
            print(f"matou registry: writing pull counts failed: {e}", file=sys.stderr)
        if next_gc is not None and loop.time() >= next_gc:
            from matou.registry.gc import collect

            try:
                report = await loop.run_in_executor(None, lambda: collect(reg))
                if report.blobs or report.uploads:
                    print(f"matou registry: gc freed {len(report.blobs)} blobs ({report.bytes_freed} bytes), "
                          f"{len(report.uploads)} uploads", file=sys.stderr)
            except Exception as e:  # noqa: BLE001
                print(f"matou registry: gc failed: {e}", file=sys.stderr)
            next_gc = loop.time() + interval


async def serve(cfg: RegistryConfig) -> None:
    _limit_malloc_arenas()
    reg = Registry(cfg)
    # load (or, on first start, create) the token signing key before serving
    reg.tokens.public_pem()
    app = build_app(reg)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    ssl_ctx = None
    if cfg.tls_cert:
        import ssl

        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    host, port = cfg.host_port
    site = web.TCPSite(runner, host, port, ssl_context=ssl_ctx, backlog=1024, reuse_address=True)
    await site.start()
    scheme = "https" if ssl_ctx else "http"
    print(f"matou registry: serving {cfg.root} on {scheme}://{cfg.addr}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bg = asyncio.create_task(_background(reg, stop))
    try:
        await stop.wait()
    finally:
        await bg
        await runner.cleanup()
        reg.close()
