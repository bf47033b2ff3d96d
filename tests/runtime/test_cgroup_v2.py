"""The cgroup v2 driver, run on the cgroup2 mount of this hybrid host (or on a pure v2 host as it is):
clone3(CLONE_INTO_CGROUP), the in-container cgroup2 mount, cgroup.freeze, pids, stats, removal."""

from __future__ import annotations

import os
import signal
import time

import pytest

from matou.runtime.builtin import BuiltinRuntime
from matou.runtime.linux import cgroups
from tests.runtime.conftest import Tracked

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def v2(tmp_path):
    h2 = [h for h in cgroups.detect() if h.version == 2]
    if not h2:
        pytest.skip("no cgroup2 mount on this host")
    t = Tracked(BuiltinRuntime(str(tmp_path / "state"), hierarchies=h2[:1]), "builtin-v2")
    try:
        yield t, h2[0]
    finally:
        t.cleanup()


def test_v2_driver(v2, bundles, cgroup_parent):
    t, h = v2
    b = bundles.make("v2", ["sh", "-c", "cat /proc/self/cgroup; grep ' /sys/fs/cgroup ' /proc/mounts | cut -d' ' -f3;"
                                       " exec sleep 1000"])
    r, w = os.pipe()
    pid = t.create("v2", b, stdio=(0, w, w))
    os.close(w)
    d = h.mountpoint + f"{cgroup_parent}/v2"
    with open(os.path.join(d, "cgroup.procs")) as f:
        assert int(f.read().split()[0]) == pid  # born there, before start
    t.rt.start("v2")
    out = b""
    while b"cgroup2\n" not in out:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        out += chunk
    os.close(r)
    lines = out.decode().splitlines()
    assert "0::/" in lines and lines[-1] == "cgroup2", out  # its own root in the v2 hierarchy
    xpid = t.exec("v2", {"args": ["true"], "env": ["PATH=/bin"], "cwd": "/"})
    assert t.wait(xpid) == 0
    assert t.rt.pids("v2") == [pid]
    t.rt.pause("v2")
    assert t.rt.state("v2")["status"] == "paused"
    t.rt.resume("v2")
    assert t.rt.state("v2")["status"] == "running"
    st = t.rt.stats("v2")
    assert st["cpu"]["usage"]["total"] > 0
    t.rt.kill("v2", signal.SIGKILL)
    assert t.wait(pid) == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while t.rt.state("v2")["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.01)
    t.rt.delete("v2")
    assert not os.path.exists(d)
