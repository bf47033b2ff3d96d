"""The real Docker clients (docker CLI, docker-py, docker-compose 1.29) against a live matoud of this package's own.

One daemon serves the whole package (``cd``): the tests prune, watch events and publish ports, which must not
disturb the session daemon other packages share. Every test names its objects with a random suffix and removes
them; the daemon's teardown removes whatever is left (containers, then networks) and checks that its bridge and
nftables table went with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import ROOT, Daemon, _new_daemon

COMPOSE = os.path.join(ROOT, ".venv-compose", "bin", "docker-compose")
REG_USER, REG_PASSWORD = "compat", "compat-pw"


def docker_binary() -> str | None:
    for cand in ("/usr/local/bin/docker", shutil.which("docker")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uid() -> str:
    return os.urandom(3).hex()


def require_tool(path: str | None, what: str) -> str:
    """Skip when a client is missing on a developer's machine; fail in CI, where `make install` provides it."""
    if path and os.access(path, os.X_OK):
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing (make install provides it)")
    pytest.skip(f"{what} is not installed (run make install)")


@dataclass
class Docker:
    """The docker CLI pointed at one matoud with DOCKER_HOST alone, a private DOCKER_CONFIG and the legacy builder."""

    binary: str
    daemon: Daemon
    config_dir: str

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update({"DOCKER_HOST": self.daemon.host, "DOCKER_CONFIG": self.config_dir, "DOCKER_BUILDKIT": "0",
                    "DOCKER_CLI_HINTS": "false"})
        return env

    def __call__(self, *args: str, input: bytes | str | None = None, check: bool = True, timeout: float = 60,
                 cwd: str | None = None) -> subprocess.CompletedProcess:
        if isinstance(input, str):
            input = input.encode()
        r = subprocess.run([self.binary, *args], input=input, capture_output=True, timeout=timeout, env=self.env,
                           cwd=cwd)
        if check and r.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({r.returncode}):\n"
                                 f"stdout: {r.stdout.decode(errors='replace')}\n"
                                 f"stderr: {r.stderr.decode(errors='replace')}\n"
                                 f"daemon log:\n{self.daemon.log()[-2000:]}")
        return r

    def out(self, *args: str, **kw) -> str:  # type: ignore[no-untyped-def]
        return self(*args, **kw).stdout.decode()

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([self.binary, *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def tty(self, *args: str, input: bytes = b"", timeout: float = 20) -> tuple[int, bytes]:
        """Run on a pseudo-terminal (for -it), type ``input``, return (exit status, everything the terminal showed)."""
        pid, fd = pty.fork()
        if pid == 0:  # child: exec at once
            try:
                os.execve(self.binary, [self.binary, *args], self.env)
            finally:
                os._exit(127)
        out = bytearray()
        deadline = time.monotonic() + timeout
        sent = False
        status = None
        try:
            while time.monotonic() < deadline:
                r, _, _ = select.select([fd], [], [], 0.1)
                if r:
                    try:
                        data = os.read(fd, 65536)
                    except OSError:
                        data = b""
                    if not data:
                        break
                    out += data
                if not sent and (out or time.monotonic() > deadline - timeout + 1.0):
                    os.write(fd, input)
                    sent = True
                done, st = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = st
                    with contextlib.suppress(OSError):
                        while select.select([fd], [], [], 0.05)[0]:
                            data = os.read(fd, 65536)
                            if not data:
                                break
                            out += data
                    break
        finally:
            if status is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
            os.close(fd)
        return os.waitstatus_to_exitcode(status), bytes(out)

    def wait_for(self, what: str, check, timeout: float = 15) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")


def _daemon_config(d: Daemon) -> dict:
    with open(d.extra_args[d.extra_args.index("--config-file") + 1]) as f:
        return json.load(f)


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def drain(d: Daemon) -> None:
    """Remove every container and user network of a test daemon (its teardown then removes bridge and table)."""
    with contextlib.suppress(Exception):
        ids = d.out("ps", "-aq").split()
        if ids:
            d.cli("rm", "-f", *ids, check=False)
    with contextlib.suppress(Exception):
        nets = d.out("network", "ls", "-q", "--filter", "type=custom").split()
        if nets:
            d.cli("network", "rm", *nets, check=False)


@contextlib.contextmanager
def private_daemon(prefix: str, config: dict | None = None, extra: list[str] | None = None) -> Iterator[Daemon]:
    d = _new_daemon(prefix, extra)
    if config:
        cfg_path = d.extra_args[d.extra_args.index("--config-file") + 1]
        cfg = _daemon_config(d)
        cfg.update(config)
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
    bridge = _daemon_config(d)["bridge"]
    try:
        d.start()
        yield d
    finally:
        drain(d)
        d.cleanup()
        assert not _link_exists(bridge), f"bridge {bridge} left behind"


@pytest.fixture(scope="package")
def cd() -> Iterator[Daemon]:
    """The compat package's matoud, with busybox."""
    with private_daemon("matou-compat-") as d:
        d.cli("image", "bootstrap", "busybox")
        yield d


@pytest.fixture(scope="package")
def docker_config_dir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="matou-compat-dockercfg-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def docker(cd: Daemon, docker_config_dir: str) -> Docker:
    return Docker(require_tool(docker_binary(), "the docker CLI"), cd, docker_config_dir)


@pytest.fixture
def dpy(cd: Daemon) -> Iterator:  # type: ignore[type-arg]
    import docker as docker_py

    client = docker_py.DockerClient(base_url=cd.host, timeout=60)
    try:
        yield client
    finally:
        client.close()


def has_feature(d: Daemon, method: str, path: str) -> bool:
    """Whether a route another engineer owns has landed: a missing route answers 404 "page not found" (or 501)."""
    api = d.api()
    try:
        r = api.request(method, path, check=False)
        body = r.read()
        r.close()
    except Exception:
        return False
    return not (r.status == 501 or (r.status == 404 and b"page not found" in body))


@pytest.fixture(scope="package")
def registry() -> Iterator:
    """matou's registry with one admin user, repositories public (so search lists them)."""
    from matou.registry.admin import Local
    from matou.registry.config import RegistryConfig
    from tests.registry.helpers import RegistryProcess

    root = tempfile.mkdtemp(prefix="matou-compat-reg-")
    adm = Local(RegistryConfig(root=os.path.join(root, "r")))
    try:
        adm.user_add(REG_USER, REG_PASSWORD, True)
    finally:
        adm.close()
    reg = RegistryProcess(os.path.join(root, "r"), ["--default-visibility", "public"]).start()
    try:
        yield reg
    finally:
        reg.stop()
        shutil.rmtree(root, ignore_errors=True)
