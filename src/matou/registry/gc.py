"""Online garbage collection from reference counts, with a grace period.

Runs while the registry serves (a thread of the server, or ``matou registry gc`` on the root from another
process). What is freed, in order:
1. with ``delete_untagged``: manifests no tag, index or subject keeps, older than the grace period;
2. repository links to blobs no manifest of that repository references, untouched for the grace period
   (so a push whose layers are uploaded but whose manifest is not yet there keeps them);
3. blobs no link, manifest or manifest reference names, untouched for the grace period: the index row is
   deleted in a transaction that re-checks the references, then the storage driver moves the file aside,
   asks the index once more (a concurrent upload of the same bytes re-creates the row *before* it publishes
   the file) and puts it back if the blob is wanted again;
4. blob files without an index row older than the grace period (a crash between writing a file and its row),
   and upload sessions idle for ``upload_ttl``.
``dry_run`` reports what the same pass would free and changes nothing (blobs that only the untagged
manifests of step 1 reference are freed by the next pass, and reported by it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from matou.registry.core import Registry


@dataclass(slots=True)
class GcReport:
    dry_run: bool
    manifests: list[str] = field(default_factory=list)
    links: int = 0
    blobs: list[tuple[str, int]] = field(default_factory=list)
    uploads: list[str] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        return sum(s for _, s in self.blobs)

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "manifests": self.manifests, "links": self.links,
                "blobs": [{"digest": d, "size": s} for d, s in self.blobs], "uploads": self.uploads,
                "bytes_freed": self.bytes_freed}


def collect(reg: Registry, *, dry_run: bool = False, grace: float | None = None,
            delete_untagged: bool | None = None, now: float | None = None) -> GcReport:
    cfg = reg.cfg.gc
    grace = cfg.grace if grace is None else grace
    delete_untagged = cfg.delete_untagged if delete_untagged is None else delete_untagged
    now = time.time() if now is None else now
    cutoff = now - grace
    idx, storage = reg.index, reg.storage
    report = GcReport(dry_run)

    if delete_untagged:
        for repo_id, digest in idx.untagged_manifests(cutoff):
            report.manifests.append(digest)
            if not dry_run:
                idx.delete_manifest(repo_id, digest)

    stale = idx.stale_links(cutoff)
    if dry_run:
        report.links = len(stale)
        dropped = set(stale)
    else:
        dropped = {(r, d) for r, d in stale if idx.drop_link_if_stale(r, d, cutoff)}
        report.links = len(dropped)

    if dry_run:
        # what step 3 would see after steps 1-2: blobs whose only references are the links dropped above
        candidates = set(idx.unreferenced_blobs(cutoff))
        if dropped:
            candidates |= set(_blobs_only_linked_by(reg, dropped, cutoff))
        report.blobs = sorted(candidates)
    else:
        for digest, size in idx.unreferenced_blobs(cutoff):
            if not idx.drop_blob_if_unreferenced(digest, cutoff):
                continue

            def wanted(d: str = digest) -> bool:
                return idx.blob_row(d) is not None

            storage.delete_blob(digest, wanted)
            report.blobs.append((digest, size))

    known = idx.blob_digests()
    orphans = [b for b in storage.list_blobs() if b.digest not in known and b.mtime < cutoff]
    for b in orphans:
        if dry_run:
            report.blobs.append((b.digest, b.size))
        else:
            def wanted_orphan(d: str = b.digest) -> bool:
                return idx.blob_row(d) is not None

            if storage.delete_blob(b.digest, wanted_orphan):
                report.blobs.append((b.digest, b.size))

    sessions = idx.upload_ids()
    present: set[str] = set()
    for u in storage.list_uploads():
        present.add(u.upload_id)
        if u.mtime >= now - cfg.upload_ttl:
            continue
        report.uploads.append(u.upload_id)
        if not dry_run:
            storage.delete_upload(u.upload_id)
            if u.upload_id in sessions:
                idx.delete_upload(u.upload_id)
    if not dry_run:  # index rows whose bytes are gone (a crash between publishing and forgetting the session)
        for upload_id, created in sessions.items():
            if upload_id not in present and created < now - cfg.upload_ttl:
                idx.delete_upload(upload_id)
    return report


def _blobs_only_linked_by(reg: Registry, dropped: set[tuple[int, str]], cutoff: float) -> list[tuple[str, int]]:
    """Blobs untouched since ``cutoff`` whose every reference is one of the ``dropped`` links."""
    import sqlalchemy as sa

    from matou.registry import index as ix

    out: list[tuple[str, int]] = []
    digests = sorted({d for _, d in dropped})
    with reg.index.read() as c:
        for d in digests:
            links = {(r[0], d) for r in c.execute(sa.select(ix.repo_blobs.c.repo_id).where(ix.repo_blobs.c.digest == d))}
            if not links <= dropped:
                continue
            if c.execute(sa.select(ix.manifest_refs.c.child).where(ix.manifest_refs.c.child == d).limit(1)).first():
                continue
            if c.execute(sa.select(ix.manifests.c.digest).where(ix.manifests.c.digest == d).limit(1)).first():
                continue
            row = c.execute(sa.select(ix.blobs.c.size).where(ix.blobs.c.digest == d, ix.blobs.c.touched < cutoff)).first()
            if row is not None:
                out.append((d, row[0]))
    return out
