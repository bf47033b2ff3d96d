"""Benchmark: apply a ~230 MiB gzip layer with matou vs GNU ``tar -xzf`` (and Python tarfile), in one run.

matou runs as the image service calls it: the diff id is computed, the blob digest is not (the content store
verified it at ingest). The layer holds one 128 MiB random file and 20,000 small text files of 1-8 KiB, compressed with ``gzip -6``
(what Go's default gzip level, hence most registry layers, looks like). It is built once and cached.

Every extraction goes into a fresh, empty directory created for that run, and is deleted afterwards outside the
timing; the tools are interleaved (A B A B ...) because the machine is noisy. The root filesystem here is ext4
without a journal and slows down after many extract/delete rounds, so ``--fs tmpfs`` (or ``--tmpfs``) mounts a
private tmpfs for the targets instead, and ``--fs ext4`` gives every single extraction a brand-new ext4 (no
journal, like the root fs) on a loop device backed by memory. Everything mounted is unmounted at the end.
Throughput is uncompressed tar bytes per second. Goal: >= 2x GNU tar.

    .venv/bin/python bench/layers.py [--fs root|tmpfs|ext4] [--runs N] [--no-tarfile] [--workdir DIR]
                                     [--baseline GIT_REV ...] [--variant LABEL=SRC_DIR ...]

``--baseline REV`` (e.g. ``HEAD~3``) adds that commit's ``src/matou`` as one more tool, and ``--variant`` any other
source tree (the directory that holds ``matou/``): before/after numbers from the same interleaved run. Variants run
in a child process each (interpreter start-up outside the timing; its cpu s include the child's own children).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from matou.layers.apply import apply_layer  # noqa: E402

CORPUS_VERSION = "v1"
WORDS = [f"word{i}" for i in range(4000)]


def build_layer(workdir: str) -> str:
    path = os.path.join(workdir, f"layer-{CORPUS_VERSION}.tar.gz")
    if os.path.exists(path):
        return path
    print(f"building the layer once (cached at {path}) ...", flush=True)
    tree = os.path.join(workdir, "tree")
    shutil.rmtree(tree, ignore_errors=True)
    rng = random.Random(42)
    os.makedirs(os.path.join(tree, "big"))
    with open(os.path.join(tree, "big", "random.bin"), "wb") as f:
        for _ in range(128):
            f.write(rng.randbytes(1 << 20))
    for i in range(20_000):
        d = os.path.join(tree, f"d{i // 500:03d}")
        os.makedirs(d, exist_ok=True)
        n = rng.randint(1024, 8192)
        text = " ".join(rng.choice(WORDS) for _ in range(n // 5))
        with open(os.path.join(d, f"f{i:05d}.txt"), "w") as f:
            f.write(text[:n].ljust(n, "."))
    tmp = path + ".tmp"
    with open(tmp, "wb") as out:
        tar = subprocess.Popen(["tar", "-cf", "-", "--sort=name", "-C", tree, "."], stdout=subprocess.PIPE)
        subprocess.run(["gzip", "-6", "-n"], stdin=tar.stdout, stdout=out, check=True)
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0:
            raise SystemExit("tar failed")
    os.replace(tmp, path)
    shutil.rmtree(tree)
    return path


def uncompressed_size(path: str) -> int:
    out = subprocess.run(["sh", "-c", f"gzip -dc '{path}' | wc -c"], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def run_tar(layer: str, dest: str) -> float:
    t = time.perf_counter()
    subprocess.run(["tar", "-xzf", layer, "-C", dest], check=True)
    return time.perf_counter() - t


def run_matou(layer: str, dest: str) -> float:
    t = time.perf_counter()
    apply_layer(layer, dest, compressed_digest=False)  # as the image service calls it: blobs come verified
    return time.perf_counter() - t


def run_tarfile(layer: str, dest: str) -> float:
    from isal import igzip

    t = time.perf_counter()
    with igzip.open(layer, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tf:
        if hasattr(tarfile, "fully_trusted_filter"):
            tf.extractall(dest, filter="fully_trusted")
        else:
            tf.extractall(dest)
    return time.perf_counter() - t


_CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from matou.layers.apply import apply_layer
def cpu():
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
import inspect
kw = {"compressed_digest": False} if "compressed_digest" in inspect.signature(apply_layer).parameters else {}
c, t = cpu(), time.perf_counter()
apply_layer(sys.argv[2], sys.argv[3], **kw)
print(json.dumps([time.perf_counter() - t, cpu() - c]))
"""


def run_variant(src: str, layer: str, dest: str) -> tuple[float, float]:
    """apply_layer from another source tree, in a child process: (wall s, cpu s) measured inside the child."""
    out = subprocess.run([sys.executable, "-c", _CHILD, src, layer, dest], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"variant {src} failed:\n{out.stderr}")
    wall, cpu = json.loads(out.stdout.strip().splitlines()[-1])
    return wall, cpu


def export_rev(rev: str, into: str) -> str:
    """``src/`` of a git revision of this repository, extracted under ``into``; returns the directory."""
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    dest = os.path.join(into, f"src-{rev.replace('/', '_')}")
    os.makedirs(dest, exist_ok=True)
    archive = subprocess.run(["git", "-C", repo, "archive", rev, "src/matou"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "--strip-components=1", "-C", dest], input=archive.stdout, check=True)
    return dest


