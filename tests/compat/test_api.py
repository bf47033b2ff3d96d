"""Engine API details clients depend on: version negotiation and prefixes, Docker's status codes and messages,
/events with since/until/filters for every object type, stats (stream and one-shot), /system/df, archives."""

from __future__ import annotations

import base64
import io
import json
import tarfile
import time
from typing import Any

import pytest

from matou.daemon.config import API_VERSION, MIN_API_VERSION
from tests.compat.conftest import has_feature, uid
from tests.conftest import Daemon


def call(d: Daemon, method: str, path: str, query: Any = None, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    api = d.api()
    if body is not None and not isinstance(body, bytes):
        r = api.request(method, path, query, json_body=body, headers=headers, check=False)
    else:
        r = api.request(method, path, query, body=body, headers=headers, check=False)
    data = r.read() if method != "HEAD" else b""
    r.close()
    return r.status, {k.lower(): v for k, v in r.headers.items()}, data


def versions() -> list[str]:
    lo, hi = (int(v.split(".")[1]) for v in (MIN_API_VERSION, API_VERSION))
    return [f"1.{m}" for m in range(lo, hi + 1)]


def test_every_version_prefix(cd: Daemon) -> None:
    assert versions()[0] == "1.24" and "1.38" in versions()
    for v in versions():
        status, headers, body = call(cd, "GET", f"/v{v}/version")
        assert status == 200, (v, body)
        assert json.loads(body)["ApiVersion"] == API_VERSION and headers["api-version"] == API_VERSION
        status, _, body = call(cd, "GET", f"/v{v}/containers/json", {"all": "1"})
        assert status == 200 and isinstance(json.loads(body), list)
    status, _, body = call(cd, "GET", "/v1.23/version")
    assert status == 400 and json.loads(body)["message"] == (
        f"client version 1.23 is too old. Minimum supported API version is {MIN_API_VERSION}, "
        "please upgrade your client to a newer version")
    status, _, body = call(cd, "GET", "/v1.99/info")
    assert status == 400 and json.loads(body)["message"] == (
        f"client version 1.99 is too new. Maximum supported API version is {API_VERSION}")


def test_ping_negotiation_headers(cd: Daemon) -> None:
    for method in ("GET", "HEAD"):
        status, headers, body = call(cd, method, "/_ping")
        assert status == 200 and headers["api-version"] == API_VERSION and headers["ostype"] == "linux"
        assert body == (b"OK" if method == "GET" else b"")
    status, headers, _ = call(cd, "GET", "/v1.24/_ping")
    assert status == 200 and headers["api-version"] == API_VERSION


def test_docker_cli_pinned_old_versions(docker) -> None:  # type: ignore[no-untyped-def]
    """The CLI with DOCKER_API_VERSION pinned (as old scripts do) uses that prefix for everything."""
    for v in ("1.24", "1.38", "1.41"):
        env = dict(docker.env, DOCKER_API_VERSION=v)
        import subprocess

        r = subprocess.run([docker.binary, "run", "--rm", "busybox", "echo", v], env=env, capture_output=True,
                           timeout=60)
        assert r.returncode == 0 and r.stdout == f"{v}\n".encode(), r.stderr
        r = subprocess.run([docker.binary, "version", "--format", "{{.Client.APIVersion}}"], env=env,
                           capture_output=True, timeout=60)
        assert r.stdout.strip() == v.encode()


def test_status_codes_and_messages(cd: Daemon) -> None:
    name = "nope-" + uid()
    for method, path in (("GET", f"/containers/{name}/json"), ("POST", f"/containers/{name}/start"),
                         ("POST", f"/containers/{name}/stop"), ("DELETE", f"/containers/{name}"),
                         ("GET", f"/containers/{name}/logs?stdout=1"), ("POST", f"/containers/{name}/exec")):
        status, _, body = call(cd, method, path, body={"Cmd": ["true"]} if path.endswith("exec") else None)
        assert (status, json.loads(body)) == (404, {"message": f"No such container: {name}"}), (method, path)
    status, _, body = call(cd, "GET", f"/images/{name}/json")
    assert status == 404 and json.loads(body)["message"] in (f"No such image: {name}", f"No such image: {name}:latest")
    status, _, body = call(cd, "GET", f"/volumes/{name}")
    assert (status, json.loads(body)["message"]) == (404, f"get {name}: no such volume")
    status, _, body = call(cd, "GET", f"/exec/{name}/json")
    assert (status, json.loads(body)["message"]) == (404, f"No such exec instance: {name}")
    status, _, body = call(cd, "GET", "/no/such/route")
    assert (status, json.loads(body)["message"]) == (404, "page not found")
    # 409: name in use, removing a running container, removing an image in use
    cname = "conf-" + uid()
    status, _, body = call(cd, "POST", "/containers/create", {"name": cname}, {"Image": "busybox", "Cmd": ["sleep", "60"]})
    assert status == 201
    cid = json.loads(body)["Id"]
    try:
        status, _, body = call(cd, "POST", "/containers/create", {"name": cname}, {"Image": "busybox"})
        assert status == 409 and json.loads(body)["message"] == (
            f'Conflict. The container name "/{cname}" is already in use by container "{cid}". '
            "You have to remove (or rename) that container to be able to reuse that name.")
        assert call(cd, "POST", f"/containers/{cid}/start")[0] == 204
        assert call(cd, "POST", f"/containers/{cid}/start")[0] == 304
        status, _, body = call(cd, "DELETE", f"/containers/{cid}")
        assert status == 409 and json.loads(body)["message"] == (
            f"You cannot remove a running container {cid}. Stop the container before attempting removal or "
            "force remove")
        status, _, body = call(cd, "DELETE", "/images/busybox")
        assert status == 409 and json.loads(body)["message"].startswith(
            f'conflict: unable to remove repository reference "busybox" (must force) - container {cid[:12]} is using')
    finally:
        assert call(cd, "DELETE", f"/containers/{cid}", {"force": "1"})[0] == 204
    # 400: bad parameters, bad bodies, bad filters
    status, _, body = call(cd, "POST", "/containers/create", None, {"Image": ["busybox"]})
    assert status == 400 and json.loads(body)["message"] == (
        "json: cannot unmarshal array into Go struct field ContainerCreateRequest.Image of type string")
    status, _, body = call(cd, "POST", "/containers/create", None, b"{not json")
    assert status == 400 and json.loads(body)["message"].startswith("invalid JSON body")
    status, _, body = call(cd, "POST", "/containers/create", None, {})
    assert (status, json.loads(body)["message"]) == (400, "Config cannot be empty in order to create a container")
    status, _, body = call(cd, "POST", "/containers/create", {"name": "bad name!"}, {"Image": "busybox"})
    assert status == 400 and "Invalid container name" in json.loads(body)["message"]
    status, _, body = call(cd, "GET", "/containers/json", {"filters": "{not json"})
    assert status == 400 and "invalid filter" in json.loads(body)["message"]


def _events(d: Daemon, query: dict[str, Any]) -> list[dict[str, Any]]:
    status, _, body = call(d, "GET", "/events", query)
    assert status == 200, body
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def test_events_since_until_filters(cd: Daemon) -> None:
    since = f"{time.time() - 0.5:.9f}"
    tag, vol, cname = f"evimg-{uid()}:t", f"evvol-{uid()}", f"evc-{uid()}"
    call(cd, "POST", "/images/busybox/tag", {"repo": tag.split(":")[0], "tag": "t"})
    call(cd, "POST", "/volumes/create", None, {"Name": vol})
    status, _, body = call(cd, "POST", "/containers/create", {"name": cname}, {"Image": "busybox", "Cmd": ["true"]})
    cid = json.loads(body)["Id"]
    call(cd, "POST", f"/containers/{cid}/start")
    call(cd, "POST", f"/containers/{cid}/wait")
    call(cd, "DELETE", f"/containers/{cid}")
    call(cd, "DELETE", f"/volumes/{vol}")
    call(cd, "DELETE", f"/images/{tag}")
    net = None
    if has_feature(cd, "GET", "/networks"):
        net = f"evnet-{uid()}"
        status, _, body = call(cd, "POST", "/networks/create", None, {"Name": net})
        assert status == 201
        call(cd, "DELETE", f"/networks/{net}")
    until = f"{time.time() + 0.5:.9f}"
    evs = _events(cd, {"since": since, "until": until})
    seen = {(e["Type"], e["Action"]) for e in evs}
    assert {("image", "tag"), ("image", "untag"), ("volume", "create"), ("volume", "destroy"),
            ("container", "create"), ("container", "start"), ("container", "die"), ("container", "destroy")} <= seen
    if net:
        assert {("network", "create"), ("network", "destroy")} <= seen
    for e in evs:
        assert {"Type", "Action", "Actor", "scope", "time", "timeNano"} <= set(e)
    only = _events(cd, {"since": since, "until": until, "filters": json.dumps({"container": [cname]})})
    assert [e["Action"] for e in only] == ["create", "start", "die", "destroy"]
    vols = _events(cd, {"since": since, "until": until, "filters": json.dumps({"type": ["volume"], "volume": [vol]})})
    assert [e["Action"] for e in vols] == ["create", "destroy"]
    dies = _events(cd, {"since": since, "until": until, "filters": json.dumps({"event": ["die"]})})
    assert [e["Actor"]["ID"] for e in dies if e["Actor"]["ID"] == cid] == [cid]
    # until in the past ends the stream at once; a relative since ("10s") works too
    assert _events(cd, {"since": "10s", "until": "1", "filters": json.dumps({"type": ["volume"]})}) == []
    status, _, body = call(cd, "GET", "/events", {"filters": "{bad"})
    assert status == 400


def test_stats_df_archive(cd: Daemon) -> None:
    status, _, body = call(cd, "POST", "/containers/create", None,
                           {"Image": "busybox", "Cmd": ["sh", "-c", "mkdir /d && echo hi > /d/f && exec sleep 60"]})
    cid = json.loads(body)["Id"]
    try:
        assert call(cd, "POST", f"/containers/{cid}/start")[0] == 204
        status, _, body = call(cd, "GET", f"/containers/{cid}/stats", {"stream": "0"})
        one = json.loads(body)
        assert status == 200 and one["id"] == cid and one["pids_stats"]["current"] >= 1
        status, _, body = call(cd, "GET", f"/containers/{cid}/stats", {"stream": "1", "one-shot": "1"})
        assert status == 200 and json.loads(body)["id"] == cid
        api = cd.api()
        r = api.request("GET", f"/containers/{cid}/stats", {"stream": "1"})
        lines = r.iter_lines()
        first, second = json.loads(next(lines)), json.loads(next(lines))
        r.close()
        assert second["precpu_stats"] == first["cpu_stats"] and second["preread"] == first["read"]
        status, _, body = call(cd, "GET", "/system/df")
        df = json.loads(body)
        assert status == 200 and any(c["Id"] == cid for c in df["Containers"])
        assert {"LayersSize", "Images", "Containers", "Volumes", "BuildCache"} <= set(df)
        deadline = time.monotonic() + 10
        while call(cd, "HEAD", f"/containers/{cid}/archive", {"path": "/d/f"})[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        status, headers, _ = call(cd, "HEAD", f"/containers/{cid}/archive", {"path": "/d"})
        stat = json.loads(base64.b64decode(headers["x-docker-container-path-stat"]))
        assert stat["name"] == "d" and stat["mode"] & (1 << 31)  # Go's os.ModeDir
        status, headers, body = call(cd, "GET", f"/containers/{cid}/archive", {"path": "/d"})
        assert status == 200 and headers["content-type"] == "application/x-tar"
        with tarfile.open(fileobj=io.BytesIO(body)) as tf:
            assert sorted(tf.getnames()) == ["d", "d/f"]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            ti = tarfile.TarInfo("new.txt")
            ti.size = 3
            tf.addfile(ti, io.BytesIO(b"abc"))
        assert call(cd, "PUT", f"/containers/{cid}/archive", {"path": "/d"}, buf.getvalue())[0] == 200
        status, _, body = call(cd, "GET", f"/containers/{cid}/archive", {"path": "/d/new.txt"})
        with tarfile.open(fileobj=io.BytesIO(body)) as tf:
            f = tf.extractfile("new.txt")
            assert f is not None and f.read() == b"abc"
        status, _, body = call(cd, "GET", f"/containers/{cid}/archive", {"path": "/nowhere"})
        assert status == 404 and "Could not find the file /nowhere in container" in json.loads(body)["message"]
        status, _, body = call(cd, "PUT", f"/containers/{cid}/archive", {"path": "/d/f"}, buf.getvalue())
        assert status == 400
        status, _, _ = call(cd, "GET", f"/containers/{cid}/archive")
        assert status == 400
    finally:
        call(cd, "DELETE", f"/containers/{cid}", {"force": "1"})


@pytest.mark.parametrize("path", ["/openapi.json", "/v1.24/openapi.json"])
def test_openapi_served(cd: Daemon, path: str) -> None:
    status, headers, body = call(cd, "GET", path)
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert json.loads(body)["swagger"] == "2.0"
