"""SIGKILL matoud in the middle of a pull: the next pull downloads only the missing bytes (HTTP Range), and no
half-unpacked layer is ever part of an image."""

from __future__ import annotations

import glob
import hashlib
import os
import sqlite3
import subprocess
import time

from tests.conftest import PY, Daemon, _env
from tests.distribution.conftest import Reg
from tests.registry.helpers import Client, make_image, sha, tar_layer

BIG = 24 << 20
HELD = 10 << 20  # the proxy stops serving the big layer here


def _wait(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _ingest_sizes(d: Daemon) -> list[int]:
    return [os.path.getsize(p) for p in glob.glob(os.path.join(d.data_root, "content", "ingest", "*", "data"))]


def _layers(d: Daemon) -> set[str]:
    db = sqlite3.connect(f"file:{os.path.join(d.data_root, 'metadata.db')}?mode=ro", uri=True)
    try:
        return {r[0] for r in db.execute("SELECT diff_id FROM layers")}
    finally:
        db.close()


def test_sigkill_mid_pull_then_resume(fresh_daemon: Daemon, open_reg: Reg) -> None:
    big = os.urandom(BIG)
    with open("/bin/busybox", "rb") as f:
        base = tar_layer({"bin/busybox": f.read()})
    big_tar = tar_layer({"big.bin": big}, mode=0o644)
    img = make_image([base, big_tar])
    assert Client(open_reg.url).push_image("bob/big", img, "1").status_code == 201
    big_blob = sha(img.layers[1])
    hold = open_reg.proxy.hold(f"/blobs/{big_blob}", HELD)
    name = f"{open_reg.host}/bob/big:1"
    open_reg.proxy.reset()
    cli = subprocess.Popen([PY, "-m", "matou", "pull", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=_env({"MATOU_HOST": fresh_daemon.host}))
    try:
        assert hold.reached.wait(60), "the pull never reached the big layer"
        _wait(lambda: HELD in _ingest_sizes(fresh_daemon), 30, "the partial download on disk")
        fresh_daemon.kill()
    finally:
        cli.kill()
        cli.wait(30)
    hold.release.set()
    open_reg.proxy.holds.clear()
    # nothing half-done is visible: no image and no committed layer, not even the small one that was unpacked
    # completely (layers are committed in order, after all of them are unpacked)
    assert not _layers(fresh_daemon)

    fresh_daemon.start()
    assert name not in fresh_daemon.out("images", "--format", "{{.Repository}}:{{.Tag}}")
    open_reg.proxy.reset()
    fresh_daemon.cli("pull", name)
    gets = open_reg.proxy.requests("GET", f"/blobs/{big_blob}")
    assert [g.range for g in gets] == [f"bytes={HELD}-"]
    assert open_reg.proxy.served[f"/v2/bob/big/blobs/{big_blob}"] == len(img.layers[1]) - HELD
    out = fresh_daemon.out("run", "--rm", name, "/bin/busybox", "sha256sum", "/big.bin")
    assert out.split()[0] == hashlib.sha256(big).hexdigest()
    assert not _ingest_sizes(fresh_daemon)  # the finished ingest is gone
