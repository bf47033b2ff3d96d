"""What runs in the cloned child, from clone() to execve(): runc's standard_init_linux.go order, in Python.

Why no re-exec: the callers (the per-container monitor, the runtime CLI) are small single-threaded processes, so a
plain clone() with namespace flags is safe there and saves an interpreter start (~17 ms) per container. Everything
that can fail on bad input is parsed in the parent into the plan objects below; the child only makes system calls.

Protocol with the parent: ``sync_fd`` (a CLOEXEC pipe) receives one JSON line, ``{"ok": true}`` once the process is
ready to exec, or ``{"error": ..., "errno": ..., "exec": bool}``; the parent reads to EOF. A container init then
blocks opening the exec fifo for writing until ``start`` opens it for reading; the init writes "0", and if execve
fails, the error text, which ``start`` reads until EOF (execve closing the CLOEXEC fifo is the success signal).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import signal
import socket
import stat
from dataclasses import dataclass, field

from matou.runtime.linux import rootfs
from matou.runtime.linux import syscalls as sc
from matou.runtime.linux.caps import CapSets
from matou.runtime.linux.rootfs import Device, Mount, Staged

TYPE_CHECKING = False  # typing costs the spawner (and every fork of it) ~0.5 MB: annotations only
if TYPE_CHECKING:
    from typing import NoReturn

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EXIT_NOT_FOUND = 127
EXIT_CANNOT_EXEC = 126


@dataclass
class ProcessPlan:
    """The user process, fully resolved to numbers and fds."""

    args: list[str]
    env: list[str]
    cwd: str
    uid: int
    gid: int
    additional_gids: list[int]
    umask: int | None
    caps: CapSets | None
    no_new_privs: bool
    rlimits: list[tuple[int, int, int]]
    oom_score_adj: int | None
    seccomp: sc.SeccompProgram | None
    stdio: tuple[int, int, int] | None = None
    console_fd: int | None = None  # a pty slave the caller made: becomes the controlling tty and stdio
    console_sock: int | None = None  # a unix socket: create the pty inside the container, send its master here


@dataclass
class ContainerPlan:
    id: str
    rootfs: str
    readonly_root: bool
    root_propagation: int
    mount_ns: bool
    mounts: list[Mount]
    devices: list[Device]
    setup_dev: bool
    cgroup_procs: list[str]
    cgroup_binds: list[tuple[str, str]]
    cgroup_v2: bool
    new_cgroupns: bool
    join_ns: list[tuple[int, int]]
    hostname: str | None
    domainname: str | None
    sysctls: dict[str, str]
    masked: list[str]
    readonly: list[str]
    fifo_fd: int
    cgroup_wait_fd: int  # the parent writes one byte once it has moved us into our cgroups (see wait_cgroup)
    parent_pid: int = field(default_factory=os.getpid)
    early_setup_done: bool = False  # early_setup() ran already (a pre-cloned init, while it waited)
    # killed if its parent (the monitor) dies before the exec: nobody would ever start it, and it would wait for
    # that forever, holding its cgroups and mounts
    die_with_parent: bool = False
    staged: Staged | None = None  # file systems a pre-cloned init made ahead (rootfs.stage)


@dataclass
class ExecPlan:
    """Joining a running container: its cgroups, then its namespaces (mount last)."""

    cgroup_procs: list[str]
    ns_fds: list[tuple[int, int]]


class _ExecFailure(Exception):
    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err
        self.message = message


def send_report(fd: int, obj: dict) -> None:
    """One JSON line to the parent's sync pipe (the runtime uses it too, for errors before the init runs)."""
    data = (json.dumps(obj) + "\n").encode()
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(fd, data):]


