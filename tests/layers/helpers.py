"""Helpers for the layer tests: sample trees, tree snapshots, and hand-made tar bytes (independent of matou's
own tar writer, so the reader is tested against a second implementation)."""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

BLOCK = 512
CAP_NET_RAW = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)  # vfs_cap_data v2, effective, cap_net_raw


def snapshot(root: str) -> dict[bytes, tuple]:
    """Everything a layer must preserve, per path (the root's own metadata excluded).

    Hardlinks show as the first path (sorted) of their inode; mtimes in whole seconds.
    """
    broot = os.fsencode(root)
    entries: dict[bytes, tuple] = {}
    inodes: dict[tuple[int, int], list[bytes]] = {}
    for dirpath, dirs, files in os.walk(broot):
        for name in sorted(dirs + files):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, broot)
            st = os.lstat(full)
            mode = st.st_mode
            if stat.S_ISREG(mode):
                with open(full, "rb") as f:
                    content = hashlib.sha256(f.read()).hexdigest()
                kind = ("f", st.st_size, content)
            elif stat.S_ISDIR(mode):
                kind = ("d",)
            elif stat.S_ISLNK(mode):
                kind = ("l", os.readlink(full))
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                kind = ("c" if stat.S_ISCHR(mode) else "b", os.major(st.st_rdev), os.minor(st.st_rdev))
            elif stat.S_ISFIFO(mode):
                kind = ("p",)
            else:
                kind = ("?",)
            try:
                xattrs = tuple(sorted((n, os.getxattr(full, n, follow_symlinks=False))
                                      for n in os.listxattr(full, follow_symlinks=False)))
            except OSError:
                xattrs = ()
            perm = 0 if stat.S_ISLNK(mode) else stat.S_IMODE(mode)
            entries[rel] = (kind, perm, st.st_uid, st.st_gid, st.st_mtime_ns // 1_000_000_000, xattrs)
            if not stat.S_ISDIR(mode) and st.st_nlink > 1:
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
    for paths in inodes.values():
        first = min(paths)
        for p in paths:
            entries[p] = entries[p] + (("link-group", first),)
    return entries


def whole_second_mtimes(root: str) -> None:
    """Truncate every mtime below root to whole seconds (tar keeps seconds), contents before directories."""
    for dirpath, dirs, files in os.walk(root, topdown=False):
        for name in files + dirs:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            s = st.st_mtime_ns // 1_000_000_000 * 1_000_000_000
            os.utime(full, ns=(s, s), follow_symlinks=False)


def build_sample_tree(root: str) -> None:
    """A tree with every supported kind of entry and metadata."""
    os.makedirs(root, exist_ok=True)
    j = os.path.join

    def write(rel: str | bytes, data: bytes, mode: int = 0o644) -> None:
        path = os.path.join(os.fsencode(root), os.fsencode(rel))
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)

    os.makedirs(j(root, "etc", "conf.d"))
    os.makedirs(j(root, "usr", "bin"))
    os.makedirs(j(root, "tmp"))
    os.makedirs(j(root, "empty"))
    os.makedirs(j(root, "shared"))
    write("etc/hostname", b"box\n")
    write("etc/conf.d/empty.conf", b"")
    write("etc/exactly512", b"x" * 512)
    write("etc/big.bin", os.urandom(3 << 20) + b"tail")  # bigger than the small-file path
    write("usr/bin/tool", b"#!/bin/sh\necho hi\n", 0o755)
    write("usr/bin/suid", b"\x7fELF", 0o4755)
    write("usr/bin/sgid", b"\x7fELF", 0o2711)
    write("usr/bin/ping", b"\x7fELF", 0o755)
    os.setxattr(j(root, "usr/bin/ping"), "security.capability", CAP_NET_RAW)
    write("etc/group-writable", b"g", 0o664)
    write("etc/private", b"secret", 0o600)
    write("etc/weird-mode", b"w", 0o7777)
    os.chmod(j(root, "tmp"), 0o1777)
    os.chmod(j(root, "shared"), 0o2775)
    os.chmod(j(root, "empty"), 0o700)
    os.chown(j(root, "etc/private"), 1000, 1001)
    os.chown(j(root, "shared"), 0, 50)
    write("etc/big-ids", b"ids")
    os.chown(j(root, "etc/big-ids"), 3_000_000, 4_000_000)  # beyond ustar's 7 octal digits: PAX uid/gid
    os.setxattr(j(root, "etc/hostname"), "user.comment", b"a\x00binary\xffvalue")
    os.setxattr(j(root, "etc/hostname"), "trusted.md5", b"x" * 200)
    os.setxattr(j(root, "etc"), "user.dir", b"on a dir")
    # hardlinks within and across directories
    os.link(j(root, "usr/bin/tool"), j(root, "usr/bin/tool-again"))
    os.link(j(root, "usr/bin/tool"), j(root, "etc/tool-link"))
    # symlinks: relative, absolute, dangling, long target, owned
    os.symlink("tool", j(root, "usr/bin/alias"))
    os.symlink("/etc/hostname", j(root, "etc/abs-link"))
    os.symlink("does/not/exist", j(root, "dangling"))
    os.symlink("t" * 150, j(root, "long-target"))
    os.lchown(j(root, "dangling"), 7, 8)
    # devices and fifos
    os.mknod(j(root, "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(j(root, "loop"), stat.S_IFBLK | 0o660, os.makedev(7, 0))
    os.mkfifo(j(root, "fifo"), 0o620)
    # long names and paths, unusual bytes
    long_dir = j(root, "d" * 120, "e" * 120)
    os.makedirs(long_dir)
    write(os.path.relpath(j(long_dir, "f" * 200), root), b"deep")
    deep = j(root, *["lvl"] * 30)
    os.makedirs(deep)
    write(os.path.relpath(j(deep, "leaf"), root), b"leaf")
    write("日本語.txt", b"unicode")
    write(b"raw-\xff\xfe-bytes", b"not utf-8 name")
    write("name with spaces & $ymbols", b"s")
    os.utime(j(root, "etc/hostname"), ns=(1_000_000_000, -1_000_000_000 + 0))  # before the epoch
    os.utime(j(root, "etc/big-ids"), ns=(1, 10**19))  # beyond ustar's 11 octal digits of seconds
    whole_second_mtimes(root)


def octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def raw_header(name: bytes, *, typeflag: bytes = b"0", size: int = 0, mode: int = 0o644, uid: int = 0,
               gid: int = 0, mtime: int = 1_700_000_000, linkname: bytes = b"", devmajor: int = 0,
               devminor: int = 0, magic: bytes = b"ustar\x0000", prefix: bytes = b"",
               checksum_delta: int = 0, size_field: bytes | None = None) -> bytes:
    """A ustar header block built by hand (with an optional wrong checksum or raw size field)."""
    block = bytearray(BLOCK)
    block[0:100] = name[:100].ljust(100, b"\0")
    block[100:108] = octal(mode, 8)
    block[108:116] = octal(uid, 8)
    block[116:124] = octal(gid, 8)
    block[124:136] = size_field if size_field is not None else octal(size, 12)
    block[136:148] = octal(mtime, 12)
    block[156:157] = typeflag
    block[157:257] = linkname[:100].ljust(100, b"\0")
    block[257:265] = magic
    block[329:337] = octal(devmajor, 8)
    block[337:345] = octal(devminor, 8)
    block[345:500] = prefix[:155].ljust(155, b"\0")
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % (sum(block) + checksum_delta)
    return bytes(block)


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def member(name: bytes, data: bytes = b"", **kw: object) -> bytes:
    """A header plus its padded data."""
    return raw_header(name, size=len(data), **kw) + pad(data)  # type: ignore[arg-type]


def pax_member(records: dict[bytes, bytes], name: bytes = b"PaxHeader") -> bytes:
    body = b""
    for k, v in records.items():
        rec = b" " + k + b"=" + v + b"\n"
        n = len(rec) + 1
        while len(str(n)) + len(rec) != n:
            n = len(str(n)) + len(rec)
        body += str(n).encode() + rec
    return member(name, body, typeflag=b"x")


def archive(*members: bytes) -> bytes:
    return b"".join(members) + bytes(2 * BLOCK)


def listing(root: str) -> list[str]:
    """Every path below root (to check that nothing appeared where it must not)."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            out.append(os.path.relpath(os.path.join(dirpath, n), root))
    return sorted(out)


@contextmanager
def overlay(lowers: list[str], upper: str, work: str, merged: str) -> Iterator[str]:
    """Mount an overlay (lowers top first), always unmounted afterwards."""
    opts = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work},index=off,redirect_dir=off,metacopy=off"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, merged], check=True)
    try:
        yield merged
    finally:
        subprocess.run(["umount", merged], check=True)


@contextmanager
def overlay_ro(lowers: list[str], merged: str) -> Iterator[str]:
    opts = f"lowerdir={':'.join(lowers)}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, merged], check=True)
    try:
        yield merged
    finally:
        subprocess.run(["umount", merged], check=True)
