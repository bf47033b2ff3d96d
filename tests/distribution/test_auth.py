"""login, logout, credentials in docker's config.json format, credential helpers, and search."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys

import pytest

from tests.conftest import Daemon
from tests.distribution.conftest import USERS, Reg, login
from tests.registry.helpers import Client, busybox_image


@pytest.fixture(scope="module")
def private_image(auth_reg: Reg) -> str:
    r = Client(auth_reg.url, "alice", USERS["alice"]).push_image("alice/priv", busybox_image("private"), "auth")
    assert r.status_code == 201
    return f"{auth_reg.host}/alice/priv:auth"


def _config(env: dict[str, str], which: str = "MATOU_CONFIG") -> dict:
    with open(os.path.join(env[which], "config.json")) as f:
        return json.load(f)


def test_login_stores_an_identity_token_and_logout_removes_it(daemon: Daemon, auth_reg: Reg, private_image: str,
                                                              client_env: dict[str, str]) -> None:
    host = auth_reg.host
    r = daemon.cli("login", "-u", "alice", "--password-stdin", host, input="wrong\n", env=client_env, check=False)
    assert r.returncode == 1 and "unauthorized" in r.stderr.decode()
    assert not os.path.exists(os.path.join(client_env["MATOU_CONFIG"], "config.json"))
    r = login(daemon, client_env, host, "alice")
    assert r.stdout.decode().strip() == "Login Succeeded"
    path = os.path.join(client_env["MATOU_CONFIG"], "config.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    entry = _config(client_env)["auths"][host]
    assert base64.b64decode(entry["auth"]).decode() == "alice:"  # the password is not stored...
    assert entry["identitytoken"]  # ...a refresh token is
    # pulling a private image goes through the refresh-token grant
    daemon.cli("pull", private_image, env=client_env)
    # login without arguments reuses what is stored
    out = daemon.out("login", host, env=client_env)
    assert "Authenticating with existing credentials" in out and "Login Succeeded" in out
    assert daemon.out("logout", host, env=client_env).strip() == f"Removing login credentials for {host}"
    assert host not in _config(client_env).get("auths", {})
    assert daemon.out("logout", host, env=client_env).strip() == f"Not logged in to {host}"
    r = daemon.cli("pull", private_image, env=client_env, check=False)
    assert r.returncode == 1
    daemon.cli("rmi", private_image)


def test_docker_config_is_read_and_a_plain_password_works(daemon: Daemon, auth_reg: Reg, private_image: str,
                                                          client_env: dict[str, str]) -> None:
    os.makedirs(client_env["DOCKER_CONFIG"])
    with open(os.path.join(client_env["DOCKER_CONFIG"], "config.json"), "w") as f:
        json.dump({"auths": {f"http://{auth_reg.host}/v2/": {
            "auth": base64.b64encode(f"rita:{USERS['rita']}".encode()).decode()}}}, f)
    out = daemon.out("pull", private_image, env=client_env)
    assert "Pull complete" in out or "Already exists" in out
    daemon.cli("rmi", private_image)


HELPER = """#!{py}
import json, os, sys
store = os.path.join(os.path.dirname(os.path.abspath(__file__)), "store.json")
data = json.load(open(store)) if os.path.exists(store) else {{}}
action = sys.argv[1]
payload = sys.stdin.read()
if action == "store":
    d = json.loads(payload)
    data[d["ServerURL"]] = d
elif action == "get":
    key = payload.strip()
    if key not in data:
        print("credentials not found in native keychain")
        sys.exit(1)
    print(json.dumps(data[key]))
elif action == "erase":
    if data.pop(payload.strip(), None) is None:
        print("credentials not found in native keychain")
        sys.exit(1)
json.dump(data, open(store, "w"))
"""


def test_credential_helper(daemon: Daemon, auth_reg: Reg, private_image: str, client_env: dict[str, str]) -> None:
    bindir = os.path.join(client_env["MATOU_CONFIG"], "bin")
    os.makedirs(bindir)
    helper = os.path.join(bindir, "docker-credential-mtest")
    with open(helper, "w") as f:
        f.write(HELPER.format(py=sys.executable))
    os.chmod(helper, 0o755)
    with open(os.path.join(client_env["MATOU_CONFIG"], "config.json"), "w") as f:
        json.dump({"credsStore": "mtest"}, f)
    env = {**client_env, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    host = auth_reg.host
    r = login(daemon, env, host, "alice")
    assert "WARNING! Your password will be stored unencrypted" not in r.stderr.decode()
    with open(os.path.join(bindir, "store.json")) as f:
        stored = json.load(f)[host]
    assert stored["Username"] == "<token>" and stored["Secret"]  # an identity token, not the password
    assert USERS["alice"] not in json.dumps(_config(client_env))
    daemon.cli("pull", private_image, env=env)
    assert "Removing login credentials" in daemon.out("logout", host, env=env)
    with open(os.path.join(bindir, "store.json")) as f:
        assert host not in json.load(f)
    daemon.cli("rmi", private_image)


def test_search_shows_private_repositories_only_to_who_may_see_them(daemon: Daemon, auth_reg: Reg,
                                                                    client_env: dict[str, str]) -> None:
    host = auth_reg.host
    names = daemon.out("search", "--format", "{{.Name}}", f"{host}/alice", env=client_env).split()
    assert "alice/pub" in names and "alice/priv" not in names
    table = daemon.out("search", f"{host}/alice", env=client_env).splitlines()
    assert table[0].split() == ["NAME", "DESCRIPTION", "STARS", "OFFICIAL"]
    assert any(line.startswith("alice/pub") and "alice's public image" in line for line in table)
    login(daemon, client_env, host, "alice")
    names = daemon.out("search", "--format", "{{.Name}}", f"{host}/alice", env=client_env).split()
    assert "alice/pub" in names and "alice/priv" in names
    assert daemon.out("search", "--filter", "stars=1", "--format", "{{.Name}}", f"{host}/alice",
                      env=client_env).split() == []
    assert len(daemon.out("search", "--limit", "1", "--format", "{{.Name}}", f"{host}/alice",
                          env=client_env).split()) == 1
    r = daemon.cli("search", "--limit", "1000", f"{host}/alice", env=client_env, check=False)
    assert r.returncode == 1 and "outside the range" in r.stderr.decode()
    # bob is a stranger: public only
    client_env2 = {k: v + "-bob" for k, v in client_env.items()}
    login(daemon, client_env2, host, "bob")
    names = daemon.out("search", "--format", "{{.Name}}", f"{host}/alice", env=client_env2).split()
    assert "alice/pub" in names and "alice/priv" not in names
