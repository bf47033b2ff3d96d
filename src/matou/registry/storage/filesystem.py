"""The filesystem StorageDriver: blobs as files named by digest, uploads as growing files, all under one root.

Layout: ``blobs/<algorithm>/<first two hex>/<hex>``, ``uploads/<id>`` (the bytes so far; a flock on the file
serialises appenders across processes), ``trash/`` (blobs being deleted; see base.py). Published files are
renamed into place only after their digest was verified and their data fsync'd, so a crash at any point
leaves either no blob or a correct one. Digests are computed while the bytes stream in; the hash state is a
per-process cache keyed by (session, size) and is rebuilt by reading the session back only when this process
did not see every byte (a restart, or another replica appended).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import BinaryIO

from matou.errors import DataCorruption, NotFound
from matou.registry.storage.base import BlobInfo, OffsetMismatch, UploadInfo
from matou.types.digest import Digest
from matou.util.fs import fsync_dir

_CHUNK = 1 << 20
_MAX_CACHED_HASHERS = 4096
_WRITEBACK_EVERY = 8 << 20  # start writing back this much at a time, so the fsync at commit has little left


def _writeback_starter() -> Callable[[int, int, int], None]:
    """sync_file_range(SYNC_FILE_RANGE_WRITE): asks the kernel to start writing a range out, without waiting."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
        fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    except (OSError, AttributeError):
        return lambda fd, off, n: None

    def start(fd: int, off: int, n: int) -> None:
        fn(fd, off, n, 2)  # SYNC_FILE_RANGE_WRITE; a failure here is caught by the fsync at commit

    return start


def _check_upload_id(upload_id: str) -> str:
    try:
        return str(uuid.UUID(upload_id))
    except (ValueError, TypeError, AttributeError):
        raise NotFound(f"blob upload unknown: {upload_id!r}") from None


class _Writer:
    """Appends to one session under its flock; hashes (sha256) what it writes."""

    def __init__(self, driver: FilesystemDriver, upload_id: str, fd: int, size: int, hasher: hashlib._Hash) -> None:
        self._driver = driver
        self._id = upload_id
        self._fd = fd
        self._size = size
        self._hasher = hasher
        self._closed = False
        self._flushed = size

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except BaseException:
            # the file may hold part of this chunk: cut it back to what the hash state covers
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._hasher.update(data)
        self._size += len(data)
        if self._size - self._flushed >= _WRITEBACK_EVERY:
            self._driver._writeback(self._fd, self._flushed, self._size - self._flushed)
            self._flushed = self._size

    def close(self) -> int:
        if not self._closed:
            self._closed = True
            self._driver._remember(self._id, self._size, self._hasher)
            os.close(self._fd)  # releases the flock
        return self._size