@contextlib.contextmanager
def target(fs: str, base: str, name: str) -> Iterator[str]:
    """A fresh empty directory (on a fresh ext4 for fs "ext4"), removed afterwards."""
    dest = os.path.join(base, name)
    os.mkdir(dest)
    image = None
    try:
        if fs == "ext4":
            image = f"/dev/shm/matou-bench-{os.getpid()}-{name}.img"
            with open(image, "wb") as f:
                f.truncate(2 << 30)
            subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", image], check=True)
            subprocess.run(["mount", "-o", "loop", image, dest], check=True)
            os.mkdir(os.path.join(dest, "t"))  # next to lost+found
            yield os.path.join(dest, "t")
            return
        yield dest
    finally:
        if image is not None:
            subprocess.run(["umount", dest], check=False)
            os.unlink(image)
        shutil.rmtree(dest, ignore_errors=True)


def _cpu() -> float:
    """User+system seconds of this process (all threads) plus its waited-for children (tar, gzip)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def fstype(path: str) -> str:
    out = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True)
    return out.stdout.strip() or "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--fs", choices=["root", "tmpfs", "ext4"], default="root",
                    help="where targets live: the root fs, a private tmpfs, or a fresh ext4 per extraction")
    ap.add_argument("--tmpfs", action="store_true", help="same as --fs tmpfs")
    ap.add_argument("--no-tarfile", action="store_true", help="skip the (slow) Python tarfile baseline")
    ap.add_argument("--workdir", default="/var/tmp/matou-bench-layers")
    ap.add_argument("--baseline", action="append", default=[], metavar="GIT_REV",
                    help="also run apply_layer as of this commit (before/after in one run)")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=SRC_DIR",
                    help="also run apply_layer from this source tree (the directory holding matou/)")
    args = ap.parse_args()

    os.makedirs(args.workdir, exist_ok=True)
    layer = build_layer(args.workdir)
    size = uncompressed_size(layer)
    mib = size / (1 << 20)
    csize = os.path.getsize(layer) / (1 << 20)

    fs = "tmpfs" if args.tmpfs else args.fs
    base = tempfile.mkdtemp(prefix="targets-", dir=args.workdir)
    mounted = False
    if fs == "tmpfs":
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4g", "matou-bench", base], check=True)
        mounted = True
    tools = {"GNU tar -xzf": run_tar, "matou apply_layer": run_matou}
    if not args.no_tarfile:  # "before": what Python's tarfile (with isal for gzip) gets
        tools["Python tarfile (isal gunzip)"] = run_tarfile
    children: dict[str, str] = {}
    for rev in args.baseline:
        children[f"matou@{rev}"] = export_rev(rev, base)
    for spec in args.variant:
        label, _, src = spec.partition("=")
        children[f"variant:{label}"] = os.path.abspath(src)
    times: dict[str, list[float]] = {k: [] for k in [*tools, *children]}
    cpus: dict[str, list[float]] = {k: [] for k in times}
    try:
        print(f"layer: {csize:.0f} MiB gzip -6, {mib:.0f} MiB uncompressed (128 MiB random + 20,000 files 1-8 KiB)")
        where = "a brand-new ext4 (no journal, memory-backed loop device)" if fs == "ext4" else fstype(base)
        print(f"targets: a fresh empty directory per extraction on {where} ({base}); deleted after each run, "
              "outside the timing; tools interleaved")
        order = list(times)
        for r in range(args.runs):
            for i, name in enumerate(order if r % 2 == 0 else order[::-1]):
                with target(fs, base, f"run{r}-{i}") as dest:
                    subprocess.run(["sync"], check=False)
                    if name in children:
                        wall, cpu = run_variant(children[name], layer, dest)
                        times[name].append(wall)
                        cpus[name].append(cpu)
                        continue
                    cpu0 = _cpu()
                    times[name].append(tools[name](layer, dest))
                    cpus[name].append(_cpu() - cpu0)
            print(f"  round {r + 1}: " + "  ".join(f"{k.split()[0]} {v[-1]:.2f}s" for k, v in times.items()),
                  flush=True)
    finally:
        if mounted:
            subprocess.run(["umount", base], check=False)
        shutil.rmtree(base, ignore_errors=True)

    tar_med = statistics.median(times["GNU tar -xzf"])
    print(f"\n{'tool':32} {'median s':>9} {'MiB/s':>8} {'vs tar':>7} {'best s':>7} {'cpu s':>6}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:32} {med:9.2f} {mib / med:8.0f} {tar_med / med:6.2f}x {min(ts):7.2f} "
              f"{statistics.median(cpus[name]):6.2f}")
    print(f"(machine load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; cpu s = user+sys "
          "of all threads/processes of that tool)")
    if "Python tarfile (isal gunzip)" in times:
        before = statistics.median(times["Python tarfile (isal gunzip)"])
        after = statistics.median(times["matou apply_layer"])
        print(f"\nbefore (Python tarfile) {mib / before:.0f} MiB/s -> after (matou) {mib / after:.0f} MiB/s: "
              f"{before / after:.1f}x")
    ratio = tar_med / statistics.median(times["matou apply_layer"])
    print(f"\nmatou vs GNU tar: {ratio:.2f}x throughput (goal >= 2x): {'met' if ratio >= 2 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
