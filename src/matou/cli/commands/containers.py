"""Container commands: stop, kill, restart, rm, ps, logs, attach, exec, wait, top, pause, unpause, rename, cp,
diff, commit, export, stats, port, update, container ... (run, create and start: run.py)"""

from __future__ import annotations

import sys
import time

from matou.cli.commands import filters_json as _filters
from matou.cli.commands import parse_or_exit
from matou.cli.context import Ctx
from matou.cli.flags import UsageError, flag
from matou.cli.output import ago, bytes_size, fail, format_rows, human_size
from matou.client.http import APIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _each(ctx: Ctx, refs: list[str], fn: Any, verb: str) -> int:
    rc = 0
    for ref in refs:
        try:
            fn(ref)
            ctx.out.write(ref + "\n")
        except APIError as e:
            fail(f"Error response from daemon: {e.message}")
            rc = 1
    return rc


def stop(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("-s", "--signal", kind="str", help="Signal to send to the container"),
        flag("-t", "--time", "--timeout", kind="int", help="Seconds to wait before killing the container",
             dest="time"),
    ], "matou stop [OPTIONS] CONTAINER [CONTAINER...]", "Stop one or more running containers", min_args=1, cmd="stop")
    api = ctx.api()
    return _each(ctx, pos, lambda r: api.container_stop(r, opts["time"], opts["signal"]), "stop")


def restart(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("-s", "--signal", kind="str", help="Signal to send to the container"),
        flag("-t", "--time", "--timeout", kind="int", help="Seconds to wait before killing the container",
             dest="time"),
    ], "matou restart [OPTIONS] CONTAINER [CONTAINER...]", "Restart one or more containers", min_args=1,
        cmd="restart")
    api = ctx.api()
    return _each(ctx, pos, lambda r: api.container_restart(r, opts["time"], opts["signal"]), "restart")


def kill(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [flag("-s", "--signal", kind="str", help="Signal to send to the container")],
                              "matou kill [OPTIONS] CONTAINER [CONTAINER...]", "Kill one or more running containers",
                              min_args=1, cmd="kill")
    api = ctx.api()
    return _each(ctx, pos, lambda r: api.container_kill(r, opts["signal"]), "kill")


def rm(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("-f", "--force", help="Force the removal of a running container (uses SIGKILL)"),
        flag("-l", "--link", help="Remove the specified link"),
        flag("-v", "--volumes", help="Remove anonymous volumes associated with the container"),
    ], "matou rm [OPTIONS] CONTAINER [CONTAINER...]", "Remove one or more containers", min_args=1, cmd="rm")
    api = ctx.api()
    return _each(ctx, pos, lambda r: api.container_remove(r, opts["force"], opts["volumes"]), "rm")


def pause(ctx: Ctx, argv: list[str]) -> int:
    _o, pos = parse_or_exit(argv, [], "matou pause CONTAINER [CONTAINER...]",
                            "Pause all processes within one or more containers", min_args=1, cmd="pause")
    api = ctx.api()
    return _each(ctx, pos, api.container_pause, "pause")


def unpause(ctx: Ctx, argv: list[str]) -> int:
    _o, pos = parse_or_exit(argv, [], "matou unpause CONTAINER [CONTAINER...]",
                            "Unpause all processes within one or more containers", min_args=1, cmd="unpause")
    api = ctx.api()
    return _each(ctx, pos, api.container_unpause, "unpause")


def rename(ctx: Ctx, argv: list[str]) -> int:
    _o, pos = parse_or_exit(argv, [], "matou rename CONTAINER NEW_NAME", "Rename a container", min_args=2,
                            max_args=2, cmd="rename")
    try:
        ctx.api().container_rename(pos[0], pos[1])
    except APIError as e:
        return fail(f"Error response from daemon: {e.message}")
    return 0


def wait(ctx: Ctx, argv: list[str]) -> int:
    _o, pos = parse_or_exit(argv, [], "matou wait CONTAINER [CONTAINER...]",
                            "Block until one or more containers stop, then print their exit codes", min_args=1,
                            cmd="wait")
    api = ctx.api()
    rc = 0
    for ref in pos:
        try:
            r = api.container_wait(ref)
            res = r.json() or {}
            r.close()
            ctx.out.write(f"{res.get('StatusCode', 0)}\n")
            ctx.out.flush()
        except APIError as e:
            fail(f"Error response from daemon: {e.message}")
            rc = 1
    return rc


