"""The Engine API application: every route on both ``/path`` and ``/v1.xx/path``, errors mapped in one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from matou.daemon.api.errors import error_middleware
from matou.daemon.config import API_VERSION, MIN_API_VERSION
from matou.daemon.services import Services
from matou.errors import InvalidArgument

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVICES = web.AppKey("services", Services)


class Router:
    """Registers a handler on the unversioned and the versioned path, like dockerd's router."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def add(self, method: str, path: str, handler: Handler) -> None:
        self.app.router.add_route(method, path, handler)
        self.app.router.add_route(method, r"/v{api_version:[0-9]+\.[0-9]+}" + path, handler)

    def get(self, path: str, handler: Handler) -> None:
        self.add("GET", path, handler)

    def post(self, path: str, handler: Handler) -> None:
        self.add("POST", path, handler)

    def put(self, path: str, handler: Handler) -> None:
        self.add("PUT", path, handler)

    def delete(self, path: str, handler: Handler) -> None:
        self.add("DELETE", path, handler)

    def head(self, path: str, handler: Handler) -> None:
        self.add("HEAD", path, handler)


def _version_tuple(v: str) -> tuple[int, int]:
    a, _, b = v.partition(".")
    return int(a), int(b or 0)


@web.middleware
async def version_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    v = request.match_info.get("api_version")
    if v is not None:
        if _version_tuple(v) > _version_tuple(API_VERSION):
            raise InvalidArgument(f"client version {v} is too new. Maximum supported API version is {API_VERSION}")
        if _version_tuple(v) < _version_tuple(MIN_API_VERSION):
            raise InvalidArgument(
                f"client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, "
                "please upgrade your client to a newer version")
    request["api_version"] = _version_tuple(v or API_VERSION)
    resp = await handler(request)
    return resp


async def _on_prepare(request: web.Request, resp: web.StreamResponse) -> None:
    resp.headers.setdefault("Api-Version", API_VERSION)
    resp.headers.setdefault("Server", "matou/0.1 (linux)")
    resp.headers.setdefault("Docker-Experimental", "false")
    resp.headers.setdefault("Ostype", "linux")


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def make_app(svcs: Services) -> web.Application:
    from matou.daemon.api import images, system
    from matou.daemon.api.validation import body_middleware

    app = web.Application(middlewares=[error_middleware, version_middleware, body_middleware], client_max_size=0)
    app[SERVICES] = svcs
    app.on_response_prepare.append(_on_prepare)
    r = Router(app)
    system.register(r)
    images.register(r)
    for name in ("containers", "exec", "volumes", "networks", "build", "distribution", "openapi"):
        try:
            mod = __import__(f"matou.daemon.api.{name}", fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name == f"matou.daemon.api.{name}":
                continue
            raise
        mod.register(r)
    return app


def qbool(request: web.Request, key: str, default: bool = False) -> bool:
    v = request.query.get(key)
    if v is None or v == "":
        return default
    return v.lower() not in ("0", "false", "no")


def qint(request: web.Request, key: str, default: int | None = None) -> int | None:
    v = request.query.get(key)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise InvalidArgument(f"invalid value for {key}: {v!r}") from None
