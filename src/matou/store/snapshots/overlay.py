"""Overlay snapshotter, keyed by name (a layer's chain id, or a container's id).

Lifecycle (containerd's)::

    prepare(key, parent)  -> active snapshot: a writable ``fs`` dir (the overlay upper) on top of parent's chain
    commit(name, key)     -> the active snapshot becomes the committed, read-only ``name`` (a layer)
    view(key, parent)     -> read-only view of a committed chain
    mounts(key)           -> how to mount it: a list of Mount specs (never a mounted path)
    remove(key)           -> gone; refused while children exist

Layout: ``<root>/<n>/fs`` and ``<root>/<n>/work`` where ``n`` is a small integer, so an overlay option string
of absolute lowerdir paths stays short: ~30 bytes a layer, 120+ layers in one page; beyond that
``util.mount`` switches to fsconfig's ``lowerdir+``.

Layers are unpacked straight into an active snapshot's ``fs`` directory in overlay format (whiteouts as 0/0
char devices, opaque xattrs). Unpacking needs no mount, so several layers of one image unpack in parallel with
``prepare(key, parent=None)`` and are then committed in order with ``commit(name, key, parent=...)``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass

from matou.errors import Conflict, InvalidArgument, NotFound
from matou.store.metadata import Database
from matou.util.fs import dir_size, makedirs
from matou.util.mount import mount, mount_overlay


@dataclass(frozen=True, slots=True)
class Mount:
    type: str
    source: str
    options: tuple[str, ...]

    def to_oci(self) -> dict:
        return {"type": self.type, "source": self.source, "options": list(self.options)}


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    key: str
    id: int
    parent: str | None
    kind: str  # active | committed | view
    created: float
    labels: dict[str, str]


class OverlaySnapshotter:
    def __init__(self, root: str, db: Database) -> None:
        self.root = makedirs(root, 0o700)
        self.db = db

    # ---- queries
    def stat(self, key: str) -> SnapshotInfo:
        row = self.db.one("SELECT * FROM snapshots WHERE key=?", (key,))
        if row is None:
            raise NotFound(f"snapshot {key} does not exist")
        return SnapshotInfo(row["key"], row["id"], row["parent"], row["kind"], row["created"], json.loads(row["labels"]))

    def exists(self, key: str) -> bool:
        return self.db.one("SELECT 1 FROM snapshots WHERE key=?", (key,)) is not None

    def walk(self) -> list[SnapshotInfo]:
        return [SnapshotInfo(r["key"], r["id"], r["parent"], r["kind"], r["created"], json.loads(r["labels"]))
                for r in self.db.all("SELECT * FROM snapshots ORDER BY id")]

    def dir(self, key: str) -> str:
        """The snapshot's own directory (an upper dir when active, a layer when committed)."""
        return self._fs(self.stat(key).id)

    def chain(self, key: str) -> list[SnapshotInfo]:
        """The snapshot and its ancestors, top first."""
        out = []
        cur: str | None = key
        while cur is not None:
            info = self.stat(cur)
            out.append(info)
            cur = info.parent
        return out

    def usage(self, key: str) -> int:
        return dir_size(self.dir(key))

    # ---- lifecycle
    def prepare(self, key: str, parent: str | None = None, labels: dict[str, str] | None = None) -> list[Mount]:
        return self._create(key, parent, "active", labels)

    def view(self, key: str, parent: str, labels: dict[str, str] | None = None) -> list[Mount]:
        return self._create(key, parent, "view", labels)

    def _create(self, key: str, parent: str | None, kind: str, labels: dict[str, str] | None) -> list[Mount]:
        if parent is not None:
            p = self.stat(parent)
            if p.kind != "committed":
                raise InvalidArgument(f"parent snapshot {parent} is not committed")
        with self.db.tx() as c:
            if c.execute("SELECT 1 FROM snapshots WHERE key=?", (key,)).fetchone():
                raise Conflict(f"snapshot {key} already exists")
            # ids are never reused: a directory of a removed snapshot may still be being deleted
            row = c.execute("SELECT value FROM kv WHERE key='snapshot_next_id'").fetchone()
            sid = max(int(row[0]) if row else 1,
                      int(c.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM snapshots").fetchone()[0]))
            c.execute("INSERT INTO kv(key, value) VALUES('snapshot_next_id', ?) "
                      "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (str(sid + 1),))
            base = os.path.join(self.root, str(sid))
            shutil.rmtree(base, ignore_errors=True)  # a leftover of a crash before its row was written
            os.makedirs(os.path.join(base, "fs"), 0o755)
            if kind == "active":
                os.makedirs(os.path.join(base, "work"), 0o700)
            c.execute("INSERT INTO snapshots(key, id, parent, kind, created, labels) VALUES(?,?,?,?,?,?)",
                      (key, sid, parent, kind, time.time(), json.dumps(labels or {})))
        return self.mounts(key)

    def commit(self, name: str, key: str, parent: str | None | object = ...) -> None:
        """Turn active ``key`` into committed ``name``; ``parent`` re-parents it (ordered commit after parallel unpack)."""
        with self.db.tx() as c:
            info = self.stat(key)
            if info.kind != "active":
                raise InvalidArgument(f"snapshot {key} is not active")
            if c.execute("SELECT 1 FROM snapshots WHERE key=?", (name,)).fetchone():
                raise Conflict(f"snapshot {name} already exists")
            new_parent = info.parent if parent is ... else parent
            if new_parent is not None and self.stat(str(new_parent)).kind != "committed":
                raise InvalidArgument(f"parent snapshot {new_parent} is not committed")
            c.execute("UPDATE snapshots SET key=?, kind='committed', parent=? WHERE key=?", (name, new_parent, key))
        shutil.rmtree(os.path.join(self.root, str(info.id), "work"), ignore_errors=True)

    def remove(self, key: str) -> None:
        with self.db.tx() as c:
            info = self.stat(key)
            if c.execute("SELECT 1 FROM snapshots WHERE parent=?", (key,)).fetchone():
                raise Conflict(f"snapshot {key} has children")
            c.execute("DELETE FROM snapshots WHERE key=?", (key,))
        _rmtree_force(os.path.join(self.root, str(info.id)))

    def mounts(self, key: str) -> list[Mount]:
        chain = self.chain(key)
        top = chain[0]
        lowers = [self._fs(s.id) for s in chain[1:]]
        if top.kind == "active":
            if not lowers:
                return [Mount("bind", self._fs(top.id), ("rbind", "rw"))]
            return [Mount("overlay", "overlay", (
                "lowerdir=" + ":".join(lowers), f"upperdir={self._fs(top.id)}", f"workdir={self._work(top.id)}"))]
        if top.kind == "view":
            if len(lowers) == 1:
                return [Mount("bind", lowers[0], ("rbind", "ro"))]
            return [Mount("overlay", "overlay", ("lowerdir=" + ":".join(lowers),))]
        return [Mount("bind", self._fs(top.id), ("rbind", "ro"))]

    def _fs(self, sid: int) -> str:
        return os.path.join(self.root, str(sid), "fs")

    def _work(self, sid: int) -> str:
        return os.path.join(self.root, str(sid), "work")

    def cleanup_orphans(self) -> int:
        """Remove directories with no row (a crash between mkdir and insert). Returns how many."""
        known = {str(r["id"]) for r in self.db.all("SELECT id FROM snapshots")}
        n = 0
        for name in os.listdir(self.root):
            if name not in known and name.isdigit():
                _rmtree_force(os.path.join(self.root, name))
                n += 1
        return n


def mount_all(mounts: list[Mount], target: str) -> None:
    """Mount specs from ``mounts()`` onto ``target`` (used by the daemon for rootfs, builds, cp, diff)."""
    if len(mounts) != 1:
        raise InvalidArgument("exactly one mount expected")
    m = mounts[0]
    if m.type == "bind":
        from matou.util.mount import MS_BIND, MS_RDONLY, MS_REC, MS_REMOUNT

        mount(m.source, target, None, MS_BIND | MS_REC)
        if "ro" in m.options:
            mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        return
    opts = dict(o.split("=", 1) if "=" in o else (o, "") for o in m.options)
    lowers = opts["lowerdir"].split(":")
    mount_overlay(target, lowers, opts.get("upperdir"), opts.get("workdir"))


def _rmtree_force(path: str) -> None:
    def onerror(func, p, exc):  # type: ignore[no-untyped-def]
        try:
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=onerror)
