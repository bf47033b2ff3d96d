"""COPY and ADD file operations, done through the mounted writable snapshot of the step.

Paths in the image are resolved like in the container (``resolve_in_root``: symlinks of the image are followed,
never out of it), so ``COPY x /bin/`` on a merged-usr image writes ``/usr/bin/x``. Directories that have to be
created get mode 0755 and the ``--chown`` owner (root otherwise), as Docker's copier does. Copied entries keep
their mode (unless ``--chmod``) and mtime; their owner is root (or ``--chown``), except for ``COPY --from``,
which keeps the owners of the source image. Data moves with sendfile(2), so file bytes never pass through
Python.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import lzma
import os
import posixpath
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from matou.errors import InvalidArgument
from matou.util.fs import resolve_in_root


@dataclass(slots=True)
class Src:
    """One entry to copy: where its bytes are on the host and what it is."""

    host: str
    rel: str  # path below the copied root ("" for the root itself)
    kind: str  # file | dir | symlink
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int = 0
    link: str = ""


def parse_chmod(spec: str | None) -> int | None:
    if not spec:
        return None
    try:
        v = int(spec, 8)
    except ValueError:
        raise InvalidArgument(f"invalid --chmod value {spec!r}: an octal mode such as 0755 is expected") from None
    if v < 0 or v > 0o7777:
        raise InvalidArgument(f"invalid --chmod value {spec!r}")
    return v


def _table(root: str, path: str) -> list[list[str]]:
    try:
        with open(resolve_in_root(root, path), encoding="utf-8", errors="replace") as f:
            return [ln.split(":") for ln in f.read().splitlines() if ln and not ln.startswith("#")]
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []


def resolve_owner(root: str, spec: str) -> tuple[int, int]:
    """``--chown`` as Docker reads it: names from the image's passwd/group; a user alone sets gid = uid."""
    user, sep, group = spec.partition(":")
    if not user:
        raise InvalidArgument(f"invalid --chown value {spec!r}")
    if user.isdigit():
        uid = int(user)
    else:
        row = next((r for r in _table(root, "/etc/passwd") if len(r) >= 3 and r[0] == user), None)
        if row is None or not row[2].isdigit():
            raise InvalidArgument(f"unable to convert uid/gid chown string to host mapping: can't find uid for "
                                  f"user {user}: no such user: {user}")
        uid = int(row[2])
    if not sep or not group:
        return uid, uid
    if group.isdigit():
        return uid, int(group)
    grow = next((r for r in _table(root, "/etc/group") if len(r) >= 3 and r[0] == group), None)
    if grow is None or not grow[2].isdigit():
        raise InvalidArgument(f"unable to convert uid/gid chown string to host mapping: can't find gid for "
                              f"group {group}: no such group: {group}")
    return uid, int(grow[2])


def _copy_data(src: str, dst_fd: int, size: int) -> None:
    fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        off = 0
        while off < size:
            try:
                n = os.sendfile(dst_fd, fd, off, size - off)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOSYS):
                    raise
                os.lseek(fd, off, os.SEEK_SET)
                while True:
                    data = os.read(fd, 1 << 20)
                    if not data:
                        return
                    os.write(dst_fd, data)
            if n == 0:
                return
            off += n
    finally:
        os.close(fd)


