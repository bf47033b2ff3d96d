"""A runc-compatible command line over the same code: ``python -m matou.runtime [--root DIR] COMMAND ...``.

It exists so the runtime can be driven and tested alone, and compared with runc and crun on the same bundles:
create, start, state, kill, delete, run, exec, ps, pause, resume, list, update, events --stats.
``create`` leaves the init orphaned when this process exits, exactly as ``runc create`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

from matou.errors import InvalidArgument, MatouError
from matou.runtime.api import ExecError

DEFAULT_ROOT = "/run/matou/runtime"


def parse_signal(s: str) -> int:
    s = s.strip().upper()
    if s.isdigit():
        return int(s)
    name = s if s.startswith("SIG") else "SIG" + s
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise InvalidArgument(f"unknown signal {s!r}")


def _status_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _wait_forwarding(pid: int) -> int:
    """Wait for our child, passing on the signals a user sends to this command (as runc run does)."""
    def forward(signum: int, _frame: Any) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, forward)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return _status_code(status)
        except InterruptedError:
            continue


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="matou-runtime", description="matou's OCI runtime (runc-compatible CLI)")
    p.add_argument("--root", default=DEFAULT_ROOT, help="state directory")
    p.add_argument("--log", default=None, help="append errors to this file as well")
    p.add_argument("--log-format", default="text", choices=("text", "json"))
    p.add_argument("--runtime", default="builtin", help="builtin, or a runc/crun binary to drive instead")
    sub = p.add_subparsers(dest="cmd", required=True)

    def with_create_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--bundle", "-b", default=".")
        sp.add_argument("--pid-file", default=None)
        sp.add_argument("--console-socket", default=None)
        sp.add_argument("--no-pivot", action="store_true")
        sp.add_argument("--no-new-keyring", action="store_true")
        sp.add_argument("id")

    with_create_opts(sub.add_parser("create"))
    run = sub.add_parser("run")
    run.add_argument("--detach", "-d", action="store_true")
    with_create_opts(run)
    for name in ("start", "state", "pause", "resume"):
        sub.add_parser(name).add_argument("id")
    k = sub.add_parser("kill")
    k.add_argument("--all", "-a", action="store_true")
    k.add_argument("id")
    k.add_argument("signal", nargs="?", default="SIGTERM")
    d = sub.add_parser("delete")
    d.add_argument("--force", "-f", action="store_true")
    d.add_argument("id")
    e = sub.add_parser("exec")
    e.add_argument("--process", "-p", default=None)
    e.add_argument("--detach", "-d", action="store_true")
    e.add_argument("--pid-file", default=None)
    e.add_argument("--console-socket", default=None)
    e.add_argument("--tty", "-t", action="store_true")
    e.add_argument("--cwd", default=None)
    e.add_argument("--env", "-e", action="append", default=[])
    e.add_argument("--user", "-u", default=None)
    e.add_argument("--no-new-privs", action="store_true")
    e.add_argument("id")
    e.add_argument("args", nargs=argparse.REMAINDER)
    ps = sub.add_parser("ps")
    ps.add_argument("--format", "-f", default="table", choices=("table", "json"))
    ps.add_argument("id")
    ls = sub.add_parser("list")
    ls.add_argument("--format", "-f", default="table", choices=("table", "json"))
    ls.add_argument("--quiet", "-q", action="store_true")
    u = sub.add_parser("update")
    u.add_argument("--resources", "-r", default=None)
    u.add_argument("--memory", type=int, default=None)
    u.add_argument("--memory-swap", type=int, default=None)
    u.add_argument("--cpu-quota", type=int, default=None)
    u.add_argument("--cpu-period", type=int, default=None)
    u.add_argument("--cpu-share", type=int, default=None)
    u.add_argument("--pids-limit", type=int, default=None)
    u.add_argument("id")
    ev = sub.add_parser("events")
    ev.add_argument("--stats", action="store_true")
    ev.add_argument("id")
    return p


def _exec_process(rt: Any, a: argparse.Namespace) -> dict[str, Any]:
    if a.process:
        with open(a.process, "rb") as f:
            return json.loads(f.read())
    if not a.args:
        raise InvalidArgument("exec: give --process or a command")
    state = rt.state(a.id)
    with open(os.path.join(state["bundle"], "config.json"), "rb") as f:
        base = json.loads(f.read())["process"]
    proc = dict(base)
    proc["args"] = list(a.args)
    proc["terminal"] = a.tty
    proc["env"] = list(base.get("env") or []) + list(a.env)
    if a.cwd:
        proc["cwd"] = a.cwd
    if a.user:
        uid, _, gid = a.user.partition(":")
        proc["user"] = {"uid": int(uid), "gid": int(gid or 0)}
    if a.no_new_privs:
        proc["noNewPrivileges"] = True
    return proc


def _make_runtime(a: argparse.Namespace) -> Any:
    if a.runtime == "builtin":
        from matou.runtime.builtin import BuiltinRuntime

        return BuiltinRuntime(a.root)
    from matou.runtime.ocicli import OciCliRuntime

    return OciCliRuntime(a.runtime, a.root)


def _dispatch(a: argparse.Namespace) -> int:
    rt = _make_runtime(a)
    cmd = a.cmd
    if cmd in ("create", "run"):
        pid = rt.create(a.id, a.bundle, pid_file=a.pid_file, console_socket=a.console_socket)
        if cmd == "create":
            return 0
        try:
            rt.start(a.id)
        except ExecError:
            rt.delete(a.id, force=True)
            raise
        if a.detach:
            return 0
        code = _wait_forwarding(pid)
        rt.delete(a.id, force=True)
        return code
    if cmd == "start":
        rt.start(a.id)
    elif cmd == "state":
        print(json.dumps(rt.state(a.id), indent=2))
    elif cmd == "kill":
        rt.kill(a.id, parse_signal(a.signal), all=a.all)
    elif cmd == "delete":
        rt.delete(a.id, force=a.force)
    elif cmd == "pause":
        rt.pause(a.id)
    elif cmd == "resume":
        rt.resume(a.id)
    elif cmd == "exec":
        proc = _exec_process(rt, a)
        pid = rt.exec(a.id, proc, console_socket=a.console_socket)
        if a.pid_file:
            with open(a.pid_file, "w") as f:
                f.write(str(pid))
        if a.detach:
            return 0
        return _wait_forwarding(pid)
    elif cmd == "ps":
        pids = rt.pids(a.id)
        if a.format == "json":
            print(json.dumps(pids))
        else:
            print("PID     CMD")
            for pid in pids:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        args = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                except OSError:
                    args = ""
                print(f"{pid:<7} {args}")
    elif cmd == "list":
        items = rt.list()
        if a.quiet:
            for s in items:
                print(s["id"])
        elif a.format == "json":
            print(json.dumps(items))
        else:
            print(f"{'ID':<24} {'PID':<8} {'STATUS':<10} {'BUNDLE':<40} CREATED")
            for s in items:
                print(f"{s['id']:<24} {s['pid']:<8} {s['status']:<10} {s['bundle']:<40} {s.get('created', '')}")
    elif cmd == "update":
        if a.resources:
            with open(a.resources, "rb") as f:
                res = json.loads(f.read())
        else:
            res = {}
            mem = {k: v for k, v in (("limit", a.memory), ("swap", a.memory_swap)) if v is not None}
            cpu = {k: v for k, v in (("quota", a.cpu_quota), ("period", a.cpu_period), ("shares", a.cpu_share))
                   if v is not None}
            if mem:
                res["memory"] = mem
            if cpu:
                res["cpu"] = cpu
            if a.pids_limit is not None:
                res["pids"] = {"limit": a.pids_limit}
        rt.update(a.id, res)
    elif cmd == "events":
        print(json.dumps({"type": "stats", "id": a.id, "data": rt.stats(a.id)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    a = _build_parser().parse_args(argv)
    try:
        return _dispatch(a)
    except (MatouError, OSError) as e:
        msg = str(e)
        if a.log:
            with open(a.log, "a") as f:
                f.write(json.dumps({"level": "error", "msg": msg}) + "\n" if a.log_format == "json" else msg + "\n")
        print(f"matou-runtime: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
