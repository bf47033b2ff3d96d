"""The OpenAPI document matoud serves, and schemathesis against a live daemon of this module's own.

schemathesis generates requests for every operation of the document (valid ones: the daemon must not answer
500, and every answer must match the document: status code, content type, body schema). Operations that would
reach outside this machine (pull, push, login, search, build from a URL) or create host-wide state from random
input (networks: bridges and subnets in the host's namespace) are left out here; the client tests cover them.
Streams that only end with the container (events, attach, wait, logs/stats follow) get a container-less daemon,
so every such request ends at once with 404. Examples per operation are few: the run stays within a minute or two.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
import requests

from tests.compat.conftest import free_port, private_daemon
from tests.conftest import Daemon

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from matou.daemon.api import openapi  # noqa: E402

EXCLUDED = {
    ("POST", "/auth"), ("GET", "/images/search"), ("POST", "/images/{name}/push"), ("POST", "/images/create"),
    ("POST", "/build"), ("POST", "/networks/create"), ("POST", "/networks/{id}/connect"),
    ("POST", "/networks/{id}/disconnect"), ("GET", "/events"),
}


def content_type_unless_empty(ctx, response, case):  # type: ignore[no-untyped-def]
    """Docker sends no Content-Type with an empty answer (204, 304, HEAD): only answers with a body must have one."""
    if response.status_code in (101, 204, 304) or case.method.upper() == "HEAD" or not response.content:
        return None
    return content_type_conformance(ctx, response, case)


CHECKS = [not_a_server_error, status_code_conformance, content_type_unless_empty, response_schema_conformance]


@schemathesis.serializer("application/x-tar")
def tar_serializer(ctx, value):  # type: ignore[no-untyped-def]
    """Random bytes as the body of tar uploads (the daemon must answer 400, not fail)."""
    return value if isinstance(value, bytes) else str(value).encode()

schema = schemathesis.openapi.from_path(openapi.JSON_PATH)


@pytest.fixture(scope="module")
def st_daemon() -> Iterator[tuple[Daemon, str]]:
    port = free_port()
    with private_daemon("matou-st-", extra=["-H", f"tcp://127.0.0.1:{port}"]) as d:
        d.cli("image", "bootstrap", "busybox")
        base = f"http://127.0.0.1:{port}/v1.45"
        yield d, base
        # whatever the random requests made: volumes (containers and networks go in private_daemon)
        for v in requests.get(f"{base}/volumes", timeout=30).json().get("Volumes") or []:
            requests.delete(f"{base}/volumes/{v['Name']}", params={"force": "1"}, timeout=30)


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    s = requests.Session()
    try:
        yield s
    finally:
        s.close()


def test_document_is_current() -> None:
    """openapi.json is generated from openapi.yaml: the two must agree (regenerate: python -m matou.daemon.api.openapi)."""
    pytest.importorskip("yaml")
    with open(openapi.JSON_PATH) as f:
        assert json.load(f) == openapi.generate()


def test_served_document(st_daemon: tuple[Daemon, str]) -> None:
    _, base = st_daemon
    doc = requests.get(f"{base}/openapi.json", timeout=10).json()
    assert doc["swagger"] == "2.0" and doc["info"]["version"] == "1.45"
    assert "/containers/{id}/archive" in doc["paths"] and "/system/df" in doc["paths"]
    r = requests.get(base.rsplit("/", 1)[0] + "/openapi.yaml", timeout=10)
    assert r.status_code == 200 and r.text.startswith("#")


@schema.exclude(method="POST", path="/auth").parametrize()
@settings(max_examples=int(os.environ.get("MATOU_ST_EXAMPLES", "12")), deadline=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck), database=None,
          derandomize=os.environ.get("MATOU_ST_RANDOM") is None)
def test_schemathesis(case, st_daemon: tuple[Daemon, str], session: requests.Session) -> None:  # type: ignore[no-untyped-def]
    if (case.method.upper(), case.path) in EXCLUDED:
        pytest.skip("reaches outside this machine or the host's network: covered by the client tests")
    _, base = st_daemon
    t0 = time.monotonic()
    case.call_and_validate(base_url=base, session=session, checks=CHECKS, timeout=30)
    assert time.monotonic() - t0 < 30
