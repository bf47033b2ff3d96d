"""Pull and push end to end: the real CLI, matoud and matou's registry (behind a counting proxy)."""

from __future__ import annotations

import json
import os

from tests.conftest import Daemon
from tests.distribution.conftest import Reg, app_image, login
from tests.registry.helpers import Client, busybox_image, make_image, sha, tar_layer


def test_round_trip_push_rmi_run_then_push_v2_uploads_one_layer(daemon: Daemon, busybox: str, auth_reg: Reg,
                                                                 client_env: dict[str, str]) -> None:
    host = auth_reg.host
    app = f"{host}/alice/app"
    app_image(daemon, busybox, f"{app}:1", "version-one")
    out = login(daemon, client_env, host, "alice").stdout.decode()
    assert "Login Succeeded" in out
    r = daemon.cli("push", f"{app}:1", env=client_env)
    out = r.stdout.decode()
    assert f"The push refers to repository [{app}]" in out
    assert "Pushed" in out and "1: digest: sha256:" in out
    digest = out.split("1: digest: ")[1].split()[0]
    assert f"{app}@{digest}" in json.loads(daemon.out("image", "inspect", f"{app}:1"))[0]["RepoDigests"]

    daemon.cli("rmi", f"{app}:1")
    r = daemon.cli("run", "--rm", f"{app}:1", "cat", "/app.txt", env=client_env)
    assert r.stdout.decode().strip() == "version-one"
    err = r.stderr.decode()
    assert f"Unable to find image '{app}:1' locally" in err
    assert "Already exists" in err and "Pull complete" in err and f"Digest: {digest}" in err

    # v2 adds one layer: exactly one layer blob, the config and the manifest go up
    app_image(daemon, f"{app}:1", f"{app}:2", "version-two", "/v2.txt")
    auth_reg.proxy.reset()
    out = daemon.cli("push", f"{app}:2", env=client_env).stdout.decode()
    assert out.count("Layer already exists") == 2, out
    assert out.count(": Pushed") == 1, out
    uploads = auth_reg.proxy.blob_uploads()
    assert len(uploads) == 2, uploads  # the new layer and the config
    assert not auth_reg.proxy.requests("PATCH")
    assert len([s for s in auth_reg.proxy.requests("PUT", "/manifests/") if s.status == 201]) == 1
    daemon.cli("rmi", f"{app}:1", f"{app}:2")


def test_pull_by_tag_digest_and_all_tags(daemon: Daemon, open_reg: Reg) -> None:
    c = Client(open_reg.url)
    imgs = {t: busybox_image(f"note {t}") for t in ("a", "b")}
    for t, img in imgs.items():
        assert c.push_image("bob/multi", img, t).status_code == 201
    name = f"{open_reg.host}/bob/multi"
    out = daemon.out("pull", f"{name}:a")
    assert "a: Pulling from bob/multi" in out and "Pull complete" in out
    assert out.strip().endswith(f"{name}:a")
    assert f"Digest: {imgs['a'].digest}" in out and f"Status: Downloaded newer image for {name}:a" in out
    again = daemon.out("pull", f"{name}:a")
    assert f"Status: Image is up to date for {name}:a" in again and "Already exists" in again
    # by digest: verified, recorded as a repo digest, no tag
    out = daemon.out("pull", f"{name}@{imgs['b'].digest}")
    assert f"Digest: {imgs['b'].digest}" in out
    info = json.loads(daemon.out("image", "inspect", f"{name}@{imgs['b'].digest}"))[0]
    assert info["RepoDigests"] == [f"{name}@{imgs['b'].digest}"] and info["RepoTags"] == []
    # -a: every tag
    out = daemon.out("pull", "-a", name)
    assert "a: Pulling from bob/multi" in out and "b: Pulling from bob/multi" in out
    tags = daemon.out("images", "--format", "{{.Tag}}", name).split()
    assert sorted(tags) == ["a", "b"]
    # quiet prints the reference only
    assert daemon.out("pull", "-q", f"{name}:b").strip() == f"{name}:b"
    daemon.cli("rmi", f"{name}:a", f"{name}:b")


