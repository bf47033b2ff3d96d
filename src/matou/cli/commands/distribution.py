"""pull, push, login, logout, search."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from matou.cli.commands import parse_or_exit
from matou.cli.context import Ctx
from matou.cli.flags import flag
from matou.client import auth as cauth
from matou.client import distribution as api
from matou.client.http import APIError


def _fail(msg: str, code: int = 1) -> int:
    sys.stderr.write(msg.rstrip("\n") + "\n")
    return code


def _parse_ref(image: str) -> Any:
    from matou.errors import InvalidArgument
    from matou.types import reference

    try:
        return reference.parse(image)
    except InvalidArgument as e:
        return str(e)


def _auth_header(domain: str) -> str:
    try:
        entry = cauth.lookup(domain)
    except cauth.CredentialError as e:
        sys.stderr.write(f"WARNING: {e}\n")
        entry = None
    return cauth.encode_header(entry)


def _show(resp: Any, out: TextIO, quiet: bool, aux: list[Any] | None = None) -> str | None:
    from matou.cli import progress

    on_aux = aux.append if aux is not None else None
    try:
        if quiet:
            return progress.drain(resp.iter_json(), on_aux)
        return progress.display(resp.iter_json(), out, on_aux=on_aux)
    finally:
        resp.close()


# ---------------------------------------------------------------------------------------------- pull

def pull(ctx: Ctx, argv: list[str], to_stderr: bool = False) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("-a", "--all-tags", help="Download all tagged images in the repository"),
        flag("--disable-content-trust", default=True, help="Skip image verification (default true)"),
        flag("--platform", kind="str", help="Set platform if server is multi-platform capable"),
        flag("-q", "--quiet", help="Suppress verbose output"),
    ], "matou pull [OPTIONS] NAME[:TAG|@DIGEST]", "Download an image from a registry", min_args=1, max_args=1,
        cmd="pull")
    ref = _parse_ref(pos[0])
    if isinstance(ref, str):
        return _fail(ref)
    if opts["all_tags"] and (ref.tag or ref.digest):
        return _fail("tag can't be used with --all-tags/-a")
    if opts["all_tags"]:
        tag = None
        shown = ref.name
    else:
        if not ref.tag and not ref.digest:
            ref = ref.with_default_tag()
            if not opts["quiet"] and not to_stderr:
                ctx.out.write("Using default tag: latest\n")
        tag = ref.digest or ref.tag
        shown = str(ref)
    out = ctx.err if to_stderr else ctx.out
    try:
        resp = api.image_pull(ctx.client, ref.familiar_name, tag, opts["platform"] or None,
                              _auth_header(ref.domain))
    except APIError as e:
        return _fail(f"Error response from daemon: {e.message}")
    err = _show(resp, out, opts["quiet"])
    if err is not None:
        return _fail(err)
    if not to_stderr:
        ctx.out.write(shown + "\n")
    return 0


# ---------------------------------------------------------------------------------------------- push

def push(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("-a", "--all-tags", help="Push all tags of an image to the repository"),
        flag("--disable-content-trust", default=True, help="Skip image signing (default true)"),
        flag("-q", "--quiet", help="Suppress verbose output"),
    ], "matou push [OPTIONS] NAME[:TAG]", "Upload an image to a registry", min_args=1, max_args=1, cmd="push")
    ref = _parse_ref(pos[0])
    if isinstance(ref, str):
        return _fail(ref)
    if ref.digest:
        return _fail(f"invalid reference format: cannot push a digest reference ({pos[0]})")
    if opts["all_tags"] and ref.tag:
        return _fail("tag can't be used with --all-tags/-a")
    if not opts["all_tags"] and not ref.tag:
        ref = ref.with_default_tag()
        if not opts["quiet"]:
            ctx.out.write("Using default tag: latest\n")
    tag = None if opts["all_tags"] else ref.tag
    try:
        resp = api.image_push(ctx.client, ref.familiar_name, tag, _auth_header(ref.domain))
    except APIError as e:
        return _fail(f"Error response from daemon: {e.message}")
    err = _show(resp, ctx.out, opts["quiet"])
    if err is not None:
        return _fail(err)
    if opts["quiet"]:
        ctx.out.write(ref.familiar() + "\n")
    return 0


# ---------------------------------------------------------------------------------------------- login / logout

_PLAINTEXT_WARNING = ("WARNING! Your password will be stored unencrypted in {path}.\n"
                      "Configure a credential helper to remove this warning. See\n"
                      "https://docs.docker.com/engine/reference/commandline/login/#credential-stores\n\n")


def _prompt(label: str, secret: bool) -> str:
    if secret:
        import getpass

        return getpass.getpass(label)
    sys.stderr.write(label)
    sys.stderr.flush()
    return sys.stdin.readline().rstrip("\r\n")


def login(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("-p", "--password", kind="str", help="Password"),
        flag("--password-stdin", help="Take the password from stdin"),
        flag("-u", "--username", kind="str", help="Username"),
    ], "matou login [OPTIONS] [SERVER]", "Log in to a registry.\nIf no server is specified, the default is defined "
       "by the daemon.", max_args=1, cmd="login")
    server = cauth.server_key(pos[0] if pos else None)
    user = opts["username"] or ""
    password = opts["password"] or ""
    if opts["password"] is not None and opts["password_stdin"]:
        return _fail("--password and --password-stdin are mutually exclusive")
    if opts["password"] is not None:
        sys.stderr.write("WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n")
    if opts["password_stdin"]:
        if not user:
            return _fail("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    try:
        cfg = cauth.matou_config()
    except cauth.CredentialError as e:
        return _fail(str(e))
    if not user and not password:
        try:
            stored = cauth.lookup(server)
        except cauth.CredentialError:
            stored = None
        if stored is not None:
            ctx.out.write("Authenticating with existing credentials...\n")
            try:
                res = api.login(ctx.client, {**stored.to_api(), "serveraddress": server})
                ctx.out.write("Login Succeeded\n")
                _ = res
                return 0
            except APIError as e:
                sys.stderr.write(f"Login did not succeed, error: {e.message}\n")
    if not password:
        if not sys.stdin.isatty():
            return _fail("Error: Cannot perform an interactive login from a non TTY device")
        if not user:
            user = _prompt("Username: ", False).strip()
            if not user:
                return _fail("Error: Non-null Username Required")
        password = _prompt("Password: ", True)
        if not password:
            return _fail("Error: Password Required")
    try:
        res = api.login(ctx.client, {"username": user, "password": password, "serveraddress": server})
    except APIError as e:
        return _fail(f"Error response from daemon: {e.message}")
    token = (res or {}).get("IdentityToken") or ""
    entry = cauth.AuthEntry(user, "" if token else password, token, server)
    try:
        plaintext = cfg.store(entry)
    except (cauth.CredentialError, OSError) as e:
        return _fail(f"Error saving credentials: {e}")
    if plaintext:
        sys.stderr.write(_PLAINTEXT_WARNING.format(path=cfg.path))
    ctx.out.write("Login Succeeded\n")
    return 0


def logout(ctx: Ctx, argv: list[str]) -> int:
    _opts, pos = parse_or_exit(argv, [], "matou logout [SERVER]", "Log out from a registry.\nIf no server is "
                               "specified, the default is defined by the daemon.", max_args=1, cmd="logout")
    server = cauth.server_key(pos[0] if pos else None)
    shown = pos[0] if pos else server
    try:
        cfg = cauth.matou_config()
        if not cfg.erase(server):
            ctx.out.write(f"Not logged in to {shown}\n")
            return 0
    except (cauth.CredentialError, OSError) as e:
        return _fail(f"WARNING: could not erase credentials: {e}")
    ctx.out.write(f"Removing login credentials for {shown}\n")
    return 0


# ---------------------------------------------------------------------------------------------- search

def _ellipsis(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n - 1] + "…"


def search(ctx: Ctx, argv: list[str]) -> int:
    from matou.cli.output import format_rows

    opts, pos = parse_or_exit(argv, [
        flag("-f", "--filter", kind="list", help="Filter output based on conditions provided"),
        flag("--format", kind="str", help="Pretty-print search using a Go template"),
        flag("--limit", kind="int", default=0, help="Max number of search results"),
        flag("--no-trunc", help="Don't truncate output"),
    ], "matou search [OPTIONS] TERM", "Search Docker Hub (or a registry named in TERM) for images", min_args=1,
        max_args=1, cmd="search")
    term = pos[0]
    filters: dict[str, list[str]] = {}
    for f in opts["filter"]:
        k, eq, v = f.partition("=")
        if not eq:
            return _fail(f'bad format of filter (expected name=value): "{f}"')
        filters.setdefault(k, []).append(v)
    first, sep, _rest = term.partition("/")
    domain = first if sep and ("." in first or ":" in first or first == "localhost") else "docker.io"
    try:
        entry = cauth.lookup(domain)
    except cauth.CredentialError:
        entry = None
    try:
        results = api.search(ctx.client, term, opts["limit"] or None, json.dumps(filters) if filters else None,
                             cauth.encode_header(entry) if entry else None)
    except APIError as e:
        return _fail(f"Error response from daemon: {e.message}")
    trunc = not opts["no_trunc"]
    rows = []
    for r in results or []:
        desc = str(r.get("description") or "").replace("\n", " ").replace("\r", " ")
        rows.append({"Name": r.get("name", ""), "Description": _ellipsis(desc, 45) if trunc else desc,
                     "StarCount": str(r.get("star_count", 0)),
                     "IsOfficial": "[OK]" if r.get("is_official") else "",
                     "IsAutomated": "[OK]" if r.get("is_automated") else ""})
    format_rows(opts["format"], rows, "table {{.Name}}\t{{.Description}}\t{{.StarCount}}\t{{.IsOfficial}}",
                {"Name": "NAME", "Description": "DESCRIPTION", "StarCount": "STARS", "IsOfficial": "OFFICIAL",
                 "IsAutomated": "AUTOMATED"}, out=ctx.out)
    return 0
