"""The small-file worker process: same trees as without it, archive order kept, failures named and cleaned up,
nothing left behind (processes, fds, threads)."""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import threading

import pytest

from matou.errors import InvalidArgument, SystemError_
from matou.layers import extract, filework, worker
from matou.layers.apply import apply_layer
from matou.layers.diff import write_tree
from tests.layers.helpers import archive, build_sample_tree, member, pax_member, snapshot


@pytest.fixture
def via_worker(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every small file after the first goes through the worker, in tiny batches; returns the names it got."""
    monkeypatch.setattr(extract, "SPAWN_AFTER", 1)
    monkeypatch.setattr(extract, "WAIT_FOR_WORKER", True)
    monkeypatch.setattr(worker, "AHEAD", 99)  # wait for the worker instead of creating files alongside it
    monkeypatch.setattr(worker, "BATCH", 3)
    handed: list[bytes] = []
    add = worker.FileWorker.add

    def spy(self: worker.FileWorker, dir_key: bytes, dir_fd: int, name: bytes, *rest: object) -> None:
        handed.append(dir_key + b"/" + name if dir_key else name)
        add(self, dir_key, dir_fd, name, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(worker.FileWorker, "add", spy)
    return handed


def children() -> set[int]:
    """This process's live child processes."""
    out: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/children") as f:
            out.update(int(p) for p in f.read().split())
    return out


def apply(data: bytes, dest, **kw: object):  # noqa: ANN201
    dest.mkdir(exist_ok=True)
    return apply_layer(io.BytesIO(data), str(dest), **kw)  # type: ignore[arg-type]


def many(prefix: bytes, n: int, data: bytes = b"data") -> list[bytes]:
    return [member(prefix + b"f%04d" % i, data + b"%d" % i) for i in range(n)]


def test_sample_tree_round_trip_through_the_worker(tmp_path, via_worker: list[bytes]) -> None:
    root = str(tmp_path / "tree")
    build_sample_tree(root)
    for i in range(200):
        d = os.path.join(root, f"many{i % 7}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}"), "wb") as f:
            f.write(os.urandom(i * 37))
        os.chmod(os.path.join(d, f"f{i}"), 0o640 if i % 3 else 0o4755)
        if i % 5 == 0:
            os.chown(os.path.join(d, f"f{i}"), 1000 + i, 2000 + i)
    buf = io.BytesIO()
    write_tree(root, buf, compression="gzip")
    dest = tmp_path / "out"
    apply(buf.getvalue(), dest)
    assert snapshot(str(dest)) == snapshot(root)
    assert len(via_worker) > 150
    assert b"usr/bin/suid" in via_worker  # mode bits beyond the umask go through the worker too


def test_later_entries_replace_earlier_ones_through_the_worker(tmp_path, via_worker: list[bytes]) -> None:
    data = archive(
        member(b"warmup", b"w"),
        member(b"dup", b"first"), member(b"dup", b"second"),  # both handed over: the second replaces the first
        member(b"s", typeflag=b"2", linkname=b"dup"), member(b"s", b"plain now"),  # a link in the way
        member(b"w", b"w"), member(b".wh.w"),  # whiteout of a file the worker may not have made yet
        member(b".wh.v"), member(b"v", b"over a whiteout"),  # a file over the whiteout device
        member(b"x/", typeflag=b"5"), *many(b"x/", 5), member(b"x", b"dir replaced by a file"),
        member(b"x/", typeflag=b"5"), member(b"x/again", b"new dir, new fd"),
        member(b"f", b"file"), member(b"f/", typeflag=b"5", mode=0o700), member(b"f/child", b"c"),
        member(b"t", b"target"), member(b"h", typeflag=b"1", linkname=b"t"),  # hardlink to a pending file
        member(b"p", b"parent?"), member(b"q", b"q"),
    )
    dest = tmp_path / "d"
    apply(data, dest)
    assert (dest / "dup").read_text() == "second"
    assert not os.path.islink(dest / "s") and (dest / "s").read_text() == "plain now"
    assert stat.S_ISCHR(os.lstat(dest / "w").st_mode)
    assert (dest / "v").read_text() == "over a whiteout"
    assert sorted(os.listdir(dest / "x")) == ["again"]
    assert (dest / "x" / "again").read_text() == "new dir, new fd"
    assert (dest / "f" / "child").read_text() == "c" and stat.S_IMODE(os.stat(dest / "f").st_mode) == 0o700
    assert os.path.samefile(dest / "t", dest / "h") and (dest / "h").read_text() == "target"
    assert {b"dup", b"s", b"x/f0001", b"t"} <= set(via_worker)


def test_a_path_below_a_pending_file_is_refused(tmp_path, via_worker: list[bytes]) -> None:
    data = archive(member(b"warmup", b"w"), member(b"f", b"x"), member(b"f/child", b"y"))
    dest = tmp_path / "d"
    with pytest.raises(InvalidArgument, match="'f' is not a directory"):
        apply(data, dest)
    assert os.listdir(dest) == []


