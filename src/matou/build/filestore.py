"""Content-addressed store of build-context files, so an unchanged file is never sent or hashed twice.

Why: Docker's protocol sends the whole context with every build (50 MB for a 50 MB file, even when nothing
changed), and the daemon must hash all of it to look up the cache. matou's CLI first asks which file contents the
daemon lacks (``POST /build/check`` with sha256 digests it keeps in a local stat-keyed cache), then sends only
those; the others travel as references (a tar entry of size 0 with the ``user.matou.ref`` xattr naming the
digest and size). Contents the daemon receives are hashed on arrival and stored under their digest, whoever sent
them (the docker CLI too), so the store is never poisoned by a wrong digest.

Layout: ``<root>/<sha256 hex>`` (read-only files, read in place by the builds that use them), ``<root>/tmp``
for files being received. ``prune`` empties it (``builder prune``); ``expire`` drops files unused for a week.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable

from matou.errors import InvalidArgument
from matou.util.ids import new_id

REF_XATTR = b"user.matou.ref"


class FileStore:
    def __init__(self, root: str) -> None:
        self.root = root
        self.tmp = os.path.join(root, "tmp")
        os.makedirs(self.tmp, 0o700, exist_ok=True)

    def path(self, hexdigest: str) -> str:
        if len(hexdigest) != 64 or hexdigest.strip("0123456789abcdef"):
            raise InvalidArgument(f"invalid content digest {hexdigest!r}")
        return os.path.join(self.root, hexdigest)

    def has(self, hexdigest: str, size: int) -> bool:
        try:
            return os.stat(self.path(hexdigest)).st_size == size
        except (FileNotFoundError, InvalidArgument):
            return False

    def missing(self, items: list[tuple[str, int]]) -> list[str]:
        return [h for h, size in items if not self.has(h, size)]

    def check(self, hexdigest: str, size: int) -> str:
        """The path of stored content a context refers to; refuses unknown or mismatched references."""
        src = self.path(hexdigest)
        try:
            st = os.stat(src)
        except FileNotFoundError:
            raise InvalidArgument(f"the build context refers to content sha256:{hexdigest} that the daemon does "
                                  "not have (pruned meanwhile?): send it again") from None
        if st.st_size != size:
            raise InvalidArgument(f"content sha256:{hexdigest} has {st.st_size} bytes, the context says {size}")
        if time.time() - st.st_mtime > 3600:  # mark as used, at most hourly
            with contextlib.suppress(OSError):
                os.utime(src)
        return src

    def ingest(self, size: int, read: Callable[[int], bytes], chunk: int = 1 << 20) -> str:
        """Receive ``size`` bytes from ``read`` into the store, hashing them; returns the sha256 hex."""
        tmp = os.path.join(self.tmp, new_id()[:24])
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        h = hashlib.sha256()
        try:
            left = size
            while left:
                data = read(min(left, chunk))
                h.update(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                left -= len(data)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        hexd = h.hexdigest()
        final = os.path.join(self.root, hexd)
        if os.path.exists(final):
            os.unlink(tmp)
        else:
            os.rename(tmp, final)
        return hexd

    def usage(self) -> int:
        total = 0
        for name in os.listdir(self.root):
            if len(name) == 64:
                with contextlib.suppress(FileNotFoundError):
                    total += os.stat(os.path.join(self.root, name)).st_size
        return total

    def expire(self, max_age: float) -> int:
        """Remove contents not used for ``max_age`` seconds; returns the bytes freed."""
        now = time.time()
        freed = 0
        for name in os.listdir(self.root):
            if len(name) != 64:
                continue
            p = os.path.join(self.root, name)
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(p)
                if max_age <= 0 or now - st.st_mtime > max_age:
                    os.unlink(p)
                    freed += st.st_size
        for name in os.listdir(self.tmp):
            with contextlib.suppress(FileNotFoundError):
                if now - os.stat(os.path.join(self.tmp, name)).st_mtime > 3600:
                    os.unlink(os.path.join(self.tmp, name))
        return freed

    def prune(self) -> int:
        return self.expire(0)
