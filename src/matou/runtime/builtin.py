"""BuiltinRuntime: the OCI runtime in-process, for a single-threaded caller (the monitor or the runtime CLI).

State lives under ``root`` (see state.py); compiled seccomp programs under ``root/.seccomp``. The init is cloned
directly from the caller with the namespace flags of config.json (see linux/init.py for why no re-exec), so it is
the caller's child and the caller reaps it.
"""

from __future__ import annotations

import _socket
import contextlib
import datetime
import errno
import fcntl
import json
import os
import select
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from matou.errors import Conflict, InvalidArgument, NotFound, SystemError_, Unsupported
from matou.runtime import plan
from matou.runtime.api import ExecError
from matou.runtime.linux import caps as capmod
from matou.runtime.linux import cgroups, rootfs
from matou.runtime.linux import syscalls as sc
from matou.runtime.linux.init import (
    ContainerPlan,
    ExecPlan,
    ProcessPlan,
    early_setup,
    run_container_init,
    run_exec_init,
    send_report,
)
from matou.runtime.linux.seccomp import BpfCache, profile_key
from matou.runtime.state import FIFO, ContainerState, check_id, list_ids, proc_stat
from matou.util.fs import atomic_write, rmtree

TYPE_CHECKING = False  # typing costs the spawner (and every fork of it) ~0.5 MB: annotations only
if TYPE_CHECKING:
    from typing import Any, NoReturn

_IFF_UP_LOOPBACK_RUNNING = 0x1 | 0x8 | 0x40
_SIOCSIFFLAGS = 0x8914
_EXEC_NS_ORDER = ("cgroup", "ipc", "uts", "network", "mount")  # mount last: it hides the host's /proc
_PLANNING_ERRORS: dict[str, type[Exception]] = {
    e.__name__: e for e in (InvalidArgument, NotFound, Unsupported, Conflict, SystemError_)}


_LO_UP = struct.pack("16sH22x", b"lo", _IFF_UP_LOOPBACK_RUNNING)


def _planning_failed(w: int, e: BaseException) -> NoReturn:
    """An init that cannot plan itself reports why (ready() raises it as create's error: see _PLANNING_ERRORS)."""
    send_report(w, {"error": str(e) or type(e).__name__, "errno": 0, "exec": False, "kind": type(e).__name__})
    os._exit(1)


def _bring_up_loopback() -> None:
    """A new network namespace starts with lo down; runc and crun bring it up. The spawner runs this once per
    spare: _socket, not socket's class, whose enum conversions alone copy ~100 KB of pages per monitor."""
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, _LO_UP)
    finally:
        s.close()


