"""Resource limits through the built-in runtime's cgroups: memory/OOM, pids, freezer, update, stats, cleanup."""

from __future__ import annotations

import os
import signal
import time

import pytest

from matou.errors import Conflict
from matou.runtime.linux import cgroups
from matou.runtime.spec import Resources

pytestmark = pytest.mark.timeout(120)


def _cg_dirs(parent: str) -> list[str]:
    out = []
    for h in cgroups.detect():
        base = h.mountpoint + parent
        if os.path.isdir(base):
            out += [os.path.join(base, d) for d in os.listdir(base) if os.path.isdir(os.path.join(base, d))]
    return out


def test_memory_limit_kills_and_reports_oom(builtin, bundles):
    b = bundles.make("oom", ["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"],
                     resources=Resources(memory=64 * 1024 * 1024))
    pid = builtin.create("oom", b, stdio=(0, os.open(os.devnull, os.O_WRONLY), 2))
    assert builtin.rt.stats("oom")["memory"]["limit"] == 64 * 1024 * 1024
    assert builtin.rt.oom_killed("oom") is False
    builtin.rt.start("oom")
    assert builtin.wait(pid) == -signal.SIGKILL
    assert builtin.rt.oom_killed("oom") is True
    builtin.rt.delete("oom")


def test_pids_limit_contains_a_fork_bomb(builtin, bundles):
    # the inner shell gives up when fork fails; the outer one never forks again (exec)
    script = ("sh -c 'i=0; while [ $i -lt 120 ]; do sleep 30 & i=$((i+1)); done' 2>/dev/null;"
              " echo started; exec sleep 30")
    b = bundles.make("bomb", ["sh", "-c", script], resources=Resources(pids_limit=50))
    r, w = os.pipe()
    pid = builtin.create("bomb", b, stdio=(0, w, w))
    os.close(w)
    builtin.rt.start("bomb")
    out = b""
    while b"started" not in out:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        out += chunk
    os.close(r)
    assert b"started" in out
    pids = builtin.rt.pids("bomb")
    stats = builtin.rt.stats("bomb")
    assert len(pids) <= 50
    assert stats["pids"]["limit"] == 50 and stats["pids"]["current"] <= 50
    assert len(pids) >= 40
    builtin.rt.kill("bomb", signal.SIGKILL, all=True)
    builtin.wait(pid)
    builtin.rt.delete("bomb")


def test_pause_resume_update_stats(builtin, bundles):
    b = bundles.make("pz", ["sh", "-c", "while true; do echo x >> /tmp/ticks; usleep 10000; done"],
                     resources=Resources(memory=128 * 1024 * 1024, cpu_quota=50000, cpu_period=100000,
                                         cpu_shares=512))
    pid = builtin.create("pz", b)
    builtin.rt.start("pz")
    with pytest.raises(Conflict):
        builtin.rt.resume("pz")
    time.sleep(0.1)
    builtin.rt.pause("pz")
    assert builtin.rt.state("pz")["status"] == "paused"
    ticks = f"{b}/upper/tmp/ticks"
    n1 = os.path.getsize(ticks)
    time.sleep(0.15)
    assert os.path.getsize(ticks) == n1  # frozen: no progress
    builtin.rt.resume("pz")
    assert builtin.rt.state("pz")["status"] == "running"
    deadline = time.monotonic() + 5
    while os.path.getsize(ticks) == n1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.path.getsize(ticks) > n1

    builtin.rt.update("pz", {"memory": {"limit": 96 * 1024 * 1024, "swap": 192 * 1024 * 1024},
                             "pids": {"limit": 20}, "cpu": {"quota": 20000}})
    st = builtin.rt.stats("pz")
    assert st["memory"]["limit"] == 96 * 1024 * 1024
    assert st["pids"]["limit"] == 20
    assert st["memory"]["usage"] > 0 and st["cpu"]["usage"]["total"] > 0
    assert st["system_cpu_usage"] > 0 and st["online_cpus"] >= 1
    assert len(st["cpu"]["usage"]["percpu"]) >= 1 or st["cpu"]["usage"]["percpu"] == []
    builtin.rt.kill("pz", signal.SIGKILL)
    builtin.wait(pid)
    builtin.rt.delete("pz")


def test_delete_force_paused_container_removes_its_cgroups(builtin, bundles, cgroup_parent):
    b = bundles.make("fz", ["sleep", "1000"])
    pid = builtin.create("fz", b)
    builtin.rt.start("fz")
    assert _cg_dirs(cgroup_parent)
    builtin.rt.pause("fz")
    builtin.rt.delete("fz", force=True)
    assert builtin.wait(pid) == -signal.SIGKILL
    assert _cg_dirs(cgroup_parent) == []


def test_container_sees_its_own_cgroup(builtin, bundles):
    b = bundles.make("cgv", ["sh", "-c", "cat /proc/self/cgroup | head -3; cat /sys/fs/cgroup/memory/memory.limit_in_bytes"
                                           " 2>/dev/null || cat /sys/fs/cgroup/memory.max; touch /sys/fs/cgroup/x 2>&1; true"],
                     resources=Resources(memory=32 * 1024 * 1024))
    code, out = builtin.run("cgv", b)
    assert code == 0
    assert str(32 * 1024 * 1024) in out
    lines = out.splitlines()
    assert all(line.endswith(":/") for line in lines[:3]), out  # cgroup namespace: the container's root
    assert "Read-only file system" in out
