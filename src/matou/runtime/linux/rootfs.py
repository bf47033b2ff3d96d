"""The container's mount tree, as runc's rootfs_linux.go builds it.

Parsing (``parse_mount``) happens in the caller before clone; the functions below that take a ``root`` run in the
child, inside its fresh mount namespace: make / a slave, bind the rootfs onto itself, mount each entry under it
(destinations resolved inside the rootfs so an image's symlinks can't point them at the host), create the default
device nodes and /dev symlinks, pivot_root, and later mask and make read-only the configured paths.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from matou.errors import InvalidArgument
from matou.runtime.linux import syscalls as sc
from matou.util.fs import resolve_in_root

_SET: dict[str, int] = {
    "ro": sc.MS_RDONLY, "nosuid": sc.MS_NOSUID, "nodev": sc.MS_NODEV, "noexec": sc.MS_NOEXEC,
    "sync": sc.MS_SYNCHRONOUS, "remount": sc.MS_REMOUNT, "mand": sc.MS_MANDLOCK, "dirsync": sc.MS_DIRSYNC,
    "noatime": sc.MS_NOATIME, "nodiratime": sc.MS_NODIRATIME, "bind": sc.MS_BIND,
    "rbind": sc.MS_BIND | sc.MS_REC, "relatime": sc.MS_RELATIME, "strictatime": sc.MS_STRICTATIME,
    "silent": sc.MS_SILENT, "nosymfollow": sc.MS_NOSYMFOLLOW,
}
_CLEAR: dict[str, int] = {
    "rw": sc.MS_RDONLY, "suid": sc.MS_NOSUID, "dev": sc.MS_NODEV, "exec": sc.MS_NOEXEC,
    "async": sc.MS_SYNCHRONOUS, "nomand": sc.MS_MANDLOCK, "atime": sc.MS_NOATIME, "diratime": sc.MS_NODIRATIME,
    "norelatime": sc.MS_RELATIME, "nostrictatime": sc.MS_STRICTATIME, "loud": sc.MS_SILENT,
    "symfollow": sc.MS_NOSYMFOLLOW, "defaults": 0,
}
PROPAGATION: dict[str, int] = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
_IGNORED = frozenset({"tmpcopyup", "rro", "rrw"})
_REMOUNT_MASK = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_NOATIME | sc.MS_NODIRATIME | \
    sc.MS_RELATIME | sc.MS_STRICTATIME | sc.MS_NOSYMFOLLOW

# (path, major, minor): the devices every container gets (OCI runtime spec "Default Devices"), mode 0666
DEFAULT_DEVICES: tuple[tuple[str, int, int], ...] = (
    ("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7), ("/dev/tty", 5, 0),
    ("/dev/random", 1, 8), ("/dev/urandom", 1, 9),
)
# mount(2) flags -> fsmount(2) attributes, for the file systems stage() makes ahead
_ATTRS: dict[int, int] = {
    sc.MS_RDONLY: sc.MOUNT_ATTR_RDONLY, sc.MS_NOSUID: sc.MOUNT_ATTR_NOSUID, sc.MS_NODEV: sc.MOUNT_ATTR_NODEV,
    sc.MS_NOEXEC: sc.MOUNT_ATTR_NOEXEC, sc.MS_NOATIME: sc.MOUNT_ATTR_NOATIME,
    sc.MS_STRICTATIME: sc.MOUNT_ATTR_STRICTATIME, sc.MS_NODIRATIME: sc.MOUNT_ATTR_NODIRATIME,
    sc.MS_NOSYMFOLLOW: sc.MOUNT_ATTR_NOSYMFOLLOW, sc.MS_RELATIME: 0, sc.MS_SILENT: 0,
}
_STAGEABLE = frozenset({"proc", "sysfs", "tmpfs", "devpts", "mqueue"})
_NODE_KINDS = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
DEV_SYMLINKS: tuple[tuple[str, str], ...] = (
    ("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"), ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
)


@dataclass(frozen=True)
class Mount:
    """One OCI mount, parsed: flags for mount(2), the remainder as data, propagation applied afterwards."""

    destination: str
    type: str
    source: str
    flags: int
    data: str
    propagation: tuple[int, ...]

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)


@dataclass(frozen=True)
class Device:
    path: str
    kind: str  # c, b, u, p
    major: int
    minor: int
    mode: int
    uid: int
    gid: int


def parse_mount(m: dict) -> Mount:
    dest = m.get("destination") or ""
    if not dest.startswith("/"):
        raise InvalidArgument(f"mount destination must be absolute: {dest!r}")
    flags = 0
    data: list[str] = []
    prop: list[int] = []
    for opt in m.get("options") or ():
        if opt in _SET:
            flags |= _SET[opt]
        elif opt in _CLEAR:
            flags &= ~_CLEAR[opt]
        elif opt in PROPAGATION:
            prop.append(PROPAGATION[opt])
        elif opt in _IGNORED:
            continue
        elif opt in ("idmap", "ridmap"):
            raise InvalidArgument(f"mount {dest}: idmapped mounts are not supported")
        else:
            data.append(opt)
    mtype = m.get("type") or ("bind" if flags & sc.MS_BIND else "")
    if mtype == "bind":
        flags |= sc.MS_BIND
    source = m.get("source") or mtype
    if flags & sc.MS_BIND and not source.startswith("/"):
        raise InvalidArgument(f"bind mount {dest}: source must be an absolute path, not {source!r}")
    return Mount(dest, mtype, source, flags, ",".join(data), tuple(prop))


def parse_device(d: dict) -> Device:
    path = d.get("path") or ""
    if not path.startswith("/dev/"):
        raise InvalidArgument(f"device path must be under /dev: {path!r}")
    kind = d.get("type") or "c"
    if kind not in ("c", "b", "u", "p"):
        raise InvalidArgument(f"device {path}: unknown type {kind!r}")
    return Device(path, kind, int(d.get("major", 0)), int(d.get("minor", 0)), int(d.get("fileMode", 0o666)),
                  int(d.get("uid", 0)), int(d.get("gid", 0)))


def default_devices() -> list[Device]:
    return [Device(p, "c", ma, mi, 0o666, 0, 0) for p, ma, mi in DEFAULT_DEVICES]


@dataclass
class Staged:
    """File systems made ahead by stage(), detached, keyed by the mount they are for: a pre-cloned init makes those
    of the default config while it waits for its container, and mount_all() attaches each that its container
    still asks for with one move_mount() (the mounts of /proc, /dev and the rest, and the /dev nodes: ~1.8 ms of
    the init's path in the run timeline). ``devices``: the nodes made in the staged /dev, with its symlinks."""

    fds: dict[Mount, int] = field(default_factory=dict)
    devices: list[Device] | None = None
    dev_attached: bool = False
    # a staged /proc or /sys carries the template's read-only and masked paths beneath it already: (read-only,
    # masked) for each; ``done`` collects those of the mounts attached, which the init then skips
    applied: dict[Mount, tuple[frozenset[str], frozenset[str]]] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    # made but not to be used. Closing the last fd of a detached mount unmounts it, and that waits for an RCU
    # grace period (~0.5 ms here): park() attaches them at ``park_at`` in the old root instead (a directory of
    # the runtime's, outside the new root), which pivot() detaches with the rest
    unused: list[int] = field(default_factory=list)
    park_at: str | None = None

    def take(self, m: Mount, readonly: Sequence[str] = (), masked: Sequence[str] = (),
             sysctls: bool = False) -> int | None:
        """The staged file system for ``m``, if it is what the container asks for: with the same read-only and
        masked paths beneath it (and, for a read-only /proc/sys, no sysctl to write first)."""
        fd = self.fds.pop(m, None)
        if fd is None or m not in self.applied:
            return fd
        ro, mask = self.applied[m]
        if ro != _beneath(m.destination, readonly) or mask != _beneath(m.destination, masked) or (sysctls and ro):
            self.unused.append(fd)
            return None
        self.done |= ro | mask
        return fd

    def drop(self, fstype: str) -> None:
        """Set aside those of ``fstype``: a sysfs made before the init joined another network namespace shows
        the old one's devices."""
        for m in [m for m in self.fds if m.type == fstype]:
            self.unused.append(self.fds.pop(m))

    def park(self) -> None:
        """Attach what is left at ``park_at`` in our own (slave) mount namespace, and close the fds (see
        ``unused``); what cannot be attached is closed."""
        for fd in [*self.fds.values(), *self.unused]:
            try:
                if self.park_at is not None:
                    with contextlib.suppress(OSError):
                        sc.move_mount(fd, self.park_at)
            finally:
                os.close(fd)
        self.fds.clear()
        self.unused.clear()


def _fsmount_params(m: Mount) -> tuple[list[tuple[str, str | None]], int] | None:
    """fsconfig() parameters and fsmount() attributes that make what mount(2) would for ``m``; None if stage()
    can't make it (a bind, another file system, propagation, a flag without an attribute)."""
    if m.type not in _STAGEABLE or m.is_bind or m.propagation:
        return None
    attrs, rest = 0, m.flags
    for flag, attr in _ATTRS.items():
        if rest & flag:
            attrs |= attr
            rest &= ~flag
    if rest:
        return None
    options: list[tuple[str, str | None]] = []
    for item in m.data.split(","):
        if item:
            key, sep, value = item.partition("=")
            options.append((key, value if sep else None))
    if m.flags & sc.MS_RDONLY:
        options.append(("ro", None))  # mount(2) makes a new superblock read-only too
    return options, attrs


def _beneath(dest: str, paths: Sequence[str]) -> frozenset[str]:
    prefix = dest.rstrip("/") + "/"
    return frozenset(p for p in paths if p.startswith(prefix))


def stage(mounts: list[Mount], devices: list[Device], readonly: Sequence[str] = (),
          masked: Sequence[str] = ()) -> Staged:
    """The file systems of ``mounts`` that can be made detached (see Staged), the ``devices`` and the usual
    symlinks in a staged /dev, and the ``readonly`` and ``masked`` paths in a staged /proc and /sys. Runs in
    the init's own pid, ipc and network namespaces: /proc, /dev/mqueue and /sys are theirs. Best effort: what
    fails is left to mount_all() and the init."""
    staged = Staged()
    for m in mounts:
        params = _fsmount_params(m)
        if params is None or m in staged.fds:
            continue
        try:
            fd = sc.fsmount(m.type, m.source, *params)
        except OSError:
            continue
        staged.fds[m] = fd
        if m.destination.rstrip("/") == "/dev" and m.type == "tmpfs":
            try:
                staged.devices = _populate_dev(fd, mounts, devices)
            except OSError:  # mount_all() makes this /dev, its nodes and links
                del staged.fds[m]
                os.close(fd)
    dev = next((fd for m, fd in staged.fds.items() if m.destination.rstrip("/") == "/dev" and staged.devices), None)
    for m, fd in list(staged.fds.items()):
        ro, mask = _beneath(m.destination, readonly), _beneath(m.destination, masked)
        if m.type not in ("proc", "sysfs") or not (ro or mask):
            continue
        try:
            _restrict(fd, m.destination.rstrip("/") + "/", [p for p in readonly if p in ro],
                      [p for p in masked if p in mask], dev)
            staged.applied[m] = (ro, mask)
        except OSError:  # partly restricted: not to be used
            del staged.fds[m]
            os.close(fd)
    return staged


def _restrict(fd: int, prefix: str, readonly: list[str], masked: list[str], dev: int | None) -> None:
    """readonly_path() and mask_path() on a detached /proc or /sys (``fd``), in the same order: a read-only bind of
    each path onto itself, then /dev/null (the staged /dev's) over each masked file and an empty read-only tmpfs
    over each masked directory. Paths that do not exist are skipped, as there."""
    for path in readonly:
        rel = path[len(prefix):]
        try:
            clone = sc.open_tree_clone(fd, rel, recursive=True)
        except FileNotFoundError:
            continue
        try:
            sc.mount_setattr(clone, sc.MOUNT_ATTR_RDONLY, recursive=True)
            sc.move_mount(clone, rel, fd)
        finally:
            os.close(clone)
    for path in masked:
        rel = path[len(prefix):]
        try:
            st = os.stat(rel, dir_fd=fd)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            cover = sc.fsmount("tmpfs", "tmpfs", [("ro", None)], sc.MOUNT_ATTR_RDONLY)
        elif dev is not None:
            cover = sc.open_tree_clone(dev, "null")
        else:
            raise OSError(errno.ENODEV, "no staged /dev/null")
        try:
            sc.move_mount(cover, rel, fd)
        finally:
            os.close(cover)


def _populate_dev(dev: int, mounts: list[Mount], devices: list[Device]) -> list[Device] | None:
    """create_devices() and dev_symlinks() in a /dev not mounted yet (``dev``: its fd), and the directories the
    mounts beneath it need; None (no nodes made) if a device lies deeper than /dev itself."""
    for m in mounts:
        parent, _, name = m.destination.rstrip("/").rpartition("/")
        if parent == "/dev" and not m.is_bind:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=dev)
    if any(os.path.dirname(d.path) != "/dev" for d in devices):
        return None
    for d in devices:
        name = os.path.basename(d.path)
        _make_node(name, d, dev)
        if d.uid or d.gid:
            os.chown(name, d.uid, d.gid, dir_fd=dev)
    for src, name in _dev_links():
        os.symlink(src, name, dir_fd=dev)
    return list(devices)


