"""OCI distribution spec behaviour over real HTTP, against a registry in open mode."""

from __future__ import annotations

import json
import os

import requests

from tests.registry.helpers import (
    DOCKER_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Client,
    RegistryProcess,
    busybox_image,
    make_image,
    sha,
    tar_layer,
)


def errors(r: requests.Response) -> list[str]:
    return [e["code"] for e in r.json()["errors"]]


def test_base_and_version_header(open_registry: RegistryProcess) -> None:
    r = requests.get(open_registry.url + "/v2/")
    assert r.status_code == 401
    assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert r.headers["WWW-Authenticate"].startswith("Bearer realm=")
    c = Client(open_registry.url)
    r = c.request("GET", "/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"


def test_monolithic_upload_and_blob_reads(open_registry: RegistryProcess) -> None:
    url = open_registry.url
    data = os.urandom(200_000)
    d = sha(data)
    r = requests.post(f"{url}/v2/mono/blob/blobs/uploads/", params={"digest": d}, data=data)
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/v2/mono/blob/blobs/{d}"
    assert r.headers["Docker-Content-Digest"] == d
    r = requests.head(f"{url}/v2/mono/blob/blobs/{d}")
    assert r.status_code == 200
    assert int(r.headers["Content-Length"]) == len(data)
    assert r.headers["Docker-Content-Digest"] == d
    r = requests.get(f"{url}/v2/mono/blob/blobs/{d}")
    assert r.status_code == 200 and r.content == data
    r = requests.get(f"{url}/v2/mono/blob/blobs/{d}", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206
    assert r.content == data[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    # other repositories do not see it without a mount
    assert requests.head(f"{url}/v2/mono/other/blobs/{d}").status_code in (401, 404)
    r = requests.delete(f"{url}/v2/mono/blob/blobs/{d}")
    assert r.status_code == 202
    r = requests.get(f"{url}/v2/mono/blob/blobs/{d}")
    assert r.status_code == 404 and errors(r) == ["BLOB_UNKNOWN"]


def test_post_then_put(open_registry: RegistryProcess) -> None:
    url = open_registry.url
    data = os.urandom(50_000)
    r = requests.post(f"{url}/v2/two/step/blobs/uploads/")
    assert r.status_code == 202
    assert r.headers["Range"] == "0-0"
    uid = r.headers["Docker-Upload-UUID"]
    loc = r.headers["Location"]
    assert uid in loc
    r = requests.put(url + loc, params={"digest": sha(data)}, data=data)
    assert r.status_code == 201, r.text
    assert requests.get(f"{url}/v2/two/step/blobs/{sha(data)}").content == data


def test_chunked_upload_order_status_and_cancel(open_registry: RegistryProcess) -> None:
    url = open_registry.url
    parts = [os.urandom(70_000), os.urandom(70_000), os.urandom(10)]
    data = b"".join(parts)
    loc = requests.post(f"{url}/v2/chunk/ed/blobs/uploads/").headers["Location"]
    r = requests.patch(url + loc, data=parts[0], headers={"Content-Range": f"0-{len(parts[0]) - 1}",
                                                          "Content-Type": "application/octet-stream"})
    assert r.status_code == 202
    assert r.headers["Range"] == f"0-{len(parts[0]) - 1}"
    loc = r.headers["Location"]
    # out of order: 416 and the current range
    r = requests.patch(url + loc, data=parts[2], headers={"Content-Range": "140000-140009"})
    assert r.status_code == 416
    assert r.headers["Range"] == f"0-{len(parts[0]) - 1}"
    assert errors(r) == ["BLOB_UPLOAD_INVALID"]
    r = requests.get(url + loc)
    assert r.status_code == 204
    assert r.headers["Range"] == f"0-{len(parts[0]) - 1}"
    start = len(parts[0])
    r = requests.patch(url + loc, data=parts[1],
                       headers={"Content-Range": f"{start}-{start + len(parts[1]) - 1}"})
    assert r.status_code == 202
    # last chunk with the PUT (streamed PATCH without Content-Range is fine too)
    r = requests.put(url + loc, params={"digest": sha(data)}, data=parts[2],
                     headers={"Content-Range": f"{start + len(parts[1])}-{len(data) - 1}"})
    assert r.status_code == 201, r.text
    assert requests.get(f"{url}/v2/chunk/ed/blobs/{sha(data)}").content == data
    # cancel
    loc = requests.post(f"{url}/v2/chunk/ed/blobs/uploads/").headers["Location"]
    requests.patch(url + loc, data=b"abc")
    assert requests.delete(url + loc).status_code == 204
    r = requests.get(url + loc)
    assert r.status_code == 404 and errors(r) == ["BLOB_UPLOAD_UNKNOWN"]
    # a session belongs to its repository
    loc = requests.post(f"{url}/v2/chunk/ed/blobs/uploads/").headers["Location"]
    other = loc.replace("/chunk/ed/", "/chunk/other/")
    assert requests.patch(url + other, data=b"x").status_code == 404


def test_digest_mismatch_is_refused_and_not_stored(open_registry: RegistryProcess) -> None:
    url = open_registry.url
    data = b"the real content"
    claimed = sha(b"something else")
    r = requests.post(f"{url}/v2/bad/digest/blobs/uploads/", params={"digest": claimed}, data=data)
    assert r.status_code == 400 and errors(r) == ["DIGEST_INVALID"]
    loc = requests.post(f"{url}/v2/bad/digest/blobs/uploads/").headers["Location"]
    r = requests.put(url + loc, params={"digest": claimed}, data=data)
    assert r.status_code == 400 and errors(r) == ["DIGEST_INVALID"]
    for d in (claimed, sha(data)):
        assert requests.head(f"{url}/v2/bad/digest/blobs/{d}").status_code == 404
    assert requests.get(url + loc).status_code == 404  # the session is gone too
    r = requests.post(f"{url}/v2/bad/digest/blobs/uploads/", params={"digest": "sha256:nothex"}, data=data)
    assert r.status_code == 400 and errors(r) == ["DIGEST_INVALID"]


def test_cross_repository_mount(open_registry: RegistryProcess) -> None:
    url = open_registry.url
    data = os.urandom(30_000)
    d = sha(data)
    assert requests.post(f"{url}/v2/mount/src/blobs/uploads/", params={"digest": d}, data=data).status_code == 201
    r = requests.post(f"{url}/v2/mount/dst/blobs/uploads/", params={"mount": d, "from": "mount/src"})
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/mount/dst/blobs/{d}"
    assert requests.get(f"{url}/v2/mount/dst/blobs/{d}").content == data
    # unknown blob or source: falls back to an upload session
    r = requests.post(f"{url}/v2/mount/dst/blobs/uploads/", params={"mount": sha(b"nope"), "from": "mount/src"})
    assert r.status_code == 202 and "Docker-Upload-UUID" in r.headers
    # dedup: one file for both repositories
    root = open_registry.root
    path = os.path.join(root, "blobs", "sha256", d[7:9], d[7:])
    assert os.path.exists(path)


def _push_blobs(url: str, name: str, blobs: dict[str, bytes]) -> None:
    for d, data in blobs.items():
        r = requests.post(f"{url}/v2/{name}/blobs/uploads/", params={"digest": d}, data=data)
        assert r.status_code == 201, r.text


def test_manifest_types_and_media_type_echo(open_registry: RegistryProcess) -> None:
    url = open_registry.url
    name = "man/types"
    oci = busybox_image("oci")
    docker = make_image([tar_layer({"a": b"docker"})], docker=True)
    for img, tag in ((oci, "oci"), (docker, "docker")):
        _push_blobs(url, name, img.blobs())
        r = requests.put(f"{url}/v2/{name}/manifests/{tag}", data=img.manifest,
                         headers={"Content-Type": img.media_type})
        assert r.status_code == 201, r.text
        assert r.headers["Docker-Content-Digest"] == img.digest
        assert r.headers["Location"] == f"/v2/{name}/manifests/{img.digest}"
        for ref in (tag, img.digest):
            r = requests.get(f"{url}/v2/{name}/manifests/{ref}")
            assert r.status_code == 200
            assert r.content == img.manifest  # byte for byte
            assert r.headers["Content-Type"] == img.media_type
            assert r.headers["Docker-Content-Digest"] == img.digest
            h = requests.head(f"{url}/v2/{name}/manifests/{ref}")
            assert h.status_code == 200 and int(h.headers["Content-Length"]) == len(img.manifest)
    for mt in (OCI_INDEX, DOCKER_LIST):
        index = json.dumps({"schemaVersion": 2, "mediaType": mt, "manifests": [
            {"mediaType": oci.media_type, "digest": oci.digest, "size": len(oci.manifest),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": docker.media_type, "digest": docker.digest, "size": len(docker.manifest),
             "platform": {"architecture": "arm64", "os": "linux"}}]}).encode()
        tag = "index" if mt == OCI_INDEX else "list"
        r = requests.put(f"{url}/v2/{name}/manifests/{tag}", data=index, headers={"Content-Type": mt})
        assert r.status_code == 201, r.text
        r = requests.get(f"{url}/v2/{name}/manifests/{tag}")
        assert r.headers["Content-Type"] == mt and r.content == index
    r = requests.get(f"{url}/v2/{name}/tags/list")
    assert r.json() == {"name": name, "tags": ["docker", "index", "list", "oci"]}


def test_manifest_validation(open_registry: RegistryProcess) -> None:
    url = open_registry.url
    name = "man/invalid"
    img = busybox_image("invalid")
    # blobs missing
    r = requests.put(f"{url}/v2/{name}/manifests/v1", data=img.manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and errors(r) == ["MANIFEST_BLOB_UNKNOWN"]
    _push_blobs(url, name, img.blobs())
    # index naming a manifest the repository lacks
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": img.digest, "size": len(img.manifest)}]}).encode()
    r = requests.put(f"{url}/v2/{name}/manifests/idx", data=index, headers={"Content-Type": OCI_INDEX})
    assert r.status_code == 400 and errors(r) == ["MANIFEST_BLOB_UNKNOWN"]
    # not JSON, wrong media type, mismatched mediaType field
    for body, ct in ((b"{nope", OCI_MANIFEST), (img.manifest, "application/vnd.example+json"),
                     (img.manifest, OCI_INDEX)):
        r = requests.put(f"{url}/v2/{name}/manifests/v1", data=body, headers={"Content-Type": ct})
        assert r.status_code == 400 and errors(r) == ["MANIFEST_INVALID"], (ct, r.text)
    # by digest: content must match
    r = requests.put(f"{url}/v2/{name}/manifests/{sha(b'x')}", data=img.manifest,
                     headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and errors(r) == ["DIGEST_INVALID"]
    r = requests.put(f"{url}/v2/{name}/manifests/{img.digest}", data=img.manifest,
                     headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201
    r = requests.get(f"{url}/v2/{name}/manifests/nosuchtag")
    assert r.status_code == 404 and errors(r) == ["MANIFEST_UNKNOWN"]
    r = requests.get(f"{url}/v2/no/such/repo/manifests/latest")
    assert r.status_code in (401, 404)
    r = requests.get(f"{url}/v2/Bad_Name/manifests/latest")
    assert r.status_code == 400 and errors(r) == ["NAME_INVALID"]


def test_tags_and_catalog_pagination(open_registry: RegistryProcess) -> None:
    url = open_registry.url
    img = busybox_image("pages")
    for repo in ("page/a", "page/b", "page/c"):
        _push_blobs(url, repo, img.blobs())
        for tag in ("t1", "t2", "t3", "t4", "t5"):
            r = requests.put(f"{url}/v2/{repo}/manifests/{tag}", data=img.manifest,
                             headers={"Content-Type": OCI_MANIFEST})
            assert r.status_code == 201
    r = requests.get(f"{url}/v2/page/a/tags/list", params={"n": 2})
    assert r.json()["tags"] == ["t1", "t2"]
    assert r.headers["Link"] == '</v2/page/a/tags/list?n=2&last=t2>; rel="next"'
    nxt = r.headers["Link"].split(";")[0].strip("<>")
    r = requests.get(url + nxt)
    assert r.json()["tags"] == ["t3", "t4"]
    r = requests.get(f"{url}/v2/page/a/tags/list", params={"n": 2, "last": "t4"})
    assert r.json()["tags"] == ["t5"] and "Link" not in r.headers
    r = requests.get(f"{url}/v2/_catalog")
    names = r.json()["repositories"]
    assert {"page/a", "page/b", "page/c"} <= set(names) and names == sorted(names)
    r = requests.get(f"{url}/v2/_catalog", params={"n": 1, "last": "page/a"})
    assert r.json()["repositories"] == ["page/b"]
    assert r.headers["Link"] == '</v2/_catalog?n=1&last=page%2Fb>; rel="next"'


def test_delete_by_tag_and_digest(open_registry: RegistryProcess) -> None:
    url = open_registry.url
    name = "del/me"
    img = busybox_image("delete")
    _push_blobs(url, name, img.blobs())
    for tag in ("a", "b"):
        requests.put(f"{url}/v2/{name}/manifests/{tag}", data=img.manifest, headers={"Content-Type": OCI_MANIFEST})
    assert requests.delete(f"{url}/v2/{name}/manifests/a").status_code == 202
    assert requests.get(f"{url}/v2/{name}/manifests/a").status_code == 404
    assert requests.get(f"{url}/v2/{name}/manifests/b").status_code == 200
    assert requests.delete(f"{url}/v2/{name}/manifests/{img.digest}").status_code == 202
    assert requests.get(f"{url}/v2/{name}/manifests/b").status_code == 404
    assert requests.get(f"{url}/v2/{name}/manifests/{img.digest}").status_code == 404
    r = requests.delete(f"{url}/v2/{name}/manifests/{img.digest}")
    assert r.status_code == 404 and errors(r) == ["MANIFEST_UNKNOWN"]


def test_referrers(open_registry: RegistryProcess) -> None:
    url = open_registry.url
    name = "ref/errers"
    img = busybox_image("subject")
    _push_blobs(url, name, img.blobs())
    requests.put(f"{url}/v2/{name}/manifests/v1", data=img.manifest, headers={"Content-Type": OCI_MANIFEST})
    empty = b"{}"
    _push_blobs(url, name, {sha(empty): empty})
    digests = {}
    for at in ("application/vnd.example.sbom", "application/vnd.example.sig"):
        art = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": at,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha(empty), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha(empty), "size": 2}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": img.digest, "size": len(img.manifest)},
            "annotations": {"kind": at}}).encode()
        r = requests.put(f"{url}/v2/{name}/manifests/{sha(art)}", data=art, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text
        assert r.headers["OCI-Subject"] == img.digest
        digests[at] = sha(art)
    r = requests.get(f"{url}/v2/{name}/referrers/{img.digest}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    body = r.json()
    assert body["mediaType"] == OCI_INDEX
    assert {m["digest"] for m in body["manifests"]} == set(digests.values())
    assert all(m["annotations"]["kind"] == m["artifactType"] for m in body["manifests"])
    r = requests.get(f"{url}/v2/{name}/referrers/{img.digest}", params={"artifactType": "application/vnd.example.sig"})
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in r.json()["manifests"]] == [digests["application/vnd.example.sig"]]
    r = requests.get(f"{url}/v2/{name}/referrers/{sha(b'none')}")
    assert r.status_code == 200 and r.json()["manifests"] == []


def test_errors_have_spec_shape(open_registry: RegistryProcess) -> None:
    r = requests.get(open_registry.url + f"/v2/shape/x/blobs/{sha(b'missing')}")
    body = r.json()
    assert r.status_code == 404
    assert set(body["errors"][0]) >= {"code", "message"}
    assert r.headers["Content-Type"] == "application/json"
