"""The registry client's pieces on their own: challenges, credentials, endpoints, the CLI's progress display."""

from __future__ import annotations

import base64
import io
import json
import os

import pytest

from matou.cli.progress import Display, progress_text
from matou.client import auth as cauth
from matou.daemon.services.distribution import pull_reference, split_search_term
from matou.distribution.auth import Credentials, parse_challenges
from matou.distribution.endpoints import (
    RegistrySettings,
    endpoints,
    is_insecure,
    normalize_server,
    registry_host,
    server_address,
)
from matou.distribution.progress import bar_text, human_size
from matou.errors import InvalidArgument


def test_challenges() -> None:
    [c] = parse_challenges(['Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                            'scope="repository:library/busybox:pull"'])
    assert c.scheme == "bearer" and c.realm == "https://auth.docker.io/token"
    assert c.params["service"] == "registry.docker.io" and c.params["scope"] == "repository:library/busybox:pull"
    cs = parse_challenges(['Basic realm="x y", Bearer realm="https://a/t", error="insufficient_scope"'])
    assert [c.scheme for c in cs] == ["basic", "bearer"]
    assert cs[0].realm == "x y" and cs[1].params["error"] == "insufficient_scope"
    [c] = parse_challenges(['Bearer realm="a\\"b",service=plain'])
    assert c.realm == 'a"b' and c.params["service"] == "plain"
    assert parse_challenges([""]) == []


def test_credentials_header() -> None:
    raw = json.dumps({"username": "u", "password": "p", "serveraddress": "h:1"}).encode()
    for enc in (base64.urlsafe_b64encode(raw), base64.urlsafe_b64encode(raw).rstrip(b"=")):
        c = Credentials.from_header(enc.decode())
        assert (c.username, c.password, c.server) == ("u", "p", "h:1")
    assert Credentials.from_header("e30=").anonymous
    assert Credentials.from_header(None).anonymous
    c = Credentials.from_json({"auth": base64.b64encode(b"al:ice:pw").decode()})
    assert (c.username, c.password) == ("al", "ice:pw")
    assert Credentials.from_json({"identitytoken": "t"}).identity_token == "t"
    with pytest.raises(InvalidArgument):
        Credentials.from_header(base64.urlsafe_b64encode(b"not json").decode())
    assert Credentials("a", "b").key != Credentials("a", "c").key
    assert "s3cret-pw" not in Credentials("a", "s3cret-pw").key


def test_endpoints() -> None:
    s = RegistrySettings(insecure=("myreg:5000", "10.1.0.0/16"), mirrors=("https://mirror.example",),
                         mirrors_by_host={"quay.io": ("http://127.0.0.1:6000/prefix/",)})
    assert is_insecure("127.0.0.1:5000", s) and is_insecure("localhost:5000", s) and is_insecure("[::1]:5000", s)
    assert is_insecure("myreg:5000", s) and is_insecure("10.1.2.3", s) and not is_insecure("10.2.0.1", s)
    assert not is_insecure("quay.io", s)
    assert registry_host("docker.io") == "registry-1.docker.io" and registry_host("quay.io") == "quay.io"
    hub = endpoints("docker.io", s, pull=True)
    assert [str(e) for e in hub] == ["https://mirror.example", "https://registry-1.docker.io"]
    assert hub[0].mirror and hub[1].verify and hub[1].schemes == ("https",)
    assert [str(e) for e in endpoints("docker.io", s, pull=False)] == ["https://registry-1.docker.io"]
    q = endpoints("quay.io", s, pull=True)
    assert q[0].host == "127.0.0.1:6000" and q[0].path == "/prefix" and q[0].schemes == ("http",)
    local = endpoints("127.0.0.1:5000", s, pull=True)
    assert local[0].schemes == ("https", "http") and not local[0].verify
    assert normalize_server("https://index.docker.io/v1/") == "docker.io"
    assert normalize_server("http://Reg.Example:5000/v2/") == "reg.example:5000"
    assert server_address("docker.io") == "https://index.docker.io/v1/"


def test_pull_reference_and_search_terms() -> None:
    ref, all_tags = pull_reference("busybox", "1.36")
    assert str(ref) == "docker.io/library/busybox:1.36" and not all_tags
    d = "sha256:" + "a" * 64
    ref, _ = pull_reference("busybox", d)
    assert ref.digest == d and ref.tag is None
    assert pull_reference("busybox", None)[1] is True
    assert pull_reference("busybox:2", None)[0].tag == "2"
    assert split_search_term("alice") == ("docker.io", "alice")
    assert split_search_term("alice/app") == ("docker.io", "alice/app")
    assert split_search_term("127.0.0.1:5000/alice") == ("127.0.0.1:5000", "alice")
    assert split_search_term("localhost/x") == ("localhost", "x")


def test_progress_text_matches_docker() -> None:
    assert human_size(1234567) == "1.235MB" and human_size(999) == "999B"
    assert bar_text(0, 100).startswith("[>") and bar_text(100, 100).startswith("[" + "=" * 50 + ">]")
    assert progress_text({"current": 50, "total": 100}, 200) == bar_text(50, 100)
    assert progress_text({"current": 50, "total": 100}, 80) == "     50B/100B"  # narrow: no bar
    assert progress_text({}, 200) == ""


def test_display_plain_and_terminal() -> None:
    msgs = [{"status": "Pulling from library/busybox", "id": "latest"},
            {"status": "Pulling fs layer", "progressDetail": {}, "id": "aaa"},
            {"status": "Downloading", "progressDetail": {"current": 5, "total": 10}, "progress": "[=>]", "id": "aaa"},
            {"status": "Pull complete", "progressDetail": {}, "id": "aaa"},
            {"status": "Digest: sha256:x"}]
    out = io.StringIO()
    d = Display(out, tty=False)
    for m in msgs:
        assert d.feed(m)
    assert out.getvalue().splitlines() == ["latest: Pulling from library/busybox", "aaa: Pulling fs layer",
                                           "aaa: Pull complete", "Digest: sha256:x"]
    out = io.StringIO()
    d = Display(out, tty=True)
    for m in msgs:
        d.feed(m)
    text = out.getvalue()
    assert "\x1b[1A" in text and "\x1b[2K" in text and "aaa: Downloading [" in text
    assert not d.feed({"errorDetail": {"message": "boom"}, "error": "boom"}) and d.error == "boom"


def test_client_config_lookup(tmp_path) -> None:  # noqa: ANN001
    path = os.path.join(tmp_path, "config.json")
    with open(path, "w") as f:
        json.dump({"auths": {"https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
                             "http://reg.example:5000/v2/": {"auth": base64.b64encode(b"me:secret").decode()}},
                   "credHelpers": {"ecr.example": "nonexistent-helper"}, "other": {"kept": True}}, f)
    cfg = cauth.ConfigFile.load(path)
    assert cfg.get(cauth.server_key("docker.io")) == cauth.AuthEntry("hub", "pw", "", cauth.HUB_SERVER)
    e = cfg.get(cauth.server_key("reg.example:5000"))
    assert e is not None and (e.username, e.password) == ("me", "secret")
    with pytest.raises(cauth.CredentialError):
        cfg.get("ecr.example")
    cfg.store(cauth.AuthEntry("me", "", "tok", "reg.example:5000"))
    data = json.load(open(path))
    assert data["other"] == {"kept": True} and "http://reg.example:5000/v2/" not in data["auths"]
    assert data["auths"]["reg.example:5000"]["identitytoken"] == "tok"
    assert cauth.registry_of("busybox") == "docker.io" and cauth.registry_of("a/b") == "docker.io"
    assert cauth.registry_of("127.0.0.1:5000/a") == "127.0.0.1:5000"
    hdr = json.loads(base64.urlsafe_b64decode(cauth.encode_header(e)))
    assert hdr == {"username": "me", "password": "secret", "serveraddress": "reg.example:5000"}
