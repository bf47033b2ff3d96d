"""200 create/start/wait/delete cycles leave no mounts, cgroups, processes, fds or state behind."""

from __future__ import annotations

import os

import pytest

from matou.runtime.linux import cgroups

pytestmark = pytest.mark.timeout(180)


def _mounts(prefix: str) -> list[str]:
    """Mount points under our bundles (other work on this machine mounts things elsewhere meanwhile)."""
    with open("/proc/self/mountinfo") as f:
        return sorted(m for m in (line.split()[4] for line in f) if m.startswith(prefix))


def _children() -> set[int]:
    me = str(os.getpid())
    out = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if data[data.rindex(b")") + 2:].split()[1].decode() == me:
                out.add(int(pid))
    return out


def test_200_cycles_leave_nothing_behind(builtin, bundles, cgroup_parent):
    b = bundles.make("cyc", ["true"], hostname="cyc")
    mounts0, fds0, kids0 = _mounts(bundles.base), sorted(os.listdir("/proc/self/fd")), _children()
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for i in range(200):
            cid = f"cyc{i}"
            pid = builtin.create(cid, b, stdio=(null, null, null))
            builtin.rt.start(cid)
            assert builtin.wait(pid) == 0
            builtin.rt.delete(cid)
            builtin.ids.remove(cid)
    finally:
        os.close(null)
    assert _mounts(bundles.base) == mounts0 == [f"{b}/rootfs"]
    assert sorted(os.listdir("/proc/self/fd")) == fds0
    assert _children() == kids0
    assert builtin.rt.list() == []
    assert [e for e in os.listdir(builtin.rt.root) if not e.startswith(".")] == []
    for h in cgroups.detect():
        base = h.mountpoint + cgroup_parent
        assert not os.path.isdir(base) or [d for d in os.listdir(base)
                                           if os.path.isdir(os.path.join(base, d))] == []
