"""Endpoints against live registries: HTTPS (verified or not), registry-mirrors for Docker Hub and per host."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from matou.distribution.client import Registries
from matou.distribution.endpoints import Endpoint
from matou.errors import Unavailable
from tests.conftest import Daemon, own_network_config
from tests.distribution.conftest import Reg, _start
from tests.registry.helpers import PY, Client, RegistryProcess, busybox_image, env, free_port


def _self_signed(dirname: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "matou-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cp, kp = os.path.join(dirname, "cert.pem"), os.path.join(dirname, "key.pem")
    with open(cp, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(kp, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cp, kp


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    base = tmp_path_factory.mktemp("tls")
    cert, key = _self_signed(str(base))
    reg = RegistryProcess(str(base / "root"), ["--anonymous-push", "--default-visibility", "public",
                                               "--tls-cert", cert, "--tls-key", key])
    reg.port = free_port()
    reg.proc = subprocess.Popen([PY, "-m", "matou.registry", "serve", "--root", reg.root, "--addr", reg.host,
                                 *reg.args], env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", reg.port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or reg.proc.poll() is not None:
                reg.stop()
                raise RuntimeError("the TLS registry did not start") from None
            time.sleep(0.05)
    try:
        yield reg
    finally:
        reg.stop()


def test_https_is_verified_unless_the_registry_is_insecure(tls_registry: RegistryProcess) -> None:
    regs = Registries()
    try:
        with pytest.raises(Unavailable, match="(?i)certificate"):
            regs.host(Endpoint(tls_registry.host, ("https",), verify=True))
        info = regs.host(Endpoint(tls_registry.host, ("https", "http"), verify=False))
        assert info.base == f"https://{tls_registry.host}"
    finally:
        regs.close()


def test_pull_and_push_over_https_on_loopback(daemon: Daemon, busybox: str, tls_registry: RegistryProcess) -> None:
    name = f"{tls_registry.host}/bob/tls:1"
    daemon.cli("tag", busybox, name)
    daemon.cli("push", name)
    daemon.cli("rmi", name)
    out = daemon.out("pull", name)
    assert "Digest: sha256:" in out
    daemon.cli("rmi", name)


@pytest.fixture
def mirror() -> Iterator[Reg]:
    root = tempfile.mkdtemp(prefix="matou-mirror-")
    try:
        yield from _start(os.path.join(root, "root"), ["--anonymous-push", "--default-visibility", "public"])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_registry_mirrors(open_reg: Reg, mirror: Reg) -> None:
    c = Client(mirror.url)
    assert c.push_image("library/mirrored", busybox_image("hub mirror"), "1").status_code == 201
    assert c.push_image("bob/onlymirror", busybox_image("host mirror"), "1").status_code == 201
    assert Client(open_reg.url).push_image("bob/upstream", busybox_image("upstream"), "1").status_code == 201
    root = tempfile.mkdtemp(prefix="matou-mirrord-")
    cfg = os.path.join(root, "daemon.json")
    dead = f"http://127.0.0.1:{free_port()}"
    with open(cfg, "w") as f:
        json.dump({**own_network_config(), "registry-mirrors": [mirror.url],
                   "registry-mirrors-by-host": {open_reg.host: [dead, mirror.url]}}, f)
    d = Daemon(root, extra_args=["--config-file", cfg])
    try:
        d.start()
        # Docker Hub through its mirror (no internet needed)
        out = d.out("pull", "mirrored:1")
        assert "Pull complete" in out and out.strip().endswith("docker.io/library/mirrored:1")
        assert d.out("run", "--rm", "mirrored:1", "/bin/busybox", "cat", "/etc/note").strip() == "hub mirror"
        # per host: a dead mirror is skipped, the live one serves what the registry lacks
        mirror.proxy.reset()
        d.cli("pull", f"{open_reg.host}/bob/onlymirror:1")
        assert mirror.proxy.requests("GET", "/v2/bob/onlymirror/manifests/1")
        # and what only the registry has still comes from the registry
        d.cli("pull", f"{open_reg.host}/bob/upstream:1")
        assert d.out("run", "--rm", f"{open_reg.host}/bob/upstream:1", "/bin/busybox", "cat",
                     "/etc/note").strip() == "upstream"
    finally:
        d.cleanup()