class Writer:
    """Writes into the mounted root ``root`` of a step's snapshot."""

    def __init__(self, root: str, owner: tuple[int, int] | None, chmod: int | None) -> None:
        self.root = root
        self.owner = owner  # None: keep the source's owner
        self.chmod = chmod
        self._dirs: dict[str, str] = {}

    # ---- paths
    def host(self, cpath: str) -> str:
        return resolve_in_root(self.root, cpath)

    def _cpath_of(self, host: str) -> str:
        rel = os.path.relpath(host, self.root)
        return "/" if rel == "." else "/" + rel

    def mkdirs(self, cpath: str) -> str:
        """mkdir -p in the image; returns the host path of the (resolved) directory."""
        cpath = posixpath.normpath("/" + cpath)
        cached = self._dirs.get(cpath)
        if cached is not None:
            return cached
        cur_host = self.root
        for comp in [p for p in cpath.split("/") if p]:
            nxt = resolve_in_root(self.root, posixpath.join(self._cpath_of(cur_host), comp))
            try:
                st = os.stat(nxt)
            except FileNotFoundError:
                os.mkdir(nxt, 0o755)
                uid, gid = self.owner or (0, 0)
                os.chown(nxt, uid, gid)
                os.chmod(nxt, 0o755)
            else:
                if not stat.S_ISDIR(st.st_mode):
                    raise InvalidArgument(f"cannot create directory {cpath}: {self._cpath_of(nxt)} is not a "
                                          "directory in the image")
            cur_host = nxt
        self._dirs[cpath] = cur_host
        return cur_host

    def is_dir(self, cpath: str) -> bool:
        return os.path.isdir(self.host(cpath))

    # ---- entries
    def _owner(self, s: Src) -> tuple[int, int]:
        return self.owner if self.owner is not None else (s.uid, s.gid)

    def _mode(self, s: Src) -> int:
        return self.chmod if self.chmod is not None else s.mode

    def _clear(self, host: str, is_dir: bool) -> bool:
        """Make room for an entry; returns True when a directory is already there (and one is wanted)."""
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if is_dir:
                return True
            raise InvalidArgument(f"cannot overwrite directory {self._cpath_of(host)} with non-directory")
        os.unlink(host)
        return False

    def put(self, s: Src, dest_cpath: str, parent_host: str | None = None) -> str:
        """Write one entry at ``dest_cpath`` (``parent_host`` skips resolving its parent); returns its host path
        (for a directory reached through a symlink of the image, the directory it points to)."""
        base = posixpath.basename(dest_cpath.rstrip("/"))
        parent = parent_host if parent_host is not None else self.mkdirs(posixpath.dirname(dest_cpath.rstrip("/")))
        host = os.path.join(parent, base)
        uid, gid = self._owner(s)
        if s.kind == "dir":
            try:
                st: os.stat_result | None = os.lstat(host)
            except FileNotFoundError:
                st = None
            if st is not None and stat.S_ISLNK(st.st_mode):
                target = resolve_in_root(self.root, self._cpath_of(host))
                if os.path.isdir(target):
                    return target  # merged-usr and the like: keep the image's link, fill what it points to
                os.unlink(host)
                st = None
            if st is not None and not stat.S_ISDIR(st.st_mode):
                os.unlink(host)
                st = None
            if st is None:
                os.mkdir(host, 0o700)
            os.chown(host, uid, gid)
            os.chmod(host, self._mode(s))
            return host
        self._clear(host, False)
        if s.kind == "symlink":
            os.symlink(s.link, host)
            os.chown(host, uid, gid, follow_symlinks=False)
            os.utime(host, ns=(s.mtime * 1_000_000_000,) * 2, follow_symlinks=False)
            return host
        fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if s.size:
                _copy_data(s.host, fd, s.size)
            os.fchown(fd, uid, gid)
            os.fchmod(fd, self._mode(s))
            os.utime(fd, ns=(s.mtime * 1_000_000_000,) * 2)
        finally:
            os.close(fd)
        return host

    def put_tree(self, items: Iterable[Src], dest_cdir: str) -> None:
        """A directory's contents (``items`` parents first, ``rel`` below the source root) into ``dest_cdir``."""
        root_host = self.mkdirs(dest_cdir)
        dirs: dict[str, str] = {"": root_host}
        times: list[tuple[str, int]] = []
        for s in items:
            if not s.rel:
                continue
            parent_rel = posixpath.dirname(s.rel)
            parent_host = dirs.get(parent_rel)
            if parent_host is None:
                parent_host = self.mkdirs(posixpath.join(dest_cdir, parent_rel))
                dirs[parent_rel] = parent_host
            h = self.put(s, posixpath.join(dest_cdir, s.rel), parent_host)
            if s.kind == "dir":
                dirs[s.rel] = h
                times.append((h, s.mtime))
        for h, mtime in reversed(times):  # directory times after their contents
            with contextlib.suppress(OSError):
                os.utime(h, ns=(mtime * 1_000_000_000,) * 2)

    def put_bytes(self, data: bytes, dest_cpath: str, mode: int, mtime: int) -> None:
        parent = self.mkdirs(posixpath.dirname(dest_cpath.rstrip("/")))
        host = os.path.join(parent, posixpath.basename(dest_cpath.rstrip("/")))
        self._clear(host, False)
        uid, gid = self.owner or (0, 0)
        fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchown(fd, uid, gid)
            os.fchmod(fd, self.chmod if self.chmod is not None else mode)
            os.utime(fd, ns=(mtime * 1_000_000_000,) * 2)
        finally:
            os.close(fd)

    def extract(self, archive: str, dest_cdir: str) -> None:
        """ADD of a local archive: unpack it into ``dest_cdir`` (owners and modes from the archive)."""
        from matou.layers.apply import apply_tar_into

        target = self.mkdirs(dest_cdir)
        with open(archive, "rb") as f:
            stream: BinaryIO = f
            head = f.read(6)
            f.seek(0)
            if head[:3] == b"BZh":
                stream = bz2.BZ2File(f)  # type: ignore[assignment]
            elif head[:6] == b"\xfd7zXZ\x00":
                stream = lzma.LZMAFile(f)  # type: ignore[assignment]
            apply_tar_into(stream, target, whiteouts="none")


