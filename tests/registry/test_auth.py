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
