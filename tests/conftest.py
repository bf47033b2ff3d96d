"""Shared fixtures: a real matoud on a temporary root, and a way to run the real `matou` CLI against it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
PY = sys.executable


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("MATOU_HOST", None)
    if extra:
        env.update(extra)
    return env


def unmount_under(prefix: str) -> None:
    """Unmount everything at or below prefix, deepest first (test cleanup)."""
    prefix = os.path.realpath(prefix)
    for _ in range(5):
        with open("/proc/self/mountinfo") as f:
            mps = [line.split()[4].replace("\\040", " ") for line in f]
        mine = [m for m in mps if m == prefix or m.startswith(prefix.rstrip("/") + "/")]
        if not mine:
            return
        for m in sorted(mine, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)


@dataclass
class Daemon:
    root: str
    proc: subprocess.Popen | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def sock(self) -> str:
        return os.path.join(self.root, "run", "matou.sock")

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    @property
    def data_root(self) -> str:
        return os.path.join(self.root, "data")

    @property
    def exec_root(self) -> str:
        return os.path.join(self.root, "run")

    @property
    def log_path(self) -> str:
        return os.path.join(self.root, "matoud.log")

    def start(self, timeout: float = 30) -> None:
        os.makedirs(self.exec_root, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [PY, "-m", "matou.daemon", "--host", self.host, "--data-root", self.data_root,
             "--exec-root", self.exec_root, "--log-level", "debug", *self.extra_args],
            stdout=log, stderr=log, env=_env(), start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"matoud exited with {self.proc.returncode}:\n{self.log()}")
            r = self.cli("version", check=False)
            if r.returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"matoud did not start:\n{self.log()}")

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-5000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def cli(self, *args: str, input: bytes | str | None = None, check: bool = True, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        if isinstance(input, str):
            input = input.encode()
        r = subprocess.run([PY, "-m", "matou", *args], input=input, capture_output=True, timeout=timeout,
                           env=_env({"MATOU_HOST": self.host, **(env or {})}))
        if check and r.returncode != 0:
            raise AssertionError(f"matou {' '.join(args)} failed ({r.returncode}):\n"
                                 f"stdout: {r.stdout.decode(errors='replace')}\n"
                                 f"stderr: {r.stderr.decode(errors='replace')}")
        return r

    def out(self, *args: str, **kw) -> str:  # type: ignore[no-untyped-def]
        return self.cli(*args, **kw).stdout.decode()

    def api(self):  # type: ignore[no-untyped-def]
        sys.path.insert(0, SRC)
        from matou.client.http import Client

        return Client(self.host)

    def cleanup(self) -> None:
        # containers outlive their daemon by design: remove them while the daemon runs, then make sure
        self._remove_containers()
        self.stop()
        self._kill_leftover_monitors()
        unmount_under(self.root)
        self._remove_network_leftovers()
        shutil.rmtree(self.root, ignore_errors=True)

    def _remove_containers(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(Exception):
            ids = self.cli("ps", "-aq", check=False, timeout=30).stdout.decode().split()
            if ids:
                self.cli("rm", "-f", *ids, check=False, timeout=60)

    def _monitor_pids(self) -> list[int]:
        """Monitors and spawners this daemon started: their command line names a socket under our root."""
        out = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if b"matou.monitor.spawner" in cmd and self.root.encode() in cmd:
                out.append(int(p))
        return out

    def _kill_leftover_monitors(self) -> None:
        """A daemon killed by a test is not restarted to remove its containers: end them by PID. Killing a
        container's init lets its monitor record the exit and remove the cgroups before it exits itself."""
        pids = self._monitor_pids()
        if not pids:
            return
        for pid in pids:
            for child in _children(pid):
                if child in pids:  # the spawner's children are monitors: they clean up after their init
                    continue
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
            time.sleep(0.05)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _remove_network_leftovers(self) -> None:
        """A daemon that was killed and not restarted leaves its bridges and nftables table: remove them."""
        if "--config-file" not in self.extra_args:
            return
        import json
        import sqlite3

        try:
            with open(self.extra_args[self.extra_args.index("--config-file") + 1]) as f:
                bridge = json.load(f).get("bridge")
        except (OSError, ValueError):
            return
        if not bridge:
            return
        links = [bridge]
        with contextlib.suppress(Exception):
            con = sqlite3.connect(f"file:{os.path.join(self.data_root, 'metadata.db')}?mode=ro", uri=True)
            links += [json.loads(r[0]).get("bridge") for r in con.execute("SELECT record FROM networks")]
            con.close()
        for link in {x for x in links if x}:
            subprocess.run(["ip", "link", "del", link, "type", "bridge"], capture_output=True)
        subprocess.run(["nft", "delete", "table", "ip", f"matou_{bridge}"], capture_output=True)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def own_network_config() -> dict[str, object]:
    """daemon.json keys giving a test daemon a bridge and subnets of its own: concurrent daemons never share one,
    and none touches matou0 (a daemon deletes its bridge and nftables table when it stops, and a matoud the user
    runs, make demo's, would lose them)."""
    import random

    rnd = random.SystemRandom()
    return {"bridge": f"mt{os.urandom(4).hex()}", "bip": f"10.{rnd.randint(100, 199)}.{rnd.randint(0, 255)}.1/24",
            "default-address-pools": [{"base": f"10.{rnd.randint(200, 254)}.0.0/16", "size": 24}]}


def _new_daemon(prefix: str, extra: list[str] | None = None) -> Daemon:
    root = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(root, 0o711)
    import json

    cfg = os.path.join(root, "daemon.json")
    with open(cfg, "w") as f:
        json.dump(own_network_config(), f)
    return Daemon(root, extra_args=["--config-file", cfg, *(extra or [])])


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    """One matoud for the session (fast); tests must not depend on each other's objects."""
    d = _new_daemon("matou-test-")
    d.start()
    try:
        yield d
    finally:
        d.cleanup()


@pytest.fixture
def fresh_daemon() -> Iterator[Daemon]:
    """A matoud of its own, for tests that kill or restart it."""
    d = _new_daemon("matou-fresh-")
    d.start()
    try:
        yield d
    finally:
        d.cleanup()


@pytest.fixture(scope="session")
def busybox(daemon: Daemon) -> str:
    daemon.cli("image", "bootstrap", "busybox")
    return "busybox:latest"


@pytest.fixture
def tmpdir_root() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="matou-t-", dir="/tmp")
    try:
        yield d
    finally:
        unmount_under(d)
        with contextlib.suppress(Exception):
            shutil.rmtree(d)
