"""Creating a container in a short-lived child of the monitor (the "creator").

Creating a container runs a lot of code (spec parsing, seccomp, mounts): in the monitor itself that would dirty
copy-on-write pages it shares with the spawner and keep them for the container's whole life (3.5 MB of private
memory per container, measured). The creator dies with those pages; the init it clones is re-parented to the
monitor, a child subreaper.

The common case needs no creator: with the daemon's launch hint, the monitor clones the init itself and the
init plans from config.json (BuiltinRuntime.launch_hinted). Creators serve the rest: a tty (the init sends the
pty back through a console socket), and the OCI runtime CLIs (runc, crun). The job is data: an operation, the
container's id and bundle, its stdio fds; the answer is ``{"pid"}`` plus fds (the pty master, the readiness fd),
or an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
from collections.abc import Callable

TYPE_CHECKING = False  # typing costs the spawner (and every fork of it) ~0.5 MB: annotations only
if TYPE_CHECKING:
    from typing import Any

    Reply = Callable[[dict[str, Any], list[int]], None]

PR_SET_PDEATHSIG = 1

# operation -> what the runtime does (the built-in runtime's launch*, any runtime's create*)
OPS = ("launch", "launch_tty", "create", "create_tty")


class CreateError(Exception):
    """Creating the container failed in the creator; ``exit_code`` as Docker reports it."""

    exit_code = 125




def run_job(runtime: Any, job: dict[str, Any], fds: list[int],
            reply: Reply | None = None) -> tuple[dict[str, Any], list[int]] | None:
    """Do the job; the answer is returned, or (``launch`` with ``reply``) sent as soon as the init is cloned,
    so the monitor goes on while this process makes the cgroups and writes the state. Returns None then."""
    op, cid, bundle = job["op"], job["id"], job["bundle"]
    if op == "launch":
        if reply is not None:
            runtime.launch(cid, bundle, stdio=(fds[0], fds[1], fds[2]),
                           on_cloned=lambda launch: reply({"pid": launch.pid}, [launch.ready_fd]))
            return None
        launch = runtime.launch(cid, bundle, stdio=(fds[0], fds[1], fds[2]))
        return {"pid": launch.pid}, [launch.ready_fd]
    if op == "launch_tty":
        launch, master = runtime.launch_tty(cid, bundle)
        return {"pid": launch.pid}, [master, launch.ready_fd]
    if op == "create":
        return {"pid": runtime.create(cid, bundle, stdio=(fds[0], fds[1], fds[2]))}, []
    if op == "create_tty":
        pid, master = runtime.create_tty(cid, bundle)
        return {"pid": pid}, [master]
    raise ValueError(f"unknown creator operation {op!r}")


def _answer(sock: socket.socket, work: Callable[[Reply], tuple[dict[str, Any], list[int]] | None]) -> int:
    sent = False

    def reply(msg: dict[str, Any], fds: list[int]) -> None:
        nonlocal sent
        sent = True
        with contextlib.suppress(OSError):
            socket.send_fds(sock, [json.dumps(msg).encode()], fds)

    try:
        answer = work(reply)
    except BaseException as e:
        if sent:  # the init then fails to get ready (its cgroups were not set up): start reports that
            os.write(2, f"matou creator: after the reply: {e}\n".encode())
            return 1
        reply({"error": str(e) or type(e).__name__, "exit_code": getattr(e, "exit_code", 125),
               "errno": getattr(e, "errno", 0) or 0, "kind": type(e).__name__}, [])
        return 1
    if not sent and answer is not None:
        reply(*answer)
    return 0


def _collect(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, 65536, 4)
    finally:
        sock.close()
    # the child's exit (tearing down its copied pages) takes ~1.4 ms: the monitor's loop reaps it later
    msg = json.loads(data) if data else {"error": "container creation failed", "exit_code": 125}
    if "error" in msg:
        for fd in fds:
            os.close(fd)
        err = CreateError(msg["error"])
        err.exit_code = int(msg.get("exit_code") or 125)
        raise err
    return msg, list(fds)


def _fork(child: Callable[[socket.socket], int]) -> tuple[int, socket.socket]:
    """Fork a creator running ``child(its end of a socketpair) -> exit code``; our end comes back."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        a.close()
        code = 1
        try:
            code = child(b)
        finally:
            os._exit(code)
    b.close()
    return pid, a


def create_in_child(runtime: Any, job: dict[str, Any], fds: list[int]) -> tuple[dict[str, Any], list[int]]:
    """Fork a creator now and run ``job`` in it."""

    def child(sock: socket.socket) -> int:
        # the monitor's signal handling must not reap the init this process clones
        for s in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(s, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        os.setsid()  # the init is cloned from here: keep it out of the monitor's session and process group
        return _answer(sock, lambda reply: run_job(runtime, job, fds, reply))

    _pid, sock = _fork(child)
    return _collect(sock)
