"""The built-in runtime end to end: lifecycle, isolation, Docker's defaults, exec, terminals."""

from __future__ import annotations

import errno
import os
import select
import signal
import time

import pytest

from matou.errors import Conflict, NotFound
from matou.runtime.api import ExecError

DOCKER_CAPEFF = "00000000a80425fb"
pytestmark = pytest.mark.timeout(60)


def test_lifecycle_states_and_exit_code(builtin, bundles):
    b = bundles.make("life", ["sh", "-c", "exit 7"])
    pid = builtin.create("life", b)
    st = builtin.rt.state("life")
    assert st["status"] == "created" and st["pid"] == pid and st["bundle"] == b and st["ociVersion"]
    assert os.path.exists(f"/proc/{pid}")
    with pytest.raises(Conflict):
        builtin.create("life", b)
    builtin.rt.start("life")
    assert builtin.wait(pid) == 7
    assert builtin.rt.state("life")["status"] == "stopped"
    with pytest.raises(Conflict):
        builtin.rt.start("life")
    builtin.rt.delete("life")
    with pytest.raises(NotFound):
        builtin.rt.state("life")


def test_exit_by_signal_is_waitpid_status(builtin, bundles):
    b = bundles.make("sig", ["sleep", "100"])
    pid = builtin.create("sig", b)
    builtin.rt.start("sig")
    assert builtin.rt.state("sig")["status"] == "running"
    with pytest.raises(Conflict):
        builtin.rt.delete("sig")
    builtin.rt.kill("sig", signal.SIGKILL)
    assert builtin.wait(pid) == -signal.SIGKILL
    builtin.rt.delete("sig")


def test_default_container_is_docker_like(builtin, bundles):
    script = ("grep CapEff /proc/self/status; hostname; ps -o pid,comm > /tmp/ps; echo ps=$(wc -l < /tmp/ps); "
              "echo pid1=$(cat /proc/1/cmdline | tr '\\0' ' '); "
              "echo timer=$(wc -c < /proc/timer_list); cat /proc/kcore >/dev/null 2>&1; echo kcore=$?; "
              "touch /sys/x 2>/dev/null; echo sys=$?; grep ' /sys sysfs' /proc/mounts; echo 1 > /proc/sys/vm/overcommit_ratio 2>/dev/null;"
              " echo procsys=$?; mount -t tmpfs none /mnt 2>&1; echo mount=$?; unshare -m true 2>&1;"
              " echo unshare=$?; ls /dev; id; pwd; echo HOME=$HOME; ip link 2>/dev/null | grep -c LOOPBACK")
    b = bundles.make("def", ["sh", "-c", script], hostname="boxhost")
    code, out = builtin.run("def", b)
    assert code == 0, out
    assert f"CapEff:\t{DOCKER_CAPEFF}" in out
    assert "boxhost" in out
    assert "ps=3" in out  # header, sh and ps: no host process is visible
    assert "pid1=sh -c" in out
    assert "timer=0" in out  # masked
    assert "kcore=1" in out  # absent on this kernel or masked: unreadable either way
    assert "sys=1" in out and "procsys=1" in out and "/sys sysfs ro," in out
    assert "mount=1" in out and "Operation not permitted" in out
    assert "unshare=1" in out
    for dev in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx", "fd"):
        assert dev in out.split(), (dev, out)
    assert "uid=0(root) gid=0(root)" in out
    assert "HOME=/root" in out


def test_keyctl_blocked_by_seccomp(builtin, bundles, probe_binary):
    if probe_binary is None:
        pytest.skip("gcc with static libc is needed for the syscall probe")
    b = bundles.make("keys", ["sh", "-c", "probe keyctl; probe unshare; probe mount"])
    code, out = builtin.run("keys", b)
    assert code == 0, out
    assert "keyctl -1 EPERM" in out
    assert "unshare -1 EPERM" in out
    assert "mount -1 EPERM" in out


