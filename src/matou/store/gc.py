"""Reference-based garbage collection of layers, snapshots and blobs.

Roots: images (config, manifest, the manifest's layer blobs, the chain ids of their layers), digest refs
(index blobs of multi-platform pulls), containers (their ``container-<id>`` snapshots), leases (work in
flight pins blobs and snapshots by name), and whatever the caller passes. Everything else goes. Uncommitted
``extract-*`` snapshots are removed only when older than ``grace`` seconds, so unpacks in flight survive.
"""

from __future__ import annotations

import json
import time

from matou.store.content import ContentStore
from matou.store.metadata import Database
from matou.store.snapshots import OverlaySnapshotter


def collect(content: ContentStore, db: Database, snapshots: OverlaySnapshotter, *,
            extra_snapshots: set[str] | None = None, extra_blobs: set[str] | None = None,
            grace: float = 3600.0) -> dict[str, int]:
    from matou.types.image import chain_ids

    keep_blobs: set[str] = set(extra_blobs or ())
    keep_snaps: set[str] = set(extra_snapshots or ())
    for row in db.all("SELECT id, manifest_digest FROM images"):
        keep_blobs.add(row["id"])
        try:
            config = json.loads(content.read(row["id"]))
        except Exception:
            config = {}
        keep_snaps.update(chain_ids(list((config.get("rootfs") or {}).get("diff_ids") or [])))
        md = row["manifest_digest"]
        if md:
            keep_blobs.add(md)
            try:
                m = json.loads(content.read(md))
                keep_blobs.update(x["digest"] for x in m.get("layers") or [])
            except Exception:
                pass
    for row in db.all("SELECT ref FROM image_refs WHERE kind='digest'"):
        keep_blobs.add(row["ref"].rsplit("@", 1)[1])
    for row in db.all("SELECT id FROM containers"):
        keep_snaps.add(f"container-{row['id']}")
    for row in db.all("SELECT kind, ref FROM lease_resources"):
        (keep_blobs if row["kind"] == "blob" else keep_snaps).add(row["ref"])

    # keep ancestors of every kept snapshot
    infos = {s.key: s for s in snapshots.walk()}
    stack = [k for k in keep_snaps if k in infos]
    while stack:
        p = infos[stack.pop()].parent
        if p and p not in keep_snaps:
            keep_snaps.add(p)
            if p in infos:
                stack.append(p)

    removed_snaps = 0
    now = time.time()
    doomed = [s for s in infos.values() if s.key not in keep_snaps
              and not (s.key.startswith("extract-") and now - s.created < grace)
              and not (s.kind == "active" and not s.key.startswith("extract-") and now - s.created < grace)]
    # children before parents
    pending = {s.key for s in doomed}
    changed = True
    while changed and pending:
        changed = False
        for key in sorted(pending):
            if any(s.parent == key for s in infos.values()):
                continue
            try:
                snapshots.remove(key)
            except Exception:
                pending.discard(key)
                continue
            db.execute("DELETE FROM layers WHERE chain_id=?", (key,))
            infos.pop(key, None)
            pending.discard(key)
            removed_snaps += 1
            changed = True

    # layer rows whose snapshot is gone
    for row in db.all("SELECT chain_id FROM layers"):
        if not snapshots.exists(row["chain_id"]):
            db.execute("DELETE FROM layers WHERE chain_id=?", (row["chain_id"],))

    removed_blobs = 0
    freed = 0
    for info in list(content.walk()):
        if info.digest in keep_blobs:
            continue
        if now - info.created < 5:  # just written by a request in flight that has not registered it yet
            continue
        if content.delete(info.digest):
            removed_blobs += 1
            freed += info.size
    for row in db.all("SELECT DISTINCT digest FROM layer_blobs"):
        if not content.exists(row["digest"]):
            db.execute("DELETE FROM layer_blobs WHERE digest=?", (row["digest"],))
    for _ref, d, mtime in list(content.ingests()):
        if now - mtime > 24 * 3600:
            import shutil

            shutil.rmtree(d, ignore_errors=True)
    snapshots.cleanup_orphans()
    return {"snapshots": removed_snaps, "blobs": removed_blobs, "bytes": freed}