def test_pull_picks_the_platform_from_an_index(daemon: Daemon, open_reg: Reg) -> None:
    c = Client(open_reg.url)
    native = busybox_image("amd64")
    other = make_image([tar_layer({"etc/arch": b"arm64"})], extra={"architecture": "arm64"})
    for img in (native, other):
        assert c.push_image("bob/multiarch", img, img.digest).status_code == 201
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": other.media_type, "digest": other.digest, "size": len(other.manifest),
         "platform": {"os": "linux", "architecture": "arm64"}},
        {"mediaType": native.media_type, "digest": native.digest, "size": len(native.manifest),
         "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
    r = c.request("PUT", "/v2/bob/multiarch/manifests/1", data=index,
                  headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})
    assert r.status_code == 201
    name = f"{open_reg.host}/bob/multiarch"
    out = daemon.out("pull", f"{name}:1")
    assert f"Digest: {sha(index)}" in out  # the digest the user asked for is the index's
    info = json.loads(daemon.out("image", "inspect", f"{name}:1"))[0]
    assert info["Architecture"] == "amd64" and info["Id"] == sha(native.config)
    assert f"{name}@{sha(index)}" in info["RepoDigests"]
    assert daemon.out("run", "--rm", f"{name}:1", "/bin/busybox", "cat", "/etc/note").strip() == "amd64"
    daemon.cli("pull", "--platform", "linux/arm64", f"{name}:1")
    info = json.loads(daemon.out("image", "inspect", f"{name}:1"))[0]
    assert info["Architecture"] == "arm64"
    daemon.cli("rmi", f"{name}:1")
    daemon.cli("rmi", sha(native.config), check=False)


def test_pull_errors(daemon: Daemon, auth_reg: Reg, open_reg: Reg, client_env: dict[str, str]) -> None:
    r = daemon.cli("pull", f"{open_reg.host}/nobody/nothing:1", check=False)
    assert r.returncode == 1
    assert "Error response from daemon: pull access denied for" in r.stderr.decode() or \
        "not found" in r.stderr.decode()
    c = Client(open_reg.url)
    c.push_image("bob/known", busybox_image("x"), "1")
    r = daemon.cli("pull", f"{open_reg.host}/bob/known:nope", check=False)
    assert r.returncode == 1
    assert f"manifest for {open_reg.host}/bob/known:nope not found" in r.stderr.decode()
    # a private repository looks missing without credentials, and works with them
    Client(auth_reg.url, "alice", "alice-pw").push_image("alice/priv", busybox_image("secret"), "1")
    r = daemon.cli("pull", f"{auth_reg.host}/alice/priv:1", check=False, env=client_env)
    assert r.returncode == 1 and "pull access denied" in r.stderr.decode()
    login(daemon, client_env, auth_reg.host, "rita")
    daemon.cli("pull", f"{auth_reg.host}/alice/priv:1", env=client_env)
    # rita may read but not write
    daemon.cli("tag", f"{auth_reg.host}/alice/priv:1", f"{auth_reg.host}/alice/priv:2")
    r = daemon.cli("push", f"{auth_reg.host}/alice/priv:2", check=False, env=client_env)
    assert r.returncode == 1 and "denied" in (r.stdout + r.stderr).decode()
    # a digest that does not match what the registry serves is refused
    bad = "sha256:" + "0" * 64
    r = daemon.cli("pull", f"{open_reg.host}/bob/known@{bad}", check=False)
    assert r.returncode == 1
    daemon.cli("rmi", f"{auth_reg.host}/alice/priv:1", f"{auth_reg.host}/alice/priv:2")