def test_privileged_container(builtin, bundles):
    script = ("grep CapEff /proc/self/status; mkdir -p /mnt; mount -t tmpfs none /mnt && echo mounted; "
              "grep ' /sys sysfs' /proc/mounts; echo timer=$(wc -c < /proc/timer_list); ls /dev | wc -l")
    b = bundles.make("priv", ["sh", "-c", script], privileged=True)
    code, out = builtin.run("priv", b)
    assert code == 0, out
    assert "mounted" in out
    assert "/sys sysfs rw," in out
    capeff = int(out.split("CapEff:")[1].split()[0], 16)
    assert capeff & (1 << 21)  # CAP_SYS_ADMIN
    assert int(out.split("timer=")[1].split()[0]) > 0
    assert int(out.strip().splitlines()[-1]) > 15  # host devices


def test_user_env_cwd_readonly_rootfs(builtin, bundles):
    b = bundles.make("usr", ["sh", "-c", "id; pwd; echo FOO=$FOO; touch /x 2>&1; touch /tmp/y && echo tmpok"],
                     uid=1000, gid=1000, additional_gids=[10, 50], cwd="/home/user", env=["FOO=bar"],
                     readonly_rootfs=True, tmpfs={"/tmp": "mode=1777"})
    code, out = builtin.run("usr", b)
    assert code == 0, out
    assert "uid=1000(user) gid=1000(user) groups=10(wheel),50(staff)" in out
    assert "/home/user" in out and "FOO=bar" in out
    assert "Read-only file system" in out
    assert "tmpok" in out


def test_bind_mounts_sysctl_and_rlimits(builtin, bundles, tmp_path):
    from matou.runtime.spec import Bind

    host = tmp_path / "shared"
    host.mkdir()
    (host / "hello").write_text("from host\n")
    b = bundles.make("bind", ["sh", "-c", "cat /data/hello; echo x > /ro/z 2>&1; echo w > /data/new;"
                              " cat /proc/sys/net/ipv4/ip_unprivileged_port_start; ulimit -n; ulimit -Hn"],
                     binds=[Bind(str(host), "/data"), Bind(str(host), "/ro", readonly=True)],
                     sysctls={"net.ipv4.ip_unprivileged_port_start": "80"},
                     ulimits=[("nofile", 1000, 2000)])
    code, out = builtin.run("bind", b)
    assert code == 0, out
    assert "from host" in out and "Read-only file system" in out
    assert (host / "new").read_text() == "w\n"
    lines = out.strip().splitlines()
    assert lines[-3:] == ["80", "1000", "2000"]


@pytest.mark.parametrize("args,code,words", [
    (["nonexistent-cmd"], 127, 'exec: "nonexistent-cmd": executable file not found in $PATH'),
    (["/no/such/file"], 127, "no such file or directory"),
    (["/etc/notexec"], 126, "permission denied"),
    (["/etc"], 126, "is a directory"),
])
def test_exec_failure_is_reported_at_create(builtin, bundles, args, code, words):
    b = bundles.make("bad", args)
    with pytest.raises(ExecError) as ei:
        builtin.create("bad", b)
    assert ei.value.exit_code == code
    assert words in str(ei.value)
    assert ei.value.errno in (errno.ENOENT, errno.EACCES)
    with pytest.raises(NotFound):
        builtin.rt.state("bad")  # nothing left behind


def test_path_comes_from_process_env(builtin, bundles):
    b = bundles.make("path", ["echo", "ok"], env=["PATH=/nowhere"])
    with pytest.raises(ExecError):
        builtin.create("path", b)
    b2 = bundles.make("path2", ["busybox", "echo", "ok"], env=["PATH=/nowhere:/bin"])
    assert builtin.run("path2", b2) == (0, "ok\n")


