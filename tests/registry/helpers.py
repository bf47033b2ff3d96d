"""Shared pieces of the registry tests: a registry subprocess, OCI layouts to push, a small HTTP client."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from typing import Any

import requests

PY = sys.executable
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = SRC + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def cli(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([PY, "-m", "matou.registry", *args], env=env(), input=input, capture_output=True,
                       text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"matou registry {' '.join(args)} failed ({p.returncode}): {p.stderr}")
    return p


@dataclass
class RegistryProcess:
    """``matou registry serve`` on a free loopback port; stopped (by PID) by ``stop``."""

    root: str
    args: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RegistryProcess:
        if not self.port:
            self.port = free_port()
        log = open(os.path.join(os.path.dirname(self.root.rstrip("/")) or ".", f"registry-{self.port}.log"), "ab")
        self.proc = subprocess.Popen(
            [PY, "-m", "matou.registry", "serve", "--root", self.root, "--addr", self.host, *self.args],
            env=env(), stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"registry exited with {self.proc.returncode}")
            try:
                requests.get(self.url + "/v1/_ping", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("registry did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def tar_layer(files: dict[str, bytes], mode: int = 0o755) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = mode
            ti.mtime = 0
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Image:
    """An image as bytes: config, gzipped layers, manifest (OCI or Docker schema 2)."""

    config: bytes
    layers: list[bytes]
    manifest: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return sha(self.manifest)

    def blobs(self) -> dict[str, bytes]:
        out = {sha(self.config): self.config}
        for layer in self.layers:
            out[sha(layer)] = layer
        return out


def make_image(layer_tars: list[bytes], docker: bool = False, extra: dict[str, Any] | None = None) -> Image:
    gz = [gzip.compress(t, compresslevel=1, mtime=0) for t in layer_tars]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in layer_tars]},
        **(extra or {}),
    }, sort_keys=True).encode()
    mt = DOCKER_MANIFEST if docker else OCI_MANIFEST
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": mt,
        "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG, "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": DOCKER_LAYER if docker else OCI_LAYER_GZIP, "digest": sha(g), "size": len(g)}
                   for g in gz],
    }, indent=2).encode()
    return Image(config, gz, manifest, mt)


def busybox_image(tag_note: str = "") -> Image:
    with open("/bin/busybox", "rb") as f:
        bb = f.read()
    layer = tar_layer({"bin/busybox": bb, "etc/note": tag_note.encode()})
    return make_image([layer])


def write_oci_layout(path: str, image: Image, tag: str = "latest") -> None:
    os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
    for d, data in {**image.blobs(), image.digest: image.manifest}.items():
        with open(os.path.join(path, "blobs", "sha256", d.split(":")[1]), "wb") as f:
            f.write(data)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": image.media_type, "digest": image.digest, "size": len(image.manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)


class Client:
    """Raw distribution-API client with Docker's token dance (what a real client does, in 40 lines)."""

    def __init__(self, base: str, user: str | None = None, password: str | None = None) -> None:
        self.base = base
        self.auth = (user, password) if user else None
        self.s = requests.Session()
        self.tokens: dict[str, str] = {}

    def token(self, scope: str | None) -> str:
        key = scope or ""
        if key not in self.tokens:
            params = {"service": "matou-registry"}
            if scope:
                params["scope"] = scope
            r = self.s.get(self.base + "/token", params=params, auth=self.auth, timeout=30)
            assert r.status_code == 200, r.text
            self.tokens[key] = r.json()["token"]
        return self.tokens[key]

    def request(self, method: str, path: str, scope: str | None = None, **kw: Any) -> requests.Response:
        headers = dict(kw.pop("headers", {}) or {})
        url = path if path.startswith("http") else self.base + path
        r = self.s.request(method, url, headers=headers, timeout=60, **kw)
        if r.status_code == 401 and "Bearer" in r.headers.get("WWW-Authenticate", ""):
            chal = r.headers["WWW-Authenticate"]
            want = None
            if 'scope="' in chal:
                want = chal.split('scope="')[1].split('"')[0]
            headers["Authorization"] = "Bearer " + self.token(scope or want)
            if "data" in kw and hasattr(kw["data"], "seek"):
                kw["data"].seek(0)
            r = self.s.request(method, url, headers=headers, timeout=60, **kw)
        return r

    def push_blob(self, name: str, data: bytes) -> requests.Response:
        d = sha(data)
        return self.request("POST", f"/v2/{name}/blobs/uploads/", params={"digest": d}, data=data,
                            scope=f"repository:{name}:pull,push")

    def push_image(self, name: str, image: Image, ref: str = "latest") -> requests.Response:
        for data in image.blobs().values():
            r = self.push_blob(name, data)
            assert r.status_code == 201, (r.status_code, r.text)
        return self.request("PUT", f"/v2/{name}/manifests/{ref}", data=image.manifest,
                            headers={"Content-Type": image.media_type}, scope=f"repository:{name}:pull,push")