def test_push_of_an_imported_plain_layer_compresses_it_once(daemon: Daemon, open_reg: Reg) -> None:
    with open("/bin/busybox", "rb") as f:
        tar = tar_layer({"bin/busybox": f.read(), "etc/imported": b"yes"})
    name = f"{open_reg.host}/bob/imported:1"
    daemon.cli("import", "-", name, input=tar)
    out = daemon.out("push", name)
    assert ": Pushed" in out
    open_reg.proxy.reset()
    out = daemon.out("push", name)
    assert "Layer already exists" in out  # the same compressed digest again
    assert not open_reg.proxy.blob_uploads()
    digest = out.split("1: digest: ")[1].split()[0]
    m = Client(open_reg.url).request("GET", f"/v2/bob/imported/manifests/{digest}",
                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    assert m["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    daemon.cli("rmi", name)
    daemon.cli("pull", name)
    assert daemon.out("run", "--rm", name, "/bin/busybox", "cat", "/etc/imported").strip() == "yes"
    daemon.cli("rmi", name)


def test_push_all_tags(daemon: Daemon, busybox: str, open_reg: Reg) -> None:
    name = f"{open_reg.host}/bob/my_app"
    for t in ("a", "b"):
        daemon.cli("tag", busybox, f"{name}:{t}")
    out = daemon.out("push", "-a", name)
    assert "a: digest: sha256:" in out and "b: digest: sha256:" in out
    tags = Client(open_reg.url).request("GET", "/v2/bob/my_app/tags/list").json()["tags"]
    assert sorted(tags) == ["a", "b"]
    r = daemon.cli("push", f"{name}:nope", check=False)
    assert r.returncode == 1 and "does not exist locally" in r.stderr.decode()
    daemon.cli("rmi", f"{name}:a", f"{name}:b")



def test_push_fetches_a_blob_missing_here_from_where_it_came_from(daemon: Daemon, open_reg: Reg, auth_reg: Reg,
                                                                  client_env: dict[str, str]) -> None:
    """A layer can be here without its blob (it already existed, under another compression, when the image was
    pulled); a push then brings the blob from the repository it came from."""
    import os

    img = busybox_image("refetched")
    assert Client(open_reg.url).push_image("bob/src", img, "1").status_code == 201
    src = f"{open_reg.host}/bob/src:1"
    daemon.cli("pull", src)
    blob = sha(img.layers[0])
    os.unlink(os.path.join(daemon.data_root, "content", "blobs", "sha256", blob.split(":")[1]))
    target = f"{auth_reg.host}/alice/refetched:1"
    daemon.cli("tag", src, target)
    login(daemon, client_env, auth_reg.host, "alice")
    open_reg.proxy.reset()
    out = daemon.out("push", target, env=client_env)
    assert ": Pushed" in out
    assert open_reg.proxy.requests("GET", f"/v2/bob/src/blobs/{blob}")
    daemon.cli("rmi", src, target)


def test_concurrent_pulls_of_one_image_download_each_blob_once(daemon: Daemon, open_reg: Reg) -> None:
    import subprocess

    from tests.conftest import PY, _env

    with open("/bin/busybox", "rb") as f:
        base = tar_layer({"bin/busybox": f.read()})
    img = make_image([base, tar_layer({"data.bin": os.urandom(4 << 20)})])
    assert Client(open_reg.url).push_image("bob/twice", img, "1").status_code == 201
    name = f"{open_reg.host}/bob/twice:1"
    open_reg.proxy.reset()
    procs = [subprocess.Popen([PY, "-m", "matou", "pull", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=_env({"MATOU_HOST": daemon.host})) for _ in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    for layer in img.layers:
        assert len(open_reg.proxy.requests("GET", f"/blobs/{sha(layer)}")) == 1
    assert daemon.out("run", "--rm", name, "/bin/busybox", "stat", "-c", "%s", "/data.bin").strip() == str(4 << 20)
    daemon.cli("rmi", name)