def _reset_signals() -> None:
    """Unblock everything and give every ignored signal its default action: ignored signals stay ignored across
    execve, and this process inherits CPython's (SIGPIPE, SIGXFSZ), the monitor's (SIGINT, SIGTERM, SIGHUP,
    SIGTTIN, SIGTTOU) and whatever its ancestors ignored, possibly a signal neither the signal module nor glibc
    will touch (glibc's 32 and 33): so the kernel's own list, and the raw system call. Caught signals need
    nothing: execve resets them."""
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    with open("/proc/self/status", "rb") as f:
        ignored = next((int(line.split()[1], 16) for line in f if line.startswith(b"SigIgn:")), 0)
    for n in range(1, 65):
        if ignored >> (n - 1) & 1 and n not in (signal.SIGKILL, signal.SIGSTOP):
            sc.default_signal(n)


def early_setup() -> None:
    """The first steps of every container init without a console, whatever its container: signals at their
    defaults, a session of its own. A pre-cloned init takes them while it waits for its container."""
    _reset_signals()
    os.setsid()


def _stdio(p: ProcessPlan) -> None:
    if p.stdio is not None:
        fds = list(p.stdio)
        # dup everything above 2 first so that e.g. (1, 0, 2) can't clobber itself
        tmp = [os.dup(fd) if fd >= 0 else -1 for fd in fds]
        for target, fd in enumerate(tmp):
            if fd >= 0:
                os.dup2(fd, target)
                os.close(fd)


def _console_from_fd(slave: int) -> None:
    os.setsid()
    sc.ioctl_int(slave, sc.TIOCSCTTY, 0)
    for target in (0, 1, 2):
        os.dup2(slave, target)


def _console_from_socket(sock_fd: int) -> str:
    """runc's --console-socket protocol: a new pty from the container's own devpts, master sent over SCM_RIGHTS."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    sc.ioctl_ptr_int(master, sc.TIOCSPTLCK, 0)
    n = sc.ioctl_ptr_int(master, sc.TIOCGPTN)
    path = f"/dev/pts/{n}"
    sock = socket.socket(fileno=os.dup(sock_fd))
    try:
        socket.send_fds(sock, [path.encode()], [master])
    finally:
        sock.close()
        os.close(master)
        os.close(sock_fd)
    slave = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    _console_from_fd(slave)
    os.close(slave)
    return path


def _bind_console_fd(root: str, fd: int) -> None:
    """Bind the caller's pty slave to /dev/console. The fd's mount belongs to the caller's namespace, which
    mount(2) refuses as a source; its path resolves to the same node in our copy of that namespace."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
        same = os.stat(path).st_rdev == os.fstat(fd).st_rdev
    except OSError:
        return
    if same:
        rootfs.bind_console(root, path)