# ---------------------------------------------------------------------------- ps

def ps(ctx: Ctx, argv: list[str]) -> int:
    opts, _ = parse_or_exit(argv, [
        flag("-a", "--all", help="Show all containers (default shows just running)"),
        flag("-f", "--filter", kind="list", help="Filter output based on conditions provided"),
        flag("--format", kind="str", help="Format output using a custom template"),
        flag("-n", "--last", kind="int", default=-1, help="Show n last created containers (includes all states)"),
        flag("-l", "--latest", help="Show the latest created container (includes all states)"),
        flag("--no-trunc", help="Don't truncate output"),
        flag("-q", "--quiet", help="Only display container IDs"),
        flag("-s", "--size", help="Display total file sizes"),
    ], "matou ps [OPTIONS]", "List containers", max_args=0, cmd="ps")
    fmt = opts["format"]
    size = opts["size"] or bool(fmt and ".Size" in fmt)
    q = {"all": opts["all"] or None, "limit": opts["last"] if opts["last"] > 0 else None,
         "latest": opts["latest"] or None, "size": size or None, "filters": _filters(opts["filter"])}
    data = ctx.api().containers(q)
    trunc = not opts["no_trunc"]
    rows = []
    for c in data:
        cmd = c.get("Command", "")
        if trunc and len(cmd) > 20:
            cmd = cmd[:19] + "…"
        image = c.get("Image", "")
        if trunc and image.startswith("sha256:"):
            image = image[7:19]
        ports = _ports_text(c.get("Ports") or [])
        row = {
            "ID": c["Id"][:12] if trunc else c["Id"], "Image": image, "Command": f'"{cmd}"',
            "CreatedSince": ago(c["Created"]), "RunningFor": ago(c["Created"]),
            "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(c["Created"])),
            "Status": c.get("Status", ""), "State": c.get("State", ""), "Ports": ports,
            "Names": ",".join(n.lstrip("/") for n in c.get("Names") or []),
            "Labels": ",".join(f"{k}={v}" for k, v in sorted((c.get("Labels") or {}).items())),
            "Mounts": ",".join((m.get("Name") or m.get("Source", ""))[:15] for m in c.get("Mounts") or []),
            "Networks": ",".join(sorted((c.get("NetworkSettings") or {}).get("Networks") or {})),
        }
        if size:
            rw, root = c.get("SizeRw", 0) or 0, c.get("SizeRootFs", 0) or 0
            row["Size"] = f"{human_size(rw)} (virtual {human_size(root)})"
        rows.append(row)
    default = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.CreatedSince}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
    if size:
        default += "\t{{.Size}}"
    format_rows(fmt, rows, default,
                {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedSince": "CREATED",
                 "RunningFor": "CREATED", "CreatedAt": "CREATED AT", "Status": "STATUS", "State": "STATE",
                 "Ports": "PORTS", "Names": "NAMES", "Size": "SIZE", "Labels": "LABELS", "Mounts": "MOUNTS",
                 "Networks": "NETWORKS"}, quiet_key="ID", quiet=opts["quiet"], out=ctx.out)
    return 0


def _ports_text(ports: list[dict[str, Any]]) -> str:
    out = []
    for p in sorted(ports, key=lambda p: (p.get("PrivatePort", 0), p.get("Type", ""), p.get("IP", ""))):
        if p.get("PublicPort"):
            ip = p.get("IP") or "0.0.0.0"
            host = f"[{ip}]" if ":" in ip else ip
            out.append(f"{host}:{p['PublicPort']}->{p['PrivatePort']}/{p['Type']}")
        else:
            out.append(f"{p['PrivatePort']}/{p['Type']}")
    return ", ".join(out)


# ---------------------------------------------------------------------------- logs / attach / exec

