"""docs/compat.md stays true: every command the docker CLI lists has a row, every row marked yes or no names
tests that exist, and those tests are the ones in tests/compat (so a removed test breaks this one)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.compat.conftest import docker_binary, require_tool
from tests.conftest import ROOT

DOC = os.path.join(ROOT, "docs", "compat.md")
HERE = os.path.dirname(os.path.abspath(__file__))
# management commands whose subcommands each get a row (the others have one row for the whole command)
DETAILED = {"network", "volume"}
# subcommands that alias a top-level command ("docker image rm" is "docker rmi")
ALIASES = {("image", "rm"): "rmi", ("image", "ls"): "images", ("container", "ls"): "container ls",
           ("container", "rm"): "rm", ("image", "build"): "build", ("builder", "build"): "build"}


def rows() -> dict[str, tuple[str, list[str]]]:
    out: dict[str, tuple[str, list[str]]] = {}
    with open(DOC) as f:
        for line in f:
            m = re.match(r"^\| `docker ([a-z -]+)` \| ([a-z]+)[^|]* \|(.*)\|\s*$", line)
            if m:
                out[m.group(1)] = (m.group(2), re.findall(r"`([\w/.]+::\w+)`", m.group(3)))
    return out


def _help_commands(binary: str, *args: str) -> list[str]:
    r = subprocess.run([binary, *args, "--help"], capture_output=True, text=True, timeout=30,
                       env={k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")})
    out, in_cmds = [], False
    for line in r.stdout.splitlines():
        if line.rstrip().endswith("Commands:"):
            in_cmds = True
            continue
        if in_cmds and not line.strip():
            in_cmds = False
            continue
        if in_cmds and line.startswith("  ") and line.split():
            out.append(line.split()[0].rstrip("*"))
    return out


def test_every_cli_command_has_a_row() -> None:
    binary = require_tool(docker_binary(), "the docker CLI")
    table = rows()
    missing = []
    for cmd in _help_commands(binary):
        if cmd in ("compose", "buildx", "scout", "init", "debug", "sbom", "ai"):  # CLI plugins, if installed
            continue
        subs = _help_commands(binary, cmd)
        if cmd in DETAILED:
            missing += [f"{cmd} {s}" for s in subs if f"{cmd} {s}" not in table]
        elif cmd not in table and not any(k.startswith(cmd + " ") for k in table):
            missing.append(cmd)
        for s in subs if cmd in ("image", "container", "system", "builder") else []:
            alias = ALIASES.get((cmd, s), s)
            if alias not in table and f"{cmd} {s}" not in table:
                missing.append(f"{cmd} {s}")
    assert not missing, f"docs/compat.md has no row for: {missing}"


def test_named_tests_exist() -> None:
    table = rows()
    assert len(table) > 50
    for cmd, (status, tests) in table.items():
        assert status in ("yes", "no", "client"), (cmd, status)
        if status in ("yes", "no"):
            assert tests, f"docker {cmd}: no test named"
        for t in tests:
            path, _, name = t.partition("::")
            with open(os.path.join(HERE, path)) as f:
                assert re.search(rf"^def {name}\(", f.read(), re.M), f"docker {cmd}: {t} does not exist"


def test_unsupported_rows_are_probed() -> None:
    from tests.compat.test_docker_cli import UNSUPPORTED_PROBES

    probed = {" ".join(p[:2]) if p[0] == "volume" else p[0] for p in UNSUPPORTED_PROBES}
    for cmd, (status, _) in rows().items():
        if status == "no":
            assert cmd in probed, f"docker {cmd} is marked no but never probed"


@pytest.mark.parametrize("name", ["test_docker_cli.py", "test_docker_py.py", "test_compose.py", "test_api.py"])
def test_compat_files_present(name: str) -> None:
    assert os.path.exists(os.path.join(HERE, name))
