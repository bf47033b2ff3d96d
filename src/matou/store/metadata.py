"""The engine's metadata: one SQLite database in WAL mode.

Schema (version 1)::

    images(id PK = config digest, manifest_digest, manifest_media_type, created, size, parent, added_at, last_tag_time)
    image_refs(ref PK, image_id -> images.id, kind 'tag'|'digest')   ref is normalised: docker.io/library/busybox:latest
    layers(chain_id PK, diff_id, parent chain_id, snapshot key, size uncompressed, created)
    layer_blobs(diff_id, digest, media_type, size; PK(diff_id, digest))   compressed forms known for a diff id
    blob_sources(digest, registry, repository; PK all)                   where a blob came from (cross-repo mount)
    snapshots(key PK, id UNIQUE small integer (its directory), parent key, kind 'active'|'committed'|'view', created, labels JSON)
    containers(id PK, name UNIQUE, image_id, created, record JSON)
    volumes(name PK, driver, created, record JSON)
    networks(id PK, name UNIQUE, driver, created, record JSON)
    ip_allocations(network_id, address, owner; PK(network_id, address))
    build_cache(key PK, image_id, created, last_used)
    leases(id PK, created, expires), lease_resources(lease, kind, ref; PK all)   pin work in flight against GC
    kv(key PK, value)                                                      small daemon-wide settings
    sandboxes(container_id PK, record JSON)   (version 2) a running container's netns, veths, published ports
    build_cache + (parent, created_by, sources JSON, pins JSON, size, usage_count)   (version 3) explain and pin

Migrations: ``MIGRATIONS[i]`` brings ``PRAGMA user_version`` from i to i+1, inside one transaction, so a
crash mid-migration leaves the previous version intact. Add a new entry for every schema change; never edit
an applied one.

Writes are short and happen on the daemon's event loop or its worker threads; a re-entrant lock serialises
them and ``BEGIN IMMEDIATE`` makes multi-statement updates atomic. Readers see the last committed state.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any

MIGRATIONS: list[str] = [
    """
    CREATE TABLE images (
        id TEXT PRIMARY KEY,
        manifest_digest TEXT,
        manifest_media_type TEXT,
        created TEXT NOT NULL,
        size INTEGER NOT NULL,
        parent TEXT,
        added_at REAL NOT NULL,
        last_tag_time TEXT
    );
    CREATE TABLE image_refs (
        ref TEXT PRIMARY KEY,
        image_id TEXT NOT NULL REFERENCES images(id),
        kind TEXT NOT NULL
    );
    CREATE INDEX image_refs_by_image ON image_refs(image_id);
    CREATE TABLE layers (
        chain_id TEXT PRIMARY KEY,
        diff_id TEXT NOT NULL,
        parent TEXT,
        snapshot TEXT NOT NULL,
        size INTEGER NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE layer_blobs (
        diff_id TEXT NOT NULL,
        digest TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (diff_id, digest)
    );
    CREATE INDEX layer_blobs_by_digest ON layer_blobs(digest);
    CREATE TABLE blob_sources (
        digest TEXT NOT NULL,
        registry TEXT NOT NULL,
        repository TEXT NOT NULL,
        PRIMARY KEY (digest, registry, repository)
    );
    CREATE TABLE snapshots (
        key TEXT PRIMARY KEY,
        id INTEGER UNIQUE NOT NULL,
        parent TEXT,
        kind TEXT NOT NULL,
        created REAL NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE containers (
        id TEXT PRIMARY KEY,
        name TEXT UNIQUE NOT NULL,
        image_id TEXT,
        created TEXT NOT NULL,
        record TEXT NOT NULL
    );
    CREATE TABLE volumes (
        name TEXT PRIMARY KEY,
        driver TEXT NOT NULL,
        created TEXT NOT NULL,
        record TEXT NOT NULL
    );
    CREATE TABLE networks (
        id TEXT PRIMARY KEY,
        name TEXT UNIQUE NOT NULL,
        driver TEXT NOT NULL,
        created TEXT NOT NULL,
        record TEXT NOT NULL
    );
    CREATE TABLE ip_allocations (
        network_id TEXT NOT NULL,
        address TEXT NOT NULL,
        owner TEXT NOT NULL,
        PRIMARY KEY (network_id, address)
    );
    CREATE TABLE build_cache (
        key TEXT PRIMARY KEY,
        image_id TEXT NOT NULL,
        created REAL NOT NULL,
        last_used REAL NOT NULL
    );
    CREATE TABLE leases (
        id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        expires REAL
    );
    CREATE TABLE lease_resources (
        lease TEXT NOT NULL,
        kind TEXT NOT NULL,
        ref TEXT NOT NULL,
        PRIMARY KEY (lease, kind, ref)
    );
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: a running container's network namespace, veths and published ports, so a restarted daemon rebuilds them
    """
    CREATE TABLE sandboxes (
        container_id TEXT PRIMARY KEY,
        record TEXT NOT NULL
    );
    """,
    # 3: what the builder needs to explain a cache miss and to pin a cache entry's blobs and layers
    """
    ALTER TABLE build_cache ADD COLUMN parent TEXT;
    ALTER TABLE build_cache ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE build_cache ADD COLUMN sources TEXT;
    ALTER TABLE build_cache ADD COLUMN pins TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE build_cache ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE build_cache ADD COLUMN usage_count INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX build_cache_by_parent ON build_cache(parent);
    """,
]


class Database:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=OFF")
        self._tx_depth = 0
        self.migrate()

    @property
    def version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        with self._lock:
            v = self.version
            if v > len(MIGRATIONS):
                raise RuntimeError(f"{self.path}: schema version {v} is newer than this matou ({len(MIGRATIONS)})")
            for i in range(v, len(MIGRATIONS)):
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in _split_sql(MIGRATIONS[i]):
                        self._conn.execute(stmt)
                    self._conn.execute(f"PRAGMA user_version={i + 1}")
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (nested calls join the outer one)."""
        with self._lock:
            if self._tx_depth:
                self._tx_depth += 1
                try:
                    yield self._conn
                finally:
                    self._tx_depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._tx_depth = 1
            try:
                yield self._conn
            except BaseException:
                self._tx_depth = 0
                self._conn.execute("ROLLBACK")
                raise
            self._tx_depth = 0
            self._conn.execute("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._lock:
            return self._conn.execute(sql, params).rowcount

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.one(sql, params)
        return row[0] if row is not None else None

    def get_kv(self, key: str) -> str | None:
        return self.scalar("SELECT value FROM kv WHERE key=?", (key,))

    def set_kv(self, key: str, value: str) -> None:
        self.execute("INSERT INTO kv(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                     (key, value))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
