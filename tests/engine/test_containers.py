"""Containers end to end through the real CLI and daemon: the acceptance points of the containers issue."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from tests.conftest import SRC, Daemon


def test_run_echo_and_exit_codes(daemon: Daemon, busybox: str) -> None:
    r = daemon.cli("run", "--rm", busybox, "echo", "hello")
    assert r.stdout == b"hello\n"
    r = daemon.cli("run", "--rm", busybox, "sh", "-c", "exit 3", check=False)
    assert r.returncode == 3
    r = daemon.cli("run", "--rm", busybox, "nonexistent-binary", check=False)
    assert r.returncode == 127
    assert b"executable file not found" in r.stderr
    r = daemon.cli("run", "--rm", busybox, "/etc/passwd", check=False)
    assert r.returncode == 126
    # PID 1 ignores signals it has no handler for: SIGKILL from outside gives 128+9
    cid = daemon.out("run", "-d", busybox, "sleep", "100").strip()
    daemon.cli("kill", cid)
    assert daemon.out("wait", cid).strip() == str(128 + signal.SIGKILL)
    daemon.cli("rm", cid)
    r = daemon.cli("run", "--rm", "no-such-image-here", "true", check=False)
    assert r.returncode == 125


def test_stdin_and_env(daemon: Daemon, busybox: str) -> None:
    r = daemon.cli("run", "--rm", "-i", busybox, "sh", "-c", "cat; echo done", input=b"from stdin\n")
    assert r.stdout == b"from stdin\ndone\n"
    r = daemon.cli("run", "--rm", "-e", "A=1", "-w", "/tmp", "-u", "nobody", busybox, "sh", "-c", 'echo $A $(pwd) $(id -u)')
    assert r.stdout.split() == [b"1", b"/tmp", b"65534"]
    r = daemon.cli("run", "--rm", "--entrypoint", "echo", busybox, "x", "y")
    assert r.stdout == b"x y\n"


def test_detached_web_logs_exec_stop(daemon: Daemon, busybox: str) -> None:
    name = "web-t1"
    daemon.cli("run", "-d", "--name", name, busybox, "sh", "-c", "echo started; exec httpd -f -p 8000")
    try:
        deadline = time.monotonic() + 10
        while b"started" not in daemon.cli("logs", name).stdout and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemon.cli("logs", name).stdout == b"started\n"
        ps = daemon.out("exec", name, "ps").splitlines()
        procs = [line.split() for line in ps[1:]]
        assert procs[0][0] == "1" and "httpd" in " ".join(procs[0])
        assert len(procs) == 2  # httpd and ps: the host's processes are invisible
        r = daemon.cli("exec", name, "sh", "-c", "echo out; echo err >&2; exit 4", check=False)
        assert r.returncode == 4 and r.stdout == b"out\n" and r.stderr == b"err\n"
        assert name in daemon.out("ps", "--format", "{{.Names}}")
        t0 = time.monotonic()
        daemon.cli("stop", "-t", "1", name)  # httpd as PID 1 ignores SIGTERM: SIGKILL after the timeout
        assert time.monotonic() - t0 < 10
        st = daemon.out("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name).split()
        assert st == ["exited", "137"]
    finally:
        daemon.cli("rm", "-f", name, check=False)
    assert daemon.cli("inspect", name, check=False).returncode != 0


def test_default_isolation(daemon: Daemon, busybox: str) -> None:
    masked = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug") if os.path.exists(p)]
    script = ("grep CapEff /proc/self/status; "
              "mkdir -p /mnt; mount -t tmpfs none /mnt 2>&1 && echo MOUNT-OK; "
              "unshare -n true 2>&1 && echo UNSHARE-OK; "
              + "".join(f"echo masked {p} $(cat {p} | wc -c); " for p in masked) +
              "echo 1 > /sys/kernel/profiling 2>&1 || echo SYS-RO; "
              "ps | wc -l")
    out = daemon.out("run", "--rm", busybox, "sh", "-c", script)
    cap = re.search(r"CapEff:\s+([0-9a-f]+)", out).group(1)  # type: ignore[union-attr]
    assert int(cap, 16) == 0x00000000A80425FB  # Docker's 14 default capabilities
    assert "MOUNT-OK" not in out and "UNSHARE-OK" not in out
    assert "Operation not permitted" in out or "Permission denied" in out
    for p in masked:  # /proc/kcore and friends read as empty (bound to /dev/null); kcore is absent on some kernels
        assert f"masked {p} 0" in out
    assert "SYS-RO" in out
    priv = daemon.out("run", "--rm", "--privileged", busybox, "sh", "-c",
                      "mkdir -p /mnt; mount -t tmpfs none /mnt && echo MOUNT-OK; unshare -n true && echo UNSHARE-OK; "
                      "grep CapEff /proc/self/status")
    assert "MOUNT-OK" in priv and "UNSHARE-OK" in priv
    cap = re.search(r"CapEff:\s+([0-9a-f]+)", priv).group(1)  # type: ignore[union-attr]
    assert int(cap, 16) > 0xA80425FB


def test_keyctl_is_blocked_by_seccomp(daemon: Daemon, busybox: str, tmp_path) -> None:
    # busybox has no keyctl: call the syscall through a tiny static helper is not available either, so check
    # the seccomp mode and that the filter is loaded
    out = daemon.out("run", "--rm", busybox, "grep", "Seccomp:", "/proc/self/status")
    assert out.split()[1] == "2"
    out = daemon.out("run", "--rm", "--security-opt", "seccomp=unconfined", busybox, "grep", "Seccomp:",
                     "/proc/self/status")
    assert out.split()[1] == "0"


def test_memory_limit_oom(daemon: Daemon, busybox: str) -> None:
    name = "oom-t"
    r = daemon.cli("run", "--name", name, "--memory", "64m", busybox, "dd", "if=/dev/zero", "of=/dev/null",
                   "bs=200M", "count=1", check=False)
    try:
        assert r.returncode == 137
        assert daemon.out("inspect", "--format", "{{.State.OOMKilled}}", name).strip() == "true"
    finally:
        daemon.cli("rm", "-f", name, check=False)


def test_pids_limit_contains_fork_bomb(daemon: Daemon, busybox: str) -> None:
    name = "bomb-t"
    daemon.cli("run", "-d", "--name", name, "--pids-limit", "50", busybox, "sh", "-c",
               "bomb() { bomb | bomb & }; bomb; exec sleep 1000")  # exec: PID 1 needs no fork to stay
    try:
        deadline = time.monotonic() + 5
        peak = 0
        while time.monotonic() < deadline:
            pids = daemon.out("stats", "--no-stream", "--format", "{{.PIDs}}", name).strip()
            peak = max(peak, int(pids or 0))
            r = subprocess.run(["true"], timeout=5)  # the host still forks
            assert r.returncode == 0
            time.sleep(0.2)
        assert 0 < peak <= 50
    finally:
        t0 = time.monotonic()
        daemon.cli("rm", "-f", name)
        assert time.monotonic() - t0 < 30


def test_interactive_tty_with_resize(daemon: Daemon, busybox: str) -> None:
    if not shutil.which("tmux"):
        pytest.skip("tmux missing")
    sess = f"matou-t{os.getpid()}"
    env = f"MATOU_HOST={daemon.host} PYTHONPATH={os.path.join(os.path.dirname(os.path.dirname(__file__)), '..', 'src')}"
    cmd = f"env {env} {os.sys.executable} -m matou run -it --rm {busybox} sh"
    subprocess.run(["tmux", "new-session", "-d", "-s", sess, "-x", "100", "-y", "30", cmd], check=True)
    try:
        def screen() -> str:
            return subprocess.run(["tmux", "capture-pane", "-t", sess, "-p"], capture_output=True, text=True).stdout

        def wait_for(text: str, timeout: float = 15) -> None:
            deadline = time.monotonic() + timeout
            while text not in screen():
                if time.monotonic() > deadline:
                    raise AssertionError(f"{text!r} not on screen:\n{screen()}")
                time.sleep(0.1)

        wait_for("/ #")
        subprocess.run(["tmux", "send-keys", "-t", sess, "echo $((6*7)); stty size", "Enter"], check=True)
        wait_for("42")
        wait_for("30 100")
        subprocess.run(["tmux", "resize-window", "-t", sess, "-x", "120", "-y", "40"], check=True)
        time.sleep(0.3)
        subprocess.run(["tmux", "send-keys", "-t", sess, "stty size", "Enter"], check=True)
        wait_for("40 120")
        subprocess.run(["tmux", "send-keys", "-t", sess, "exit", "Enter"], check=True)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", sess], capture_output=True)


def test_volumes_binds_tmpfs_readonly(daemon: Daemon, busybox: str, tmp_path) -> None:
    daemon.cli("volume", "create", "tvol")
    try:
        daemon.cli("run", "--rm", "-v", "tvol:/data", busybox, "sh", "-c", "echo kept > /data/f")
        assert daemon.out("run", "--rm", "-v", "tvol:/data", busybox, "cat", "/data/f") == "kept\n"
        (tmp_path / "host.txt").write_text("from host")
        assert daemon.out("run", "--rm", "-v", f"{tmp_path}:/h:ro", busybox, "cat", "/h/host.txt") == "from host"
        r = daemon.cli("run", "--rm", "-v", f"{tmp_path}:/h:ro", busybox, "touch", "/h/x", check=False)
        assert r.returncode != 0
        assert daemon.out("run", "--rm", "--tmpfs", "/scratch", busybox, "sh", "-c",
                          "grep /scratch /proc/mounts | cut -d' ' -f3").strip() == "tmpfs"
        r = daemon.cli("run", "--rm", "--read-only", busybox, "touch", "/x", check=False)
        assert r.returncode != 0
        r = daemon.cli("volume", "rm", "tvol")
        assert r.returncode == 0
    finally:
        daemon.cli("volume", "rm", "-f", "tvol", check=False)


def test_image_volume_is_seeded(daemon: Daemon, busybox: str) -> None:
    # /etc of the image seeds an empty named volume on first use, like Docker
    daemon.cli("volume", "create", "seedvol")
    try:
        out = daemon.out("run", "--rm", "-v", "seedvol:/etc", busybox, "cat", "/etc/passwd")
        assert out.startswith("root:")
    finally:
        daemon.cli("volume", "rm", "-f", "seedvol", check=False)


def test_cp_diff_commit_export(daemon: Daemon, busybox: str, tmp_path) -> None:
    name = "fs-t"
    daemon.cli("run", "-d", "--name", name, busybox, "sleep", "1000")
    try:
        (tmp_path / "in.txt").write_text("copied in")
        daemon.cli("cp", str(tmp_path / "in.txt"), f"{name}:/tmp/")
        assert daemon.out("exec", name, "cat", "/tmp/in.txt") == "copied in"
        daemon.cli("cp", f"{name}:/etc/passwd", str(tmp_path / "pw"))
        assert (tmp_path / "pw").read_text().startswith("root:")
        daemon.cli("exec", name, "sh", "-c", "rm /etc/group; mkdir /newdir; echo x > /newdir/f")
        diff = daemon.out("diff", name).splitlines()
        assert "D /etc/group" in diff and "A /newdir" in diff and "A /tmp/in.txt" in diff
        img = daemon.out("commit", "-c", "ENV COMMITTED=1", name, "committed:1").strip()
        assert img.startswith("sha256:")
        assert daemon.out("run", "--rm", "committed:1", "sh", "-c", "cat /newdir/f; echo $COMMITTED") == "x\n1\n"
        r = daemon.cli("export", name)
        import io
        import tarfile

        names = tarfile.open(fileobj=io.BytesIO(r.stdout)).getnames()
        assert any(n.rstrip("/").endswith("newdir/f") for n in names)
        assert not any(n.endswith("etc/group") for n in names)
    finally:
        daemon.cli("rm", "-f", name, check=False)
        daemon.cli("rmi", "committed:1", check=False)


def test_pause_rename_restart_policy(daemon: Daemon, busybox: str) -> None:
    daemon.cli("run", "-d", "--name", "pr-t", busybox, "sleep", "1000")
    try:
        daemon.cli("pause", "pr-t")
        assert "Paused" in daemon.out("ps", "--format", "{{.Status}}", "--filter", "name=pr-t")
        daemon.cli("unpause", "pr-t")
        daemon.cli("rename", "pr-t", "pr-t2")
        assert daemon.out("inspect", "--format", "{{.Name}}", "pr-t2").strip() == "/pr-t2"
    finally:
        daemon.cli("rm", "-f", "pr-t2", check=False)
    daemon.cli("run", "-d", "--name", "rp-t", "--restart", "on-failure:2", busybox, "sh", "-c", "exit 1")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            out = daemon.out("inspect", "--format", "{{.RestartCount}} {{.State.Status}}", "rp-t").split()
            if out == ["2", "exited"]:
                break
            time.sleep(0.1)
        assert out == ["2", "exited"]
    finally:
        daemon.cli("rm", "-f", "rp-t", check=False)


def test_survives_daemon_kill(fresh_daemon: Daemon) -> None:
    d = fresh_daemon
    d.cli("image", "bootstrap", "busybox")
    for i in range(3):
        d.cli("run", "-d", "--name", f"p{i}", "busybox", "sh", "-c",
              f"i=0; while [ $i -lt {20 + 20 * i} ]; do echo p{i}-$i; i=$((i+1)); sleep 0.1; done; exit {i + 1}")
    d.cli("run", "-d", "--name", "long", "busybox", "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done")
    time.sleep(0.5)
    d.kill()
    time.sleep(3)  # p0 finishes while the daemon is down
    d.start()
    states = dict(line.split() for line in d.out("ps", "-a", "--format", "{{.Names}} {{.State}}").splitlines())
    assert states["long"] == "running"
    for i in range(3):
        d.cli("wait", f"p{i}")
        assert d.out("inspect", "--format", "{{.State.ExitCode}}", f"p{i}").strip() == str(i + 1)
        lines = d.out("logs", f"p{i}").splitlines()
        assert lines == [f"p{i}-{n}" for n in range(20 + 20 * i)]
    d.cli("stop", "long")
    assert d.out("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", "long").split() == ["exited", "0"]


def _leaks(d: Daemon) -> dict[str, int]:
    with open("/proc/self/mountinfo") as f:
        mounts = sum(1 for line in f if d.root in line)
    cg = 0
    for base in ("/sys/fs/cgroup/memory/matou", "/sys/fs/cgroup/pids/matou", "/sys/fs/cgroup/matou"):
        if os.path.isdir(base):
            cg += sum(1 for e in os.scandir(base) if e.is_dir())
    run = os.path.join(d.exec_root, "containers")
    states = len(os.listdir(run)) if os.path.isdir(run) else 0
    fds = len(os.listdir(f"/proc/{d.proc.pid}/fd")) if d.proc else 0
    procs = sum(1 for p in os.listdir("/proc") if p.isdigit() and _cmd(p).startswith("python") and "matou.monitor" in _cmd(p))
    return {"mounts": mounts, "cgroups": cg, "states": states, "fds": fds, "monitors": procs}


def _cmd(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
def test_run_rm_cycles_leave_nothing(fresh_daemon: Daemon) -> None:
    d = fresh_daemon
    d.cli("image", "bootstrap", "busybox")
    d.cli("run", "--rm", "busybox", "true")  # warm up
    deadline = time.monotonic() + 30  # its removal finishes in the background
    while _leaks(d)["states"] and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    before = _leaks(d)
    for _ in range(200):
        d.cli("run", "--rm", "busybox", "true")
    deadline = time.monotonic() + 30  # removal finishes in the background, off the run path
    while (after := _leaks(d)) != before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert after == before, (before, after)
    assert d.out("ps", "-a", "-q") == ""


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_other_runtimes(daemon: Daemon, busybox: str, runtime: str) -> None:
    if not shutil.which(runtime):
        pytest.skip(f"{runtime} not installed")
    r = daemon.cli("run", "--rm", "--runtime", runtime, busybox, "sh", "-c", "echo via; exit 7", check=False)
    if runtime == "crun" and b"hybrid" in r.stderr:
        pytest.skip("crun refuses hybrid cgroup layouts on this machine")
    assert r.returncode == 7, r.stderr
    assert r.stdout == b"via\n"


def test_detach_keys_leave_the_container_running(daemon: Daemon, busybox: str) -> None:
    if not shutil.which("tmux"):
        pytest.skip("tmux missing")
    sess = f"matou-d{os.getpid()}"
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src")
    cmd = f"env MATOU_HOST={daemon.host} PYTHONPATH={src} {os.sys.executable} -m matou run -it --name detach-t {busybox} sh"
    subprocess.run(["tmux", "new-session", "-d", "-s", sess, "-x", "100", "-y", "30", cmd], check=True)
    try:
        deadline = time.monotonic() + 15
        while "/ #" not in subprocess.run(["tmux", "capture-pane", "-t", sess, "-p"], capture_output=True,
                                          text=True).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        subprocess.run(["tmux", "send-keys", "-t", sess, "C-p", "C-q"], check=True)
        deadline = time.monotonic() + 15
        while subprocess.run(["tmux", "has-session", "-t", sess], capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "the client did not detach"
            time.sleep(0.1)
        assert daemon.out("inspect", "--format", "{{.State.Running}}", "detach-t").strip() == "true"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", sess], capture_output=True)
        daemon.cli("rm", "-f", "detach-t", check=False)


def test_restart_policy_after_daemon_restart(fresh_daemon: Daemon) -> None:
    d = fresh_daemon
    d.cli("image", "bootstrap", "busybox")
    # exits by itself after a moment: "always" restarts it (docker kill/stop would count as a manual stop)
    d.cli("run", "-d", "--name", "always-t", "--restart", "always", "busybox", "sh", "-c", "sleep 1; exit 2")
    d.cli("run", "-d", "--name", "stopped-t", "--restart", "unless-stopped", "busybox", "sleep", "1000")
    d.cli("stop", "-t", "0", "stopped-t")
    deadline = time.monotonic() + 30
    while int(d.out("inspect", "--format", "{{.RestartCount}}", "always-t").strip()) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    started = d.out("inspect", "--format", "{{.State.StartedAt}}", "always-t").strip()
    d.kill()  # the daemon dies; the policy is applied again when it comes back
    time.sleep(1.5)  # always-t exits meanwhile
    d.start()
    deadline = time.monotonic() + 30
    while d.out("inspect", "--format", "{{.State.StartedAt}}", "always-t").strip() == started:
        assert time.monotonic() < deadline, ("always-t was not started again after the daemon restart\n" +
                                             open(d.log_path).read()[-6000:] +
                                             d.out("inspect", "always-t"))
        time.sleep(0.1)
    assert d.out("inspect", "--format", "{{.State.Running}}", "stopped-t").strip() == "false"


def test_one_request_run(daemon: Daemon, busybox: str) -> None:
    """The matou CLI's `run` without -d/-i/-t is one POST /containers/run: output on the same connection,
    stdout and stderr apart, the exit code in the last control frame; without --rm the container stays."""
    sys.path.insert(0, SRC)
    from matou.client.api import API
    from matou.client.http import APIError
    from matou.client.stream import pump_run

    api = API(daemon.api())
    with pytest.raises(APIError) as ei:
        api.container_run({"Image": busybox, "Tty": True, "Cmd": ["true"]}, None, None, True)
    assert ei.value.status == 400 and "tty" in ei.value.message
    with pytest.raises(APIError) as ei:
        api.container_run({"Image": "no-such-image:1", "Cmd": ["true"]}, None, None, True)
    assert ei.value.status == 404 and ei.value.message.startswith("No such image")
    out, err = io.BytesIO(), io.BytesIO()
    resp = api.container_run({"Image": busybox, "Cmd": ["sh", "-c", "echo out; echo err >&2; exit 5"]},
                             "one-req", None, False)
    try:
        control = pump_run(resp, out, err)
    finally:
        resp.close()
    assert out.getvalue() == b"out\n" and err.getvalue() == b"err\n"
    assert control[0]["Id"] and control[-1] == {"StatusCode": 5}
    assert daemon.out("inspect", "--format", "{{.State.ExitCode}}", "one-req").strip() == "5"
    daemon.cli("rm", "one-req")
    r = daemon.cli("run", "--rm", "--name", "one-req-2", busybox, "nosuch", check=False)
    assert r.returncode == 127 and b"executable file not found" in r.stderr
    assert "one-req-2" not in daemon.out("ps", "-a", "--format", "{{.Names}}")


def test_cli_hot_paths_stay_light(daemon: Daemon, busybox: str) -> None:
    """`run`, `ps` and `version` must not import json or re (re alone pulls in enum, functools and
    collections: ~15 ms of CPU per command, the largest single item of the CLI's cost)."""
    launcher = f"import sys; sys.path.insert(0, {SRC!r}); from matou.cli.main import run; run()"
    cli = [sys.executable, "-IS", "-X", "importtime", "-c", launcher]  # as the installed launcher starts it
    env = {"MATOU_HOST": daemon.host, "PATH": os.environ.get("PATH", "")}
    for args in (["run", "--rm", "--network", "none", busybox, "echo", "hi"], ["ps"], ["version"]):
        r = subprocess.run(cli + args, capture_output=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        imported = {line.rsplit("|", 1)[1].strip() for line in r.stderr.decode().splitlines()
                    if line.startswith("import time:") and "|" in line}
        assert not imported & {"json", "re", "enum", "argparse"}, (args, sorted(imported))


def test_container_process_starts_with_default_signals(daemon: Daemon, busybox: str) -> None:
    """The monitor that clones the init ignores SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGTTIN and SIGTTOU; ignored
    dispositions survive execve, so the init must reset them (or `stop` would not stop a program that relies on
    SIGTERM's default action), and its session is its own."""
    out = daemon.out("run", "--rm", busybox, "grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status")
    assert out.split() == ["SigBlk:", "0000000000000000", "SigIgn:", "0000000000000000"], out
    out = daemon.out("run", "--rm", busybox, "sh", "-c", "cut -d' ' -f6 /proc/self/stat; cut -d' ' -f5 /proc/self/stat")
    sid, pgid = out.split()
    assert sid == "1", out  # the container's init (pid 1 in its namespace) leads its own session


def test_failure_after_the_clone_is_reported_by_start(daemon: Daemon, busybox: str) -> None:
    """The monitor answers the daemon as soon as the init is cloned; a cgroup limit the kernel then refuses
    (an impossible cpuset) ends the init, and start reports what failed: exit 125, nothing left behind."""
    cpus = str((os.cpu_count() or 1) + 64)
    r = daemon.cli("run", "--rm", "--cpuset-cpus", cpus, busybox, "true", check=False)
    assert r.returncode == 125 and b"cpuset.cpus" in r.stderr, r.stderr
    r = daemon.cli("run", "--name", "late-fail", "--cpuset-cpus", cpus, busybox, "true", check=False)
    assert r.returncode == 125
    assert daemon.out("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", "late-fail").split() == [
        "exited", "125"]
    daemon.cli("rm", "late-fail")
    assert daemon.out("run", "--rm", busybox, "echo", "still fine") == "still fine\n"


def test_start_sweeps_runtime_state_nobody_runs() -> None:
    """Runtime state left by a monitor that died before it deleted its container's (a state directory with or
    without state.json) is removed when the daemon starts; a running container's is kept, and it still works, and
    so is the runtime's seccomp cache beside them."""
    from tests.conftest import _new_daemon

    d = _new_daemon("matou-sweep-")
    d.start()
    try:
        d.cli("image", "bootstrap", "busybox")
        d.cli("run", "-d", "--name", "keep", "busybox", "sleep", "600")
        keep = d.out("inspect", "--format", "{{.Id}}", "keep").strip()
        root = os.path.join(d.exec_root, "runtime", "matou")
        assert os.path.isdir(os.path.join(root, keep))
        dead = subprocess.Popen(["true"])
        dead.wait()
        half, gone = os.path.join(root, "a" * 64), os.path.join(root, "b" * 64)
        os.makedirs(half)
        open(os.path.join(half, "exec.fifo"), "w").close()  # killed mid-launch: no state.json yet
        os.makedirs(gone)
        with open(os.path.join(gone, "state.json"), "w") as f:
            json.dump({"id": "b" * 64, "pid": dead.pid, "start_time": 1, "bundle": "/nonexistent",
                       "rootfs": "/nonexistent", "created": "2026-01-01T00:00:00Z"}, f)
        cache = sorted(e for e in os.listdir(root) if e.startswith("."))
        assert cache == [".seccomp"]  # the compiled seccomp programs: not a container's, and kept
        d.stop()
        d.start()
        assert sorted(os.listdir(root)) == cache + [keep]
        assert d.out("exec", "keep", "echo", "alive") == "alive\n"
        d.cli("rm", "-f", "keep")
    finally:
        d.cleanup()


def test_sysctl_is_written_before_proc_sys_turns_read_only(daemon: Daemon, busybox: str) -> None:
    """--sysctl: the value is set in the container's namespace, and /proc/sys is read-only afterwards all the same
    (a pre-cloned init's staged /proc, read-only there already, must not be used for it)."""
    out = daemon.out("run", "--rm", "--sysctl", "kernel.domainname=matou.test", busybox, "sh", "-c",
                     "cat /proc/sys/kernel/domainname; echo x > /proc/sys/kernel/domainname 2>&1 || echo RO")
    assert out.splitlines()[0] == "matou.test"
    assert "RO" in out