def logs(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("--details", help="Show extra details provided to logs"),
        flag("-f", "--follow", help="Follow log output"),
        flag("--since", kind="str", help="Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m)"),
        flag("-n", "--tail", kind="str", default="all", help='Number of lines to show from the end of the logs'),
        flag("-t", "--timestamps", help="Show timestamps"),
        flag("--until", kind="str", help="Show logs before a timestamp or relative"),
    ], "matou logs [OPTIONS] CONTAINER", "Fetch the logs of a container", min_args=1, max_args=1, cmd="logs")
    api = ctx.api()
    info = api.container_inspect(pos[0])
    since = _relative_time(opts["since"])
    until = _relative_time(opts["until"])
    r = api.container_logs(info["Id"], {"stdout": 1, "stderr": 1, "follow": 1 if opts["follow"] else None,
                                        "timestamps": 1 if opts["timestamps"] else None, "tail": opts["tail"],
                                        "since": since, "until": until})
    from matou.client.stream import demux

    out = open(sys.stdout.fileno(), "wb", buffering=0, closefd=False)
    err = open(sys.stderr.fileno(), "wb", buffering=0, closefd=False)
    buf = bytearray()
    tty = bool(info["Config"]["Tty"])
    try:
        for chunk in r.iter_raw():
            if tty:
                out.write(chunk)
            else:
                buf += chunk
                demux(buf, out, err)
    finally:
        r.close()
    return 0


def _relative_time(v: str | None) -> str | None:
    if not v:
        return None
    units = {"s": 1, "m": 60, "h": 3600}
    import re

    m = re.fullmatch(r"(\d+)([smh])", v)
    if m:
        return str(int(time.time()) - int(m.group(1)) * units[m.group(2)])
    return v


def attach(ctx: Ctx, argv: list[str]) -> int:
    from matou.cli.commands.run import _stream

    opts, pos = parse_or_exit(argv, [
        flag("--detach-keys", kind="str", help="Override the key sequence for detaching a container"),
        flag("--no-stdin", help="Do not attach STDIN"),
        flag("--sig-proxy", kind="bool", default=True, help="Proxy all received signals to the process"),
    ], "matou attach [OPTIONS] CONTAINER", "Attach local standard input, output, and error streams to a running "
       "container", min_args=1, max_args=1, cmd="attach")
    api = ctx.api()
    info = api.container_inspect(pos[0])
    if not info["State"]["Running"]:
        return fail("You cannot attach to a stopped container, start it first")
    if info["State"]["Paused"]:
        return fail("You cannot attach to a paused container, unpause it first")
    tty = bool(info["Config"]["Tty"])
    stdin = not opts["no_stdin"] and bool(info["Config"]["OpenStdin"])
    if tty and stdin and not sys.stdin.isatty():
        return fail("the input device is not a TTY")
    resp = api.container_attach(info["Id"], {"stream": 1, "stdin": 1 if stdin else None, "stdout": 1, "stderr": 1,
                                             "detachKeys": opts["detach_keys"]})
    if _stream(ctx, info["Id"], resp, tty=tty, stdin=stdin,
               resize=lambda h, w: api.container_resize(info["Id"], h, w),
               detach_keys=opts["detach_keys"]) == "detached":
        return 0
    after = api.container_inspect(info["Id"])
    if after["State"]["Running"]:
        return 0
    return int(after["State"]["ExitCode"])


def exec_(ctx: Ctx, argv: list[str]) -> int:
    from matou.cli.commands.run import _stream

    opts, pos = parse_or_exit(argv, [
        flag("-d", "--detach", help="Detached mode: run command in the background"),
        flag("--detach-keys", kind="str", help="Override the key sequence for detaching a container"),
        flag("-e", "--env", kind="list", help="Set environment variables"),
        flag("--env-file", kind="list", help="Read in a file of environment variables"),
        flag("-i", "--interactive", help="Keep STDIN open even if not attached"),
        flag("--privileged", help="Give extended privileges to the command"),
        flag("-t", "--tty", help="Allocate a pseudo-TTY"),
        flag("-u", "--user", kind="str", help="Username or UID (format: <name|uid>[:<group|gid>])"),
        flag("-w", "--workdir", kind="str", help="Working directory inside the container"),
    ], "matou exec [OPTIONS] CONTAINER COMMAND [ARG...]", "Execute a command in a running container", min_args=2,
        interspersed=False, cmd="exec")
    from matou.cli.commands.runopts import parse_env

    api = ctx.api()
    try:
        env = parse_env(opts)
    except UsageError as e:
        return fail(str(e), 125)
    tty, stdin, detach = opts["tty"], opts["interactive"], opts["detach"]
    if tty and stdin and not sys.stdin.isatty() and not detach:
        return fail("the input device is not a TTY")
    body = {"User": opts["user"] or "", "Privileged": opts["privileged"], "Tty": tty, "AttachStdin": stdin and not detach,
            "AttachStdout": not detach, "AttachStderr": not detach, "Detach": detach,
            "DetachKeys": opts["detach_keys"] or "", "Env": env, "WorkingDir": opts["workdir"] or "",
            "Cmd": pos[1:]}
    try:
        eid = api.exec_create(pos[0], body)["Id"]
    except APIError as e:
        return fail(f"Error response from daemon: {e.message}", 1 if e.status != 404 else 1)
    if detach:
        try:
            api.exec_start(eid, {"Detach": True, "Tty": tty}, hijack=False).close()
        except APIError as e:
            return fail(f"Error response from daemon: {e.message}", 126)
        return 0
    try:
        resp = api.exec_start(eid, {"Detach": False, "Tty": tty}, hijack=True)
    except APIError as e:
        return fail(f"Error response from daemon: {e.message}", 126)
    _stream(ctx, pos[0], resp, tty=tty, stdin=stdin, resize=lambda h, w: api.exec_resize(eid, h, w))
    info = api.exec_inspect(eid)
    code = info.get("ExitCode")
    if code is None:
        for _ in range(50):
            time.sleep(0.02)
            code = api.exec_inspect(eid).get("ExitCode")
            if code is not None:
                break
    return int(code or 0)


