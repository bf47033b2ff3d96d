"""OciCliRuntime: the same interface, driving a runc or crun binary (``--runtime runc|crun``).

The binary's init outlives ``runc create`` and is re-parented to the nearest subreaper: the caller (the monitor)
must set PR_SET_CHILD_SUBREAPER to reap it. Errors come back through ``--log`` (JSON lines) rather than stderr,
because the container inherits the binary's stdio. Statistics, pids and OOM kills are read from the cgroup named
by the bundle's cgroupsPath with the built-in cgroup code, so both implementations report the same way (crun has
no ``events`` command).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

from matou.errors import Conflict, InvalidArgument, NotFound, SystemError_, Unsupported
from matou.runtime.api import ExecError
from matou.runtime.linux import cgroups
from matou.runtime.state import check_id


class OciCliRuntime:
    def __init__(self, binary: str, root: str) -> None:
        path = shutil.which(binary)
        if path is None:
            raise NotFound(f"OCI runtime binary {binary!r} not found")
        self.binary = path
        self.name = os.path.basename(path)
        self.root = os.path.abspath(root)
        os.makedirs(self.root, 0o711, exist_ok=True)
        self._hierarchies: list[cgroups.Hierarchy] | None = None

    # ------------------------------------------------------------------------------------------------ plumbing
    def _run(self, args: list[str], *, stdio: tuple[int, int, int] | None = None,
             check: bool = True) -> subprocess.CompletedProcess[bytes]:
        with tempfile.NamedTemporaryFile(prefix="oci-log-", dir=self.root) as log:
            cmd = [self.binary, "--root", self.root, "--log", log.name, "--log-format", "json", *args]
            if stdio is None:
                r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
            else:
                r = subprocess.run(cmd, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2])
            if check and r.returncode != 0:
                self._raise(args, log.read().decode(errors="replace"), r.stderr or b"")
        return r

    def _raise(self, args: list[str], log: str, stderr: bytes) -> None:
        msgs = []
        for line in log.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                msgs.append(line)
                continue
            if entry.get("level") in ("error", "fatal"):
                msgs.append(str(entry.get("msg", "")))
        msg = "; ".join(m for m in msgs if m) or stderr.decode(errors="replace").strip() or "failed"
        low = msg.lower()
        text = f"{self.name} {args[0]}: {msg}"
        if "executable file not found" in low or ("not found in $path" in low) or \
                ("exec" in low and "no such file or directory" in low):
            raise ExecError(_exec_message(msg), errno.ENOENT)
        if "permission denied" in low and ("exec" in low or "eaccess" in low):
            raise ExecError(_exec_message(msg), errno.EACCES)
        if "does not exist" in low or "not found" in low or "no such" in low:
            raise NotFound(text)
        if "already exists" in low or "not stopped" in low or "running" in low or "paused" in low:
            raise Conflict(text)
        raise SystemError_(text)

    def _hier(self) -> list[cgroups.Hierarchy]:
        if self._hierarchies is None:
            self._hierarchies = cgroups.detect()
        return self._hierarchies

    def _cgroup(self, container_id: str) -> cgroups.Cgroup:
        st = self.state(container_id)
        try:
            with open(os.path.join(st["bundle"], "config.json"), "rb") as f:
                path = (json.loads(f.read()).get("linux") or {}).get("cgroupsPath") or ""
        except (OSError, ValueError):
            path = ""
        if not path.startswith("/"):
            raise Unsupported(f"container {container_id}: cgroupsPath {path!r} is not a cgroupfs path")
        hs = self._hier()
        v1 = any(h.version == 1 and any(not c.startswith("name=") for c in h.controllers) for h in hs)
        cg = cgroups.Cgroup(1 if v1 else 2, path)
        for h in hs:
            if v1 or h.version == 2:
                cg.dirs[h.mountpoint] = h.mountpoint + path
                for c in h.controllers:
                    cg.controllers[c] = h.mountpoint + path
        return cg

    def _with_console(self, args: list[str], stdio: tuple[int, int, int] | None) -> tuple[int, int]:
        """Run create/exec with a console socket we listen on; returns (pid from pid file, pty master)."""
        tmp = tempfile.mkdtemp(prefix="oci-tty-", dir=self.root)
        sock_path = os.path.join(tmp, "console.sock")
        pid_file = os.path.join(tmp, "pid")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            srv.bind(sock_path)
            srv.listen(1)
            log = os.path.join(tmp, "log")
            cmd = [self.binary, "--root", self.root, "--log", log, "--log-format", "json", args[0],
                   "--console-socket", sock_path, "--pid-file", pid_file, *args[1:]]
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            master = -1
            deadline = time.monotonic() + 30
            while master < 0 and time.monotonic() < deadline:
                ready, _, _ = select.select([srv], [], [], 0.05)
                if ready:
                    conn, _ = srv.accept()
                    with conn:
                        _msg, fds, _f, _a = socket.recv_fds(conn, 4096, 1)
                    if fds:
                        master = fds[0]
                elif proc.poll() is not None:
                    break
            _out, err = proc.communicate()
            if proc.returncode != 0:
                if master >= 0:
                    os.close(master)
                with open(log) as f:
                    self._raise(args, f.read(), err)
            if master < 0:
                raise SystemError_(f"{self.name} {args[0]}: no terminal was received")
            with open(pid_file) as f:
                return int(f.read().strip()), master
        finally:
            srv.close()
            shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------------------------------------------ interface
    def create(self, container_id: str, bundle: str, *, stdio: tuple[int, int, int] | None = None,
               console_fd: int | None = None, console_socket: str | None = None,
               pid_file: str | None = None) -> int:
        check_id(container_id)
        if console_fd is not None:
            raise Unsupported(f"{self.name} creates its own terminal: use create_tty() or console_socket")
        own_pid_file = pid_file or os.path.join(self.root, f".{container_id}.pid")
        args = ["create", "--bundle", os.path.abspath(bundle), "--pid-file", own_pid_file]
        if console_socket:
            args += ["--console-socket", console_socket]
        try:
            self._run(args + [container_id], stdio=stdio)
            with open(own_pid_file) as f:
                return int(f.read().strip())
        finally:
            if pid_file is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(own_pid_file)

    def create_tty(self, container_id: str, bundle: str, *, pid_file: str | None = None) -> tuple[int, int]:
        check_id(container_id)
        pid, master = self._with_console(["create", "--bundle", os.path.abspath(bundle), container_id], None)
        if pid_file:
            with open(pid_file, "w") as f:
                f.write(str(pid))
        return pid, master

    def start(self, container_id: str) -> None:
        self._run(["start", container_id])

    def state(self, container_id: str) -> dict[str, Any]:
        check_id(container_id)
        r = self._run(["state", container_id])
        st = json.loads(r.stdout)
        st.setdefault("annotations", {})
        return st

    def list(self) -> list[dict[str, Any]]:
        r = self._run(["list", "--format", "json"])
        return json.loads(r.stdout or b"[]") or []

    def kill(self, container_id: str, sig: int, all: bool = False) -> None:
        self._run(["kill", *(["--all"] if all else []), container_id, str(sig)])

    def delete(self, container_id: str, force: bool = False) -> None:
        self._run(["delete", *(["--force"] if force else []), container_id])

    def exec(self, container_id: str, process: dict[str, Any], *, stdio: tuple[int, int, int] | None = None,
             console_fd: int | None = None, console_socket: str | None = None) -> int:
        if console_fd is not None:
            raise Unsupported(f"{self.name} creates its own terminal: use exec_tty() or console_socket")
        with tempfile.TemporaryDirectory(prefix="oci-exec-", dir=self.root) as tmp:
            pfile = os.path.join(tmp, "process.json")
            pid_file = os.path.join(tmp, "pid")
            with open(pfile, "w") as f:
                json.dump(process, f)
            args = ["exec", "--detach", "--process", pfile, "--pid-file", pid_file]
            if console_socket:
                args += ["--console-socket", console_socket]
            self._run(args + [container_id], stdio=stdio)
            with open(pid_file) as f:
                return int(f.read().strip())

    def exec_tty(self, container_id: str, process: dict[str, Any]) -> tuple[int, int]:
        with tempfile.TemporaryDirectory(prefix="oci-exec-", dir=self.root) as tmp:
            pfile = os.path.join(tmp, "process.json")
            with open(pfile, "w") as f:
                json.dump(process, f)
            return self._with_console(["exec", "--detach", "--process", pfile, container_id], None)

    def pause(self, container_id: str) -> None:
        self._run(["pause", container_id])

    def resume(self, container_id: str) -> None:
        self._run(["resume", container_id])

    def update(self, container_id: str, resources: dict[str, Any]) -> None:
        if not isinstance(resources, dict):
            raise InvalidArgument("resources must be an object")
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir=self.root) as f:
            json.dump(resources, f)
            f.flush()
            self._run(["update", "--resources", f.name, container_id])

    def stats(self, container_id: str) -> dict[str, Any]:
        out = self._cgroup(container_id).stats()
        out["id"] = container_id
        out["system_cpu_usage"] = cgroups.system_cpu_usage()
        out["online_cpus"] = os.cpu_count() or 1
        return out

    def pids(self, container_id: str) -> list[int]:
        return self._cgroup(container_id).pids()

    def oom_killed(self, container_id: str) -> bool:
        return self._cgroup(container_id).oom_kills() > 0


def _exec_message(msg: str) -> str:
    """The 'exec: "foo": ...' part of a runtime's error chain, the way Docker shows it."""
    i = msg.find('exec: "')
    if i >= 0:
        return msg[i:].split(": unknown")[0]
    return msg