def test_directory_times_and_modes_are_set_after_the_worker(tmp_path, via_worker: list[bytes]) -> None:
    data = archive(member(b"warmup", b"w"), member(b"d/", typeflag=b"5", mode=0o555, mtime=1_500_000_000),
                   *many(b"d/", 20))
    dest = tmp_path / "d"
    apply(data, dest)
    st = os.stat(dest / "d")
    assert st.st_mtime == 1_500_000_000 and stat.S_IMODE(st.st_mode) == 0o555
    assert len(os.listdir(dest / "d")) == 20


def test_many_directories_with_small_caches(tmp_path, via_worker: list[bytes],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract, "FD_CACHE", 2)
    monkeypatch.setattr(filework, "MAX_DIRS", 4)  # the parent's view: the worker closes directory fds early
    members = [member(b"warmup", b"w")]
    for rnd in range(3):
        for i in range(12):
            members.append(member(b"d%02d/f%d" % (i, rnd), b"%d-%d" % (i, rnd)))
    dest = tmp_path / "d"
    apply(archive(*members), dest)
    for i in range(12):
        assert sorted(os.listdir(dest / f"d{i:02d}")) == ["f0", "f1", "f2"]
        assert (dest / f"d{i:02d}" / "f2").read_text() == f"{i}-2"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")
def test_a_failure_in_the_worker_names_the_entry_and_cleans_up(tmp_path, via_worker: list[bytes]) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=40", "small", str(mnt)], check=True)
    try:
        dest = mnt / "layer"
        with pytest.raises(SystemError_, match="no space left on device while writing tar entry 'f0"):
            apply(archive(*many(b"", 100)), dest)
        assert os.listdir(dest) == []
        assert via_worker
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


class KillsTheWorker(io.RawIOBase):
    """A layer stream that kills this test's worker process (by pid) once half of it was read."""

    def __init__(self, data: bytes, before: set[int]) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._before = before
        self.killed: list[int] = []

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # noqa: ANN001
        if not self.killed and self._pos > len(self._data) // 2:
            for pid in children() - self._before:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"filework.py" in f.read():
                        os.kill(pid, signal.SIGKILL)
                        self.killed.append(pid)
        n = min(len(b), len(self._data) - self._pos, 4096)
        b[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


def test_a_worker_that_dies_fails_the_apply_and_cleans_up(tmp_path, via_worker: list[bytes]) -> None:
    before = children()
    src = KillsTheWorker(archive(*many(b"a/", 3000, b"x" * 100)), before)
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(SystemError_, match="worker process exited unexpectedly"):
        apply_layer(src, str(dest))  # type: ignore[arg-type]
    assert src.killed
    assert os.listdir(dest) == []
    assert children() == before


def test_a_worker_that_cannot_start_is_not_needed(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract, "SPAWN_AFTER", 1)
    data = archive(*many(b"", 300))
    for exe in ["/bin/false", ""]:
        monkeypatch.setattr(sys, "executable", exe)
        dest = tmp_path / f"d{len(exe)}"
        apply(data, dest)
        assert len(os.listdir(dest)) == 300


def test_files_the_worker_does_not_take(tmp_path, via_worker: list[bytes]) -> None:
    long = b"n" * 256  # longer than a name can be: refused by the system, through the applier
    data = archive(member(b"warmup", b"w"),
                   member(b"big", b"b" * (worker.MAX_FILE + 1)),  # written by the applier
                   pax_member({b"SCHILY.xattr.user.x": b"1"}), member(b"xattr", b"x"),
                   member(b"ok", b"ok"))
    dest = tmp_path / "d"
    apply(data, dest)
    assert os.path.getsize(dest / "big") == worker.MAX_FILE + 1
    assert os.getxattr(dest / "xattr", "user.x") == b"1"
    assert via_worker == [b"ok"]
    with pytest.raises(InvalidArgument, match="too long"):
        apply(archive(member(b"warmup", b"w"), pax_member({b"path": long}), member(b"x", b"x")), tmp_path / "e")


def test_nothing_outlives_a_call(tmp_path, via_worker: list[bytes]) -> None:
    before = (children(), threading.active_count(), len(os.listdir("/proc/self/fd")))
    good = archive(*many(b"d/", 50))
    bad = archive(*many(b"d/", 50), member(b"../evil", b"x"))
    for i, data in enumerate([good, bad, good[:20000]]):
        try:
            apply(data, tmp_path / f"d{i}")
        except InvalidArgument:
            pass
    assert (children(), threading.active_count(), len(os.listdir("/proc/self/fd"))) == before


def test_concurrent_applies_with_workers(tmp_path, via_worker: list[bytes]) -> None:
    data = archive(*many(b"a/", 200), *many(b"b/", 200))
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            apply(data, tmp_path / f"c{i}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(3):
        assert len(os.listdir(tmp_path / f"c{i}" / "a")) == 200 == len(os.listdir(tmp_path / f"c{i}" / "b"))
