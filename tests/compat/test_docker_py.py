"""docker-py 7.x, the high-level client, against matoud: every call the issue lists, checked for Docker's results."""

from __future__ import annotations

import io
import tarfile
import time

import docker as docker_py
import pytest

from tests.compat.conftest import REG_PASSWORD, REG_USER, free_port, uid


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), int(time.time()), 0o644
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_system_calls(dpy) -> None:  # type: ignore[no-untyped-def]
    assert dpy.ping() is True
    v = dpy.version()
    assert v["ApiVersion"] == "1.45" and v["MinAPIVersion"] == "1.24" and v["Os"] == "linux"
    assert dpy.info()["Driver"] == "overlay2"
    df = dpy.df()
    assert {"LayersSize", "Images", "Containers", "Volumes"} <= set(df)
    assert any("busybox:latest" in (i.get("RepoTags") or []) for i in df["Images"])


def test_run_foreground(dpy) -> None:  # type: ignore[no-untyped-def]
    assert dpy.containers.run("busybox", "echo hello", remove=True) == b"hello\n"
    out = dpy.containers.run("busybox", ["sh", "-c", "echo out; echo err >&2"], stderr=True, remove=True)
    assert out == b"out\nerr\n"
    for _ in range(3):  # run() inspects the container after it may have exited: it must still be there
        assert dpy.containers.run("busybox", "echo auto", auto_remove=True) == b"auto\n"
    with pytest.raises(docker_py.errors.ContainerError) as ei:
        dpy.containers.run("busybox", ["sh", "-c", "echo bad >&2; exit 3"], remove=True)
    assert ei.value.exit_status == 3 and ei.value.stderr == b"bad\n"
    with pytest.raises(docker_py.errors.ImageNotFound):
        dpy.containers.create("no-such-image-" + uid(), "true")
    with pytest.raises(docker_py.errors.NotFound) as e:
        dpy.containers.get("nope-" + uid())
    assert "No such container: nope-" in str(e.value)


def test_container_lifecycle(dpy) -> None:  # type: ignore[no-untyped-def]
    name, port = "dpy-" + uid(), free_port()
    c = dpy.containers.run("busybox", ["sh", "-c", "echo started; exec httpd -f -p 80 -h /"], detach=True, name=name,
                           environment={"A": "1"}, ports={"80/tcp": port}, labels={"suite": name})
    try:
        assert [x.name for x in dpy.containers.list(filters={"label": f"suite={name}"})] == [name]
        got = dpy.containers.get(name)
        assert got.id == c.id and got.status == "running" and got.labels == {"suite": name}
        assert got.ports == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}
        deadline = time.monotonic() + 10
        while b"started" not in c.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.logs() == b"started\n"
        assert next(c.logs(stream=True)) == b"started\n"
        assert c.logs(timestamps=True).split(b" ", 1)[1] == b"started\n"
        # exec_run: plain, stream, demux, exit codes, env and workdir
        assert c.exec_run(["sh", "-c", "echo $A"]) == (0, b"1\n")
        assert c.exec_run(["sh", "-c", "exit 4"]).exit_code == 4
        assert b"".join(c.exec_run(["echo", "streamed"], stream=True).output) == b"streamed\n"
        assert c.exec_run(["sh", "-c", "echo o; echo e >&2"], demux=True) == (0, (b"o\n", b"e\n"))
        assert c.exec_run("pwd", workdir="/tmp", environment={"B": "2"}).output == b"/tmp\n"
        # archives
        assert c.put_archive("/tmp", _tar({"hello.txt": b"hi there"})) is True
        bits, stat = c.get_archive("/tmp/hello.txt")
        assert stat["name"] == "hello.txt" and stat["size"] == 8
        with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as tf:
            f = tf.extractfile("hello.txt")
            assert f is not None and f.read() == b"hi there"
        with pytest.raises(docker_py.errors.NotFound):
            c.get_archive("/no/such/path")
        # attach: logs so far, then the live stream
        assert c.attach(logs=True, stream=False) == b"started\n"
        assert next(c.attach(stream=True, logs=True)) == b"started\n"
        top = c.top()
        assert "PID" in top["Titles"] and any("httpd" in " ".join(p) for p in top["Processes"])
        stats = c.stats(stream=False)
        assert stats["pids_stats"]["current"] >= 1 and "memory_stats" in stats
        gen = c.stats(decode=True)
        first, second = next(gen), next(gen)
        assert second["precpu_stats"] == first["cpu_stats"]
        gen.close()
        assert {"Path": "/tmp/hello.txt", "Kind": 1} in c.diff()
        c.stop(timeout=1)
        assert c.wait() == {"StatusCode": 137, "Error": None}
        c.start()
        c.reload()
        assert c.status == "running"
        c.kill(signal="SIGKILL")
        assert c.wait()["StatusCode"] == 137
        c.remove(v=True)
        with pytest.raises(docker_py.errors.NotFound):
            c.reload()
    finally:
        try:
            dpy.containers.get(name).remove(force=True)
        except docker_py.errors.NotFound:
            pass