# ------------------------------------------------------------------------------------------------------ child side
def _in_root(root: str, dest: str) -> str:
    return resolve_in_root(root, dest)


def _mkdirs(path: str) -> None:
    with contextlib.suppress(FileExistsError):
        os.makedirs(path, 0o755)


def _ensure_target(target: str, is_dir: bool) -> None:
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        if is_dir:
            _mkdirs(target)
        else:
            _mkdirs(os.path.dirname(target))
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o755))
        return
    if is_dir and not stat.S_ISDIR(st.st_mode):
        raise OSError(errno.ENOTDIR, f"mount target {target} is not a directory")


def prepare(root: str, propagation: int) -> None:
    """Keep our mounts from reaching the host (rslave by default), and make the rootfs a mount point."""
    sc.mount(None, "/", None, propagation or (sc.MS_SLAVE | sc.MS_REC))
    sc.mount(root, root, None, sc.MS_BIND | sc.MS_REC)


def mount_all(root: str, mounts: list[Mount], cgroup_binds: list[tuple[str, str]], cgroup_v2: bool,
              before_cgroup: Callable[[], object] = lambda: None, staged: Staged | None = None,
              readonly: Sequence[str] = (), masked: Sequence[str] = (), sysctls: bool = False) -> None:
    """Each mount under ``root``; those ``staged`` has made ahead are attached rather than made (see Staged.take
    for ``readonly``, ``masked`` and ``sysctls``)."""
    for m in _cgroup_last(mounts):
        if m.type == "cgroup":
            before_cgroup()  # the container's cgroup directories must exist by now
            _mount_cgroup(root, m, cgroup_binds, cgroup_v2)
            continue
        target = _in_root(root, m.destination)
        fd = staged.take(m, readonly, masked, sysctls) if staged is not None else None
        if fd is not None:
            try:
                _ensure_target(target, True)
                sc.move_mount(fd, target)
            finally:
                os.close(fd)
            if staged is not None and m.destination.rstrip("/") == "/dev":
                staged.dev_attached = True
            continue
        if m.is_bind:
            try:
                st = os.stat(m.source)
            except OSError as e:
                raise OSError(e.errno, f"bind mount source {m.source}: {os.strerror(e.errno or 0)}")
            _ensure_target(target, stat.S_ISDIR(st.st_mode))
            sc.mount(m.source, target, None, m.flags & (sc.MS_BIND | sc.MS_REC))
            extra = m.flags & _REMOUNT_MASK
            if extra:
                sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | extra | (m.flags & sc.MS_REC))
        else:
            _ensure_target(target, True)
            sc.mount(m.source, target, m.type, m.flags, m.data)
        for p in m.propagation:
            sc.mount(None, target, None, p)
    if staged is not None:
        staged.park()  # what this container does not use: pivot() detaches it with the rest


