"""The per-container monitor (the shim): parent of the container's init, owner of its stdio or pty.

One small, single-threaded process per running container, forked from the spawner. It outlives matoud: a
killed daemon loses nothing, because the monitor keeps the pipes drained, the log written and the exit
status recorded (``<state_dir>/exit.json``), and answers the restarted daemon on ``<state_dir>/monitor.sock``.

Life: set up while the daemon mounts the rootfs and writes the bundle -> on its "go", create the container
(init stopped before exec) and reply -> wait for "start" (so attach streams can be connected first and no
output is lost) -> relay I/O until init exits and its pipes reach EOF -> report the exit, record it -> delete
the runtime state (cgroups) -> exit. See ``protocol`` for the messages.

Creating: with the built-in runtime and the daemon's launch hint (the common case) the init is this process's
child, and plans itself from config.json: no helper process per container. Usually it was cloned while this
process was a spare (BuiltinRuntime.preclone, in new pid, uts and ipc namespaces, its planning rehearsed) and
"go" only tells it its container (launch_precloned): the clone and the init's first steps leave the run's path
(the daemon's go -> start reply, in the run timeline: ~20 -> ~13 ms). A container that wants other namespaces
(the host's pid, uts, ipc or network) gets a fresh clone at "go" (launch_hinted). For a tty or an OCI runtime
CLI (runc, crun) a short-lived creator does it (``creator``). Every line of Python
run here costs private memory for the container's whole life (copy-on-write pages shared with the spawner):
what does not depend on the request runs in the spare before it (``prepare_process``), the rest is kept short.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import selectors
import signal
import socket
import struct
import termios
import time
from dataclasses import dataclass, field

from matou.errors import Conflict
from matou.logs.jsonfile import Writer as LogWriter
from matou.monitor import protocol as P
from matou.monitor.creator import create_in_child

TYPE_CHECKING = False  # typing costs the spawner (and every fork of it) ~0.5 MB: annotations only
if TYPE_CHECKING:
    from typing import Any

PR_SET_CHILD_SUBREAPER = 36
MAX_CLIENT_BUFFER = 16 << 20
DRAIN_GRACE = 2.0


@dataclass
class MonitorConfig:
    id: str
    bundle: str
    state_dir: str
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    log_path: str | None = None
    log_max_size: int = -1
    log_max_file: int = 1
    runtime: str = "matou"
    runtime_binary: str | None = None
    runtime_root: str = "/run/matou/runtime"
    cgroup_parent: str = "/matou"
    socket_path: str = ""  # default <state_dir>/monitor.sock; AF_UNIX paths are limited to 107 bytes
    requested_at: float = 0.0  # the daemon's time.monotonic() when it asked for this monitor (for --trace)
    # the daemon asks before the bundle exists and sends {"op": "go"} once it does: the monitor's own setup
    # overlaps the daemon's rootfs mount and bundle writing instead of following them
    wait_for_go: bool = False

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MonitorConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class Client:
    sock: socket.socket
    kind: str  # attach | exec | wait | ctl
    stdout: bool = True
    stderr: bool = True
    stdin: bool = False
    out: bytearray = field(default_factory=bytearray)
    inbuf: bytes = b""
    session: Any = None  # ExecSession for exec clients
    closing: bool = False
    eof: bool = False  # the daemon half-closed: no more stdin


@dataclass
class ExecSession:
    exec_id: str
    pid: int
    tty: bool
    stdin_fd: int | None
    out_fds: dict[int, int]  # fd -> stream
    client: Client | None
    exit_code: int | None = None
    master: int | None = None


def _nonblock(fd: int) -> None:
    fl = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, fl | os.O_NONBLOCK)


def _exit_code(status: int) -> int:
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return 255


def make_runtime(cfg: MonitorConfig) -> Any:
    if cfg.runtime in ("matou", "builtin", ""):
        from matou.runtime.builtin import BuiltinRuntime

        rt = BuiltinRuntime(cfg.runtime_root, cgroup_parent=cfg.cgroup_parent)
        rt.warm()
        return rt
    from matou.runtime.ocicli import OciCliRuntime

    return OciCliRuntime(cfg.runtime_binary or cfg.runtime, cfg.runtime_root)


class Monitor:
    def __init__(self, cfg: MonitorConfig, ctl: socket.socket, runtime: Any = None, ctl_buffered: bytes = b"",
                 netns_host_fd: int = -1, signal_pipe: tuple[int, int] | None = None, preclone: Any = None) -> None:
        self.cfg = cfg
        # an init this process cloned while it was a spare (runtime.builtin.Preclone), if ``runtime`` made it
        self.preclone = preclone
        self.premade_cg: Any = None  # the container's cgroup, made before "go" (_premake_cgroup)
        self.signal_pipe = signal_pipe  # from prepare_process(), if this process ran it already
        self.ctl = ctl
        self.ctl_buffered = ctl_buffered  # what the spawner read from ctl past the request line
        self.launch_hint: dict[str, Any] | None = None  # sent with "go": see runtime.spec.launch_hint
        self._created_reply: dict[str, Any] | None = None  # the answer to "go", until sent
        self._go_mono = 0.0
        self.create_error: Exception | None = None  # creation failed after the daemon was told it worked
        # this process sits in a network namespace made while it was a spare (see premake_netns); this fd is
        # the host's, to go back to once the init is cloned
        self.netns_host_fd = netns_host_fd
        self.sel = selectors.DefaultSelector()
        self.clients: dict[int, Client] = {}
        self.out_fds: dict[int, int] = {}  # container output fd -> stream
        self.stdin_fd: int | None = None
        self.stdin_buf = bytearray()
        self.master: int | None = None
        self.init_pid = 0
        # A reference to the init's mount namespace. Without one, the kernel unmounts the container's ~15 mounts
        # inside the init's exit, before its parent is notified: ~1 ms on the path from exit to `wait` here.
        self.mnt_ns_fd = -1
        self.exit_status: int | None = None
        self.exited_at = 0.0
        self.reaped_mono = 0.0
        self.started_mono = 0.0
        self.eof_mono = 0.0
        self.sessions: dict[int, ExecSession] = {}  # pid -> session
        self.exec_by_fd: dict[int, ExecSession] = {}
        self.runtime = runtime if runtime is not None else make_runtime(cfg)
        self.launch: Any = None  # the built-in runtime's init, until start checks that it is ready
        self.log: LogWriter | None = None
        self.started = False
        self.sock_path = cfg.socket_path or os.path.join(cfg.state_dir, "monitor.sock")

    # ------------------------------------------------------------------ setup
    def run(self) -> int:
        t0 = time.monotonic()
        if self.signal_pipe is None:
            self.signal_pipe = prepare_process()
        self.sig_r, self.sig_w = self.signal_pipe
        os.makedirs(self.cfg.state_dir, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.cfg.state_dir, "exit.json"))
        if self.cfg.log_path:
            self.log = LogWriter(self.cfg.log_path, self.cfg.log_max_size, self.cfg.log_max_file)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.sock_path)
        self.listener.bind(self.sock_path)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, ("listen", None))
        self.sel.register(self.sig_r, selectors.EVENT_READ, ("signal", None))
        with open(os.path.join(self.cfg.state_dir, "monitor.pid"), "w") as f:
            f.write(str(os.getpid()))
        t1 = time.monotonic()
        self._premake_cgroup()
        if self.cfg.wait_for_go and not self._wait_for_go():
            self._drop_premade()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.sock_path)
            return 0
        t_go = time.monotonic()
        self._created_reply = {"ok": True, "monitor_pid": os.getpid(),
                               "trace": {"spawn (connect, fork)": round((t0 - self.cfg.requested_at) * 1000, 3)
                                         if self.cfg.requested_at else 0.0,
                                         "monitor setup": round((t1 - t0) * 1000, 3)}}
        self._go_mono = t_go
        try:
            self._create()
        except Exception as e:
            self._reply_ctl({"ok": False, "error": str(e), "exit_code": getattr(e, "exit_code", 125)})
            return 1
        self._reply_created(self.init_pid)  # unless _launch_here did so already
        ctl = Client(self.ctl, "ctl", inbuf=self.ctl_buffered)
        self.ctl.setblocking(False)
        self.clients[self.ctl.fileno()] = ctl
        self.sel.register(self.ctl, selectors.EVENT_READ, ("client", ctl))
        self._loop()
        return 0

    def _premake_cgroup(self) -> None:
        """While the daemon mounts the rootfs and writes the bundle (~3 ms here): the container's cgroup
        directories, so that "go" finds them made (see BuiltinRuntime.premake_cgroup)."""
        pre = self.preclone
        if pre is None or self.cfg.tty or not self.cfg.wait_for_go or pre[0] is not self.runtime:
            return
        self.premade_cg = pre[0].premake_cgroup(f"{self.cfg.cgroup_parent}/{self.cfg.id}")

    def _drop_premade(self) -> None:
        """The pre-cloned init and its premade cgroups, unused: both go."""
        premade, self.premade_cg = self.premade_cg, None
        if premade is not None and self.preclone is not None:
            pre, self.preclone = self.preclone, None
            pre[0].drop_premade(pre[1], premade)

    def _wait_for_go(self) -> bool:
        """Block until the daemon's {"op": "go"} (its bundle is written); False if it gave up instead (closed
        the connection or sent anything else): there is nothing to clean up yet."""
        buf = self.ctl_buffered
        while b"\n" not in buf:
            try:
                data = self.ctl.recv(65536)
            except OSError:
                data = b""
            if not data:
                return False
            buf += data
        line, self.ctl_buffered = buf.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except ValueError:
            return False
        if not isinstance(msg, dict) or msg.get("op") != "go":
            return False
        self.launch_hint = msg.get("launch_hint")
        return True

    def _reply_created(self, pid: int) -> None:
        """The daemon's answer to "go": the init exists (once)."""
        if self._created_reply is None:
            return
        msg, self._created_reply = self._created_reply, None
        msg["pid"] = pid
        msg["trace"]["runtime create"] = round((time.monotonic() - self._go_mono) * 1000, 3)
        self._reply_ctl(msg)

    def _reply_ctl(self, msg: dict[str, Any]) -> None:
        try:
            self.ctl.setblocking(True)
            self.ctl.sendall(P.line(msg))
        except OSError:
            pass

    def _in_creator(self, op: str, fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        """Run a creator job (see creator.py) in a child forked now. With the built-in runtime the reply comes
        as soon as the init is cloned; its setup overlaps the daemon's attach, and "start" checks that it got
        ready."""
        self._leave_premade_netns()
        return create_in_child(self.runtime, {"op": op, "id": self.cfg.id, "bundle": self.cfg.bundle}, fds)

    def _launch_here(self, launch_with: Any) -> tuple[int, int]:
        """The common case (built-in runtime, no tty, the daemon's launch hint): the init is cloned from this
        process (or was, while it was a spare), needs no config.json, and does all planning itself.
        ``launch_with(on_cloned)`` runs the runtime's launch. Returns (pid, ready fd).

        The daemon hears of the init as soon as it is cloned, so that it sets up the network and attaches while
        this process makes the cgroups and writes the state (~4 ms here). Should that fail, the runtime has
        ended the init; the reply has gone, so "start" reports the failure (``create_error``)."""
        cloned: list[int] = []

        def on_cloned(launch: Any) -> None:
            cloned.append(launch.pid)
            self._leave_premade_netns()
            self._reply_created(launch.pid)

        try:
            launch = launch_with(on_cloned)
        except Exception as e:
            if not cloned:
                raise
            self.create_error = e  # the init is gone (killed and reaped by the runtime)
            self.exit_status = 125 << 8
            self.exited_at = time.time()
            return cloned[0], -1
        finally:
            self._leave_premade_netns()
        return launch.pid, launch.ready_fd

    def _leave_premade_netns(self) -> None:
        if self.netns_host_fd >= 0:
            from matou.runtime.linux.syscalls import CLONE_NEWNET, setns

            setns(self.netns_host_fd, CLONE_NEWNET)
            os.close(self.netns_host_fd)
            self.netns_host_fd = -1

    def _create(self) -> None:
        deferred = hasattr(self.runtime, "launch")  # the built-in runtime: readiness is checked at start
        if self.preclone is not None:
            if not self.cfg.tty and self.launch_hint and self.preclone[0] is self.runtime and \
                    self._create_precloned(self.preclone[1]):
                self.preclone = None
                return
            if self.premade_cg is not None:
                self._drop_premade()
            else:
                self.preclone[1].discard()  # our loop reaps it
            self.preclone = None
        if self.cfg.tty:
            msg, fds = self._in_creator("launch_tty" if deferred else "create_tty", [])
            pid, master = int(msg["pid"]), fds[0]
            if deferred:
                self.launch = self._launch_record(pid, fds[1])
            _nonblock(master)
            self.master = master
            self.out_fds[master] = P.STDOUT
            self.stdin_fd = master if self.cfg.open_stdin else None
        else:
            if self.cfg.open_stdin:
                in_r, in_w = os.pipe2(os.O_CLOEXEC)
            else:
                in_r, in_w = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), None
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            try:
                if deferred and self.launch_hint and hasattr(self.runtime, "launch_hinted"):
                    stdio = (in_r, out_w, err_w)
                    pid, ready_fd = self._launch_here(lambda cb: self.runtime.launch_hinted(
                        self.cfg.id, self.cfg.bundle, self.launch_hint, stdio=stdio, on_cloned=cb,
                        netns_premade=self.netns_host_fd if self.netns_host_fd >= 0 else None))
                    if ready_fd >= 0:
                        self.launch = self._launch_record(pid, ready_fd)
                else:
                    msg, fds = self._in_creator("launch" if deferred else "create", [in_r, out_w, err_w])
                    pid = int(msg["pid"])
                    if deferred:
                        self.launch = self._launch_record(pid, fds[0])
            except BaseException:
                for fd in (out_r, err_r) + ((in_w,) if in_w is not None else ()):
                    os.close(fd)
                raise
            finally:
                for fd in (in_r, out_w, err_w):
                    os.close(fd)
            self._take_pipes(out_r, err_r, in_w)
        self.init_pid = pid
        with contextlib.suppress(OSError):
            self.mnt_ns_fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        for fd in self.out_fds:
            self.sel.register(fd, selectors.EVENT_READ, ("out", None))

    def _create_precloned(self, pre: Any) -> bool:
        """_create() with the init this process cloned while it was a spare; False if that init does not fit
        (the caller discards it and clones a fresh one)."""
        from matou.runtime.builtin import PrecloneUnfit

        premade, self.premade_cg = self.premade_cg, None  # the runtime's from here on, used or removed
        try:
            pid, ready_fd = self._launch_here(lambda cb: self.runtime.launch_precloned(
                pre, self.cfg.id, self.cfg.bundle, self.launch_hint, open_stdin=self.cfg.open_stdin, on_cloned=cb,
                premade=premade))
        except PrecloneUnfit:
            self.premade_cg = premade  # untouched: the caller drops them with the init
            return False
        if ready_fd >= 0:
            self.launch = self._launch_record(pid, ready_fd)
        if not self.cfg.open_stdin:
            os.close(pre.stdin_w)
        self._take_pipes(pre.stdout_r, pre.stderr_r, pre.stdin_w if self.cfg.open_stdin else None)
        self.init_pid = pid  # its mount namespace is made after "go": _start takes the reference
        for fd in self.out_fds:
            self.sel.register(fd, selectors.EVENT_READ, ("out", None))
        return True

    def _take_pipes(self, out_r: int, err_r: int, in_w: int | None) -> None:
        """The init's output pipes, and its stdin's writing end if attached, become this loop's."""
        for fd in (out_r, err_r):
            _nonblock(fd)
        self.out_fds[out_r] = P.STDOUT
        self.out_fds[err_r] = P.STDERR
        if in_w is not None:
            _nonblock(in_w)
        self.stdin_fd = in_w

    def _launch_record(self, pid: int, ready_fd: int) -> Any:
        from matou.runtime.builtin import Launch

        return Launch(self.cfg.id, pid, ready_fd)

    # ------------------------------------------------------------------ loop
    def _loop(self) -> None:
        deadline: float | None = None
        while True:
            done_io = not self.out_fds
            # an init that failed before "start" arrived: stay (at most DRAIN_GRACE) to answer start with why
            if (self.exit_status is not None and done_io and not self.sessions and self.launch is None
                    and self.create_error is None):
                break
            if self.exit_status is not None and deadline is None:
                deadline = time.monotonic() + DRAIN_GRACE
            timeout = None
            if deadline is not None:
                timeout = max(0.0, deadline - time.monotonic())
                if timeout == 0:
                    break
            for key, mask in self.sel.select(timeout):
                kind, obj = key.data
                if kind == "out":
                    self._on_output(key.fd)
                elif kind == "listen":
                    self._accept()
                elif kind == "signal":
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.sig_r, 4096)
                    self._reap()
                elif kind == "client":
                    if mask & selectors.EVENT_READ:
                        self._on_client_read(obj)
                    if mask & selectors.EVENT_WRITE and obj.sock.fileno() in self.clients:
                        self._flush(obj)
                elif kind == "exec_out":
                    self._on_exec_output(key.fd)
                elif kind == "stdin":
                    self._flush_stdin()
        self._finish()

    # ------------------------------------------------------------------ output
    def _on_output(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno != errno.EIO:  # EIO: pty slave closed
                raise
            data = b""
        stream = self.out_fds[fd]
        if not data:
            self.sel.unregister(fd)
            del self.out_fds[fd]
            if fd != self.stdin_fd:
                os.close(fd)
            if not self.out_fds:
                self.eof_mono = time.monotonic()
            return
        name = "stdout" if stream == P.STDOUT else "stderr"
        if self.log is not None:
            self.log.write(name, data)
        fr = P.frame(stream, data)
        for c in list(self.clients.values()):
            if c.kind == "attach" and ((stream == P.STDOUT and c.stdout) or (stream == P.STDERR and c.stderr)):
                self._send(c, fr)

    def _on_exec_output(self, fd: int) -> None:
        s = self.exec_by_fd[fd]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(fd)
            del self.exec_by_fd[fd]
            s.out_fds.pop(fd, None)
            if fd != s.stdin_fd:
                os.close(fd)
            self._maybe_end_exec(s)
            return
        if s.client is not None:
            self._send(s.client, P.frame(s.out_fds[fd], data))

    def _send(self, c: Client, data: bytes) -> None:
        if c.closing:
            return
        if len(c.out) > MAX_CLIENT_BUFFER:
            self._drop(c)
            return
        c.out += data
        self._flush(c)

    def _flush(self, c: Client) -> None:
        if c.out:
            try:
                n = c.sock.send(c.out)
                del c.out[:n]
            except BlockingIOError:
                pass
            except OSError:
                self._drop(c)
                return
        if c.closing and not c.out:
            self._drop(c)
            return
        self._register(c)

    def _register(self, c: Client) -> None:
        want = (0 if c.eof else selectors.EVENT_READ) | (selectors.EVENT_WRITE if c.out else 0)
        registered = c.sock.fileno() in self.sel.get_map()
        if want == 0:
            if registered:
                self.sel.unregister(c.sock)
        elif registered:
            self.sel.modify(c.sock, want, ("client", c))
        else:
            self.sel.register(c.sock, want, ("client", c))

    def _drop(self, c: Client) -> None:
        fd = c.sock.fileno()
        if fd in self.clients:
            del self.clients[fd]
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(c.sock)
        if c.session is not None and c.session.client is c:
            c.session.client = None
        c.sock.close()

    # ------------------------------------------------------------------ clients
    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        c = Client(sock, "pending")
        self.clients[sock.fileno()] = c
        self.sel.register(sock, selectors.EVENT_READ, ("client", c))

    def _on_client_read(self, c: Client) -> None:
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if c.kind in ("pending", "ctl"):
            if not data:
                if c.kind == "ctl" and not self.started and self.exit_status is None and self.init_pid:
                    self._abandon()
                self._drop(c)
                return
            c.inbuf += data
            while b"\n" in c.inbuf and c.kind in ("pending", "ctl"):
                raw, c.inbuf = c.inbuf.split(b"\n", 1)
                try:
                    req = json.loads(raw)
                except ValueError:
                    self._drop(c)
                    return
                self._handle(c, req)
            if c.kind in ("attach", "exec") and c.inbuf:
                rest, c.inbuf = c.inbuf, b""
                self._stdin_from(c, rest)
            return
        if c.kind in ("attach", "exec"):
            if not data:
                c.eof = True
                self._stdin_eof(c)
                self._register(c)
                return
            self._stdin_from(c, data)
            return
        if not data:
            self._drop(c)

    def _abandon(self) -> None:
        """The daemon that created this container went away before starting it (killed between its create
        and start requests): nobody will start it. End the init; the exit is recorded as usual, and a
        restarted daemon applies the restart policy to it."""
        with contextlib.suppress(OSError):
            os.kill(self.init_pid, signal.SIGKILL)
        if self.launch is not None:
            with contextlib.suppress(OSError):
                os.close(self.launch.ready_fd)
            self.launch = None

    def _stdin_from(self, c: Client, data: bytes) -> None:
        if c.kind == "attach" and c.stdin and self.stdin_fd is not None:
            self.stdin_buf += data
            self._flush_stdin()
        elif c.kind == "exec" and c.session is not None and c.session.stdin_fd is not None:
            try:
                os.write(c.session.stdin_fd, data)
            except OSError:
                pass

    def _flush_stdin(self) -> None:
        fd = self.stdin_fd
        if fd is None:
            self.stdin_buf.clear()
            return
        while self.stdin_buf:
            try:
                n = os.write(fd, self.stdin_buf)
                del self.stdin_buf[:n]
            except BlockingIOError:
                break
            except OSError:
                self.stdin_buf.clear()
                break
        registered = fd in self.sel.get_map() and self.sel.get_key(fd).data[0] == "stdin"
        if self.stdin_buf and not registered and fd not in self.out_fds:
            self.sel.register(fd, selectors.EVENT_WRITE, ("stdin", None))
        elif not self.stdin_buf and registered:
            self.sel.unregister(fd)

    def _stdin_eof(self, c: Client) -> None:
        if c.kind == "attach" and c.stdin and self.cfg.stdin_once and self.stdin_fd is not None and not self.cfg.tty:
            self._flush_stdin()
            if not self.stdin_buf:
                fd, self.stdin_fd = self.stdin_fd, None
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(fd)
                os.close(fd)
        elif c.kind == "exec" and c.session is not None and c.session.stdin_fd is not None and not c.session.tty:
            fd, c.session.stdin_fd = c.session.stdin_fd, None
            os.close(fd)

    # ------------------------------------------------------------------ requests
    def _handle(self, c: Client, req: dict[str, Any]) -> None:
        op = req.get("op")
        try:
            if op == "start":
                self._start(c)
            elif op == "attach":
                c.kind = "attach"
                c.stdin = bool(req.get("stdin"))
                c.stdout = bool(req.get("stdout", True))
                c.stderr = bool(req.get("stderr", True))
                if self.exit_status is not None and not self.out_fds:
                    self._send(c, P.control({"exit_code": _exit_code(self.exit_status)}))
                    c.closing = True
                    self._flush(c)
            elif op == "wait":
                c.kind = "wait"
                if self.exit_status is not None and not self.out_fds:
                    self._send(c, P.line(self._exit_record()))
            elif op == "exec":
                self._exec(c, req)
            elif op == "resize":
                self._resize(req)
                self._send(c, P.line({"ok": True}))
            elif op == "kill":
                if self.launch is not None and self.exit_status is None:
                    # launched, not started: the runtime's state may not be written yet (a creator at it)
                    os.kill(self.init_pid, int(req.get("signal", signal.SIGTERM)))
                else:
                    self.runtime.kill(self.cfg.id, int(req.get("signal", signal.SIGTERM)), bool(req.get("all")))
                self._send(c, P.line({"ok": True}))
            elif op == "state":
                self._send(c, P.line({"ok": True, "pid": self.init_pid, "started": self.started,
                                      "exited": self.exit_status is not None}))
            elif op in ("pause", "resume"):
                getattr(self.runtime, op)(self.cfg.id)
                self._send(c, P.line({"ok": True}))
            elif op == "update":
                self.runtime.update(self.cfg.id, req.get("resources") or {})
                self._send(c, P.line({"ok": True}))
            elif op == "stats":
                self._send(c, P.line({"ok": True, "stats": self.runtime.stats(self.cfg.id)}))
            elif op == "pids":
                self._send(c, P.line({"ok": True, "pids": self.runtime.pids(self.cfg.id)}))
            else:
                self._send(c, P.line({"ok": False, "error": f"unknown op {op!r}"}))
        except Exception as e:
            msg = {"ok": False, "error": str(e) or type(e).__name__, "exit_code": getattr(e, "exit_code", 125)}
            if c.kind in ("attach", "exec"):
                self._send(c, P.control(msg))
                c.closing = True
                self._flush(c)
            else:
                self._send(c, P.line(msg))

    def _start(self, c: Client) -> None:
        if self.started:
            self._send(c, P.line({"ok": True, "pid": self.init_pid}))
            return
        try:
            if self.create_error is not None:
                err, self.create_error = self.create_error, None
                raise err
            opened = None
            if self.launch is not None:
                launch, self.launch = self.launch, None
                if hasattr(self.runtime, "open_start"):  # the init execs the moment it is ready
                    try:
                        opened = self.runtime.open_start(self.cfg.id)
                    except Conflict:  # it has exited already: what it reported says why
                        self.runtime.ready(launch, reap=False)
                        raise
                try:
                    self.runtime.ready(launch, reap=False)  # our loop reaps a failed init and records its exit
                except BaseException:
                    for fd in opened or ():
                        os.close(fd)
                    raise
                if self.mnt_ns_fd < 0:
                    with contextlib.suppress(OSError):
                        self.mnt_ns_fd = os.open(f"/proc/{self.init_pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            self.runtime.start(self.cfg.id, opened) if opened else self.runtime.start(self.cfg.id)
        except Exception as e:
            self._send(c, P.line({"ok": False, "error": str(e), "exit_code": getattr(e, "exit_code", 125)}))
            return
        self.started = True
        self.started_mono = time.monotonic()
        with open(os.path.join(self.cfg.state_dir, "started"), "w") as f:
            f.write(str(time.time()))
        self._send(c, P.line({"ok": True, "pid": self.init_pid}))
        self._reap()

    def _resize(self, req: dict[str, Any]) -> None:
        h, w = int(req.get("h", 0)), int(req.get("w", 0))
        fd = self.master
        if req.get("exec_id"):
            fd = next((s.master for s in self.sessions.values() if s.exec_id == req["exec_id"]), None)
        if fd is None:
            raise ValueError("no tty to resize")
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", h, w, 0, 0))

    def _exec(self, c: Client, req: dict[str, Any]) -> None:
        process = req["process"]
        tty = bool(process.get("terminal"))
        attach_stdin = bool(req.get("stdin"))
        c.kind = "exec"
        if tty:
            pid, master = self.runtime.exec_tty(self.cfg.id, process)
            _nonblock(master)
            s = ExecSession(req.get("exec_id", ""), pid, True, master if attach_stdin else None,
                            {master: P.STDOUT}, c, master=master)
        else:
            in_r, in_w = (os.pipe2(os.O_CLOEXEC) if attach_stdin
                          else (os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), None))
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            try:
                pid = self.runtime.exec(self.cfg.id, process, stdio=(in_r, out_w, err_w))
            finally:
                for fd in (in_r, out_w, err_w):
                    os.close(fd)
            for fd in (out_r, err_r):
                _nonblock(fd)
            s = ExecSession(req.get("exec_id", ""), pid, False, in_w, {out_r: P.STDOUT, err_r: P.STDERR}, c)
        c.session = s
        self.sessions[pid] = s
        for fd in s.out_fds:
            self.exec_by_fd[fd] = s
            self.sel.register(fd, selectors.EVENT_READ, ("exec_out", None))
        self._send(c, P.control({"pid": pid}))
        if req.get("detach"):
            c.session = None
            s.client = None
            c.closing = True
            self._flush(c)
        self._reap()

    def _maybe_end_exec(self, s: ExecSession) -> None:
        if s.exit_code is None or s.out_fds:
            return
        self.sessions.pop(s.pid, None)
        rec = {"exit_code": s.exit_code, "exec_id": s.exec_id, "finished_at": time.time()}
        if s.exec_id:
            with contextlib.suppress(OSError):
                path = os.path.join(self.cfg.state_dir, "exec")
                os.makedirs(path, exist_ok=True)
                with open(os.path.join(path, s.exec_id + ".json"), "w") as f:
                    json.dump(rec, f)
        if s.stdin_fd is not None and s.stdin_fd != s.master:
            with contextlib.suppress(OSError):
                os.close(s.stdin_fd)
        if s.master is not None:
            with contextlib.suppress(OSError):
                os.close(s.master)
        if s.client is not None:
            c = s.client
            c.closing = True
            c.out += P.control({"exit_code": s.exit_code})
            self._flush(c)

    # ------------------------------------------------------------------ children
    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.init_pid:
                self.exit_status = status
                self.exited_at = time.time()
                self.reaped_mono = time.monotonic()
                # a pty master reports EIO once every slave is closed; pipes reach EOF by themselves
            elif pid in self.sessions:
                s = self.sessions[pid]
                s.exit_code = _exit_code(status)
                if s.master is not None:
                    # drain what is left on the pty, then end the session
                    for fd in list(s.out_fds):
                        self._on_exec_output(fd)
                self._maybe_end_exec(s)

    def _exit_record(self) -> dict[str, Any]:
        oom = False
        with contextlib.suppress(Exception):
            oom = bool(self.runtime.oom_killed(self.cfg.id))
        code = _exit_code(self.exit_status) if self.exit_status is not None else 255
        if oom and code == 128 + signal.SIGKILL:
            code = 137
        return {"event": "exit", "exit_code": code, "oom_killed": oom, "finished_at": self.exited_at,
                "pid": self.init_pid}

    def _finish(self) -> None:
        """Record the exit, tell whoever listens, then clean up: the daemon's `wait` should not pay for
        the cgroup removal, nor for exit.json. That file (no fsync: it must survive the daemon being killed,
        which the page cache does) is for a daemon that missed the event: one killed before it read it finds
        the file once it is back, written a few microseconds after the event was sent."""
        rec = self._exit_record()
        rec["monotonic_reaped"] = self.reaped_mono
        rec["monotonic_started"] = self.started_mono
        rec["monotonic_eof"] = self.eof_mono
        rec["monotonic_finish"] = time.monotonic()
        if self.log is not None:
            self.log.close()  # first: it writes a last partial line, which `logs` after the exit must show
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.sock_path)  # before anyone hears of the exit: a new monitor may bind this path
        for c in list(self.clients.values()):
            if c.kind == "attach":
                c.out += P.control({"exit_code": rec["exit_code"]})
            elif c.kind in ("ctl", "wait"):
                rec["monotonic_sent"] = time.monotonic()
                c.out += P.line(rec)
        deadline = time.monotonic() + 5
        for c in list(self.clients.values()):
            try:
                c.sock.setblocking(True)
                c.sock.settimeout(max(0.1, deadline - time.monotonic()))
                if c.out:
                    c.sock.sendall(c.out)
            except OSError:
                pass
            with contextlib.suppress(OSError):
                c.sock.close()
        self.clients.clear()
        with contextlib.suppress(OSError):  # the daemon may have removed the container already
            tmp = os.path.join(self.cfg.state_dir, "exit.json.tmp")
            with open(tmp, "w") as f:
                json.dump(rec, f)
            os.replace(tmp, os.path.join(self.cfg.state_dir, "exit.json"))
        if self.mnt_ns_fd >= 0:  # the container's mounts go now, after its exit was reported
            os.close(self.mnt_ns_fd)
        with contextlib.suppress(Exception):
            self.runtime.delete(self.cfg.id, force=True)