def test_create_conflict_and_remove(dpy) -> None:  # type: ignore[no-untyped-def]
    name = "dpy-c-" + uid()
    c = dpy.containers.create("busybox", "true", name=name)
    try:
        assert c.status == "created"
        with pytest.raises(docker_py.errors.APIError) as e:
            dpy.containers.create("busybox", "true", name=name)
        assert e.value.status_code == 409 and "is already in use" in str(e.value)
        r = dpy.containers.run("busybox", "sleep 300", detach=True)
        with pytest.raises(docker_py.errors.APIError) as e:
            r.remove()
        assert e.value.status_code == 409
        r.remove(force=True)
    finally:
        c.remove(force=True)


def test_images(dpy) -> None:  # type: ignore[no-untyped-def]
    bb = dpy.images.get("busybox")
    assert "busybox:latest" in bb.tags
    assert any(i.id == bb.id for i in dpy.images.list())
    tag = "dpy-" + uid()
    assert bb.tag(tag, "x") is True
    assert f"{tag}:x" in dpy.images.get(bb.id).tags
    data = b"".join(dpy.images.get(f"{tag}:x").save(named=f"{tag}:x"))
    dpy.images.remove(f"{tag}:x")
    with pytest.raises(docker_py.errors.ImageNotFound):
        dpy.images.get(f"{tag}:x")
    loaded = dpy.images.load(data)
    assert [i.id for i in loaded] == [bb.id]
    dpy.images.remove(f"{tag}:x")


def test_images_build(dpy) -> None:  # type: ignore[no-untyped-def]
    if not has_feature_dpy(dpy, "/build"):
        pytest.skip("the builder has not landed")
    tag = f"dpy-build-{uid()}:1"
    df = io.BytesIO(b"FROM busybox\nRUN echo built > /b\nCMD [\"cat\", \"/b\"]\n")
    img, logs = dpy.images.build(fileobj=df, tag=tag, rm=True)
    try:
        assert tag in img.tags
        assert any("Successfully built" in (x.get("stream") or "") for x in logs)
        assert dpy.containers.run(tag, remove=True) == b"built\n"
    finally:
        dpy.images.remove(tag, force=True)


def has_feature_dpy(dpy, path: str) -> bool:  # type: ignore[no-untyped-def]
    r = dpy.api.post(dpy.api._url(path))
    return not (r.status_code == 501 or (r.status_code == 404 and "page not found" in r.text))


