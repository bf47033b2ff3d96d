"""The spawner: a small, single-threaded, pre-warmed process that forks monitors.

matoud is multi-threaded (asyncio plus worker threads) and large, so it never forks; exec'ing a fresh Python
per container would cost ~20 ms of interpreter start and imports on every ``run``. The spawner pays that
once: it imports the monitor, runtime and log modules, then keeps one *spare* forked ahead of demand (the
monitor shares the spawner's pages, which keeps its PSS small). The spare accepts the next connection on the
spawner's socket itself and becomes that request's monitor, while the spawner forks the next spare: a fork
of a process this size takes ~2.5 ms until the child runs, which is off the ``run`` path this way. Monitors
``setsid`` away, so they outlive both the spawner and matoud; an idle spare dies with the spawner.

The spawner also makes each spare's network namespace before forking it (``premake_netns``), and a spare runs
the request-independent part of a monitor's setup while it waits: both off the ``run`` path, and neither
leaves code run in the monitor itself. What a monitor imports is kept to what it and the init it clones need:
every fork and clone copies the page tables of it (spawner RSS 14.2 MB here).

Protocol: the daemon connects to the spawner's socket and sends one JSON line (a MonitorConfig, asked for
before the bundle exists); the monitor itself answers on that same connection (see ``protocol``) once the
daemon's {"op": "go"} came and the init is cloned, and keeps it as the daemon's control channel.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import sys
import time

from matou.monitor.monitor import IGNORED_SIGNALS, MonitorConfig, make_runtime, prepare_process, run_monitor
from matou.runtime.builtin import premake_netns
from matou.runtime.linux.syscalls import CLONE_NEWNET, setns

TYPE_CHECKING = False  # typing costs the spawner (and every fork of it) ~0.5 MB: annotations only
if TYPE_CHECKING:
    from typing import Any

PR_SET_PDEATHSIG = 1
SPARE_DELAY = 0.03  # seconds


def _preload() -> None:
    """Import what a monitor needs before forking, so each fork starts warm."""
    import fcntl  # noqa: F401
    import selectors  # noqa: F401
    import termios  # noqa: F401

    import matou.logs.jsonfile  # noqa: F401
    import matou.runtime.builtin  # noqa: F401
    # not matou.runtime.ocicli (runc, crun): it brings subprocess and threading, and every fork of this process
    # copies the page tables of what it imported; a monitor for those runtimes imports it itself


def _read_request(conn: socket.socket) -> tuple[bytes, bytes] | None:
    """The request line, and whatever followed it (the daemon's "go" may be in the same read)."""
    buf = b""
    while b"\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    line, rest = buf.split(b"\n", 1)
    return line, rest


def _runtime_key(req: dict) -> tuple[str, str, str]:
    return (req.get("runtime", MonitorConfig.runtime), req.get("runtime_root", MonitorConfig.runtime_root),
            req.get("cgroup_parent", MonitorConfig.cgroup_parent))


def _runtime_for(cache: dict[tuple[str, str, str], Any], req: dict) -> Any:
    """One warmed runtime object per (runtime, root, cgroup parent), made here before the fork: every monitor
    then starts with the cgroup mounts and capability sets already looked up, in pages it shares with us."""
    key = _runtime_key(req)
    rt = cache.get(key)
    if rt is None:  # a spare that finds its runtime here (the usual case) runs none of this
        rt = cache[key] = make_runtime(MonitorConfig.from_json(req))
    return rt


def _become_monitor(listener: socket.socket, conn: socket.socket, req: dict, runtime: Any, rest: bytes,
                    netns_host_fd: int, signal_pipe: tuple[int, int], preclone: Any) -> None:
    listener.close()
    cfg = MonitorConfig.from_json(req)
    os.makedirs(cfg.state_dir, exist_ok=True)
    null = os.open(os.devnull, os.O_RDWR)
    log = os.open(os.path.join(cfg.state_dir, "monitor.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    code = 1
    try:
        code = run_monitor(cfg, conn, runtime, rest, netns_host_fd, signal_pipe, preclone)
    except BaseException as e:  # the monitor must never leave a traceback-less death
        import traceback

        traceback.print_exc()
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"ok": False, "error": f"monitor failed: {e}", "exit_code": 125}).encode() + b"\n")
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _reap() -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    _preload()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(128)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    for s in IGNORED_SIGNALS:  # what monitors ignore, but SIGTERM: inherited, not set in each of them
        if s != signal.SIGTERM:
            signal.signal(s, signal.SIG_IGN)
    # monitors are direct children (one fork per container, not two); reap them as they end
    signal.signal(signal.SIGCHLD, lambda *_: _reap())
    # pre-fork hygiene: objects that exist now are never scanned by the collector again, so the monitors
    # (which share these pages copy-on-write) don't dirty them just by collecting
    import gc

    gc.collect()
    gc.freeze()
    runtimes: dict[tuple[str, str, str], Any] = {}
    parent = os.getpid()
    while True:
        # one spare at a time: forked ahead, it accepts the next request itself, so no fork (2.5 ms for a
        # process this size) and no extra hop sit between the daemon's connect and the monitor's first step
        r, w = os.pipe2(os.O_CLOEXEC)
        netns_host_fd = _premake_netns()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _spare(listener, runtimes, w, parent, libc, netns_host_fd)
        os.close(w)
        if netns_host_fd >= 0:  # back to the host's; the spare stays in the one made for its container
            setns(netns_host_fd, CLONE_NEWNET)
            os.close(netns_host_fd)
        data = _read_line(r)  # "\n" once the spare took a request, or the request if its runtime is new; nothing
        os.close(r)            # if it died first
        if not data:
            time.sleep(0.05)
            continue
        if data != b"\n":
            with contextlib.suppress(Exception):  # warm the runtime the next spare will most likely need
                _runtime_for(runtimes, json.loads(data))
        # Fork the next spare once the container just handed out is under way: forking now would take a CPU
        # from its creation (measured: 'runtime create' 10-11 -> 13-14 ms on 2 cores). A waiting request
        # (a burst of runs) gets its spare at once.
        with contextlib.suppress(OSError):
            select.select([listener], [], [], SPARE_DELAY)