IGNORED_SIGNALS = tuple(int(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGTTOU,
                                          signal.SIGTTIN))


def prepare_process(libc: Any = None) -> tuple[int, int]:
    """What makes this process a monitor, whatever its container: its own session, no cyclic GC, a child
    subreaper, the signals it ignores, SIGCHLD on a wakeup pipe (returned: read end, write end). A spare runs
    this while it waits for a request, with the spawner's ``libc`` (a CDLL of its own costs a fork ~250 KB)."""
    import _signal  # not signal: its wrappers convert to and from enums, Python code each monitor would run
    import gc

    with contextlib.suppress(OSError):  # a session leader already
        os.setsid()  # signals to the daemon's process group never reach it
    gc.disable()  # the monitor allocates little and lives long: collections would only copy shared pages
    if libc is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    for s in IGNORED_SIGNALS:
        if _signal.getsignal(s) != _signal.SIG_IGN:  # the spawner ignores most of them already
            _signal.signal(s, _signal.SIG_IGN)
    sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    _signal.set_wakeup_fd(sig_w)
    _signal.signal(_signal.SIGCHLD, _ignore)
    return sig_r, sig_w


def _ignore(*_: object) -> None:
    """SIGCHLD's handler: the wakeup fd is what the loop waits on."""


def run_monitor(cfg: MonitorConfig, ctl: socket.socket, runtime: Any = None, ctl_buffered: bytes = b"",
                netns_host_fd: int = -1, signal_pipe: tuple[int, int] | None = None, preclone: Any = None) -> int:
    return Monitor(cfg, ctl, runtime, ctl_buffered, netns_host_fd, signal_pipe, preclone).run()
