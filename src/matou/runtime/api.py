"""The runtime interface the monitor calls, and its two implementations' shared vocabulary.

Life cycle of a container (OCI runtime spec, runc's behaviour):

    create(id, bundle)  -> pid   init is a child of the caller, namespaces and rootfs set up, stopped before the
                                 user's exec (blocked on <root>/<id>/exec.fifo). status "created". A program that
                                 can't be found or executed fails here with ExecError (exit code 127 / 126).
    start(id)                    init execs the user process; returns once execve succeeded (ExecError if it
                                 failed). status "running" (or "paused" when frozen).
    exec(id, process)   -> pid   another process in the same namespaces and cgroups; a child of the caller.
    kill(id, sig, all)           signal init (or every process of the cgroup).
    pause/resume, update, stats, pids, oom_killed
                                 while the cgroup exists, i.e. until delete; read oom_killed() before delete().
    delete(id, force)            after the init exited (status "stopped"); force kills first. Removes the
                                 cgroups and the state directory. Every mount lives in the container's mount
                                 namespace and goes with it: nothing is left on the host.

The caller reaps: init and exec'd processes are its children (with OciCliRuntime, runc's children are re-parented
to the caller, which must set PR_SET_CHILD_SUBREAPER first). Exit statuses come from the caller's waitpid().

Terminals: ``console_fd`` is a pty slave the caller made (it keeps the master) and works with BuiltinRuntime;
``create_tty``/``exec_tty`` return (pid, master fd) from either implementation (the OCI CLIs create the pty inside
the container and send the master over --console-socket; the built-in runtime does the same).
"""

from __future__ import annotations

from matou.errors import InvalidArgument

TYPE_CHECKING = False  # typing costs the spawner (and every fork of it) ~0.5 MB: the interface is for checkers
if TYPE_CHECKING:
    from typing import Any, Protocol
else:
    Protocol = object

OCI_VERSION = "1.0.2"


class ExecError(InvalidArgument):
    """The user's program could not be executed. ``exit_code`` is what Docker reports: 127 not found, 126 other."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno
        self.exit_code = 127 if errno == 2 else 126


class Runtime(Protocol):
    def create(self, container_id: str, bundle: str, *, stdio: tuple[int, int, int] | None = None,
               console_fd: int | None = None, console_socket: str | None = None,
               pid_file: str | None = None) -> int: ...

    def create_tty(self, container_id: str, bundle: str, *, pid_file: str | None = None) -> tuple[int, int]: ...

    def start(self, container_id: str) -> None: ...

    def state(self, container_id: str) -> dict[str, Any]: ...

    def list(self) -> list[dict[str, Any]]: ...

    def kill(self, container_id: str, sig: int, all: bool = False) -> None: ...

    def delete(self, container_id: str, force: bool = False) -> None: ...

    def exec(self, container_id: str, process: dict[str, Any], *, stdio: tuple[int, int, int] | None = None,
             console_fd: int | None = None, console_socket: str | None = None) -> int: ...

    def exec_tty(self, container_id: str, process: dict[str, Any]) -> tuple[int, int]: ...

    def pause(self, container_id: str) -> None: ...

    def resume(self, container_id: str) -> None: ...

    def update(self, container_id: str, resources: dict[str, Any]) -> None: ...

    def stats(self, container_id: str) -> dict[str, Any]: ...

    def pids(self, container_id: str) -> list[int]: ...

    def oom_killed(self, container_id: str) -> bool: ...
