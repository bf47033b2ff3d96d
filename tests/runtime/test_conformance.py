"""One suite, three runtimes: the built-in one, runc and crun run the same bundles and must behave alike.

runc's and crun's inits are re-parented to us, so the module makes this process a child subreaper while it runs
(and stops being one afterwards). crun 1.8 refuses the hybrid cgroup layout: its tests mount a v1 hugetlb
hierarchy (PEERS.md) unless one is there already, and undo it at the end.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from matou.runtime.api import ExecError
from matou.runtime.ocicli import OciCliRuntime
from matou.runtime.spec import Resources
from tests.runtime.conftest import Tracked

pytestmark = pytest.mark.timeout(120)
_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36
HUGETLB = "/sys/fs/cgroup/hugetlb"


@pytest.fixture(scope="module")
def subreaper() -> Iterator[None]:
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@contextlib.contextmanager
def _hugetlb_v1() -> Iterator[None]:
    from matou.runtime.linux import cgroups

    if os.path.ismount(HUGETLB) or any("hugetlb" in h.controllers for h in cgroups.detect()):
        yield  # somebody else's workaround (wherever mounted): use it, leave it
        return
    made = not os.path.exists(HUGETLB)
    if made:
        os.mkdir(HUGETLB)
    r = subprocess.run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", HUGETLB], capture_output=True)
    if r.returncode != 0:
        if made:
            os.rmdir(HUGETLB)
        pytest.skip(f"cannot mount a v1 hugetlb hierarchy for crun: {r.stderr.decode().strip()}")
    try:
        yield
    finally:
        for dirpath, _d, _f in sorted(os.walk(HUGETLB, topdown=False), key=lambda t: -len(t[0])):
            if dirpath != HUGETLB:
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)
        subprocess.run(["umount", HUGETLB], capture_output=True)
        if made:
            with contextlib.suppress(OSError):
                os.rmdir(HUGETLB)


@pytest.fixture(scope="module")
def crun_layout() -> Iterator[None]:
    with _hugetlb_v1():
        yield


@pytest.fixture(params=["builtin", "runc", "crun"])
def anyrt(request, tmp_path, subreaper, cgroup_parent) -> Iterator[Tracked]:
    kind = request.param
    if kind == "builtin":
        yield request.getfixturevalue("builtin")
        return
    if shutil.which(kind) is None:
        pytest.skip(f"{kind} is not installed")
    if kind == "crun":
        request.getfixturevalue("crun_layout")
    t = Tracked(OciCliRuntime(kind, str(tmp_path / kind)), kind)
    try:
        yield t
    finally:
        t.cleanup()


SCRIPT = ("grep CapEff /proc/self/status; hostname; ps -o pid,comm > /tmp/ps; echo ps=$(wc -l < /tmp/ps); "
          "echo timer=$(wc -c < /proc/timer_list); grep ' /sys sysfs' /proc/mounts | cut -d' ' -f4 | cut -d, -f1;"
          " mkdir -p /mnt; mount -t tmpfs none /mnt 2>/dev/null; echo mount=$?; unshare -m true 2>/dev/null;"
          " echo unshare=$?; id; echo HOME=$HOME; grep -vc ':/$' /proc/self/cgroup; ls /dev | tr '\\n' ' '")


def test_default_container(anyrt, bundles):
    b = bundles.make("dflt", ["sh", "-c", SCRIPT], hostname="conf")
    code, out = anyrt.run("dflt", b)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[:10] == ["CapEff:\t00000000a80425fb", "conf", "ps=3", "timer=0", "ro", "mount=1", "unshare=1",
                          "uid=0(root) gid=0(root)", "HOME=/root", "0"], out
    devs = set(lines[-1].split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx", "fd",
            "stdin", "stdout", "stderr"} <= devs, devs


def test_exit_code_and_missing_program(anyrt, bundles):
    b = bundles.make("ex7", ["sh", "-c", "exit 7"])
    assert anyrt.run("ex7", b)[0] == 7
    b2 = bundles.make("nope", ["definitely-not-here"])
    with pytest.raises(ExecError) as ei:
        anyrt.create("nope", b2, stdio=(0, 1, 2))
    assert ei.value.exit_code == 127
    assert 'exec: "definitely-not-here"' in str(ei.value) or "definitely-not-here" in str(ei.value)


def test_exec_and_pause(anyrt, bundles):
    b = bundles.make("xp", ["sleep", "1000"])
    null = os.open(os.devnull, os.O_RDWR)
    pid = anyrt.create("xp", b, stdio=(null, null, null))
    os.close(null)
    anyrt.rt.start("xp")
    assert anyrt.rt.state("xp")["status"] == "running"
    r, w = os.pipe()
    proc = dict(bundles.config(b)["process"], args=["sh", "-c", "ps -o pid,comm"], terminal=False)
    xpid = anyrt.exec("xp", proc, stdio=(0, w, w))
    os.close(w)
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    os.close(r)
    assert anyrt.wait(xpid) == 0
    rows = [line.split() for line in out.decode().splitlines()[1:]]
    assert ["1", "sleep"] in rows and len(rows) == 2, out  # sleep, and ps (sh execs it)
    anyrt.rt.pause("xp")
    assert anyrt.rt.state("xp")["status"] == "paused"
    anyrt.rt.resume("xp")
    assert anyrt.rt.state("xp")["status"] == "running"
    assert pid in anyrt.rt.pids("xp")
    anyrt.rt.kill("xp", signal.SIGKILL)
    assert anyrt.wait(pid) == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while anyrt.rt.state("xp")["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.01)
    anyrt.rt.delete("xp")


def test_oom(anyrt, bundles):
    b = bundles.make("oomc", ["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"],
                     resources=Resources(memory=64 * 1024 * 1024))
    null = os.open(os.devnull, os.O_RDWR)
    pid = anyrt.create("oomc", b, stdio=(null, null, null))
    os.close(null)
    anyrt.rt.start("oomc")
    assert anyrt.wait(pid) == -signal.SIGKILL
    assert anyrt.rt.oom_killed("oomc")
    assert anyrt.rt.stats("oomc")["memory"]["limit"] == 64 * 1024 * 1024
    anyrt.rt.delete("oomc")


def test_terminal(anyrt, bundles):
    from tests.runtime.test_container import _read_until

    b = bundles.make("tt", ["sh", "-c", "tty; echo done"], terminal=True)
    pid, master = anyrt.create_tty("tt", b)
    try:
        anyrt.rt.start("tt")
        out = _read_until(master, b"done")
        code = anyrt.wait(pid)  # before closing the master, which would hang up the terminal
    finally:
        os.close(master)
    assert code == 0
    assert b"/dev/pts/0" in out, out
    anyrt.rt.delete("tt")
