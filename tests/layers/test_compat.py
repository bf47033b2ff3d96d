"""Archives written by other tools apply correctly: GNU tar (gnu, posix/pax with xattrs, ustar) and Python's
tarfile (GNU, PAX, USTAR formats), plain and compressed."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile

import pytest

from matou.errors import InvalidArgument
from matou.layers.apply import apply_layer
from tests.layers.helpers import build_sample_tree, snapshot, whole_second_mtimes


def without_xattrs(snap: dict) -> dict:
    return {k: v[:5] + v[6:] for k, v in snap.items()}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("compat") / "tree")
    build_sample_tree(root)
    return root


@pytest.fixture(scope="module")
def simple(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What plain ustar can express: short names, small ids, ordinary times."""
    root = tmp_path_factory.mktemp("simple") / "tree"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("box\n")
    (root / "bin").mkdir()
    (root / "bin" / "sh").write_bytes(b"\x7fELF" * 1000)
    os.chmod(root / "bin" / "sh", 0o4755)
    os.link(root / "bin" / "sh", root / "bin" / "ash")
    os.symlink("sh", root / "bin" / "dash")
    os.mkfifo(root / "fifo")
    os.mknod(root / "zero", 0o020666, os.makedev(1, 5))
    os.chown(root / "etc" / "hostname", 100, 101)
    (root / ("p" * 60) / ("q" * 60)).mkdir(parents=True)  # needs the ustar prefix field
    (root / ("p" * 60) / ("q" * 60) / ("r" * 90)).write_text("prefix")
    whole_second_mtimes(str(root))
    return str(root)


def apply_bytes(data: bytes, dest) -> None:
    dest.mkdir()
    apply_layer(io.BytesIO(data), str(dest))


@pytest.mark.parametrize("fmt,flags,xattrs", [
    ("gnu", [], False),
    ("posix", ["--xattrs", "--xattrs-include=*"], True),
    ("gnu-gzip", ["-z"], False),
    ("posix-zstd", ["--zstd", "--xattrs", "--xattrs-include=*"], True),
])
def test_gnu_tar_output(sample: str, tmp_path, fmt: str, flags: list[str], xattrs: bool) -> None:
    if "--zstd" in flags and subprocess.run(["sh", "-c", "command -v zstd"], capture_output=True).returncode:
        pytest.skip("zstd binary not installed")
    out = tmp_path / "a.tar"
    subprocess.run(["tar", f"--format={fmt.split('-')[0]}", *flags, "-cf", str(out), "-C", sample, "."],
                   check=True)
    apply_bytes(out.read_bytes(), tmp_path / "dest")
    got, want = snapshot(str(tmp_path / "dest")), snapshot(sample)
    if not xattrs:
        got, want = without_xattrs(got), without_xattrs(want)
    assert got == want


def test_gnu_tar_ustar(simple: str, tmp_path) -> None:
    out = tmp_path / "a.tar"
    subprocess.run(["tar", "--format=ustar", "-cf", str(out), "-C", simple, "."], check=True)
    apply_bytes(out.read_bytes(), tmp_path / "dest")
    assert snapshot(str(tmp_path / "dest")) == snapshot(simple)


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_python_tarfile_output(sample: str, tmp_path, fmt: int, mode: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=fmt) as tf:
        tf.add(sample, arcname=".")
    apply_bytes(buf.getvalue(), tmp_path / "dest")
    assert without_xattrs(snapshot(str(tmp_path / "dest"))) == without_xattrs(snapshot(sample))


def test_python_tarfile_ustar(simple: str, tmp_path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        tf.add(simple, arcname="")
    apply_bytes(buf.getvalue(), tmp_path / "dest")
    assert snapshot(str(tmp_path / "dest")) == snapshot(simple)


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_gnu_tar_sparse_files_are_refused(tmp_path, fmt: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.truncate(8 << 20)
        f.write(b"data")
    out = tmp_path / "s.tar"
    subprocess.run(["tar", f"--format={fmt}", "--sparse", "-cf", str(out), "-C", str(src), "sparse"], check=True)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(InvalidArgument, match="'(\\./)?.*sparse'.*sparse files are not supported"):
        apply_layer(str(out), str(dest))
    assert os.listdir(dest) == []