def _lookup_home(uid: int) -> str:
    try:
        with open("/etc/passwd", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 6 and parts[2] == str(uid):
                    return parts[5] or "/"
    except OSError:
        pass
    return "/"


def look_path(name: str, env: list[str]) -> str:
    """Go's exec.LookPath against process.env, inside the container's root; errors carry Docker's wording."""
    if not name:
        raise _ExecFailure(errno.ENOENT, 'exec: "": executable file not found in $PATH')
    if "/" in name:
        try:
            st = os.stat(name)
        except OSError as e:
            raise _ExecFailure(e.errno or errno.ENOENT, f'exec: "{name}": stat {name}: {os.strerror(e.errno or 2).lower()}')
        if stat.S_ISDIR(st.st_mode):
            raise _ExecFailure(errno.EACCES, f'exec: "{name}": is a directory')
        if not os.access(name, os.X_OK):
            raise _ExecFailure(errno.EACCES, f'exec: "{name}": permission denied')
        return name
    path = DEFAULT_PATH
    for kv in env:
        if kv.startswith("PATH="):
            path = kv[5:]
    for d in path.split(":"):
        cand = os.path.join(d or ".", name)
        try:
            st = os.stat(cand)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(cand, os.X_OK):
            return cand
    raise _ExecFailure(errno.ENOENT, f'exec: "{name}": executable file not found in $PATH')


def _finish_process(p: ProcessPlan) -> tuple[str, dict[str, str]]:
    """rlimits, no_new_privs, seccomp, user, capabilities, cwd: runc's finalizeNamespace and what surrounds it."""
    for res, soft, hard in p.rlimits:
        try:
            resource.setrlimit(res, (soft, hard))
        except (OSError, ValueError) as e:
            raise OSError(errno.EPERM, f"setrlimit({res}, {soft}, {hard}): {e}")
    if p.oom_score_adj is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(p.oom_score_adj))
    if p.no_new_privs:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    if p.seccomp is not None and not p.no_new_privs:
        p.seccomp.load()  # needs CAP_SYS_ADMIN without no_new_privs: before the caps are dropped
    sc.close_range_cloexec(3)
    if p.caps is not None:
        p.caps.drop_bounding()
    sc.prctl(sc.PR_SET_KEEPCAPS, 1)
    cwd_ok = True
    try:
        os.chdir(p.cwd)
    except OSError:
        cwd_ok = False
    os.setgroups(p.additional_gids)
    os.setresgid(p.gid, p.gid, p.gid)
    os.setresuid(p.uid, p.uid, p.uid)
    sc.prctl(sc.PR_SET_KEEPCAPS, 0)
    if p.caps is not None:
        p.caps.apply()
    if not cwd_ok:
        try:
            os.chdir(p.cwd)
        except OSError as e:
            raise OSError(e.errno, f"chdir to cwd ({p.cwd!r}) set in config.json failed: {e.strerror}")
    if p.umask is not None:
        os.umask(p.umask)
    env: dict[str, str] = {}
    for kv in p.env:
        k, sep, v = kv.partition("=")
        if sep:
            env[k] = v
    if "HOME" not in env:
        env["HOME"] = _lookup_home(p.uid)
    path = look_path(p.args[0] if p.args else "", p.env)
    if p.seccomp is not None and p.no_new_privs:
        p.seccomp.load()  # as late as possible: only open/write/execve follow
    return path, env


def _report(sync_fd: int, e: BaseException) -> int:
    if isinstance(e, _ExecFailure):
        send_report(sync_fd, {"error": e.message, "errno": e.errno, "exec": True})
        return EXIT_NOT_FOUND if e.errno == errno.ENOENT else EXIT_CANNOT_EXEC
    if isinstance(e, OSError):
        msg = str(e) if e.strerror is None or e.strerror in str(e) else f"{e}"
        send_report(sync_fd, {"error": msg, "errno": e.errno or 0, "exec": False})
    else:
        send_report(sync_fd, {"error": f"{type(e).__name__}: {e}", "errno": 0, "exec": False})
    return 1


def _wait_byte(c: ContainerPlan, want: bytes) -> None:
    """The parent creates our cgroups ("d") and moves us into them ("1") while we build the rootfs: the first
    cgroup migration after a quiet spell waits for an RCU grace period (5-17 ms here), which this overlaps."""
    if os.read(c.cgroup_wait_fd, 1) != want:
        raise OSError(errno.EIO, "the runtime could not set up the container's cgroups")


def _wait_cgroup(c: ContainerPlan) -> None:
    _wait_byte(c, b"1")
    os.close(c.cgroup_wait_fd)
    if c.new_cgroupns:
        sc.unshare(sc.CLONE_NEWCGROUP)


