"""The permission matrix: five actors x (pull, push, delete, catalog, search) x (public, private repository).

POLICY mirrors the table in docs/registry.md ("Policy table"); every cell is checked through the token flow a
real client uses (challenge -> /token -> retry), with the exact HTTP status and OCI error code.
"""

from __future__ import annotations

import pytest
import requests

from tests.registry.conftest import USERS
from tests.registry.helpers import Client, RegistryProcess, busybox_image

ACTORS = ("anonymous", "owner", "reader", "writer", "stranger")
LOGIN = {"owner": "alice", "reader": "rita", "writer": "will", "stranger": "sam"}
OK = "ok"
LISTED, HIDDEN = "listed", "hidden"

# (actor, repository) -> {operation: expected}; expected is "ok", "listed"/"hidden", or (status, OCI code)
POLICY: dict[tuple[str, str], dict[str, object]] = {
    ("anonymous", "pub"): {"pull": OK, "push": (401, "UNAUTHORIZED"), "delete": (401, "UNAUTHORIZED"),
                           "catalog": LISTED, "search": LISTED},
    ("anonymous", "priv"): {"pull": (404, "NAME_UNKNOWN"), "push": (404, "NAME_UNKNOWN"),
                            "delete": (404, "NAME_UNKNOWN"), "catalog": HIDDEN, "search": HIDDEN},
    ("owner", "pub"): {"pull": OK, "push": OK, "delete": OK, "catalog": LISTED, "search": LISTED},
    ("owner", "priv"): {"pull": OK, "push": OK, "delete": OK, "catalog": LISTED, "search": LISTED},
    ("reader", "pub"): {"pull": OK, "push": (403, "DENIED"), "delete": (403, "DENIED"),
                        "catalog": LISTED, "search": LISTED},
    ("reader", "priv"): {"pull": OK, "push": (403, "DENIED"), "delete": (403, "DENIED"),
                         "catalog": LISTED, "search": LISTED},
    ("writer", "pub"): {"pull": OK, "push": OK, "delete": (403, "DENIED"), "catalog": LISTED, "search": LISTED},
    ("writer", "priv"): {"pull": OK, "push": OK, "delete": (403, "DENIED"), "catalog": LISTED, "search": LISTED},
    ("stranger", "pub"): {"pull": OK, "push": (403, "DENIED"), "delete": (403, "DENIED"),
                          "catalog": LISTED, "search": LISTED},
    ("stranger", "priv"): {"pull": (404, "NAME_UNKNOWN"), "push": (404, "NAME_UNKNOWN"),
                           "delete": (404, "NAME_UNKNOWN"), "catalog": HIDDEN, "search": HIDDEN},
}


@pytest.fixture(scope="module")
def seeded(auth_registry: RegistryProcess) -> RegistryProcess:
    owner = Client(auth_registry.url, "alice", USERS["alice"])
    img = busybox_image("matrix")
    for repo in ("alice/pub", "alice/priv"):
        r = owner.push_image(repo, img, "base")
        assert r.status_code == 201, r.text
    return auth_registry


def client_for(reg: RegistryProcess, actor: str) -> Client:
    if actor == "anonymous":
        return Client(reg.url)
    user = LOGIN[actor]
    return Client(reg.url, user, USERS[user])


def outcome(r: requests.Response, ok_status: int) -> object:
    if r.status_code == ok_status:
        return OK
    try:
        code = r.json()["errors"][0]["code"]
    except (ValueError, KeyError, IndexError):
        code = None
    return (r.status_code, code)


def op_pull(c: Client, repo: str) -> object:
    return outcome(c.request("GET", f"/v2/{repo}/manifests/base", scope=f"repository:{repo}:pull"), 200)


def op_push(c: Client, repo: str, actor: str) -> object:
    img = busybox_image(f"push by {actor}")
    scope = f"repository:{repo}:pull,push"
    for data in img.blobs().values():
        r = c.push_blob(repo, data)
        if r.status_code != 201:
            return outcome(r, 201)
    r = c.request("PUT", f"/v2/{repo}/manifests/{actor}", data=img.manifest,
                  headers={"Content-Type": img.media_type}, scope=scope)
    return outcome(r, 201)