# ---------------------------------------------------------------------------- inspect-ish

def top(ctx: Ctx, argv: list[str]) -> int:
    _o, pos = parse_or_exit(argv, [], "matou top CONTAINER [ps OPTIONS]",
                            "Display the running processes of a container", min_args=1, interspersed=False, cmd="top")
    r = ctx.api().container_top(pos[0], " ".join(pos[1:]) or None)
    from matou.cli.output import tabwrite

    tabwrite([r["Titles"]] + [list(p) for p in r.get("Processes") or []], ctx.out, padding=1, minwidth=0)
    return 0


def port(ctx: Ctx, argv: list[str]) -> int:
    _o, pos = parse_or_exit(argv, [], "matou port CONTAINER [PRIVATE_PORT[/PROTO]]",
                            "List port mappings or a specific mapping for the container", min_args=1, max_args=2,
                            cmd="port")
    info = ctx.api().container_inspect(pos[0])
    ports = (info.get("NetworkSettings") or {}).get("Ports") or {}
    if len(pos) == 2:
        key = pos[1] if "/" in pos[1] else pos[1] + "/tcp"
        bindings = ports.get(key)
        if not bindings:
            return fail(f"Error: No public port '{key}' published for {pos[0]}")
        for b in bindings:
            ctx.out.write(f"{b.get('HostIp') or '0.0.0.0'}:{b['HostPort']}\n")
        return 0
    for key in sorted(ports, key=lambda k: (int(k.split("/")[0]), k)):
        for b in ports[key] or []:
            ctx.out.write(f"{key} -> {b.get('HostIp') or '0.0.0.0'}:{b['HostPort']}\n")
    return 0


def diff(ctx: Ctx, argv: list[str]) -> int:
    _o, pos = parse_or_exit(argv, [], "matou diff CONTAINER",
                            "Inspect changes to files or directories on a container's filesystem", min_args=1,
                            max_args=1, cmd="diff")
    for ch in ctx.api().container_changes(pos[0]) or []:
        ctx.out.write(f"{'CAD'[ch['Kind']]} {ch['Path']}\n")
    return 0


def commit(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("-a", "--author", kind="str", help='Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")'),
        flag("-c", "--change", kind="list", help="Apply Dockerfile instruction to the created image"),
        flag("-m", "--message", kind="str", help="Commit message"),
        flag("-p", "--pause", kind="bool", default=True, help="Pause container during commit"),
    ], "matou commit [OPTIONS] CONTAINER [REPOSITORY[:TAG]]", "Create a new image from a container's changes",
        min_args=1, max_args=2, cmd="commit")
    repo = tag = None
    if len(pos) > 1:
        repo = pos[1]
        colon, slash = repo.rfind(":"), repo.rfind("/")
        if colon > slash:
            repo, tag = repo[:colon], repo[colon + 1:]
    r = ctx.api().commit({"container": pos[0], "repo": repo, "tag": tag, "comment": opts["message"],
                          "author": opts["author"], "pause": 1 if opts["pause"] else 0,
                          "changes": opts["change"] or None})
    ctx.out.write(r["Id"] + "\n")
    return 0


