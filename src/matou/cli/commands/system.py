"""version, info, daemon, events, system df|prune|info|events."""

from __future__ import annotations

import sys

from matou.cli.commands import filter_map, filters_json, parse_or_exit
from matou.cli.context import Ctx
from matou.cli.flags import flag
from matou.cli.output import format_rows, human_size, render, unescape
from matou.util import fastjson as json


def version(ctx: Ctx, argv: list[str]) -> int:
    opts, _ = parse_or_exit(argv, [flag("-f", "--format", kind="str", help="Format output using a Go template")],
                            "matou version [OPTIONS]", "Show the matou version information", max_args=0)
    import posix  # not os: importing os.py costs ~2 ms of start-up

    import matou

    machine = posix.uname().machine
    pyver = ".".join(str(x) for x in sys.version_info[:3])
    client = {"Version": matou.__version__, "ApiVersion": "1.45", "Os": "linux",
              "Arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine), "GoVersion": "python" + pyver}
    try:
        server = ctx.api().version()
    except Exception as e:  # still show the client part, like docker
        server = None
        err = str(e)
    if opts["format"]:
        ctx.out.write(render(unescape(opts["format"]), {"Client": client, "Server": server}) + "\n")
        return 0
    ctx.out.write(
        "Client:\n"
        f" Version:           {client['Version']}\n"
        f" API version:       {client['ApiVersion']}\n"
        f" Python version:    {pyver}\n"
        f" OS/Arch:           {client['Os']}/{client['Arch']}\n")
    if server is None:
        sys.stderr.write(f"{err}\n")
        return 1
    ctx.out.write(
        f"\nServer: {server.get('Platform', {}).get('Name', 'matou Engine')}\n"
        " Engine:\n"
        f"  Version:          {server['Version']}\n"
        f"  API version:      {server['ApiVersion']} (minimum version {server['MinAPIVersion']})\n"
        f"  Runtime:          {server['GoVersion']}\n"
        f"  OS/Arch:          {server['Os']}/{server['Arch']}\n"
        f"  Kernel:           {server['KernelVersion']}\n")
    return 0


def info(ctx: Ctx, argv: list[str]) -> int:
    opts, _ = parse_or_exit(argv, [flag("-f", "--format", kind="str", help="Format output using a Go template")],
                            "matou info [OPTIONS]", "Display system-wide information", max_args=0)
    i = ctx.api().info()
    if opts["format"]:
        ctx.out.write(render(unescape(opts["format"]), i) + "\n")
        return 0
    w = ctx.out.write
    w("Server:\n")
    w(f" Containers: {i['Containers']}\n  Running: {i['ContainersRunning']}\n  Paused: {i['ContainersPaused']}\n"
      f"  Stopped: {i['ContainersStopped']}\n")
    w(f" Images: {i['Images']}\n")
    w(f" Server Version: {i['ServerVersion']}\n")
    w(f" Storage Driver: {i['Driver']}\n")
    for k, v in i.get("DriverStatus") or []:
        w(f"  {k}: {v}\n")
    w(f" Logging Driver: {i['LoggingDriver']}\n Cgroup Driver: {i['CgroupDriver']}\n"
      f" Cgroup Version: {i['CgroupVersion']}\n")
    w(f" Runtimes: {' '.join(sorted(i.get('Runtimes') or {}))}\n Default Runtime: {i['DefaultRuntime']}\n")
    w(" Security Options:\n" + "".join(f"  {s}\n" for s in i.get("SecurityOptions") or []))
    w(f" Kernel Version: {i['KernelVersion']}\n Operating System: {i['OperatingSystem']}\n OSType: {i['OSType']}\n"
      f" Architecture: {i['Architecture']}\n CPUs: {i['NCPU']}\n Total Memory: {human_size(i['MemTotal'])}\n"
      f" Name: {i['Name']}\n ID: {i['ID']}\n Docker Root Dir: {i['DockerRootDir']}\n Debug Mode: {str(i['Debug']).lower()}\n")
    mirrors = (i.get("RegistryConfig") or {}).get("Mirrors") or []
    insecure = (i.get("RegistryConfig") or {}).get("InsecureRegistryCIDRs") or []
    w(" Insecure Registries:\n" + "".join(f"  {x}\n" for x in insecure))
    if mirrors:
        w(" Registry Mirrors:\n" + "".join(f"  {x}\n" for x in mirrors))
    w(f" Live Restore Enabled: {str(i['LiveRestoreEnabled']).lower()}\n")
    return 0


def daemon(ctx: Ctx, argv: list[str]) -> int:
    """Run matoud in the foreground, with its own flags."""
    import os

    here = os.path.dirname(os.path.abspath(sys.argv[0] or ""))
    exe = os.path.join(here, "matoud")
    if os.access(exe, os.X_OK):
        os.execv(exe, [exe] + argv)
    os.execv(sys.executable, [sys.executable, "-m", "matou.daemon"] + argv)
    return 0


def events(ctx: Ctx, argv: list[str]) -> int:
    opts, _ = parse_or_exit(argv, [
        flag("-f", "--filter", kind="list", help="Filter output based on conditions provided"),
        flag("--format", kind="str", help="Format the output using the given Go template"),
        flag("--since", kind="str", help="Show all events created since timestamp"),
        flag("--until", kind="str", help="Stream events until this timestamp"),
    ], "matou events [OPTIONS]", "Get real time events from the server", max_args=0)
    r = ctx.api().events({"since": opts["since"], "until": opts["until"], "filters": filters_json(opts["filter"])})
    try:
        for ev in r.iter_json():
            if opts["format"]:
                fmt = unescape(opts["format"])
                ctx.out.write((json.dumps(ev) if fmt == "json" else render(fmt, ev)) + "\n")
            else:
                from datetime import datetime

                ts = datetime.fromtimestamp(ev["timeNano"] / 1e9).strftime("%Y-%m-%dT%H:%M:%S.%f000%z")
                attrs = ", ".join(f"{k}={v}" for k, v in sorted(ev["Actor"]["Attributes"].items()))
                ctx.out.write(f"{ts} {ev['Type']} {ev['Action']} {ev['Actor']['ID']}" +
                              (f" ({attrs})" if attrs else "") + "\n")
            ctx.out.flush()
    finally:
        r.close()
    return 0


def system(ctx: Ctx, argv: list[str]) -> int:
    sub = argv[0] if argv else ""
    rest = argv[1:]
    if sub == "info":
        return info(ctx, rest)
    if sub == "events":
        return events(ctx, rest)
    if sub == "df":
        return df(ctx, rest)
    if sub == "prune":
        return prune(ctx, rest)
    ctx.out.write("\nUsage:  matou system COMMAND\n\nManage matou\n\nCommands:\n  df          Show disk usage\n"
                  "  events      Get real time events from the server\n  info        Display system-wide information\n"
                  "  prune       Remove unused data\n")
    return 0 if not sub else 1


def df(ctx: Ctx, argv: list[str]) -> int:
    opts, _ = parse_or_exit(argv, [flag("-v", "--verbose", help="Show detailed information on space usage"),
                                   flag("--format", kind="str", help="Format output using a Go template")],
                            "matou system df [OPTIONS]", "Show disk usage", max_args=0, cmd="system df")
    d = ctx.api().df()
    images = d.get("Images") or []
    containers = d.get("Containers") or []
    volumes = d.get("Volumes") or []
    cache = d.get("BuildCache") or []
    img_size = sum(i["Size"] for i in images)
    active_img = sum(1 for i in images if i.get("Containers", 0) > 0)
    reclaim_img = sum(i["Size"] for i in images if i.get("Containers", 0) <= 0)
    ctr_size = sum(c.get("SizeRw", 0) or 0 for c in containers)
    running = sum(1 for c in containers if c.get("State") == "running")
    vol_size = sum((v.get("UsageData") or {}).get("Size", 0) or 0 for v in volumes)
    active_vol = sum(1 for v in volumes if (v.get("UsageData") or {}).get("RefCount", 0) > 0)
    cache_size = sum(c.get("Size", 0) for c in cache)

    def pct(a: int, b: int) -> str:
        return f"{human_size(a)} ({int(a * 100 / b) if b else 0}%)"

    rows = [
        {"Type": "Images", "TotalCount": len(images), "Active": active_img, "Size": human_size(img_size),
         "Reclaimable": pct(reclaim_img, img_size)},
        {"Type": "Containers", "TotalCount": len(containers), "Active": running, "Size": human_size(ctr_size),
         "Reclaimable": pct(sum(c.get("SizeRw", 0) or 0 for c in containers if c.get("State") != "running"), ctr_size)},
        {"Type": "Local Volumes", "TotalCount": len(volumes), "Active": active_vol, "Size": human_size(vol_size),
         "Reclaimable": pct(sum((v.get("UsageData") or {}).get("Size", 0) or 0 for v in volumes
                                if (v.get("UsageData") or {}).get("RefCount", 0) == 0), vol_size)},
        {"Type": "Build Cache", "TotalCount": len(cache), "Active": 0, "Size": human_size(cache_size),
         "Reclaimable": human_size(cache_size)},
    ]
    format_rows(opts["format"], rows, "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
                {"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE",
                 "Reclaimable": "RECLAIMABLE"}, out=ctx.out)
    return 0


def prune(ctx: Ctx, argv: list[str]) -> int:
    opts, _ = parse_or_exit(argv, [
        flag("-a", "--all", help="Remove all unused images not just dangling ones"),
        flag("-f", "--force", help="Do not prompt for confirmation"),
        flag("--volumes", help="Prune anonymous volumes"),
        flag("--filter", kind="list", help="Provide filter values (e.g. 'label=<key>=<value>')"),
    ], "matou system prune [OPTIONS]", "Remove unused data", max_args=0, cmd="system prune")
    if not opts["force"] and sys.stdin.isatty():
        ctx.out.write("WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one"
                      " container\n" + ("  - all anonymous volumes not used by at least one container\n"
                                        if opts["volumes"] else "") +
                      ("  - all images without at least one container associated to them\n" if opts["all"]
                       else "  - all dangling images\n") + "  - unused build cache\n\nAre you sure you want to continue? [y/N] ")
        ctx.out.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    filters = filter_map(opts["filter"])
    api = ctx.api()
    total = 0
    c = api.c
    for path in ("/containers/prune", "/networks/prune"):
        try:
            r = c.post_json(path, {"filters": json.dumps(filters) if filters else None})
        except Exception:
            continue
        key = "ContainersDeleted" if "containers" in path else "NetworksDeleted"
        items = (r or {}).get(key) or []
        if items:
            ctx.out.write(("Deleted Containers:\n" if "containers" in path else "Deleted Networks:\n") +
                          "".join(f"{x}\n" for x in items) + "\n")
        total += (r or {}).get("SpaceReclaimed", 0) or 0
    if opts["volumes"]:
        try:
            r = c.post_json("/volumes/prune", {"filters": json.dumps(filters) if filters else None})
            items = (r or {}).get("VolumesDeleted") or []
            if items:
                ctx.out.write("Deleted Volumes:\n" + "".join(f"{x}\n" for x in items) + "\n")
            total += (r or {}).get("SpaceReclaimed", 0) or 0
        except Exception:
            pass
    f2 = dict(filters)
    f2["dangling"] = ["false" if opts["all"] else "true"]
    r = api.images_prune(json.dumps(f2))
    deleted = (r or {}).get("ImagesDeleted") or []
    if deleted:
        ctx.out.write("Deleted Images:\n" + "".join(f"{k.lower()}: {v}\n" for d in deleted for k, v in d.items()) + "\n")
    total += (r or {}).get("SpaceReclaimed", 0) or 0
    try:
        r = c.post_json("/build/prune", {"all": opts["all"] or None})
        total += (r or {}).get("SpaceReclaimed", 0) or 0
    except Exception:
        pass
    ctx.out.write(f"Total reclaimed space: {human_size(total)}\n")
    return 0
