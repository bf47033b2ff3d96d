"""Trees to tars: overlay upper dir -> layer tar (``write_diff``), any directory or selected paths -> tar
(``write_tree``: export, ``docker cp`` out, COPY), and ``docker diff`` (``changes``).

Output is deterministic for the same tree, because build-cache hits and layer dedup compare bytes: entries in
depth-first order with each directory's names sorted bytewise, ustar headers with PAX records only where a field
does not fit (names or link targets over 100 bytes, big ids, sizes or times) and for xattrs
(``SCHILY.xattr.*``, sorted), numeric uid/gid with empty uname/gname, mtimes truncated to seconds (as Docker
does; no atime/ctime), no entry for the root itself, the end marker only (two zero blocks, no record padding),
and deterministic compression (see ``compression``).

Entry types written: regular files, directories, symlinks, char/block devices, fifos; files that share an inode
in the tree become tar hardlinks to the first name. Sockets are skipped (tar has no type for them), as Docker does.
``trusted.overlay.*`` xattrs are never written: in ``write_diff`` they are overlay's own metadata, translated
back to OCI whiteouts (whiteout char device 0/0 -> ``.wh.NAME``; ``trusted.overlay.opaque=y`` -> a
``.wh..wh..opq`` entry right after the directory). Upper dirs that use redirect_dir or metacopy cannot be
expressed as a layer and are refused (Unsupported).

All reads go through directory fds with O_NOFOLLOW, so a running container swapping a file for a symlink
cannot make the writer read outside the tree.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import queue
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from matou.errors import InvalidArgument, NotFound, Unsupported
from matou.layers import tarfmt as T
from matou.layers.compression import compressing_writer

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a file swapped for a fifo behind our back must not hang the writer
O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
OPAQUE_XATTR = b"trusted.overlay.opaque"
OVERLAY_PREFIX = b"trusted.overlay."
WH_PREFIX = b".wh."
WH_OPAQUE = b".wh..wh..opq"
CHUNK = 1 << 20
SMALL = 64 << 10  # files read in one go and emitted with their header
MAX_LINK_HOPS = 40


@dataclass(frozen=True)
class DiffResult:
    diff_id: str  # sha256 of the uncompressed tar
    size: int  # uncompressed tar bytes
    compressed_digest: str | None  # sha256 of the bytes written to out; None when not compressed
    compressed_size: int  # bytes written to out


class _Sink:
    """Counts (and, for compressed output, hashes) what reaches ``out``."""

    def __init__(self, out: BinaryIO, hashing: bool) -> None:
        self._out = out
        self.hash = hashlib.sha256()
        self._hashing = hashing
        self.size = 0

    def write(self, data: bytes) -> int:
        if self._hashing:
            self.hash.update(data)
        self.size += len(data)
        self._out.write(data)
        return len(data)

    def flush(self) -> None:
        with contextlib.suppress(AttributeError):
            self._out.flush()


class TarWriter:
    """Serialises entries into ``out`` (optionally compressed), hashing both streams.

    The caller's thread walks and reads the tree; a second thread hashes, compresses and writes ``out`` (isal,
    zstandard and hashlib release the GIL), through a bounded queue of ~1 MiB chunks.
    """

    def __init__(self, out: BinaryIO, compression: str | None) -> None:
        self._compressed = compression not in (None, "plain")
        self._sink = _Sink(out, self._compressed)
        self._target: BinaryIO = compressing_writer(self._sink, compression) if self._compressed \
            else self._sink  # type: ignore[assignment,arg-type]
        self._hash = hashlib.sha256()
        self._size = 0
        self._buf = bytearray()
        self._links: dict[tuple[int, int], bytes] = {}
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="matou-layer-write", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            data = self._q.get()
            if data is None:
                return
            if self._error is not None:
                continue  # keep taking chunks so the producer never blocks on a dead consumer
            try:
                self._hash.update(data)
                self._size += len(data)
                self._target.write(data)
            except BaseException as e:
                self._error = e

    def _send(self, data: bytes | memoryview) -> None:
        if self._error is not None:
            raise self._error
        self._q.put(data)  # type: ignore[arg-type]

    def _emit(self, data: bytes | memoryview) -> None:
        if not self._buf and len(data) >= CHUNK:  # big file data: no copy through the buffer
            self._send(data)
            return
        self._buf += data
        if len(self._buf) >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            self._send(bytes(self._buf))
            self._buf.clear()

    def abort(self) -> None:
        """Stop the writer thread after an error elsewhere (idempotent)."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()

    def add(self, name: bytes, st: os.stat_result, *, dfd: int, base: bytes,
            xattrs: list[tuple[bytes, bytes]] | None, is_dir: bool, linkname: bytes = b"") -> None:
        """One entry for the file ``base`` in directory ``dfd`` (already lstat'ed as ``st``); ``xattrs`` None:
        read them here."""
        if xattrs is None and not stat.S_ISREG(st.st_mode):
            xattrs = _xattrs(dfd, base)
        mode = st.st_mode
        common = {"mode": stat.S_IMODE(mode), "uid": st.st_uid, "gid": st.st_gid, "mtime": st.st_mtime_ns // 1_000_000_000}
        if is_dir:
            self._emit(T.build_header(name + b"/", size=0, typeflag=T.DIRTYPE, xattrs=xattrs, **common))
            return
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1:
            first = self._links.get(key)
            if first is not None:
                self._emit(T.build_header(name, size=0, typeflag=T.LNKTYPE, linkname=first, **common))
                return
        if stat.S_ISREG(mode):
            if not self._regular(name, st, dfd, base, xattrs, common):
                return
        elif stat.S_ISLNK(mode):
            target = linkname or os.readlink(base, dir_fd=dfd)
            self._emit(T.build_header(name, size=0, typeflag=T.SYMTYPE, linkname=target, xattrs=xattrs, **common))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            tf = T.CHRTYPE if stat.S_ISCHR(mode) else T.BLKTYPE
            self._emit(T.build_header(name, size=0, typeflag=tf, devmajor=os.major(st.st_rdev),
                                      devminor=os.minor(st.st_rdev), xattrs=xattrs, **common))
        elif stat.S_ISFIFO(mode):
            self._emit(T.build_header(name, size=0, typeflag=T.FIFOTYPE, xattrs=xattrs, **common))
        else:
            return  # sockets and anything else: skipped
        if st.st_nlink > 1:
            self._links[key] = name

    def add_empty(self, name: bytes, *, mode: int, uid: int, gid: int, mtime: int) -> None:
        """A marker file (whiteouts)."""
        self._emit(T.build_header(name, mode=mode, uid=uid, gid=gid, size=0, mtime=mtime, typeflag=T.REGTYPE))

    def _regular(self, name: bytes, st: os.stat_result, dfd: int, base: bytes,
                 xattrs: list[tuple[bytes, bytes]] | None, common: dict[str, int]) -> bool:
        size = st.st_size
        try:
            fd = os.open(base, O_FILE, dir_fd=dfd)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO):
                return False  # removed or swapped for a link since we looked (a running container): skip it
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False  # swapped for something else: skip it
            if xattrs is None:  # read through the fd we hold: cheaper than a path lookup
                xattrs = _xattrs(dfd, base, fd)
            header = T.build_header(name, size=size, typeflag=T.REGTYPE, xattrs=xattrs, **common)
            if size <= SMALL:
                data = os.read(fd, size) if size else b""
                if len(data) < size:  # the file shrank while we read it: keep the header's promise with zeros
                    data += bytes(size - len(data))
                self._emit(header + data + bytes(-size % T.BLOCK))
                return True
            self._emit(header)
            left = size
            while left:
                data = os.read(fd, min(left, CHUNK))
                if not data:
                    data = bytes(min(left, CHUNK))
                self._emit(data)
                left -= len(data)
            pad = -size % T.BLOCK
            if pad:
                self._emit(bytes(pad))
        finally:
            os.close(fd)
        return True

    def close(self) -> DiffResult:
        self._emit(bytes(2 * T.BLOCK))
        self._flush()
        self.abort()
        if self._error is not None:
            raise self._error
        if self._compressed:
            self._target.close()
        self._sink.flush()
        diff_id = "sha256:" + self._hash.hexdigest()
        if self._compressed:
            return DiffResult(diff_id, self._size, "sha256:" + self._sink.hash.hexdigest(), self._sink.size)
        return DiffResult(diff_id, self._size, None, self._sink.size)