def export(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [flag("-o", "--output", kind="str", help="Write to a file, instead of STDOUT")],
                              "matou export [OPTIONS] CONTAINER", "Export a container's filesystem as a tar archive",
                              min_args=1, max_args=1, cmd="export")
    if not opts["output"] and sys.stdout.isatty():
        return fail("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    r = ctx.api().container_export(pos[0])
    out = open(opts["output"], "wb") if opts["output"] else open(sys.stdout.fileno(), "wb", closefd=False)
    try:
        with out:
            for chunk in r.iter_raw():
                out.write(chunk)
    finally:
        r.close()
    return 0


def stats(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("-a", "--all", help="Show all containers (default shows just running)"),
        flag("--format", kind="str", help="Format output using a custom template"),
        flag("--no-stream", help="Disable streaming stats and only pull the first result"),
        flag("--no-trunc", help="Do not truncate output"),
    ], "matou stats [OPTIONS] [CONTAINER...]", "Display a live stream of container(s) resource usage statistics",
        cmd="stats")
    api = ctx.api()
    refs = pos or [c["Id"] for c in api.containers({"all": opts["all"] or None})]
    while True:
        rows = []
        for ref in refs:
            try:
                s1 = api.container_stats(ref, False).json()
            except APIError as e:
                fail(f"Error response from daemon: {e.message}")
                return 1
            rows.append(_stats_row(s1, opts["no_trunc"]))
        if not opts["no_stream"]:
            ctx.out.write("\x1b[2J\x1b[H")
        format_rows(opts["format"], rows,
                    "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}",
                    {"ID": "CONTAINER ID", "Container": "CONTAINER", "Name": "NAME", "CPUPerc": "CPU %",
                     "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O",
                     "PIDs": "PIDS"}, out=ctx.out)
        ctx.out.flush()
        if opts["no_stream"]:
            return 0
        time.sleep(1)


def _stats_row(s: dict[str, Any], no_trunc: bool) -> dict[str, Any]:
    cpu = s.get("cpu_stats") or {}
    pre = s.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get("total_usage", 0))
    sys_delta = (cpu.get("system_cpu_usage", 0) or 0) - (pre.get("system_cpu_usage", 0) or 0)
    ncpu = cpu.get("online_cpus") or 1
    cpu_pct = (cpu_delta / sys_delta) * ncpu * 100.0 if sys_delta > 0 and cpu_delta > 0 else 0.0
    mem = s.get("memory_stats") or {}
    usage = mem.get("usage", 0) - ((mem.get("stats") or {}).get("total_inactive_file", 0) or
                                   (mem.get("stats") or {}).get("inactive_file", 0) or 0)
    limit = mem.get("limit", 0) or 0
    nets = s.get("networks") or {}
    rx = sum(n.get("rx_bytes", 0) for n in nets.values())
    tx = sum(n.get("tx_bytes", 0) for n in nets.values())
    cid = s.get("id", "")
    return {"ID": cid if no_trunc else cid[:12], "Container": cid[:12], "Name": s.get("name", "").lstrip("/"),
            "CPUPerc": f"{cpu_pct:.2f}%", "MemUsage": f"{bytes_size(max(usage, 0))} / {bytes_size(limit)}",
            "MemPerc": f"{(usage / limit * 100 if limit else 0):.2f}%",
            "NetIO": f"{human_size(rx)} / {human_size(tx)}", "BlockIO": "0B / 0B",
            "PIDs": str((s.get("pids_stats") or {}).get("current", 0))}


