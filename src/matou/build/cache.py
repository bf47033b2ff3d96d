"""The build cache: a step's key -> the image it produced, pinned so the cache outlives the images.

Key of a step: sha256 of (parent image ID, the step's ``created_by`` with its arguments expanded and, for
COPY/ADD, the content hash of the sources (bytes, mode, owner; never the mtime), plus RUN's mounts and
network). The parent image ID already covers the whole config (ENV, WORKDIR, USER, SHELL...).

Every step commits an image (Docker's legacy builder does the same; ``images -a`` shows them). A cache entry pins
what is needed to bring its image back if the image row is gone (a failed build rolls its new images back;
``rmi`` removes untagged parents): the config blob, the layer blobs and the top layer's snapshot, held by the
``build-cache`` lease so garbage collection keeps them. ``prune`` drops entries and their pins; the next
garbage collection frees the bytes.

For ``--explain-cache`` an entry also keeps its parent, its ``created_by`` and, for COPY/ADD, a small manifest
of the source files (path -> digest and mode), so a miss can be explained against the closest previous entry.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from matou.store.metadata import Database

LEASE = "build-cache"
_HASH = re.compile(r"\b(file|dir|multi|url|image):[0-9a-f]{64}\b")


@dataclass
class CacheEntry:
    key: str
    image_id: str
    parent: str | None
    created_by: str
    sources: dict[str, str] | None
    created: float
    last_used: float
    size: int
    usage_count: int


def make_key(parent: str | None, created_by: str, extra: str = "") -> str:
    h = hashlib.sha256()
    h.update((parent or "scratch").encode())
    h.update(b"\n")
    h.update(created_by.encode("utf-8", "surrogateescape"))
    h.update(b"\n")
    h.update(extra.encode("utf-8", "surrogateescape"))
    return "sha256:" + h.hexdigest()


class BuildCache:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _row(self, r: Any) -> CacheEntry:
        return CacheEntry(r["key"], r["image_id"], r["parent"], r["created_by"],
                          json.loads(r["sources"]) if r["sources"] else None, r["created"], r["last_used"],
                          int(r["size"] or 0), int(r["usage_count"] or 0))

    def lookup(self, key: str) -> CacheEntry | None:
        r = self.db.one("SELECT * FROM build_cache WHERE key=?", (key,))
        if r is None:
            return None
        self.db.execute("UPDATE build_cache SET last_used=?, usage_count=usage_count+1 WHERE key=?",
                        (time.time(), key))
        return self._row(r)

    def record(self, key: str, image_id: str, parent: str | None, created_by: str,
               sources: dict[str, str] | None, pins: list[tuple[str, str]], size: int) -> None:
        now = time.time()
        with self.db.tx() as c:
            c.execute("INSERT INTO build_cache(key, image_id, created, last_used, parent, created_by, sources, pins, "
                      "size, usage_count) VALUES(?,?,?,?,?,?,?,?,?,0) ON CONFLICT(key) DO UPDATE SET "
                      "image_id=excluded.image_id, last_used=excluded.last_used, pins=excluded.pins, "
                      "sources=excluded.sources",
                      (key, image_id, now, now, parent, created_by, json.dumps(sources) if sources is not None else None,
                       json.dumps(pins), size))
            c.execute("INSERT OR IGNORE INTO leases(id, created, expires) VALUES(?,?,NULL)", (LEASE, now))
            for kind, ref in pins:
                c.execute("INSERT OR IGNORE INTO lease_resources(lease, kind, ref) VALUES(?,?,?)", (LEASE, kind, ref))

    def entries(self) -> list[CacheEntry]:
        return [self._row(r) for r in self.db.all("SELECT * FROM build_cache ORDER BY created")]

    def forget(self, keys: list[str]) -> None:
        """Drop entries and re-derive the lease's pins from what remains."""
        with self.db.tx() as c:
            for k in keys:
                c.execute("DELETE FROM build_cache WHERE key=?", (k,))
            keep: set[tuple[str, str]] = set()
            for r in c.execute("SELECT pins FROM build_cache").fetchall():
                keep.update((k, v) for k, v in json.loads(r[0] or "[]"))
            c.execute("DELETE FROM lease_resources WHERE lease=?", (LEASE,))
            for kind, ref in sorted(keep):
                c.execute("INSERT INTO lease_resources(lease, kind, ref) VALUES(?,?,?)", (LEASE, kind, ref))

    # ------------------------------------------------------------------ explain
    def explain(self, parent: str | None, created_by: str, sources: dict[str, str] | None,
                parent_missed: bool) -> str:
        """One line: why no entry matched this step."""
        if parent_missed:
            return "an earlier step was rebuilt, so its result (the parent of this step) is new"
        rows = [self._row(r) for r in self.db.all(
            "SELECT * FROM build_cache WHERE parent IS ? ORDER BY last_used DESC", (parent,))]
        if not rows:
            return "first build of this step: no cached step has this parent image"
        same = [r for r in rows if r.created_by == created_by]
        if same:
            return "a cached step had the same instruction but different mounts or network settings"
        plain = _HASH.sub("<hash>", created_by)
        for r in rows:
            if _HASH.sub("<hash>", r.created_by) == plain:
                if sources is not None and r.sources is not None:
                    return "source files changed: " + _diff_sources(r.sources, sources)
                return "the sources' content changed"
        closest = rows[0]
        return f"the instruction changed: was {_short(closest.created_by)!r}, now {_short(created_by)!r}"


def _short(s: str, n: int = 100) -> str:
    s = s.replace("/bin/sh -c #(nop) ", "").strip()
    return s if len(s) <= n else s[: n - 1] + "…"


def _diff_sources(old: dict[str, str], new: dict[str, str]) -> str:
    changed = sorted(p for p in new if p in old and old[p] != new[p])
    added = sorted(p for p in new if p not in old)
    removed = sorted(p for p in old if p not in new)
    parts = []
    for label, items in (("changed", changed), ("added", added), ("removed", removed)):
        if items:
            shown = ", ".join(items[:8]) + (f" and {len(items) - 8} more" if len(items) > 8 else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts) or "file metadata (mode or owner) changed"
