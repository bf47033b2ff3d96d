"""Image builds: matou build vs the legacy ``docker build`` (dockerd from Debian) vs ``podman build``.

One benchmark Dockerfile (10 steps: a 50 MB file and 200 small files copied, three RUNs, ENV/WORKDIR/LABEL/CMD),
built by each tool from the same context directory, the busybox base image loaded into each from matou's
bootstrap. Two measurements, interleaved (matou, docker, podman, matou, ...) and reported as medians and ratios:

- cold: nothing cached (each tool's previous result and build cache removed first, ``--no-cache``); for matou
  also its context file store and the CLI's hash cache, so the 50 MB are sent and hashed like the others do;
- cached: a rebuild of the unchanged context, every step a cache hit.

RUN steps use ``--network none`` everywhere (no bridge differences). Each daemon runs on temporary directories
and is stopped afterwards: matoud and dockerd (own exec root, no bridge, no iptables); podman with a temporary
storage root. crun (podman's runtime) refuses this VM's hybrid cgroups, so a v1 hugetlb hierarchy is mounted for
the run if none is (PEERS.md), and removed afterwards.

Usage: python bench/build.py [ROUNDS]     (goals: cached <= 0.5x and cold <= 1.0x the faster peer)
"""

from __future__ import annotations

import contextlib
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
PY = os.path.join(ROOT, ".venv", "bin", "python")
if not os.path.exists(PY):
    PY = sys.executable

DOCKERFILE = """\
FROM busybox
ENV APP=/app
WORKDIR /app
COPY big.bin /app/big.bin
COPY small/ /app/small/
RUN ls /app/small | wc -l > /app/count
RUN wc -c < /app/big.bin > /app/big.size
RUN echo built > /app/stamp && date > /app/date
LABEL bench=build
CMD ["cat", "/app/count"]
"""


def run(cmd: list[str], env: dict[str, str] | None = None, check: bool = True, stdin: int | None = None,
        quiet: bool = True) -> subprocess.CompletedProcess[bytes]:
    r = subprocess.run(cmd, env=env, stdin=stdin, capture_output=quiet)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode(errors='replace')[-2000:]}")
    return r


def make_context(path: str) -> None:
    os.makedirs(os.path.join(path, "small"))
    with open(os.path.join(path, "big.bin"), "wb") as f:
        f.write(os.urandom(50_000_000))
    for i in range(200):
        with open(os.path.join(path, "small", f"f{i:03d}.txt"), "w") as f:
            f.write(f"small file {i}\n" * (i % 7 + 1))
    with open(os.path.join(path, "Dockerfile"), "w") as f:
        f.write(DOCKERFILE)


