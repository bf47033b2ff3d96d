"""A small synchronous HTTP/1.1 client for registries: connection reuse, streamed bodies, sendfile uploads.

Why synchronous (http.client in worker threads) and not aiohttp on the daemon's loop: a pull is bandwidth work on a
2-core machine. Each blob is fetched by its own worker thread that receives into one reusable buffer, hashes it
(hashlib releases the GIL) and writes it (os.write releases it too), so downloads, hashing and unpacking spread over
both cores; on the event loop they would share one. Uploads of files over plain HTTP go out with sendfile(2).

Redirects (blob storage behind a CDN) are followed for GET and HEAD; credentials are dropped when the host changes.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlsplit

from matou.errors import InvalidArgument, Unavailable

USER_AGENT = "matou/0.1"
_REDIRECTS = (301, 302, 303, 307, 308)
_BLOCK = 1 << 20
_SENDFILE_PIECE = 8 << 20


@dataclass(frozen=True, slots=True)
class FileBody:
    """An upload body read from an open file: ``size`` bytes from ``offset``."""

    file: BinaryIO
    offset: int
    size: int
    progress: Callable[[int], None] | None = None  # called with the bytes sent so far


Body = bytes | FileBody | Iterable[bytes] | None


class Response:
    """A response whose body is read on demand; ``close()`` returns the connection to the pool when it can."""

    def __init__(self, client: HTTPClient, key: tuple[str, str, bool], conn: http.client.HTTPConnection,
                 resp: http.client.HTTPResponse, url: str) -> None:
        self._client = client
        self._key = key
        self._conn: http.client.HTTPConnection | None = conn
        self._resp = resp
        self.status = resp.status
        self.reason = resp.reason
        self.url = url
        self._done = False

    def header(self, name: str, default: str | None = None) -> str | None:
        return self._resp.getheader(name, default)

    def headers_all(self, name: str) -> list[str]:
        return list(self._resp.msg.get_all(name) or [])

    @property
    def length(self) -> int | None:
        v = self.header("Content-Length")
        try:
            return int(v) if v is not None else None
        except ValueError:
            return None

    def readinto(self, buf: memoryview) -> int:
        try:
            n = self._resp.readinto(buf)
        except (OSError, http.client.HTTPException) as e:
            self._drop()
            raise Unavailable(f"reading from {self.url} failed: {e}") from None
        if not n:
            self._finish()
        return n or 0

    def read1(self, n: int) -> bytes:
        """What has arrived, up to n bytes (at most one receive): written to disk at once, so little is lost
        when the process dies mid-download."""
        try:
            data = self._resp.read1(n)
        except (OSError, http.client.HTTPException) as e:
            self._drop()
            raise Unavailable(f"reading from {self.url} failed: {e}") from None
        if not data:
            self._finish()
        return data

    def read(self, limit: int | None = None) -> bytes:
        """The whole body; more than ``limit`` bytes is an error (manifests, configs and tokens are small)."""
        try:
            if limit is None:
                data = self._resp.read()
            else:
                data = self._resp.read(limit + 1)
                if len(data) > limit:
                    self._drop()
                    raise InvalidArgument(f"response from {self.url} is larger than {limit} bytes")
                data += self._resp.read()  # nothing left normally; completes chunked framing
        except (OSError, http.client.HTTPException) as e:
            self._drop()
            raise Unavailable(f"reading from {self.url} failed: {e}") from None
        self._finish()
        return data

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._resp.isclosed() and not self._resp.will_close:
            self._client._release(self._key, conn)
        else:
            conn.close()

    def _drop(self) -> None:
        self._done = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Release the connection: reuse it if the body was read to the end, else close it."""
        if self._done:
            return
        if self._resp.isclosed():
            self._finish()
        else:
            self._drop()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HTTPClient:
    """Thread-safe: each request takes a pooled connection for itself."""

    def __init__(self, timeout: float = 60.0, user_agent: str = USER_AGENT, pool_size: int = 8) -> None:
        self.timeout = timeout
        self.user_agent = user_agent
        self.pool_size = pool_size
        self._pool: dict[tuple[str, str, bool], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._ssl_verify: ssl.SSLContext | None = None
        self._ssl_noverify: ssl.SSLContext | None = None

    def _ssl(self, verify: bool) -> ssl.SSLContext:
        with self._lock:
            if verify:
                if self._ssl_verify is None:
                    self._ssl_verify = ssl.create_default_context()
                return self._ssl_verify
            if self._ssl_noverify is None:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                self._ssl_noverify = ctx
            return self._ssl_noverify

    def _acquire(self, key: tuple[str, str, bool]) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            conns = self._pool.get(key)
            if conns:
                return conns.pop(), True
        scheme, netloc, verify = key
        if scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                netloc, timeout=self.timeout, context=self._ssl(verify), blocksize=_BLOCK)
        else:
            conn = http.client.HTTPConnection(netloc, timeout=self.timeout, blocksize=_BLOCK)
        return conn, False

    def _release(self, key: tuple[str, str, bool], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            conns = self._pool.setdefault(key, [])
            if len(conns) < self.pool_size:
                conns.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            pools, self._pool = self._pool, {}
        for conns in pools.values():
            for c in conns:
                c.close()

    def request(self, method: str, url: str, headers: Mapping[str, str] | None = None, body: Body = None, *,
                verify: bool = True, follow_redirects: bool = True) -> Response:
        """Send one request and return the response with its body unread. Network errors raise Unavailable."""
        hdrs = {"User-Agent": self.user_agent}
        hdrs.update(headers or {})
        for _ in range(6):
            resp = self._send(method, url, hdrs, body, verify)
            if not (follow_redirects and method in ("GET", "HEAD") and resp.status in _REDIRECTS):
                return resp
            loc = resp.header("Location")
            resp.close()
            if not loc:
                return resp
            target = urljoin(url, loc)
            if urlsplit(target).netloc != urlsplit(url).netloc:
                hdrs = {k: v for k, v in hdrs.items() if k.lower() != "authorization"}
            url = target
        raise Unavailable(f"too many redirects from {url}")

    def _send(self, method: str, url: str, headers: dict[str, str], body: Body, verify: bool) -> Response:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidArgument(f"unsupported URL {url!r}")
        key = (parts.scheme, parts.netloc, verify if parts.scheme == "https" else True)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        retryable = body is None or isinstance(body, (bytes, FileBody))
        for attempt in (0, 1):
            conn, reused = self._acquire(key)
            try:
                self._write(conn, parts.scheme, method, path, headers, body)
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                    http.client.CannotSendRequest, http.client.BadStatusLine) as e:
                conn.close()
                if reused and retryable and attempt == 0:
                    continue  # a kept-alive connection the server had closed: once more on a fresh one
                raise Unavailable(f"{method} {_shown(url)}: {e or type(e).__name__}") from None
            except ssl.SSLError as e:
                conn.close()
                raise Unavailable(f"{method} {_shown(url)}: TLS: {e.reason or e}") from None
            except OSError as e:
                conn.close()
                raise Unavailable(f"{method} {_shown(url)}: {e.strerror or e}") from None
            if method == "HEAD":
                resp.read()
            return Response(self, key, conn, resp, url)
        raise AssertionError("unreachable")

    @staticmethod
    def _write(conn: http.client.HTTPConnection, scheme: str, method: str, path: str, headers: dict[str, str],
               body: Body) -> None:
        conn.putrequest(method, path, skip_accept_encoding=True)
        lower = {k.lower() for k in headers}
        chunked = False
        if isinstance(body, bytes):
            if "content-length" not in lower:
                conn.putheader("Content-Length", str(len(body)))
        elif isinstance(body, FileBody):
            if "content-length" not in lower:
                conn.putheader("Content-Length", str(body.size))
        elif body is not None:
            chunked = True
            conn.putheader("Transfer-Encoding", "chunked")
        elif method in ("POST", "PUT", "PATCH") and "content-length" not in lower:
            conn.putheader("Content-Length", "0")
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        if isinstance(body, bytes):
            if body:
                conn.send(body)
        elif isinstance(body, FileBody):
            _send_file(conn, scheme, body)
        elif chunked:
            assert body is not None
            for chunk in body:
                if chunk:
                    conn.send(b"%x\r\n" % len(chunk) + bytes(chunk) + b"\r\n")
            conn.send(b"0\r\n\r\n")


