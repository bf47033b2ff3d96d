"""The runc-compatible CLI (python -m matou.runtime) over the same bundles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.timeout(120)
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src")


def cli(root: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=SRC)
    # `create` leaves the init running with our stdio, like runc: don't wait on pipes it keeps open
    out = subprocess.DEVNULL if args[0] == "create" else subprocess.PIPE
    r = subprocess.run([sys.executable, "-m", "matou.runtime", "--root", root, *args], stdout=out,
                       stderr=out, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError(f"{args}: {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def test_cli_lifecycle(bundles, tmp_path):
    root = str(tmp_path / "state")
    b = bundles.make("clic", ["sleep", "1000"])
    pid_file = str(tmp_path / "pid")
    try:
        cli(root, "create", "--bundle", b, "--pid-file", pid_file, "clic")
        pid = int(open(pid_file).read())
        st = json.loads(cli(root, "state", "clic").stdout)
        assert st["status"] == "created" and st["pid"] == pid
        cli(root, "start", "clic")
        assert json.loads(cli(root, "state", "clic").stdout)["status"] == "running"
        assert [s["id"] for s in json.loads(cli(root, "list", "-f", "json").stdout)] == ["clic"]
        assert json.loads(cli(root, "ps", "-f", "json", "clic").stdout) == [pid]
        out = cli(root, "exec", "clic", "sh", "-c", "echo from-exec; exit 3", check=False)
        assert out.returncode == 3 and "from-exec" in out.stdout
        cli(root, "pause", "clic")
        assert json.loads(cli(root, "state", "clic").stdout)["status"] == "paused"
        cli(root, "resume", "clic")
        assert cli(root, "delete", "clic", check=False).returncode == 1
        cli(root, "kill", "clic", "KILL")
        deadline = time.monotonic() + 5
        while json.loads(cli(root, "state", "clic").stdout)["status"] != "stopped":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        cli(root, "delete", "clic")
        assert cli(root, "state", "clic", check=False).returncode == 1
    finally:
        cli(root, "delete", "--force", "clic", check=False)


def test_cli_run_and_errors(bundles, tmp_path):
    root = str(tmp_path / "state")
    b = bundles.make("clir", ["sh", "-c", "echo hello; exit 5"])
    r = cli(root, "run", "--bundle", b, "clir", check=False)
    assert r.returncode == 5 and r.stdout == "hello\n"
    assert json.loads(cli(root, "list", "-f", "json").stdout) == []
    bundles.write(b, ["not-a-program"])
    r = cli(root, "run", "--bundle", b, "clir", check=False)
    assert r.returncode == 1
    assert 'exec: "not-a-program": executable file not found in $PATH' in r.stderr
