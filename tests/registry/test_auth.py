"""/token (GET and OAuth2 POST), and what the registry checks in a token on every request."""

from __future__ import annotations

import base64
import json
import os
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from tests.registry.conftest import USERS
from tests.registry.helpers import RegistryProcess, cli


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def get_token(reg: RegistryProcess, scope: str | None = None, auth: tuple[str, str] | None = None,
              **params: str) -> requests.Response:
    q = {"service": "matou-registry", **params}
    if scope:
        q["scope"] = scope
    return requests.get(reg.url + "/token", params=q, auth=auth)


def test_challenge_names_realm_service_and_scope(auth_registry: RegistryProcess) -> None:
    # anonymous pulls of public repositories are served without a token; anything else is challenged
    assert requests.get(auth_registry.url + "/v2/alice/pub/manifests/nosuchtag").status_code == 404
    r = requests.get(auth_registry.url + "/v2/alice/priv/manifests/latest")
    assert r.status_code == 401
    h = r.headers["WWW-Authenticate"]
    assert h == (f'Bearer realm="{auth_registry.url}/token",service="matou-registry",'
                 'scope="repository:alice/priv:pull"')
    r = requests.post(auth_registry.url + "/v2/alice/pub/blobs/uploads/")
    assert 'scope="repository:alice/pub:pull,push"' in r.headers["WWW-Authenticate"]


def test_token_grants_the_intersection(auth_registry: RegistryProcess) -> None:
    r = get_token(auth_registry, "repository:alice/pub:pull,push,delete", ("rita", USERS["rita"]))
    assert r.status_code == 200
    body = r.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300 and "issued_at" in body
    c = claims(body["token"])
    assert c["sub"] == "rita" and c["aud"] == "matou-registry" and c["iss"] == "matou-registry"
    assert c["access"] == [{"type": "repository", "name": "alice/pub", "actions": ["pull"]}]
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "ES256" and header["kid"].count(":") == 11
    # anonymous on a private repository: a token, with nothing in it
    r = get_token(auth_registry, "repository:alice/priv:pull")
    assert r.status_code == 200
    assert claims(r.json()["token"])["access"] == [{"type": "repository", "name": "alice/priv", "actions": []}]
    # several scopes, and '*'
    r = requests.get(auth_registry.url + "/token", auth=("alice", USERS["alice"]),
                     params={"service": "matou-registry",
                             "scope": ["repository:alice/priv:*", "repository:alice/pub:pull"]})
    acc = {a["name"]: a["actions"] for a in claims(r.json()["token"])["access"]}
    assert acc == {"alice/priv": ["*", "delete", "pull", "push"], "alice/pub": ["pull"]}


def test_bad_credentials_and_service(auth_registry: RegistryProcess) -> None:
    r = get_token(auth_registry, "repository:alice/pub:pull", ("alice", "wrong"))
    assert r.status_code == 401
    r = get_token(auth_registry, "repository:alice/pub:pull", ("nobody", "x"))
    assert r.status_code == 401
    r = requests.get(auth_registry.url + "/token", params={"service": "other", "scope": "repository:a/b:pull"})
    assert r.status_code == 400