def is_archive(path: str) -> bool:
    """Whether ADD should unpack this local file: a tar, plain or compressed (gzip, bzip2, xz, zstd)."""
    import gzip

    try:
        with open(path, "rb") as f:
            head = f.read(6)
            f.seek(0)
            if head[:2] == b"\x1f\x8b":
                opener: BinaryIO = gzip.GzipFile(fileobj=f)  # type: ignore[assignment]
            elif head[:3] == b"BZh":
                opener = bz2.BZ2File(f)  # type: ignore[assignment]
            elif head[:6] == b"\xfd7zXZ\x00":
                opener = lzma.LZMAFile(f)  # type: ignore[assignment]
            elif head[:4] == b"\x28\xb5\x2f\xfd":
                import zstandard

                opener = zstandard.ZstdDecompressor().stream_reader(f)  # type: ignore[assignment]
            else:
                opener = f
            block = opener.read(512)
    except (OSError, EOFError, ValueError, lzma.LZMAError):
        return False
    except Exception:  # a corrupt compressed stream is not an archive, just a file
        return False
    if len(block) < 512:
        return False
    from matou.layers import tarfmt as T

    return block[257:262] == b"ustar" or T.checksum_ok(block)


def tree_of_dir(host_root: str, rel_root: str = "") -> list[Src]:
    """A host directory's entries (``COPY --from`` an image), parents first, names sorted."""
    out: list[Src] = []
    stack = [(host_root, "")]
    while stack:
        d, rel = stack.pop()
        try:
            names = sorted(os.listdir(d))
        except NotADirectoryError:
            continue
        subdirs = []
        for n in names:
            p = os.path.join(d, n)
            st = os.lstat(p)
            r = f"{rel}/{n}" if rel else n
            if stat.S_ISDIR(st.st_mode):
                out.append(Src(p, r, "dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)))
                subdirs.append((p, r))
            elif stat.S_ISLNK(st.st_mode):
                out.append(Src(p, r, "symlink", 0o777, st.st_uid, st.st_gid, int(st.st_mtime), 0, os.readlink(p)))
            elif stat.S_ISREG(st.st_mode):
                out.append(Src(p, r, "file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime),
                               st.st_size))
        stack.extend(reversed(subdirs))
    return out


def src_of_path(host: str, rel: str = "") -> Src:
    st = os.lstat(host)
    if stat.S_ISDIR(st.st_mode):
        return Src(host, rel, "dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime))
    if stat.S_ISLNK(st.st_mode):
        return Src(host, rel, "symlink", 0o777, st.st_uid, st.st_gid, int(st.st_mtime), 0, os.readlink(host))
    return Src(host, rel, "file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime), st.st_size)