def _send_file(conn: http.client.HTTPConnection, scheme: str, body: FileBody) -> None:
    sock = conn.sock
    sent = 0
    if scheme == "http" and isinstance(sock, socket.socket):
        while sent < body.size:
            n = sock.sendfile(body.file, body.offset + sent, min(_SENDFILE_PIECE, body.size - sent))
            if not n:
                raise BrokenPipeError("file ended before its declared size")
            sent += n
            if body.progress:
                body.progress(sent)
        return
    fd = body.file.fileno()
    while sent < body.size:
        data = os.pread(fd, min(_BLOCK, body.size - sent), body.offset + sent)
        if not data:
            raise BrokenPipeError("file ended before its declared size")
        conn.send(data)
        sent += len(data)
        if body.progress:
            body.progress(sent)


def _shown(url: str) -> str:
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc}{p.path}"


def error_text(resp: Response, limit: int = 1 << 16) -> str:
    """The registry's error body, shortened: ``code: message`` items of the distribution error format."""
    try:
        raw = resp.read(limit)
    except Exception:  # noqa: BLE001 - the status is what matters
        return ""
    try:
        import json

        d: Any = json.loads(raw)
        errs = d.get("errors") if isinstance(d, dict) else None
        if isinstance(errs, list) and errs:
            items = []
            for e in errs:
                if isinstance(e, dict):
                    code = str(e.get("code", "")).lower().replace("_", " ")
                    msg = str(e.get("message", ""))
                    items.append(f"{code}: {msg}" if code and msg else code or msg)
            return "; ".join(i for i in items if i)
        if isinstance(d, dict):
            for k in ("message", "error_description", "error", "details"):
                if d.get(k):
                    return str(d[k])
    except ValueError:
        pass
    return raw.decode("utf-8", "replace").strip()[:300]
