"""The Linux system calls the runtime needs and Python 3.11 lacks, through ctypes.

Every wrapper raises ``OSError`` with the errno and the call's name, so the init process can report exactly
which step failed. ``clone`` goes through a ``PyDLL`` handle: the GIL stays held across the call, so the child
resumes in the interpreter without having to re-acquire a lock whose owner exists only in the parent.
"""

from __future__ import annotations

import ctypes
import os

TYPE_CHECKING = False  # typing costs the spawner (and every fork of it) ~0.5 MB: annotations only
if TYPE_CHECKING:
    from typing import NoReturn

# clone(2) / unshare(2) / setns(2) flags
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
SIGCHLD = 17

NS_FLAGS: dict[str, int] = {
    "mount": CLONE_NEWNS,
    "cgroup": CLONE_NEWCGROUP,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID,
    "network": CLONE_NEWNET,
    "time": CLONE_NEWTIME,
}
# /proc/<pid>/ns/<file> for each OCI namespace type
NS_PROC_NAME: dict[str, str] = {
    "mount": "mnt",
    "cgroup": "cgroup",
    "uts": "uts",
    "ipc": "ipc",
    "user": "user",
    "pid": "pid",
    "network": "net",
    "time": "time",
}

# mount(2)
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# prctl(2)
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

TIOCSCTTY = 0x540E
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
CLOSE_RANGE_CLOEXEC = 1 << 2
KEYCTL_JOIN_SESSION_KEYRING = 1
# the new mount API (Linux 5.2): a file system made and mounted detached, attached later with move_mount
FSOPEN_CLOEXEC = 1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
AT_FDCWD = -100
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000

_ARCH = os.uname().machine  # platform.machine(), without importing platform
_NR: dict[str, dict[str, int]] = {
    "x86_64": {"clone": 56, "pivot_root": 155, "pidfd_open": 434, "close_range": 436, "seccomp": 317,
               "keyctl": 250, "capget": 125, "capset": 126, "pidfd_send_signal": 424, "clone3": 435,
               "rt_sigaction": 13, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
               "open_tree": 428, "mount_setattr": 442},
    "aarch64": {"clone": 220, "pivot_root": 41, "pidfd_open": 434, "close_range": 436, "seccomp": 277,
                "keyctl": 219, "capget": 90, "capset": 91, "pidfd_send_signal": 424, "clone3": 435,
                "rt_sigaction": 134, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
                "open_tree": 428, "mount_setattr": 442},
}
if _ARCH not in _NR:  # pragma: no cover - only x86_64 and aarch64 are supported
    raise ImportError(f"matou.runtime: unsupported architecture {_ARCH}")
NR = _NR[_ARCH]

_libc = ctypes.CDLL(None, use_errno=True)
_pylibc = ctypes.PyDLL(None, use_errno=True)

_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_clone_syscall = _pylibc.syscall
_clone_syscall.restype = ctypes.c_long
_clone_syscall.argtypes = [ctypes.c_long, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                           ctypes.c_void_p]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.setdomainname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]


def _fail(what: str, path: str | None = None) -> NoReturn:
    err = ctypes.get_errno()
    if path is not None:
        raise OSError(err, f"{what} {path}: {os.strerror(err)}")
    raise OSError(err, f"{what}: {os.strerror(err)}")


def clone(flags: int) -> int:
    """fork(2) with namespace flags: returns 0 in the child, the child's host pid in the parent.

    Only safe in a single-threaded caller (the monitor, the CLI); the child must end in exec or os._exit.
    """
    ret = _clone_syscall(NR["clone"], flags | SIGCHLD, None, None, None, None)
    if ret < 0:
        _fail("clone")
    return ret


CLONE_INTO_CGROUP = 0x200000000


class _CloneArgs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack",
                                                "stack_size", "tls", "set_tid", "set_tid_size", "cgroup")]


