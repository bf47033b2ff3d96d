"""Base images without internet: busybox from Debian's busybox-static, Debian from debootstrap.

The busybox image is reproducible: same binary, same image ID (fixed mtimes, created = the binary's mtime).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

from matou.errors import InvalidArgument, NotFound, SystemError_
from matou.image.model import Image, LayerSource
from matou.image.service import ImageService, apply_blob_as_layer
from matou.types import oci
from matou.types.image import rfc3339

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
_GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
"""


def find_busybox() -> str:
    for p in BUSYBOX_CANDIDATES:
        if os.path.isfile(p):
            out = subprocess.run(["file", "-b", p], capture_output=True, text=True).stdout \
                if shutil.which("file") else "statically linked"
            if "dynamically" in out:
                continue
            return p
    raise NotFound("busybox-static is not installed: apt-get install busybox-static (make install does it)")


def make_busybox_rootfs(dest: str, busybox: str, mtime: float) -> None:
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "var/spool/mail", "var/www", "home",
              "proc", "sys", "dev"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    os.chmod(os.path.join(dest, "tmp"), 0o1777)
    os.chmod(os.path.join(dest, "root"), 0o700)
    shutil.copyfile(busybox, os.path.join(dest, "bin", "busybox"))
    os.chmod(os.path.join(dest, "bin", "busybox"), 0o755)
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        if a == "busybox" or "/" in a:
            continue
        p = os.path.join(dest, "bin", a)
        if not os.path.exists(p):
            os.link(os.path.join(dest, "bin", "busybox"), p)
    with open(os.path.join(dest, "etc", "passwd"), "w") as f:
        f.write(_PASSWD)
    with open(os.path.join(dest, "etc", "group"), "w") as f:
        f.write(_GROUP)
    for name in ("hosts", "hostname", "resolv.conf"):
        open(os.path.join(dest, "etc", name), "w").close()
    for root, dirs, files in os.walk(dest):
        for n in dirs + files:
            os.utime(os.path.join(root, n), (mtime, mtime), follow_symlinks=False)
    os.utime(dest, (mtime, mtime))


def bootstrap_busybox(svc: ImageService, ref: str = "busybox:latest") -> Image:
    busybox = find_busybox()
    mtime = int(os.stat(busybox).st_mtime)
    with tempfile.TemporaryDirectory(prefix="matou-bootstrap-") as tmp:
        root = os.path.join(tmp, "rootfs")
        os.mkdir(root)
        make_busybox_rootfs(root, busybox, mtime)
        return _image_from_tree(svc, root, ref, created=rfc3339(mtime), cmd=["sh"],
                                created_by=f"bootstrap busybox from {busybox}")


def bootstrap_debian(svc: ImageService, ref: str = "debian:bookworm", suite: str = "bookworm",
                     mirror: str = "http://deb.debian.org/debian") -> Image:
    if not shutil.which("debootstrap"):
        raise NotFound("debootstrap is not installed: apt-get install debootstrap")
    with tempfile.TemporaryDirectory(prefix="matou-bootstrap-") as tmp:
        root = os.path.join(tmp, "rootfs")
        r = subprocess.run(["debootstrap", "--variant=minbase", suite, root, mirror], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemError_(f"debootstrap failed: {r.stderr.strip()[-500:]}")
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            p = os.path.join(root, sub)
            for n in os.listdir(p) if os.path.isdir(p) else []:
                fp = os.path.join(p, n)
                if os.path.isfile(fp):
                    os.unlink(fp)
        return _image_from_tree(svc, root, ref, created=rfc3339(), cmd=["bash"],
                                created_by=f"debootstrap --variant=minbase {suite}")


def _image_from_tree(svc: ImageService, root: str, ref: str, *, created: str, cmd: list[str],
                     created_by: str) -> Image:
    from matou.layers.diff import write_tree

    w = svc.content.writer(f"bootstrap-{os.getpid()}-{time.monotonic_ns()}")
    w.reset()
    try:
        write_tree(root, w, compression="gzip")  # type: ignore[arg-type]
        digest = w.commit()
    except BaseException:
        w.abort()
        raise
    size = svc.content.info(digest).size
    diff_id, _c, _s = apply_blob_as_layer(svc, digest, None)
    plat = oci.Platform.host()
    config = {
        "architecture": plat.architecture,
        "os": "linux",
        "created": created,
        "config": {"Env": [DEFAULT_PATH], "Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": created_by}],
    }
    if plat.variant:
        config["variant"] = plat.variant
    return svc.create_image(oci.canonical_json(config), [LayerSource(digest, oci.OCI_LAYER_GZIP, size, diff_id)],
                            refs=[ref])


def bootstrap(svc: ImageService, what: str, ref: str | None = None) -> Image:
    if what == "busybox":
        return bootstrap_busybox(svc, ref or "busybox:latest")
    if what == "debian":
        return bootstrap_debian(svc, ref or "debian:bookworm")
    raise InvalidArgument(f"unknown base image {what!r}: choose busybox or debian")
