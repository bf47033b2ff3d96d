"""Building images with the real CLI and daemon: every instruction, form and flag; the resulting config, files
and history; multi-stage builds; build args; contexts (.dockerignore, stdin, -f)."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile

from tests.build.conftest import Build, inspect, sh, write_context
from tests.conftest import Daemon

EVERYTHING = """\
# syntax=docker/dockerfile:1
# escape=\\
ARG BASE=busybox
ARG VERSION=1.0
FROM ${BASE} AS builder
ARG VERSION
RUN echo "building $VERSION" > /version
COPY --chmod=0755 <<EOF /usr/local/bin/hello
#!/bin/sh
echo hello from heredoc ${VERSION}
EOF

FROM builder AS never-built
RUN exit 42

from busybox
ARG VERSION
LABEL org.test=yes version="$VERSION"
MAINTAINER someone@example.com
ENV APP=/app \\
    # a comment inside a continuation

    MODE=prod
WORKDIR $APP
COPY --from=builder /version /usr/local/bin/hello ./
COPY *.txt src/ ./files/
COPY --chown=daemon:daemon a.txt owned.txt
COPY --chown=1:2 --chmod=600 ["a.txt", "/json/"]
COPY --link --exclude=*.skip stuff/ /stuff/
ADD arch.tar.gz /extract/
ADD plain.txt /added.txt
COPY keep.md .
COPY <<one <<two /docs/
first $MODE
one
second
two
RUN <<EOF
set -e
echo "multi line $MODE"
./hello > /app/hello.out
EOF
RUN <<EOF
#!/bin/sh
echo "shebang script" > /app/shebang.out
EOF
RUN cat <<EOF > /app/inline.out
inline $MODE
EOF
RUN ["sh", "-c", "echo exec form $MODE > /app/exec.out"]
SHELL ["/bin/sh", "-ec"]
RUN echo shell form > /app/shell.out
EXPOSE 80 443/udp 8000-8001
VOLUME ["/data"]
VOLUME /data2 /data3
USER daemon
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=5s --timeout=3s --start-period=1s --retries=2 CMD wget -q -O- localhost || exit 1
ONBUILD RUN echo child build > /onbuild.out
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hi"]
"""


def _tgz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o640
            ti.uid = 7
            ti.gid = 8
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _everything_context(root: str) -> str:
    write_context(root, {
        "Dockerfile": EVERYTHING, "a.txt": "hello\n", "b.txt": "b\n", "src/one.py": "1\n", "src/sub/two.py": "2\n",
        "ignored.txt": "no\n", "no.md": "no\n", "keep.md": "keep\n", "plain.txt": "plain\n",
        "stuff/x.keep": "x\n", "stuff/y.skip": "y\n", "arch.tar.gz": _tgz({"t/f": b"intar\n"}),
        ".dockerignore": "ignored.txt\n*.md\n!keep.md\n",
    })
    os.symlink("a.txt", os.path.join(root, "link.txt"))
    os.chmod(os.path.join(root, "src/one.py"), 0o751)
    return root


def test_every_instruction(daemon: Daemon, build: Build, tmp_path: str) -> None:
    ctx = _everything_context(os.path.join(str(tmp_path), "ctx"))
    r = build(ctx, "--network", "none", "-t", "bt-everything", "-t", "bt-everything:v2", "--label", "extra=1")
    out = r.stdout
    assert "Step 1/37 : ARG BASE=busybox" in out and "Step 37/37 : LABEL \"extra\"=\"1\"" in out
    assert "exit 42" not in out  # a stage the target does not need is skipped
    assert " ---> Running in " in out and "multi line prod" in out
    assert "Successfully built " in out and "Successfully tagged bt-everything:latest" in out
    assert "Successfully tagged bt-everything:v2" in out

    img = inspect(daemon, "bt-everything")
    cfg = img["Config"]
    assert cfg["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "APP=/app",
                          "MODE=prod"]
    assert cfg["Cmd"] == ["echo hi"] and cfg["Entrypoint"] == ["/bin/sh", "-c"]
    assert cfg["WorkingDir"] == "/app" and cfg["User"] == "daemon"
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "443/udp": {}, "8000/tcp": {}, "8001/tcp": {}}
    assert cfg["Volumes"] == {"/data": {}, "/data2": {}, "/data3": {}}
    assert cfg["Labels"] == {"org.test": "yes", "version": "1.0", "extra": "1"}
    assert cfg["StopSignal"] == "SIGUSR1"
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "wget -q -O- localhost || exit 1"],
                                  "Interval": 5_000_000_000, "Timeout": 3_000_000_000,
                                  "StartPeriod": 1_000_000_000, "Retries": 2}
    assert cfg["OnBuild"] == ["RUN echo child build > /onbuild.out"]
    assert cfg["Shell"] == ["/bin/sh", "-ec"]
    assert img["Author"] == "someone@example.com"
    assert img["RepoTags"] == ["bt-everything:latest", "bt-everything:v2"]

    files = sh(daemon, "bt-everything", """
        cd /app
        cat version; ./hello; cat hello.out shebang.out inline.out exec.out shell.out
        ls files | tr '\\n' ' '; echo; ls files/sub; cat files/link.txt
        stat -c '%u:%g %a %n' owned.txt /json/a.txt files/one.py hello /extract/t/f /added.txt
        cat /extract/t/f /added.txt keep.md /docs/one /docs/two; ls /stuff
        test -e /app/ignored.txt || echo no-ignored; test -e /app/files/ignored.txt || echo no-ignored2
        test -e /run/secrets || echo no-secrets
    """)
    lines = files.splitlines()
    assert lines[:2] == ["building 1.0", "hello from heredoc 1.0"]
    assert lines[2:7] == ["hello from heredoc 1.0", "shebang script", "inline prod", "exec form prod",
                          "shell form"]
    assert lines[7].split() == ["a.txt", "b.txt", "link.txt", "one.py", "plain.txt", "sub"]
    assert lines[8] == "two.py" and lines[9] == "hello"
    assert lines[10:16] == ["1:1 644 owned.txt", "1:2 600 /json/a.txt", "0:0 751 files/one.py", "0:0 755 hello",
                            "7:8 640 /extract/t/f", "0:0 644 /added.txt"]
    assert lines[16:22] == ["intar", "plain", "keep", "first prod", "second", "x.keep"]
    assert lines[22:] == ["no-ignored", "no-ignored2", "no-secrets"]

    # the image runs with its own entrypoint and command
    assert daemon.out("run", "--rm", "--network", "none", "bt-everything").strip() == "hi"

    # history: every step, Docker's created_by, empty layers for config steps
    rows = [(h["CreatedBy"], h["Size"]) for h in daemon.api().get_json("/images/bt-everything/history")]
    created = [c for c, _s in rows]
    assert created[0] == '/bin/sh -ec #(nop)  LABEL extra=1'
    assert '/bin/sh -ec #(nop)  CMD ["echo hi"]' in created
    assert '/bin/sh -c #(nop)  ENV APP=/app MODE=prod' in created
    assert "/bin/sh -c #(nop) WORKDIR /app" in created
    assert any(c.startswith("|1 VERSION=1.0 /bin/sh -ec echo shell form") for c in created)
    assert any(c.startswith("/bin/sh -c #(nop) COPY --chown=daemon:daemon file:") for c in created)
    assert any(c.startswith("/bin/sh -c #(nop) ADD file:") and c.endswith(" in /extract/ ") for c in created)
    assert len(created) == 30 + 1  # the final stage's 30 steps after its FROM, and busybox's own
    sizes = dict(rows)
    assert sizes["/bin/sh -ec #(nop)  USER daemon"] == 0
    assert len(img["RootFS"]["Layers"]) == 1 + sum(1 for _c, s in rows[:-1] if s)


def test_onbuild_triggers_run_in_child(daemon: Daemon, build: Build, tmp_path: str) -> None:
    parent = write_context(os.path.join(str(tmp_path), "p"), {
        "Dockerfile": "FROM busybox\nONBUILD COPY f /from-parent-trigger\nONBUILD RUN echo ran > /trigger.out\n",
        "f": "ctx file\n"})
    build(parent, "--network", "none", "-t", "bt-onbuild-parent")
    assert inspect(daemon, "bt-onbuild-parent")["Config"]["OnBuild"] == ["COPY f /from-parent-trigger",
                                                                        "RUN echo ran > /trigger.out"]
    child = write_context(os.path.join(str(tmp_path), "c"), {
        "Dockerfile": "FROM bt-onbuild-parent\nRUN cat /from-parent-trigger /trigger.out\n", "f": "child ctx\n"})
    r = build(child, "--network", "none", "-t", "bt-onbuild-child")
    assert "# Executing 2 build triggers" in r.stdout
    assert "child ctx\nran\n" in r.stdout
    assert inspect(daemon, "bt-onbuild-child")["Config"]["OnBuild"] is None


def test_multistage_target_and_from_index(daemon: Daemon, build: Build, tmp_path: str) -> None:
    ctx = write_context(os.path.join(str(tmp_path), "m"), {"Dockerfile": (
        "FROM busybox AS base\nRUN echo base > /base\n"
        "FROM busybox AS broken\nRUN exit 3\n"
        "FROM base AS mid\nRUN echo mid > /mid\n"
        "FROM scratch\nCOPY --from=0 /base /b\nCOPY --from=mid /mid /m\n"
        "COPY --from=busybox:latest /etc/pass* /etc/\n")})
    r = build(ctx, "--network", "none", "-t", "bt-multi")
    assert "exit 3" not in r.stdout
    img = inspect(daemon, "bt-multi")
    assert len(img["RootFS"]["Layers"]) == 3 and img["Config"]["Env"][0].startswith("PATH=")
    r = build(ctx, "--network", "none", "--target", "mid", "-t", "bt-multi-mid")
    assert "Step 4/4 : RUN echo mid > /mid" in r.stdout  # base (2 steps) + mid (2 steps)
    assert sh(daemon, "bt-multi-mid", "cat /base /mid") == "base\nmid\n"
    r = build(ctx, "--network", "none", "--target", "nosuch", check=False)
    assert r.returncode != 0 and "failed to reach build target nosuch" in r.stderr


def test_build_args(daemon: Daemon, build: Build, tmp_path: str) -> None:
    ctx = write_context(os.path.join(str(tmp_path), "a"), {"Dockerfile": (
        "ARG TAG=latest\nFROM busybox:$TAG\nARG TAG\nARG WHO=world\nARG UNSET\n"
        "ENV FROM_ENV=${WHO:-x} OTHER=${UNSET:-dflt}\n"
        "RUN echo \"$TAG $WHO $UNSET $HTTP_PROXY\" > /args\n")})
    r = build(ctx, "--network", "none", "-t", "bt-args", "--build-arg", "WHO=you", "--build-arg",
              "HTTP_PROXY=http://proxy:3128", "--build-arg", "NOTUSED=1")
    assert "[Warning] One or more build-args [NOTUSED] were not consumed" in r.stdout
    assert sh(daemon, "bt-args", "cat /args") == "latest you  http://proxy:3128\n"
    cfg = inspect(daemon, "bt-args")["Config"]
    assert "FROM_ENV=you" in cfg["Env"] and "OTHER=dflt" in cfg["Env"]
    run_line = daemon.api().get_json("/images/bt-args/history")[0]["CreatedBy"]
    assert run_line.startswith("|2 TAG=latest WHO=you /bin/sh -c echo") and "proxy" not in run_line


def test_contexts_stdin_and_dockerfile_paths(daemon: Daemon, build: Build, tmp_path: str) -> None:
    # a Dockerfile alone on stdin
    build("-", "--network", "none", "-t", "bt-stdin-df", input=b"FROM busybox\nLABEL from=stdin\n")
    assert inspect(daemon, "bt-stdin-df")["Config"]["Labels"] == {"from": "stdin"}
    # a tar context on stdin, with its .dockerignore applied by the daemon
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in (("Dockerfile", b"FROM busybox\nCOPY . /ctx/\n"), ("keep", b"k"), ("drop.log", b"d"),
                           (".dockerignore", b"*.log\n")):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    build("-", "--network", "none", "-t", "bt-stdin-tar", input=gzip.compress(buf.getvalue()))
    assert sh(daemon, "bt-stdin-tar", "ls -A /ctx").split() == [".dockerignore", "Dockerfile", "keep"]
    # -f inside the context, -f outside it, -f - with a directory context
    ctx = write_context(os.path.join(str(tmp_path), "c"), {"sub/Other.df": "FROM busybox\nLABEL f=inside\n",
                                                           "x": "x"})
    outside = write_context(os.path.join(str(tmp_path), "o"), {"Outside.df": "FROM busybox\nCOPY x /x\n"})
    build(ctx, "--network", "none", "-f", os.path.join(ctx, "sub/Other.df"), "-t", "bt-f-in")
    assert inspect(daemon, "bt-f-in")["Config"]["Labels"] == {"f": "inside"}
    build(ctx, "--network", "none", "-f", os.path.join(outside, "Outside.df"), "-t", "bt-f-out")
    build(ctx, "--network", "none", "-f", "-", "-t", "bt-f-stdin", input=b"FROM busybox\nLABEL f=stdin\n")
    assert inspect(daemon, "bt-f-stdin")["Config"]["Labels"] == {"f": "stdin"}


def test_quiet_iidfile_and_labels(daemon: Daemon, build: Build, tmp_path: str) -> None:
    ctx = write_context(os.path.join(str(tmp_path), "q"), {"Dockerfile": "FROM busybox\nRUN echo noisy\n"})
    iid = os.path.join(str(tmp_path), "iid")
    r = build(ctx, "--network", "none", "-q", "--iidfile", iid, "--label", "a=1", "--label", "b=two words")
    image_id = r.stdout.strip()
    assert image_id.startswith("sha256:") and "noisy" not in r.stdout and "Step" not in r.stdout
    with open(iid) as f:
        assert f.read() == image_id
    assert inspect(daemon, image_id)["Config"]["Labels"] == {"a": "1", "b": "two words"}


def test_run_mounts_never_reach_the_layer(daemon: Daemon, build: Build, tmp_path: str) -> None:
    secret = os.path.join(str(tmp_path), "token")
    with open(secret, "w") as f:
        f.write("s3cr3t")
    ctx = write_context(os.path.join(str(tmp_path), "s"), {"Dockerfile": (
        "FROM busybox\n"
        "RUN --mount=type=secret,id=tok cat /run/secrets/tok > /seen\n"
        "RUN --mount=type=secret,id=tok,target=/etc/tok,env=TOK sh -c 'test \"$TOK\" = s3cr3t && cat /etc/tok'\n"
        "RUN --mount=type=cache,target=/var/cache/bt,id=bt-test echo run >> /var/cache/bt/log && "
        "wc -l < /var/cache/bt/log > /cache-count\n"
        "RUN --mount=type=tmpfs,target=/scratch touch /scratch/x\n"
        "RUN --mount=type=bind,source=data,target=/mnt/data cp /mnt/data/f /bound\n"), "data/f": "bound\n"})
    build(ctx, "--network", "none", "-t", "bt-mounts", "--secret", f"id=tok,src={secret}")
    out = sh(daemon, "bt-mounts", "cat /seen; echo; cat /bound /cache-count; ls /run /var/cache /mnt /etc/tok /scratch "
                                  "2>&1 | grep -c 'No such file'")
    assert out.splitlines() == ["s3cr3t", "bound", "1", "5"]
    # the cache mount keeps its content across builds (and never becomes part of an image)
    build(ctx, "--network", "none", "--no-cache", "-t", "bt-mounts", "--secret", f"id=tok,src={secret}")
    assert sh(daemon, "bt-mounts", "cat /cache-count") == "2\n"
    # a required secret that is missing fails the step
    r = build(write_context(os.path.join(str(tmp_path), "s2"), {
        "Dockerfile": "FROM busybox\nRUN --mount=type=secret,id=nope,required=true true\n"}), "--network", "none",
        check=False)
    assert r.returncode != 0 and "secret nope not found" in r.stderr and "Dockerfile:2" in r.stderr


def test_add_url_and_checksum(daemon: Daemon, build: Build, tmp_path: str) -> None:
    import hashlib
    import http.server
    import threading

    payload = b"downloaded content\n"

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/files/remote.txt"
        digest = hashlib.sha256(payload).hexdigest()
        ctx = write_context(os.path.join(str(tmp_path), "u"), {"Dockerfile": (
            f"FROM busybox\nADD {url} /dl/\nADD --checksum=sha256:{digest} {url} /renamed.txt\n")})
        build(ctx, "--network", "host", "-t", "bt-url")
        out = sh(daemon, "bt-url", "stat -c '%a %Y' /dl/remote.txt; cat /dl/remote.txt /renamed.txt")
        assert out.splitlines() == ["600 1445412480", "downloaded content", "downloaded content"]
        bad = write_context(os.path.join(str(tmp_path), "b"), {"Dockerfile": (
            f"FROM busybox\nADD --checksum=sha256:{'0' * 64} {url} /x\n")})
        r = build(bad, "--network", "host", check=False)
        assert r.returncode != 0 and "digest mismatch" in r.stderr and "Dockerfile:2" in r.stderr
        r = build(write_context(os.path.join(str(tmp_path), "c"), {"Dockerfile": f"FROM busybox\nCOPY {url} /x\n"}),
                  check=False)
        assert r.returncode != 0 and "can't be a URL for COPY" in r.stderr
    finally:
        srv.shutdown()
        srv.server_close()


def test_scratch_and_workdir_layers(daemon: Daemon, build: Build, tmp_path: str) -> None:
    ctx = write_context(os.path.join(str(tmp_path), "w"), {
        "Dockerfile": "FROM scratch\nCOPY bin/ /bin/\nWORKDIR /a/b\nWORKDIR c\nCMD [\"/bin/sh\"]\n",
        "bin/busybox": open("/bin/busybox", "rb").read()})
    os.chmod(os.path.join(ctx, "bin/busybox"), 0o755)
    build(ctx, "--network", "none", "-t", "bt-scratch")
    img = inspect(daemon, "bt-scratch")
    assert img["Config"]["WorkingDir"] == "/a/b/c" and len(img["RootFS"]["Layers"]) == 3
    out = daemon.out("run", "--rm", "--network", "none", "--entrypoint", "/bin/busybox", "bt-scratch", "pwd")
    assert out.strip() == "/a/b/c"


def test_escape_directive_platform_args_pull_and_df(daemon: Daemon, build: Build, tmp_path: str) -> None:
    ctx = write_context(os.path.join(str(tmp_path), "e"), {"Dockerfile": (
        "# escape=`\nARG BASE=busybox\nFROM --platform=$BUILDPLATFORM $BASE\nARG TARGETARCH\nARG TARGETOS\n"
        "ENV ARCH=$TARGETARCH/$TARGETOS P=C:`\\dir Q=`$notvar\nRUN echo one `\n  two > /words\n")})
    r = build(ctx, "--network", "none", "--pull", "-t", "bt-escape")
    assert "could not pull busybox" in r.stdout  # no registry here: --pull falls back to the local image
    env = inspect(daemon, "bt-escape")["Config"]["Env"]
    import platform as _p

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(_p.machine(), _p.machine())
    assert f"ARCH={arch}/linux" in env and "P=C:\\dir" in env and "Q=$notvar" in env
    assert sh(daemon, "bt-escape", "cat /words") == "one two\n"
    rows = daemon.api().get_json("/system/df")["BuildCache"]
    assert any(row["Description"].startswith("|2 TARGETARCH=") for row in rows)
    assert all({"ID", "Type", "Size", "CreatedAt", "LastUsedAt", "UsageCount", "InUse", "Shared"} <= set(row)
               for row in rows)


def test_default_network_run_leaves_no_runtime_files(daemon: Daemon, build: Build, tmp_path: str) -> None:
    ctx = write_context(os.path.join(str(tmp_path), "n"), {"Dockerfile": (
        "FROM busybox\nRUN cat /etc/hosts > /hosts-seen && ls /proc/self > /dev/null\n")})
    build(ctx, "-t", "bt-default-net")
    out = sh(daemon, "bt-default-net", "wc -c < /hosts-seen; wc -c < /etc/resolv.conf")
    seen, resolv = out.split()
    assert int(seen) > 0  # the container had Docker's /etc/hosts...
    layer_files = daemon.api().get_json("/images/bt-default-net/history")[0]
    assert layer_files["Size"] > 0
    # ...but the image keeps its own (empty) /etc files: runtime mounts never reach a layer
    r = daemon.cli("save", "bt-default-net", check=True)
    import io
    import tarfile

    names: list[str] = []
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        top = manifest[0]["Layers"][-1]
        with tarfile.open(fileobj=outer.extractfile(top)) as layer:  # type: ignore[arg-type]
            names = layer.getnames()
    assert names == ["hosts-seen"]
