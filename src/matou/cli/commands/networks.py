"""network create|ls|inspect|rm|connect|disconnect|prune."""

from __future__ import annotations

import sys

from matou.cli.commands import filters_json as _filters
from matou.cli.commands import key_values as _kv
from matou.cli.commands import parse_or_exit
from matou.cli.context import Ctx
from matou.cli.flags import flag
from matou.cli.output import format_rows
from matou.client import networks as api
from matou.client.http import APIError

USAGE = """
Usage:  matou network COMMAND

Manage networks

Commands:
  connect     Connect a container to a network
  create      Create a network
  disconnect  Disconnect a container from a network
  inspect     Display detailed information on one or more networks
  ls          List networks
  prune       Remove all unused networks
  rm          Remove one or more networks

Run 'matou network COMMAND --help' for more information on a command.
"""


def network(ctx: Ctx, argv: list[str]) -> int:
    sub, rest = (argv[0] if argv else ""), argv[1:]
    fn = {"create": create, "ls": ls, "list": ls, "inspect": inspect, "rm": rm, "remove": rm, "connect": connect,
          "disconnect": disconnect, "prune": prune}.get(sub)
    if fn is None:
        if sub and sub not in ("--help", "-h"):
            sys.stderr.write(f"matou: '{sub}' is not a matou network command.\nSee 'matou network --help'\n")
            return 1
        ctx.out.write(USAGE)
        return 0
    try:
        return fn(ctx, rest)
    except APIError as e:
        sys.stderr.write(f"Error response from daemon: {e.message}\n")
        return 1


def create(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("--attachable", help="Enable manual container attachment"),
        flag("--aux-address", kind="list", help="Auxiliary IPv4 or IPv6 addresses used by Network driver"),
        flag("-d", "--driver", kind="str", default="bridge", help="Driver to manage the Network"),
        flag("--gateway", kind="list", help="IPv4 or IPv6 Gateway for the master subnet"),
        flag("--internal", help="Restrict external access to the network"),
        flag("--ip-range", kind="list", help="Allocate container ip from a sub-range"),
        flag("--ipam-driver", kind="str", default="default", help="IP Address Management Driver"),
        flag("--ipam-opt", kind="list", help="Set IPAM driver specific options"),
        flag("--ipv6", help="Enable IPv6 networking"),
        flag("--label", kind="list", help="Set metadata on a network"),
        flag("-o", "--opt", kind="list", help="Set driver specific options"),
        flag("--subnet", kind="list", help="Subnet in CIDR format that represents a network segment"),
    ], "matou network create [OPTIONS] NETWORK", "Create a network", min_args=1, max_args=1, cmd="network create")
    subnets, gateways, ranges = opts["subnet"], opts["gateway"], opts["ip_range"]
    if len(gateways) > len(subnets) or len(ranges) > len(subnets):
        sys.stderr.write("Error: every ip-range or gateway must have a corresponding subnet\n")
        return 1
    cfg = []
    for i, s in enumerate(subnets):
        c: dict[str, object] = {"Subnet": s}
        if i < len(gateways):
            c["Gateway"] = gateways[i]
        if i < len(ranges):
            c["IPRange"] = ranges[i]
        if opts["aux_address"]:
            c["AuxiliaryAddresses"] = _kv(opts["aux_address"])
        cfg.append(c)
    body = {"Name": pos[0], "CheckDuplicate": True, "Driver": opts["driver"], "Internal": opts["internal"],
            "Attachable": opts["attachable"], "EnableIPv6": opts["ipv6"],
            "IPAM": {"Driver": opts["ipam_driver"], "Config": cfg, "Options": _kv(opts["ipam_opt"])},
            "Options": _kv(opts["opt"]), "Labels": _kv(opts["label"])}
    r = api.network_create(ctx.client, body)
    ctx.out.write(r["Id"] + "\n")
    return 0


