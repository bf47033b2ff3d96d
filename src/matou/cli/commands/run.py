"""run, create and start: a container from an image to its running process. Apart from the other container
commands because `run` is the hot path: this module and what it imports are all a `run` loads."""

from __future__ import annotations

import sys
import time

from matou.cli.commands import parse_or_exit
from matou.cli.context import Ctx
from matou.cli.flags import UsageError, flag
from matou.client.http import APIError
from matou.util import fastjson as json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _err(msg: str) -> None:
    sys.stderr.write(msg.rstrip("\n") + "\n")


def _exit_code_for(message: str) -> int:
    """docker's CLI: 126/127 when the program could not be run, else 125."""
    low = message.lower()
    if "executable file not found" in low or "no such file or directory" in low:
        return 127
    if "permission denied" in low or "not executable" in low or "exec format error" in low:
        return 126
    return 125


# ---------------------------------------------------------------------------- run / create

class Tracer:
    def __init__(self, on: bool) -> None:
        self.on = on
        self.t0 = time.perf_counter()
        self.last = self.t0
        self.rows: list[tuple[str, float]] = []

    def step(self, name: str) -> None:
        if self.on:
            now = time.perf_counter()
            self.rows.append((name, (now - self.last) * 1000))
            self.last = now

    def report(self, daemon: dict[str, Any] | None = None) -> None:
        if not self.on:
            return
        w = sys.stderr.write
        w("trace (client):\n")
        for name, ms in self.rows:
            w(f"  {name:<34}{ms:8.2f} ms\n")
        if daemon:
            w("trace (daemon):\n")
            for name, ms in daemon.items():
                w(f"  {name:<34}{float(ms):8.2f} ms\n")
        w(f"  {'total':<34}{(time.perf_counter() - self.t0) * 1000:8.2f} ms\n")


def _create_body(opts: dict[str, Any], image: str, cmd: list[str]) -> tuple[dict[str, Any], str | None]:
    from matou.cli.commands.runopts import build_create_body

    try:
        return build_create_body(opts, image, cmd)
    except UsageError as e:
        _err(f"matou: {e}\nSee 'matou run --help'.")
        raise SystemExit(125) from None


def _create(ctx: Ctx, opts: dict[str, Any], image: str, cmd: list[str], tracer: Tracer | None = None) -> str | None:
    body, name = _create_body(opts, image, cmd)
    api = ctx.api()
    pull = opts.get("pull") or "missing"
    if pull not in ("missing", "always", "never"):
        _err(f'matou: invalid pull option: \'{pull}\': must be one of "always", "missing" or "never"')
        raise SystemExit(125)
    if pull == "always":
        _pull(ctx, image, opts.get("platform"), opts.get("quiet"))
    try:
        r = api.container_create(body, name, opts.get("platform"))
    except APIError as e:
        if e.status == 404 and e.message.startswith("No such image") and pull == "missing":
            sys.stderr.write(f"Unable to find image '{_shown(image)}' locally\n")
            if not _pull(ctx, image, opts.get("platform"), opts.get("quiet")):
                raise SystemExit(125) from None
            try:
                r = api.container_create(body, name, opts.get("platform"))
            except APIError as e2:
                _err(f"matou: Error response from daemon: {e2.message}")
                raise SystemExit(125) from None
        else:
            _err(f"matou: Error response from daemon: {e.message}")
            raise SystemExit(125) from None
    if tracer:
        tracer.step("create (find image, record, layer)")
    for w in r.get("Warnings") or []:
        _err(f"WARNING: {w}")
    cid = r["Id"]
    if opts.get("cidfile"):
        try:
            with open(opts["cidfile"], "x") as f:
                f.write(cid)
        except FileExistsError:
            _err(f"matou: Container ID file found, make sure the other container isn't running or delete {opts['cidfile']}")
            raise SystemExit(125) from None
    return cid


def _shown(image: str) -> str:
    if ":" in image.rsplit("/", 1)[-1] or "@" in image:
        return image
    return image + ":latest"