def test_networks(dpy) -> None:  # type: ignore[no-untyped-def]
    if not has_feature_dpy(dpy, "/networks/prune"):
        pytest.skip("networking has not landed")
    name = "dpynet-" + uid()
    n = dpy.networks.create(name, driver="bridge", labels={"k": "v"})
    c = None
    try:
        assert dpy.networks.get(name).id == n.id
        assert name in [x.name for x in dpy.networks.list(filters={"label": "k=v"})]
        c = dpy.containers.run("busybox", "sleep 300", detach=True)
        n.connect(c, aliases=["dbalias"])
        n.reload()
        assert [x.id for x in n.containers] == [c.id]
        out = dpy.containers.run("busybox", ["sh", "-c", "ping -c1 -W2 dbalias >/dev/null && echo ok"],
                                 network=name, remove=True)
        assert out == b"ok\n"
        n.disconnect(c)
        n.reload()
        assert n.containers == []
    finally:
        if c is not None:
            c.remove(force=True)
        n.remove()
    with pytest.raises(docker_py.errors.NotFound):
        dpy.networks.get(name)
    assert "NetworksDeleted" in dpy.networks.prune()


def test_volumes(dpy) -> None:  # type: ignore[no-untyped-def]
    name = "dpyvol-" + uid()
    v = dpy.volumes.create(name, labels={"a": "b"})
    try:
        assert dpy.volumes.get(name).attrs["Labels"] == {"a": "b"}
        assert name in [x.name for x in dpy.volumes.list(filters={"label": "a=b"})]
        out = dpy.containers.run("busybox", ["sh", "-c", "echo v > /v/f; cat /v/f"], volumes={name: {"bind": "/v"}},
                                 remove=True)
        assert out == b"v\n"
    finally:
        v.remove()
    with pytest.raises(docker_py.errors.NotFound):
        dpy.volumes.get(name)
    assert "VolumesDeleted" in dpy.volumes.prune()


def test_events(dpy) -> None:  # type: ignore[no-untyped-def]
    since = int(time.time()) - 1
    name = "dpyev-" + uid()
    dpy.containers.run("busybox", "true", name=name, remove=True)
    until = int(time.time()) + 1
    evs = list(dpy.events(since=since, until=until, decode=True, filters={"container": name}))
    actions = [e["Action"] for e in evs]
    assert actions[0] == "create" and "start" in actions and "die" in actions and actions[-1] == "destroy"
    assert all(e["Type"] == "container" and e["Actor"]["Attributes"]["name"] == name for e in evs)
    evs = list(dpy.events(since=since, until=until, decode=True, filters={"type": "container", "event": "die"}))
    assert any(e["Actor"]["Attributes"].get("name") == name and e["Actor"]["Attributes"]["exitCode"] == "0"
               for e in evs)


def test_prunes(dpy) -> None:  # type: ignore[no-untyped-def]
    c = dpy.containers.create("busybox", "true")
    res = dpy.containers.prune()
    assert c.id in (res.get("ContainersDeleted") or []) and "SpaceReclaimed" in res
    assert "ImagesDeleted" in dpy.images.prune()


def test_login_push_pull(dpy, registry) -> None:  # type: ignore[no-untyped-def]
    if not has_feature_dpy(dpy, "/auth"):
        pytest.skip("distribution has not landed")
    with pytest.raises(docker_py.errors.APIError) as e:
        dpy.login(REG_USER, "wrong", registry=registry.host, reauth=True)
    assert e.value.status_code == 401
    res = dpy.login(REG_USER, REG_PASSWORD, registry=registry.host, reauth=True)
    assert res["Status"] == "Login Succeeded"
    repo = f"{registry.host}/{REG_USER}/dpy-{uid()}"
    dpy.images.get("busybox").tag(repo, "v1")
    try:
        lines = list(dpy.images.push(repo, "v1", stream=True, decode=True))
        assert not [x for x in lines if "error" in x], lines
        assert any("Digest" in (x.get("aux") or {}) for x in lines), lines
        dpy.images.remove(f"{repo}:v1")
        img = dpy.images.pull(repo, tag="v1")
        assert img.id == dpy.images.get("busybox").id
    finally:
        try:
            dpy.images.remove(f"{repo}:v1")
        except docker_py.errors.NotFound:
            pass