def op_delete(c: Client, reg: RegistryProcess, repo: str, actor: str) -> object:
    # a tag of its own to delete, pushed by the owner
    owner = Client(reg.url, "alice", USERS["alice"])
    img = busybox_image("to delete")
    assert owner.push_image(repo, img, f"del-{actor}").status_code == 201
    r = c.request("DELETE", f"/v2/{repo}/manifests/del-{actor}", scope=f"repository:{repo}:delete")
    return outcome(r, 202)


def op_catalog(c: Client, repo: str) -> object:
    # as a client does: a token for the catalog scope (anonymous callers get one too)
    r = requests.get(c.base + "/v2/_catalog", headers={"Authorization": "Bearer " + c.token("registry:catalog:*")})
    assert r.status_code == 200, r.text
    return LISTED if repo in r.json()["repositories"] else HIDDEN


def op_search(c: Client, repo: str) -> object:
    r = requests.get(c.base + "/v1/search", params={"q": "test image"}, auth=c.auth)
    assert r.status_code == 200, r.text
    return LISTED if repo in [x["name"] for x in r.json()["results"]] else HIDDEN


@pytest.mark.parametrize("visibility", ["pub", "priv"])
@pytest.mark.parametrize("actor", ACTORS)
def test_matrix(seeded: RegistryProcess, actor: str, visibility: str) -> None:
    repo = f"alice/{visibility}"
    c = client_for(seeded, actor)
    got = {
        "pull": op_pull(c, repo),
        "push": op_push(c, repo, actor),
        "delete": op_delete(c, seeded, repo, actor),
        "catalog": op_catalog(c, repo),
        "search": op_search(c, repo),
    }
    assert got == POLICY[(actor, visibility)]


def test_private_repository_looks_exactly_like_a_missing_one(seeded: RegistryProcess) -> None:
    for actor in ("anonymous", "stranger"):
        c = client_for(seeded, actor)
        for path in ("/manifests/base", "/tags/list", f"/blobs/sha256:{'0' * 64}"):
            a = c.request("GET", f"/v2/alice/priv{path}", scope="repository:alice/priv:pull")
            b = c.request("GET", f"/v2/alice/nothing{path}", scope="repository:alice/nothing:pull")
            assert a.status_code == b.status_code == 404
            assert a.json()["errors"][0]["code"] == b.json()["errors"][0]["code"] == "NAME_UNKNOWN"
            assert a.json()["errors"][0]["message"].replace("priv", "X") == \
                b.json()["errors"][0]["message"].replace("nothing", "X")


def test_push_to_own_namespace_creates_with_default_visibility(seeded: RegistryProcess) -> None:
    sam = client_for(seeded, "stranger")
    assert op_push(sam, "sam/fresh", "stranger") == OK
    # default visibility is private: anonymous callers cannot see it
    anon = client_for(seeded, "anonymous")
    assert op_pull(anon, "sam/fresh") == (404, "NAME_UNKNOWN")
    # and sam cannot create in alice's namespace
    assert op_push(sam, "alice/new-by-sam", "stranger") == (404, "NAME_UNKNOWN")


def test_basic_auth_is_accepted_directly(seeded: RegistryProcess) -> None:
    r = requests.get(seeded.url + "/v2/alice/priv/manifests/base", auth=("rita", USERS["rita"]))
    assert r.status_code == 200
    r = requests.get(seeded.url + "/v2/alice/priv/manifests/base", auth=("rita", "wrong"))
    assert r.status_code == 401 and r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    r = requests.get(seeded.url + "/v2/", auth=("sam", USERS["sam"]))
    assert r.status_code == 200


def test_admin_has_every_right(seeded: RegistryProcess) -> None:
    root = Client(seeded.url, "root", USERS["root"])
    assert op_pull(root, "alice/priv") == OK
    assert op_delete(root, seeded, "alice/priv", "admin") == OK
    assert op_push(root, "toplevel", "admin") == OK
