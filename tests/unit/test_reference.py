import pytest

from matou.errors import InvalidArgument
from matou.types import reference


@pytest.mark.parametrize("value,expected", [
    ("ubuntu", "docker.io/library/ubuntu:latest"),
    ("ubuntu:22.04", "docker.io/library/ubuntu:22.04"),
    ("library/ubuntu", "docker.io/library/ubuntu:latest"),
    ("alice/app:1", "docker.io/alice/app:1"),
    ("localhost:5000/a/b:t", "localhost:5000/a/b:t"),
    ("localhost/a", "localhost/a:latest"),
    ("127.0.0.1:5000/alice/app:1", "127.0.0.1:5000/alice/app:1"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
    ("quay.io/a/b/c:v1.2-rc_3", "quay.io/a/b/c:v1.2-rc_3"),
    ("a__b/c--d/e.f", "docker.io/a__b/c--d/e.f:latest"),
])
def test_normalise(value: str, expected: str) -> None:
    assert str(reference.parse_normalized_tagged(value)) == expected


def test_digest_reference() -> None:
    d = "sha256:" + "a" * 64
    r = reference.parse(f"busybox@{d}")
    assert r.digest == d and r.tag is None
    assert str(r.with_default_tag()) == f"docker.io/library/busybox@{d}"
    assert r.familiar() == f"busybox@{d}"


def test_familiar() -> None:
    assert reference.parse("docker.io/library/busybox:1").familiar() == "busybox:1"
    assert reference.parse("docker.io/alice/x").familiar_name == "alice/x"
    assert reference.parse("localhost:5000/x").familiar_name == "localhost:5000/x"


@pytest.mark.parametrize("value,msg", [
    ("", "repository name must have at least one component"),
    ("Ubuntu", "must be lowercase"),
    ("ubuntu:", "invalid reference format"),
    ("ubuntu:a:b", "invalid reference format"),
    ("-ubuntu", "invalid reference format"),
    ("ubuntu@sha256:abc", "invalid reference format"),
    ("a" * 64, "cannot specify 64-byte hexadecimal strings"),
    ("a/" * 130 + "b", "must not be more than 255 characters"),
    ("ubuntu:" + "x" * 129, "invalid reference format"),
])
def test_invalid(value: str, msg: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        reference.parse(value)
    assert msg in str(e.value)
