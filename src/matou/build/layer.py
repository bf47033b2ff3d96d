"""Layers of a build step: a writable snapshot on the parent image, its upper dir turned into a layer blob.

A COPY, ADD or WORKDIR step prepares an overlay snapshot on the parent's top layer, mounts it, writes through
the mount (overlay does the copy-up of parent directories, symlinks resolve as in the image), unmounts, and the
upper directory is the layer: ``write_diff`` makes the uncompressed tar blob (its digest is the diff id) and the
snapshot itself is committed as the layer, so nothing is extracted twice. A RUN step's layer is the container's
read-write snapshot, finished the same way after the mount points the runtime created are removed
(``clean_stubs``: Docker keeps them out with an "init" layer; they must not end up in images).

An upper dir with no entries is no layer at all: Docker records such steps as ``empty_layer`` history entries.

All functions here block; the builder calls them from worker threads.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator

from matou.image.model import LayerSource
from matou.image.service import ImageService, commit_snapshot_as_layer
from matou.layers.diff import write_diff
from matou.store.snapshots.overlay import mount_all
from matou.types import oci
from matou.util.ids import new_id
from matou.util.mount import MNT_DETACH, mount_overlay, umount

# where the runtime mounts things in every container (created in the rootfs when the image lacks them)
RUNTIME_TARGETS = ("/proc", "/sys", "/dev", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def lower_lstat(layers: list[str], rel: str) -> os.stat_result | None:
    """``rel`` in the union of ``layers`` (top first), honouring whiteouts and opaque directories."""
    parts = [p for p in rel.split("/") if p]
    for layer in layers:
        cur = layer
        stop_below = False
        hidden = False
        for i, p in enumerate(parts):
            cur = os.path.join(cur, p)
            try:
                st = os.lstat(cur)
            except (FileNotFoundError, NotADirectoryError):
                break
            if _is_whiteout(st):
                hidden = True
                break
            if i == len(parts) - 1:
                return st
            if not stat.S_ISDIR(st.st_mode):
                hidden = True
                break
            if _opaque(cur):
                stop_below = True
        else:
            if not parts:
                return os.lstat(layer)
        if hidden or stop_below:
            return None
    return None


def clean_stubs(upper: str, layers: list[str], targets: list[str]) -> None:
    """Remove mount points the runtime had to create (empty files/dirs absent from the image) and directories
    that only exist in ``upper`` because of them (copied up for a stub, still identical to the image's)."""
    seen: set[str] = set()
    for target in sorted(set(targets), key=lambda t: -t.count("/")):
        rel = target.strip("/")
        if not rel:
            continue
        path = os.path.join(upper, rel)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        empty = (stat.S_ISREG(st.st_mode) and st.st_size == 0) or (stat.S_ISDIR(st.st_mode) and not os.listdir(path))
        if not empty or _opaque(path):
            continue
        low = lower_lstat(layers, rel)
        if low is not None and not (stat.S_ISDIR(st.st_mode) and stat.S_ISDIR(low.st_mode)
                                    and _same_meta(st, low)):
            continue
        _remove(path)
        # parents that now hold nothing and match the image (or do not exist in it)
        parent = os.path.dirname(rel)
        while parent and parent not in seen:
            seen.add(parent)
            ppath = os.path.join(upper, parent)
            try:
                pst = os.lstat(ppath)
            except FileNotFoundError:
                break
            if not stat.S_ISDIR(pst.st_mode) or os.listdir(ppath) or _opaque(ppath):
                break
            plow = lower_lstat(layers, parent)
            if plow is not None and not (stat.S_ISDIR(plow.st_mode) and _same_meta(pst, plow)):
                break
            os.rmdir(ppath)
            parent = os.path.dirname(parent)


def _same_meta(a: os.stat_result, b: os.stat_result) -> bool:
    return stat.S_IMODE(a.st_mode) == stat.S_IMODE(b.st_mode) and a.st_uid == b.st_uid and a.st_gid == b.st_gid


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        os.rmdir(path)
    else:
        os.unlink(path)


def layer_dirs(svc: ImageService, chain: list[str]) -> list[str]:
    """The snapshot directories of an image's layers, top first."""
    return [svc.snapshots.dir(c) for c in reversed(chain)]


def finish(svc: ImageService, key: str, parent_chain: str | None) -> LayerSource | None:
    """Turn the active snapshot ``key`` into a committed layer with a blob; None (and the snapshot removed) when
    its upper dir is empty."""
    upper = svc.snapshots.dir(key)
    if not os.listdir(upper):
        svc.snapshots.remove(key)
        return None
    w = svc.content.writer(f"build-layer-{key}-{new_id()[:8]}")
    try:
        w.reset()
        res = write_diff(upper, w, compression=None)  # type: ignore[arg-type]
        digest = w.commit()
    except BaseException:
        w.abort()
        raise
    commit_snapshot_as_layer(svc, key, res.diff_id, parent_chain, res.size)
    with svc.db.tx() as c:
        c.execute("INSERT OR IGNORE INTO layer_blobs(diff_id, digest, media_type, size) VALUES(?,?,?,?)",
                  (res.diff_id, digest, oci.OCI_LAYER, res.size))
    return LayerSource(digest, oci.OCI_LAYER, res.size, res.diff_id)


@contextlib.contextmanager
def writable(svc: ImageService, parent_chain: str | None, tmp: str) -> Iterator[tuple[str, str]]:
    """An active snapshot on ``parent_chain`` mounted under ``tmp``: yields (snapshot key, mount point). The
    caller calls ``finish`` after the block; on error the snapshot is removed."""
    key = f"build-{new_id()[:16]}"
    mounts = svc.snapshots.prepare(key, parent_chain, labels={"matou/build": "1"})
    mnt = tempfile.mkdtemp(prefix="mnt-", dir=tmp)
    mounted = False
    try:
        mount_all(mounts, mnt)
        mounted = True
        yield key, mnt
    except BaseException:
        if mounted:
            umount(mnt, MNT_DETACH)
            mounted = False
        with contextlib.suppress(Exception):
            svc.snapshots.remove(key)
        raise
    finally:
        if mounted:
            umount(mnt, MNT_DETACH)
        with contextlib.suppress(OSError):
            os.rmdir(mnt)


@contextlib.contextmanager
def read_only(svc: ImageService, chain: list[str], tmp: str) -> Iterator[str]:
    """An image's root filesystem, mounted read-only (an empty directory for an image without layers)."""
    mnt = tempfile.mkdtemp(prefix="ro-", dir=tmp)
    mounted = False
    try:
        if chain:
            mount_overlay(mnt, layer_dirs(svc, chain))
            mounted = True
        yield mnt
    finally:
        if mounted:
            umount(mnt, MNT_DETACH)
        with contextlib.suppress(OSError):
            os.rmdir(mnt)
