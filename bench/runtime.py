"""Namespaced /bin/true on an overlay rootfs: matou's built-in runtime in-process vs `crun run` and `runc run`.

Same bundle for all three (Docker's default config from matou.runtime.spec: six namespaces, 14 capabilities,
no_new_privs, Docker's seccomp profile, masked/read-only paths, memory+pids cgroup limits), interleaved A B C A B C,
medians over N rounds. The built-in runtime's seccomp program comes from its on-disk cache after the first round.
crun 1.8 refuses this VM's hybrid cgroup layout, so (as PEERS.md says) a v1 hugetlb hierarchy is mounted for the
run if none is, and removed afterwards.

Usage: python bench/runtime.py [ROUNDS]
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from common import hugetlb_v1  # noqa: E402

from matou.runtime.builtin import BuiltinRuntime  # noqa: E402
from matou.runtime.linux import cgroups  # noqa: E402
from matou.runtime.spec import Resources, default_spec  # noqa: E402

_libc = ctypes.CDLL(None, use_errno=True)


def make_rootfs(path: str) -> None:
    os.makedirs(os.path.join(path, "bin"))
    shutil.copy("/bin/busybox", os.path.join(path, "bin", "busybox"))
    for name in ("sh", "true"):
        os.symlink("busybox", os.path.join(path, "bin", name))
    for d in ("proc", "sys", "dev", "etc", "tmp"):
        os.makedirs(os.path.join(path, d))


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    tmp = tempfile.mkdtemp(prefix="matou-bench-rt-", dir="/tmp")
    cg_parent = f"/matou-bench-{uuid.uuid4().hex[:8]}"
    merged = os.path.join(tmp, "bundle", "rootfs")
    mounted = False
    try:
        lower = os.path.join(tmp, "lower")
        make_rootfs(lower)
        for d in ("upper", "work", "bundle/rootfs"):
            os.makedirs(os.path.join(tmp, d))
        opts = f"lowerdir={lower},upperdir={tmp}/upper,workdir={tmp}/work".encode()
        if _libc.mount(b"overlay", merged.encode(), b"overlay", 0, opts) != 0:
            raise OSError(ctypes.get_errno(), "overlay mount")
        mounted = True
        bundle = os.path.join(tmp, "bundle")
        spec = default_spec(args=["/bin/true"], hostname="bench", no_new_privileges=True,
                            cgroups_path=f"{cg_parent}/c", resources=Resources(memory=256 << 20, pids_limit=100))
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(spec, f)
        rt = BuiltinRuntime(os.path.join(tmp, "state"))
        # on a hybrid host, also the v2 driver on the cgroup2 mount: born in its cgroup (clone3), no migration,
        # hence no RCU grace period; no limits there (that mount has no memory/pids controllers here)
        h2 = [h for h in cgroups.detect() if h.version == 2]
        hybrid = bool(h2) and any(h.version == 1 for h in cgroups.detect())
        rt2 = BuiltinRuntime(os.path.join(tmp, "state2"), hierarchies=h2[:1]) if hybrid else None
        bundle2 = os.path.join(tmp, "bundle2")
        os.makedirs(bundle2)
        spec2 = default_spec(args=["/bin/true"], hostname="bench", no_new_privileges=True, rootfs=merged,
                             cgroups_path=f"{cg_parent}/c2")
        with open(os.path.join(bundle2, "config.json"), "w") as f:
            json.dump(spec2, f)
        null = os.open(os.devnull, os.O_RDWR)
        parts: dict[str, list[float]] = {k: [] for k in ("create", "start", "wait", "delete")}

        def builtin() -> None:
            t0 = time.perf_counter()
            pid = rt.create("c", bundle, stdio=(null, null, null))
            t1 = time.perf_counter()
            rt.start("c")
            t2 = time.perf_counter()
            _, status = os.waitpid(pid, 0)
            t3 = time.perf_counter()
            rt.delete("c")
            t4 = time.perf_counter()
            assert status == 0, status
            for k, a, b in (("create", t0, t1), ("start", t1, t2), ("wait", t2, t3), ("delete", t3, t4)):
                parts[k].append((b - a) * 1000)

        def cli(binary: str) -> None:
            r = subprocess.run([binary, "--root", os.path.join(tmp, binary), "run", "--bundle", bundle, "c"],
                               stdin=null, stdout=null, stderr=subprocess.PIPE)
            if r.returncode != 0:
                raise RuntimeError(f"{binary}: {r.stderr.decode()}")

        def builtin_v2() -> None:
            pid = rt2.create("c2", bundle2, stdio=(null, null, null))
            rt2.start("c2")
            _, status = os.waitpid(pid, 0)
            rt2.delete("c2")
            assert status == 0, status

        contenders = {"matou builtin (in-process)": builtin}
        if rt2 is not None:
            contenders["matou builtin, v2 cgroup only"] = builtin_v2
        for b in ("crun", "runc"):
            if shutil.which(b):
                contenders[f"{b} run"] = lambda b=b: cli(b)
        times: dict[str, list[float]] = {k: [] for k in contenders}
        with hugetlb_v1():
            for fn in contenders.values():  # warm-up: page cache, seccomp cache
                fn()
            for k in parts:
                parts[k].clear()
            for _ in range(rounds):
                for name, fn in contenders.items():
                    t = time.perf_counter()
                    fn()
                    times[name].append((time.perf_counter() - t) * 1000)
        os.close(null)
        base = statistics.median(times["matou builtin (in-process)"])
        print(f"namespaced /bin/true, overlay rootfs, caps+no_new_privs+seccomp+cgroups; {rounds} interleaved rounds")
        for name, v in times.items():
            med = statistics.median(v)
            print(f"  {name:28s} median {med:7.2f} ms  (p10 {sorted(v)[len(v) // 10]:6.2f}, "
                  f"p90 {sorted(v)[len(v) * 9 // 10]:6.2f})  builtin/this = {base / med:5.2f}x")
        print("  builtin breakdown (medians): " + ", ".join(f"{k} {statistics.median(v):.2f} ms"
                                                         for k, v in parts.items()))
    finally:
        if mounted:
            _libc.umount2(merged.encode(), 2)
        for h in cgroups.detect():
            base_dir = h.mountpoint + cg_parent
            for dirpath, _d, _f in sorted(os.walk(base_dir, topdown=False), key=lambda t: -len(t[0])):
                with contextlib.suppress(Exception):
                    cgroups.rmdir_wait(dirpath, timeout=2.0)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