def test_exec_joins_running_container(builtin, bundles):
    b = bundles.make("ex", ["sleep", "1000"], hostname="exhost")
    pid = builtin.create("ex", b)
    builtin.rt.start("ex")
    r, w = os.pipe()
    proc = {"args": ["sh", "-c", "hostname; ps -o pid,args; grep CapEff /proc/self/status; cat /proc/self/cgroup"],
            "env": ["PATH=/bin"], "cwd": "/",
            "capabilities": bundles.config(b)["process"]["capabilities"], "noNewPrivileges": True}
    xpid = builtin.exec("ex", proc, stdio=(0, w, w))
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    assert builtin.wait(xpid) == 0
    text = out.decode()
    assert "exhost" in text
    lines = [line.split() for line in text.splitlines() if line.strip() and line.split()[0].isdigit()]
    assert ["1", "sleep", "1000"] in lines
    assert len(lines) == 3  # sleep, sh, ps: nothing of the host
    assert f"CapEff:\t{DOCKER_CAPEFF}" in text
    assert sorted(builtin.rt.pids("ex")) == [pid]
    with pytest.raises(ExecError) as ei:
        builtin.exec("ex", {"args": ["nope"], "env": ["PATH=/bin"], "cwd": "/"})
    assert ei.value.exit_code == 127
    builtin.rt.kill("ex", signal.SIGTERM)  # PID 1 without a handler ignores it, as in Docker
    time.sleep(0.05)
    assert builtin.rt.state("ex")["status"] == "running"
    builtin.rt.kill("ex", signal.SIGKILL)
    assert builtin.wait(pid) == -signal.SIGKILL
    builtin.rt.delete("ex")


def _read_until(fd: int, needle: bytes, timeout: float = 10) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def test_terminal_via_create_tty_and_console_fd(builtin, bundles):
    b = bundles.make("tty", ["sh", "-c", "tty; echo done"], terminal=True)
    pid, master = builtin.create_tty("tty", b)
    try:
        builtin.rt.start("tty")
        out = _read_until(master, b"done")
        code = builtin.wait(pid)  # before closing the master, which would hang up the terminal
    finally:
        os.close(master)
    assert code == 0
    assert b"/dev/pts/0" in out, out
    builtin.rt.delete("tty")

    b2 = bundles.make("tty2", ["sh", "-c", "test -t 0 && echo isatty; cat /proc/self/stat | cut -d' ' -f7"],
                      terminal=True)
    master, slave = os.openpty()
    try:
        pid = builtin.create("tty2", b2, console_fd=slave)
        os.close(slave)
        builtin.rt.start("tty2")
        out = _read_until(master, b"\n", 10)
        out += _read_until(master, b"\n", 2)
        code = builtin.wait(pid)
    finally:
        os.close(master)
    assert code == 0
    assert b"isatty" in out


def test_exec_with_tty(builtin, bundles):
    b = bundles.make("xtty", ["sleep", "1000"])
    pid = builtin.create("xtty", b)
    builtin.rt.start("xtty")
    xpid, master = builtin.rt.exec_tty("xtty", {"args": ["sh", "-c", "tty; echo fin"], "terminal": True,
                                                "env": ["PATH=/bin"], "cwd": "/"})
    builtin.pids.append(xpid)
    try:
        out = _read_until(master, b"fin")
        code = builtin.wait(xpid)
    finally:
        os.close(master)
    assert code == 0
    assert b"/dev/pts/" in out
    builtin.rt.kill("xtty", 9)
    builtin.wait(pid)
    builtin.rt.delete("xtty")


def test_delete_created_container_kills_init(builtin, bundles):
    b = bundles.make("cr", ["true"])
    pid = builtin.create("cr", b)
    builtin.rt.delete("cr")
    assert builtin.wait(pid) == -signal.SIGKILL
    assert builtin.rt.list() == []


