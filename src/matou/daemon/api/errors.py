"""The one place that maps matou's error categories to HTTP statuses and Docker's {"message": ...} body."""

from __future__ import annotations

import json
import logging

from aiohttp import web

from matou import errors

log = logging.getLogger("matoud.api")

STATUS: dict[type[errors.MatouError], int] = {
    errors.InvalidArgument: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.NotModified: 304,
    errors.Unsupported: 501,
    errors.Unavailable: 503,
    errors.DataCorruption: 500,
    errors.SystemError_: 500,
}


def status_for(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(status: int, message: str) -> web.Response:
    if status == 304:
        return web.Response(status=304)
    return web.Response(status=status, body=json.dumps({"message": message}).encode() + b"\n",
                        content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    try:
        return await handler(request)
    except errors.MatouError as e:
        return error_response(status_for(e), e.message)
    except web.HTTPNotFound:
        return error_response(404, "page not found")
    except web.HTTPMethodNotAllowed:
        return error_response(405, "method not allowed")
    except web.HTTPException:
        raise
    except (ConnectionResetError, BrokenPipeError):
        raise
    except Exception as e:  # a bug: say so, keep the daemon up
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(500, f"internal error: {type(e).__name__}: {e}")