def ls(ctx: Ctx, argv: list[str]) -> int:
    opts, _ = parse_or_exit(argv, [
        flag("-f", "--filter", kind="list", help="Provide filter values (e.g. 'driver=bridge')"),
        flag("--format", kind="str", help="Format output using a custom template"),
        flag("--no-trunc", help="Do not truncate the output"),
        flag("-q", "--quiet", help="Only display network IDs"),
    ], "matou network ls [OPTIONS]", "List networks", max_args=0, cmd="network ls")
    nets = sorted(api.networks(ctx.client, _filters(opts["filter"])), key=lambda n: n["Name"])
    rows = [{"ID": n["Id"] if opts["no_trunc"] else n["Id"][:12], "Name": n["Name"], "Driver": n["Driver"],
             "Scope": n.get("Scope", "local"), "IPv6": str(bool(n.get("EnableIPv6"))).lower(),
             "Internal": str(bool(n.get("Internal"))).lower(), "CreatedAt": n.get("Created", ""),
             "Labels": ",".join(f"{k}={v}" for k, v in (n.get("Labels") or {}).items())} for n in nets]
    format_rows(opts["format"], rows, "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}",
                {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "IPv6": "IPV6",
                 "Internal": "INTERNAL", "CreatedAt": "CREATED AT", "Labels": "LABELS"},
                quiet_key="ID", quiet=opts["quiet"], out=ctx.out)
    return 0


def inspect(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("-f", "--format", kind="str", help="Format output using a custom template"),
        flag("-v", "--verbose", help="Verbose output for diagnostics"),
    ], "matou network inspect [OPTIONS] NETWORK [NETWORK...]",
        "Display detailed information on one or more networks", min_args=1, cmd="network inspect")
    from matou.cli.commands.inspect import print_inspect

    c = ctx.client
    return print_inspect(ctx, [lambda n=n: api.network_inspect(c, n) for n in pos], pos, opts["format"],
                         "No such network")


def rm(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [flag("-f", "--force", help="Do not error if the network does not exist")],
                              "matou network rm NETWORK [NETWORK...]", "Remove one or more networks", min_args=1,
                              cmd="network rm")
    rc = 0
    for n in pos:
        try:
            api.network_remove(ctx.client, n)
            ctx.out.write(n + "\n")
        except APIError as e:
            if e.status == 404 and opts["force"]:
                continue
            sys.stderr.write(f"Error response from daemon: {e.message}\n")
            rc = 1
    return rc


def connect(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("--alias", kind="list", help="Add network-scoped alias for the container"),
        flag("--driver-opt", kind="list", help="driver options for the network"),
        flag("--ip", kind="str", help="IPv4 address (e.g., \"172.30.100.104\")"),
        flag("--ip6", kind="str", help="IPv6 address (e.g., \"2001:db8::33\")"),
        flag("--link", kind="list", help="Add link to another container"),
        flag("--link-local-ip", kind="list", help="Add a link-local address for the container"),
    ], "matou network connect [OPTIONS] NETWORK CONTAINER", "Connect a container to a network", min_args=2,
        max_args=2, cmd="network connect")
    ep: dict[str, object] = {"Aliases": opts["alias"] or None, "DriverOpts": _kv(opts["driver_opt"]) or None}
    if opts["ip"] or opts["ip6"]:
        ep["IPAMConfig"] = {"IPv4Address": opts["ip"] or "", "IPv6Address": opts["ip6"] or ""}
    if opts["link"]:
        ep["Links"] = opts["link"]
    api.network_connect(ctx.client, pos[0], pos[1], ep)
    return 0


def disconnect(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [flag("-f", "--force", help="Force the container to disconnect from a network")],
                              "matou network disconnect [OPTIONS] NETWORK CONTAINER",
                              "Disconnect a container from a network", min_args=2, max_args=2,
                              cmd="network disconnect")
    api.network_disconnect(ctx.client, pos[0], pos[1], opts["force"])
    return 0


def prune(ctx: Ctx, argv: list[str]) -> int:
    opts, _ = parse_or_exit(argv, [
        flag("--filter", kind="list", help="Provide filter values (e.g. 'until=<timestamp>')"),
        flag("-f", "--force", help="Do not prompt for confirmation"),
    ], "matou network prune [OPTIONS]", "Remove all unused networks", max_args=0, cmd="network prune")
    if not opts["force"] and sys.stdin.isatty():
        ctx.out.write("WARNING! This will remove all custom networks not used by at least one container.\n"
                      "Are you sure you want to continue? [y/N] ")
        ctx.out.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    r = api.networks_prune(ctx.client, _filters(opts["filter"]))
    deleted = r.get("NetworksDeleted") or []
    if deleted:
        ctx.out.write("Deleted Networks:\n" + "".join(f"{n}\n" for n in deleted) + "\n")
    return 0
