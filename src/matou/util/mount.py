"""mount(2), umount2(2) and the new mount API through ctypes (Python 3.11 has none of them).

Overlay mounts with many lower layers can exceed the one-page limit of mount(2)'s option string; for those
we use fsopen/fsconfig with ``lowerdir+`` (Linux 6.8+), one layer per call, which has no such limit.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Sequence

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2
MNT_FORCE = 1

_SYS_MOVE_MOUNT = 429
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432
_FSCONFIG_SET_FLAG = 0
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_MOVE_MOUNT_F_EMPTY_PATH = 4
_AT_FDCWD = -100

_OPTION_LIMIT = 4000  # mount(2) copies at most one page of options

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return ret


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode() if source is not None else None,
            target.encode(),
            fstype.encode() if fstype is not None else None,
            flags,
            data.encode() if data is not None else None,
        ),
        f"mount {fstype or ''} {source or ''} on {target}",
        target,
    )


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}", target)


def is_mountpoint(path: str) -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            needle = " " + _escape(os.path.realpath(path)) + " "
            return any(needle in line.split(" - ")[0] for line in f)
    except OSError:
        return False


def mounts_under(prefix: str) -> list[str]:
    """Mount points at or below ``prefix`` (for cleanup and leak checks)."""
    prefix = os.path.realpath(prefix)
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = _unescape(line.split()[4])
            if mp == prefix or mp.startswith(prefix.rstrip("/") + "/"):
                out.append(mp)
    return out


def mount_overlay(target: str, lowers: Sequence[str], upper: str | None = None, work: str | None = None,
                  extra: Sequence[str] = ()) -> None:
    """Mount overlayfs; ``lowers`` are ordered top first. Read-only when ``upper`` is None."""
    if upper is None and len(lowers) == 1:
        mount(lowers[0], target, None, MS_BIND)
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        return
    opts = ["lowerdir=" + ":".join(_escape_overlay(p) for p in lowers)]
    if upper is not None:
        opts += [f"upperdir={_escape_overlay(upper)}", f"workdir={_escape_overlay(work or '')}"]
    opts += list(extra)
    data = ",".join(opts)
    if len(data) < _OPTION_LIMIT:
        mount("overlay", target, "overlay", 0, data)
        return
    _mount_overlay_fsconfig(target, lowers, upper, work, extra)


def _mount_overlay_fsconfig(target: str, lowers: Sequence[str], upper: str | None, work: str | None,
                            extra: Sequence[str]) -> None:
    sc = _libc.syscall
    fsfd = _check(sc(_SYS_FSOPEN, b"overlay", 1), "fsopen overlay")  # FSOPEN_CLOEXEC
    try:
        _check(sc(_SYS_FSCONFIG, fsfd, _FSCONFIG_SET_STRING, b"source", b"overlay", 0), "fsconfig source")
        for p in lowers:
            _check(sc(_SYS_FSCONFIG, fsfd, _FSCONFIG_SET_STRING, b"lowerdir+", p.encode(), 0),
                   "fsconfig lowerdir+ (needs Linux 6.8+ for images with this many layers)", p)
        if upper is not None:
            _check(sc(_SYS_FSCONFIG, fsfd, _FSCONFIG_SET_STRING, b"upperdir", upper.encode(), 0), "fsconfig upperdir")
            _check(sc(_SYS_FSCONFIG, fsfd, _FSCONFIG_SET_STRING, b"workdir", (work or "").encode(), 0),
                   "fsconfig workdir")
        for opt in extra:
            k, _, v = opt.partition("=")
            if v:
                _check(sc(_SYS_FSCONFIG, fsfd, _FSCONFIG_SET_STRING, k.encode(), v.encode(), 0), f"fsconfig {k}")
            else:
                _check(sc(_SYS_FSCONFIG, fsfd, _FSCONFIG_SET_FLAG, k.encode(), None, 0), f"fsconfig {k}")
        _check(sc(_SYS_FSCONFIG, fsfd, _FSCONFIG_CMD_CREATE, None, None, 0), "fsconfig create")
        mfd = _check(sc(_SYS_FSMOUNT, fsfd, 1, 0), "fsmount")
        try:
            _check(sc(_SYS_MOVE_MOUNT, mfd, b"", _AT_FDCWD, target.encode(), _MOVE_MOUNT_F_EMPTY_PATH),
                   "move_mount", target)
        finally:
            os.close(mfd)
    finally:
        os.close(fsfd)


def _escape_overlay(p: str) -> str:
    return p.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def _escape(p: str) -> str:
    return p.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")


def _unescape(p: str) -> str:
    return p.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