def test_joining_an_existing_network_namespace(builtin, bundles):
    b1 = bundles.make("ns1", ["sleep", "1000"])
    pid1 = builtin.create("ns1", b1)
    builtin.rt.start("ns1")
    b2 = bundles.make("ns2", ["sh", "-c", "readlink /proc/self/ns/net"],
                      namespace_paths={"network": f"/proc/{pid1}/ns/net"})
    code, out = builtin.run("ns2", b2)
    assert code == 0
    assert out.strip() == os.readlink(f"/proc/{pid1}/ns/net")
    builtin.rt.kill("ns1", 9)
    builtin.wait(pid1)
    builtin.rt.delete("ns1")


def _read_to_eof(fd: int) -> bytes:
    out = b""
    while chunk := os.read(fd, 65536):
        out += chunk
    return out


def _warm_preclone(builtin):
    """The runtime warmed, as a spawner has it, and an init pre-cloned from it (the fixture reaps it)."""
    rt = builtin.rt
    rt.warm()
    pre = rt.preclone(new_net=True)
    builtin.pids.append(pre.pid)
    return rt, pre


def _preclone_output(builtin, pre) -> tuple[bytes, bytes]:
    """Its container's stdout and stderr once it has exited with 0."""
    out, err = _read_to_eof(pre.stdout_r), _read_to_eof(pre.stderr_r)
    for fd in (pre.stdout_r, pre.stderr_r, pre.stdin_w):
        os.close(fd)
    assert builtin.wait(pre.pid) == 0
    return out, err


def test_preclone_becomes_a_container_made_after_it(builtin, bundles):
    """preclone(): an init cloned before its container existed (rootfs mounted and config.json written after the
    clone) becomes that container's init with launch_precloned(), planning itself and making its mount namespace
    once told; stdin is /dev/null unless asked for. A hint for other namespaces (here: the host's pid namespace)
    is refused with nothing done, and a pre-cloned init whose go pipe closes unused exits by itself."""
    from matou.runtime.builtin import PrecloneUnfit
    from matou.runtime.spec import launch_hint

    rt, pre = _warm_preclone(builtin)
    b = bundles.make("pre", ["sh", "-c", "echo out; echo err >&2; ls -l /proc/self/fd/0; grep -c . /proc/net/dev; "
                                         "echo $$; cat /proc/self/mountinfo | grep -c ' / / '"])
    builtin.ids.append("pre")
    launch = rt.launch_precloned(pre, "pre", b, launch_hint(bundles.config(b)), open_stdin=False)
    assert launch.pid == pre.pid
    rt.ready(launch)
    assert rt.state("pre")["status"] == "created"
    rt.start("pre")
    out, err = _preclone_output(builtin, pre)
    lines = out.decode().splitlines()
    assert lines[0] == "out" and err == b"err\n"
    assert lines[1].endswith("/dev/null")  # not the pre-made stdin pipe
    assert lines[2] == "3"  # /proc/net/dev: two header lines and lo, in a network namespace of its own
    assert lines[3:] == ["1", "1"]  # PID 1, in a root filesystem of its own
    rt.delete("pre")

    pre2 = rt.preclone(new_net=True)
    builtin.pids.append(pre2.pid)
    b2 = bundles.make("pre2", ["true"])
    hint = launch_hint(bundles.config(b2))
    hint["namespaces"] = [n for n in hint["namespaces"] if n["type"] != "pid"]
    with pytest.raises(PrecloneUnfit):
        rt.launch_precloned(pre2, "pre2", b2, hint, open_stdin=False)
    with pytest.raises(NotFound):
        rt.state("pre2")
    os.close(pre2.go_w)
    assert builtin.wait(pre2.pid) == 0
    for fd in (pre2.ready_r, pre2.cg_w, pre2.stdin_w, pre2.stdout_r, pre2.stderr_r):
        os.close(fd)


