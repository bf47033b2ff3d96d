"""Helpers for build tests: write a context directory, build it with the real CLI, read images back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Daemon


def write_context(root: str, files: dict[str, str | bytes]) -> str:
    os.makedirs(root, exist_ok=True)
    for name, data in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
    return root


Build = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="session")
def cli_cache() -> Iterator[str]:
    """The CLI's cache of context file hashes lives here during the tests, not in ~/.cache."""
    d = tempfile.mkdtemp(prefix="matou-build-xdg-", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def build(daemon: Daemon, busybox: str, cli_cache: str) -> Build:
    """build(context_dir, *flags, check=True) -> CompletedProcess (stdout/stderr decoded)."""

    def run(context: str, *flags: str, check: bool = True, input: bytes | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        env = {"XDG_CACHE_HOME": cli_cache, **(env or {})}
        r = daemon.cli("build", *flags, context, check=False, input=input, env=env, timeout=300)
        r.stdout = r.stdout.decode(errors="replace")
        r.stderr = r.stderr.decode(errors="replace")
        if check and r.returncode != 0:
            raise AssertionError(f"build failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    return run


def inspect(daemon: Daemon, name: str) -> dict[str, Any]:
    return json.loads(daemon.out("image", "inspect", name))[0]


def image_ids(daemon: Daemon) -> tuple[set[str], set[str]]:
    """(all image IDs, all tags): what a failed build must leave unchanged."""
    ids = set(daemon.out("images", "-a", "-q", "--no-trunc").split())
    tags = {line for line in daemon.out("images", "--format", "{{.Repository}}:{{.Tag}}").split()}
    return ids, tags


def sh(daemon: Daemon, image: str, script: str) -> str:
    """Run a shell script in a container of ``image`` (no network needed), as root."""
    return daemon.out("run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "sh", image, "-c", script)