def clone_into_cgroup(flags: int, cgroup_fd: int) -> int:
    """clone3(CLONE_INTO_CGROUP): the child starts life in a cgroup v2 directory, so no migration (and no RCU
    grace period) is needed. Like clone() above: 0 in the child, the pid in the parent."""
    args = _CloneArgs(flags=flags | CLONE_INTO_CGROUP, exit_signal=SIGCHLD, cgroup=cgroup_fd)
    ret = _clone_syscall(NR["clone3"], ctypes.addressof(args), ctypes.sizeof(args), None, None, None)
    if ret < 0:
        _fail("clone3")
    return ret


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        _fail("unshare")


def setns(fd: int, nstype: int = 0) -> None:
    if _libc.setns(fd, nstype) != 0:
        _fail("setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    if _libc.mount(source.encode() if source is not None else None, target.encode(),
                   fstype.encode() if fstype is not None else None, flags,
                   data.encode() if data else None) != 0:
        _fail("mount", target)


def fsmount(fstype: str, source: str, options: list[tuple[str, str | None]], attrs: int) -> int:
    """A new ``fstype`` file system, mounted nowhere yet: an fd (close-on-exec) for move_mount(). ``options``
    are its parameters, (key, value) or (flag, None), as mount(2)'s data string would give them."""
    fs = _syscall(NR["fsopen"], fstype.encode(), ctypes.c_uint(FSOPEN_CLOEXEC))
    if fs < 0:
        _fail("fsopen", fstype)
    try:
        for key, value in [("source", source), *options]:
            if value is None:
                ret = _syscall(NR["fsconfig"], ctypes.c_int(fs), ctypes.c_uint(FSCONFIG_SET_FLAG), key.encode(), None,
                               ctypes.c_int(0))
            else:
                ret = _syscall(NR["fsconfig"], ctypes.c_int(fs), ctypes.c_uint(FSCONFIG_SET_STRING), key.encode(),
                               value.encode(), ctypes.c_int(0))
            if ret < 0:
                _fail("fsconfig", f"{fstype} {key}")
        if _syscall(NR["fsconfig"], ctypes.c_int(fs), ctypes.c_uint(FSCONFIG_CMD_CREATE), None, None,
                    ctypes.c_int(0)) < 0:
            _fail("fsconfig create", fstype)
        mfd = _syscall(NR["fsmount"], ctypes.c_int(fs), ctypes.c_uint(FSMOUNT_CLOEXEC), ctypes.c_uint(attrs))
        if mfd < 0:
            _fail("fsmount", fstype)
        return mfd
    finally:
        os.close(fs)


def move_mount(fd: int, target: str, target_dir: int = AT_FDCWD) -> None:
    """Attach the detached mount ``fd`` (fsmount(), open_tree()) at ``target`` (relative to ``target_dir``,
    which may be a detached tree itself)."""
    if _syscall(NR["move_mount"], ctypes.c_int(fd), b"", ctypes.c_int(target_dir), target.encode(),
                ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)) != 0:
        _fail("move_mount", target)


def open_tree_clone(dir_fd: int, path: str, recursive: bool = False) -> int:
    """A detached copy of the mount at ``path`` (relative to ``dir_fd``): a bind mount not attached yet."""
    fd = _syscall(NR["open_tree"], ctypes.c_int(dir_fd), path.encode(),
                  ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)))
    if fd < 0:
        _fail("open_tree", path)
    return fd


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def mount_setattr(fd: int, attr_set: int, recursive: bool = False) -> None:
    """Set mount attributes (MOUNT_ATTR_*) on the mount ``fd`` refers to (and those below it)."""
    attr = _MountAttr(attr_set, 0, 0, 0)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    if _syscall(NR["mount_setattr"], ctypes.c_int(fd), b"", ctypes.c_uint(flags), ctypes.byref(attr),
                ctypes.c_size_t(ctypes.sizeof(attr))) != 0:
        _fail("mount_setattr")


def umount2(target: str, flags: int = 0) -> None:
    if _libc.umount2(target.encode(), flags) != 0:
        _fail("umount", target)


