"""registry-mirrors for docker.io: with a local registry as the mirror, `docker pull busybox` and
`docker pull alpine:3.10` succeed offline, as they would from Docker Hub (the mirror holds library/busybox and
library/alpine:3.10, pushed there from a bootstrapped busybox)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from tests.compat.conftest import Docker, docker_binary, has_feature, private_daemon, require_tool
from tests.conftest import Daemon


@pytest.fixture(scope="module")
def mirror(cd: Daemon) -> Iterator[str]:
    """An open matou registry holding library/busybox:latest and library/alpine:3.10; yields its host:port."""
    if not has_feature(cd, "POST", "/auth"):
        pytest.skip("distribution (pull/push) has not landed")
    from tests.registry.helpers import RegistryProcess

    root = tempfile.mkdtemp(prefix="matou-compat-mirror-")
    reg = RegistryProcess(os.path.join(root, "r"), ["--anonymous-push", "--default-visibility", "public"]).start()
    try:
        for target in ("library/busybox:latest", "library/alpine:3.10"):
            ref = f"{reg.host}/{target}"
            cd.cli("tag", "busybox", ref)
            cd.cli("push", ref)
            cd.cli("rmi", ref)
        yield reg.host
    finally:
        reg.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_pull_through_mirror(mirror: str, docker_config_dir: str) -> None:
    binary = require_tool(docker_binary(), "the docker CLI")
    with private_daemon("matou-mirror-", config={"registry-mirrors": [f"http://{mirror}"]}) as d:
        docker = Docker(binary, d, docker_config_dir)
        out = docker.out("pull", "busybox")
        assert "Status: Downloaded newer image for busybox:latest" in out, out
        assert "docker.io/library/busybox:latest" in out
        out = docker.out("pull", "alpine:3.10")
        assert "Status: Downloaded newer image for alpine:3.10" in out, out
        assert docker.out("run", "--rm", "alpine:3.10", "echo", "from the mirror") == "from the mirror\n"
        assert "Image is up to date for busybox:latest" in docker.out("pull", "busybox")
        info = docker.out("info", "--format", "{{json .RegistryConfig.Mirrors}}")
        assert mirror in info