def run_container_init(c: ContainerPlan, p: ProcessPlan, sync_fd: int) -> NoReturn:
    """The container's PID 1 until execve. Never returns."""
    code = 1
    stage = "init"
    try:
        stage = "setup"
        if c.die_with_parent:
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if not c.early_setup_done:
            if p.console_fd is None and p.console_sock is None:
                early_setup()  # its own session, as with a console (a caller's session is no business of the container)
            else:
                _reset_signals()
        _stdio(p)
        for fd, flag in c.join_ns:
            sc.setns(fd, flag)
        with contextlib.suppress(OSError):
            sc.join_session_keyring("_ses." + c.id[:64])
        root = c.rootfs
        if c.cgroup_v2:  # the cgroup2 mount shows the namespace's root: join first
            _wait_byte(c, b"d")
            _wait_cgroup(c)
        if c.mount_ns:
            rootfs.prepare(root, c.root_propagation)
            rootfs.mount_all(root, c.mounts, c.cgroup_binds, c.cgroup_v2,
                             lambda: c.cgroup_v2 or _wait_byte(c, b"d"), c.staged, c.readonly, c.masked,
                             bool(c.sysctls))
            if c.setup_dev:
                made = c.staged.devices if c.staged is not None and c.staged.dev_attached else None
                if made is None:
                    rootfs.create_devices(root, c.devices)
                    rootfs.dev_symlinks(root)
                else:  # a staged /dev has the usual nodes and links: only what this container adds or changes
                    rootfs.add_devices(root, [d for d in c.devices if d not in made])
            if p.console_fd is not None:
                _bind_console_fd(root, p.console_fd)
            rootfs.pivot(root)
        else:
            os.chroot(root)
            os.chdir("/")
        if p.console_sock is not None:
            slave = _console_from_socket(p.console_sock)
            if c.mount_ns:
                rootfs.bind_console("", slave)
        elif p.console_fd is not None:
            _console_from_fd(p.console_fd)
        if c.mount_ns and c.readonly_root:
            rootfs.readonly_root()
        if c.hostname:
            sc.sethostname(c.hostname)
        if c.domainname:
            sc.setdomainname(c.domainname)
        for key, value in c.sysctls.items():
            with open("/proc/sys/" + key.replace(".", "/"), "w") as fh:
                fh.write(value)
        done = c.staged.done if c.staged is not None else ()
        for path in c.readonly:
            if path not in done:  # a staged /proc or /sys came with it
                rootfs.readonly_path(path)
        for path in c.masked:
            if path not in done:
                rootfs.mask_path(path)
        if not c.mount_ns or not any(m.type == "cgroup" for m in c.mounts):
            if not c.cgroup_v2:
                _wait_byte(c, b"d")
        if not c.cgroup_v2:
            _wait_cgroup(c)  # as late as possible, but the cgroup namespace still needs CAP_SYS_ADMIN
        exe, env = _finish_process(p)
        send_report(sync_fd, {"ok": True})
        os.close(sync_fd)
        stage = "fifo"
        fifo = os.open(f"/proc/self/fd/{c.fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
        os.write(fifo, b"0")
        os.close(c.fifo_fd)
        stage = "exec"
        if c.die_with_parent:  # started: from here on the container outlives its monitor
            with contextlib.suppress(OSError):  # a seccomp profile may refuse prctl: it then dies with it
                sc.prctl(sc.PR_SET_PDEATHSIG, 0)
        try:
            os.execve(exe, p.args, env)
        except OSError as e:
            err = e.errno or errno.EACCES
            msg = f'exec: "{p.args[0]}": {os.strerror(err).lower()}'
            with contextlib.suppress(OSError):
                os.write(fifo, json.dumps({"error": msg, "errno": err}).encode())
            code = EXIT_NOT_FOUND if err == errno.ENOENT else EXIT_CANNOT_EXEC
    except BaseException as e:  # noqa: BLE001 - everything must reach the parent, then _exit
        if stage in ("setup", "init"):
            code = _report(sync_fd, e)
    finally:
        os._exit(code)


def run_exec_init(x: ExecPlan, p: ProcessPlan, sync_fd: int) -> NoReturn:
    """A process joining a container (already in its pid namespace through the parent). Never returns."""
    code = 1
    try:
        _reset_signals()
        _stdio(p)
        for f in x.cgroup_procs:
            with contextlib.suppress(FileNotFoundError), open(f, "w") as fh:
                fh.write("0")
        for fd, flag in x.ns_fds:
            sc.setns(fd, flag)
        os.chdir("/")
        if p.console_sock is not None:
            _console_from_socket(p.console_sock)
        elif p.console_fd is not None:
            _console_from_fd(p.console_fd)
        exe, env = _finish_process(p)
        try:
            os.execve(exe, p.args, env)
        except OSError as e:
            err = e.errno or errno.EACCES
            raise _ExecFailure(err, f'exec: "{p.args[0]}": {os.strerror(err).lower()}')
    except BaseException as e:  # noqa: BLE001
        code = _report(sync_fd, e)
    finally:
        os._exit(code)