def pivot_root(new_root: str, put_old: str) -> None:
    if _syscall(NR["pivot_root"], new_root.encode(), put_old.encode()) != 0:
        _fail("pivot_root", new_root)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    ret = _libc.prctl(option, arg2, arg3, arg4, arg5)
    if ret < 0:
        _fail(f"prctl({option})")
    return ret


def sethostname(name: str) -> None:
    b = name.encode()
    if _libc.sethostname(b, len(b)) != 0:
        _fail("sethostname")


def setdomainname(name: str) -> None:
    b = name.encode()
    if _libc.setdomainname(b, len(b)) != 0:
        _fail("setdomainname")


def ioctl_int(fd: int, request: int, value: int = 0) -> int:
    """ioctl with an int argument passed by value (TIOCSCTTY)."""
    ret = _libc.ioctl(fd, request, ctypes.c_void_p(value))
    if ret < 0:
        _fail(f"ioctl({request:#x})")
    return ret


def ioctl_ptr_int(fd: int, request: int, value: int = 0) -> int:
    """ioctl with a pointer to an int (TIOCGPTN reads it, TIOCSPTLCK writes it)."""
    v = ctypes.c_int(value)
    if _libc.ioctl(fd, request, ctypes.byref(v)) < 0:
        _fail(f"ioctl({request:#x})")
    return v.value


def pidfd_open(pid: int) -> int:
    ret = _syscall(NR["pidfd_open"], ctypes.c_int(pid), ctypes.c_uint(0))
    if ret < 0:
        _fail("pidfd_open")
    return ret


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    if _syscall(NR["pidfd_send_signal"], ctypes.c_int(pidfd), ctypes.c_int(sig), None, ctypes.c_uint(0)) < 0:
        _fail("pidfd_send_signal")


def close_range_cloexec(first: int) -> None:
    """Mark every fd >= first close-on-exec, so nothing of the caller leaks into the container."""
    if _syscall(NR["close_range"], ctypes.c_uint(first), ctypes.c_uint(0xFFFFFFFF),
                ctypes.c_uint(CLOSE_RANGE_CLOEXEC)) < 0:
        _fail("close_range")


def join_session_keyring(name: str) -> None:
    """A fresh session keyring, so containers never share the caller's (best effort, like runc)."""
    if _syscall(NR["keyctl"], ctypes.c_int(KEYCTL_JOIN_SESSION_KEYRING), name.encode()) < 0:
        _fail("keyctl(JOIN_SESSION_KEYRING)")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_CAP_V3 = 0x20080522


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _CapHeader(_CAP_V3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> (32 * i)) & 0xFFFFFFFF
    if _syscall(NR["capset"], ctypes.byref(hdr), ctypes.byref(data)) != 0:
        _fail("capset")


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class SeccompProgram:
    """A BPF program kept in memory the child can load without allocating: built in the parent before clone."""

    def __init__(self, bpf: bytes) -> None:
        if len(bpf) % 8:
            raise ValueError("seccomp program is not a whole number of BPF instructions")
        self.bpf = bpf
        self.origin: str | None = None  # a file holding the same program, if any (BpfCache.path)
        self._buf = ctypes.create_string_buffer(bpf, len(bpf))
        self._prog = SockFprog(len(bpf) // 8, ctypes.cast(self._buf, ctypes.c_void_p))

    def load(self) -> None:
        if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(self._prog), 0, 0) != 0:
            _fail("seccomp(SET_MODE_FILTER)")


_SIG_DFL_ACTION = ctypes.create_string_buffer(32)  # struct kernel_sigaction, all zero: SIG_DFL, no flags, no mask


def default_signal(signum: int) -> None:
    """The default action for any signal number, glibc's reserved 32 and 33 included: Python's signal module
    refuses those, and glibc's sigaction() too, so this is the raw rt_sigaction system call."""
    if _syscall(NR["rt_sigaction"], ctypes.c_int(signum), _SIG_DFL_ACTION, None, ctypes.c_size_t(8)) != 0:
        _fail(f"rt_sigaction({signum}, SIG_DFL)")
