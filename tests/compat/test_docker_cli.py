"""The docker CLI (v28 at /usr/local/bin/docker here) against matoud with only DOCKER_HOST set.

Each test drives a group of commands the way people type them and checks what the CLI printed, as it would
against dockerd. docs/compat.md lists these commands; test_docs.py keeps that page and these tests in step.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time

import pytest

from tests.compat.conftest import REG_PASSWORD, REG_USER, Docker, free_port, has_feature, uid
from tests.conftest import Daemon
from tests.registry.helpers import RegistryProcess


def http_get(port: int, path: str = "/", timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        r = subprocess.run(["curl", "-sf", "-m", "2", f"http://127.0.0.1:{port}{path}"], capture_output=True)
        if r.returncode == 0:
            return r.stdout.decode()
        last = r.stderr.decode()
        time.sleep(0.1)
    raise AssertionError(f"GET :{port}{path} failed: {last}")


def test_version_info(docker: Docker) -> None:
    v = json.loads(docker.out("version", "--format", "{{json .}}"))
    assert v["Server"]["ApiVersion"] == "1.45"
    assert v["Client"]["ApiVersion"] == "1.45"  # negotiated down from the CLI's own
    info = json.loads(docker.out("info", "--format", "{{json .}}"))
    assert info["OSType"] == "linux" and info["Driver"] == "overlay2"
    assert info["Images"] >= 1


def test_run_flags(docker: Docker, cd: Daemon) -> None:
    assert docker.out("run", "--rm", "busybox", "echo", "hello") == "hello\n"
    r = docker("run", "--rm", "busybox", "sh", "-c", "exit 3", check=False)
    assert r.returncode == 3
    r = docker("run", "--rm", "no-such-image-" + uid(), check=False)
    assert r.returncode == 125
    assert docker.out("run", "--rm", "-e", "FOO=bar", "busybox", "sh", "-c", "echo $FOO") == "bar\n"
    assert docker.out("run", "--rm", "-i", "busybox", "cat", input=b"through stdin\n") == "through stdin\n"
    with tempfile.TemporaryDirectory(prefix="matou-compat-bind-") as host_dir:
        with open(os.path.join(host_dir, "in.txt"), "w") as f:
            f.write("from host\n")
        out = docker.out("run", "--rm", "-v", f"{host_dir}:/mnt", "busybox", "sh", "-c",
                         "cat /mnt/in.txt; echo back > /mnt/out.txt")
        assert out == "from host\n"
        with open(os.path.join(host_dir, "out.txt")) as f:
            assert f.read() == "back\n"
    name, port = "web-" + uid(), free_port()
    cid = docker.out("run", "-d", "--name", name, "-p", f"{port}:80", "busybox", "sh", "-c",
                     "mkdir /www && echo served > /www/index.html && exec httpd -f -p 80 -h /www").strip()
    try:
        assert re.fullmatch(r"[0-9a-f]{64}", cid)
        assert http_get(port, "/index.html") == "served\n"
        ps = docker.out("ps", "--filter", f"name={name}", "--format", "{{.ID}} {{.Names}} {{.Ports}}")
        assert ps.split()[:2] == [cid[:12], name] and f"0.0.0.0:{port}->80/tcp" in ps
        assert docker.out("port", name).strip().startswith(f"80/tcp -> 0.0.0.0:{port}")
    finally:
        docker("rm", "-f", name)
    assert name not in docker.out("ps", "-a", "--format", "{{.Names}}")


def test_run_it_and_exec_it(docker: Docker) -> None:
    code, out = docker.tty("run", "-it", "--rm", "busybox", "sh", input=b"echo $((6*7)); tty; exit 5\r")
    assert code == 5, out
    assert b"42" in out and b"/dev/pts/0" in out
    name = "it-" + uid()
    docker("run", "-d", "--name", name, "busybox", "sleep", "300")
    try:
        code, out = docker.tty("exec", "-it", name, "sh", input=b"echo in-$((1+1)); exit 0\r")
        assert code == 0 and b"in-2" in out, out
        assert docker.out("exec", name, "sh", "-c", "echo plain") == "plain\n"
    finally:
        docker("rm", "-f", name)


def test_attach(docker: Docker) -> None:
    name = "att-" + uid()
    docker("run", "-d", "-it", "--name", name, "busybox", "sh")
    try:
        code, out = docker.tty("attach", name, input=b"echo attached-$((2+3)); exit 7\r")
        assert code == 7 and b"attached-5" in out, out
        assert docker.out("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name).split() == ["exited", "7"]
    finally:
        docker("rm", "-f", name)
    # attach without a terminal: the output of a running container
    name = "att2-" + uid()
    docker("run", "-d", "--name", name, "busybox", "sh", "-c", "sleep 0.5; echo late-line")
    try:
        r = docker("attach", "--no-stdin", name, timeout=20)
        assert r.stdout == b"late-line\n"
    finally:
        docker("rm", "-f", name)


def test_logs_follow_stop_kill_rm(docker: Docker) -> None:
    name = "logs-" + uid()
    docker("run", "-d", "--name", name, "busybox", "sh", "-c",
           "i=0; while [ $i -lt 3 ]; do echo line $i; i=$((i+1)); sleep 0.2; done; echo err >&2; sleep 300")
    try:
        p = docker.popen("logs", "-f", name)
        assert p.stdout is not None
        got = [p.stdout.readline() for _ in range(3)]
        assert got == [b"line 0\n", b"line 1\n", b"line 2\n"]
        docker("stop", "-t", "1", name)  # ends the follow
        out, err = p.communicate(timeout=20)
        assert p.returncode == 0 and err == b"err\n"
        assert docker.out("inspect", "-f", "{{.State.Status}}", name).strip() == "exited"
        r = docker("logs", "--tail", "2", name)
        assert (r.stdout, r.stderr) == (b"line 2\n", b"err\n")
        docker("start", name)
        docker("kill", "-s", "KILL", name)
        assert docker.out("wait", name).strip() == "137"
        r = docker("rm", name)
        assert r.stdout.decode().strip() == name
        r = docker("rm", name, check=False)
        assert r.returncode != 0 and f"No such container: {name}" in r.stderr.decode()
    finally:
        docker("rm", "-f", name, check=False)


def test_inspect_top_stats_diff_commit(docker: Docker) -> None:
    name = "insp-" + uid()
    docker("run", "-d", "--name", name, "-e", "K=V", "busybox", "sh", "-c", "echo x > /created.txt; exec sleep 300")
    image = f"committed-{uid()}:v1"
    try:
        data = json.loads(docker.out("inspect", name))[0]
        assert data["Name"] == "/" + name and data["State"]["Running"] is True
        assert "K=V" in data["Config"]["Env"] and data["HostConfig"]["NetworkMode"] in ("default", "bridge")
        top = docker.out("top", name)
        assert "PID" in top.splitlines()[0] and "sleep 300" in top
        stats = docker.out("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", name).split()
        assert stats == [name, "1"]
        docker.wait_for("the file", lambda: "A /created.txt" in docker.out("diff", name))
        docker("commit", "-c", "ENV COMMITTED=1", name, image)
        assert docker.out("run", "--rm", image, "sh", "-c", "cat /created.txt; echo $COMMITTED") == "x\n1\n"
        r = docker("inspect", "no-such-" + uid(), check=False)
        assert r.returncode == 1 and "No such object" in r.stderr.decode()
    finally:
        docker("rm", "-f", name)
        docker("rmi", image, check=False)


def test_images_tag_rmi_save_load(docker: Docker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    tag = f"retag-{uid()}:x"
    docker("tag", "busybox", tag)
    listed = docker.out("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    assert tag in listed and "busybox:latest" in listed
    bb_id = docker.out("images", "-q", "--no-trunc", "busybox").strip()
    archive = str(tmp_path / "img.tar")
    docker("save", "-o", archive, tag)
    assert docker.out("rmi", tag).strip() == f"Untagged: {tag}"
    assert docker.out("load", "-i", archive).strip() == f"Loaded image: {tag}"
    assert docker.out("images", "-q", "--no-trunc", tag).strip() == bb_id
    with open(archive, "rb") as f:
        assert docker.out("load", input=f.read()).strip() == f"Loaded image: {tag}"
    docker("rmi", tag)
    r = docker("rmi", tag, check=False)
    assert r.returncode != 0 and "No such image" in r.stderr.decode()


def test_export_import_cp(docker: Docker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    name, image = "exp-" + uid(), f"imported-{uid()}:1"
    docker("run", "-d", "--name", name, "busybox", "sh", "-c", "echo inside > /data.txt; exec sleep 300")
    try:
        docker.wait_for("the file", lambda: docker("exec", name, "test", "-f", "/data.txt", check=False).returncode == 0)
        src = tmp_path / "host.txt"
        src.write_text("to the container\n")
        docker("cp", str(src), f"{name}:/tmp/host.txt")
        assert docker.out("exec", name, "cat", "/tmp/host.txt") == "to the container\n"
        docker("cp", f"{name}:/data.txt", str(tmp_path / "back.txt"))
        assert (tmp_path / "back.txt").read_text() == "inside\n"
        tarball = str(tmp_path / "fs.tar")
        docker("export", "-o", tarball, name)
        new_id = docker.out("import", "-c", "CMD [\"cat\", \"/data.txt\"]", tarball, image).strip()
        assert new_id.startswith("sha256:")
        assert docker.out("run", "--rm", image) == "inside\n"
    finally:
        docker("rm", "-f", name)
        docker("rmi", image, check=False)


def test_build_legacy(docker: Docker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    if not has_feature(docker.daemon, "POST", "/build"):
        pytest.skip("the builder has not landed")
    (tmp_path / "Dockerfile").write_text("FROM busybox\nARG WHO=world\nCOPY msg.txt /msg.txt\n"
                                         "RUN echo \"hello $WHO\" >> /msg.txt\nCMD [\"cat\", \"/msg.txt\"]\n")
    (tmp_path / "msg.txt").write_text("copied\n")
    image = f"built-{uid()}:1"
    try:
        r = docker("build", "-t", image, "--build-arg", "WHO=matou", ".", cwd=str(tmp_path))
        assert b"Successfully tagged " + image.encode() in r.stdout
        assert docker.out("run", "--rm", image) == "copied\nhello matou\n"
    finally:
        docker("rmi", image, check=False)


def test_network_commands(docker: Docker) -> None:
    if not has_feature(docker.daemon, "GET", "/networks"):
        pytest.skip("networking has not landed")
    net, ctr = "net-" + uid(), "netc-" + uid()
    docker("network", "create", net)
    try:
        assert net in docker.out("network", "ls", "--format", "{{.Name}}").split()
        data = json.loads(docker.out("network", "inspect", net))[0]
        assert data["Name"] == net and data["Driver"] == "bridge"
        docker("run", "-d", "--name", ctr, "--network", net, "busybox", "sleep", "300")
        peer = docker.out("run", "--rm", "--network", net, "busybox", "sh", "-c", f"ping -c1 -W2 {ctr} >/dev/null && echo ok")
        assert peer == "ok\n"
        docker("network", "disconnect", net, ctr)
        docker("network", "connect", net, ctr)
        assert ctr in docker.out("network", "inspect", "-f", "{{range .Containers}}{{.Name}} {{end}}", net)
        r = docker("network", "rm", net, check=False)
        assert r.returncode != 0 and "active endpoints" in r.stderr.decode()
        docker("rm", "-f", ctr)
        docker("network", "rm", net)
        assert net not in docker.out("network", "ls", "--format", "{{.Name}}").split()
    finally:
        docker("rm", "-f", ctr, check=False)
        docker("network", "rm", net, check=False)


def test_volume_commands(docker: Docker) -> None:
    vol = "vol-" + uid()
    assert docker.out("volume", "create", "--label", "a=b", vol).strip() == vol
    try:
        assert docker.out("run", "--rm", "-v", f"{vol}:/data", "busybox", "sh", "-c",
                          "echo kept > /data/f; cat /data/f") == "kept\n"
        assert docker.out("run", "--rm", "-v", f"{vol}:/data:ro", "busybox", "cat", "/data/f") == "kept\n"
        data = json.loads(docker.out("volume", "inspect", vol))[0]
        assert data["Name"] == vol and data["Labels"] == {"a": "b"} and data["Driver"] == "local"
        assert vol in docker.out("volume", "ls", "-q", "--filter", "label=a=b").split()
    finally:
        assert docker.out("volume", "rm", vol).strip() == vol
    r = docker("volume", "inspect", vol, check=False)
    assert r.returncode != 0 and "no such volume" in r.stderr.decode().lower()


def test_system_df_prune_events(docker: Docker) -> None:
    df = docker.out("system", "df")
    assert df.split("\n")[0].split()[:2] == ["TYPE", "TOTAL"] and "Images" in df and "Local Volumes" in df
    since = str(int(time.time()) - 1)
    name = "ev-" + uid()
    docker("run", "--name", name, "busybox", "true")
    vol = "evv-" + uid()
    docker("volume", "create", vol)
    docker("volume", "rm", vol)
    until = str(int(time.time()) + 1)
    ev = docker.out("events", "--since", since, "--until", until, "--filter", f"container={name}",
                    "--format", "{{.Type}} {{.Action}}")
    assert ev.split("\n")[:3] == ["container create", "container attach", "container start"] or \
        ev.split("\n")[:2] == ["container create", "container start"], ev
    assert "container die" in ev
    ev = docker.out("events", "--since", since, "--until", until, "--filter", "type=volume",
                    "--format", "{{.Action}} {{.Actor.ID}}")
    assert f"create {vol}" in ev and f"destroy {vol}" in ev
    # prune: the stopped container goes, the image stays
    out = docker.out("system", "prune", "-f")
    assert "Total reclaimed space" in out
    assert name not in docker.out("ps", "-a", "--format", "{{.Names}}")
    assert "busybox" in docker.out("images", "--format", "{{.Repository}}")


def test_login_push_pull_search(docker: Docker, registry: RegistryProcess) -> None:
    if not has_feature(docker.daemon, "POST", "/auth"):
        pytest.skip("distribution has not landed")
    host = registry.host
    r = docker("login", "-u", REG_USER, "--password-stdin", host, input=REG_PASSWORD + "\n")
    assert b"Login Succeeded" in r.stdout
    r = docker("login", "-u", REG_USER, "--password-stdin", host, input="wrong\n", check=False)
    assert r.returncode != 0
    remote = f"{host}/{REG_USER}/bb-{uid()}:v1"
    docker("tag", "busybox", remote)
    try:
        out = docker.out("push", remote)
        assert re.search(r"v1: digest: sha256:[0-9a-f]{64} size: \d+", out), out
        docker("rmi", remote)
        out = docker.out("pull", remote)
        assert f"Status: Downloaded newer image for {remote}" in out, out
        assert docker.out("run", "--rm", remote, "echo", "pulled") == "pulled\n"
        found = docker.out("search", "--format", "{{.Name}}", f"{host}/bb-")
        assert f"{REG_USER}/{remote.split('/')[-1].split(':')[0]}" in found.split()[0] or \
            remote.split("/", 1)[1].split(":")[0] in found, found
    finally:
        docker("rmi", remote, check=False)
        docker("logout", host, check=False)


def test_newcomer_script(docker: Docker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The issue's script, unchanged but for a free port: build, run -d -p, curl, logs, rm -f."""
    if not has_feature(docker.daemon, "POST", "/build"):
        pytest.skip("the builder has not landed")
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nCOPY index.html /www/index.html\nEXPOSE 80\n"
        "CMD [\"sh\", \"-c\", \"echo serving; exec httpd -f -v -p 80 -h /www\"]\n")
    (tmp_path / "index.html").write_text("<h1>hello from matou</h1>\n")
    port, app = free_port(), f"app-{uid()}"
    script = (f"set -e\ndocker build -t {app} .\ncid=$(docker run -d -p {port}:80 {app})\n"
              f"for i in $(seq 50); do curl -sf localhost:{port} && break; sleep 0.1; done\n"
              "docker logs $cid\ndocker rm -f $cid\n")
    env = dict(docker.env)
    env["PATH"] = os.path.dirname(docker.binary) + os.pathsep + env.get("PATH", "")
    try:
        r = subprocess.run(["bash", "-c", script], cwd=str(tmp_path), env=env, capture_output=True, timeout=120)
        out = r.stdout.decode()
        assert r.returncode == 0, out + r.stderr.decode()
        assert "<h1>hello from matou</h1>" in out and "serving" in out
    finally:
        docker("rmi", app, check=False)


