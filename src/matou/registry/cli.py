"""``matou registry``: serve, and the admin commands (offline on --root, or online through --url).

Import-light on purpose: only argparse at module level; aiohttp, SQLAlchemy and friends load inside the
subcommand that needs them.

    matou registry serve [--addr HOST:PORT] [--root DIR] [--config FILE] [--tls-cert F --tls-key F]
                         [--anonymous-push] [--default-visibility public|private]
    matou registry user add|rm|passwd|ls NAME [--password PW] [--admin]
    matou registry org add|rm NAME;  matou registry org member add|rm ORG USER [--role ROLE]
    matou registry repo create|ls|set|rm NAME [--visibility V] [--description TEXT] [--immutable-tags P,...]
    matou registry repo member add|rm NAME USER [--role read|write|admin]
    matou registry gc [--dry-run] [--grace SECONDS] [--delete-untagged]
Admin commands take ``--root DIR`` (and/or ``--config FILE``) or ``--url URL [--creds USER:PW] [--insecure]``
(``MATOU_REGISTRY_CREDS`` is read when --creds is not given).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

DEFAULT_ROOT = "/var/lib/matou-registry"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="matou registry", description="matou's OCI distribution registry")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    s = sub.add_parser("serve", help="run the registry server")
    s.add_argument("--addr", help="HOST:PORT to listen on (default 127.0.0.1:5000)")
    s.add_argument("--root", help=f"state directory (default {DEFAULT_ROOT})")
    s.add_argument("--config", help="TOML or JSON config file")
    s.add_argument("--tls-cert", help="PEM certificate (with --tls-key: serve HTTPS)")
    s.add_argument("--tls-key", help="PEM private key")
    s.add_argument("--anonymous-push", action="store_true", default=None,
                   help="open mode: anonymous clients may push (for local demos)")
    s.add_argument("--default-visibility", choices=("public", "private"),
                   help="visibility of repositories created by a push")

    def target(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--root", help="work offline on this registry root")
        sp.add_argument("--config", help="config file (gives the root and policy when working offline)")
        sp.add_argument("--url", help="work online through this registry's management API")
        sp.add_argument("--creds", help="USER:PASSWORD for --url (default: $MATOU_REGISTRY_CREDS)")
        sp.add_argument("--insecure", action="store_true", help="do not verify the TLS certificate of --url")

    u = sub.add_parser("user", help="manage users")
    usub = u.add_subparsers(dest="action", metavar="ACTION")
    for action in ("add", "rm", "passwd"):
        a = usub.add_parser(action)
        a.add_argument("name")
        if action != "rm":
            a.add_argument("--password", help="the password (default: read from stdin or the terminal)")
        if action == "add":
            a.add_argument("--admin", action="store_true", help="a registry administrator")
        target(a)
    target(usub.add_parser("ls"))

    o = sub.add_parser("org", help="manage organisations")
    osub = o.add_subparsers(dest="action", metavar="ACTION")
    for action in ("add", "rm"):
        a = osub.add_parser(action)
        a.add_argument("name")
        target(a)
    om = osub.add_parser("member")
    omsub = om.add_subparsers(dest="member_action", metavar="ACTION")
    for action in ("add", "rm"):
        a = omsub.add_parser(action)
        a.add_argument("org")
        a.add_argument("user")
        a.add_argument("--role", choices=("read", "write", "admin"), default="read" if action == "add" else None)
        target(a)

    r = sub.add_parser("repo", help="manage repositories")
    rsub = r.add_subparsers(dest="action", metavar="ACTION")
    a = rsub.add_parser("create")
    a.add_argument("name")
    a.add_argument("--visibility", choices=("public", "private"))
    a.add_argument("--description", default="")
    a.add_argument("--owner", help="owning user or organisation (default: the name's namespace)")
    target(a)
    a = rsub.add_parser("ls")
    a.add_argument("query", nargs="?", default="")
    target(a)
    a = rsub.add_parser("set")
    a.add_argument("name")
    a.add_argument("--visibility", choices=("public", "private"))
    a.add_argument("--description")
    a.add_argument("--immutable-tags", help="comma-separated tag patterns (fnmatch) that cannot move; '' clears")
    a.add_argument("--owner")
    target(a)
    a = rsub.add_parser("rm")
    a.add_argument("name")
    target(a)
    rm = rsub.add_parser("member")
    rmsub = rm.add_subparsers(dest="member_action", metavar="ACTION")
    for action in ("add", "rm"):
        a = rmsub.add_parser(action)
        a.add_argument("name")
        a.add_argument("user")
        a.add_argument("--role", choices=("read", "write", "admin"), default="read" if action == "add" else None)
        target(a)

    g = sub.add_parser("gc", help="collect garbage (blobs, links, stale uploads)")
    g.add_argument("--dry-run", action="store_true", help="report what would be freed; change nothing")
    g.add_argument("--grace", type=float, help="seconds unreferenced data is kept (default from config)")
    g.add_argument("--delete-untagged", action="store_true", default=None, help="also delete untagged manifests")
    target(g)
    return p


def _config(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from matou.registry import config as cfgmod

    cfg = cfgmod.load(getattr(args, "config", None))
    overrides: dict[str, Any] = {}
    if getattr(args, "root", None):
        overrides["root"] = args.root
    if getattr(args, "addr", None):
        overrides["addr"] = args.addr
    if getattr(args, "tls_cert", None):
        overrides["tls_cert"] = args.tls_cert
    if getattr(args, "tls_key", None):
        overrides["tls_key"] = args.tls_key
    auth = cfg.auth
    if getattr(args, "anonymous_push", None):
        auth = replace(auth, anonymous_push=True)
    if getattr(args, "default_visibility", None):
        auth = replace(auth, default_visibility=args.default_visibility)
    cfg = replace(cfg, auth=auth, **overrides)
    cfgmod.validate(cfg)
    return cfg


def _admin(args: argparse.Namespace) -> Any:
    from matou.errors import InvalidArgument
    from matou.registry import admin

    if args.url:
        if args.root:
            raise InvalidArgument("give either --root (offline) or --url (online), not both")
        return admin.Remote(args.url, args.creds or os.environ.get("MATOU_REGISTRY_CREDS"), args.insecure)
    if not args.root and not args.config:
        raise InvalidArgument("say which registry: --root DIR (offline) or --url URL (online)")
    return admin.Local(_config(args))


def _password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return args.password
    if sys.stdin.isatty():
        import getpass

        pw = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != pw:
            from matou.errors import InvalidArgument

            raise InvalidArgument("passwords do not match")
        return pw
    return sys.stdin.readline().rstrip("\r\n")


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        sys.stdout.write("   ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=False)).rstrip() + "\n")


def _run(args: argparse.Namespace) -> int:
    if args.cmd == "serve":
        import asyncio

        from matou.registry.server import serve

        cfg = _config(args)
        asyncio.run(serve(cfg))
        return 0
    if args.cmd == "user" and args.action:
        adm = _admin(args)
        try:
            if args.action == "add":
                adm.user_add(args.name, _password(args), args.admin)
            elif args.action == "rm":
                adm.user_rm(args.name)
            elif args.action == "passwd":
                adm.user_passwd(args.name, _password(args))
            else:
                _table([[u["name"], "yes" if u["admin"] else ""] for u in adm.user_ls()], ["NAME", "ADMIN"])
        finally:
            adm.close()
        return 0
    if args.cmd == "org" and args.action:
        if args.action == "member" and not args.member_action:
            return _usage(args)
        adm = _admin(args)
        try:
            if args.action == "add":
                adm.org_add(args.name)
            elif args.action == "rm":
                adm.org_rm(args.name)
            else:
                adm.org_member(args.org, args.user, args.role if args.member_action == "add" else None)
        finally:
            adm.close()
        return 0
    if args.cmd == "repo" and args.action:
        if args.action == "member" and not args.member_action:
            return _usage(args)
        adm = _admin(args)
        try:
            if args.action == "create":
                adm.repo_create(args.name, args.visibility, args.description, args.owner)
            elif args.action == "ls":
                rows = [[r["name"], r["visibility"], str(r["star_count"]), str(r["pull_count"]), r["description"]]
                        for r in adm.repo_ls(args.query)]
                _table(rows, ["NAME", "VISIBILITY", "STARS", "PULLS", "DESCRIPTION"])
            elif args.action == "set":
                tags = None
                if args.immutable_tags is not None:
                    tags = [t.strip() for t in args.immutable_tags.split(",") if t.strip()]
                adm.repo_set(args.name, args.visibility, args.description, tags, args.owner)
            elif args.action == "rm":
                adm.repo_rm(args.name)
            else:
                adm.repo_member(args.name, args.user, args.role if args.member_action == "add" else None)
        finally:
            adm.close()
        return 0
    if args.cmd == "gc":
        adm = _admin(args)
        try:
            rep = adm.gc(args.dry_run, args.grace, args.delete_untagged)
        finally:
            adm.close()
        verb = "would free" if rep["dry_run"] else "freed"
        for b in rep["blobs"]:
            sys.stdout.write(f"blob {b['digest']} {b['size']}\n")
        for m in rep["manifests"]:
            sys.stdout.write(f"manifest {m}\n")
        for u in rep["uploads"]:
            sys.stdout.write(f"upload {u}\n")
        sys.stdout.write(f"{verb} {len(rep['blobs'])} blobs ({rep['bytes_freed']} bytes), {rep['links']} links, "
                         f"{len(rep['manifests'])} manifests, {len(rep['uploads'])} uploads\n")
        return 0
    return _usage(args)


def _usage(args: argparse.Namespace) -> int:
    _parser().parse_args([a for a in (args.cmd, getattr(args, "action", None)) if a] + ["--help"])
    return 2


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.cmd:
        parser.print_help()
        return 2
    from matou.errors import MatouError

    try:
        return _run(args)
    except MatouError as e:
        sys.stderr.write(f"matou registry: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130
