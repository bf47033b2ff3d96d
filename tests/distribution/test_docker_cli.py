"""The docker CLI (v28) against matoud: login, push, pull and search through matou's Engine API."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from tests.conftest import Daemon
from tests.distribution.conftest import USERS, Reg, app_image

pytestmark = pytest.mark.peers


@pytest.fixture
def docker(daemon: Daemon) -> Iterator[list[str]]:
    exe = shutil.which("docker")
    if exe is None:
        pytest.skip("the docker CLI is not installed")
    cfg = tempfile.mkdtemp(prefix="matou-dockercfg-")
    try:
        yield [exe, "--config", cfg, "-H", daemon.host]
    finally:
        shutil.rmtree(cfg, ignore_errors=True)


def dk(cmd: list[str], *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(cmd + list(args), input=input, capture_output=True, text=True, timeout=180)
    if check and p.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {p.stdout}\n{p.stderr}")
    return p


def test_docker_cli_login_push_pull_search(daemon: Daemon, busybox: str, auth_reg: Reg, docker: list[str]) -> None:
    host = auth_reg.host
    name = f"{host}/alice/dockercli"
    app_image(daemon, busybox, f"{name}:1", "from-docker-cli")
    r = dk(docker, "login", "-u", "alice", "--password-stdin", host, input=USERS["alice"])
    assert "Login Succeeded" in r.stdout
    out = dk(docker, "push", f"{name}:1").stdout
    assert "1: digest: sha256:" in out
    dk(docker, "rmi", f"{name}:1")
    out = dk(docker, "pull", f"{name}:1").stdout
    assert "Pull complete" in out or "Already exists" in out
    assert out.strip().endswith(f"{name}:1")
    names = dk(docker, "search", "--format", "{{.Name}}", f"{host}/alice").stdout.split()
    assert "alice/pub" in names and "alice/priv" in names
    dk(docker, "logout", host)
    names = dk(docker, "search", "--format", "{{.Name}}", f"{host}/alice").stdout.split()
    assert "alice/pub" in names and "alice/priv" not in names
    dk(docker, "rmi", f"{name}:1")