def test_container_management_commands(docker: Docker) -> None:
    """create/start, pause/unpause, rename, restart, update, wait, port, container ls/prune."""
    name, new = "mgmt-" + uid(), "mgmt2-" + uid()
    cid = docker.out("create", "--name", name, "-p", "80", "busybox", "sleep", "300").strip()
    try:
        assert docker.out("container", "ls", "-a", "-q", "--no-trunc", "--filter", f"name={name}").strip() == cid
        docker("start", name)
        docker("pause", name)
        assert docker.out("inspect", "-f", "{{.State.Status}}", name).strip() == "paused"
        docker("unpause", name)
        docker("rename", name, new)
        assert docker.out("inspect", "-f", "{{.Name}}", cid).strip() == "/" + new
        started = docker.out("inspect", "-f", "{{.State.StartedAt}}", new)
        docker("restart", "-t", "0", new)
        assert docker.out("inspect", "-f", "{{.State.StartedAt}}", new) != started
        docker("update", "--memory", "64m", "--restart", "on-failure:2", new)
        hc = json.loads(docker.out("inspect", "-f", "{{json .HostConfig}}", new))
        assert hc["Memory"] == 64 << 20 and hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
        assert re.fullmatch(r"0\.0\.0\.0:\d+\n", docker.out("port", new, "80"))
        docker("kill", new)
        assert docker.out("wait", new).strip() == "137"
        out = docker.out("container", "prune", "-f", "--filter", f"label!=keep-{uid()}")
        assert cid in out and "Total reclaimed space" in out
    finally:
        docker("rm", "-f", cid, check=False)


