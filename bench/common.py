"""Helpers the benchmarks share: the hybrid-cgroup workaround peers need (PEERS.md), mount cleanup."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator

HUGETLB = "/sys/fs/cgroup/hugetlb"


@contextlib.contextmanager
def hugetlb_v1() -> Iterator[None]:
    """crun 1.8 (podman's runtime) refuses hybrid cgroups: mount a v1 hugetlb hierarchy while a peer runs.
    Undone afterwards (child cgroups first, as PEERS.md says) unless it was there before."""
    if os.path.ismount(HUGETLB) or shutil.which("crun") is None or not os.path.isdir("/sys/fs/cgroup/unified"):
        yield
        return
    made = not os.path.exists(HUGETLB)
    if made:
        os.mkdir(HUGETLB)
    subprocess.run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", HUGETLB], check=True)
    try:
        yield
    finally:
        for d in sorted((dp for dp, _dn, _fn in os.walk(HUGETLB)), key=len, reverse=True)[:-1]:
            with contextlib.suppress(OSError):
                os.rmdir(d)
        subprocess.run(["umount", HUGETLB], check=False)
        if made:
            with contextlib.suppress(OSError):
                os.rmdir(HUGETLB)


def unmount_under(prefix: str) -> None:
    """Unmount everything at or below prefix, deepest first."""
    for _ in range(5):
        with open("/proc/self/mountinfo") as f:
            mps = {ln.split()[4] for ln in f}
        mine = sorted((m for m in mps if m == prefix or m.startswith(prefix.rstrip("/") + "/")), key=len,
                      reverse=True)
        if not mine:
            return
        for mp in mine:
            subprocess.run(["umount", "-l", mp], capture_output=True)