def _pull(ctx: Ctx, image: str, platform: str | None, quiet: bool | None) -> bool:
    """Pull through the distribution command when it exists."""
    try:
        from matou.cli.commands import distribution
    except ImportError:
        _err(f"matou: Error response from daemon: No such image: {_shown(image)} (pulling is not available)")
        return False
    args = [image] + (["--platform", platform] if platform else []) + (["-q"] if quiet else [])
    return distribution.pull(ctx, args, to_stderr=True) == 0


def run(ctx: Ctx, argv: list[str]) -> int:
    from matou.cli.commands.runopts import RUN_FLAGS

    opts, pos = parse_or_exit(argv, RUN_FLAGS, "matou run [OPTIONS] IMAGE [COMMAND] [ARG...]",
                              "Create and run a new container from an image", min_args=1, interspersed=False,
                              cmd="run")
    tracer = Tracer(opts["trace"])
    image, cmd = pos[0], pos[1:]
    api = ctx.api()
    tracer.step("cli start + flags")
    if opts["detach"]:
        cid = _create(ctx, opts, image, cmd, tracer)
        assert cid is not None
        try:
            api.container_start(cid)
        except APIError as e:
            _err(f"matou: Error response from daemon: {e.message}")
            return _exit_code_for(e.message)
        tracer.step("start")
        ctx.out.write(cid + "\n")
        tracer.report()
        return 0
    if not (opts["tty"] or opts["interactive"] or opts["attach"] or opts.get("cidfile")) and \
            (opts.get("pull") or "missing") == "missing":
        code = _run_one_request(ctx, opts, image, cmd, tracer)
        if code is not None:
            return code
    cid = _create(ctx, opts, image, cmd, tracer)
    assert cid is not None
    attach = [a.lower() for a in opts["attach"]] or (["stdout", "stderr"] + (["stdin"] if opts["interactive"] else []))
    tty = opts["tty"]
    stdin = "stdin" in attach
    if tty and stdin and not sys.stdin.isatty():
        _err("the input device is not a TTY")
        return 1
    resp = api.container_attach(cid, {"stream": 1, "stdin": 1 if stdin else None,
                                      "stdout": 1 if "stdout" in attach else None,
                                      "stderr": 1 if "stderr" in attach else None,
                                      "detachKeys": opts["detach_keys"]})
    tracer.step("attach")
    waiter = api.container_wait(cid, "removed" if opts["rm"] else "next-exit")
    tracer.step("wait (registered)")
    try:
        hdrs = api.container_start(cid, trace=tracer.on)
    except APIError as e:
        resp.close()
        waiter.close()
        _err(f"matou: Error response from daemon: {e.message}")
        code = _exit_code_for(e.message)
        if opts["rm"]:
            try:
                api.container_remove(cid, True, True)
            except APIError:
                pass
        return code
    tracer.step("start (mount, spec, monitor, exec)")
    rc = _stream(ctx, cid, resp, tty=tty, stdin=stdin, resize=lambda h, w: api.container_resize(cid, h, w),
                 detach_keys=opts["detach_keys"])
    tracer.step("stream until exit")
    if rc == "detached":
        waiter.close()
        return 0
    try:
        res = waiter.json() or {}
    finally:
        waiter.close()
    tracer.step("wait (exit status)")
    tracer.report(json.loads(hdrs.get("x-matou-trace", "{}")) if tracer.on else None)
    if res.get("Error") and res["Error"].get("Message") and res.get("StatusCode", 0) >= 125:
        _err(f"matou: {res['Error']['Message']}")
    return int(res.get("StatusCode", 0))


