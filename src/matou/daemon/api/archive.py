"""Container filesystem routes: archive (cp) HEAD/GET/PUT, export, and commit."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from matou.daemon.api.app import services
from matou.daemon.api.streams import buffered_reader, buffered_writer
from matou.errors import InvalidArgument, NotFound
from matou.store.snapshots.overlay import mount_all
from matou.types.image import rfc3339
from matou.util.fs import resolve_in_root
from matou.util.mount import MNT_DETACH, is_mountpoint, umount


@contextlib.contextmanager
def container_root(s: Any, c: Any) -> Iterator[str]:
    """The container's merged filesystem: its live mount when running, a temporary one otherwise."""
    root = s.rootfs(c.id)
    if os.path.isdir(root) and is_mountpoint(root):
        yield root
        return
    tmp = tempfile.mkdtemp(prefix=f"cp-{c.id[:12]}-", dir=s.cfg.exec_root)
    try:
        mount_all(s.snapshots.mounts(f"container-{c.id}"), tmp)
        try:
            yield tmp
        finally:
            umount(tmp, MNT_DETACH)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(tmp)


def host_path(c: Any, root: str, path: str) -> str:
    """Map a container path to the host, through the container's volumes and bind mounts."""
    if not path.startswith("/"):
        path = "/" + path
    norm = os.path.normpath(path)
    best = None
    for m in c.mounts:
        dst = m.get("Destination", "")
        if m.get("Type") in ("volume", "bind") and m.get("Source") and (norm == dst or norm.startswith(dst.rstrip("/") + "/")):
            if best is None or len(dst) > len(best["Destination"]):
                best = m
    if best is not None:
        rest = norm[len(best["Destination"]):]
        return resolve_in_root(best["Source"], rest) if rest else best["Source"]
    p = resolve_in_root(root, norm)
    if path.endswith("/.") or path.endswith("/"):
        p = p.rstrip("/") + ("/." if path.endswith("/.") else "/")
    return p


def _go_mode(st: os.stat_result) -> int:
    m = stat.S_IMODE(st.st_mode) & 0o777
    if st.st_mode & stat.S_ISUID:
        m |= 1 << 23
    if st.st_mode & stat.S_ISGID:
        m |= 1 << 22
    if st.st_mode & stat.S_ISVTX:
        m |= 1 << 20
    if stat.S_ISDIR(st.st_mode):
        m |= 1 << 31
    elif stat.S_ISLNK(st.st_mode):
        m |= 1 << 27
    elif stat.S_ISFIFO(st.st_mode):
        m |= 1 << 25
    elif stat.S_ISSOCK(st.st_mode):
        m |= 1 << 24
    elif stat.S_ISCHR(st.st_mode):
        m |= (1 << 26) | (1 << 21)
    elif stat.S_ISBLK(st.st_mode):
        m |= 1 << 26
    return m


def path_stat(c: Any, root: str, path: str) -> tuple[dict[str, Any], str]:
    hp = host_path(c, root, path)
    target = hp.rstrip("/.") if hp.endswith("/.") else hp.rstrip("/") or "/"
    try:
        st = os.lstat(target)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"Could not find the file {path} in container {c.name}") from None
    link = ""
    if stat.S_ISLNK(st.st_mode):
        link = os.readlink(target)
    name = os.path.basename(os.path.normpath(path)) or "/"
    return ({"name": name, "size": st.st_size, "mode": _go_mode(st), "mtime": rfc3339(st.st_mtime),
             "linkTarget": link}, hp)


def _stat_header(info: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(info).encode()).decode()


async def _stat_request(request: web.Request) -> tuple[Any, Any, str, dict[str, Any]]:
    """The container, the requested path and its stat (404 before any response is sent)."""
    s = services(request).containers
    c = s.get(request.match_info["id"])
    path = request.query.get("path")
    if not path:
        raise InvalidArgument("path is required")

    def run() -> dict[str, Any]:
        with container_root(s, c) as root:
            return path_stat(c, root, path)[0]

    return s, c, path, await asyncio.to_thread(run)


async def head(request: web.Request) -> web.StreamResponse:
    _s, _c, _path, info = await _stat_request(request)
    return web.Response(status=200, headers={"X-Docker-Container-Path-Stat": _stat_header(info)})


