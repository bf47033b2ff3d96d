"""The StorageDriver conformance suite: every driver runs every test here (add new drivers to DRIVERS)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator

import pytest

from matou.errors import DataCorruption, NotFound
from matou.registry.storage import OffsetMismatch, StorageDriver
from matou.registry.storage.filesystem import FilesystemDriver


def _fs(tmp: str) -> StorageDriver:
    return FilesystemDriver(tmp)


DRIVERS: dict[str, Callable[[str], StorageDriver]] = {"filesystem": _fs}


@pytest.fixture(params=sorted(DRIVERS))
def make(request: pytest.FixtureRequest, tmp_path) -> Iterator[Callable[[], StorageDriver]]:  # noqa: ANN001
    """A factory: several instances on one root behave like replicas sharing storage."""
    opened: list[StorageDriver] = []

    def factory() -> StorageDriver:
        d = DRIVERS[request.param](str(tmp_path / "root"))
        opened.append(d)
        return d

    yield factory
    for d in opened:
        d.close()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_all(d: StorageDriver, digest: str) -> bytes:
    with d.open_blob(digest) as f:
        return f.read()


def upload(d: StorageDriver, chunks: list[bytes]) -> str:
    uid = d.create_upload()
    w = d.open_upload(uid, 0)
    try:
        for c in chunks:
            w.write(c)
    finally:
        w.close()
    return uid


def test_missing_blob(make) -> None:  # noqa: ANN001
    d = make()
    digest = sha(b"nothing")
    assert d.stat_blob(digest) is None
    assert d.blob_path(digest) is None
    with pytest.raises(NotFound):
        d.open_blob(digest)
    assert d.delete_blob(digest) is False


def test_put_and_read(make) -> None:  # noqa: ANN001
    d = make()
    data = b"hello registry"
    seen: list[int] = []
    d.put_blob(sha(data), data, seen.append)
    assert seen == [len(data)]
    assert d.stat_blob(sha(data)) == len(data)
    assert d.read_blob(sha(data)) == data
    assert read_all(d, sha(data)) == data
    assert sha(data) in {b.digest for b in d.list_blobs()}


def test_put_with_wrong_digest_stores_nothing(make) -> None:  # noqa: ANN001
    d = make()
    wrong = sha(b"other")
    called: list[int] = []
    with pytest.raises(DataCorruption):
        d.put_blob(wrong, b"content", called.append)
    assert called == []
    assert d.stat_blob(wrong) is None
    assert list(d.list_blobs()) == []


def test_chunked_upload_commit(make) -> None:  # noqa: ANN001
    d = make()
    chunks = [os.urandom(100_000), os.urandom(1), b"", os.urandom(70_000)]
    data = b"".join(chunks)
    uid = upload(d, chunks)
    assert d.upload_size(uid) == len(data)
    size = d.commit_upload(uid, sha(data))
    assert size == len(data)
    assert read_all(d, sha(data)) == data
    with pytest.raises(NotFound):
        d.upload_size(uid)


def test_commit_with_wrong_digest_refuses_and_drops_session(make) -> None:  # noqa: ANN001
    d = make()
    uid = upload(d, [b"actual bytes"])
    claimed = sha(b"claimed bytes")
    called: list[int] = []
    with pytest.raises(DataCorruption):
        d.commit_upload(uid, claimed, called.append)
    assert called == []
    assert d.stat_blob(claimed) is None
    assert d.stat_blob(sha(b"actual bytes")) is None
    with pytest.raises(NotFound):
        d.upload_size(uid)


def test_append_at_wrong_offset_is_refused(make) -> None:  # noqa: ANN001
    d = make()
    uid = upload(d, [b"12345"])
    with pytest.raises(OffsetMismatch) as ei:
        d.open_upload(uid, 3)
    assert ei.value.size == 5
    w = d.open_upload(uid, 5)
    w.write(b"678")
    assert w.close() == 8
    w = d.open_upload(uid)  # no offset: append at the end
    w.write(b"9")
    w.close()
    d.commit_upload(uid, sha(b"123456789"))
    assert d.read_blob(sha(b"123456789")) == b"123456789"


def test_concurrent_appenders_are_serialised(make) -> None:  # noqa: ANN001
    d = make()
    other = make()
    uid = upload(d, [b"a"])
    w = d.open_upload(uid, 1)
    with pytest.raises(OffsetMismatch):
        other.open_upload(uid, 1)
    w.write(b"b")
    w.close()
    w2 = other.open_upload(uid, 2)
    w2.write(b"c")
    w2.close()
    assert d.commit_upload(uid, sha(b"abc")) == 3


def test_resume_in_another_instance(make) -> None:  # noqa: ANN001
    """A session started by one replica (or before a restart) is finished by another, which rehashes."""
    first = make()
    part1, part2 = os.urandom(300_000), os.urandom(200_000)
    uid = upload(first, [part1])
    second = make()
    assert second.upload_size(uid) == len(part1)
    w = second.open_upload(uid, len(part1))
    w.write(part2)
    w.close()
    assert first.commit_upload(uid, sha(part1 + part2)) == len(part1) + len(part2)
    assert second.read_blob(sha(part1 + part2)) == part1 + part2


def test_failed_write_leaves_session_consistent(make) -> None:  # noqa: ANN001
    d = make()
    uid = upload(d, [b"good"])
    w = d.open_upload(uid, 4)
    with pytest.raises(TypeError):
        w.write("not bytes")  # type: ignore[arg-type]
    assert w.close() == 4
    d.commit_upload(uid, sha(b"good"))
    assert d.read_blob(sha(b"good")) == b"good"


def test_same_content_twice_is_stored_once(make) -> None:  # noqa: ANN001
    d = make()
    data = os.urandom(10_000)
    d.commit_upload(upload(d, [data]), sha(data))
    d.commit_upload(upload(d, [data]), sha(data))
    d.put_blob(sha(data), data)
    assert [b.digest for b in d.list_blobs()] == [sha(data)]
    assert d.read_blob(sha(data)) == data


def test_cancel_upload(make) -> None:  # noqa: ANN001
    d = make()
    uid = upload(d, [b"partial"])
    assert uid in {u.upload_id for u in d.list_uploads()}
    assert d.delete_upload(uid) is True
    assert d.delete_upload(uid) is False
    with pytest.raises(NotFound):
        d.open_upload(uid)
    with pytest.raises(NotFound):
        d.commit_upload(uid, sha(b"partial"))


def test_unknown_and_hostile_upload_ids(make) -> None:  # noqa: ANN001
    d = make()
    for bad in ("../../etc/passwd", "0" * 36, "not-a-uuid", ""):
        with pytest.raises(NotFound):
            d.upload_size(bad)
        with pytest.raises(NotFound):
            d.open_upload(bad)


def test_hostile_digests_are_rejected(make) -> None:  # noqa: ANN001
    from matou.errors import InvalidArgument

    d = make()
    for bad in ("sha256:../../../etc/passwd", "md5:" + "0" * 32, "sha256:" + "Z" * 64):
        with pytest.raises(InvalidArgument):
            d.stat_blob(bad)


def test_delete_and_still_wanted(make) -> None:  # noqa: ANN001
    d = make()
    data = b"keep me"
    d.put_blob(sha(data), data)
    assert d.delete_blob(sha(data), lambda: True) is False
    assert d.read_blob(sha(data)) == data
    assert d.delete_blob(sha(data), lambda: False) is True
    assert d.stat_blob(sha(data)) is None


def test_delete_racing_a_republish_keeps_the_blob(make) -> None:  # noqa: ANN001
    """The re-upload publishes while the deleter has the file moved aside: the blob survives either way."""
    d = make()
    data = os.urandom(5000)
    d.put_blob(sha(data), data)

    def wanted() -> bool:
        d.put_blob(sha(data), data)  # a concurrent upload of the same bytes lands right now
        return True

    d.delete_blob(sha(data), wanted)
    assert d.read_blob(sha(data)) == data


def test_sha512_digest(make) -> None:  # noqa: ANN001
    d = make()
    data = os.urandom(1000)
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    uid = upload(d, [data])
    d.commit_upload(uid, digest)
    assert d.read_blob(digest) == data