def _xattrs(dfd: int, base: bytes, fd: int | None = None) -> list[tuple[bytes, bytes]]:
    """The entry's xattrs, sorted, without overlay's own."""
    target: int | bytes = fd if fd is not None else b"/proc/self/fd/%d/%s" % (dfd, base)
    nofollow = fd is None  # an fd is the file itself; a path must not follow a final symlink
    try:
        names = os.listxattr(target, follow_symlinks=not nofollow)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.ENOENT):
            return []
        raise
    out = []
    for n in sorted(names):
        bn = os.fsencode(n)
        if bn.startswith(OVERLAY_PREFIX):
            continue
        try:
            out.append((bn, os.getxattr(target, n, follow_symlinks=not nofollow)))
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOTSUP):
                raise
    return out


def _overlay_xattr(dfd: int, base: bytes, name: bytes) -> bytes | None:
    try:
        return os.getxattr(b"/proc/self/fd/%d/%s" % (dfd, base), name, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP):
            return None
        raise


def _sorted_names(dfd: int) -> list[bytes]:
    return sorted(os.fsencode(n) for n in os.listdir(dfd))


def _walk(w: TarWriter, dfd: int, prefix: bytes, *, overlay: bool) -> None:
    """Depth-first, names sorted, iterative (no recursion limit on deep trees)."""
    stack: list[tuple[int, bytes, Iterator[bytes]]] = [(os.dup(dfd), prefix, iter(_sorted_names(dfd)))]
    try:
        while stack:
            cur, pre, names = stack[-1]
            base = next(names, None)
            if base is None:
                os.close(cur)
                stack.pop()
                continue
            name = pre + b"/" + base if pre else base
            try:
                st = os.stat(base, dir_fd=cur, follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted while we walk (a running container)
            mode = st.st_mode
            if overlay and stat.S_ISCHR(mode) and st.st_rdev == 0:
                head, _, tail = name.rpartition(b"/")
                w.add_empty((head + b"/" if head else b"") + WH_PREFIX + tail, mode=0o600, uid=st.st_uid,
                            gid=st.st_gid, mtime=st.st_mtime_ns // 1_000_000_000)
                continue
            if stat.S_ISSOCK(mode):
                continue
            if stat.S_ISDIR(mode):
                sub = os.open(base, O_DIR, dir_fd=cur)
                try:
                    if overlay:
                        _check_overlay_dir(sub, name)
                    w.add(name, st, dfd=cur, base=base, xattrs=_xattrs(cur, base, sub), is_dir=True)
                    if overlay and _xattr_value(sub, OPAQUE_XATTR) == b"y":
                        w.add_empty(name + b"/" + WH_OPAQUE, mode=stat.S_IMODE(mode) & 0o777, uid=st.st_uid,
                                    gid=st.st_gid, mtime=st.st_mtime_ns // 1_000_000_000)
                    stack.append((sub, name, iter(_sorted_names(sub))))
                except BaseException:
                    os.close(sub)
                    raise
                continue
            if overlay and stat.S_ISREG(mode) and _overlay_xattr(cur, base, b"trusted.overlay.metacopy") is not None:
                raise Unsupported(f"{name.decode(errors='replace')} is a metacopy-only file: the overlay upper "
                                  "dir must not use metacopy=on to be written as a layer")
            w.add(name, st, dfd=cur, base=base, xattrs=None if stat.S_ISREG(mode) else _xattrs(cur, base),
                  is_dir=False)
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def _xattr_value(fd: int, name: bytes) -> bytes | None:
    try:
        return os.getxattr(fd, name)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP):
            return None
        raise


def _check_overlay_dir(fd: int, name: bytes) -> None:
    if _xattr_value(fd, b"trusted.overlay.redirect") is not None:
        raise Unsupported(f"{name.decode(errors='replace')} was renamed with redirect_dir=on: the overlay upper "
                          "dir cannot be written as a layer unless mounted with redirect_dir=off")


def write_diff(upper: str, out: BinaryIO, *, compression: str | None = "gzip") -> DiffResult:
    """An overlay upper directory as a layer tar, whiteouts and opaque directories translated to OCI markers."""
    root = _open_root(upper)
    w = TarWriter(out, compression)
    try:
        _walk(w, root, b"", overlay=True)
        return w.close()
    finally:
        w.abort()
        os.close(root)


def _open_root(path: str) -> int:
    try:
        return os.open(path, O_DIR)
    except FileNotFoundError:
        raise NotFound(f"directory not found: {path}")
    except (NotADirectoryError, OSError) as e:
        if isinstance(e, NotADirectoryError) or e.errno == errno.ELOOP:
            raise InvalidArgument(f"not a directory: {path}")
        raise


def _components(path: str) -> list[bytes]:
    return [c for c in os.fsencode(path).split(b"/") if c and c != b"."]


def _resolve_parent(root: int, comps: list[bytes]) -> tuple[int, bytes, list[bytes]]:
    """Open the directory holding the last component, following symlinks as if root were '/'.

    Returns (fd, base, the directory's resolved components); the caller closes fd. ``comps`` must not be empty.
    """
    todo = list(comps[:-1])
    resolved: list[bytes] = []
    hops = 0
    stack = [os.dup(root)]
    try:
        while todo:
            c = todo.pop(0)
            if c == b"..":
                if len(stack) > 1:
                    os.close(stack.pop())
                    resolved.pop()
                continue
            cur = stack[-1]
            try:
                fd = os.open(c, O_DIR, dir_fd=cur)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(c, dir_fd=cur, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise OSError(errno.ELOOP, "too many levels of symbolic links")
                target = os.readlink(c, dir_fd=cur)
                if target.startswith(b"/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                    resolved.clear()
                todo[:0] = [t for t in target.split(b"/") if t and t != b"."]
                continue
            stack.append(fd)
            resolved.append(c)
        return stack.pop(), comps[-1], resolved
    finally:
        for fd in stack:
            os.close(fd)


def write_tree(root: str, out: BinaryIO, *, compression: str | None = None, paths: list[str] | None = None,
               rebase: str | None = None, follow_top_symlink: bool = False) -> DiffResult:
    """A plain directory, or selected paths in it, as a tar (export, ``docker cp`` out, COPY).

    ``paths`` are relative to ``root`` (a leading "/" means root); symlinks in their parent directories are
    followed as if ``root`` were "/", never out of it. Without ``rebase`` each path's entries keep their path
    under ``root``; with ``rebase`` (one path only) the selected path is renamed to it, and ``rebase`` "" or "."
    means "its contents only" (``docker cp dir/.``). ``follow_top_symlink`` archives what a selected symlink
    points to (again inside ``root``) under the symlink's name (``docker cp -L``). No entry is written for
    ``root`` itself. Missing paths raise NotFound.
    """
    rootfd = _open_root(root)
    w = TarWriter(out, compression)
    try:
        if paths is None:
            _walk(w, rootfd, b"", overlay=False)
            return w.close()
        if rebase is not None and len(paths) != 1:
            raise InvalidArgument("rebase needs exactly one path")
        seen: set[str] = set()
        for p in paths:
            if p in seen:
                continue
            seen.add(p)
            _write_path(w, rootfd, p, rebase, follow_top_symlink)
        return w.close()
    finally:
        w.abort()
        os.close(rootfd)


def _write_path(w: TarWriter, rootfd: int, path: str, rebase: str | None, follow: bool) -> None:
    comps = _components(path)
    if b".." in comps:
        resolved = []
        for c in comps:
            if c == b"..":
                if resolved:
                    resolved.pop()
            else:
                resolved.append(c)
        comps = resolved
    prefix = os.fsencode(rebase).strip(b"/") if rebase is not None else b"/".join(comps)
    if rebase is not None and prefix in (b"", b"."):
        prefix = b""
    if not comps:  # the root itself
        if prefix:
            st = os.fstat(rootfd)
            w.add(prefix, st, dfd=rootfd, base=b".", xattrs=_xattrs(rootfd, b".", rootfd), is_dir=True)
        _walk(w, rootfd, prefix, overlay=False)
        return
    try:
        dfd, base, where = _resolve_parent(rootfd, comps)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"no such file or directory in the tree: {path}")
    try:
        hops = 0
        while True:
            try:
                st = os.stat(base, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                raise NotFound(f"no such file or directory in the tree: {path}")
            if not (follow and stat.S_ISLNK(st.st_mode)):
                break
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise InvalidArgument(f"too many levels of symbolic links: {path}")
            target = os.readlink(base, dir_fd=dfd)
            tcomps = _clamp(([] if target.startswith(b"/") else where)
                            + [c for c in target.split(b"/") if c and c != b"."])
            os.close(dfd)
            if not tcomps:  # the link points at the root
                dfd, base = os.dup(rootfd), b"."
                st = os.fstat(dfd)
                break
            try:
                dfd, base, where = _resolve_parent(rootfd, tcomps)
            except (FileNotFoundError, NotADirectoryError):
                dfd = -1
                raise NotFound(f"symbolic link {path} points to a missing file")
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(base, O_DIR, dir_fd=dfd)
            try:
                if prefix:
                    w.add(prefix, st, dfd=dfd, base=base, xattrs=_xattrs(dfd, base, sub), is_dir=True)
                _walk(w, sub, prefix, overlay=False)
            finally:
                os.close(sub)
        elif not stat.S_ISSOCK(st.st_mode):
            if not prefix:
                raise InvalidArgument(f"{path} is not a directory: it cannot be archived as contents only")
            w.add(prefix, st, dfd=dfd, base=base, xattrs=_xattrs(dfd, base), is_dir=False)
    finally:
        if dfd >= 0:
            os.close(dfd)


def _clamp(comps: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for c in comps:
        if c == b"..":
            if out:
                out.pop()
        else:
            out.append(c)
    return out


def changes(upper: str, lowers: list[str] | None = None) -> list[tuple[str, str]]:
    """``docker diff`` of an overlay upper dir: sorted [("A"|"C"|"D", "/path")].

    Whiteouts are "D". Without ``lowers`` a directory present in upper is "C" unless it is opaque ("A"), and a
    file is "A" unless overlay recorded a copy-up origin ("C"). With ``lowers`` (top first), a path is "C" when a
    lower layer has it and "A" otherwise.
    """
    root = _open_root(upper)
    lower_fds = [_open_root(p) for p in lowers or []]
    out: list[tuple[str, str]] = []
    try:
        stack: list[tuple[int, bytes]] = [(os.dup(root), b"")]
        while stack:
            dfd, pre = stack.pop()
            try:
                for base in _sorted_names(dfd):
                    name = pre + b"/" + base
                    try:
                        st = os.stat(base, dir_fd=dfd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    shown = os.fsdecode(name)
                    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                        out.append(("D", shown))
                        continue
                    in_lower = _in_lowers(lower_fds, name) if lowers is not None else None
                    if stat.S_ISDIR(st.st_mode):
                        sub = os.open(base, O_DIR, dir_fd=dfd)
                        if in_lower is None:
                            kind = "A" if _overlay_xattr(dfd, base, OPAQUE_XATTR) == b"y" else "C"
                        else:
                            kind = "C" if in_lower else "A"
                        out.append((kind, shown))
                        stack.append((sub, name))
                        continue
                    if in_lower is None:
                        kind = "C" if _overlay_xattr(dfd, base, b"trusted.overlay.origin") is not None else "A"
                    else:
                        kind = "C" if in_lower else "A"
                    out.append((kind, shown))
            finally:
                os.close(dfd)
    finally:
        os.close(root)
        for fd in lower_fds:
            os.close(fd)
    out.sort(key=lambda kv: kv[1])
    return out


def _in_lowers(lower_fds: list[int], name: bytes) -> bool:
    rel = name.lstrip(b"/")
    for fd in lower_fds:
        try:
            st = os.stat(rel, dir_fd=fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            continue
        return not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0)
    return False