async def get(request: web.Request) -> web.StreamResponse:
    from matou.layers.diff import write_tree

    s, c, path, info = await _stat_request(request)
    resp = web.StreamResponse(headers={"Content-Type": "application/x-tar",
                                       "X-Docker-Container-Path-Stat": _stat_header(info)})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    out = buffered_writer(resp)

    def run() -> None:
        with container_root(s, c) as root:
            _info, hp = path_stat(c, root, path)
            if hp.endswith("/."):
                write_tree(hp[:-2], out)
            else:
                target = hp.rstrip("/") or "/"
                write_tree(os.path.dirname(target), out, paths=[os.path.basename(target)])
        out.flush()

    await asyncio.to_thread(run)
    await resp.write_eof()
    return resp


async def put(request: web.Request) -> web.StreamResponse:
    from matou.layers.apply import apply_tar_into

    s = services(request).containers
    c = s.get(request.match_info["id"])
    path = request.query.get("path")
    if not path:
        raise InvalidArgument("path is required")
    if c.host_config.get("ReadonlyRootfs"):
        raise InvalidArgument("container rootfs is marked read-only")
    src = buffered_reader(request)

    def run() -> None:
        with container_root(s, c) as root:
            hp = host_path(c, root, path).rstrip("/.") or root
            if not os.path.exists(hp):
                raise NotFound(f"Could not find the file {path} in container {c.name}")
            if not os.path.isdir(hp):
                raise InvalidArgument("extraction point is not a directory")
            apply_tar_into(src, hp, whiteouts="none")

    await asyncio.to_thread(run)
    return web.Response(status=200)


async def export(request: web.Request) -> web.StreamResponse:
    from matou.layers.diff import write_tree

    s = services(request).containers
    c = s.get(request.match_info["id"])
    resp = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    out = buffered_writer(resp)

    def run() -> None:
        with container_root(s, c) as root:
            write_tree(root, out)
        out.flush()

    await asyncio.to_thread(run)
    await resp.write_eof()
    s._publish("export", c)
    return resp


async def commit(request: web.Request) -> web.StreamResponse:
    from matou.image.changes import apply_changes
    from matou.image.model import LayerSource
    from matou.image.service import apply_blob_as_layer
    from matou.layers.diff import write_diff
    from matou.types import oci

    svcs = services(request)
    s = svcs.containers
    q = request.query
    c = s.get(q.get("container", ""))
    body: dict[str, Any] = {}
    if request.can_read_body:
        raw = await request.read()
        if raw.strip():
            try:
                body = json.loads(raw) or {}
            except ValueError as e:
                raise InvalidArgument(f"invalid JSON body: {e}") from None
    repo, tag = q.get("repo") or None, q.get("tag") or None
    ref = None
    if repo:
        ref = f"{repo}:{tag}" if tag else repo
        from matou.types import reference

        reference.parse(ref)
    pause = c.state.Running and q.get("pause", "1") not in ("0", "false")
    if pause and not c.state.Paused:
        await s.pause(c.id)
    try:
        def run() -> Any:
            images = s.images
            img = images.get(c.image_id)
            upper = s.snapshots.dir(f"container-{c.id}")
            w = images.content.writer(f"commit-{c.id}-{time.monotonic_ns()}")
            w.reset()
            try:
                res = write_diff(upper, w, compression="gzip")  # type: ignore[arg-type]
                digest = w.commit()
            except BaseException:
                w.abort()
                raise
            size = images.content.info(digest).size
            diff_id, _chain, _ = apply_blob_as_layer(images, digest, img.top_layer)
            cfg = dict(c.config)
            for k, v in body.items():
                if v not in (None, "", [], {}):
                    cfg[k] = v
            cfg = apply_changes(cfg, q.getall("changes", []))
            cfg.pop("Image", None)
            created = rfc3339()
            config = dict(img.config)
            config["created"] = created
            config["config"] = {k: v for k, v in cfg.items() if v not in (None, "")}
            config["container"] = c.id
            if q.get("author"):
                config["author"] = q["author"]
            config["rootfs"] = {"type": "layers", "diff_ids": img.diff_ids + [diff_id]}
            hist = list(img.config.get("history") or [])
            entry: dict[str, Any] = {"created": created, "created_by": c.command_text()}
            if q.get("comment"):
                entry["comment"] = q["comment"]
            if q.get("author"):
                entry["author"] = q["author"]
            config["history"] = hist + [entry]
            layers = images.layer_sources(img) + [LayerSource(digest, oci.OCI_LAYER_GZIP, size, diff_id)]
            _ = res
            return images.create_image(oci.canonical_json(config), layers, refs=[ref] if ref else [],
                                       parent=img.id)

        new = await asyncio.to_thread(run)
    finally:
        if pause:
            with contextlib.suppress(Exception):
                await s.unpause(c.id)
    s._publish("commit", c)
    return web.json_response({"Id": new.id}, status=201)
