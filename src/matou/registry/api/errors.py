"""The one place that turns registry errors into HTTP: OCI error codes for /v2, JSON messages elsewhere."""

from __future__ import annotations

import json

from aiohttp import web

from matou.errors import (
    Conflict,
    DataCorruption,
    Forbidden,
    InvalidArgument,
    MatouError,
    NotFound,
    Unauthorized,
    Unsupported,
)

API_VERSION_HEADER = {"Docker-Distribution-Api-Version": "registry/2.0"}


class ApiError(Exception):
    """An error with its OCI code and HTTP status decided by the handler that knows the context."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 detail: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.detail = detail


def classify(exc: Exception) -> tuple[int, str]:
    """(status, OCI code) for a matou error raised below the API."""
    from matou.registry.core import DigestMismatch, RepoNotFound, TooLarge
    from matou.registry.index import MissingRef

    if isinstance(exc, ApiError):
        return exc.status, exc.code
    if isinstance(exc, RepoNotFound):
        return 404, "NAME_UNKNOWN"
    if isinstance(exc, MissingRef):
        return 400, "MANIFEST_BLOB_UNKNOWN"
    if isinstance(exc, (DigestMismatch, DataCorruption)):
        return 400, "DIGEST_INVALID"
    if isinstance(exc, TooLarge):
        return 413, "SIZE_INVALID"
    if isinstance(exc, Unauthorized):
        return 401, "UNAUTHORIZED"
    if isinstance(exc, Forbidden):
        return 403, "DENIED"
    if isinstance(exc, Unsupported):
        return 400, "UNSUPPORTED"
    if isinstance(exc, NotFound):
        return 404, "NOT_FOUND"
    if isinstance(exc, Conflict):
        return 409, "CONFLICT"
    if isinstance(exc, InvalidArgument):
        return 400, "INVALID"
    return 500, "UNKNOWN"


def oci_error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
              detail: object = None) -> web.Response:
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": detail}]}).encode()
    h = dict(API_VERSION_HEADER)
    if headers:
        h.update(headers)
        h.pop("Content-Length", None)
    h["Content-Type"] = "application/json"
    return web.Response(status=status, body=body, headers=h)


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps({"code": code, "message": message}).encode()
    h = dict(headers or {})
    h["Content-Type"] = "application/json"
    return web.Response(status=status, body=body, headers=h)


def message_of(exc: Exception) -> str:
    if isinstance(exc, (ApiError, MatouError)):
        return str(exc)
    return "internal server error"