def premake_netns() -> int:
    """Move this process into a new network namespace with lo up, ahead of a launch(); returns an fd of the
    namespace it left. Creating a network namespace is the dearest part of a clone (~0.9 ms here): a process
    that waits for work (the spawner, for its next spare monitor) pays it while idle, and launch() then clones
    the init straight into it (``netns_premade``)."""
    host = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        sc.unshare(sc.CLONE_NEWNET)
        _bring_up_loopback()
    except BaseException:
        os.close(host)
        raise
    return host


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            b = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _wait_child(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _connect_console(path: str) -> int:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise InvalidArgument(f"console socket {path}: {e.strerror}")
    return s.detach()


@dataclass(frozen=True)
class Launch:
    """An init that was cloned but may still be setting up; ``ready_fd`` reports how that went (see ready())."""

    id: str
    pid: int
    ready_fd: int


# what a pre-cloned init is born with; the mount namespace it makes once it knows its container (see preclone)
PRECLONE_FLAGS = sc.CLONE_NEWPID | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC


class PrecloneUnfit(Exception):
    """A pre-cloned init cannot be this container's (other namespaces, or it is gone): clone a fresh one."""


@dataclass(frozen=True)
class Preclone:
    """An init cloned before its container was known (BuiltinRuntime.preclone), waiting for it on ``go_w``; the
    other fds are this side's ends of its ready, cgroup and stdio pipes."""

    pid: int
    new_net: bool  # cloned into a network namespace of its own (else: its parent's, premade)
    go_w: int
    ready_r: int
    cg_w: int
    stdin_w: int
    stdout_r: int
    stderr_r: int

    def discard(self) -> None:
        """End it unused (the caller reaps it), close our ends."""
        with contextlib.suppress(OSError):
            os.kill(self.pid, 9)
        for fd in (self.go_w, self.ready_r, self.cg_w, self.stdin_w, self.stdout_r, self.stderr_r):
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass
class _Namespaces:
    """linux.namespaces: what the clone makes (``flags``), joins (``join``: path, flag; ``pid_join``)."""

    flags: int = 0
    join: list[tuple[str, int]] = field(default_factory=list)
    pid_join: str | None = None
    new_cgroupns: bool = False
    mount: bool = False


class BuiltinRuntime:
    """See api.Runtime for the life cycle."""

    def __init__(self, root: str, *, cgroup_parent: str = "/matou",
                 hierarchies: list[cgroups.Hierarchy] | None = None) -> None:
        """``hierarchies`` overrides the cgroup mounts found in /proc/self/mountinfo (tests use it to run the v2
        driver on the cgroup2 mount of a hybrid host)."""
        self.root = os.path.abspath(root)
        self.cgroup_parent = cgroup_parent
        os.makedirs(self.root, 0o711, exist_ok=True)
        self._bpf = BpfCache(os.path.join(self.root, ".seccomp"))
        self._hierarchies: list[cgroups.Hierarchy] | None = hierarchies
        self._available_caps = capmod.current_bounding()
        self._last_cap = capmod.last_cap()
        self._own_pidns = os.stat("/proc/self/ns/pid").st_ino
        self._known_profiles: list[tuple[dict[str, Any], str]] = []  # (seccomp section, its key): see warm()
        self._programs: dict[str, sc.SeccompProgram] = {}  # by key: see warm()
        # the cgroups of the containers this object launched: a monitor asks for OOM kills at every exit, and
        # loading state.json for that took ~0.3 ms of the exit path
        self._launched: dict[str, cgroups.Cgroup] = {}
        self._template = b""  # a default config.json (warm()): pre-cloned inits rehearse their planning on it

    def warm(self) -> None:
        """Look up what every create needs now, in a process that forks monitors later: the cgroup mounts, and
        Docker's default seccomp profile with its key and its program (ctypes buffers and all), so that a
        default container's init spends a dict comparison on it instead of serializing, hashing and loading it
        (the init's seccomp step went from 0.83 to 0.25 ms in the run timeline)."""
        self._hier()
        with contextlib.suppress(Exception):  # only a head start: _seccomp() works without it
            from matou.runtime.spec import default_spec

            spec = default_spec(args=["true"])
            self._template = json.dumps({**spec, "root": {"path": "/"}}).encode()
            section = spec["linux"].get("seccomp")
            if section:
                key = profile_key(section)
                prog = self._programs[key] = sc.SeccompProgram(self._bpf.get(section, key))  # its ctypes buffers too
                prog.origin = self._bpf.path(key)
                self._known_profiles.append((section, key))

    # ------------------------------------------------------------------------------------------------ helpers
    def _dir(self, container_id: str) -> str:
        return os.path.join(self.root, container_id)

    def _load(self, container_id: str) -> ContainerState:
        return ContainerState.load(self.root, container_id)

    def _hier(self) -> list[cgroups.Hierarchy]:
        if self._hierarchies is None:
            self._hierarchies = cgroups.detect()
        return self._hierarchies

    def _cgroup(self, st: ContainerState) -> cgroups.Cgroup:
        cg = st.cg()
        if cg is None:
            raise Unsupported(f"container {st.id} has no cgroup")
        return cg

    def _keep_seccomp(self, cid: str, prog: sc.SeccompProgram) -> None:
        """The container's program, for exec: a hard link to the cache's file when there is one (one syscall)."""
        dest = os.path.join(self._dir(cid), "seccomp.bpf")
        if prog.origin:
            with contextlib.suppress(OSError):
                os.link(prog.origin, dest)
                return
        atomic_write(dest, prog.bpf, sync=False)

    def _seccomp(self, section: dict[str, Any] | None) -> tuple[sc.SeccompProgram | None, str | None]:
        if not section:
            return None, None
        key = next((k for known, k in self._known_profiles if known == section), None) or profile_key(section)
        prog = self._programs.get(key)
        if prog is None:
            prog = sc.SeccompProgram(self._bpf.get(section, key))
            prog.origin = self._bpf.path(key)
        return prog, key

    # ------------------------------------------------------------------------------------------------ create
    def create(self, container_id: str, bundle: str, *, stdio: tuple[int, int, int] | None = None,
               console_fd: int | None = None, console_socket: str | None = None,
               pid_file: str | None = None) -> int:
        sock = _connect_console(console_socket) if console_socket else None
        try:
            launch = self._launch(container_id, bundle, stdio, console_fd, sock, pid_file)
        finally:
            if sock is not None:
                os.close(sock)
        self.ready(launch, reap=True)
        return launch.pid

    def create_tty(self, container_id: str, bundle: str, *, pid_file: str | None = None) -> tuple[int, int]:
        launch, master = self.launch_tty(container_id, bundle, pid_file=pid_file)
        try:
            self.ready(launch, reap=True)
        except BaseException:
            os.close(master)
            raise
        return launch.pid, master

    def launch(self, container_id: str, bundle: str, *, stdio: tuple[int, int, int] | None = None,
               on_cloned: Callable[[Launch], None] | None = None, netns_premade: int | None = None) -> Launch:
        """create() without waiting for the init to finish its setup: the caller gets the pid at once and
        checks ``ready()`` later (the monitor does so when asked to start), so the init's rootfs, masks and
        seccomp setup overlap the round trips between daemon and monitor. The caller reaps the init and
        deletes the container, also when ready() fails.

        ``on_cloned(launch)`` runs right after the clone, before the cgroups are made and joined and the
        state is written (3-5 ms here): a caller that hands the launch on can do so while that happens. The
        init does not report ready before it is in its cgroups and the state is on disk.

        ``netns_premade``: this process sits in a fresh network namespace (see premake_netns, which returned
        this fd of the one it left); a container that wants a new one gets it, any other goes back first."""
        return self._launch(container_id, bundle, stdio, None, None, None, on_cloned, netns_premade)

    def launch_tty(self, container_id: str, bundle: str, *, pid_file: str | None = None) -> tuple[Launch, int]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            launch = self._launch(container_id, bundle, None, None, theirs.fileno(), pid_file)
            theirs.close()
            _msg, fds, _flags, _addr = socket.recv_fds(ours, 4096, 1)
            if not fds:
                self.ready(launch, reap=True)  # raises the init's own error
                raise SystemError_("the container did not send its terminal")
            return launch, fds[0]
        finally:
            theirs.close()
            ours.close()

    def ready(self, launch: Launch, *, reap: bool = False) -> None:
        """Wait until the launched init is ready to exec, or raise its error (ExecError for a missing or
        non-executable program). On failure the runtime state goes; with ``reap`` the init is also reaped
        here and the container deleted (callers with their own reaping loop pass False, collect the exit
        status themselves and delete afterwards)."""
        try:
            msg = _read_all(launch.ready_fd)
        finally:
            os.close(launch.ready_fd)
        try:
            self._check_sync(msg, launch.pid, reap)
        except BaseException:
            with contextlib.suppress(OSError):
                os.kill(launch.pid, 9)
            if reap:
                _wait_child(launch.pid)
                with contextlib.suppress(Exception):
                    self.delete(launch.id, force=True)
            raise

    def launch_hinted(self, container_id: str, bundle: str, hint: dict[str, Any], *,
                      stdio: tuple[int, int, int] | None = None, on_cloned: Callable[[Launch], None] | None = None,
                      netns_premade: int | None = None) -> Launch:
        """launch() for a caller that already knows the parts of config.json the clone needs (``hint``, see
        spec.launch_hint): this process clones at once and never parses config.json; the init reads it,
        checks that it agrees with the hint, and plans itself before it builds its root filesystem. For the
        monitor, which lives as long as its container: the planning (JSON, seccomp, capabilities) would
        otherwise run in it, or in a helper process forked for it (a fork of a 20 MB Python process and its
        exit cost ~8 ms of CPU per container here)."""
        check_id(container_id)
        bundle = os.path.abspath(bundle)
        root = plan.rootfs_path(bundle, {"root": hint.get("root")})
        ns = self._namespaces(hint.get("namespaces") or [])
        cg = cgroups.Cgroup.plan(self._hier(), hint.get("cgroupsPath") or f"{self.cgroup_parent}/{container_id}")

        def child(fifo_fd: int, cg_r: int, w: int, new_net: bool) -> None:
            self._hinted_child(container_id, bundle, hint, ns, stdio, fifo_fd, cg_r, w, new_net)

        return self._clone_and_join(container_id, bundle, root, ns, cg, (hint.get("resources") or None), child,
                                    dict(hint.get("annotations") or {}), None, None, on_cloned, netns_premade)

    def _hinted_child(self, cid: str, bundle: str, hint: dict[str, Any], ns: _Namespaces,
                      stdio: tuple[int, int, int] | None, fifo_fd: int, cg_r: int, w: int, new_net: bool,
                      early_setup_done: bool = False, staged: rootfs.Staged | None = None) -> None:
        """The init of launch_hinted() and launch_precloned(): plan from config.json, then run."""
        try:
            cplan, pplan, seccomp = self._plan_from_config(cid, bundle, stdio, None, None, hint)
            if seccomp is not None:  # exec's processes load the same program
                self._keep_seccomp(cid, seccomp)
            cplan.fifo_fd, cplan.cgroup_wait_fd = fifo_fd, cg_r
            cplan.early_setup_done = early_setup_done
            cplan.staged = staged
            cplan.die_with_parent = True  # its parent is the caller, which starts it (the monitor)
            cplan.join_ns = [(os.open(path, os.O_RDONLY | os.O_CLOEXEC), flag) for path, flag in ns.join]
        except BaseException as e:  # noqa: BLE001 - reported through the ready pipe, as the init's errors are
            _planning_failed(w, e)
        self._child(cplan, pplan, w, new_net)

    # ------------------------------------------------------------------------------------------------ pre-clone
    def preclone(self, new_net: bool) -> Preclone:
        """Clone an init before there is a container for it: a spare monitor does this while it waits for a
        request, and launch_precloned() then gives it one. The clone of a ~14 MB Python process and its first
        steps (1.5-3 ms here) leave the run's path. Born in new pid, uts and ipc namespaces (and a network
        namespace unless ``new_net`` is false: then its parent's, premade); it makes its mount namespace once it
        knows its container, because only then is the container's root filesystem mounted. It exits if
        ``go_w`` closes first."""
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        pipes = [go_r, go_w]
        try:
            for _ in range(5):  # ready, cgroup, stdin, stdout, stderr
                pipes += os.pipe2(os.O_CLOEXEC)
            _, _, ready_r, ready_w, cg_r, cg_w, in_r, in_w, out_r, out_w, err_r, err_w = pipes
            ours = (go_w, ready_r, cg_w, in_w, out_r, err_r)

            def child() -> None:
                for fd in ours:
                    os.close(fd)
                self._precloned_child(go_r, ready_w, cg_r, (in_r, out_w, err_w), new_net)

            pid = self._clone(PRECLONE_FLAGS | (sc.CLONE_NEWNET if new_net else 0), None, child)
        except BaseException:
            for fd in pipes:
                os.close(fd)
            raise
        for fd in (go_r, ready_w, cg_r, in_r, out_w, err_w):
            os.close(fd)
        return Preclone(pid, new_net, go_w, ready_r, cg_w, in_w, out_r, err_r)

    def _precloned_child(self, go_r: int, w: int, cg_r: int, stdio: tuple[int, int, int], new_net: bool) -> None:
        """A pre-cloned init: wait for its container ({"id", "bundle", "hint", "stdin"}), then be its init."""
        # while it waits: the steps that do not depend on its container, and a dry run of its planning, which
        # copies the pages the real one writes (1.9 -> 1.2 ms of planning after "go" in the run timeline)
        early_setup()
        staged: rootfs.Staged | None = None
        if self._template:
            with contextlib.suppress(Exception):
                rehearsed, _p, _s = self._plan_from_config("0" * 64, "/", None, None, None,
                                                           cfg=json.loads(self._template))
                # and the default config's file systems, made now and attached after "go" (its namespaces are
                # this process's already: pid for /proc, ipc for /dev/mqueue, network for /sys)
                staged = rootfs.stage(rehearsed.mounts, rehearsed.devices if rehearsed.setup_dev else [],
                                      rehearsed.readonly, rehearsed.masked)
        line = b""
        while not line.endswith(b"\n"):
            chunk = os.read(go_r, 65536)
            if not chunk:
                os._exit(0)  # its monitor went away unused
            line += chunk
        os.close(go_r)
        try:
            go = json.loads(line)
            cid, bundle, hint = go["id"], go["bundle"], go["hint"]
            ns = self._namespaces(hint.get("namespaces") or [])
            in_r, out_w, err_w = stdio
            if not go.get("stdin"):  # stdin is /dev/null, as with a fresh clone
                os.close(in_r)
                in_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            sc.unshare(sc.CLONE_NEWNS)  # a copy of the host's mounts now, with the container's root filesystem
            fifo_fd = os.open(os.path.join(self._dir(cid), FIFO), os.O_PATH | os.O_CLOEXEC)
        except BaseException as e:  # noqa: BLE001
            _planning_failed(w, e)
        joins_net = any(flag == sc.CLONE_NEWNET for _path, flag in ns.join)
        if staged is not None:
            staged.park_at = self._dir(cid)  # the state directory: outside the container's root
            if joins_net:
                staged.drop("sysfs")
        self._hinted_child(cid, bundle, hint, ns, (in_r, out_w, err_w), fifo_fd, cg_r, w, new_net and not joins_net,
                           early_setup_done=True, staged=staged)

    def premake_cgroup(self, path: str) -> cgroups.Cgroup | None:
        """Make the cgroup directories at ``path`` before the container is launched, for launch_precloned(): a
        monitor knows the container's id from its request, some 3 ms before "go", and the init waited for them
        after it (the daemon's go -> the init ready: 10.1 -> 8.7 ms in the run timeline). Only the directories:
        moving the init in while limits and device rules are written could meet half a rule set, and moving it
        took the monitor long enough to delay "go". None if they could not be made (launched as without)."""
        try:
            cg = cgroups.Cgroup.plan(self._hier(), path)
            cg.make(self._hier(), None)
        except Exception:  # noqa: BLE001
            return None
        return cg

    @staticmethod
    def drop_premade(pre: Preclone, premade: cgroups.Cgroup) -> None:
        """Discard ``pre`` and the cgroup directories premake_cgroup() made for its container."""
        pre.discard()
        _wait_child(pre.pid)
        with contextlib.suppress(Exception):
            premade.destroy()

    def launch_precloned(self, pre: Preclone, container_id: str, bundle: str, hint: dict[str, Any], *,
                         open_stdin: bool, on_cloned: Callable[[Launch], None] | None = None,
                         premade: cgroups.Cgroup | None = None) -> Launch:
        """launch_hinted() with an init cloned ahead (preclone()). Raises PrecloneUnfit, having done nothing, if
        the hint asks for other namespaces than it has (the host's pid, ipc, uts or network; joined ones but the
        network) or if it is gone: the caller then discards it and launches fresh. ``premade``: what
        premake_cgroup() returned; used if the hint's cgroupsPath is its path, removed otherwise."""
        check_id(container_id)
        bundle = os.path.abspath(bundle)
        ns = self._namespaces(hint.get("namespaces") or [])
        flags = ns.flags & ~(sc.CLONE_NEWNS | sc.CLONE_NEWNET)
        has_net = bool(ns.flags & sc.CLONE_NEWNET) or any(flag == sc.CLONE_NEWNET for _p, flag in ns.join)
        if (flags != PRECLONE_FLAGS or not ns.mount or not has_net or ns.pid_join
                or any(flag != sc.CLONE_NEWNET for _p, flag in ns.join)):
            raise PrecloneUnfit("the container's namespaces differ from the pre-cloned init's")
        state_dir = self._new_state_dir(container_id)
        try:
            os.mkfifo(os.path.join(state_dir, FIFO), 0o622)
            go = {"id": container_id, "bundle": bundle, "hint": hint, "stdin": open_stdin}
            os.write(pre.go_w, json.dumps(go).encode() + b"\n")  # first: what follows overlaps its work
        except BaseException as e:
            rmtree(state_dir)
            if isinstance(e, OSError) and e.errno == errno.EPIPE:
                raise PrecloneUnfit("the pre-cloned init is gone") from None
            raise
        os.close(pre.go_w)
        try:
            root = plan.rootfs_path(bundle, {"root": hint.get("root")})
            cg = cgroups.Cgroup.plan(self._hier(), hint.get("cgroupsPath") or f"{self.cgroup_parent}/{container_id}")
        except BaseException:  # the init fails on the same (its report goes unread): end it, leave nothing
            self._undo_launch(pre.pid, premade, state_dir)
            os.close(pre.ready_r)
            os.close(pre.cg_w)
            raise
        fits = premade is not None and premade.dirs == cg.dirs
        try:
            return self._join_cloned(Launch(container_id, pre.pid, pre.ready_r), pre.cg_w, bundle, root, cg,
                                     hint.get("resources") or None, dict(hint.get("annotations") or {}), None, None,
                                     on_cloned, made_cg=fits, born_inside=False)
        finally:
            if premade is not None and not fits:  # another path: the container's own are made
                with contextlib.suppress(Exception):
                    premade.destroy()

    def _launch(self, cid: str, bundle: str, stdio: tuple[int, int, int] | None, console_fd: int | None,
                console_sock: int | None, pid_file: str | None,
                on_cloned: Callable[[Launch], None] | None = None, netns_premade: int | None = None) -> Launch:
        check_id(cid)
        bundle = os.path.abspath(bundle)
        cfg = plan.load_config(bundle)
        linux = cfg.get("linux") or {}
        ns = self._namespaces(linux.get("namespaces") or [])
        cg = cgroups.Cgroup.plan(self._hier(), linux.get("cgroupsPath") or f"{self.cgroup_parent}/{cid}")
        cplan, pplan, seccomp = self._plan_from_config(cid, bundle, stdio, console_fd, console_sock, cfg=cfg,
                                                       planned=(ns, cg))
        join_fds: list[int] = []

        def child(fifo_fd: int, cg_r: int, w: int, new_net: bool) -> None:
            cplan.fifo_fd, cplan.cgroup_wait_fd = fifo_fd, cg_r
            cplan.join_ns = [(fd, flag) for fd, (_path, flag) in zip(join_fds, ns.join, strict=True)]
            self._child(cplan, pplan, w, new_net)

        try:
            for path, _flag in ns.join:  # opened here: a bad path fails the create, not the init
                join_fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
            return self._clone_and_join(cid, bundle, cplan.rootfs, ns, cg, linux.get("resources"), child,
                                        dict(cfg.get("annotations") or {}), seccomp, pid_file, on_cloned,
                                        netns_premade)
        finally:
            for fd in join_fds:
                os.close(fd)

    def _plan_from_config(self, cid: str, bundle: str, stdio: tuple[int, int, int] | None, console_fd: int | None,
                          console_sock: int | None, hint: dict[str, Any] | None = None,
                          cfg: dict[str, Any] | None = None, planned: tuple[_Namespaces, cgroups.Cgroup] | None = None,
                          ) -> tuple[ContainerPlan, ProcessPlan, sc.SeccompProgram | None]:
        """config.json (or ``cfg``, loaded from it) -> what the init executes (without its fds: fifo, cgroup
        pipe, namespaces to join). All validation of the config happens here. With ``hint``, config.json must
        agree with it. ``planned``: its namespaces and cgroup, if the caller has them already."""
        if cfg is None:
            cfg = plan.load_config(bundle)
        linux = cfg.get("linux") or {}
        if hint is not None:
            for key, ours in (("namespaces", linux.get("namespaces")), ("cgroupsPath", linux.get("cgroupsPath")),
                              ("resources", linux.get("resources")), ("root", cfg.get("root"))):
                if (ours or None) != (hint.get(key) or None):
                    raise InvalidArgument(f"config.json's {key} is not what the runtime was told at launch")
        root = plan.rootfs_path(bundle, cfg)
        proc = cfg["process"]
        if proc.get("terminal") and console_fd is None and console_sock is None:
            raise InvalidArgument("process.terminal is true: a console (pty slave or console socket) is needed")
        ns, cg = planned or (self._namespaces(linux.get("namespaces") or []),
                             cgroups.Cgroup.plan(self._hier(), linux.get("cgroupsPath") or f"{self.cgroup_parent}/{cid}"))
        seccomp, _key = self._seccomp(linux.get("seccomp"))
        pplan = plan.process_plan(proc, seccomp, self._available_caps, self._last_cap)
        pplan.stdio, pplan.console_fd, pplan.console_sock = stdio, console_fd, console_sock
        mounts = plan.mounts(cfg)
        cplan = ContainerPlan(
            id=cid, rootfs=root, readonly_root=bool((cfg.get("root") or {}).get("readonly")),
            root_propagation=plan.root_propagation(linux), mount_ns=ns.mount, mounts=mounts,
            devices=plan.devices(linux),
            setup_dev=not any(m.destination.rstrip("/") == "/dev" and m.is_bind for m in mounts),
            cgroup_procs=[], cgroup_binds=[(d, os.path.basename(mp)) for mp, d in cg.dirs.items()],
            cgroup_v2=cg.version == 2, new_cgroupns=ns.new_cgroupns, join_ns=[], hostname=cfg.get("hostname"),
            domainname=cfg.get("domainname"), sysctls=plan.sysctls(linux),
            masked=list(linux.get("maskedPaths") or []), readonly=list(linux.get("readonlyPaths") or []),
            fifo_fd=-1, cgroup_wait_fd=-1,
        )
        return cplan, pplan, seccomp

    @staticmethod
    def _namespaces(namespaces: list[dict[str, Any]]) -> _Namespaces:
        ns = _Namespaces()
        for entry in namespaces:
            kind = entry.get("type", "")
            flag = sc.NS_FLAGS.get(kind)
            if flag is None:
                raise InvalidArgument(f"unknown namespace type {kind!r}")
            if kind == "user":
                raise Unsupported("user namespaces are not supported by the built-in runtime")
            if kind == "mount":
                ns.mount = True
            if entry.get("path"):
                if kind == "pid":
                    ns.pid_join = entry["path"]
                else:
                    ns.join.append((entry["path"], flag))
            elif kind == "cgroup":
                ns.new_cgroupns = True  # after joining the cgroup, so its root is the container's
            else:
                ns.flags |= flag
        return ns

    def _clone_and_join(self, cid: str, bundle: str, root: str, ns: _Namespaces, cg: cgroups.Cgroup,
                        resources: dict[str, Any] | None, child: Callable[[int, int, int, bool], None],
                        annotations: dict[str, str], seccomp: sc.SeccompProgram | None, pid_file: str | None,
                        on_cloned: Callable[[Launch], None] | None, netns_premade: int | None) -> Launch:
        """Clone the init (``child(fifo_fd, cgroup_wait_fd, ready_w, new_net)`` runs in it), then make its
        cgroups and move it in while it builds its root filesystem, and write the state (_join_cloned)."""
        state_dir = self._new_state_dir(cid)
        opened: list[int] = []
        made_cg = False
        pid = 0
        try:
            fifo = os.path.join(state_dir, FIFO)
            os.mkfifo(fifo, 0o622)
            fifo_fd = os.open(fifo, os.O_PATH | os.O_CLOEXEC)
            opened.append(fifo_fd)
            flags = ns.flags
            new_net = bool(flags & sc.CLONE_NEWNET)
            if netns_premade is not None:
                if new_net:  # the namespace this process sits in is the container's: clone into it
                    flags &= ~sc.CLONE_NEWNET
                    new_net = False
                else:  # host network, or one joined by path: leave the premade one first
                    sc.setns(netns_premade, sc.CLONE_NEWNET)
            pid_join: int | None = None
            if ns.pid_join:
                pid_join = os.open(ns.pid_join, os.O_RDONLY | os.O_CLOEXEC)
                opened.append(pid_join)
            r, w = os.pipe2(os.O_CLOEXEC)
            cg_r, cg_w = os.pipe2(os.O_CLOEXEC)
            opened += [r, w, cg_r, cg_w]
            into_fd: int | None = None
            if cg.version == 2:
                # pure v2: born inside the cgroup (clone3 CLONE_INTO_CGROUP), no migration at all
                made_cg = True
                cg.make(self._hier(), resources)
                into_fd = os.open(next(iter(cg.dirs.values())), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                opened.append(into_fd)
            pid = self._clone(flags, pid_join, lambda: child(fifo_fd, cg_r, w, new_net), into_fd)
            for fd in (r, cg_w):
                opened.remove(fd)  # _join_cloned's now
        except BaseException:
            self._undo_launch(pid, cg if made_cg else None, state_dir)
            raise
        finally:
            for fd in opened:
                with contextlib.suppress(OSError):
                    os.close(fd)
        return self._join_cloned(Launch(cid, pid, r), cg_w, bundle, root, cg, resources, annotations, seccomp,
                                 pid_file, on_cloned, made_cg=made_cg, born_inside=into_fd is not None)

    @staticmethod
    def _undo_launch(pid: int, cg: cgroups.Cgroup | None, state_dir: str) -> None:
        """What a failed launch leaves: end and reap its init (if cloned), remove its cgroups (if made), its state."""
        if pid > 0:
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
            _wait_child(pid)
        if cg is not None:
            with contextlib.suppress(Exception):
                cg.destroy()
        rmtree(state_dir)

    def _new_state_dir(self, cid: str) -> str:
        state_dir = self._dir(cid)
        try:
            os.mkdir(state_dir, 0o711)
        except FileExistsError:
            raise Conflict(f"container with id {cid!r} already exists") from None
        return state_dir

    def _join_cloned(self, launch: Launch, cg_w: int, bundle: str, root: str, cg: cgroups.Cgroup,
                     resources: dict[str, Any] | None, annotations: dict[str, str],
                     seccomp: sc.SeccompProgram | None, pid_file: str | None,
                     on_cloned: Callable[[Launch], None] | None, *, made_cg: bool, born_inside: bool) -> Launch:
        """After the clone (``cg_w`` and ``launch.ready_fd`` are ours to close): tell ``on_cloned``, then make the
        cgroups (unless ``made_cg``) and move the init in while it builds its rootfs, and write the state. On
        failure the init is killed and reaped and nothing is left; if it had ended first, its own report is what
        is raised."""
        cid, pid = launch.id, launch.pid
        try:
            try:
                if on_cloned is not None:
                    on_cloned(launch)
                # v1: the child builds its rootfs meanwhile; it needs the directories ("d") before its
                # /sys/fs/cgroup mount and to be inside them ("1") before it execs. The state goes to disk
                # before "1": whoever sees the init ready may start it, which reads the state.
                if not made_cg:
                    made_cg = True
                    cg.make(self._hier(), None)
                os.write(cg_w, b"d")  # the directories are all the init's /sys/fs/cgroup mount needs
                if not born_inside:
                    if resources:
                        cg.apply(resources)  # limits (and v1 device rules) before it joins
                    for f in cg.procs_files():
                        cgroups.write(f, str(pid))
                st = ContainerState(
                    id=cid, pid=pid, start_time=(proc_stat(pid) or ("", 0))[1], bundle=bundle, rootfs=root,
                    created=datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
                    annotations=annotations, cgroup=cg.to_json(), seccomp_key=None,
                )
                if seccomp is not None:
                    self._keep_seccomp(cid, seccomp)
                st.save(self._dir(cid))
                self._launched[cid] = cg
                if pid_file:
                    atomic_write(pid_file, str(pid).encode(), sync=False)
                os.write(cg_w, b"1")
            finally:
                os.close(cg_w)
            return launch
        except BaseException as e:
            self._undo_launch(pid, cg if made_cg else None, self._dir(cid))
            try:
                if isinstance(e, OSError) and e.errno in (errno.EPIPE, errno.ESRCH):
                    # the init ended first (launch_hinted: config.json was invalid); its report says why
                    self._check_sync(_read_all(launch.ready_fd), pid, reap=False)
            finally:
                os.close(launch.ready_fd)
            raise

    @staticmethod
    def _child(c: ContainerPlan, p: ProcessPlan, w: int, new_net: bool) -> None:
        if new_net:
            with contextlib.suppress(OSError):
                _bring_up_loopback()
        run_container_init(c, p, w)

    def _clone(self, flags: int, pid_ns_fd: int | None, child: Any, cgroup_fd: int | None = None) -> int:
        """clone(); with pid_ns_fd, first point our pid_for_children there (the child lands in that namespace as
        our own child), and back afterwards; with cgroup_fd, clone3 straight into that cgroup v2 directory."""
        own = None
        if pid_ns_fd is not None:
            own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            sc.setns(pid_ns_fd, sc.CLONE_NEWPID)
        try:
            pid = sc.clone(flags) if cgroup_fd is None else sc.clone_into_cgroup(flags, cgroup_fd)
            if pid == 0:
                try:
                    child()
                finally:
                    os._exit(1)
            return pid
        finally:
            if own is not None:
                sc.setns(own, sc.CLONE_NEWPID)
                os.close(own)

    @staticmethod
    def _check_sync(msg: bytes, pid: int, reap: bool = True) -> None:
        try:
            reply = json.loads(msg.splitlines()[0]) if msg else {}
        except ValueError:
            reply = {"error": msg.decode(errors="replace")}
        if reply.get("ok"):
            return
        if reap:
            _wait_child(pid)
        if not reply:
            raise SystemError_("container init exited before it was ready")
        if reply.get("exec"):
            raise ExecError(reply["error"], int(reply.get("errno") or 0))
        planning_error = _PLANNING_ERRORS.get(reply.get("kind", ""))
        if planning_error is not None:  # config.json was read in the init (launch_hinted): same errors as create
            raise planning_error(reply.get("error") or "invalid configuration")
        raise SystemError_(f"container init: {reply.get('error')}")

    # ------------------------------------------------------------------------------------------------ start
    def start(self, container_id: str, opened: tuple[int, int] | None = None) -> None:
        """Let the init exec and wait until it has (or failed to). ``opened``: what open_start() returned."""
        fd, pidfd = opened or self.open_start(container_id)
        fifo = os.path.join(self._dir(container_id), FIFO)
        data = b""
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            poller.register(pidfd, select.POLLIN)
            done = False
            while not done:
                for rfd, _ev in poller.poll():
                    if rfd == fd:
                        chunk = os.read(fd, 4096)
                        if chunk:
                            data += chunk
                        elif data:
                            done = True  # EOF after the handshake: execve closed the fifo
                    else:
                        with contextlib.suppress(BlockingIOError):
                            data += _read_all(fd)
                        done = True
        finally:
            os.close(fd)
            os.close(pidfd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fifo)
        if not data.startswith(b"0"):
            raise SystemError_(f"container {container_id}: init exited before start")
        if len(data) > 1:
            try:
                err = json.loads(data[1:])
            except ValueError:
                err = {"error": data[1:].decode(errors="replace"), "errno": 0}
            raise ExecError(err.get("error", "exec failed"), int(err.get("errno") or 0))

    def open_start(self, container_id: str) -> tuple[int, int]:
        """The first half of start(): open the exec fifo's reading end (and a pidfd of the init). From here on
        the init execs as soon as it is ready, without waiting for this process to be woken by its report and
        open the fifo then: a caller that also waits for ready() opens first (~0.5 ms of every run here)."""
        st = self._load(container_id)
        fifo = os.path.join(self._dir(container_id), FIFO)
        if not os.path.exists(fifo):
            if st.alive():
                raise Conflict(f"container {container_id} is already running")
            raise Conflict(f"cannot start container {container_id}: it has stopped")
        if not st.alive():
            raise Conflict(f"cannot start container {container_id}: its init has exited")
        try:
            pidfd = sc.pidfd_open(st.pid)
        except OSError:
            raise Conflict(f"cannot start container {container_id}: its init has exited")
        try:
            return os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), pidfd
        except BaseException:
            os.close(pidfd)
            raise

    # ------------------------------------------------------------------------------------------------ queries
    def state(self, container_id: str) -> dict[str, Any]:
        st = self._load(container_id)
        return st.oci(self._dir(container_id))

    def list(self) -> list[dict[str, Any]]:
        out = []
        for cid in list_ids(self.root):
            with contextlib.suppress(NotFound):
                out.append(self.state(cid))
        return out

    def pids(self, container_id: str) -> list[int]:
        st = self._load(container_id)
        cg = st.cg()
        if cg is None:
            return [st.pid] if st.alive() else []
        return cg.pids()

    def stats(self, container_id: str) -> dict[str, Any]:
        st = self._load(container_id)
        out = self._cgroup(st).stats()
        out["id"] = container_id
        out["system_cpu_usage"] = cgroups.system_cpu_usage()
        out["online_cpus"] = os.cpu_count() or 1
        return out

    def oom_killed(self, container_id: str) -> bool:
        cg = self._launched.get(container_id) or self._load(container_id).cg()
        return cg is not None and cg.oom_kills() > 0

    # ------------------------------------------------------------------------------------------------ control
    def kill(self, container_id: str, sig: int, all: bool = False) -> None:
        st = self._load(container_id)
        if not st.alive():
            raise Conflict(f"container {container_id} is not running")
        if all and st.cg() is not None:
            for pid in self._cgroup(st).pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            return
        try:
            pidfd = sc.pidfd_open(st.pid)
        except OSError:
            raise Conflict(f"container {container_id} is not running")
        try:
            if st.alive():  # the pidfd now pins this exact process
                sc.pidfd_send_signal(pidfd, sig)
        finally:
            os.close(pidfd)

    def pause(self, container_id: str) -> None:
        st = self._load(container_id)
        if st.status(self._dir(container_id)) != "running":
            raise Conflict(f"container {container_id} is not running")
        self._cgroup(st).freeze(True)

    def resume(self, container_id: str) -> None:
        st = self._load(container_id)
        if st.status(self._dir(container_id)) != "paused":
            raise Conflict(f"container {container_id} is not paused")
        self._cgroup(st).freeze(False)

    def update(self, container_id: str, resources: dict[str, Any]) -> None:
        st = self._load(container_id)
        try:
            self._cgroup(st).apply(resources)
        except OSError as e:
            raise InvalidArgument(f"update {container_id}: {e.strerror}")

    def delete(self, container_id: str, force: bool = False) -> None:
        self._launched.pop(container_id, None)
        st = self._load(container_id)
        state_dir = self._dir(container_id)
        status = st.status(state_dir)
        if status in ("running", "paused") and not force:
            raise Conflict(f"cannot delete container {container_id} that is not stopped: {status}")
        cg = st.cg()
        if status != "stopped":
            self._kill_and_wait(st, cg)
        if cg is not None:
            leftovers = cg.pids()  # a shared pid namespace leaves other processes behind
            if leftovers:
                for pid in leftovers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, 9)
                if cg.frozen():
                    cg.freeze(False)
            cg.destroy()
        rmtree(state_dir)

    def _kill_and_wait(self, st: ContainerState, cg: cgroups.Cgroup | None) -> None:
        try:
            pidfd = sc.pidfd_open(st.pid)
        except OSError:
            return
        try:
            if not st.alive():
                return
            sc.pidfd_send_signal(pidfd, 9)
            if cg is not None and cg.frozen():
                cg.freeze(False)
            if not select.select([pidfd], [], [], 10)[0]:
                raise SystemError_(f"container {st.id}: init did not die after SIGKILL")
        finally:
            os.close(pidfd)

    # ------------------------------------------------------------------------------------------------ exec
    def exec(self, container_id: str, process: dict[str, Any], *, stdio: tuple[int, int, int] | None = None,
             console_fd: int | None = None, console_socket: str | None = None) -> int:
        sock = _connect_console(console_socket) if console_socket else None
        try:
            return self._exec(container_id, process, stdio, console_fd, sock)
        finally:
            if sock is not None:
                os.close(sock)

    def exec_tty(self, container_id: str, process: dict[str, Any]) -> tuple[int, int]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = self._exec(container_id, process, None, None, theirs.fileno())
            theirs.close()
            _msg, fds, _flags, _addr = socket.recv_fds(ours, 4096, 1)
            if not fds:
                raise SystemError_("the exec'd process did not send its terminal")
            return pid, fds[0]
        finally:
            theirs.close()
            ours.close()

    def _exec(self, cid: str, process: dict[str, Any], stdio: tuple[int, int, int] | None,
              console_fd: int | None, console_sock: int | None) -> int:
        st = self._load(cid)
        status = st.status(self._dir(cid))
        if status not in ("running", "created"):
            raise Conflict(f"cannot exec in a {status} container")
        if process.get("terminal") and console_fd is None and console_sock is None:
            raise InvalidArgument("process.terminal is true: a console (pty slave or console socket) is needed")
        seccomp = None
        with contextlib.suppress(FileNotFoundError):  # the init's program, written before it got ready
            with open(os.path.join(self._dir(cid), "seccomp.bpf"), "rb") as f:
                seccomp = sc.SeccompProgram(f.read())
        pplan = plan.process_plan(process, seccomp, self._available_caps, self._last_cap)
        pplan.stdio, pplan.console_fd, pplan.console_sock = stdio, console_fd, console_sock
        opened: list[int] = []
        pid = 0
        try:
            ns_fds: list[tuple[int, int]] = []
            pid_ns: int | None = None
            for kind in ("pid",) + _EXEC_NS_ORDER:
                name = sc.NS_PROC_NAME[kind]
                theirs = f"/proc/{st.pid}/ns/{name}"
                try:
                    if os.stat(theirs).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                        continue
                    fd = os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                opened.append(fd)
                if kind == "pid":
                    pid_ns = fd
                else:
                    ns_fds.append((fd, sc.NS_FLAGS[kind]))
            if not st.alive():  # the fds might belong to a recycled pid
                raise Conflict(f"container {cid} is not running")
            cg = st.cg()
            into_fd = None
            if cg is not None and cg.version == 2:
                into_fd = os.open(next(iter(cg.dirs.values())), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                opened.append(into_fd)
            xplan = ExecPlan(cgroup_procs=cg.procs_files() if cg and into_fd is None else [], ns_fds=ns_fds)
            r, w = os.pipe2(os.O_CLOEXEC)
            opened += [r, w]
            pid = self._clone(0, pid_ns, lambda: run_exec_init(xplan, pplan, w), into_fd)
            os.close(w)
            opened.remove(w)
            msg = _read_all(r)
            if msg:
                self._check_sync(msg, pid)
            return pid
        except BaseException:
            if pid > 0 and proc_stat(pid) is not None:
                with contextlib.suppress(OSError):
                    os.kill(pid, 9)
                _wait_child(pid)
            raise
        finally:
            for fd in opened:
                with contextlib.suppress(OSError):
                    os.close(fd)

