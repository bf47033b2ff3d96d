"""`cp` in both directions with docker's path semantics, tars built and read on the client side."""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import tarfile
from collections.abc import Iterator
from typing import Any

from matou.client.http import APIError


def _stat(api: Any, ctr: str, path: str) -> dict[str, Any] | None:
    try:
        r = api.container_archive_head(ctr, path)
    except APIError as e:
        if e.status == 404:
            return None
        raise
    r.close()
    raw = r.headers.get("x-docker-container-path-stat")
    return json.loads(base64.b64decode(raw)) if raw else {}


def copy_from(api: Any, ctr: str, src: str, dst: str) -> int:
    r = api.container_archive_get(ctr, src)
    raw = r.headers.get("x-docker-container-path-stat")
    info = json.loads(base64.b64decode(raw)) if raw else {}
    try:
        if dst == "-":
            out = os.fdopen(sys.stdout.fileno(), "wb", closefd=False)
            for chunk in r.iter_raw():
                out.write(chunk)
            out.flush()
            return 0
        data = _Chunks(r.iter_raw())
        src_is_dir = bool(info.get("mode", 0) & (1 << 31))
        contents_only = src.endswith("/.")
        if os.path.isdir(dst):
            target_dir, rename = dst, None
            if contents_only:
                rename = None
        else:
            parent = os.path.dirname(os.path.abspath(dst)) or "."
            if not os.path.isdir(parent):
                sys.stderr.write(f"Error: lstat {parent}: no such file or directory\n")
                return 1
            if dst.endswith("/") and not src_is_dir:
                sys.stderr.write(f"Error: destination directory {dst} does not exist\n")
                return 1
            target_dir, rename = parent, os.path.basename(os.path.normpath(dst))
            if contents_only:
                os.makedirs(dst, exist_ok=True)
                target_dir, rename = dst, None
        with tarfile.open(fileobj=data, mode="r|") as tar:
            for ti in tar:
                name = ti.name
                if rename and not contents_only:
                    first, _, rest = name.partition("/")
                    name = rename + ("/" + rest if rest else "")
                ti.name = name
                _extract(tar, ti, target_dir)
    finally:
        r.close()
    return 0


class _Chunks(io.RawIOBase):
    def __init__(self, it: Iterator[bytes]) -> None:
        self._it = it
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def _tar_stream(src: str, arcname: str, follow: bool) -> Iterator[bytes]:
    import threading

    r, w = os.pipe()

    def produce() -> None:
        with os.fdopen(w, "wb") as f, tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT,
                                                   dereference=follow) as tar:
            tar.add(src, arcname=arcname)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    with os.fdopen(r, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            yield chunk
    t.join()


def copy_to(api: Any, ctr: str, dst: str, src: str, follow: bool = False) -> int:
    if src == "-":
        def stdin_chunks() -> Iterator[bytes]:
            f = os.fdopen(sys.stdin.fileno(), "rb", closefd=False)
            while chunk := f.read(1 << 20):
                yield chunk
        api.container_archive_put(ctr, dst, stdin_chunks())
        return 0
    if not os.path.lexists(src):
        sys.stderr.write(f"lstat {os.path.abspath(src)}: no such file or directory\n")
        return 1
    contents_only = src.endswith("/.")
    base = os.path.basename(os.path.normpath(src))
    st = _stat(api, ctr, dst)
    if st is not None and st.get("mode", 0) & (1 << 31):
        target, arc = dst, ("." if contents_only else base)
    else:
        parent = os.path.dirname(dst.rstrip("/")) or "/"
        if dst.endswith("/") and st is None:
            sys.stderr.write(f"Error response from daemon: Could not find the file {dst} in container {ctr}\n")
            return 1
        if _stat(api, ctr, parent) is None:
            sys.stderr.write(f"Error response from daemon: Could not find the file {parent} in container {ctr}\n")
            return 1
        target, arc = parent, os.path.basename(dst.rstrip("/"))
    api.container_archive_put(ctr, target, _tar_stream(src, arc, follow))
    return 0


def _extract(tar: tarfile.TarFile, ti: tarfile.TarInfo, target_dir: str) -> None:
    if ".." in ti.name.split("/") or ti.name.startswith("/"):
        raise ValueError(f"refusing to extract {ti.name!r}: it leaves the destination")
    if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
        tar.extract(ti, target_dir, filter="fully_trusted" if os.geteuid() == 0 else "data")
    else:
        tar.extract(ti, target_dir, numeric_owner=True)