def test_an_unstarted_init_dies_with_its_monitor(builtin, bundles):
    """An init launched by a monitor that dies before starting it must not wait for the start forever (holding
    its cgroups and mounts): it dies with it. A started container outlives it (see the engine's restart tests)."""
    from matou.runtime.spec import launch_hint

    rt = builtin.rt
    b = bundles.make("orphan", ["true"])
    builtin.ids.append("orphan")
    hint = launch_hint(bundles.config(b))
    r, w = os.pipe()
    monitor = os.fork()
    if monitor == 0:  # the monitor: launch, wait until the init is ready, then die without starting it
        try:
            launch = rt.launch_hinted("orphan", b, hint)
            rt.ready(launch, reap=False)
            os.write(w, str(launch.pid).encode())
        finally:
            os._exit(0)
    os.close(w)
    pid = int(os.read(r, 100) or b"0")
    os.close(r)
    os.waitpid(monitor, 0)
    assert pid > 0
    builtin.pids.append(pid)  # killed at teardown should this test fail
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break  # dead; its reaper is whoever adopted it
        time.sleep(0.02)
    if os.path.exists(f"/proc/{pid}"):
        with open(f"/proc/{pid}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] == "Z", "the init outlived its monitor"
    rt.delete("orphan", force=True)


def test_launch_hinted_plans_in_the_init(builtin, bundles):
    """launch_hinted(): the caller clones with the hint only; the init reads config.json itself. The result is
    the container create() makes (seccomp program on disk for exec, cgroups, state); a config.json that
    disagrees with the hint, or that is invalid, fails the launch with create()'s own error, leaving nothing."""
    from matou.errors import InvalidArgument
    from matou.runtime.spec import launch_hint

    rt = builtin.rt
    b = bundles.make("hinted", ["sh", "-c", "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; echo out"])
    r, w = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY)
    builtin.ids.append("hinted")
    try:
        launch = rt.launch_hinted("hinted", b, launch_hint(bundles.config(b)), stdio=(null, w, w))
    finally:
        os.close(w)
        os.close(null)
    builtin.pids.append(launch.pid)
    rt.ready(launch)
    assert rt.state("hinted")["status"] == "created"
    assert os.path.exists(os.path.join(rt.root, "hinted", "seccomp.bpf"))
    rt.start("hinted")
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    assert builtin.wait(launch.pid) == 0
    assert b"Seccomp:\t2" in out and out.endswith(b"out\n"), out
    rt.delete("hinted")

    for name, edit, words in (("moved", lambda c: c["linux"].update(cgroupsPath=c["linux"]["cgroupsPath"] + "-x"),
                                "cgroupsPath"),
                               ("noargs", lambda c: c["process"].update(args=[]), "process.args")):
        b = bundles.make(name, ["true"])
        hint = launch_hint(bundles.config(b))
        cfg = bundles.config(b)
        edit(cfg)
        bundles.save_config(b, cfg)
        builtin.ids.append(name)
        with pytest.raises(InvalidArgument) as ei:  # from the launch itself if the init failed first, else ready()
            launch = rt.launch_hinted(name, b, hint)
            rt.ready(launch, reap=True)
        assert words in str(ei.value)
        with pytest.raises(NotFound):
            rt.state(name)  # nothing left behind


