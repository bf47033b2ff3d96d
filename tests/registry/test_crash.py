"""SIGKILL the registry during 10 concurrent pushes, restart it: completed pushes pull back intact, incomplete
ones are invisible, every stored blob matches its digest, and the interrupted pushes can be pushed again."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import requests

from tests.registry.helpers import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Image, RegistryProcess, sha

CHUNK = 256 * 1024


def random_image(n: int) -> Image:
    layers = [os.urandom((n + 1) * 512 * 1024 + k) for k in range(2)]
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": n,
                         "rootfs": {"type": "layers", "diff_ids": [sha(x) for x in layers]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": sha(config), "size": len(config)},
                           "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha(x), "size": len(x)}
                                      for x in layers]}).encode()
    return Image(config, layers, manifest, OCI_MANIFEST)


def chunked_push(url: str, name: str, img: Image, stop: threading.Event) -> None:
    """POST, PATCH chunk by chunk (Content-Range), PUT ?digest= for each blob, then the manifest."""
    s = requests.Session()
    for digest, data in img.blobs().items():
        r = s.post(f"{url}/v2/{name}/blobs/uploads/", timeout=30)
        assert r.status_code == 202, r.text
        loc = r.headers["Location"]
        for off in range(0, len(data), CHUNK):
            if stop.is_set():
                time.sleep(0.002)  # slow down once the kill is near, so pushes are caught mid-way
            part = data[off:off + CHUNK]
            r = s.patch(url + loc, data=part, timeout=30,
                        headers={"Content-Range": f"{off}-{off + len(part) - 1}"})
            assert r.status_code == 202, r.text
            loc = r.headers["Location"]
        r = s.put(url + loc, params={"digest": digest}, timeout=30)
        assert r.status_code == 201, r.text
    r = s.put(f"{url}/v2/{name}/manifests/v1", data=img.manifest, headers={"Content-Type": OCI_MANIFEST},
              timeout=30)
    assert r.status_code == 201, r.text


def check_blob_files(root: str) -> int:
    """Every published blob file hashes to its name."""
    count = 0
    base = os.path.join(root, "blobs", "sha256")
    for fan in os.listdir(base):
        for name in os.listdir(os.path.join(base, fan)):
            with open(os.path.join(base, fan, name), "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == name
            count += 1
    return count


def pull_and_verify(url: str, name: str, img: Image) -> None:
    r = requests.get(f"{url}/v2/{name}/manifests/v1", timeout=30)
    assert r.status_code == 200, (name, r.text)
    assert r.content == img.manifest
    for d, data in img.blobs().items():
        r = requests.get(f"{url}/v2/{name}/blobs/{d}", timeout=30)
        assert r.status_code == 200 and sha(r.content) == d and r.content == data


def test_sigkill_during_concurrent_pushes(tmp_path) -> None:  # noqa: ANN001
    root = str(tmp_path / "root")
    reg = RegistryProcess(root, ["--anonymous-push"]).start()
    images = {f"crash/img{i}": random_image(i) for i in range(10)}
    done: set[str] = set()
    failed: set[str] = set()
    near = threading.Event()
    lock = threading.Lock()

    def worker(name: str) -> None:
        try:
            chunked_push(reg.url, name, images[name], near)
            with lock:
                done.add(name)
        except Exception:  # noqa: BLE001 - the registry was killed under it
            with lock:
                failed.add(name)

    threads = [threading.Thread(target=worker, args=(n,)) for n in images]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with lock:
                if len(done) >= 3:
                    break
                if len(done) >= 1:
                    near.set()
            time.sleep(0.001)
        reg.kill()
        for t in threads:
            t.join(timeout=60)
    finally:
        reg.kill()
    completed = set(done)
    interrupted = set(images) - completed
    assert len(completed) >= 3 and interrupted, (completed, interrupted)

    reg = RegistryProcess(root, ["--anonymous-push"]).start()
    try:
        assert check_blob_files(root) > 0
        for name in completed:
            pull_and_verify(reg.url, name, images[name])
        for name in interrupted:
            r = requests.get(f"{reg.url}/v2/{name}/manifests/v1", timeout=30)
            assert r.status_code == 404, (name, r.status_code)
            r = requests.get(f"{reg.url}/v2/{name}/tags/list", timeout=30)
            assert r.status_code == 404 or r.json()["tags"] == []
            for d in images[name].blobs():
                r = requests.get(f"{reg.url}/v2/{name}/blobs/{d}", timeout=30)
                assert r.status_code == 404 or sha(r.content) == d
        for name in interrupted:
            chunked_push(reg.url, name, images[name], threading.Event())
            pull_and_verify(reg.url, name, images[name])
        assert check_blob_files(root) >= 30
    finally:
        reg.stop()
