#!/usr/bin/env python3
"""matou registry vs the CNCF distribution registry (Debian ``docker-registry``), side by side in one run.

What is measured, interleaved A B A B over fresh registry roots (clients skip blobs a registry has, so every
push starts from an empty registry):
- push of a 4 x 64 MiB random-layer image with ``skopeo copy oci:... docker://...``;
- pull of it with ``skopeo copy docker://... oci:...`` (no unpacking; into a fresh directory);
- the same 4 layers pushed and pulled by 4 parallel curl processes (POST + PUT; GET to /dev/null), which
  measures the registries rather than skopeo;
- manifest GETs by tag from 8 concurrent keep-alive clients (``ab -k -c 8``);
- peak resident memory (VmHWM) of each registry process over its push, pull and GET workload.
Both registries run without client credentials (matou in open mode, which still hands out anonymous tokens;
distribution without auth, with the in-memory blob descriptor cache of Debian's default config) and with
access logs off. Goals (issue 6): blob throughput >= 1.0x distribution's, manifest GET rate >= 0.8x, peak RSS <=
distribution's.

    .venv/bin/python bench/registry.py [--runs 5] [--requests 20000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYER_MIB = 64
LAYERS = 4
IMAGE_MIB = LAYER_MIB * LAYERS
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256_file(path: str) -> tuple[str, int]:
    import hashlib

    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return "sha256:" + h.hexdigest(), n


def make_layout(path: str) -> None:
    """An OCI layout with LAYERS random uncompressed 'layers' of LAYER_MIB each."""
    blobs = os.path.join(path, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    layers = []
    import gzip

    for _ in range(LAYERS):
        tmp = os.path.join(blobs, "tmp")
        # valid gzip (stored blocks, level 0) around random bytes: skopeo copies a gzip layer as it is; anything
        # else it would compress itself, and the numbers would be a Go gzip's, not the registries'
        with gzip.GzipFile(tmp, "wb", compresslevel=0, mtime=0) as f:
            for _ in range(LAYER_MIB):
                f.write(os.urandom(1 << 20))
        d, n = sha256_file(tmp)
        os.rename(tmp, os.path.join(blobs, d[7:]))
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n})
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [x["digest"] for x in layers]}}).encode()
    import hashlib

    cd = "sha256:" + hashlib.sha256(config).hexdigest()
    with open(os.path.join(blobs, cd[7:]), "wb") as f:
        f.write(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd,
                                      "size": len(config)}, "layers": layers}).encode()
    md = "sha256:" + hashlib.sha256(manifest).hexdigest()
    with open(os.path.join(blobs, md[7:]), "wb") as f:
        f.write(manifest)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": md,
                                                      "size": len(manifest),
                                                      "annotations": {"org.opencontainers.image.ref.name": "v1"}}]},
                  f)


@dataclass
class Server:
    kind: str  # "matou" or "distribution"
    workdir: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    root: str = ""

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        self.root = tempfile.mkdtemp(prefix=f"{self.kind}-", dir=self.workdir)
        log = open(os.path.join(self.workdir, f"{self.kind}.log"), "ab")
        if self.kind == "matou":
            env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
            cmd = [sys.executable, "-m", "matou.registry", "serve", "--root", self.root, "--addr", self.host,
                   "--anonymous-push", "--default-visibility", "public"]
        else:
            env = dict(os.environ)
            cfg = os.path.join(self.root, "config.yml")
            with open(cfg, "w") as f:
                f.write(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                        f"storage:\n  cache:\n    blobdescriptor: inmemory\n"
                        f"  filesystem:\n    rootdirectory: {self.root}/data\n  delete:\n    enabled: true\n"
                        f"http:\n  addr: {self.host}\n")
            cmd = ["docker-registry", "serve", cfg]
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1)
                return
            except urllib.error.HTTPError:
                return  # 401 from matou: up
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.kind} exited") from None
                time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not start")

    def peak_rss_kib(self) -> int:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Results:
    push: list[float] = field(default_factory=list)
    pull: list[float] = field(default_factory=list)
    raw_push: list[float] = field(default_factory=list)
    raw_pull: list[float] = field(default_factory=list)
    gets: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)


def layer_files(layout: str) -> list[tuple[str, str]]:
    with open(os.path.join(layout, "index.json")) as f:
        md = json.load(f)["manifests"][0]["digest"]
    with open(os.path.join(layout, "blobs", "sha256", md[7:])) as f:
        layers = json.load(f)["layers"]
    return [(x["digest"], os.path.join(layout, "blobs", "sha256", x["digest"][7:])) for x in layers]


def _parallel(cmds: list[list[str]]) -> float:
    t = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"curl failed: {p.stderr.read().decode() if p.stderr else ''}")
    return time.perf_counter() - t


def raw_push(host: str, layers: list[tuple[str, str]]) -> float:
    """The 4 layers uploaded in parallel by curl (POST for a session, then one PUT with the body)."""
    cmds = []
    for digest, path in layers:
        req = urllib.request.Request(f"http://{host}/v2/bench/raw/blobs/uploads/", method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            loc = r.headers["Location"]
        if loc.startswith("/"):
            loc = f"http://{host}{loc}"
        url = loc + ("&" if "?" in loc else "?") + "digest=" + digest
        cmds.append(["curl", "-sf", "-o", "/dev/null", "-X", "PUT", "-H", "Content-Type: application/octet-stream",
                     "--data-binary", f"@{path}", url])
    return _parallel(cmds)


def raw_pull(host: str, layers: list[tuple[str, str]]) -> float:
    """The 4 layers downloaded in parallel by curl into /dev/null."""
    return _parallel([["curl", "-sf", "-o", "/dev/null", f"http://{host}/v2/bench/img/blobs/{d}"]
                      for d, _ in layers])


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr}")
    return dt


def ab(host: str, n: int) -> float:
    p = subprocess.run(["ab", "-q", "-k", "-c", "8", "-n", str(n), "-H", f"Accept: {OCI_MANIFEST}",
                        f"http://{host}/v2/bench/img/manifests/v1"], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr)
    failed = re.search(r"Failed requests:\s+(\d+)", p.stdout)
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", p.stdout)
    if (failed and int(failed.group(1))) or non2xx:
        raise RuntimeError(f"ab saw failures:\n{p.stdout}")
    m = re.search(r"Requests per second:\s+([\d.]+)", p.stdout)
    assert m
    return float(m.group(1))


def one_round(kind: str, workdir: str, client_dir: str, layout: str, n_requests: int, res: Results) -> None:
    s = Server(kind, workdir)
    s.start()
    try:
        dest = f"docker://{s.host}/bench/img:v1"
        res.push.append(timed(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:v1", dest]))
        out = tempfile.mkdtemp(prefix="pull-", dir=client_dir)
        try:
            res.pull.append(timed(["skopeo", "copy", "-q", "--src-tls-verify=false", dest, f"oci:{out}:v1"]))
        finally:
            shutil.rmtree(out, ignore_errors=True)
        layers = layer_files(layout)
        res.raw_pull.append(raw_pull(s.host, layers))
        res.raw_push.append(raw_push(s.host, layers))
        ab(s.host, 500)  # warm up
        res.gets.append(ab(s.host, n_requests))
        res.rss_kib.append(s.peak_rss_kib())
    finally:
        s.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--workdir", help="scratch directory (default: a new one under /var/tmp)")
    args = ap.parse_args()
    for tool in ("skopeo", "docker-registry", "ab"):
        if shutil.which(tool) is None:
            print(f"bench/registry.py: {tool} is missing (make install)", file=sys.stderr)
            return 1
    workdir = args.workdir or tempfile.mkdtemp(prefix="matou-bench-registry-", dir="/var/tmp")
    os.makedirs(workdir, exist_ok=True)
    client_dir = workdir
    try:
        # the client side (source image, pulled copies) lives on tmpfs when there is one, so disk noise on the
        # client does not drown the registries' difference; the registries' roots are on disk (--workdir)
        client_dir = tempfile.mkdtemp(prefix="matou-bench-client-", dir="/dev/shm" if os.path.isdir("/dev/shm") else workdir)
        layout = os.path.join(client_dir, "image")
        make_layout(layout)
        results = {"matou": Results(), "distribution": Results()}
        for i in range(args.runs):
            order = ("matou", "distribution") if i % 2 == 0 else ("distribution", "matou")
            for kind in order:
                one_round(kind, workdir, client_dir, layout, args.requests, results[kind])
            print(f"run {i + 1}/{args.runs}: " + ", ".join(
                f"{k} push {r.push[-1]:.2f}s pull {r.pull[-1]:.2f}s raw {r.raw_push[-1]:.2f}/{r.raw_pull[-1]:.2f}s "
                f"GET {r.gets[-1]:.0f}/s" for k, r in results.items()), file=sys.stderr)
    finally:
        shutil.rmtree(client_dir, ignore_errors=True)
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    m, d = results["matou"], results["distribution"]
    med = statistics.median
    rows = [
        ("push 4x64 MiB (s)", med(m.push), med(d.push), med(d.push) / med(m.push), 1.0),
        ("pull 4x64 MiB (s)", med(m.pull), med(d.pull), med(d.pull) / med(m.pull), 1.0),
        ("raw push, 4 parallel curl (s)", med(m.raw_push), med(d.raw_push), med(d.raw_push) / med(m.raw_push), 1.0),
        ("raw pull, 4 parallel curl (s)", med(m.raw_pull), med(d.raw_pull), med(d.raw_pull) / med(m.raw_pull), 1.0),
        ("manifest GET, 8 clients (req/s)", med(m.gets), med(d.gets), med(m.gets) / med(d.gets), 0.8),
        ("peak RSS (MiB)", max(m.rss_kib) / 1024, max(d.rss_kib) / 1024, max(d.rss_kib) / max(m.rss_kib), 1.0),
    ]
    print(f"\nmatou registry vs distribution {_version()} — medians of {args.runs} interleaved runs "
          f"({IMAGE_MIB} MiB image; throughput = {IMAGE_MIB} MiB / time)")
    print(f"{'':34} {'matou':>10} {'distribution':>13} {'ratio':>7}  goal")
    for name, a, b, ratio, goal in rows:
        verdict = "ok" if ratio >= goal else "MISSED"
        print(f"{name:34} {a:10.2f} {b:13.2f} {ratio:6.2f}x  >= {goal:.1f}x {verdict}")
    print(f"blob throughput (matou vs distribution, MiB/s): skopeo push {IMAGE_MIB / med(m.push):.0f} vs "
          f"{IMAGE_MIB / med(d.push):.0f}, skopeo pull {IMAGE_MIB / med(m.pull):.0f} vs {IMAGE_MIB / med(d.pull):.0f}, "
          f"raw push {IMAGE_MIB / med(m.raw_push):.0f} vs {IMAGE_MIB / med(d.raw_push):.0f}, "
          f"raw pull {IMAGE_MIB / med(m.raw_pull):.0f} vs {IMAGE_MIB / med(d.raw_pull):.0f}")
    return 0


def _version() -> str:
    p = subprocess.run(["docker-registry", "--version"], capture_output=True, text=True)
    return p.stdout.split()[-1] if p.stdout else "?"


if __name__ == "__main__":
    sys.exit(main())
