"""spec.default_spec (Docker's defaults), the seccomp profile and its compilation, users.resolve_user."""

from __future__ import annotations

import os
import resource

import pytest

from matou.errors import InvalidArgument
from matou.runtime.linux import caps
from matou.runtime.linux.seccomp import BpfCache, compile_bpf
from matou.runtime.spec import DEFAULT_CAPS, MASKED_PATHS, READONLY_PATHS, Resources, default_seccomp, default_spec
from matou.runtime.users import resolve_user


def _names(section):
    out = set()
    for r in section["syscalls"]:
        if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args"):
            out.update(r["names"])
    return out


def test_default_spec_matches_docker():
    s = default_spec(args=["sh"], hostname="h")
    p = s["process"]
    assert len(DEFAULT_CAPS) == 14
    assert p["capabilities"]["bounding"] == list(DEFAULT_CAPS)
    assert caps.mask(DEFAULT_CAPS) == 0xA80425FB
    assert p["env"][0].startswith("PATH=/usr/local/sbin")
    assert {n["type"] for n in s["linux"]["namespaces"]} == {"mount", "network", "uts", "pid", "ipc", "cgroup"}
    dests = [m["destination"] for m in s["mounts"]]
    assert dests == ["/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue", "/dev/shm"]
    pts = s["mounts"][2]["options"]
    assert "newinstance" in pts and "ptmxmode=0666" in pts and "gid=5" in pts
    assert "size=67108864" in s["mounts"][6]["options"]
    assert "ro" in s["mounts"][3]["options"] and "ro" in s["mounts"][4]["options"]
    assert s["linux"]["maskedPaths"] == list(MASKED_PATHS)
    assert s["linux"]["readonlyPaths"] == list(READONLY_PATHS)
    rules = s["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"} in rules
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = next(r for r in p["rlimits"] if r["type"] == "RLIMIT_NOFILE")
    assert nofile["hard"] <= hard and nofile["soft"] <= hard
    sec = s["linux"]["seccomp"]
    assert sec["defaultAction"] == "SCMP_ACT_ERRNO" and sec["defaultErrnoRet"] == 1
    allowed = _names(sec)
    assert {"read", "write", "execve", "clone3"} - allowed == {"clone3"}
    assert not {"mount", "unshare", "keyctl", "add_key", "reboot", "bpf"} & allowed
    assert "chroot" in allowed  # CAP_SYS_CHROOT is a default cap


def test_privileged_and_options():
    s = default_spec(args=["sh"], privileged=True)
    assert "seccomp" not in s["linux"] and "maskedPaths" not in s["linux"]
    assert "CAP_SYS_ADMIN" in s["process"]["capabilities"]["bounding"]
    assert "ro" not in s["mounts"][3]["options"]
    assert s["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert any(d["path"] == "/dev/null" for d in s["linux"]["devices"])
    s = default_spec(args=["sh"], cap_add=["SYS_ADMIN"], cap_drop=["NET_RAW"], readonly_rootfs=True,
                     resources=Resources(memory=1 << 26, cpu_quota=50000, cpu_period=100000, cpu_shares=512,
                                         pids_limit=50), oom_score_adj=100, no_new_privileges=True,
                     namespace_paths={"network": "/run/netns/x"}, tmpfs={"/run": "size=1m"}, terminal=True)
    assert "CAP_SYS_ADMIN" in s["process"]["capabilities"]["effective"]
    assert "CAP_NET_RAW" not in s["process"]["capabilities"]["effective"]
    assert "mount" in _names(s["linux"]["seccomp"])  # SYS_ADMIN opens the admin syscalls
    assert s["root"]["readonly"] is True and s["process"]["noNewPrivileges"] is True
    assert s["process"]["oomScoreAdj"] == 100 and "TERM=xterm" in s["process"]["env"]
    res = s["linux"]["resources"]
    assert res["memory"] == {"limit": 1 << 26, "swap": 1 << 27}
    assert res["cpu"] == {"shares": 512, "quota": 50000, "period": 100000} and res["pids"] == {"limit": 50}
    assert {"type": "network", "path": "/run/netns/x"} in s["linux"]["namespaces"]
    assert any(m["destination"] == "/run" and "size=1m" in m["options"] for m in s["mounts"])
    with pytest.raises(InvalidArgument):
        default_spec(args=["sh"], cap_add=["NOT_A_CAP"])
    with pytest.raises(InvalidArgument):
        default_spec(args=[])


def test_seccomp_compiles_and_caches(tmp_path):
    section = default_seccomp(list(DEFAULT_CAPS))
    bpf = compile_bpf(section)
    assert len(bpf) % 8 == 0 and len(bpf) > 8 * 50
    cache = BpfCache(str(tmp_path))
    assert cache.get(section) == bpf
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].endswith(".bpf")
    assert BpfCache(str(tmp_path)).get(section) == bpf  # read back from disk
    (tmp_path / files[0]).write_bytes(b"junk")  # a damaged cache entry is rebuilt
    assert BpfCache(str(tmp_path)).get(section) == bpf


def test_resolve_user(busybox_rootfs):
    r = busybox_rootfs
    assert tuple(resolve_user(r, "")) == (0, 0, [10], "/root")
    assert tuple(resolve_user(r, "user")) == (1000, 1000, [10, 50], "/home/user")
    assert tuple(resolve_user(r, "1000")) == (1000, 1000, [10, 50], "/home/user")
    assert tuple(resolve_user(r, "user:staff")) == (1000, 50, [], "/home/user")
    assert tuple(resolve_user(r, "1000:77")) == (1000, 77, [], "/home/user")
    assert tuple(resolve_user(r, "4242")) == (4242, 0, [], "/")
    assert tuple(resolve_user(r, "4242:4343")) == (4242, 4343, [], "/")
    with pytest.raises(InvalidArgument, match="unable to find user ghost"):
        resolve_user(r, "ghost")
    with pytest.raises(InvalidArgument, match="unable to find group ghosts"):
        resolve_user(r, "user:ghosts")
    assert tuple(resolve_user("/nonexistent-root", "12:34")) == (12, 34, [], "/")
