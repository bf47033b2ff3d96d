"""Admin commands (offline on --root while the server runs, and online through --url), garbage collection,
tag immutability, search and the web page."""

from __future__ import annotations

import os

import requests

from tests.registry.helpers import OCI_MANIFEST, Client, RegistryProcess, busybox_image, cli, sha


def test_admin_offline_and_online(tmp_path) -> None:  # noqa: ANN001
    root = str(tmp_path / "root")
    cli("user", "add", "boss", "--password", "boss-pw", "--admin", "--root", root)
    reg = RegistryProcess(root).start()
    try:
        # offline, while the server runs
        cli("user", "add", "carol", "--root", root, input="carol-pw\n")
        cli("repo", "create", "carol/app", "--visibility", "private", "--description", "carol's app", "--root", root)
        out = cli("repo", "ls", "--root", root).stdout
        assert "carol/app" in out and "private" in out
        assert Client(reg.url, "carol", "carol-pw").request("GET", "/v2/carol/app/tags/list").status_code == 200
        # online
        url = ["--url", reg.url, "--creds", "boss:boss-pw"]
        cli("user", "add", "dave", "--password", "dave-pw", *url)
        cli("repo", "member", "add", "carol/app", "dave", "--role", "read", *url)
        assert Client(reg.url, "dave", "dave-pw").request("GET", "/v2/carol/app/tags/list").status_code == 200
        cli("repo", "set", "carol/app", "--visibility", "public", "--description", "now public", *url)
        out = cli("repo", "ls", "--url", reg.url).stdout  # anonymous: sees public ones only
        assert "carol/app" in out and "now public" in out
        cli("repo", "member", "rm", "carol/app", "dave", *url)
        cli("repo", "set", "carol/app", "--visibility", "private", *url)
        assert Client(reg.url, "dave", "dave-pw").request("GET", "/v2/carol/app/tags/list").status_code == 404
        # a non-admin cannot add users; the owner may manage their repository
        p = cli("user", "add", "eve", "--password", "x", "--url", reg.url, "--creds", "carol:carol-pw", check=False)
        assert p.returncode == 1 and "administrators" in p.stderr
        cli("repo", "set", "carol/app", "--description", "by carol", "--url", reg.url, "--creds", "carol:carol-pw")
        p = cli("repo", "rm", "carol/app", "--url", reg.url, "--creds", "dave:dave-pw", check=False)
        assert p.returncode == 1 and "not known" in p.stderr  # dave cannot even see it now
        cli("user", "passwd", "dave", "--password", "new-pw", "--root", root)
        assert requests.get(reg.url + "/v2/", auth=("dave", "new-pw")).status_code == 200
        cli("user", "rm", "dave", *url)
        assert requests.get(reg.url + "/v2/", auth=("dave", "new-pw")).status_code == 401
        cli("repo", "rm", "carol/app", "--root", root)
        assert "carol/app" not in cli("repo", "ls", "--root", root).stdout
        # organisations
        cli("org", "add", "team", *url)
        cli("org", "member", "add", "team", "carol", "--role", "write", *url)
        c = Client(reg.url, "carol", "carol-pw")
        assert c.push_image("team/tool", busybox_image("org")).status_code == 201
        assert "team/tool" in cli("repo", "ls", "--root", root).stdout
        p = cli("repo", "create", "x/y", check=False)
        assert p.returncode == 1 and "--root" in p.stderr
    finally:
        reg.stop()


def _upload(url: str, name: str, data: bytes) -> None:
    assert requests.post(f"{url}/v2/{name}/blobs/uploads/", params={"digest": sha(data)}, data=data).status_code == 201


