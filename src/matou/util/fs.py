"""Atomic writes and safe path joins: the two things every store gets wrong once."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, mode: int = 0o644, sync: bool = True) -> None:
    """Write to a sibling temp file, fsync, rename: readers see the old or the new file, never half."""
    d = os.path.dirname(path) or "."
    tmp = os.path.join(d, f".tmp-{os.path.basename(path)}-{os.getpid()}-{id(data):x}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    if sync:
        fsync_dir(d)


def secure_join(root: str, *parts: str) -> str:
    """Join ``parts`` under ``root`` lexically, never climbing above it ('..' stops at root).

    This is a lexical guard only; symlinks inside root must be resolved with ``resolve_in_root``.
    """
    out: list[str] = []
    for p in parts:
        for comp in p.split("/"):
            if comp in ("", "."):
                continue
            if comp == "..":
                if out:
                    out.pop()
                continue
            out.append(comp)
    return os.path.join(root, *out) if out else root


def resolve_in_root(root: str, path: str, max_links: int = 255) -> str:
    """Resolve ``path`` as if ``root`` were '/', following symlinks without ever leaving root.

    Like the kernel's openat2(RESOLVE_IN_ROOT): absolute symlink targets restart at root, '..' at root
    stays at root. Used for `cp` into containers and COPY in builds.
    """
    parts = [c for c in path.split("/") if c not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        comp = parts.pop(0)
        if comp == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, comp)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(comp)
            continue
        import stat as _stat

        if _stat.S_ISLNK(st.st_mode):
            links += 1
            if links > max_links:
                raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [c for c in target.split("/") if c not in ("", ".")] + parts
            continue
        resolved.append(comp)
    return os.path.join(root, *resolved) if resolved else root


def rmtree(path: str) -> None:
    """Remove a tree, tolerating absence; used on directories we own."""
    with contextlib.suppress(FileNotFoundError):
        import shutil  # not at the top: shutil imports bz2 and lzma, which the spawner's forks would carry

        shutil.rmtree(path)


def makedirs(path: str, mode: int = 0o755) -> str:
    os.makedirs(path, mode=mode, exist_ok=True)
    return path


@contextlib.contextmanager
def locked(path: str) -> Iterator[int]:
    """An exclusive flock on ``path`` (created if missing) for cross-process critical sections."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def dir_size(path: str) -> int:
    """Bytes used by regular files below path (hardlinks counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            total += st.st_size
    return total
