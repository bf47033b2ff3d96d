#!/usr/bin/env python3
"""Pull: matou vs ``podman pull`` from the same local registry, side by side in one run.

The image: LAYERS layers of LAYER_MIB random bytes each (one file per layer, gzip level 1, so the blobs are about as
large as the data), pushed once to the CNCF distribution registry (Debian ``docker-registry``) on loopback. Each
round removes the image from both engines, then times ``matou pull IMAGE`` (the CLI process, start to exit, against
a running matoud) and ``podman pull --tls-verify=false IMAGE`` (overlay storage driver), interleaved A B A B.
Engine state lives on tmpfs by default (``--workdir``; the figure printed says where), so the disk's state does not
decide the result. Goal (issue 7): matou at most 0.6x podman's median time.

    .venv/bin/python bench/pull.py [--runs 5] [--layers 4] [--layer-mib 64] [--workdir /dev/shm]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
PY = os.path.join(ROOT, ".venv", "bin", "python")
if not os.path.exists(PY):
    PY = sys.executable
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start")


def tar_of(name: str, data: bytes) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        ti.mode = 0o644
        tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def http(method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=300) as r:
        return r.status, dict(r.headers)


def push_image(base: str, repo: str, layers: int, mib: int) -> str:
    """Build and push the random-layer image with plain HTTP calls; returns the reference."""
    diff_ids, blobs = [], []
    for i in range(layers):
        t = tar_of(f"layer{i}.bin", os.urandom(mib << 20))
        diff_ids.append(sha(t))
        blobs.append(gzip.compress(t, compresslevel=1, mtime=0))
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    for b in blobs + [config]:
        _, h = http("POST", f"{base}/v2/{repo}/blobs/uploads/")
        loc = h["Location"]
        loc = loc if loc.startswith("http") else base + loc
        http("PUT", loc + ("&" if "?" in loc else "?") + "digest=" + sha(b), b,
             {"Content-Type": "application/octet-stream"})
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config),
                                      "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(b),
                                       "size": len(b)} for b in blobs]}).encode()
    http("PUT", f"{base}/v2/{repo}/manifests/1", manifest, {"Content-Type": OCI_MANIFEST})
    return f"{repo}:1"


def run(cmd: list[str], env: dict[str, str] | None = None, check: bool = True) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if check and p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {p.stderr.decode(errors='replace')}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--layer-mib", type=int, default=64)
    ap.add_argument("--workdir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = ap.parse_args()
    for tool in ("docker-registry", "podman"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed; skipping the pull benchmark")
            return 0
    work = tempfile.mkdtemp(prefix="mpb-", dir=args.workdir)
    procs: list[subprocess.Popen] = []
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC
    try:
        # the registry
        port = free_port()
        cfg = os.path.join(work, "registry.yml")
        with open(cfg, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n"
                    f"    rootdirectory: {work}/registry\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: bench\n")
        reg = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(reg)
        wait_port(port, reg, "docker-registry")
        ref = f"127.0.0.1:{port}/" + push_image(f"http://127.0.0.1:{port}", "bench/pull", args.layers, args.layer_mib)
        # matoud
        sock = os.path.join(work, "m", "run", "matou.sock")
        os.makedirs(os.path.dirname(sock))
        mlog = open(os.path.join(work, "matoud.log"), "ab")
        md = subprocess.Popen([PY, "-m", "matou.daemon", "--host", f"unix://{sock}", "--data-root",
                               os.path.join(work, "m", "data"), "--exec-root", os.path.join(work, "m", "run")],
                              stdout=mlog, stderr=mlog, env=env, start_new_session=True)
        procs.append(md)
        menv = {**env, "MATOU_HOST": f"unix://{sock}", "MATOU_CONFIG": os.path.join(work, "mcfg")}
        matou = [PY, "-m", "matou"]
        deadline = time.monotonic() + 60
        while subprocess.run(matou + ["version"], env=menv, capture_output=True).returncode != 0:
            if time.monotonic() > deadline or md.poll() is not None:
                raise SystemExit("matoud did not start")
            time.sleep(0.1)
        # podman, with the containers.conf this machine needs (PEERS.md)
        pbase = os.path.join(work, "p")  # podman wants a short runroot path
        os.makedirs(pbase)
        conf = os.path.join(pbase, "containers.conf")
        with open(conf, "w") as f:
            f.write('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
                    '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
                    f'events_logfile_path = "{pbase}/events.log"\n')
        penv = {**os.environ, "CONTAINERS_CONF": conf}
        podman = ["podman", "--root", f"{pbase}/root", "--runroot", f"{pbase}/run", "--tmpdir", f"{pbase}/tmp",
                  "--storage-driver", "overlay"]

        def pull_matou() -> float:
            run(matou + ["rmi", "-f", ref], menv, check=False)
            return run(matou + ["pull", ref], menv)

        def pull_podman() -> float:
            run(podman + ["rmi", "-f", ref], penv, check=False)
            return run(podman + ["pull", "--tls-verify=false", ref], penv)

        size = args.layers * args.layer_mib
        print(f"pull of {args.layers} x {args.layer_mib} MiB random layers ({size} MiB) from docker-registry on "
              f"loopback; engine state in {work} ({'tmpfs' if work.startswith('/dev/shm') else 'disk'})")
        pull_matou()  # warm-up: page cache of the registry's blobs, imports
        pull_podman()
        times: dict[str, list[float]] = {"matou": [], "podman": []}
        for i in range(args.runs):
            order = [("matou", pull_matou), ("podman", pull_podman)]
            if i % 2:
                order.reverse()
            for name, fn in order:
                times[name].append(fn())
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"  {name:7} median {med:6.2f} s  ({size / med:6.0f} MiB/s)  runs: "
                  + " ".join(f"{t:.2f}" for t in ts))
        ratio = statistics.median(times["matou"]) / statistics.median(times["podman"])
        print(f"matou/podman: {ratio:.2f}x (goal <= 0.6x): {'met' if ratio <= 0.6 else 'NOT met'}")
        run(podman + ["rmi", "-a", "-f"], penv, check=False)
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait()
        _unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)


def _unmount_under(prefix: str) -> None:
    with open("/proc/self/mountinfo") as f:
        mps = [line.split()[4] for line in f]
    for m in sorted((m for m in mps if m.startswith(prefix.rstrip("/") + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
