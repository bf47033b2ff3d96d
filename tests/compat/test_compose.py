"""docker-compose 1.29 (PyPI, in .venv-compose; it calls every endpoint under /v1.38/) against matoud:
up -d, ps, logs, exec, down -v for two services sharing a user network and a named volume, one port published."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.compat.conftest import COMPOSE, Docker, free_port, has_feature, require_tool, uid
from tests.compat.test_docker_cli import http_get

PROJECT = """\
version: "3.7"
services:
  web:
    image: busybox
    command: ["httpd", "-f", "-p", "80", "-h", "/www"]
    stop_grace_period: 1s
    ports:
      - "{port}:80"
    volumes:
      - data:/www
    networks:
      - appnet
  worker:
    image: busybox
    command: ["sh", "-c", "echo hello-from-worker > /www/index.html; echo worker-started; exec sleep 300"]
    stop_grace_period: 1s
    volumes:
      - data:/www
    networks:
      - appnet
volumes:
  data:
networks:
  appnet:
"""


def test_compose_project(docker: Docker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    compose = require_tool(COMPOSE, "docker-compose 1.29")
    if not has_feature(docker.daemon, "GET", "/networks"):
        pytest.skip("networking has not landed")
    port, project = free_port(), "cp" + uid()
    (tmp_path / "docker-compose.yml").write_text(PROJECT.format(port=port))
    env = dict(docker.env)
    env["COMPOSE_PROJECT_NAME"] = project

    def dc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([compose, "--no-ansi", *args], cwd=str(tmp_path), env=env, capture_output=True,
                           timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed ({r.returncode}):\n"
                                 f"{r.stdout.decode(errors='replace')}\n{r.stderr.decode(errors='replace')}")
        return r

    try:
        r = dc("up", "-d")
        err = r.stderr.decode()
        assert f'Creating network "{project}_appnet"' in err and f'Creating volume "{project}_data"' in err
        ps = dc("ps").stdout.decode()
        for svc in ("web", "worker"):
            assert f"{project}_{svc}_1" in ps
        assert f"0.0.0.0:{port}->80/tcp" in ps and ps.count(" Up ") == 2
        assert http_get(port, "/index.html") == "hello-from-worker\n"
        deadline = time.monotonic() + 10
        while "worker-started" not in dc("logs", "worker").stdout.decode() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "worker-started" in dc("logs", "--no-color").stdout.decode()
        # service discovery on the user network, through exec without and with a terminal
        out = dc("exec", "-T", "worker", "sh", "-c", "wget -qO- http://web/index.html").stdout
        assert out == b"hello-from-worker\n"
        code, tty_out = Docker(compose, docker.daemon, docker.config_dir).tty(
            "--project-directory", str(tmp_path), "-f", str(tmp_path / "docker-compose.yml"), "-p", project,
            "exec", "worker", "sh", input=b"echo tty-$((3*3)); exit\r")
        assert code == 0 and b"tty-9" in tty_out, tty_out
        assert docker.out("volume", "ls", "-q").split().count(f"{project}_data") == 1
    finally:
        r = dc("down", "-v", check=False)
    assert r.returncode == 0, r.stderr.decode()
    assert not [n for n in docker.out("ps", "-a", "--format", "{{.Names}}").split() if n.startswith(project)]
    assert f"{project}_data" not in docker.out("volume", "ls", "-q").split()
    assert f"{project}_appnet" not in docker.out("network", "ls", "--format", "{{.Name}}").split()
