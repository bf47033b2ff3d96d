"""Registries behind counting proxies, per test module; a private client config per test.

``open_reg``: matou's registry in open mode (anonymous push). ``auth_reg``: token auth with users alice, bob and
rita; alice owns alice/pub (public) and alice/priv (private), rita may read both. Image names use the proxy's
address, so everything the engine sends to the registry is counted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from matou.registry.admin import Local
from matou.registry.config import RegistryConfig
from tests.conftest import Daemon
from tests.distribution.proxy import CountingProxy
from tests.registry.helpers import RegistryProcess

USERS = {"alice": "alice-pw", "bob": "bob-pw", "rita": "rita-pw"}


@dataclass
class Reg:
    process: RegistryProcess
    proxy: CountingProxy

    @property
    def host(self) -> str:
        return self.proxy.host

    @property
    def url(self) -> str:
        return f"http://{self.proxy.host}"


def _start(root: str, args: list[str]) -> Iterator[Reg]:
    reg = RegistryProcess(root, args).start()
    proxy = CountingProxy(reg.url).start()
    try:
        yield Reg(reg, proxy)
    finally:
        proxy.stop()
        reg.stop()


@pytest.fixture(scope="module")
def open_reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reg]:
    yield from _start(str(tmp_path_factory.mktemp("open") / "root"), ["--anonymous-push",
                                                                      "--default-visibility", "public"])


@pytest.fixture(scope="module")
def auth_reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reg]:
    root = str(tmp_path_factory.mktemp("auth") / "root")
    adm = Local(RegistryConfig(root=root))
    try:
        for name, pw in USERS.items():
            adm.user_add(name, pw, False)
        adm.repo_create("alice/pub", "public", "alice's public image", None)
        adm.repo_create("alice/priv", "private", "alice's private image", None)
        for repo in ("alice/pub", "alice/priv"):
            adm.repo_member(repo, "rita", "read")
    finally:
        adm.close()
    yield from _start(root, [])


@pytest.fixture
def client_env() -> Iterator[dict[str, str]]:
    """A private MATOU_CONFIG and DOCKER_CONFIG for the CLI (credentials never touch the real home)."""
    d = tempfile.mkdtemp(prefix="matou-dist-cfg-")
    env = {"MATOU_CONFIG": os.path.join(d, "matou"), "DOCKER_CONFIG": os.path.join(d, "docker")}
    try:
        yield env
    finally:
        shutil.rmtree(d, ignore_errors=True)


def login(daemon: Daemon, env: dict[str, str], host: str, user: str) -> subprocess.CompletedProcess:
    return daemon.cli("login", "-u", user, "--password-stdin", host, input=USERS[user] + "\n", env=env)


def app_image(daemon: Daemon, base: str, target: str, text: str, path: str = "/app.txt") -> str:
    """An image one layer above ``base`` (run + commit, the builder's job done by hand)."""
    name = "mk-" + os.urandom(4).hex()
    daemon.cli("run", "--name", name, base, "sh", "-c", f"echo {text} > {path}")
    try:
        return daemon.out("commit", name, target).strip()
    finally:
        daemon.cli("rm", "-f", name, check=False)
