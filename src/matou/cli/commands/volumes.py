"""volume create|ls|inspect|rm|prune."""

from __future__ import annotations

import sys

from matou.cli.commands import filter_map, filters_json, parse_or_exit
from matou.cli.commands import key_values as _kv
from matou.cli.context import Ctx
from matou.cli.flags import flag
from matou.cli.output import fail, format_rows, human_size
from matou.client.http import APIError


def volume(ctx: Ctx, argv: list[str]) -> int:
    sub, rest = (argv[0] if argv else ""), argv[1:]
    fn = {"create": create, "ls": ls, "list": ls, "inspect": inspect, "rm": rm, "remove": rm, "prune": prune}.get(sub)
    if fn is None:
        ctx.out.write("\nUsage:  matou volume COMMAND\n\nManage volumes\n\nCommands:\n  create      Create a volume\n"
                      "  inspect     Display detailed information on one or more volumes\n  ls          List volumes\n"
                      "  prune       Remove unused local volumes\n  rm          Remove one or more volumes\n")
        return 0 if not sub else 1
    return fn(ctx, rest)


def create(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("-d", "--driver", kind="str", default="local", help="Specify volume driver name"),
        flag("--label", kind="list", help="Set metadata for a volume"),
        flag("-o", "--opt", kind="list", help="Set driver specific options"),
        flag("--name", kind="str", help="Specify volume name"),
    ], "matou volume create [OPTIONS] [VOLUME]", "Create a volume", max_args=1, cmd="volume create")
    name = pos[0] if pos else opts["name"]
    r = ctx.api().volume_create({"Name": name or "", "Driver": opts["driver"], "Labels": _kv(opts["label"]),
                                 "DriverOpts": _kv(opts["opt"])})
    ctx.out.write(r["Name"] + "\n")
    return 0


def ls(ctx: Ctx, argv: list[str]) -> int:
    opts, _ = parse_or_exit(argv, [
        flag("-f", "--filter", kind="list", help="Provide filter values (e.g. 'dangling=true')"),
        flag("--format", kind="str", help="Format output using a custom template"),
        flag("-q", "--quiet", help="Only display volume names"),
    ], "matou volume ls [OPTIONS]", "List volumes", max_args=0, cmd="volume ls")
    r = ctx.api().volumes(filters_json(opts["filter"]))
    rows = [{"Driver": v["Driver"], "Name": v["Name"], "Mountpoint": v["Mountpoint"], "Scope": v.get("Scope", "local"),
             "Labels": ",".join(f"{k}={x}" for k, x in (v.get("Labels") or {}).items()), "Size": "N/A"}
            for v in r.get("Volumes") or []]
    format_rows(opts["format"], rows, "table {{.Driver}}\t{{.Name}}",
                {"Driver": "DRIVER", "Name": "VOLUME NAME", "Mountpoint": "MOUNTPOINT", "Scope": "SCOPE",
                 "Labels": "LABELS", "Size": "SIZE"}, quiet_key="Name", quiet=opts["quiet"], out=ctx.out)
    return 0


def inspect(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [flag("-f", "--format", kind="str", help="Format output using a custom template")],
                              "matou volume inspect [OPTIONS] VOLUME [VOLUME...]",
                              "Display detailed information on one or more volumes", min_args=1, cmd="volume inspect")
    from matou.cli.commands.inspect import print_inspect

    api = ctx.api()
    return print_inspect(ctx, [lambda n=n: api.volume_inspect(n) for n in pos], pos, opts["format"], "No such volume")


def rm(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [flag("-f", "--force", help="Force the removal of one or more volumes")],
                              "matou volume rm [OPTIONS] VOLUME [VOLUME...]", "Remove one or more volumes",
                              min_args=1, cmd="volume rm")
    rc = 0
    for n in pos:
        try:
            ctx.api().volume_remove(n, opts["force"])
            ctx.out.write(n + "\n")
        except APIError as e:
            sys.stderr.write(f"Error response from daemon: {e.message}\n")
            rc = 1
    return rc


def prune(ctx: Ctx, argv: list[str]) -> int:
    opts, _ = parse_or_exit(argv, [
        flag("-a", "--all", help="Remove all unused volumes, not just anonymous ones"),
        flag("--filter", kind="list", help="Provide filter values (e.g. 'label=<label>')"),
        flag("-f", "--force", help="Do not prompt for confirmation"),
    ], "matou volume prune [OPTIONS]", "Remove unused local volumes", max_args=0, cmd="volume prune")
    if not opts["force"] and sys.stdin.isatty():
        ctx.out.write("WARNING! This will remove anonymous local volumes not used by at least one container.\n"
                      "Are you sure you want to continue? [y/N] ")
        ctx.out.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    f = filter_map(opts["filter"])
    if opts["all"]:
        f["all"] = ["true"]
    r = ctx.api().volumes_prune(filters_json(f))
    deleted = r.get("VolumesDeleted") or []
    if deleted:
        ctx.out.write("Deleted Volumes:\n" + "".join(f"{x}\n" for x in deleted) + "\n")
    ctx.out.write(f"Total reclaimed space: {human_size(r.get('SpaceReclaimed', 0))}\n")
    _ = fail
    return 0