def _cgroup_last(mounts: list[Mount]) -> list[Mount]:
    """The cgroup mount needs the container's cgroup directories, which the runtime makes while this process
    mounts (up to 4 ms here): do it after the others, unless a later mount lies beneath it."""
    out = list(mounts)
    for i, m in enumerate(mounts):
        if m.type != "cgroup":
            continue
        below = m.destination.rstrip("/") + "/"
        if not any(o.destination.startswith(below) for o in mounts[i + 1:]):
            out.remove(m)
            out.append(m)
    return out


def _mount_cgroup(root: str, m: Mount, binds: list[tuple[str, str]], cgroup_v2: bool) -> None:
    """v2: a cgroup2 mount (the cgroup namespace makes its root the container's cgroup). v1: a tmpfs with one
    read-only bind per hierarchy of the container's own cgroup directories, so it sees its limits, not the host's."""
    target = _in_root(root, m.destination)
    _ensure_target(target, True)
    flags = m.flags & ~sc.MS_BIND
    if cgroup_v2:
        try:
            sc.mount("cgroup2", target, "cgroup2", flags)
        except OSError:
            if not binds:
                raise
            sc.mount(binds[0][0], target, None, sc.MS_BIND | sc.MS_REC)
            sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | (flags & _REMOUNT_MASK))
        return
    sc.mount("tmpfs", target, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, "mode=755")
    for host_dir, name in binds:
        sub = target + "/" + name
        os.mkdir(sub, 0o755)
        sc.mount(host_dir, sub, None, sc.MS_BIND)
        sc.mount(None, sub, None, sc.MS_BIND | sc.MS_REMOUNT | (flags & _REMOUNT_MASK) | sc.MS_NOSUID |
                 sc.MS_NODEV | sc.MS_NOEXEC)
        if "," in name:  # cpu,cpuacct style joint hierarchies get the usual per-controller symlinks
            for part in name.split(","):
                with contextlib.suppress(FileExistsError):
                    os.symlink(name, target + "/" + part)
    if flags & sc.MS_RDONLY:
        sc.mount(None, target, None, sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)