def update(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("-c", "--cpu-shares", kind="int", help="CPU shares (relative weight)"),
        flag("--cpu-period", kind="int", help="Limit CPU CFS period"),
        flag("--cpu-quota", kind="int", help="Limit CPU CFS quota"),
        flag("--cpus", kind="str", help="Number of CPUs"),
        flag("--cpuset-cpus", kind="str", help="CPUs in which to allow execution"),
        flag("-m", "--memory", kind="str", help="Memory limit"),
        flag("--memory-swap", kind="str", help="Swap limit equal to memory plus swap"),
        flag("--memory-reservation", kind="str", help="Memory soft limit"),
        flag("--pids-limit", kind="int", help="Tune container pids limit (set -1 for unlimited)"),
        flag("--restart", kind="str", help="Restart policy to apply when a container exits"),
    ], "matou update [OPTIONS] CONTAINER [CONTAINER...]", "Update configuration of one or more containers",
        min_args=1, cmd="update")
    from matou.cli.commands.runopts import parse_restart, ram_in_bytes

    body: dict[str, Any] = {}
    try:
        if opts["memory"]:
            body["Memory"] = ram_in_bytes(opts["memory"])
        if opts["memory_swap"]:
            body["MemorySwap"] = ram_in_bytes(opts["memory_swap"])
        if opts["memory_reservation"]:
            body["MemoryReservation"] = ram_in_bytes(opts["memory_reservation"])
        if opts["cpus"]:
            body["NanoCpus"] = int(float(opts["cpus"]) * 1e9)
        if opts["restart"]:
            body["RestartPolicy"] = parse_restart(opts["restart"])
    except (UsageError, ValueError) as e:
        return fail(str(e), 125)
    for k, key in (("cpu_shares", "CpuShares"), ("cpu_period", "CpuPeriod"), ("cpu_quota", "CpuQuota"),
                   ("pids_limit", "PidsLimit")):
        if opts[k] is not None:
            body[key] = opts[k]
    if opts["cpuset_cpus"]:
        body["CpusetCpus"] = opts["cpuset_cpus"]
    api = ctx.api()
    return _each(ctx, pos, lambda r: api.container_update(r, body), "update")


# ---------------------------------------------------------------------------- cp

def cp(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("-a", "--archive", help="Archive mode (copy all uid/gid information)"),
        flag("-L", "--follow-link", help="Always follow symbol link in SRC_PATH"),
        flag("-q", "--quiet", help="Suppress progress output during copy"),
    ], "matou cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n\tmatou cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH",
        "Copy files/folders between a container and the local filesystem", min_args=2, max_args=2, cmd="cp")
    src, dst = pos

    def split(p: str) -> tuple[str | None, str]:
        if p.startswith(("/", ".")) or ":" not in p:
            return None, p
        c, _, path = p.partition(":")
        return c, path

    sc, sp = split(src)
    dc, dp = split(dst)
    if sc and dc:
        return fail("copying between containers is not supported")
    if not sc and not dc:
        return fail("must specify at least one container source")
    from matou.cli.commands import cptar

    api = ctx.api()
    try:
        if sc:
            return cptar.copy_from(api, sc, sp, dp)
        assert dc is not None
        return cptar.copy_to(api, dc, dp, sp, follow=opts["follow_link"])
    except APIError as e:
        return fail(f"Error response from daemon: {e.message}")


# ---------------------------------------------------------------------------- prune / group

def prune(ctx: Ctx, argv: list[str]) -> int:
    opts, _ = parse_or_exit(argv, [
        flag("--filter", kind="list", help="Provide filter values (e.g. 'until=<timestamp>')"),
        flag("-f", "--force", help="Do not prompt for confirmation"),
    ], "matou container prune [OPTIONS]", "Remove all stopped containers", max_args=0, cmd="container prune")
    if not opts["force"] and sys.stdin.isatty():
        ctx.out.write("WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ")
        ctx.out.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    r = ctx.api().containers_prune(_filters(opts["filter"]))
    deleted = r.get("ContainersDeleted") or []
    if deleted:
        ctx.out.write("Deleted Containers:\n" + "".join(f"{x}\n" for x in deleted) + "\n")
    ctx.out.write(f"Total reclaimed space: {human_size(r.get('SpaceReclaimed', 0))}\n")
    return 0


def container(ctx: Ctx, argv: list[str]) -> int:
    sub = argv[0] if argv else ""
    rest = argv[1:]
    from matou.cli.commands.run import create, run, start

    table = {"attach": attach, "commit": commit, "cp": cp, "create": create, "diff": diff, "exec": exec_,
             "export": export, "kill": kill, "logs": logs, "ls": ps, "list": ps, "ps": ps, "pause": pause,
             "port": port, "prune": prune, "rename": rename, "restart": restart, "rm": rm, "remove": rm,
             "run": run, "start": start, "stats": stats, "stop": stop, "top": top, "unpause": unpause,
             "update": update, "wait": wait}
    if sub == "inspect":
        from matou.cli.commands.inspect import inspect

        return inspect(ctx, ["--type", "container"] + rest)
    fn = table.get(sub)
    if fn is None:
        ctx.out.write("\nUsage:  matou container COMMAND\n\nManage containers\n\nCommands:\n" +
                      "".join(f"  {k}\n" for k in sorted(table) + ["inspect"]))
        return 0 if not sub else 1
    return fn(ctx, rest)
