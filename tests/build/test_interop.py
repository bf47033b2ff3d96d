"""The real docker CLI (legacy builder, DOCKER_BUILDKIT=0) against matoud gives the same images as matou build."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.build.conftest import Build, inspect, sh, write_context
from tests.build.test_build import _everything_context
from tests.conftest import Daemon

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
pytestmark = pytest.mark.skipif(not os.path.exists(DOCKER), reason="docker CLI not installed")


def docker(daemon: Daemon, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update({"DOCKER_HOST": daemon.host, "DOCKER_BUILDKIT": "0", "DOCKER_CONFIG": daemon.root + "/docker-cfg"})
    return subprocess.run([DOCKER, *args], capture_output=True, env=env, input=input, timeout=300)


def test_docker_cli_builds_the_same_config(daemon: Daemon, build: Build, tmp_path: str) -> None:
    ctx = _everything_context(os.path.join(str(tmp_path), "ctx"))
    build(ctx, "--network", "none", "--no-cache", "-t", "bt-interop-matou", "--label", "extra=1")
    r = docker(daemon, "build", "--network", "none", "--no-cache", "-t", "bt-interop-docker", "--label", "extra=1",
               "--iidfile", os.path.join(str(tmp_path), "iid"), ctx)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "Step 1/37 : ARG BASE=busybox" in out and "Successfully tagged bt-interop-docker:latest" in out
    mine, theirs = inspect(daemon, "bt-interop-matou"), inspect(daemon, "bt-interop-docker")
    assert theirs["Config"] == mine["Config"]
    assert theirs["Author"] == mine["Author"]
    assert len(theirs["RootFS"]["Layers"]) == len(mine["RootFS"]["Layers"])
    with open(os.path.join(str(tmp_path), "iid")) as f:
        assert f.read() == theirs["Id"]
    script = "cd /app && ls -R . /extract /docs /json | md5sum"
    assert sh(daemon, "bt-interop-docker", script) == sh(daemon, "bt-interop-matou", script)


def test_docker_cli_shares_the_cache(daemon: Daemon, build: Build, tmp_path: str) -> None:
    ctx = write_context(os.path.join(str(tmp_path), "c"), {
        "Dockerfile": "FROM busybox\nCOPY . /ctx/\nRUN ls /ctx > /listing\n", "a": "a", "d/b": "b",
        ".dockerignore": "*.tmp\n", "x.tmp": "ignored"})
    build(ctx, "--network", "none", "-t", "bt-shared")
    again = docker(daemon, "build", "--network", "none", "-t", "bt-shared-docker", ctx)
    out = again.stdout.decode()
    assert again.returncode == 0 and out.count(" ---> Using cache") == 2 and " ---> Running in" not in out
    assert inspect(daemon, "bt-shared-docker")["Id"] == inspect(daemon, "bt-shared")["Id"]


def test_docker_cli_errors_and_quiet(daemon: Daemon, build: Build, tmp_path: str) -> None:
    bad = write_context(os.path.join(str(tmp_path), "bad"), {"Dockerfile": "FROM busybox\nRUN exit 5\n"})
    r = docker(daemon, "build", "--network", "none", bad)
    assert r.returncode == 5 and "returned a non-zero code: 5" in r.stderr.decode()
    parse = write_context(os.path.join(str(tmp_path), "parse"), {"Dockerfile": "FROM busybox\nBOGUS x\n"})
    r = docker(daemon, "build", parse)
    assert r.returncode != 0 and "unknown instruction: BOGUS" in r.stderr.decode() and "line 2" in r.stderr.decode()
    ok = write_context(os.path.join(str(tmp_path), "ok"), {"Dockerfile": "FROM busybox\nLABEL q=1\n"})
    r = docker(daemon, "build", "-q", ok)
    assert r.returncode == 0 and r.stdout.decode().strip().startswith("sha256:")
    r = docker(daemon, "build", "-t", "bt-interop-stdin", "-", input=b"FROM busybox\nLABEL stdin=1\n")
    assert r.returncode == 0 and inspect(daemon, "bt-interop-stdin")["Config"]["Labels"] == {"stdin": "1"}
