"""Real clients against the registry: skopeo copy both ways, podman push/pull (anonymous and --creds).

podman runs with its own temporary storage (vfs driver: no mounts to clean up), run and tmp directories, and
the containers.conf that PEERS.md prescribes for this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator

import pytest
import requests

from tests.registry.conftest import USERS
from tests.registry.helpers import RegistryProcess, busybox_image, write_oci_layout

pytestmark = pytest.mark.peers


def run(*cmd: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=180, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {p.stderr}")
    return p


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")


def layout_digest(path: str) -> str:
    with open(os.path.join(path, "index.json")) as f:
        return json.load(f)["manifests"][0]["digest"]


def test_skopeo_copy_both_ways_open_mode(open_registry: RegistryProcess, tmp_path) -> None:  # noqa: ANN001
    need("skopeo")
    img = busybox_image("skopeo open")
    src = str(tmp_path / "src")
    write_oci_layout(src, img, "v1")
    run("skopeo", "copy", "--dest-tls-verify=false", f"oci:{src}:v1", f"docker://{open_registry.host}/sk/open:v1")
    back = str(tmp_path / "back")
    run("skopeo", "copy", "--src-tls-verify=false", f"docker://{open_registry.host}/sk/open:v1", f"oci:{back}:v1")
    assert layout_digest(back) == img.digest
    for d, data in img.blobs().items():
        with open(os.path.join(back, "blobs", "sha256", d[7:]), "rb") as f:
            assert f.read() == data
    # skopeo delete by tag resolution goes through the digest
    run("skopeo", "delete", "--tls-verify=false", f"docker://{open_registry.host}/sk/open:v1")
    p = run("skopeo", "inspect", "--tls-verify=false", f"docker://{open_registry.host}/sk/open:v1", check=False)
    assert p.returncode != 0 and "manifest unknown" in p.stderr


def test_skopeo_private_with_creds(auth_registry: RegistryProcess, tmp_path) -> None:  # noqa: ANN001
    need("skopeo")
    img = busybox_image("skopeo private")
    src = str(tmp_path / "src")
    write_oci_layout(src, img, "v1")
    dest = f"docker://{auth_registry.host}/alice/priv:skopeo"
    p = run("skopeo", "copy", "--dest-tls-verify=false", f"oci:{src}:v1", dest, check=False)
    assert p.returncode != 0  # anonymous push refused
    run("skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", f"will:{USERS['will']}", f"oci:{src}:v1", dest)
    p = run("skopeo", "inspect", "--tls-verify=false", dest, check=False)
    assert p.returncode != 0 and "name unknown" in p.stderr
    back = str(tmp_path / "back")
    run("skopeo", "copy", "--src-tls-verify=false", "--src-creds", f"rita:{USERS['rita']}", dest, f"oci:{back}:x")
    assert layout_digest(back) == img.digest
    # docker-archive style: skopeo converts to schema 2 when asked; the registry stores and echoes the type
    run("skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", f"alice:{USERS['alice']}", "--format", "v2s2",
        f"oci:{src}:v1", f"docker://{auth_registry.host}/alice/priv:v2s2")
    r = requests.get(f"{auth_registry.url}/v2/alice/priv/manifests/v2s2", auth=("alice", USERS["alice"]))
    assert r.headers["Content-Type"] == "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture
def podman() -> Iterator[list[str]]:
    need("podman")
    import pathlib
    import tempfile

    base = pathlib.Path(tempfile.mkdtemp(prefix="mrpod-"))  # podman wants a runroot under 50 characters
    conf = base / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
                    '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
                    f'events_logfile_path = "{base}/events.log"\n')
    os.environ["CONTAINERS_CONF"] = str(conf)
    cmd = ["podman", "--root", str(base / "root"), "--runroot", str(base / "run"), "--tmpdir", str(base / "tmp"),
           "--storage-driver", "vfs"]
    with tarfile.open(base / "bb.tar", "w") as tf:
        tf.add("/bin/busybox", arcname="bin/busybox")
    run(*cmd, "import", str(base / "bb.tar"), "localhost/bb:1")
    try:
        yield cmd
    finally:
        run(*cmd, "rmi", "-a", "-f", check=False)
        os.environ.pop("CONTAINERS_CONF", None)
        shutil.rmtree(base, ignore_errors=True)


def test_podman_push_pull(auth_registry: RegistryProcess, podman: list[str]) -> None:
    host = auth_registry.host
    # public: owner pushes with creds, anyone pulls
    run(*podman, "push", "--tls-verify=false", "--creds", f"alice:{USERS['alice']}", "localhost/bb:1",
        f"{host}/alice/pub:podman")
    run(*podman, "pull", "--tls-verify=false", f"{host}/alice/pub:podman")
    # anonymous push is refused
    p = run(*podman, "push", "--tls-verify=false", "localhost/bb:1", f"{host}/alice/pub:anon", check=False)
    assert p.returncode != 0
    # private: write member pushes, reader pulls with creds, anonymous cannot
    run(*podman, "push", "--tls-verify=false", "--creds", f"will:{USERS['will']}", "localhost/bb:1",
        f"{host}/alice/priv:podman")
    p = run(*podman, "pull", "--tls-verify=false", f"{host}/alice/priv:podman", check=False)
    assert p.returncode != 0 and "name unknown" in p.stderr
    run(*podman, "pull", "--tls-verify=false", "--creds", f"rita:{USERS['rita']}", f"{host}/alice/priv:podman")
    out = run(*podman, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert f"{host}/alice/priv:podman" in out and f"{host}/alice/pub:podman" in out


def test_podman_anonymous_push_pull_open_mode(open_registry: RegistryProcess, podman: list[str]) -> None:
    host = open_registry.host
    run(*podman, "push", "--tls-verify=false", "localhost/bb:1", f"{host}/demo/podman:1")
    run(*podman, "rmi", "-f", "localhost/bb:1")
    run(*podman, "pull", "--tls-verify=false", f"{host}/demo/podman:1")
    out = run(*podman, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert f"{host}/demo/podman:1" in out
