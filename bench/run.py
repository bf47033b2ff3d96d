#!/usr/bin/env python3
"""`run` latency against podman (and `ps`/`version` against docker ps on dockerd), daemon and monitor memory.

What it does, in one run on this machine:
1. starts its own matoud on a temporary root, bootstraps busybox, and imports the same root filesystem into a
   private podman storage, so both run the same files;
2. times `matou run --rm --network none busybox true` and `podman run --rm --network none ... true`,
   interleaved (A B A B ...), and prints medians, the ratio, and matou's `--trace` breakdown;
3. times `matou ps` / `matou version` against `docker ps` / `docker version` on a private dockerd, interleaved;
4. reports matoud's idle RSS and the PSS of each running container's monitor (10 running containers);
5. (bridge variant, issue 4) times `matou run --rm busybox true` on matou's default bridge against
   `podman run --rm` and `docker run --rm` on their default bridges, interleaved, and prints the `network` step of
   matou's `--trace` (median over the rounds).

Goals (issue 3): run <= 0.15x podman; ps/version <= docker ps; idle RSS <= 60 MB; monitor PSS <= 2.7 MB.
Goals (issue 4): bridge run <= 0.1x the faster peer; network setup <= 15 ms per container.
Usage: .venv/bin/python bench/run.py [--rounds N] [--no-docker] [--no-podman] [--no-bridge] [--only-bridge]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from common import hugetlb_v1, unmount_under  # noqa: E402 (bench/ is on sys.path when run)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
PY = sys.executable


def sh(cmd: list[str], env: dict[str, str] | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, env=env, **kw)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.decode(errors='replace')[-2000:]}")
    return r


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.decode(errors='replace')[-2000:]}")
    return dt * 1000


def interleave(cmds: dict[str, tuple[list[str], dict[str, str] | None]], rounds: int, warmup: int = 2) -> dict[str, float]:
    for _ in range(warmup):
        for cmd, env in cmds.values():
            timed(cmd, env)
    samples: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(rounds):
        for k, (cmd, env) in cmds.items():
            samples[k].append(timed(cmd, env))
    return {k: statistics.median(v) for k, v in samples.items()}


def matou_cmd() -> list[str]:
    """The installed launcher when it points at this tree (what users run), else the module."""
    launcher = "/usr/local/bin/matou"
    if os.path.exists(launcher) and SRC in open(launcher).read():
        return [launcher]
    return [PY, "-IS", "-c", f"import sys; sys.path[0:0]=[{SRC!r}]; from matou.cli.main import main; sys.exit(main())"]


class Matoud:
    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="mb-", dir="/tmp")
        self.host = f"unix://{self.root}/run/matou.sock"
        self.env = {**os.environ, "MATOU_HOST": self.host, "PYTHONPATH": SRC}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(os.path.join(self.root, "matoud.log"), "ab")
        # a bridge and subnets of its own: a daemon deletes its bridge when it stops, and another matoud on this
        # host (make demo's, on matou0) would lose its own
        cfg = os.path.join(self.root, "daemon.json")
        with open(cfg, "w") as f:
            json.dump({"bridge": f"mb{os.urandom(3).hex()}", "bip": f"10.250.{os.urandom(1)[0]}.1/24",
                       "default-address-pools": [{"base": "10.251.0.0/16", "size": 24}]}, f)
        self.proc = subprocess.Popen([PY, "-m", "matou.daemon", "--host", self.host, "--data-root",
                                      f"{self.root}/data", "--exec-root", f"{self.root}/run", "--config-file", cfg],
                                     stdout=log, stderr=log, env=self.env, start_new_session=True)
        for _ in range(300):
            if subprocess.run(matou_cmd() + ["version"], capture_output=True, env=self.env).returncode == 0:
                return
            time.sleep(0.05)
        raise SystemExit("matoud did not start")

    def cli(self, *args: str) -> str:
        return sh(matou_cmd() + list(args), env=self.env).stdout.decode()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            for cid in self.cli("ps", "-aq").split():
                self.cli("rm", "-f", cid)
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(20)
        unmount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


class Podman:
    """A private podman storage with crun; the hybrid-cgroup workaround of PEERS.md while it runs."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="pb-", dir="/tmp")
        conf = os.path.join(self.root, "containers.conf")
        with open(conf, "w") as f:
            f.write('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
                    '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
        self.env = {**os.environ, "CONTAINERS_CONF": conf}
        self.base = ["podman", "--root", f"{self.root}/s", "--runroot", f"{self.root}/r", "--storage-driver",
                     "overlay"]
        self._stack = contextlib.ExitStack()

    def setup(self) -> None:
        self._stack.enter_context(hugetlb_v1())

    def cmd(self, *args: str) -> list[str]:
        return self.base + list(args)

    def teardown(self) -> None:
        subprocess.run(self.cmd("rm", "-af", "-t", "0"), capture_output=True, env=self.env)
        subprocess.run(self.cmd("system", "reset", "-f"), capture_output=True, env=self.env)
        self._stack.close()
        shutil.rmtree(self.root, ignore_errors=True)


class Dockerd:
    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="db-", dir="/tmp")
        self.sock = f"{self.root}/docker.sock"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.sock}"}
        self.proc: subprocess.Popen | None = None
        self.bridge = "mbdock0"

    def start(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        if not shutil.which("dockerd"):
            return False
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], capture_output=True)
        subprocess.run(["ip", "addr", "add", "172.31.250.1/24", "dev", self.bridge], capture_output=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], capture_output=True)
        log = open(f"{self.root}/dockerd.log", "ab")
        self.proc = subprocess.Popen(["dockerd", "--host", f"unix://{self.sock}", "--data-root", f"{self.root}/data",
                                      "--exec-root", f"{self.root}/exec", "--pidfile", f"{self.root}/pid", "-b",
                                      self.bridge], stdout=log, stderr=log, start_new_session=True)
        for _ in range(300):
            if subprocess.run(["docker", "version"], capture_output=True, env=self.env).returncode == 0:
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        subprocess.run(["iptables", "-P", "FORWARD", "ACCEPT"], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        unmount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def bridge_variant(m: Matoud, p: Podman | None, d: Dockerd | None, rounds: int) -> None:
    """`run --rm busybox true` on each engine's default bridge network, interleaved (issue 4)."""
    cmds: dict[str, tuple[list[str], dict[str, str] | None]] = {
        "matou run --rm (bridge)": (matou_cmd() + ["run", "--rm", "busybox", "true"], m.env)}
    if p is not None:
        cmds["podman run --rm (bridge)"] = (p.cmd("run", "--rm", "localhost/busybox:latest", "true"), p.env)
    if d is not None and d.start():
        tar = os.path.join(m.root, "busybox-image.tar")
        sh(matou_cmd() + ["save", "-o", tar, "busybox:latest"], env=m.env)
        sh(["docker", "load", "-i", tar], env=d.env)
        cmds["docker run --rm (bridge)"] = (["docker", "run", "--rm", "busybox:latest", "true"], d.env)
    had_cni = os.path.exists("/sys/class/net/cni-podman0")
    res = interleave(cmds, rounds)
    brif = "/sys/class/net/cni-podman0/brif"
    if p is not None and not had_cni and os.path.isdir(brif) and not os.listdir(brif):
        sh(["ip", "link", "del", "cni-podman0"], check=False)  # podman's bridge, created by this run and unused
    print("run --rm on the default bridge network:")
    for k, v in res.items():
        print(f"  {k:<36} {v:8.1f} ms")
    peers = [v for k, v in res.items() if not k.startswith("matou")]
    if peers:
        print(f"  ratio matou/faster peer: {res['matou run --rm (bridge)'] / min(peers):.3f} (goal <= 0.1)")
    steps: list[float] = []
    trace = ""
    for _ in range(rounds):
        trace = subprocess.run(matou_cmd() + ["run", "--trace", "--rm", "busybox", "true"],
                               capture_output=True, env=m.env).stderr.decode()
        steps += [float(ln.split()[-2]) for ln in trace.splitlines() if ln.strip().startswith("network ")]
    if steps:
        print(f"  network setup (--trace 'network' step): median {statistics.median(steps):.2f} ms, "
              f"max {max(steps):.2f} ms over {len(steps)} runs (goal <= 15 ms)")
    print("  trace of one bridge run:\n" + "\n".join("    " + ln for ln in trace.splitlines()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--no-docker", action="store_true")
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--no-bridge", action="store_true", help="skip the bridge-network variant")
    ap.add_argument("--only-bridge", action="store_true", help="run only the bridge-network variant")
    a = ap.parse_args()
    m = Matoud()
    p = Podman() if not a.no_podman and shutil.which("podman") else None
    d = Dockerd() if not a.no_docker else None
    try:
        m.start()
        m.cli("image", "bootstrap", "busybox")
        print(f"machine: {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; {a.rounds} interleaved rounds, medians")
        cmds: dict[str, tuple[list[str], dict[str, str] | None]] = {
            "matou run --rm --network none": (matou_cmd() + ["run", "--rm", "--network", "none", "busybox", "true"],
                                              m.env)}
        if p is not None:
            p.setup()
            cid = m.cli("create", "busybox", "true").strip()
            tar = os.path.join(m.root, "rootfs.tar")
            with open(tar, "wb") as f:
                f.write(sh(matou_cmd() + ["export", cid], env=m.env).stdout)
            m.cli("rm", cid)
            sh(p.cmd("import", tar, "localhost/busybox:latest"), env=p.env)
            cmds["podman run --rm --network none"] = (p.cmd("run", "--rm", "--network", "none",
                                                            "localhost/busybox:latest", "true"), p.env)
        if a.only_bridge:
            bridge_variant(m, p, d, a.rounds)
            return
        res = interleave(cmds, a.rounds)
        for k, v in res.items():
            print(f"  {k:<36} {v:8.1f} ms")
        if p is not None:
            ratio = res["matou run --rm --network none"] / res["podman run --rm --network none"]
            print(f"  ratio matou/podman: {ratio:.3f} (goal <= 0.15)")
        trace = subprocess.run(matou_cmd() + ["run", "--trace", "--rm", "--network", "none", "busybox", "true"],
                               capture_output=True, env=m.env).stderr.decode()
        print("  trace of one run:\n" + "\n".join("    " + ln for ln in trace.splitlines()))

        cli = {"matou ps": (matou_cmd() + ["ps"], m.env), "matou version": (matou_cmd() + ["version"], m.env)}
        if d is not None and d.start():
            cli["docker ps"] = (["docker", "ps"], d.env)
            cli["docker version"] = (["docker", "version"], d.env)
        res = interleave(cli, a.rounds * 2)
        print("CLI round trips (no containers):")
        for k, v in res.items():
            print(f"  {k:<36} {v:8.1f} ms")
        if "docker ps" in res:
            print(f"  ratio ps: {res['matou ps'] / res['docker ps']:.2f}, version: "
                  f"{res['matou version'] / res['docker version']:.2f} (goal <= 1.0)")

        assert m.proc is not None
        time.sleep(1)
        print(f"matoud idle RSS: {rss_kb(m.proc.pid) / 1024:.1f} MB (goal <= 60 MB)")
        ids = [m.cli("run", "-d", "--network", "none", "busybox", "sleep", "1000").strip() for _ in range(10)]
        time.sleep(0.5)
        pss = []
        for cid in ids:
            with open(os.path.join(m.root, "run", "containers", cid, "monitor.pid")) as f:
                pss.append(pss_kb(int(f.read())))
        print(f"monitor PSS with 10 running containers: median {statistics.median(pss) / 1024:.2f} MB, "
              f"max {max(pss) / 1024:.2f} MB (goal <= 2.7 MB)")
        print(f"matoud RSS with 10 running containers: {rss_kb(m.proc.pid) / 1024:.1f} MB")
        for cid in ids:
            m.cli("rm", "-f", cid)
        if not a.no_bridge:
            bridge_variant(m, p, d, a.rounds)
    finally:
        m.stop()
        if p is not None:
            p.teardown()
        if d is not None:
            d.stop()


if __name__ == "__main__":
    main()
