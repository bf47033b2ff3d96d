import os
import subprocess

import pytest

from matou.errors import Conflict
from matou.store.metadata import Database
from matou.store.snapshots import OverlaySnapshotter
from matou.store.snapshots.overlay import mount_all
from matou.util.mount import umount


@pytest.fixture
def snap(tmpdir_root):
    db = Database(os.path.join(tmpdir_root, "meta.db"))
    yield OverlaySnapshotter(os.path.join(tmpdir_root, "snapshots"), db), tmpdir_root
    db.close()


def _layer(s: OverlaySnapshotter, name: str, parent: str | None, files: dict[str, str]) -> None:
    key = "extract-" + name
    s.prepare(key, None)
    d = s.dir(key)
    for p, content in files.items():
        os.makedirs(os.path.dirname(os.path.join(d, p)), exist_ok=True)
        with open(os.path.join(d, p), "w") as f:
            f.write(content)
    s.commit(name, key, parent=parent)


def test_prepare_commit_mount(snap) -> None:
    s, root = snap
    _layer(s, "l1", None, {"a": "1", "b": "1"})
    _layer(s, "l2", "l1", {"b": "2"})
    s.prepare("ctr", "l2")
    target = os.path.join(root, "mnt")
    os.mkdir(target)
    mount_all(s.mounts("ctr"), target)
    try:
        assert open(os.path.join(target, "a")).read() == "1"
        assert open(os.path.join(target, "b")).read() == "2"
        with open(os.path.join(target, "c"), "w") as f:
            f.write("3")
    finally:
        umount(target)
    assert os.listdir(s.dir("ctr")) == ["c"]
    with pytest.raises(Conflict):
        s.remove("l2")
    s.remove("ctr")
    s.remove("l2")
    s.remove("l1")
    assert s.walk() == []


def test_120_layers_in_one_mount(snap) -> None:
    s, root = snap
    parent = None
    for i in range(120):
        _layer(s, f"layer{i}", parent, {f"f{i}": str(i)})
        parent = f"layer{i}"
    s.prepare("ctr", parent)
    m = s.mounts("ctr")
    assert len(m) == 1 and m[0].type == "overlay"
    target = os.path.join(root, "mnt")
    os.mkdir(target)
    mount_all(m, target)
    try:
        assert len(os.listdir(target)) == 120
        assert open(os.path.join(target, "f0")).read() == "0"
        out = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", target], capture_output=True, text=True).stdout
        assert out.strip() == "overlay"
    finally:
        umount(target)


def test_ids_are_never_reused(snap) -> None:
    s, _root = snap
    s.prepare("a", None)
    first = s.stat("a").id
    s.remove("a")
    s.prepare("b", None)
    assert s.stat("b").id > first  # a removal may still be deleting the old directory