def create_devices(root: str, devices: list[Device]) -> None:
    for d in devices:
        target = _in_root(root, d.path)
        _mkdirs(os.path.dirname(target))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
        try:
            _make_node(target, d)
        except OSError as e:
            if e.errno != errno.EPERM:
                raise
            # no CAP_MKNOD (nested in a restricted parent): bind the host's node instead, as runc does
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))
            sc.mount(d.path, target, None, sc.MS_BIND)
        if d.uid or d.gid:
            os.chown(target, d.uid, d.gid)


def add_devices(root: str, devices: list[Device]) -> None:
    """create_devices() and dev_symlinks() in a /dev that has its links already (a staged one), with the same
    result: a device named like a link (a privileged container's /dev/ptmx) is made in its place, then the links
    are made again."""
    if not devices:
        return
    for d in devices:
        with contextlib.suppress(FileNotFoundError):
            if os.path.islink(root + d.path):
                os.unlink(root + d.path)
    create_devices(root, devices)
    dev_symlinks(root)


def _make_node(path: str, d: Device, dir_fd: int | None = None) -> None:
    os.mknod(path, _NODE_KINDS[d.kind] | (d.mode & 0o7777), os.makedev(d.major, d.minor), dir_fd=dir_fd)
    os.chmod(path, d.mode & 0o7777, dir_fd=dir_fd)  # mknod honours the umask


