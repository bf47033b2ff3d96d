"""Interop with the CNCF distribution registry (Debian's docker-registry), with and without htpasswd auth, and
with images that skopeo and podman pushed there; skopeo reads back what matou pushed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from tests.conftest import Daemon
from tests.distribution.conftest import app_image
from tests.registry.helpers import busybox_image, free_port, write_oci_layout

pytestmark = pytest.mark.peers


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")


def run(*cmd: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=180, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {p.stderr}")
    return p


@dataclass
class Cncf:
    host: str
    user: str | None
    password: str | None

    @property
    def creds(self) -> list[str]:
        return [f"--creds={self.user}:{self.password}"] if self.user else []


@pytest.fixture(scope="module", params=["anonymous", "htpasswd"])
def cncf(request: pytest.FixtureRequest) -> Iterator[Cncf]:
    need("docker-registry")
    base = tempfile.mkdtemp(prefix="matou-cncf-")
    port = free_port()
    auth = ""
    user = password = None
    if request.param == "htpasswd":
        need("htpasswd")
        user, password = "carol", "carol-pw"
        with open(os.path.join(base, "htpasswd"), "w") as f:
            f.write(run("htpasswd", "-Bbn", user, password).stdout)
        auth = f"auth:\n  htpasswd:\n    realm: matou-test\n    path: {base}/htpasswd\n"
    with open(os.path.join(base, "config.yml"), "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {base}/data\n"
                f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: matou-test\n{auth}")
    log = open(os.path.join(base, "registry.log"), "ab")
    proc = subprocess.Popen(["docker-registry", "serve", os.path.join(base, "config.yml")], stdout=log, stderr=log)
    log.close()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("docker-registry did not start") from None
                time.sleep(0.05)
        yield Cncf(f"127.0.0.1:{port}", user, password)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def _login(daemon: Daemon, reg: Cncf, env: dict[str, str]) -> None:
    if reg.user:
        assert reg.password is not None
        daemon.cli("login", "-u", reg.user, "--password-stdin", reg.host, input=reg.password, env=env)


def test_push_and_pull_with_the_cncf_registry(daemon: Daemon, busybox: str, cncf: Cncf,
                                              client_env: dict[str, str]) -> None:
    name = f"{cncf.host}/team/app"
    app_image(daemon, busybox, f"{name}:1", "cncf")
    if cncf.user:
        r = daemon.cli("push", f"{name}:1", env=client_env, check=False)
        assert r.returncode == 1 and "unauthorized" in (r.stdout + r.stderr).decode().lower()
    _login(daemon, cncf, client_env)
    daemon.cli("push", f"{name}:1", env=client_env)
    # a second repository of the same registry gets the layers by cross-repository mount
    daemon.cli("tag", f"{name}:1", f"{cncf.host}/team/copy:1")
    out = daemon.out("push", f"{cncf.host}/team/copy:1", env=client_env)
    assert out.count("Mounted from team/app") == 2, out
    daemon.cli("rmi", f"{name}:1", f"{cncf.host}/team/copy:1")
    if cncf.user:
        r = daemon.cli("pull", f"{name}:1", check=False)
        assert r.returncode == 1 and "pull access denied" in r.stderr.decode()
    out = daemon.out("run", "--rm", f"{name}:1", "cat", "/app.txt", env=client_env)
    assert out.strip() == "cncf"
    # skopeo reads back what matou pushed
    need("skopeo")
    with tempfile.TemporaryDirectory(prefix="matou-skopeo-") as d:
        run("skopeo", "copy", "--src-tls-verify=false", *[c.replace("--creds", "--src-creds") for c in cncf.creds],
            f"docker://{name}:1", f"oci:{d}:x")
        with open(os.path.join(d, "index.json")) as f:
            assert json.load(f)["manifests"]
    daemon.cli("rmi", f"{name}:1")


def test_pull_what_skopeo_pushed(daemon: Daemon, cncf: Cncf, client_env: dict[str, str]) -> None:
    need("skopeo")
    _login(daemon, cncf, client_env)
    with tempfile.TemporaryDirectory(prefix="matou-oci-") as d:
        write_oci_layout(d, busybox_image("from skopeo"))
        for fmt, tag in (("oci", "oci"), ("v2s2", "docker")):
            run("skopeo", "copy", "--dest-tls-verify=false", "--format", fmt,
                *[c.replace("--creds", "--dest-creds") for c in cncf.creds],
                f"oci:{d}:latest", f"docker://{cncf.host}/skopeo/bb:{tag}")
    for tag in ("oci", "docker"):
        ref = f"{cncf.host}/skopeo/bb:{tag}"
        daemon.cli("pull", ref, env=client_env)
        assert daemon.out("run", "--rm", ref, "/bin/busybox", "cat", "/etc/note").strip() == "from skopeo"
        daemon.cli("rmi", ref)


@pytest.fixture
def podman() -> Iterator[tuple[list[str], dict[str, str]]]:
    need("podman")
    base = tempfile.mkdtemp(prefix="mdpod-")  # podman wants a short runroot
    conf = os.path.join(base, "containers.conf")
    with open(conf, "w") as f:
        f.write('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
                '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
                f'events_logfile_path = "{base}/events.log"\n')
    env = {**os.environ, "CONTAINERS_CONF": conf}
    cmd = ["podman", "--root", f"{base}/root", "--runroot", f"{base}/run", "--tmpdir", f"{base}/tmp",
           "--storage-driver", "vfs"]
    try:
        yield cmd, env
    finally:
        run(*cmd, "rmi", "-a", "-f", env=env, check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_pull_what_podman_pushed(daemon: Daemon, cncf: Cncf, client_env: dict[str, str],
                                 podman: tuple[list[str], dict[str, str]]) -> None:
    cmd, env = podman
    with tempfile.TemporaryDirectory(prefix="matou-podtar-") as d:
        with open(os.path.join(d, "note"), "w") as f:
            f.write("from podman\n")
        with tarfile.open(os.path.join(d, "bb.tar"), "w") as tf:
            tf.add("/bin/busybox", arcname="bin/busybox")
            tf.add(os.path.join(d, "note"), arcname="etc/note")
        run(*cmd, "import", os.path.join(d, "bb.tar"), "localhost/bb:1", env=env)
    ref = f"{cncf.host}/podman/bb:1"
    run(*cmd, "push", "--tls-verify=false", *cncf.creds, "localhost/bb:1", ref, env=env)
    _login(daemon, cncf, client_env)
    daemon.cli("pull", ref, env=client_env)
    assert daemon.out("run", "--rm", ref, "/bin/busybox", "cat", "/etc/note").strip() == "from podman"
    daemon.cli("rmi", ref)


def test_chunked_upload_and_range_reads(cncf: Cncf) -> None:
    import hashlib

    from matou.distribution.auth import Credentials
    from matou.distribution.client import Registries
    from matou.distribution.endpoints import endpoint_for
    from matou.distribution.http import FileBody

    data = os.urandom(300_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    regs = Registries()
    try:
        repo = regs.repository(endpoint_for(cncf.host, regs.settings), "team/chunks",
                               Credentials(cncf.user or "", cncf.password or ""), push=True)
        with tempfile.TemporaryFile() as f:
            f.write(data)
            f.flush()
            loc = repo.start_upload()
            assert loc is not None
            repo.upload(loc, FileBody(f, 0, len(data)), digest, chunk_size=64_000)
        assert repo.blob_size(digest) == len(data)
        resp, start = repo.open_blob(digest, 200_000)
        with resp:
            assert start == 200_000 and resp.read() == data[200_000:]
    finally:
        regs.close()