def _run_one_request(ctx: Ctx, opts: dict[str, Any], image: str, cmd: list[str], tracer: Tracer) -> int | None:
    """`run` with output only (no -d/-i/-t) in one request to matoud (/containers/run) instead of create,
    attach, wait and start. None when the daemon can't do it here (an image to pull, an older daemon): the
    caller then takes the usual path."""
    from matou.client.stream import pump_run

    body, name = _create_body(opts, image, cmd)
    try:
        resp = ctx.api().container_run(body, name, opts.get("platform"), bool(opts["rm"]), trace=tracer.on)
    except APIError as e:
        if e.status in (404, 405):  # no such image (the usual path pulls it) or no such endpoint
            return None
        _err(f"matou: Error response from daemon: {e.message}")
        return 125
    tracer.step("create + start (one request)")
    try:
        control = pump_run(resp)
    finally:
        resp.close()
    tracer.step("stream until exit")
    first = control[0] if control else {}
    end = control[-1] if len(control) > 1 else {}
    for w in first.get("Warnings") or []:
        _err(f"WARNING: {w}")
    if "StatusCode" not in end:
        _err("matou: the daemon closed the connection before the container's exit status arrived")
        return 125
    tracer.report(end.get("Trace") if tracer.on else None)
    code = int(end["StatusCode"])
    if end.get("Error"):
        _err(f"matou: Error response from daemon: {end['Error']}")
        if code not in (126, 127):
            code = _exit_code_for(end["Error"])
    return code


def _stream(ctx: Ctx, cid: str, resp: Any, *, tty: bool, stdin: bool, resize: Any,
            detach_keys: str | None = None) -> str:
    from matou.client.stream import RawTerminal, pump, terminal_size
    from matou.util.detachkeys import parse

    keys = parse(detach_keys) if stdin else None

    def do_resize() -> None:
        sz = terminal_size(sys.stdout.fileno() if sys.stdout.isatty() else 0)
        if sz:
            resize(*sz)

    on_resize = None
    if tty and (sys.stdout.isatty() or sys.stdin.isatty()):
        on_resize = do_resize
        do_resize()
    sys.stdout.flush()
    if tty and stdin and sys.stdin.isatty():
        with RawTerminal(sys.stdin.fileno()):
            detached = pump(resp, tty=tty, stdin=stdin, on_resize=on_resize, detach_keys=keys)
    else:
        detached = pump(resp, tty=tty, stdin=stdin, on_resize=on_resize, detach_keys=keys)
    return "detached" if detached else "done"


def create(ctx: Ctx, argv: list[str]) -> int:
    from matou.cli.commands.runopts import RUN_FLAGS

    opts, pos = parse_or_exit(argv, RUN_FLAGS, "matou create [OPTIONS] IMAGE [COMMAND] [ARG...]",
                              "Create a new container", min_args=1, interspersed=False, cmd="create")
    cid = _create(ctx, opts, pos[0], pos[1:])
    ctx.out.write(f"{cid}\n")
    return 0


def start(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("-a", "--attach", help="Attach STDOUT/STDERR and forward signals"),
        flag("--detach-keys", kind="str", help="Override the key sequence for detaching a container"),
        flag("-i", "--interactive", help="Attach container's STDIN"),
    ], "matou start [OPTIONS] CONTAINER [CONTAINER...]", "Start one or more stopped containers", min_args=1,
        cmd="start")
    api = ctx.api()
    if opts["attach"] or opts["interactive"]:
        if len(pos) > 1:
            _err("matou: you cannot start and attach multiple containers at once")
            return 1
        info = api.container_inspect(pos[0])
        tty = bool(info["Config"]["Tty"])
        stdin = opts["interactive"] and info["Config"]["OpenStdin"]
        resp = api.container_attach(info["Id"], {"stream": 1, "stdin": 1 if stdin else None, "stdout": 1,
                                                 "stderr": 1, "detachKeys": opts["detach_keys"]})
        waiter = api.container_wait(info["Id"], "next-exit")
        try:
            api.container_start(info["Id"])
        except APIError as e:
            resp.close()
            waiter.close()
            _err(f"Error response from daemon: {e.message}")
            return 1
        _stream(ctx, info["Id"], resp, tty=tty, stdin=bool(stdin),
                resize=lambda h, w: api.container_resize(info["Id"], h, w))
        res = waiter.json() or {}
        waiter.close()
        return int(res.get("StatusCode", 0))
    rc = 0
    for ref in pos:
        try:
            api.container_start(ref)
            ctx.out.write(ref + "\n")
        except APIError as e:
            _err(f"Error response from daemon: {e.message}")
            rc = 1
    if rc:
        _err("Error: failed to start containers: " + ", ".join(pos))
    return rc
