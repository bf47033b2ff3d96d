"""The registry client against live servers: chunked and monolithic uploads, resumed blob reads, and a server that
lies about a digest."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import tempfile
import threading
from collections.abc import Iterator

import pytest

from matou.distribution.auth import Credentials
from matou.distribution.client import Registries
from matou.distribution.endpoints import Endpoint, RegistrySettings, endpoint_for
from matou.distribution.http import FileBody
from matou.errors import DataCorruption, NotFound
from tests.distribution.conftest import USERS, Reg


@pytest.fixture
def registries() -> Iterator[Registries]:
    r = Registries(RegistrySettings())
    try:
        yield r
    finally:
        r.close()


@pytest.mark.parametrize("chunk", [None, 100_000])
def test_upload_monolithic_and_chunked(registries: Registries, auth_reg: Reg, chunk: int | None) -> None:
    data = os.urandom(350_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    ep = endpoint_for(auth_reg.host, registries.settings)
    repo = registries.repository(ep, "alice/chunks", Credentials("alice", USERS["alice"]), push=True)
    assert repo.blob_size(digest) is None
    auth_reg.proxy.reset()
    seen: list[int] = []
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        loc = repo.start_upload()
        assert loc is not None
        repo.upload(loc, FileBody(f, 0, len(data)), digest, chunk_size=chunk, progress=seen.append)
    assert repo.blob_size(digest) == len(data)
    assert len(auth_reg.proxy.requests("PATCH")) == (4 if chunk else 0)
    assert seen and seen[-1] == len(data)
    resp, start = repo.open_blob(digest, 123_456)
    with resp:
        assert start == 123_456 and resp.read() == data[123_456:]
    assert repo.read_blob(digest, 1 << 20) == data


class _Liar(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/v2/":
            body = b"{}"
        else:
            body = json.dumps({"schemaVersion": 2, "config": {"digest": "sha256:" + "1" * 64, "size": 1},
                               "layers": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_manifest_that_does_not_match_its_digest_is_refused(registries: Registries) -> None:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Liar)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        ep = Endpoint(f"127.0.0.1:{srv.server_address[1]}", ("http",))
        repo = registries.repository(ep, "x/y")
        with pytest.raises(DataCorruption, match="digest mismatch"):
            repo.get_manifest("sha256:" + "2" * 64)
        assert repo.get_manifest("latest").media_type == "application/vnd.oci.image.manifest.v1+json"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


def test_tags_and_missing_things(registries: Registries, open_reg: Reg) -> None:
    ep = endpoint_for(open_reg.host, registries.settings)
    repo = registries.repository(ep, "nobody/nothing")
    with pytest.raises(NotFound):
        repo.get_manifest("latest")
    with pytest.raises(NotFound):
        repo.tags()