def test_oauth2_password_and_refresh_grants(auth_registry: RegistryProcess) -> None:
    url = auth_registry.url + "/token"
    r = requests.post(url, data={"grant_type": "password", "username": "will", "password": USERS["will"],
                                 "service": "matou-registry", "scope": "repository:alice/priv:pull,push",
                                 "client_id": "test", "access_type": "offline"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert claims(body["access_token"])["access"][0]["actions"] == ["pull", "push"]
    refresh = body["refresh_token"]
    r = requests.post(url, data={"grant_type": "refresh_token", "refresh_token": refresh,
                                 "service": "matou-registry", "scope": "repository:alice/priv:pull"})
    assert r.status_code == 200
    assert claims(r.json()["access_token"])["sub"] == "will"
    # an access token is not a refresh token
    r = requests.post(url, data={"grant_type": "refresh_token", "refresh_token": body["access_token"],
                                 "service": "matou-registry"})
    assert r.status_code == 401
    r = requests.post(url, data={"grant_type": "password", "username": "will", "password": "no",
                                 "service": "matou-registry"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_grant"
    r = requests.post(url, data={"grant_type": "client_credentials"})
    assert r.status_code == 400
    # GET with offline_token=true hands out a refresh token as well
    r = get_token(auth_registry, "repository:alice/priv:pull", ("will", USERS["will"]), offline_token="true")
    assert "refresh_token" in r.json()


def test_password_change_revokes_refresh_tokens(tmp_path) -> None:  # noqa: ANN001
    root = str(tmp_path / "root")
    cli("user", "add", "pat", "--password", "one", "--root", root)
    reg = RegistryProcess(root).start()
    try:
        r = requests.post(reg.url + "/token", data={"grant_type": "password", "username": "pat", "password": "one",
                                                    "access_type": "offline", "service": "matou-registry"})
        refresh = r.json()["refresh_token"]
        cli("user", "passwd", "pat", "--root", root, input="two\n")
        r = requests.post(reg.url + "/token", data={"grant_type": "refresh_token", "refresh_token": refresh,
                                                    "service": "matou-registry"})
        assert r.status_code == 401
        assert get_token(reg, None, ("pat", "one")).status_code == 401
        assert get_token(reg, None, ("pat", "two")).status_code == 200
    finally:
        reg.stop()


def _forge(token: str, **changes: object) -> str:
    """Re-sign the token's claims (with changes) using a key the registry does not know."""
    c = claims(token)
    c.update(changes)
    key = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(c, key, algorithm="ES256", headers=jwt.get_unverified_header(token))


def _tamper(token: str, **changes: object) -> str:
    """Change the claims but keep the original signature."""
    h, _, sig = token.split(".")
    c = claims(token)
    c.update(changes)
    payload = base64.urlsafe_b64encode(json.dumps(c).encode()).rstrip(b"=").decode()
    return f"{h}.{payload}.{sig}"


@pytest.mark.parametrize("mutate", ["forged", "tampered", "audience", "issuer", "expired", "scope"])
def test_registry_checks_every_token_property(auth_registry: RegistryProcess, mutate: str) -> None:
    good = get_token(auth_registry, "repository:alice/priv:pull", ("rita", USERS["rita"])).json()["token"]
    url = auth_registry.url + "/v2/alice/priv/manifests/base"
    assert requests.get(url, headers={"Authorization": f"Bearer {good}"}).status_code in (200, 404)
    key_path = os.path.join(auth_registry.root, "keys", "token-es256.pem")
    from cryptography.hazmat.primitives import serialization

    with open(key_path, "rb") as f:
        real = serialization.load_pem_private_key(f.read(), None)
    c = claims(good)
    hdr = jwt.get_unverified_header(good)
    if mutate == "forged":
        bad = _forge(good)
    elif mutate == "tampered":
        bad = _tamper(good, sub="alice")
    elif mutate == "audience":
        bad = jwt.encode({**c, "aud": "elsewhere"}, real, algorithm="ES256", headers=hdr)
    elif mutate == "issuer":
        bad = jwt.encode({**c, "iss": "someone"}, real, algorithm="ES256", headers=hdr)
    elif mutate == "expired":
        bad = jwt.encode({**c, "exp": int(time.time()) - 60}, real, algorithm="ES256", headers=hdr)
    else:  # a valid token for another repository
        bad = jwt.encode({**c, "access": [{"type": "repository", "name": "alice/pub", "actions": ["pull"]}]},
                         real, algorithm="ES256", headers=hdr)
    r = requests.get(url, headers={"Authorization": f"Bearer {bad}"})
    if mutate == "scope":
        assert r.status_code == 401 and 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    else:
        assert r.status_code == 401
        assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_htpasswd_users(tmp_path) -> None:  # noqa: ANN001
    import hashlib

    sha_entry = "{SHA}" + base64.b64encode(hashlib.sha1(b"htpw").digest()).decode()
    ht = tmp_path / "htpasswd"
    ht.write_text(f"hugo:{sha_entry}\n")
    cfg = tmp_path / "registry.toml"
    cfg.write_text(f'[auth]\nhtpasswd = "{ht}"\ndefault_visibility = "public"\n')
    reg = RegistryProcess(str(tmp_path / "root"), ["--config", str(cfg)]).start()
    try:
        assert requests.get(reg.url + "/v2/", auth=("hugo", "htpw")).status_code == 200
        assert requests.get(reg.url + "/v2/", auth=("hugo", "nope")).status_code == 401
        r = get_token(reg, "repository:hugo/app:pull,push", ("hugo", "htpw"))
        assert claims(r.json()["token"])["access"][0]["actions"] == ["pull", "push"]
    finally:
        reg.stop()


def test_management_api_takes_tokens_with_the_api_scope(auth_registry: RegistryProcess) -> None:
    url = auth_registry.url + "/api/v1/whoami"
    pull_token = get_token(auth_registry, "repository:alice/pub:pull", ("alice", USERS["alice"])).json()["token"]
    r = requests.get(url, headers={"Authorization": f"Bearer {pull_token}"})
    assert r.status_code == 401  # a pull token handed to a daemon manages nothing
    api_token = get_token(auth_registry, "registry:api:*", ("alice", USERS["alice"])).json()["token"]
    r = requests.get(url, headers={"Authorization": f"Bearer {api_token}"})
    assert r.status_code == 200 and r.json()["name"] == "alice"
    anon = get_token(auth_registry, "registry:api:*").json()["token"]
    assert claims(anon)["access"][0]["actions"] == []
    assert requests.get(url).json()["anonymous"] is True


def test_tls(tmp_path) -> None:  # noqa: ANN001
    import datetime
    import ipaddress
    import subprocess

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    from tests.registry.helpers import PY, env, free_port

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    proc = subprocess.Popen([PY, "-m", "matou.registry", "serve", "--root", str(tmp_path / "root"),
                             "--addr", f"127.0.0.1:{port}", "--tls-cert", str(cert_path), "--tls-key", str(key_path)],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.get(base + "/v2/", verify=str(cert_path), timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith(f'Bearer realm="{base}/token"')
        assert requests.get(base + "/v1/_ping", verify=str(cert_path)).status_code == 200
    finally:
        proc.kill()
        proc.wait()


def test_matou_cli_entry_point(tmp_path) -> None:  # noqa: ANN001
    import subprocess

    from tests.registry.helpers import PY, env

    root = str(tmp_path / "root")
    p = subprocess.run([PY, "-m", "matou.cli.main", "registry", "user", "add", "ann", "--password", "pw",
                        "--root", root], env=env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([PY, "-m", "matou.cli.main", "registry", "user", "ls", "--root", root], env=env(),
                       capture_output=True, text=True, timeout=60)
    assert "ann" in p.stdout
    p = subprocess.run([PY, "-m", "matou.cli.main", "registry", "user", "add", "ann", "--password", "pw",
                        "--root", root], env=env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "already exists" in p.stderr
