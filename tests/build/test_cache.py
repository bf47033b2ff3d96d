"""The build cache: fully cached rebuilds, content (not mtime) keys, --explain-cache, --no-cache, --cache-from,
cache kept across a failed build, and builder prune."""

from __future__ import annotations

import os
import re
import time

from tests.build.conftest import Build, inspect, write_context
from tests.conftest import Daemon

DOCKERFILE = """\
FROM busybox
COPY a.txt /a.txt
RUN cat /a.txt > /copy-of-a
COPY dir/ /dir/
RUN ls /dir > /listing
ENV DONE=1
"""


def _ran(out: str) -> list[str]:
    """The instructions of the steps that ran (were not cached)."""
    steps = re.split(r"^Step \d+/\d+ : ", out, flags=re.M)[1:]
    return [s.splitlines()[0] for s in steps if " ---> Using cache" not in s and not s.startswith("FROM")]


def test_rebuild_cached_and_only_changed_steps_rerun(daemon: Daemon, build: Build, tmp_path: str) -> None:
    ctx = write_context(os.path.join(str(tmp_path), "c"), {"Dockerfile": DOCKERFILE, "a.txt": "a1\n",
                                                           "dir/x": "x1\n", "dir/y": "y1\n"})
    first = build(ctx, "--network", "none", "-t", "bt-cache")
    assert len(_ran(first.stdout)) == 5
    image = inspect(daemon, "bt-cache")["Id"]

    again = build(ctx, "--network", "none", "-t", "bt-cache")
    assert _ran(again.stdout) == [] and again.stdout.count(" ---> Using cache") == 5
    assert " ---> Running in" not in again.stdout
    assert inspect(daemon, "bt-cache")["Id"] == image

    # touch: new mtimes, same content -> still fully cached, same image
    future = time.time() + 100
    for p in ("a.txt", "dir/x", "dir/y"):
        os.utime(os.path.join(ctx, p), (future, future))
    touched = build(ctx, "--network", "none", "-t", "bt-cache")
    assert _ran(touched.stdout) == [] and inspect(daemon, "bt-cache")["Id"] == image

    # one file of the second COPY changes: only that COPY and what follows run
    with open(os.path.join(ctx, "dir/y"), "w") as f:
        f.write("y2\n")
    changed = build(ctx, "--network", "none", "-t", "bt-cache", "--explain-cache")
    assert _ran(changed.stdout) == ["COPY dir/ /dir/", "RUN ls /dir > /listing", "ENV DONE=1"]
    assert "Cache miss: source files changed: changed: dir/y" in changed.stdout
    assert "Cache miss: an earlier step was rebuilt" in changed.stdout
    assert inspect(daemon, "bt-cache")["Id"] != image

    # a mode change is a content change too
    os.chmod(os.path.join(ctx, "a.txt"), 0o600)
    moded = build(ctx, "--network", "none", "-t", "bt-cache", "--explain-cache")
    assert _ran(moded.stdout)[0] == "COPY a.txt /a.txt" and len(_ran(moded.stdout)) == 5
    assert "source files changed: changed: a.txt" in moded.stdout

    # an edited instruction is explained as such; --no-cache runs everything
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(DOCKERFILE.replace("ENV DONE=1", "ENV DONE=2"))
    edited = build(ctx, "--network", "none", "-t", "bt-cache", "--explain-cache")
    assert _ran(edited.stdout) == ["ENV DONE=2"]
    assert "Cache miss: the instruction changed: was 'ENV DONE=1', now 'ENV DONE=2'" in edited.stdout
    nocache = build(ctx, "--network", "none", "-t", "bt-cache", "--no-cache", "--explain-cache")
    assert len(_ran(nocache.stdout)) == 5 and "the cache is disabled (--no-cache)" in nocache.stdout


def test_cache_survives_a_failed_build(daemon: Daemon, build: Build, tmp_path: str) -> None:
    ctx = write_context(os.path.join(str(tmp_path), "f"), {"Dockerfile": (
        f"FROM busybox\nRUN echo {time.time_ns()} > /stamp\nRUN exit 1\n")})
    r = build(ctx, "--network", "none", check=False)
    assert r.returncode == 1
    with open(os.path.join(ctx, "Dockerfile")) as f:
        text = f.read().replace("RUN exit 1", "RUN true")
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(text)
    fixed = build(ctx, "--network", "none", "-t", "bt-fixed")
    assert _ran(fixed.stdout) == ["RUN true"]


def test_cache_from(daemon: Daemon, build: Build, tmp_path: str) -> None:
    ctx = write_context(os.path.join(str(tmp_path), "cf"), {"Dockerfile": (
        f"FROM busybox\nRUN echo {time.time_ns()} > /stamp\nCOPY f /f\nCMD [\"cat\", \"/f\"]\n"), "f": "f\n"})
    build(ctx, "--network", "none", "-t", "bt-cache-from")
    source = inspect(daemon, "bt-cache-from")
    daemon.cli("builder", "prune", "-a", "-f")  # no local cache entries left
    warm = build(ctx, "--network", "none", "-t", "bt-cache-from-3", "--cache-from", "bt-cache-from")
    assert _ran(warm.stdout) == []
    got = inspect(daemon, "bt-cache-from-3")
    assert got["RootFS"] == source["RootFS"] and got["Config"] == source["Config"]


def test_builder_prune_reports_bytes(daemon: Daemon, build: Build, tmp_path: str) -> None:
    ctx = write_context(os.path.join(str(tmp_path), "p"), {"Dockerfile": (
        f"FROM busybox\nRUN head -c 300000 /dev/urandom > /blob && echo {time.time_ns()}\n")})
    build(ctx, "--network", "none", "-t", "bt-prune")
    daemon.cli("rmi", "bt-prune")
    out = daemon.out("builder", "prune", "-f")
    m = re.search(r"Total reclaimed space: ([\d.]+)(kB|MB|GB|B)", out)
    assert m, out
    value = float(m.group(1)) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[m.group(2)]
    assert value >= 300_000
    assert "Deleted build cache objects:" in out
    again = daemon.out("builder", "prune", "-f")
    m2 = re.search(r"Total reclaimed space: ([\d.]+)(kB|MB|GB|B)", again)
    assert m2 and float(m2.group(1)) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[m2.group(2)] < 100_000