def _read_line(fd: int) -> bytes:
    """One line, not up to EOF: whatever the spare forks before it closes the write end holds a copy of it."""
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
    return buf


def _premake_netns() -> int:
    """A network namespace for the next spare's container, made here so that the spare inherits it without
    running any of that code itself (each line of Python a monitor runs costs it private memory); returns an
    fd of the host's namespace, or -1 (the init's clone then makes one)."""
    try:
        return premake_netns()
    except Exception:  # noqa: BLE001
        return -1


def _preclone(runtimes: dict[tuple[str, str, str], Any], netns_host_fd: int) -> tuple[Any, Any] | None:
    """(runtime, init) cloned while this spare waits (runtime.builtin.BuiltinRuntime.preclone), or None: with
    the built-in runtime the spawner has warmed (its first container's; a request for another discards it)."""
    rt = next((r for r in runtimes.values() if hasattr(r, "preclone")), None)
    if rt is None:
        return None
    try:
        return rt, rt.preclone(new_net=netns_host_fd < 0)
    except Exception:  # noqa: BLE001 - the monitor then clones at "go", as without
        return None


def _spare(listener: socket.socket, runtimes: dict[tuple[str, str, str], Any], taken_w: int, parent: int,
           libc: ctypes.CDLL, netns_host_fd: int) -> None:
    """Wait for a request, tell the spawner (which forks the next spare), become that request's monitor."""
    try:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # an idle spare dies with the spawner
        if os.getppid() != parent:
            os._exit(0)
        signal_pipe = prepare_process(libc)  # while idle: none of it depends on the request
        preclone = _preclone(runtimes, netns_host_fd)
        while True:
            conn, _ = listener.accept()
            try:
                got = _read_request(conn)
            except (OSError, ValueError):
                conn.close()
                continue
            if got is None:
                conn.close()
                continue
            line, rest = got
            try:
                req = json.loads(line)
            except ValueError:
                conn.close()
                continue
            break
        libc.prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0)  # a monitor outlives spawner and daemon
        # the spawner parses the request only to warm a runtime it does not have: every page it writes while this
        # process is its newest fork becomes this one's private copy (the monitor's PSS)
        with contextlib.suppress(OSError):
            os.write(taken_w, b"\n" if _runtime_key(req) in runtimes else line + b"\n")
        os.close(taken_w)
        try:
            runtime = _runtime_for(runtimes, req)
        except Exception:  # noqa: BLE001 - the monitor makes its own and reports what is wrong
            runtime = None
        _become_monitor(listener, conn, req, runtime, rest, netns_host_fd, signal_pipe, preclone)
    finally:
        os._exit(1)


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] != "--socket":
        sys.stderr.write("usage: python -m matou.monitor.spawner --socket PATH\n")
        sys.exit(2)
    serve(sys.argv[2])


if __name__ == "__main__":
    main()
