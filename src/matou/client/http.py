"""A minimal HTTP/1.1 client over AF_UNIX (or TCP) built on ``_socket``.

The CLI pays for every import on every command; ``socket``+``http.client`` cost 20-30 ms of imports here,
``_socket`` almost nothing. This speaks just what the Engine API needs: fixed-length and chunked bodies,
streamed responses, and connection hijacking (``Upgrade: tcp``) for attach and exec.
"""

from __future__ import annotations

import _socket

from matou.util import fastjson

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


class APIError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ConnectError(Exception):
    pass


def _quote(s: str) -> str:
    safe = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~"
    out = []
    for ch in s:
        if ch in safe:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode())
    return "".join(out)


def encode_query(query: dict[str, Any] | list[tuple[str, Any]] | None) -> str:
    if not query:
        return ""
    items = query.items() if isinstance(query, dict) else query
    parts = []
    for k, v in items:
        if v is None:
            continue
        if isinstance(v, bool):
            v = "1" if v else "0"
        if isinstance(v, (list, tuple)):
            parts.extend(f"{_quote(k)}={_quote(str(x))}" for x in v)
        else:
            parts.append(f"{_quote(k)}={_quote(str(v))}")
    return "?" + "&".join(parts) if parts else ""


class Response:
    def __init__(self, sock: Any, status: int, reason: str, headers: dict[str, str], buf: bytes,
                 method: str) -> None:
        self.sock = sock
        self.status = status
        self.reason = reason
        self.headers = headers
        self._buf = buf
        self._method = method
        te = headers.get("transfer-encoding", "").lower()
        self.chunked = "chunked" in te
        cl = headers.get("content-length")
        self.length = int(cl) if cl is not None and not self.chunked else None
        if method == "HEAD" or status in (204, 304) or (100 <= status < 200 and status != 101):
            self.length = 0
        self._done = False

    # --- raw reading
    def _recv(self) -> bytes:
        return self.sock.recv(65536)

    def _fill(self, n: int) -> bool:
        while len(self._buf) < n:
            data = self._recv()
            if not data:
                return False
            self._buf += data
        return True

    def _readline(self) -> bytes:
        while True:
            i = self._buf.find(b"\r\n")
            if i >= 0:
                line, self._buf = self._buf[:i], self._buf[i + 2:]
                return line
            data = self._recv()
            if not data:
                line, self._buf = self._buf, b""
                return line
            self._buf += data

    def iter_raw(self) -> Iterator[bytes]:
        """Body bytes as they arrive (de-chunked)."""
        if self._done:
            return
        if self.chunked:
            while True:
                size_line = self._readline()
                if not size_line:
                    break
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self._readline()
                    break
                remaining = size
                while remaining:
                    if not self._buf:
                        data = self._recv()
                        if not data:
                            self._done = True
                            return
                        self._buf = data
                    take = self._buf[:remaining]
                    self._buf = self._buf[len(take):]
                    remaining -= len(take)
                    yield take
                self._fill(2)
                self._buf = self._buf[2:]
        elif self.length is not None:
            remaining = self.length
            while remaining > 0:
                if not self._buf:
                    data = self._recv()
                    if not data:
                        break
                    self._buf = data
                take = self._buf[:remaining]
                self._buf = self._buf[len(take):]
                remaining -= len(take)
                yield take
        else:
            if self._buf:
                b, self._buf = self._buf, b""
                yield b
            while True:
                data = self._recv()
                if not data:
                    break
                yield data
        self._done = True

    def read(self) -> bytes:
        return b"".join(self.iter_raw())

    def text(self) -> str:
        return self.read().decode("utf-8", "replace")

    def json(self) -> Any:
        data = self.read()
        return fastjson.loads(data) if data else None

    def iter_lines(self) -> Iterator[bytes]:
        pending = b""
        for chunk in self.iter_raw():
            pending += chunk
            while True:
                i = pending.find(b"\n")
                if i < 0:
                    break
                line, pending = pending[:i], pending[i + 1:]
                if line.strip():
                    yield line
        if pending.strip():
            yield pending

    def iter_json(self) -> Iterator[Any]:
        for line in self.iter_lines():
            yield fastjson.loads(line)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Client:
    def __init__(self, host: str, timeout: float | None = None) -> None:
        self.host = host
        self.timeout = timeout

    def connect(self) -> Any:
        h = self.host
        try:
            if h.startswith("unix://"):
                s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                s.connect(h[len("unix://"):])
            elif h.startswith("tcp://") or h.startswith("http://"):
                hp = h.split("://", 1)[1].rstrip("/")
                host, _, port = hp.rpartition(":")
                info = _socket.getaddrinfo(host or "127.0.0.1", int(port or 2375), 0, _socket.SOCK_STREAM)
                s = _socket.socket(info[0][0], _socket.SOCK_STREAM)
                s.connect(info[0][4])
            else:
                raise ConnectError(f"unsupported host {h!r}")
        except OSError as e:
            raise ConnectError(str(e)) from None
        if self.timeout is not None:
            s.settimeout(self.timeout)
        return s

    def request(self, method: str, path: str, query: dict[str, Any] | list[tuple[str, Any]] | None = None,
                body: bytes | Iterator[bytes] | None = None, headers: dict[str, str] | None = None,
                json_body: Any = None, check: bool = True, upgrade: bool = False) -> Response:
        hdrs = {"Host": "docker", "User-Agent": "matou-cli/0.1"}
        if json_body is not None:
            body = fastjson.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        if headers:
            hdrs.update(headers)
        if upgrade:
            hdrs["Connection"] = "Upgrade"
            hdrs["Upgrade"] = "tcp"
        streaming = body is not None and not isinstance(body, (bytes, bytearray))
        if isinstance(body, (bytes, bytearray)):
            hdrs["Content-Length"] = str(len(body))
        elif streaming:
            hdrs["Transfer-Encoding"] = "chunked"
        elif method in ("POST", "PUT"):
            hdrs["Content-Length"] = "0"
        head = f"{method} {path}{encode_query(query)} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        sock = self.connect()
        try:
            if isinstance(body, (bytes, bytearray)):
                sock.sendall(head.encode() + bytes(body))
            else:
                sock.sendall(head.encode())
                if streaming:
                    for chunk in body:  # type: ignore[union-attr]
                        if chunk:
                            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sock.sendall(b"0\r\n\r\n")
            resp = _read_head(sock, method)
        except OSError as e:
            sock.close()
            raise ConnectError(str(e)) from None
        if check and resp.status >= 400:
            raise APIError(resp.status, _error_message(resp))
        return resp

    # convenience
    def get_json(self, path: str, query: Any = None) -> Any:
        r = self.request("GET", path, query)
        try:
            return r.json()
        finally:
            r.close()

    def post_json(self, path: str, query: Any = None, body: Any = None) -> Any:
        r = self.request("POST", path, query, json_body=body)
        try:
            return r.json()
        finally:
            r.close()


def _read_head(sock: Any, method: str) -> Response:
    buf = b""
    while True:
        i = buf.find(b"\r\n\r\n")
        if i >= 0:
            break
        data = sock.recv(65536)
        if not data:
            raise ConnectError("connection closed by the daemon before a response")
        buf += data
    head, rest = buf[:i].decode("latin-1"), buf[i + 4:]
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return Response(sock, status, reason, headers, rest, method)


def _error_message(resp: Response) -> str:
    try:
        body = resp.read()
    finally:
        resp.close()
    try:
        d = fastjson.loads(body)
        if isinstance(d, dict) and "message" in d:
            return str(d["message"])
    except (ValueError, UnicodeDecodeError):
        pass
    return body.decode("utf-8", "replace").strip() or f"HTTP {resp.status} {resp.reason}"