def _dev_links() -> list[tuple[str, str]]:
    """(target, name in /dev) of the links every /dev gets; the last, ptmx, reaches the container's own devpts."""
    links = [(src, os.path.basename(dst)) for src, dst in DEV_SYMLINKS]
    if os.path.exists("/proc/kcore"):
        links.append(("/proc/kcore", "core"))
    return [*links, ("pts/ptmx", "ptmx")]


def dev_symlinks(root: str) -> None:
    dev = root + "/dev"
    for src, name in _dev_links():
        if name == "ptmx":  # replaces a node of that name
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dev + "/ptmx")
        with contextlib.suppress(FileExistsError):
            os.symlink(src, f"{dev}/{name}")


def bind_console(root: str, slave_path: str) -> None:
    """/dev/console is the pty slave the container's init got as its terminal."""
    target = root + "/dev/console"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(target)
    os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    sc.mount(slave_path, target, None, sc.MS_BIND)


def pivot(root: str) -> None:
    """pivot_root(".", ".") and detach the old root: no directory left behind in the image."""
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new = os.open(root, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new)
        try:
            sc.pivot_root(".", ".")
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            _move_chroot(root)
            return
        os.fchdir(old)
        sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
        sc.umount2(".", sc.MNT_DETACH)
        os.chdir("/")
    finally:
        os.close(old)
        os.close(new)


def _move_chroot(root: str) -> None:
    """pivot_root can't leave a ramfs/initramfs root: move the rootfs over / and chroot (runc's --no-pivot)."""
    os.chdir(root)
    sc.mount(root, "/", None, sc.MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def _statvfs_flags(path: str) -> int:
    f = os.statvfs(path).f_flag
    out = 0
    for st_bit, ms in ((os.ST_NOSUID, sc.MS_NOSUID), (os.ST_NODEV, sc.MS_NODEV), (os.ST_NOEXEC, sc.MS_NOEXEC),
                       (os.ST_NOATIME, sc.MS_NOATIME), (os.ST_NODIRATIME, sc.MS_NODIRATIME),
                       (os.ST_RELATIME, sc.MS_RELATIME)):
        if f & st_bit:
            out |= ms
    return out


def readonly_root() -> None:
    sc.mount(None, "/", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _statvfs_flags("/"))


def readonly_path(path: str) -> None:
    try:
        sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return
        raise
    sc.mount(None, path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC | _statvfs_flags(path))


def mask_path(path: str) -> None:
    try:
        sc.mount("/dev/null", path, None, sc.MS_BIND)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return
        if e.errno not in (errno.ENOTDIR, errno.EINVAL):
            raise
        sc.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY)