def test_gc_with_grace_and_dry_run(tmp_path) -> None:  # noqa: ANN001
    root = str(tmp_path / "root")
    cfg = tmp_path / "registry.json"
    cfg.write_text('{"gc": {"grace": 3600}}')
    reg = RegistryProcess(root, ["--anonymous-push", "--config", str(cfg)]).start()
    try:
        url = reg.url
        img = busybox_image("kept")
        for data in img.blobs().values():
            _upload(url, "gc/app", data)
        assert requests.put(f"{url}/v2/gc/app/manifests/v1", data=img.manifest,
                            headers={"Content-Type": OCI_MANIFEST}).status_code == 201
        orphan = os.urandom(4096)
        _upload(url, "gc/app", orphan)  # a layer whose manifest never came
        inflight = requests.post(f"{url}/v2/gc/app/blobs/uploads/").headers["Location"]
        requests.patch(url + inflight, data=b"partial")
        # within the grace period nothing goes
        out = cli("gc", "--dry-run", "--root", root, "--config", str(cfg)).stdout
        assert "would free 0 blobs" in out
        # past it: the orphan goes, the image stays
        out = cli("gc", "--dry-run", "--grace", "0", "--root", root).stdout
        assert sha(orphan) in out and "would free 1 blobs" in out
        assert requests.head(f"{url}/v2/gc/app/blobs/{sha(orphan)}").status_code == 200  # dry run changed nothing
        out = cli("gc", "--grace", "0", "--root", root).stdout
        assert "freed 1 blobs (4096 bytes)" in out
        assert requests.head(f"{url}/v2/gc/app/blobs/{sha(orphan)}").status_code == 404
        for d in img.blobs():
            assert requests.head(f"{url}/v2/gc/app/blobs/{d}").status_code == 200
        assert requests.get(url + inflight).status_code == 204  # upload sessions live for upload_ttl
        # deleting the manifest makes its blobs collectable; the same bytes can be pushed again afterwards
        assert requests.delete(f"{url}/v2/gc/app/manifests/{img.digest}").status_code == 202
        out = cli("gc", "--grace", "0", "--root", root).stdout
        assert "freed 3 blobs" in out  # config, layer and the manifest itself
        for d in img.blobs():
            assert requests.head(f"{url}/v2/gc/app/blobs/{d}").status_code == 404
        c = Client(url)
        assert c.push_image("gc/app", img, "v1").status_code == 201
        r = requests.get(f"{url}/v2/gc/app/manifests/v1")
        assert r.content == img.manifest, r.text
        # untagged manifests stay unless asked
        requests.delete(f"{url}/v2/gc/app/manifests/v1")
        out = cli("gc", "--grace", "0", "--root", root).stdout
        assert requests.get(f"{url}/v2/gc/app/manifests/{img.digest}").status_code == 200
        out = cli("gc", "--grace", "0", "--delete-untagged", "--root", root).stdout
        assert f"manifest {img.digest}" in out
        assert requests.get(f"{url}/v2/gc/app/manifests/{img.digest}").status_code == 404
    finally:
        reg.stop()


def test_immutable_tags(tmp_path) -> None:  # noqa: ANN001
    root = str(tmp_path / "root")
    reg = RegistryProcess(root, ["--anonymous-push"]).start()
    try:
        url = reg.url
        c = Client(url)
        a, b = busybox_image("a"), busybox_image("b")
        assert c.push_image("imm/app", a, "v1.0").status_code == 201
        assert c.push_image("imm/app", a, "latest").status_code == 201
        cli("repo", "set", "imm/app", "--immutable-tags", "v*", "--root", root)
        r = c.push_image("imm/app", b, "v1.0")
        assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
        assert c.push_image("imm/app", a, "v1.0").status_code == 201  # same content: fine
        assert c.push_image("imm/app", b, "latest").status_code == 201  # not matching the pattern
        assert requests.delete(f"{url}/v2/imm/app/manifests/v1.0").status_code == 403
        assert requests.get(f"{url}/v2/imm/app/manifests/v1.0").content == a.manifest
        cli("repo", "set", "imm/app", "--immutable-tags", "", "--root", root)
        assert c.push_image("imm/app", b, "v1.0").status_code == 201
    finally:
        reg.stop()