def test_image_management_commands(docker: Docker) -> None:
    """history, image ls/inspect/prune, builder prune, volume/network prune, context ls (client side)."""
    hist = docker.out("history", "--no-trunc", "--format", "{{.CreatedBy}}", "busybox")
    assert hist.strip()
    assert docker.out("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "busybox") == "busybox:latest\n"
    data = json.loads(docker.out("image", "inspect", "busybox"))[0]
    assert data["Os"] == "linux" and data["RootFS"]["Type"] == "layers"
    assert "Total reclaimed space" in docker.out("image", "prune", "-f")
    if has_feature(docker.daemon, "POST", "/build/prune"):
        assert "Total reclaimed space" in docker.out("builder", "prune", "-f")
    vol = "pr-" + uid()
    docker("volume", "create", vol)
    assert vol in docker.out("volume", "prune", "-a", "-f")
    if has_feature(docker.daemon, "GET", "/networks"):
        net = "prn-" + uid()
        docker("network", "create", net)
        assert net in docker.out("network", "prune", "-f")
    assert "default" in docker.out("context", "ls")


UNSUPPORTED_PROBES = [["plugin", "ls"], ["swarm", "init"], ["node", "ls"], ["service", "ls"], ["secret", "ls"],
                      ["config", "ls"], ["stack", "ls"], ["volume", "update", "x"], ["checkpoint", "ls", "x"]]


@pytest.mark.parametrize("args", UNSUPPORTED_PROBES, ids=[" ".join(a) for a in UNSUPPORTED_PROBES])
def test_unsupported_commands_fail_cleanly(docker: Docker, args: list[str]) -> None:
    """What matoud does not implement fails with an error message, never a hang or a daemon crash."""
    r = docker(*args, check=False, timeout=30)
    assert r.returncode != 0 and r.stderr.strip()
    assert docker("version", check=False).returncode == 0
