"""Registries as real subprocesses on free loopback ports, one per test module, killed by PID afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from matou.registry.admin import Local
from matou.registry.config import RegistryConfig
from tests.registry.helpers import RegistryProcess


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """Open mode (--anonymous-push): anyone pushes and pulls public repositories."""
    root = tmp_path_factory.mktemp("open") / "root"
    reg = RegistryProcess(str(root), ["--anonymous-push"]).start()
    try:
        yield reg
    finally:
        reg.stop()


USERS = {"alice": "alice-pw", "rita": "rita-pw", "will": "will-pw", "sam": "sam-pw", "root": "root-pw"}


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """Token mode with users: alice owns alice/pub (public) and alice/priv (private); rita reads and will
    writes both; sam is a stranger; root is an administrator."""
    root = str(tmp_path_factory.mktemp("auth") / "root")
    adm = Local(RegistryConfig(root=root))
    try:
        for name, pw in USERS.items():
            adm.user_add(name, pw, name == "root")
        adm.repo_create("alice/pub", "public", "public test image", None)
        adm.repo_create("alice/priv", "private", "private test image", None)
        for repo in ("alice/pub", "alice/priv"):
            adm.repo_member(repo, "rita", "read")
            adm.repo_member(repo, "will", "write")
    finally:
        adm.close()
    reg = RegistryProcess(root).start()
    try:
        yield reg
    finally:
        reg.stop()