def test_search_ranking_privacy_and_web(tmp_path) -> None:  # noqa: ANN001
    root = str(tmp_path / "root")
    cli("user", "add", "zed", "--password", "zed-pw", "--root", root)
    for name, vis, desc in (("zed/redis", "public", "an in-memory store"),
                            ("zed/tools", "public", "redis tools and scripts"),
                            ("redis", "public", "the official-looking one"),
                            ("zed/redis-secret", "private", "secret redis fork")):
        cli("repo", "create", name, "--visibility", vis, "--description", desc, "--root", root)
    reg = RegistryProcess(root).start()
    try:
        r = requests.get(reg.url + "/v1/_ping")
        assert r.status_code == 200 and r.headers["X-Docker-Registry-Standalone"] == "true"
        r = requests.get(reg.url + "/v1/search", params={"q": "redis"})
        body = r.json()
        assert set(body) >= {"num_results", "query", "results", "page", "page_size", "num_pages"}
        names = [x["name"] for x in body["results"]]
        assert names[0] == "redis"  # exact name match first
        assert names[1] == "zed/redis"  # then exact last component
        assert set(names) == {"redis", "zed/redis", "zed/tools"} and body["num_results"] == 3
        assert set(body["results"][0]) >= {"name", "description", "star_count", "is_official", "is_automated"}
        r = requests.get(reg.url + "/v1/search", params={"q": "redis", "n": 1, "page": 2})
        assert [x["name"] for x in r.json()["results"]] == ["zed/redis"] and r.json()["num_pages"] == 3
        r = requests.get(reg.url + "/v1/search", params={"q": "redis"}, auth=("zed", "zed-pw"))
        assert "zed/redis-secret" in [x["name"] for x in r.json()["results"]]
        r = requests.get(reg.url + "/v1/search", params={"q": "redis"}, auth=("zed", "bad"))
        assert r.status_code == 401
        # stars rank within the same match class
        requests.put(reg.url + "/api/v1/repositories/zed/tools/-/star", auth=("zed", "zed-pw"))
        r = requests.get(reg.url + "/api/v1/repositories/zed/tools")
        assert r.json()["star_count"] == 1
        # the web page
        page = requests.get(reg.url + "/", params={"q": "redis"}).text
        assert "zed/redis" in page and "redis-secret" not in page
        page = requests.get(reg.url + "/", auth=("zed", "zed-pw")).text
        assert "zed/redis-secret" in page
        assert requests.get(reg.url + "/r/zed/redis").status_code == 200
        assert requests.get(reg.url + "/r/zed/redis-secret").status_code == 404
        assert requests.get(reg.url + "/login").status_code == 401
    finally:
        reg.stop()


def test_online_gc_and_pull_counts(tmp_path) -> None:  # noqa: ANN001
    import time

    root = str(tmp_path / "root")
    cfg = tmp_path / "registry.toml"
    cfg.write_text("[gc]\ngrace = 0\ninterval = 1\n")
    reg = RegistryProcess(root, ["--anonymous-push", "--config", str(cfg)]).start()
    try:
        url = reg.url
        img = busybox_image("counted")
        assert Client(url).push_image("online/gc", img, "v1").status_code == 201
        orphan = os.urandom(1000)
        _upload(url, "online/gc", orphan)
        deadline = time.monotonic() + 30
        while requests.head(f"{url}/v2/online/gc/blobs/{sha(orphan)}").status_code != 404:
            assert time.monotonic() < deadline, "the server's collector did not free the orphan"
            time.sleep(0.2)
        for _ in range(3):
            assert requests.get(f"{url}/v2/online/gc/manifests/v1").content == img.manifest
    finally:
        reg.stop()  # a graceful stop writes the batched pull counts
    out = cli("repo", "ls", "--root", root).stdout.splitlines()
    row = next(line.split() for line in out if line.startswith("online/gc"))
    assert row[3] == "3"
