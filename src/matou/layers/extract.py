"""Write tar entries into a directory without ever leaving it, with few syscalls per entry.

Every path is opened relative to a directory fd, one component at a time with O_NOFOLLOW, so neither a name
nor a symlink nor a hardlink can reach outside the target:

- names: absolute names, ``..`` components, empty names and NUL bytes are refused (GNU tar refuses ``..`` too);
- layer mode (``follow_links=False``): a parent component that is a symlink is refused, since a layer tar made
  from a real tree never writes through a link;
- tree mode (``follow_links=True``, for ``docker cp`` into a container and ADD of a local tar): symlinks in
  parent components are followed as if the target were ``/`` (like openat2's RESOLVE_IN_ROOT), so merged-usr
  links such as ``/lib -> usr/lib`` work, and a directory entry onto a symlink to a directory keeps the link;
- an existing final component is never written through: files are created with O_CREAT|O_EXCL and anything in
  the way is removed first (a directory entry onto a directory only updates its metadata);
- hardlink targets are resolved by the same rules, and linked with linkat() without following a final symlink.

Entry types: regular files (also ``7``), hardlinks, symlinks, directories, char/block devices, fifos. Metadata:
owner (numeric ids), mode including setuid/setgid/sticky, mtime/atime in ns, xattrs (``trusted.overlay.*`` from
an archive is dropped: overlay metadata only comes from whiteout markers). Directory modes and times are set at the
end, after their contents.

Whiteouts (``.wh.NAME``, ``.wh..wh..opq``): "overlay" makes overlay whiteouts (char device 0/0, and the
``trusted.overlay.opaque=y`` xattr), "delete" removes the path (and for opaque markers, everything in the
directory this archive did not write), "none" extracts them as ordinary files.

Overlay whiteouts are char devices, so applying a layer needs CAP_MKNOD (root, as the daemon runs).

Speed (layer mode): a plain small regular file whose header and data lie in the current decompressed chunk takes
a fast path (``tarread.entries(fast=...)``: no Entry object, no generic dispatch). Once a layer has shown
``SPAWN_AFTER`` small files, a worker process (``worker``) takes over creating small files whenever it keeps up;
otherwise the applier creates them itself (open O_CREAT|O_EXCL|O_NOFOLLOW relative to a cached directory fd,
one write, owner/mode only when they differ from what creation gave, futimens, close). Every name decision stays
here: the worker gets a checked directory fd and one path component. Because the worker creates files later
than the archive order says, the applier waits for it (``_sync``) before anything that could depend on a file
it may not have made yet: the same path again, a hardlink to it, a path below it, removing a directory, and
directory times at the end. Big files are written here straight from the decompressed chunks.

An :class:`Applier` belongs to one call: the fd cache and deferred metadata live on it, never in module state.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat

from matou.errors import InvalidArgument, SystemError_
from matou.layers import tarfmt as T
from matou.layers import worker as W
from matou.layers.stream import TarStream
from matou.layers.tarread import Entry, entries

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
WH_PREFIX = b".wh."
WH_META_PREFIX = b".wh..wh."
WH_OPAQUE = b".wh..wh..opq"
OPAQUE_XATTR = b"trusted.overlay.opaque"
OVERLAY_XATTR_PREFIX = b"trusted.overlay."
MAX_LINK_HOPS = 40
FD_CACHE = 64
BIG_FILE = 1 << 62  # preallocation measured slower here (tmpfs zeroes pages first); kept as a knob


SPAWN_AFTER = 512  # small files created here before a layer is deemed worth a worker process
WAIT_FOR_WORKER = False  # tests: block until the worker is up, so that the files after it go through it
MAX_PENDING = 1 << 16  # names handed to the worker between two waits for it (bounds the bookkeeping)


class Refusal(Exception):
    """An entry that must not be applied; turned into InvalidArgument naming the entry."""


def clean_name(raw: bytes, what: str = "name") -> bytes:
    """The canonical form of an archive path ("a/b", no "./", "//" or trailing "/"), refusing anything that
    could leave the target. The archive root is b"".
    """
    if raw.startswith(b"/"):
        if not raw.strip(b"/"):
            return b""  # "/" alone names the archive root (Python's tarfile writes it for arcname "")
        raise Refusal(f"absolute {what}s are not allowed")
    name = raw
    while name.startswith(b"./"):
        name = name[2:].lstrip(b"/")
    if name.endswith(b"/"):
        name = name.rstrip(b"/")
    if b"\0" in name:
        raise Refusal(f"{what} contains a NUL byte")
    padded = b"/" + name + b"/"
    if b"/./" in padded or b"/../" in padded or b"//" in padded:  # rare: look at every component
        parts = [p for p in name.split(b"/") if p and p != b"."]
        if b".." in parts:
            raise Refusal(f"'..' in a {what} could write outside the target")
        name = b"/".join(parts)
    return name


def _read_umask() -> int:
    """The process umask, read without changing it (os.umask would race with other threads)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _lexical_join(base: list[bytes], target: bytes) -> bytes:
    """Where a symlink in directory ``base`` points, clamped at the root like RESOLVE_IN_ROOT."""
    out = [] if target.startswith(b"/") else list(base)
    for comp in target.split(b"/"):
        if comp in (b"", b"."):
            continue
        if comp == b"..":
            if out:
                out.pop()
            continue
        out.append(comp)
    return b"/".join(out)