class FilesystemDriver:
    name = "filesystem"

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._blobs = os.path.join(self.root, "blobs")
        self._uploads = os.path.join(self.root, "uploads")
        self._trash = os.path.join(self.root, "trash")
        self._hashers: dict[str, tuple[int, hashlib._Hash]] = {}
        self._writeback = _writeback_starter()
        for d in (self._blobs, self._uploads, self._trash):
            os.makedirs(d, mode=0o755, exist_ok=True)
        # pre-create the sha256 fan-out once, so publishing never creates a directory entry that needs its own fsync
        sha = os.path.join(self._blobs, "sha256")
        if not os.path.isdir(os.path.join(sha, "ff")):
            for i in range(256):
                os.makedirs(os.path.join(sha, f"{i:02x}"), exist_ok=True)
            fsync_dir(sha)
            fsync_dir(self._blobs)

    # paths
    def _path(self, digest: str) -> str:
        d = Digest.parse(digest)
        return os.path.join(self._blobs, d.algorithm, d.hex[:2], d.hex)

    def _upload_path(self, upload_id: str) -> str:
        if upload_id.startswith(".put-"):  # a put_blob temp file (only GC names those)
            return os.path.join(self._uploads, ".put-" + _check_upload_id(upload_id[5:]))
        return os.path.join(self._uploads, _check_upload_id(upload_id))

    # blobs
    def stat_blob(self, digest: str) -> int | None:
        try:
            return os.stat(self._path(digest)).st_size
        except FileNotFoundError:
            return None

    def blob_path(self, digest: str) -> str | None:
        p = self._path(digest)
        return p if os.path.exists(p) else None

    def open_blob(self, digest: str) -> BinaryIO:
        try:
            return open(self._path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob unknown: {digest}") from None

    def read_blob(self, digest: str) -> bytes:
        with self.open_blob(digest) as f:
            return f.read()

    def put_blob(self, digest: str, data: bytes, before_publish: Callable[[int], None] | None = None) -> int:
        d = Digest.parse(digest)
        if hashlib.new(d.algorithm, data).hexdigest() != d.hex:
            raise DataCorruption(f"content does not match digest {digest}")
        tmp = os.path.join(self._uploads, f".put-{uuid.uuid4()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        try:
            if before_publish is not None:
                before_publish(len(data))
            self._publish(tmp, d)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return len(data)

    def _publish(self, src: str, d: Digest) -> None:
        parent = os.path.join(self._blobs, d.algorithm, d.hex[:2])
        if not os.path.isdir(parent):
            os.makedirs(parent, exist_ok=True)
            fsync_dir(os.path.dirname(parent))
        os.replace(src, os.path.join(parent, d.hex))  # identical content if it existed: replacing is harmless
        fsync_dir(parent)

    def delete_blob(self, digest: str, still_wanted: Callable[[], bool] | None = None) -> bool:
        path = self._path(digest)
        aside = os.path.join(self._trash, f"{os.path.basename(path)}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        if still_wanted is not None and still_wanted():
            try:
                os.link(aside, path)
            except FileExistsError:
                pass  # a fresh upload of the same content got there first
            os.unlink(aside)
            return False
        os.unlink(aside)
        return True

    def list_blobs(self) -> Iterator[BlobInfo]:
        for algo in sorted(os.listdir(self._blobs)):
            base = os.path.join(self._blobs, algo)
            if not os.path.isdir(base):
                continue
            for fan in sorted(os.listdir(base)):
                fdir = os.path.join(base, fan)
                try:
                    names = os.listdir(fdir)
                except NotADirectoryError:
                    continue
                for name in sorted(names):
                    try:
                        st = os.stat(os.path.join(fdir, name))
                    except FileNotFoundError:
                        continue
                    yield BlobInfo(f"{algo}:{name}", st.st_size, st.st_mtime)

    # uploads
    def create_upload(self) -> str:
        upload_id = str(uuid.uuid4())
        fd = os.open(os.path.join(self._uploads, upload_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.close(fd)
        self._remember(upload_id, 0, hashlib.sha256())
        return upload_id

    def upload_size(self, upload_id: str) -> int:
        try:
            return os.stat(self._upload_path(upload_id)).st_size
        except FileNotFoundError:
            raise NotFound(f"blob upload unknown: {upload_id}") from None

    def _lock(self, upload_id: str) -> int:
        try:
            fd = os.open(self._upload_path(upload_id), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"blob upload unknown: {upload_id}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OffsetMismatch(self.upload_size(upload_id)) from None
            raise
        # the session may have been published or cancelled between open and flock: then our fd is no longer it
        try:
            same = os.stat(self._upload_path(upload_id)).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            raise NotFound(f"blob upload unknown: {upload_id}")
        return fd

    def _hasher_for(self, upload_id: str, fd: int, size: int, algorithm: str = "sha256") -> hashlib._Hash:
        cached = self._hashers.get(upload_id)
        if cached is not None and cached[0] == size and cached[1].name == algorithm:
            return cached[1].copy()
        h = hashlib.new(algorithm)
        off = 0
        while off < size:
            buf = os.pread(fd, min(_CHUNK, size - off), off)
            if not buf:
                break
            h.update(buf)
            off += len(buf)
        return h

    def _remember(self, upload_id: str, size: int, hasher: hashlib._Hash) -> None:
        if len(self._hashers) >= _MAX_CACHED_HASHERS:
            self._hashers.pop(next(iter(self._hashers)))
        self._hashers[upload_id] = (size, hasher)

    def open_upload(self, upload_id: str, offset: int | None = None) -> _Writer:
        fd = self._lock(upload_id)
        try:
            size = os.fstat(fd).st_size
            if offset is not None and offset != size:
                raise OffsetMismatch(size)
            hasher = self._hasher_for(upload_id, fd, size)
            os.lseek(fd, size, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return _Writer(self, _check_upload_id(upload_id), fd, size, hasher)

    def commit_upload(self, upload_id: str, digest: str, before_publish: Callable[[int], None] | None = None) -> int:
        d = Digest.parse(digest)
        upload_id = _check_upload_id(upload_id)
        path = self._upload_path(upload_id)
        fd = self._lock(upload_id)
        try:
            size = os.fstat(fd).st_size
            hasher = self._hasher_for(upload_id, fd, size, d.algorithm)
            if hasher.hexdigest() != d.hex:
                os.unlink(path)
                self._hashers.pop(upload_id, None)
                raise DataCorruption(f"content does not match digest {digest}")
            os.fchmod(fd, 0o444)
            os.fsync(fd)
            if before_publish is not None:
                before_publish(size)
            self._publish(path, d)
            self._hashers.pop(upload_id, None)
            return size
        finally:
            os.close(fd)

    def delete_upload(self, upload_id: str) -> bool:
        self._hashers.pop(upload_id, None)
        try:
            os.unlink(self._upload_path(upload_id))
            return True
        except FileNotFoundError:
            return False

    def list_uploads(self) -> Iterator[UploadInfo]:
        for name in os.listdir(self._uploads):
            try:
                st = os.stat(os.path.join(self._uploads, name))
            except FileNotFoundError:
                continue
            if name.startswith(".put-"):
                yield UploadInfo(name, st.st_size, st.st_mtime)
                continue
            try:
                uuid.UUID(name)
            except ValueError:
                continue
            yield UploadInfo(name, st.st_size, st.st_mtime)

    def close(self) -> None:
        self._hashers.clear()