class Matou:
    name = "matou"

    def __init__(self, tmp: str) -> None:
        self.root = os.path.join(tmp, "matou")
        os.makedirs(os.path.join(self.root, "run"))
        self.host = f"unix://{self.root}/run/matou.sock"
        self.cache_home = os.path.join(self.root, "xdg-cache")
        site = run([PY, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.decode().strip()
        self.cli = os.path.join(self.root, "matou")
        with open(self.cli, "w") as f:  # what scripts/mklaunchers installs
            f.write(f"#!{PY} -IS\nimport sys\nsys.path[0:0] = [{os.path.join(ROOT, 'src')!r}, {site!r}]\n"
                    "from matou.cli.main import main\nsys.exit(main())\n")
        os.chmod(self.cli, 0o755)
        self.env = dict(os.environ, MATOU_HOST=self.host, XDG_CACHE_HOME=self.cache_home)
        log = open(os.path.join(self.root, "matoud.log"), "ab")
        self.proc = subprocess.Popen(
            [PY, "-m", "matou.daemon", "--host", self.host, "--data-root", os.path.join(self.root, "data"),
             "--exec-root", os.path.join(self.root, "run")],
            stdout=log, stderr=log, env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src")),
            start_new_session=True)
        deadline = time.monotonic() + 60
        while run([self.cli, "version"], env=self.env, check=False).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("matoud did not start")
            time.sleep(0.1)
        run([self.cli, "image", "bootstrap", "busybox"], env=self.env)

    def build_cmd(self, ctx: str, cold: bool) -> list[str]:
        return [self.cli, "build", "-q", "--network", "none", "-t", "bench"] + (["--no-cache"] if cold else []) + [ctx]

    def reset(self) -> None:
        run([self.cli, "rmi", "bench"], env=self.env, check=False)
        run([self.cli, "builder", "prune", "-a", "-f"], env=self.env)
        shutil.rmtree(self.cache_home, ignore_errors=True)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        unmount_under(self.root)


class Docker:
    name = "docker"

    def __init__(self, tmp: str, busybox_tar: str) -> None:
        self.root = os.path.join(tmp, "docker")
        os.makedirs(self.root)
        sock = os.path.join(self.root, "docker.sock")
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{sock}", DOCKER_BUILDKIT="0",
                        DOCKER_CONFIG=os.path.join(self.root, "cfg"))
        log = open(os.path.join(self.root, "dockerd.log"), "ab")
        self.proc = subprocess.Popen(
            ["dockerd", "--host", f"unix://{sock}", "--data-root", os.path.join(self.root, "data"),
             "--exec-root", os.path.join(self.root, "exec"), "--pidfile", os.path.join(self.root, "dockerd.pid"),
             "--bridge", "none", "--iptables=false", "--ip-masq=false", "--storage-driver", "overlay2"],
            stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while run(["docker", "version"], env=self.env, check=False).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("dockerd did not start: see " + os.path.join(self.root, "dockerd.log"))
            time.sleep(0.2)
        with open(busybox_tar, "rb") as f:
            run(["docker", "load"], env=self.env, stdin=f.fileno())

    def build_cmd(self, ctx: str, cold: bool) -> list[str]:
        return ["docker", "build", "-q", "--network", "none", "-t", "bench"] + (["--no-cache"] if cold else []) + [ctx]

    def reset(self) -> None:
        run(["docker", "rmi", "-f", "bench"], env=self.env, check=False)
        run(["docker", "container", "prune", "-f"], env=self.env, check=False)
        run(["docker", "image", "prune", "-f"], env=self.env, check=False)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        unmount_under(self.root)


class Podman:
    name = "podman"

    def __init__(self, tmp: str, busybox_tar: str) -> None:
        self.root = os.path.join(tmp, "podman")
        os.makedirs(self.root)
        conf = os.path.join(self.root, "containers.conf")
        with open(conf, "w") as f:
            f.write('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
                    '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=conf)
        self.base = ["podman", "--root", os.path.join(self.root, "storage"), "--runroot",
                     os.path.join(self.root, "run"), "--storage-driver", "overlay"]
        run(self.base + ["load", "-i", busybox_tar], env=self.env)

    def build_cmd(self, ctx: str, cold: bool) -> list[str]:
        return self.base + ["build", "-q", "--network", "none", "-t", "bench"] + (["--no-cache"] if cold else []) \
            + [ctx]

    def reset(self) -> None:
        run(self.base + ["rmi", "-f", "bench"], env=self.env, check=False)
        run(self.base + ["image", "prune", "-f"], env=self.env, check=False)

    def stop(self) -> None:
        run(self.base + ["system", "reset", "-f"], env=self.env, check=False)
        unmount_under(self.root)


def timed(tool: object, cmd: list[str]) -> float:
    t = time.perf_counter()
    run(cmd, env=tool.env)  # type: ignore[attr-defined]
    return time.perf_counter() - t


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    tmp = tempfile.mkdtemp(prefix="matou-bench-build-", dir="/tmp")
    ctx = os.path.join(tmp, "context")
    tools: list[object] = []
    try:
        make_context(ctx)
        matou = Matou(tmp)
        tools.append(matou)
        tar = os.path.join(tmp, "busybox.tar")
        with open(tar, "wb") as f:
            subprocess.run([matou.cli, "save", "busybox:latest"], env=matou.env, stdout=f, check=True)
        if shutil.which("dockerd") and shutil.which("docker"):
            tools.append(Docker(tmp, tar))
        if shutil.which("podman"):
            tools.append(Podman(tmp, tar))
        cold: dict[str, list[float]] = {t.name: [] for t in tools}  # type: ignore[attr-defined]
        cached: dict[str, list[float]] = {t.name: [] for t in tools}  # type: ignore[attr-defined]
        with hugetlb_v1():
            for t in tools:  # warm-up: page cache, first-run costs
                run(t.build_cmd(ctx, cold=True), env=t.env)  # type: ignore[attr-defined]
            for _ in range(rounds):
                for t in tools:
                    t.reset()  # type: ignore[attr-defined]
                    cold[t.name].append(timed(t, t.build_cmd(ctx, cold=True)))  # type: ignore[attr-defined]
                for t in tools:
                    cached[t.name].append(timed(t, t.build_cmd(ctx, cold=False)))  # type: ignore[attr-defined]
        print(f"build benchmark: {DOCKERFILE.count(chr(10))}-step Dockerfile, 50 MB file + 200 small files, "
              f"{rounds} interleaved rounds, medians (load average {os.getloadavg()[0]:.1f})")
        print(f"{'tool':<8} {'cold s':>8} {'cached s':>9}")
        med = {n: (statistics.median(cold[n]), statistics.median(cached[n])) for n in cold}
        for n, (c, k) in med.items():
            print(f"{n:<8} {c:8.3f} {k:9.3f}")
        peers = {n: v for n, v in med.items() if n != "matou"}
        if peers:
            best_cold = min(v[0] for v in peers.values())
            best_cached = min(v[1] for v in peers.values())
            rc, rk = med["matou"][0] / best_cold, med["matou"][1] / best_cached
            print(f"matou / faster peer: cold {rc:.2f}x (goal <= 1.0), cached {rk:.2f}x (goal <= 0.5)")
        return 0
    finally:
        for t in reversed(tools):
            with contextlib.suppress(Exception):
                t.stop()  # type: ignore[attr-defined]
        unmount_under(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
