"""Images through the real CLI and daemon: bootstrap, list, tag, rmi, save/load (also with podman), import,
history, and crash safety of load."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time

import pytest
from tests.conftest import Daemon


def test_bootstrap_lists_real_size(daemon: Daemon, busybox: str) -> None:
    rows = [json.loads(x) for x in daemon.out("images", "--format", "json").splitlines()]
    bb = next(r for r in rows if r["Repository"] == "busybox" and r["Tag"] == "latest")
    size = os.path.getsize("/bin/busybox")
    shown = bb["Size"]
    assert shown.endswith("MB")
    assert abs(float(shown[:-2]) * 1e6 - size) < 0.3e6
    # reproducible: bootstrapping again gives the same image
    first = daemon.out("image", "inspect", "--format", "{{.Id}}", busybox).strip()
    daemon.cli("image", "bootstrap", "busybox")
    assert daemon.out("image", "inspect", "--format", "{{.Id}}", busybox).strip() == first


def test_tag_rmi_and_history(daemon: Daemon, busybox: str) -> None:
    daemon.cli("tag", busybox, "example.com/team/bb:v1")
    assert "example.com/team/bb" in daemon.out("images")
    assert daemon.out("images", "-q", "example.com/team/bb") == daemon.out("images", "-q", busybox)
    out = daemon.out("rmi", "example.com/team/bb:v1")
    assert out.strip() == "Untagged: example.com/team/bb:v1"
    hist = daemon.out("history", "--no-trunc", "--format", "{{.CreatedBy}}", busybox)
    assert "bootstrap busybox" in hist
    r = daemon.cli("rmi", "no-such:image", check=False)
    assert r.returncode == 1 and b"No such image" in r.stderr
    r = daemon.cli("tag", busybox, "Bad:Name", check=False)
    assert r.returncode != 0


def test_rmi_refuses_image_in_use(daemon: Daemon, busybox: str) -> None:
    daemon.cli("tag", busybox, "inuse:1")
    daemon.cli("create", "--name", "user-of-inuse", "inuse:1", "true")
    try:
        daemon.cli("tag", busybox, "inuse:2")
        daemon.cli("rmi", "inuse:2")  # another tag: just untagged
        # the last tag of an image with the busybox tag too: only untag
        r = daemon.cli("rmi", daemon.out("images", "-q", "inuse:1").strip(), check=False)
        assert r.returncode == 1 and b"conflict" in r.stderr
    finally:
        daemon.cli("rm", "-f", "user-of-inuse", check=False)
        daemon.cli("rmi", "inuse:1", check=False)


def test_save_load_roundtrip_same_id(daemon: Daemon, busybox: str, tmp_path) -> None:
    image_id = daemon.out("image", "inspect", "--format", "{{.Id}}", busybox).strip()
    archive = daemon.cli("save", busybox).stdout
    names = tarfile.open(fileobj=io.BytesIO(archive)).getnames()
    assert "manifest.json" in names
    daemon.cli("tag", busybox, "rt:1")
    daemon.cli("rmi", "rt:1")
    out = daemon.out("load", input=archive)
    assert "Loaded image: busybox:latest" in out
    assert daemon.out("image", "inspect", "--format", "{{.Id}}", busybox).strip() == image_id
    # OCI layout too
    oci = daemon.cli("save", "--format", "oci", busybox).stdout
    names = tarfile.open(fileobj=io.BytesIO(oci)).getnames()
    assert "index.json" in names and "oci-layout" in names
    daemon.cli("load", input=oci)
    assert daemon.out("image", "inspect", "--format", "{{.Id}}", busybox).strip() == image_id


def _podman(root: str, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", "--root", os.path.join(root, "storage"), "--runroot", os.path.join(root, "run"),
                           "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none",
                           *args], input=input, capture_output=True, timeout=180)


@pytest.mark.peers
def test_podman_interop(daemon: Daemon, busybox: str, tmp_path) -> None:
    if not shutil.which("podman"):
        pytest.skip("podman not installed")
    import tempfile

    root = tempfile.mkdtemp(prefix="pm-", dir="/tmp")  # podman wants a runroot shorter than 50 characters
    archive = tmp_path / "bb.tar"
    archive.write_bytes(daemon.cli("save", busybox).stdout)
    r = _podman(root, "load", "-i", str(archive))
    assert r.returncode == 0, r.stderr
    ours = json.loads(daemon.out("image", "inspect", busybox))[0]
    r = _podman(root, "image", "inspect", ours["Id"].split(":")[1])  # podman names it localhost/busybox
    assert r.returncode == 0, r.stderr
    theirs = json.loads(r.stdout)[0]
    assert theirs["RootFS"]["Layers"] == ours["RootFS"]["Layers"]
    # podman writes a docker-archive; matou loads it with the same layer digests
    (tmp_path / "rootfs.tar").write_bytes(daemon.cli("export", daemon.out("create", busybox, "true").strip()).stdout)
    r = _podman(root, "import", str(tmp_path / "rootfs.tar"), "localhost/podmade:1")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "podman-save.tar"
    r = _podman(root, "save", "--format", "docker-archive", "-o", str(out), "localhost/podmade:1")
    assert r.returncode == 0, r.stderr
    theirs = json.loads(_podman(root, "image", "inspect", "localhost/podmade:1").stdout)[0]
    daemon.cli("load", "-i", str(out))
    mine = json.loads(daemon.out("image", "inspect", "localhost/podmade:1"))[0]
    assert mine["RootFS"]["Layers"] == theirs["RootFS"]["Layers"]
    assert daemon.out("run", "--rm", "localhost/podmade:1", "echo", "ok") == "ok\n"
    for c in daemon.out("ps", "-a", "-q", "--filter", f"ancestor={busybox}").split():
        daemon.cli("rm", "-f", c, check=False)
    daemon.cli("rmi", "localhost/podmade:1", check=False)
    _podman(root, "system", "reset", "-f")
    shutil.rmtree(root, ignore_errors=True)


def test_import_with_changes(daemon: Daemon, busybox: str, tmp_path) -> None:
    cid = daemon.out("create", busybox, "true").strip()
    try:
        rootfs = daemon.cli("export", cid).stdout
    finally:
        daemon.cli("rm", cid)
    (tmp_path / "r.tar").write_bytes(rootfs)
    img = daemon.out("import", "--change", 'CMD ["echo", "imported"]', "--change", "ENV X=y",
                     str(tmp_path / "r.tar"), "imported:1").strip()
    assert img.startswith("sha256:")
    assert daemon.out("run", "--rm", "imported:1") == "imported\n"
    cfg = json.loads(daemon.out("image", "inspect", "--format", "{{json .Config}}", "imported:1"))
    assert "X=y" in cfg["Env"]
    daemon.cli("import", "-", "imported:2", input=rootfs)
    daemon.cli("rmi", "imported:1", "imported:2")


def test_load_rejects_hostile_layer_and_keeps_images(daemon: Daemon, busybox: str, tmp_path) -> None:
    before = daemon.out("images", "-q", "--no-trunc")
    # a docker-archive whose layer escapes with ../
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        ti = tarfile.TarInfo("../../escape.txt")
        data = b"pwned"
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    import hashlib

    diff = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff]},
                         "config": {}}).encode()
    arch = io.BytesIO()
    with tarfile.open(fileobj=arch, mode="w") as t:
        for name, data in (("layer/layer.tar", layer_bytes), ("cfg.json", config),
                           ("manifest.json", json.dumps([{"Config": "cfg.json", "RepoTags": ["evil:1"],
                                                          "Layers": ["layer/layer.tar"]}]).encode())):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    r = daemon.cli("load", input=arch.getvalue(), check=False)
    assert r.returncode != 0
    assert b"escape.txt" in r.stderr or b".." in r.stderr
    assert not os.path.exists(os.path.join(os.path.dirname(daemon.data_root), "escape.txt"))
    assert daemon.cli("image", "inspect", "evil:1", check=False).returncode != 0
    assert daemon.out("images", "-q", "--no-trunc") == before
    assert daemon.out("run", "--rm", busybox, "true") == ""


def _verify_store(data_root: str) -> None:
    import hashlib

    base = os.path.join(data_root, "content", "blobs", "sha256")
    for name in os.listdir(base):
        h = hashlib.sha256()
        with open(os.path.join(base, name), "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        assert h.hexdigest() == name, f"blob {name} does not match its content"


def test_kill_during_load_leaves_no_partial_image(fresh_daemon: Daemon, tmp_path) -> None:
    d = fresh_daemon
    d.cli("image", "bootstrap", "busybox")
    # a big image: one 64 MiB random layer committed into busybox
    d.cli("run", "--name", "big", "busybox", "sh", "-c", "dd if=/dev/urandom of=/big bs=1M count=64 2>/dev/null")
    d.cli("commit", "big", "big:1")
    d.cli("rm", "big")
    archive = d.cli("save", "big:1").stdout
    d.cli("rmi", "big:1")
    proc = subprocess.Popen([os.sys.executable, "-m", "matou", "load"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "MATOU_HOST": d.host,
                                 "PYTHONPATH": os.path.join(os.path.dirname(os.path.dirname(__file__)), "..", "src")})
    assert proc.stdin is not None
    proc.stdin.write(archive[: len(archive) // 2])
    proc.stdin.flush()
    time.sleep(0.5)
    d.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    d.proc.wait()  # type: ignore[union-attr]
    proc.kill()
    proc.wait()
    d.proc = None
    d.start()
    assert d.cli("image", "inspect", "big:1", check=False).returncode != 0
    _verify_store(d.data_root)
    # and a complete load works afterwards
    d.cli("load", input=archive)
    assert d.out("run", "--rm", "big:1", "sh", "-c", "wc -c < /big").strip() == str(64 << 20)
    _verify_store(d.data_root)
