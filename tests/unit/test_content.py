import hashlib
import os

import pytest

from matou.errors import DataCorruption
from matou.store.content import ContentStore


def test_put_and_read(tmp_path) -> None:
    cs = ContentStore(str(tmp_path))
    d = cs.put(b"hello")
    assert d == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert cs.read(d) == b"hello"
    assert cs.verify(d)
    assert cs.put(b"hello") == d


def test_digest_mismatch_is_not_visible(tmp_path) -> None:
    cs = ContentStore(str(tmp_path))
    wrong = "sha256:" + "0" * 64
    w = cs.writer("x", wrong, 5)
    w.write(b"hello")
    with pytest.raises(DataCorruption):
        w.commit()
    assert not cs.exists(wrong)
    assert list(cs.walk()) == []


def test_size_mismatch(tmp_path) -> None:
    cs = ContentStore(str(tmp_path))
    w = cs.writer("x", None, 10)
    w.write(b"hello")
    with pytest.raises(DataCorruption):
        w.commit()
    assert list(cs.walk()) == []


def test_resume(tmp_path) -> None:
    cs = ContentStore(str(tmp_path))
    data = os.urandom(3 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    w = cs.writer("pull-x", digest, len(data))
    w.write(data[:1 << 20])
    w.close()  # interrupted
    assert not cs.exists(digest)
    w2 = cs.writer("pull-x", digest, len(data))
    assert w2.offset == 1 << 20
    w2.write(data[w2.offset:])
    assert w2.commit() == digest
    assert cs.read(digest) == data
    assert list(cs.ingests()) == []
