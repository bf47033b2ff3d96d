"""Content-addressed blob store.

Layout under ``root``::

    blobs/sha256/<hex>          committed blobs, read-only, named by the digest of their bytes
    ingest/<key-hash>/data      a partial write; ``ref`` holds the caller's key, ``expected`` the digest if known

A blob becomes visible only after its size and digest were verified and it was fsynced; then it is renamed
into ``blobs/`` (rename is atomic), so a crash or a kill at any point leaves either no blob or a correct one.
Partial ingests are kept by their reference key (e.g. ``pull-<digest>``), so an interrupted download can
resume: ``writer()`` reopens the ingest, re-hashes what is there (only on resume) and reports its offset.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from matou.errors import DataCorruption, InvalidArgument, NotFound
from matou.types.digest import Digest
from matou.util.fs import fsync_dir, makedirs


@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: str
    size: int
    created: float


class Writer:
    """Writes one ingest. ``offset`` tells how much a previous attempt already stored."""

    def __init__(self, store: ContentStore, ref: str, expected: str | None, size: int | None) -> None:
        self._store = store
        self.ref = ref
        self.expected = Digest.parse(expected) if expected else None
        self.total = size
        self.dir = store._ingest_dir(ref)
        makedirs(self.dir, 0o700)
        self._hasher = hashlib.new(self.expected.algorithm if self.expected else "sha256")
        data = os.path.join(self.dir, "data")
        self._fd = os.open(data, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.offset = 0
        with open(os.path.join(self.dir, "ref"), "w") as f:
            f.write(ref)
        if expected:
            with open(os.path.join(self.dir, "expected"), "w") as f:
                f.write(expected)
        size_now = os.fstat(self._fd).st_size
        if size_now:
            # resume: hash what is already there (the one time we re-read)
            os.lseek(self._fd, 0, os.SEEK_SET)
            remaining = size_now
            while remaining:
                chunk = os.read(self._fd, min(remaining, 1 << 20))
                if not chunk:
                    break
                self._hasher.update(chunk)
                remaining -= len(chunk)
            self.offset = size_now - remaining
            os.ftruncate(self._fd, self.offset)
        os.lseek(self._fd, self.offset, os.SEEK_SET)
        self._closed = False

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data)
        n_total = len(view)
        self._hasher.update(view)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.offset += n_total
        if self.total is not None and self.offset > self.total:
            raise DataCorruption(f"blob {self.expected or self.ref} is larger than its declared size {self.total}")
        return n_total

    def copy_from(self, src: BinaryIO, chunk: int = 1 << 20) -> None:
        while True:
            b = src.read(chunk)
            if not b:
                break
            self.write(b)

    def digest(self) -> str:
        return f"{self._hasher.name}:{self._hasher.hexdigest()}"

    def reset(self) -> None:
        """Start over (e.g. the server ignored our Range request)."""
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self.offset = 0
        self._hasher = hashlib.new(self._hasher.name)

    def commit(self) -> str:
        """Verify size and digest, fsync, rename into place. Returns the digest. Idempotent for existing blobs."""
        got = self.digest()
        if self.total is not None and self.offset != self.total:
            self.abort()
            raise DataCorruption(f"blob {self.expected or got}: got {self.offset} bytes, expected {self.total}")
        if self.expected is not None and got != str(self.expected):
            self.abort()
            raise DataCorruption(f"digest mismatch: expected {self.expected}, got {got}")
        target = self._store.path(got)
        os.fsync(self._fd)
        os.close(self._fd)
        self._closed = True
        if os.path.exists(target):
            shutil.rmtree(self.dir, ignore_errors=True)
            return got
        makedirs(os.path.dirname(target))
        os.chmod(os.path.join(self.dir, "data"), 0o444)
        os.rename(os.path.join(self.dir, "data"), target)
        fsync_dir(os.path.dirname(target))
        shutil.rmtree(self.dir, ignore_errors=True)
        return got

    def close(self) -> None:
        """Keep the partial ingest for a later resume."""
        if not self._closed:
            os.close(self._fd)
            self._closed = True

    def abort(self) -> None:
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ContentStore:
    def __init__(self, root: str) -> None:
        self.root = root
        makedirs(os.path.join(root, "blobs", "sha256"))
        makedirs(os.path.join(root, "ingest"), 0o700)

    def path(self, digest: str) -> str:
        d = Digest.parse(digest)
        return os.path.join(self.root, "blobs", d.algorithm, d.hex)

    def _ingest_dir(self, ref: str) -> str:
        return os.path.join(self.root, "ingest", hashlib.sha256(ref.encode()).hexdigest()[:32])

    def exists(self, digest: str) -> bool:
        try:
            return os.path.exists(self.path(digest))
        except InvalidArgument:
            return False

    def info(self, digest: str) -> BlobInfo:
        try:
            st = os.stat(self.path(digest))
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None
        return BlobInfo(digest, st.st_size, st.st_mtime)

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def read(self, digest: str) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def writer(self, ref: str, expected: str | None = None, size: int | None = None) -> Writer:
        return Writer(self, ref, expected, size)

    def put(self, data: bytes, expected: str | None = None) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if expected and expected != digest:
            raise DataCorruption(f"digest mismatch: expected {expected}, got {digest}")
        if self.exists(digest):
            return digest
        w = self.writer(f"put-{digest}-{os.getpid()}-{time.monotonic_ns()}", digest, len(data))
        w.reset()
        w.write(data)
        return w.commit()

    def delete(self, digest: str) -> bool:
        try:
            os.unlink(self.path(digest))
            return True
        except FileNotFoundError:
            return False

    def walk(self) -> Iterator[BlobInfo]:
        base = os.path.join(self.root, "blobs")
        for algo in os.listdir(base):
            for name in os.listdir(os.path.join(base, algo)):
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(os.path.join(base, algo, name))
                    yield BlobInfo(f"{algo}:{name}", st.st_size, st.st_mtime)

    def ingests(self) -> Iterator[tuple[str, str, float]]:
        """(ref, dir, mtime) of partial ingests, for GC of abandoned ones."""
        base = os.path.join(self.root, "ingest")
        for name in os.listdir(base):
            d = os.path.join(base, name)
            try:
                with open(os.path.join(d, "ref")) as f:
                    ref = f.read()
                yield ref, d, os.stat(d).st_mtime
            except OSError:
                continue

    def verify(self, digest: str) -> bool:
        """Re-hash a stored blob (fsck); used by tests and `system check`, never on a hot path."""
        d = Digest.parse(digest)
        h = d.hasher()
        with self.open(digest) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return h.hexdigest() == d.hex
