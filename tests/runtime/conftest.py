"""Runtime test fixtures: a busybox rootfs made from Debian's static busybox, overlay bundles, a private cgroup
parent, and runtimes (built-in, runc, crun) that all clean up after themselves."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from matou.runtime.builtin import BuiltinRuntime
from matou.runtime.linux import cgroups
from matou.runtime.spec import default_spec

BUSYBOX = "/bin/busybox"
_libc = ctypes.CDLL(None, use_errno=True)


def _mount(src: str, dst: str, fstype: str, data: str) -> None:
    if _libc.mount(src.encode(), dst.encode(), fstype.encode(), 0, data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), dst)


def _umount(path: str) -> None:
    _libc.umount2(path.encode(), 2)


def make_busybox_rootfs(path: str) -> str:
    os.makedirs(os.path.join(path, "bin"))
    shutil.copy(BUSYBOX, os.path.join(path, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for name in applets:
        if name != "busybox":
            os.symlink("busybox", os.path.join(path, "bin", name))
    for d in ("proc", "sys", "dev", "etc", "tmp", "root", "home/user", "sbin", "usr/bin"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    with open(os.path.join(path, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n"
                "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    with open(os.path.join(path, "etc", "group"), "w") as f:
        f.write("root:x:0:\nwheel:x:10:root,user\nuser:x:1000:\nstaff:x:50:user\nnogroup:x:65534:\n")
    with open(os.path.join(path, "etc", "notexec"), "w") as f:
        f.write("#!/bin/sh\necho hi\n")
    return path


@pytest.fixture(scope="session")
def busybox_rootfs() -> Iterator[str]:
    if not os.path.exists(BUSYBOX):
        pytest.skip("busybox-static is not installed")
    d = tempfile.mkdtemp(prefix="matou-rt-bb-", dir="/tmp")
    try:
        yield make_busybox_rootfs(os.path.join(d, "rootfs"))
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def probe_binary(busybox_rootfs: str) -> str | None:
    """A static C program that calls a syscall and prints the errno: busybox has no keyctl."""
    if shutil.which("gcc") is None:
        return None
    src = os.path.join(os.path.dirname(busybox_rootfs), "probe.c")
    with open(src, "w") as f:
        f.write('#include <stdio.h>\n#include <errno.h>\n#include <string.h>\n#include <unistd.h>\n'
                '#include <sys/syscall.h>\nint main(int c, char **v) {\n'
                '  long r = -1;\n'
                '  if (!strcmp(v[1], "keyctl")) r = syscall(SYS_keyctl, 0 /*GET_KEYRING_ID*/, -3, 0);\n'
                '  else if (!strcmp(v[1], "unshare")) r = syscall(SYS_unshare, 0x20000);\n'
                '  else if (!strcmp(v[1], "mount")) r = syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, 0);\n'
                '  printf("%s %ld %s\\n", v[1], r, r < 0 ? strerrorname_np(errno) : "OK");\n  return 0;\n}\n')
    out = os.path.join(busybox_rootfs, "bin", "probe")
    r = subprocess.run(["gcc", "-static", "-O1", "-o", out, src], capture_output=True)
    return "/bin/probe" if r.returncode == 0 else None


@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    """A cgroup parent of our own in every hierarchy, removed (with anything left below) afterwards."""
    parent = f"/matou-test-{uuid.uuid4().hex[:10]}"
    yield parent
    for h in cgroups.detect():
        base = h.mountpoint + parent
        if not os.path.isdir(base):
            continue
        for dirpath, _dirs, _files in sorted(os.walk(base, topdown=False), key=lambda t: -len(t[0])):
            # EBUSY for a moment while a just-removed child cgroup is still being torn down
            with contextlib.suppress(Exception):
                cgroups.rmdir_wait(dirpath, timeout=2.0)


@dataclass
class Bundles:
    """Bundles with an overlay rootfs over the shared busybox tree (writes never reach the shared tree)."""

    base: str
    lower: str
    cgroup_parent: str
    mounted: list[str] = field(default_factory=list)

    def make(self, name: str, args: list[str], **opts: Any) -> str:
        bundle = os.path.join(self.base, name)
        upper, work, merged = (os.path.join(bundle, d) for d in ("upper", "work", "rootfs"))
        for d in (upper, work, merged):
            os.makedirs(d)
        _mount("overlay", merged, "overlay", f"lowerdir={self.lower},upperdir={upper},workdir={work}")
        self.mounted.append(merged)
        self.write(bundle, args, **opts)
        return bundle

    def write(self, bundle: str, args: list[str], *, raw: dict[str, Any] | None = None, **opts: Any) -> None:
        opts.setdefault("cgroups_path", f"{self.cgroup_parent}/{os.path.basename(bundle)}")
        spec = default_spec(args=args, **opts)
        if raw:
            spec.update(raw)
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(spec, f, indent=1)

    def config(self, bundle: str) -> dict[str, Any]:
        with open(os.path.join(bundle, "config.json")) as f:
            return json.load(f)

    def save_config(self, bundle: str, cfg: dict[str, Any]) -> None:
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(cfg, f)

    def cleanup(self) -> None:
        for m in reversed(self.mounted):
            _umount(m)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def bundles(busybox_rootfs: str, cgroup_parent: str) -> Iterator[Bundles]:
    b = Bundles(tempfile.mkdtemp(prefix="matou-rt-b-", dir="/tmp"), busybox_rootfs, cgroup_parent)
    try:
        yield b
    finally:
        b.cleanup()


class Tracked:
    """A runtime plus the containers and pids a test made, all removed at teardown."""

    def __init__(self, rt: Any, kind: str) -> None:
        self.rt = rt
        self.kind = kind
        self.ids: list[str] = []
        self.pids: list[int] = []

    def create(self, cid: str, bundle: str, **kw: Any) -> int:
        self.ids.append(cid)
        pid = self.rt.create(cid, bundle, **kw)
        self.pids.append(pid)
        return pid

    def create_tty(self, cid: str, bundle: str) -> tuple[int, int]:
        self.ids.append(cid)
        pid, master = self.rt.create_tty(cid, bundle)
        self.pids.append(pid)
        return pid, master

    def exec(self, cid: str, process: dict[str, Any], **kw: Any) -> int:
        pid = self.rt.exec(cid, process, **kw)
        self.pids.append(pid)
        return pid

    def wait(self, pid: int) -> int:
        _, status = os.waitpid(pid, 0)
        with contextlib.suppress(ValueError):
            self.pids.remove(pid)
        return os.waitstatus_to_exitcode(status)

    def run(self, cid: str, bundle: str, timeout: float = 60) -> tuple[int, str]:
        """create + start + wait + delete, collecting stdout and stderr together."""
        r, w = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            pid = self.create(cid, bundle, stdio=(null, w, w))
        finally:
            os.close(w)
            os.close(null)
        try:
            self.rt.start(cid)
            chunks = []
            while True:
                b = os.read(r, 65536)
                if not b:
                    break
                chunks.append(b)
        finally:
            os.close(r)
        code = self.wait(pid)
        self.rt.delete(cid, force=True)
        self.ids.remove(cid)
        return code, b"".join(chunks).decode(errors="replace")

    def cleanup(self) -> None:
        for cid in self.ids:
            with contextlib.suppress(Exception):
                self.rt.delete(cid, force=True)
        for pid in self.pids:
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


@pytest.fixture
def builtin(tmp_path: Any, cgroup_parent: str) -> Iterator[Tracked]:
    """Depends on cgroup_parent so that its containers are deleted before the parent cgroup is removed."""
    t = Tracked(BuiltinRuntime(str(tmp_path / "state")), "builtin")
    try:
        yield t
    finally:
        t.cleanup()