def set_xattrs(target: int | bytes, xattrs: list[tuple[bytes, bytes]]) -> None:
    for name, value in xattrs:
        if name.startswith(OVERLAY_XATTR_PREFIX):
            continue  # overlay metadata from an archive could redirect lookups: only whiteouts make it
        try:
            if isinstance(target, int):
                os.setxattr(target, name, value)
            else:
                os.setxattr(target, name, value, follow_symlinks=False)
        except OSError as err:
            # a filesystem without user xattrs, or user.* on a symlink: skipped, as GNU tar warns and goes on
            if err.errno not in (errno.ENOTSUP, errno.EPERM):
                raise


def entry_error(e: Entry | bytes, err: OSError) -> Exception:
    """The user-facing error for a system call that failed on an entry (or on the entry with that raw name)."""
    shown = e.describe() if isinstance(e, Entry) else e.decode("utf-8", "backslashreplace")
    if err.errno == errno.ENAMETOOLONG:
        return InvalidArgument(f"refusing tar entry {shown!r}: a name in it is too long for the filesystem")
    if err.errno == errno.EINVAL:  # e.g. a malformed security.capability value
        return InvalidArgument(f"refusing tar entry {shown!r}: the system rejects it ({err.strerror})")
    if err.errno == errno.ENOSPC:
        return SystemError_(f"no space left on device while writing tar entry {shown!r}")
    return SystemError_(f"cannot apply tar entry {shown!r}: {err.strerror or err}")