def test_preclone_attaches_the_file_systems_it_made_ahead(builtin, bundles):
    """A pre-cloned init makes the default config's /proc, /dev (nodes and links included), /dev/pts, /dev/shm,
    /dev/mqueue and /sys while it waits (rootfs.stage) and attaches those its container asks for as they were
    staged, with the default read-only and masked paths beneath /proc and /sys in place; a mount the container
    changed (here /dev/shm's size) is made at start, and a device it adds is created in the staged /dev. Staged
    mounts predate the root's bind mount, so their mount ids are lower."""
    from matou.runtime.spec import launch_hint

    rt, pre = _warm_preclone(builtin)
    b = bundles.make("stg", ["sh", "-c", "cat /proc/self/mountinfo; echo ---; ls -l /dev/mine /dev/null /dev/ptmx; "
                                         "echo $$; touch /sys/x 2>&1; ls -d /dev/mqueue /dev/pts/ptmx"])
    cfg = bundles.config(b)
    for m in cfg["mounts"]:
        if m["destination"] == "/dev/shm":
            m["options"] = [o if not o.startswith("size=") else "size=1m" for o in m["options"]]
    cfg["linux"]["devices"] = [{"path": "/dev/mine", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600}]
    bundles.save_config(b, cfg)
    builtin.ids.append("stg")
    launch = rt.launch_precloned(pre, "stg", b, launch_hint(cfg), open_stdin=False)
    rt.ready(launch)
    rt.start("stg")
    out = _preclone_output(builtin, pre)[0].decode()
    mountinfo, rest = out.split("---\n")
    ids = {}
    for line in mountinfo.splitlines():
        f = line.split()
        ids[f[4]] = (int(f[0]), f[f.index("-") + 1], line)
    root = ids["/"][0]
    for point, fstype in (("/proc", "proc"), ("/dev", "tmpfs"), ("/dev/pts", "devpts"), ("/dev/mqueue", "mqueue"),
                          ("/sys", "sysfs"), ("/proc/sys", "proc"), ("/proc/keys", "tmpfs")):
        assert ids[point][1] == fstype and ids[point][0] < root, ids[point][2]  # staged
    assert " ro," in ids["/proc/sys"][2] and " ro," in ids["/sys"][2]  # read-only paths and masks came along
    assert ids["/dev/shm"][0] > root and "size=1024k" in ids["/dev/shm"][2]  # made at start: its size changed
    lines = rest.splitlines()
    assert lines[0].startswith("crw-------") and lines[0].endswith("/dev/mine")
    assert lines[1].startswith("crw-rw-rw-") and lines[1].endswith("/dev/null")
    assert lines[2].endswith("/dev/ptmx -> pts/ptmx")
    assert lines[3] == "1"
    assert "Read-only file system" in lines[4]
    assert lines[5:] == ["/dev/mqueue", "/dev/pts/ptmx"]
    rt.delete("stg")


def test_preclone_uses_cgroups_made_before_go(builtin, bundles, cgroup_parent):
    """premake_cgroup(): a monitor makes its container's cgroup directories before "go"; launch_precloned() uses
    them when the container's cgroupsPath is theirs and removes them when it is another (the container's own are
    made then); drop_premade() ends an unused pre-cloned init and removes its directories."""
    from matou.runtime.linux import cgroups
    from matou.runtime.spec import launch_hint

    def dirs_of(path: str) -> list[str]:
        return [h.mountpoint + path for h in cgroups.detect() if os.path.isdir(h.mountpoint + cgroup_parent)]

    for name, premade_path in (("pm1", f"{cgroup_parent}/pm1"), ("pm2", f"{cgroup_parent}/elsewhere")):
        rt, pre = _warm_preclone(builtin)
        premade = rt.premake_cgroup(premade_path)
        assert premade is not None and all(os.path.isdir(d) for d in premade.dirs.values())
        b = bundles.make(name, ["cat", "/proc/self/cgroup"])
        builtin.ids.append(name)
        launch = rt.launch_precloned(pre, name, b, launch_hint(bundles.config(b)), open_stdin=False,
                                     premade=premade)
        rt.ready(launch)
        inside = [f for f in rt._launched[name].procs_files() if str(pre.pid) in open(f).read().split()]
        assert inside == rt._launched[name].procs_files()  # in every hierarchy of the container's own
        rt.start(name)
        _preclone_output(builtin, pre)
        rt.delete(name)
        assert not any(os.path.isdir(d) for d in dirs_of(f"{cgroup_parent}/{name}"))
        assert not any(os.path.isdir(d) for d in premade.dirs.values())  # used and deleted, or removed unused

    rt, pre = _warm_preclone(builtin)
    premade = rt.premake_cgroup(f"{cgroup_parent}/pm3")
    rt.drop_premade(pre, premade)  # closes its fds too
    assert not any(os.path.isdir(d) for d in premade.dirs.values())
    assert not os.path.exists(f"/proc/{pre.pid}")