class Applier:
    """Applies the entries of one tar stream to ``root``.

    Directory fds are cached by archive path; each entry also knows its *real* path (its location with the
    symlinks it went through resolved, which differs from the archive path only when links are followed).
    Deferred metadata, created paths and the whiteout bookkeeping use real paths, so aliases agree.
    """

    def __init__(self, root: str, *, follow_links: bool, whiteouts: str, track_created: bool,
                 parallel: bool = False) -> None:
        if whiteouts not in ("overlay", "delete", "none"):
            raise InvalidArgument(f"unknown whiteout mode {whiteouts!r}: expected overlay, delete or none")
        self.root = root
        self.follow = follow_links
        self.whiteouts = whiteouts
        self.root_fd = os.open(root, O_DIR)
        st = os.fstat(self.root_fd)
        # archive dir path -> (fd, gid its new files get, real path)
        self._dirs: dict[bytes, tuple[int, int, bytes]] = {b"": (self.root_fd, self._child_gid(st), b"")}
        self._retired: list[int] = []  # evicted fds, closed between entries (a caller may still hold one)
        self._deferred: dict[bytes, tuple[int, int, int]] = {}  # real dir path -> (mode, atime_ns, mtime_ns)
        self.created: list[bytes] | None = [] if track_created else None
        self._unpacked: set[bytes] | None = set() if whiteouts == "delete" else None
        # a worker process for small files: layer mode only, where an archive path is its real path
        self._layer = not follow_links and not track_created and whiteouts == "overlay"
        self._may_spawn = parallel and self._layer
        self._worker: W.FileWorker | None = None
        self._pending: set[bytes] = set()  # paths handed to the worker that may not exist yet
        # directories this call made: a file entry onto one goes the general way (removing it is ours to do);
        # the worker replaces anything else that is in a file's way itself (unlink, then create)
        self._made_dirs: set[bytes] = set()
        self._small = 0
        self.umask = _read_umask()
        self.euid = os.geteuid()
        self.egid = os.getegid()
        try:
            vfs = os.statvfs(root)
            self.budget: int | None = vfs.f_bavail * vfs.f_frsize
            self._bsize = max(vfs.f_frsize, 512)
        except OSError:
            self.budget = None
            self._bsize = 4096

    def _child_gid(self, st: os.stat_result) -> int:
        """The gid a file created in this directory gets (setgid directories pass theirs on)."""
        return st.st_gid if st.st_mode & stat.S_ISGID else os.getegid()

    # -- directory fds --------------------------------------------------------------------------------------
    def _stop_worker(self) -> None:
        """Kill the worker (if any) and wait for it: nothing is written after this returns."""
        if self._worker is not None:
            self._worker.abort()
            self._worker = None
        self._pending.clear()

    def _sync(self) -> None:
        """Wait until every file handed to the worker exists: the next operation depends on one of them."""
        if self._worker is not None:
            self._worker.sync()
        self._pending.clear()

    def _worker_error(self, f: W.WorkerFailure) -> Exception:
        if isinstance(f.tag, (Entry, bytes)):
            return entry_error(f.tag, OSError(f.errno, f.message))
        return SystemError_(f"cannot apply the layer: {f.message}")

    def _close_retired(self) -> None:
        while self._retired:
            os.close(self._retired.pop())

    def close(self) -> None:
        self._stop_worker()
        self._close_retired()
        for fd, _gid, _real in self._dirs.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._dirs.clear()

    def _forget_dirs(self, real: bytes) -> None:
        """The directory at real path ``real`` went away: drop cached fds that point into it, and its metadata."""
        pre = real + b"/"
        for k, (fd, _gid, r) in list(self._dirs.items()):
            if k and (r == real or r.startswith(pre)):
                del self._dirs[k]
                self._retired.append(fd)
        for k in [k for k in self._deferred if k == real or k.startswith(pre)]:
            del self._deferred[k]
        if self._worker is not None:
            self._worker.forget_under(real)

    def _dir(self, key: bytes, create: bool = True) -> tuple[int, int, bytes]:
        hit = self._dirs.get(key)
        if hit is not None:
            return hit
        return self._open_dir(key, create, 0)

    def _open_dir(self, key: bytes, create: bool, hops: int) -> tuple[int, int, bytes]:
        """Open (and cache) the directory at archive path ``key``, one component at a time, never following a
        symlink unless links are followed, and then only inside the target."""
        comps = key.split(b"/") if key else []
        i = len(comps)
        hit = self._dirs[b""]
        while i:
            cached = self._dirs.get(b"/".join(comps[:i]))
            if cached is not None:
                hit = cached
                break
            i -= 1
        fd, _gid, real = hit
        for j in range(i, len(comps)):
            base = comps[j]
            child_real = real + b"/" + base if real else base
            if self._pending and child_real in self._pending:
                self._sync()
            try:
                cfd = os.open(base, O_DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(base, 0o755, dir_fd=fd)
                self._note_created(child_real)
                self._made_dirs.add(child_real)
                cfd = os.open(base, O_DIR, dir_fd=fd)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(base, dir_fd=fd, follow_symlinks=False)
                shown = b"/".join(comps[:j + 1]).decode("utf-8", "backslashreplace")
                if not stat.S_ISLNK(st.st_mode):
                    raise Refusal(f"{shown!r} is not a directory")
                if not self.follow:
                    raise Refusal(f"{shown!r} is a symbolic link; writing through links is not allowed in a layer")
                if hops >= MAX_LINK_HOPS:
                    raise Refusal(f"too many levels of symbolic links at {shown!r}")
                target = os.readlink(base, dir_fd=fd)
                rfd, _, child_real = self._open_dir(
                    _lexical_join(real.split(b"/") if real else [], target), create, hops + 1)
                cfd = os.dup(rfd)
            hit = (cfd, self._child_gid(os.fstat(cfd)), child_real)
            if len(self._dirs) >= FD_CACHE:
                for k in self._dirs:
                    if k:
                        self._retired.append(self._dirs.pop(k)[0])
                        break
            self._dirs[b"/".join(comps[:j + 1])] = hit
            fd, real = cfd, child_real
        return hit

    def _note_created(self, real: bytes) -> None:
        if self.created is not None:
            self.created.append(real)
        if self._unpacked is not None:
            self._unpacked.add(real)

    def _clear(self, pfd: int, base: bytes, real: bytes) -> None:
        """Remove whatever is at base (never following it), so a fresh entry can take its place."""
        try:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if self._pending:
                self._sync()  # the worker may still be creating files below it
            shutil.rmtree(base, dir_fd=pfd)  # type: ignore[arg-type]
            self._forget_dirs(real)
        else:
            os.unlink(base, dir_fd=pfd)

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self, stream: TarStream) -> None:
        fast = self._fast if self._layer else None
        for e in entries(stream, fast=fast, fast_max=W.MAX_FILE):
            try:
                if self._retired:
                    self._close_retired()
                self._apply(e, stream)
            except Refusal as r:
                raise InvalidArgument(f"refusing tar entry {e.describe()!r}: {r}")
            except EOFError:
                raise InvalidArgument(
                    f"the tar archive is truncated: it ends inside the data of entry {e.describe()!r} "
                    f"(its header says {e.size} bytes)")
            except OSError as err:
                raise entry_error(e, err)
            except ValueError as err:  # e.g. an embedded NUL the OS rejects
                raise InvalidArgument(f"refusing tar entry {e.describe()!r}: {err}")
            except W.WorkerFailure as f:
                raise self._worker_error(f)
        if self._worker is not None:
            try:
                self._worker.finish()  # before directory times: creating files changes them
            except W.WorkerFailure as f:
                raise self._worker_error(f)
            finally:
                self._worker = None
                self._pending.clear()
        self.finish()

    def _apply(self, e: Entry, stream: TarStream) -> None:
        key = clean_name(e.name)
        tf = e.typeflag
        if not key:  # "./": the target itself
            if tf != T.DIRTYPE:
                raise Refusal("only a directory entry may name the archive root")
            self._skip_data(e, stream)
            self._deferred[b""] = (e.mode, e.atime_ns, e.mtime_ns)
            self._set_owner_xattrs(self.root_fd, None, e, -1)
            return
        pkey, _, base = key.rpartition(b"/")
        if self.whiteouts != "none" and base.startswith(WH_PREFIX):
            self._skip_data(e, stream)
            self._whiteout(e, pkey, base)
            return
        if self._pending and key in self._pending:
            self._sync()  # the same path again: let the worker create the first one before replacing it
        pfd, pgid, preal = self._dir(pkey)
        real = key if not self.follow else preal + b"/" + base if preal else base
        if self._unpacked is not None:
            self._unpacked.add(real)
        if tf == T.REGTYPE:
            self._regular(e, stream, pfd, pgid, pkey, base, real)
            return
        self._skip_data(e, stream)
        if tf == T.DIRTYPE:
            self._directory(e, pfd, pgid, base, key, real)
        elif tf == T.SYMTYPE:
            self._symlink(e, pfd, pgid, base, real)
        elif tf == T.LNKTYPE:
            self._hardlink(e, pkey, base, key, real)
        else:
            self._node(e, pfd, pgid, base, real)

    def _skip_data(self, e: Entry, stream: TarStream) -> None:
        if e.size:
            stream.skip(e.size)

    # -- entry kinds ----------------------------------------------------------------------------------------
    def _fast(self, name: bytes, mode: int, uid: int, gid: int, size: int, mtime_ns: int, data: memoryview) -> bool:
        """A plain small regular file straight from the reader's buffer (layer mode): the common entry of a layer,
        so it skips the general path when nothing about it is unusual. False hands it to the general path."""
        if name[:2] == b"./":
            name = name[2:]
        # anything with a "." component start (".wh." whiteouts, "..", hidden files), "//", or an absolute or
        # empty name goes the general way; a NUL cannot occur (the reader cuts names at the first one)
        if not name or name[0] in (0x2E, 0x2F) or name[-1] == 0x2F or b"/." in name or b"//" in name:
            return False
        pending = self._pending
        if pending and name in pending or name in self._made_dirs:
            return False
        pkey, _, base = name.rpartition(b"/")
        hit = self._dirs.get(pkey)
        if hit is None:
            return False
        pfd, pgid, _real = hit
        need = size + (-size % self._bsize)
        if self.budget is not None:
            if self.budget < need:
                return False
            self.budget -= need
        try:
            w = self._worker
            if w is not None and len(base) <= W.MAX_NAME and w.room():
                fm = mode & 0o7777
                if uid != self.euid or gid != pgid:
                    fm |= W.F_CHOWN
                if mode & 0o7000 or mode & self.umask:
                    fm |= W.F_CHMOD
                pending.add(name)
                w.add(pkey, pfd, base, data, size, fm, uid, gid, mtime_ns, mtime_ns, name)
                if len(pending) >= MAX_PENDING:
                    self._sync()
                return True
            try:
                fd = os.open(base, O_NEW, mode & 0o777, dir_fd=pfd)
            except FileExistsError:
                if self.budget is not None:
                    self.budget += need
                return False
            try:
                if size:
                    n = os.write(fd, data)
                    while n < size:
                        n += os.write(fd, data[n:])
                if uid != self.euid or gid != pgid:
                    os.fchown(fd, uid, gid)
                if mode & 0o7000 or mode & self.umask:
                    os.fchmod(fd, mode & 0o7777)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            finally:
                os.close(fd)
        except OSError as err:
            raise entry_error(name, err)
        except W.WorkerFailure as f:
            raise self._worker_error(f)
        if w is None:
            if self._may_spawn:
                self._count_small()
        elif w.broken:
            self._stop_worker()
        return True

    def _count_small(self) -> None:
        """Another small file created here: start a worker once a layer has shown enough of them."""
        self._small += 1
        if self._small >= SPAWN_AFTER:
            self._may_spawn = False
            self._worker = W.FileWorker.spawn()
            if self._worker is not None and WAIT_FOR_WORKER:
                self._worker.wait_ready()

    def _regular(self, e: Entry, stream: TarStream, pfd: int, pgid: int, pkey: bytes, base: bytes,
                 real: bytes) -> None:
        size = e.size
        if self.budget is not None:
            self.budget -= size + (-size % self._bsize)
            if self.budget < 0:
                raise Refusal(
                    f"the archive needs more space than is free on the target's filesystem ({size} bytes "
                    "declared for this file); refusing it as a possible decompression bomb")
        perm = e.mode & 0o777
        small = (size <= W.MAX_FILE and not e.xattrs and len(base) <= W.MAX_NAME and real not in self._made_dirs
                 and W.fits(e.uid, e.gid, e.atime_ns, e.mtime_ns))
        w = self._worker
        if w is not None and small and w.room():
            fm = e.mode & 0o7777
            if e.uid != self.euid or e.gid != pgid:
                fm |= W.F_CHOWN
            if e.mode & 0o7000 or perm & self.umask:
                fm |= W.F_CHMOD
            self._pending.add(real)
            w.add(pkey, pfd, base, stream.take(size) if size else b"", size, fm, e.uid, e.gid, e.atime_ns,
                  e.mtime_ns, e)
            if len(self._pending) >= MAX_PENDING:
                self._sync()
            return
        try:
            fd = os.open(base, O_NEW, perm, dir_fd=pfd)
        except FileExistsError:
            self._clear(pfd, base, real)
            fd = os.open(base, O_NEW, perm, dir_fd=pfd)
        else:
            if self.created is not None:
                self.created.append(real)
        try:
            if size:
                if size >= BIG_FILE:
                    try:
                        os.posix_fallocate(fd, 0, size)
                    except OSError as err:
                        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                            raise
                stream.copy_to(fd, size)
            if e.uid != self.euid or e.gid != pgid:
                os.fchown(fd, e.uid, e.gid)
            if e.mode & 0o7000 or perm & self.umask:
                os.fchmod(fd, e.mode & 0o7777)
            if e.xattrs:
                set_xattrs(fd, e.xattrs)
            os.utime(fd, ns=(e.atime_ns, e.mtime_ns))
        finally:
            os.close(fd)
        if w is None:
            if small and self._may_spawn:
                self._count_small()
        elif w.broken:
            self._stop_worker()

    def _directory(self, e: Entry, pfd: int, pgid: int, base: bytes, key: bytes, real: bytes) -> None:
        if self.follow:  # keep an existing directory, or a link to one, as GNU tar's --keep-directory-symlink
            try:
                fd, _, dreal = self._open_dir(key, False, 0)
            except FileNotFoundError:
                pass
            except Refusal:
                self._clear(pfd, base, real)
            else:
                self._set_owner_xattrs(fd, None, e, pgid)
                self._deferred[dreal] = (e.mode, e.atime_ns, e.mtime_ns)
                return
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
        except FileExistsError:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                self._clear(pfd, base, real)
                os.mkdir(base, 0o700, dir_fd=pfd)
                self._note_created(real)
        else:
            self._note_created(real)
        self._made_dirs.add(real)
        self._set_owner_xattrs(None, (pfd, base), e, pgid)
        self._deferred[real] = (e.mode, e.atime_ns, e.mtime_ns)

    def _symlink(self, e: Entry, pfd: int, pgid: int, base: bytes, real: bytes) -> None:
        if not e.linkname:
            raise Refusal("symbolic link with an empty target")
        try:
            os.symlink(e.linkname, base, dir_fd=pfd)
        except FileExistsError:
            self._clear(pfd, base, real)
            os.symlink(e.linkname, base, dir_fd=pfd)
        else:
            if self.created is not None:
                self.created.append(real)
        self._set_owner_xattrs(None, (pfd, base), e, pgid)
        os.utime(base, ns=(e.atime_ns, e.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _hardlink(self, e: Entry, pkey: bytes, base: bytes, key: bytes, real: bytes) -> None:
        tkey = clean_name(e.linkname, "hardlink target")
        if not tkey:
            raise Refusal("hardlink to the archive root")
        if tkey == key:
            return  # a link to itself: nothing to do
        if self._pending and tkey in self._pending:
            self._sync()  # the target is one the worker may not have created yet
        tparent, _, tbase = tkey.rpartition(b"/")
        shown = e.linkname.decode("utf-8", "backslashreplace")
        try:
            tfd = self._dir(tparent, create=False)[0]
        except FileNotFoundError:
            raise Refusal(f"hardlink target {shown!r} is not in the target directory")
        except Refusal as r:
            raise Refusal(f"hardlink target: {r}")
        pfd = self._dir(pkey)[0]  # both stay open until the next entry, even if evicted meanwhile
        try:
            tst = os.stat(tbase, dir_fd=tfd, follow_symlinks=False)
        except FileNotFoundError:
            raise Refusal(f"hardlink target {shown!r} is not in the target directory")
        if stat.S_ISDIR(tst.st_mode):
            raise Refusal(f"hardlink target {shown!r} is a directory")
        try:
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileExistsError:
            if os.path.samestat(tst, os.stat(base, dir_fd=pfd, follow_symlinks=False)):
                return  # already that file (a link to itself through another spelling)
            self._clear(pfd, base, real)
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        else:
            if self.created is not None:
                self.created.append(real)

    def _node(self, e: Entry, pfd: int, pgid: int, base: bytes, real: bytes) -> None:
        tf = e.typeflag
        if tf == T.CHRTYPE:
            kind, dev = stat.S_IFCHR, os.makedev(e.devmajor, e.devminor)
        elif tf == T.BLKTYPE:
            kind, dev = stat.S_IFBLK, os.makedev(e.devmajor, e.devminor)
        else:
            kind, dev = stat.S_IFIFO, 0
        perm = e.mode & 0o777
        try:
            os.mknod(base, kind | perm, dev, dir_fd=pfd)
        except FileExistsError:
            self._clear(pfd, base, real)
            os.mknod(base, kind | perm, dev, dir_fd=pfd)
        else:
            if self.created is not None:
                self.created.append(real)
        self._set_owner_xattrs(None, (pfd, base), e, pgid)
        if e.mode & 0o7000 or perm & self.umask:
            # chmod has no reliable no-follow form: pin the node with O_PATH, check it, chmod through /proc
            pin = os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                if stat.S_IFMT(os.fstat(pin).st_mode) != kind:
                    raise Refusal("the node was replaced while it was being created")
                os.chmod(f"/proc/self/fd/{pin}", e.mode & 0o7777)
            finally:
                os.close(pin)
        os.utime(base, ns=(e.atime_ns, e.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _whiteout(self, e: Entry, pkey: bytes, base: bytes) -> None:
        if base == WH_OPAQUE:
            if self.whiteouts == "overlay":
                os.setxattr(self._dir(pkey)[0], OPAQUE_XATTR, b"y")
            else:
                self._delete_unpacked(pkey)
            return
        if base.startswith(WH_META_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): meaningless here, as in Docker
        name = base[len(WH_PREFIX):]
        if name in (b"", b".", b".."):
            raise Refusal(f"whiteout of {name.decode('utf-8', 'backslashreplace')!r} is not a valid name")
        if self.whiteouts == "delete":
            try:
                pfd, _, preal = self._dir(pkey, create=False)
            except FileNotFoundError:
                return
            self._clear(pfd, name, preal + b"/" + name if preal else name)
            return
        pfd, pgid, preal = self._dir(pkey)
        real = preal + b"/" + name if preal else name
        if self._pending and real in self._pending:
            self._sync()
        try:
            os.mknod(name, stat.S_IFCHR, 0, dir_fd=pfd)
        except FileExistsError:
            self._clear(pfd, name, real)
            os.mknod(name, stat.S_IFCHR, 0, dir_fd=pfd)
        else:
            if self.created is not None:
                self.created.append(real)
        if e.uid != self.euid or e.gid != pgid:
            os.chown(name, e.uid, e.gid, dir_fd=pfd, follow_symlinks=False)
        os.utime(name, ns=(e.atime_ns, e.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _delete_unpacked(self, pkey: bytes) -> None:
        """An opaque marker in "delete" mode: remove what this archive did not write below the directory."""
        assert self._unpacked is not None
        try:
            top, _, treal = self._dir(pkey, create=False)
        except FileNotFoundError:
            return
        stack = [(os.dup(top), treal)]
        while stack:
            dfd, dreal = stack.pop()
            try:
                for name in sorted(os.listdir(dfd)):
                    bname = os.fsencode(name)
                    creal = dreal + b"/" + bname if dreal else bname
                    if creal not in self._unpacked:
                        self._clear(dfd, bname, creal)
                        continue
                    st = os.stat(bname, dir_fd=dfd, follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        stack.append((os.open(bname, O_DIR, dir_fd=dfd), creal))
            finally:
                os.close(dfd)

    # -- metadata -------------------------------------------------------------------------------------------
    def _set_owner_xattrs(self, fd: int | None, at: tuple[int, bytes] | None, e: Entry, pgid: int) -> None:
        """Owner (when it differs from what creation gave; pgid -1: always) and xattrs, never following links."""
        if e.uid != self.euid or e.gid != pgid:
            if fd is not None:
                os.fchown(fd, e.uid, e.gid)
            else:
                assert at is not None
                os.chown(at[1], e.uid, e.gid, dir_fd=at[0], follow_symlinks=False)
        if e.xattrs:
            if fd is not None:
                set_xattrs(fd, e.xattrs)
            else:
                assert at is not None
                set_xattrs(b"/proc/self/fd/%d/%s" % at, e.xattrs)

    def finish(self) -> None:
        """Directory modes and times last: creating their contents changed the times."""
        for real, (mode, atime, mtime) in self._deferred.items():
            try:
                fd = self._dir(real, create=False)[0]
            except (FileNotFoundError, Refusal):
                continue
            os.fchmod(fd, mode & 0o7777)
            os.utime(fd, ns=(atime, mtime))
            self._close_retired()
        self._deferred.clear()

    def undo_created(self) -> None:
        """Best effort after a failure in tree mode: remove what this call created (replaced files stay lost)."""
        self._stop_worker()
        if not self.created:
            return
        for real in reversed(self.created):
            parent, _, base = real.rpartition(b"/")
            try:
                pfd = self._dir(parent, create=False)[0]
                self._clear(pfd, base, real)
            except (OSError, Refusal):
                continue
            self._close_retired()
