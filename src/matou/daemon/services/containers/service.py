"""Container orchestration: records, lifecycle, the monitors, restart policies and re-adoption.

A container's bundle lives in ``<exec_root>/containers/<id>/`` (config.json, rootfs mount point, monitor socket,
exit.json); its persistent files in ``<data_root>/containers/<id>/`` (log, hosts, hostname, resolv.conf); its
read-write layer is the snapshot ``container-<id>``. The daemon mounts the rootfs right before asking the
spawner for a monitor, and unmounts it when the monitor reports the exit.

matoud may die at any time: the monitors keep running. On start, every container recorded as running is
re-adopted: if its monitor answers, the daemon waits on it again; otherwise the monitor's ``exit.json`` says
how it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal as _signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from matou.daemon.config import DaemonConfig, state_dirs
from matou.daemon.services import Services
from matou.daemon.services.containers import bundle as B
from matou.daemon.services.containers.config import build, validate_name
from matou.daemon.services.containers.records import Container, State, now
from matou.errors import Conflict, InvalidArgument, NotFound, NotModified, SystemError_
from matou.image.service import ImageService
from matou.logs.jsonfile import parse_size
from matou.monitor.client import MonitorConnection, MonitorGone, Spawner
from matou.runtime.spec import launch_hint
from matou.store.metadata import Database
from matou.store.snapshots import OverlaySnapshotter
from matou.store.snapshots.overlay import mount_all
from matou.types import reference
from matou.types.image import parse_time
from matou.util.ids import is_container_id, new_id, random_name
from matou.util.mount import MNT_DETACH, is_mountpoint, umount

log = logging.getLogger("matoud.containers")

SIGNALS = {s.name[3:]: int(s) for s in _signal.Signals if s.name.startswith("SIG") and not s.name.startswith("SIG_")}


def parse_signal(v: str | int | None, default: int = _signal.SIGTERM) -> int:
    if v is None or v == "":
        return default
    if isinstance(v, int) or str(v).isdigit():
        n = int(v)
        if not 0 < n < 65:
            raise InvalidArgument(f"Invalid signal: {v}")
        return n
    name = str(v).upper().removeprefix("SIG")
    if name not in SIGNALS:
        raise InvalidArgument(f"Invalid signal: {v}")
    return SIGNALS[name]


@dataclass
class Running:
    """What the daemon holds for a running container: the monitor's control channel."""

    reader: asyncio.StreamReader | None
    writer: asyncio.StreamWriter | None
    pid: int
    started: float
    task: asyncio.Task[None] | None = None


@dataclass
class ExecRecord:
    id: str
    container_id: str
    config: dict[str, Any]
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


def _has_netns(pid: int) -> bool:
    """Whether process ``pid`` is alive with a network namespace (a zombie has none)."""
    try:
        os.stat(f"/proc/{pid}/ns/net")
        return pid > 0
    except OSError:
        return False


class Trace:
    """Step durations of a start, for `run --trace` (sent back in the X-Matou-Trace header)."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self._t = time.perf_counter()

    def step(self, name: str) -> None:
        now = time.perf_counter()
        self.steps[name] = round((now - self._t) * 1000, 3)
        self._t = now


class ContainersService:
    def __init__(self, svcs: Services, db: Database, images: ImageService, snapshots: OverlaySnapshotter) -> None:
        self.svcs = svcs
        self.cfg: DaemonConfig = svcs.config
        self.db = db
        self.images = images
        self.snapshots = snapshots
        dirs = state_dirs(self.cfg)
        self.data_dir = dirs["containers"]
        self.run_dir = dirs["run_containers"]
        self.runtime_root = dirs["runtime"]
        self.running: dict[str, Running] = {}
        self.execs: dict[str, ExecRecord] = {}
        self._changed = asyncio.Condition()
        self._locks: dict[str, asyncio.Lock] = {}
        self._starting_ids: set[str] = set()  # starts in progress (the lock is also held by cleanups)
        self._pending_attach: dict[str, list[asyncio.Future[None]]] = {}
        self._removed: set[str] = set()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.spawner = Spawner(os.path.join(self.cfg.exec_root, "spawner.sock"), sys.executable, env)
        self._restart_tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._attach_count: dict[str, int] = {}
        self._attach_event: dict[str, asyncio.Event] = {}
        self._last_exit: dict[str, int] = {}
        self._exits: dict[str, int] = {}  # exits seen per container, for wait(next-exit)
        self._cleanups: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()  # see track()
        self.traces: dict[str, dict[str, float]] = {}  # last start's step durations, popped by the API
        self._removed_waiters: dict[str, int] = {}  # wait(condition=removed) calls in progress, per container

    # ------------------------------------------------------------------ daemon lifecycle
    async def start(self) -> None:
        if self.cfg.cgroup_favordynmods:
            from matou.runtime.linux.cgroups import favor_dynamic_modifications

            for mp in await asyncio.to_thread(favor_dynamic_modifications):
                log.info("remounted %s with favordynmods: cgroup moves no longer wait for RCU grace periods", mp)
        await self.spawner.ensure()
        for c in self._all():
            try:
                await self._readopt(c)
            except Exception:
                log.exception("re-adopting %s failed", c.id[:12])
        await asyncio.to_thread(self._sweep_runtime_state)
        # restart policies after a daemon restart
        for c in self._all():
            pol = c.host_config.get("RestartPolicy", {}).get("Name")
            if c.state.Running or c.id in self.running:
                continue
            if pol == "always" or (pol == "unless-stopped" and not c.manually_stopped):
                if c.has_been_started:
                    self.track(self._try_start(c.id))

    def _sweep_runtime_state(self) -> None:
        """The built-in runtime's state of containers no monitor runs (after re-adoption): a monitor killed
        before it deleted its container's leaves the state directory, maybe the cgroups and an init that was
        never started, and nobody else would remove them."""
        root = os.path.join(self.runtime_root, "matou")
        live = set(self.running) | {c.id for c in self._all()  # a failed re-adoption is no reason to kill
                                    if c.state.Running or c.state.Status in ("running", "paused", "restarting")}
        try:  # only container ids: the runtime keeps its compiled seccomp programs beside them (.seccomp)
            stale = [d for d in os.listdir(root) if d not in live and is_container_id(d)]
        except FileNotFoundError:
            return
        if not stale:
            return
        from matou.runtime.builtin import BuiltinRuntime  # only now: the daemon does not run containers itself

        rt = BuiltinRuntime(root)
        for cid in stale:
            try:
                rt.delete(cid, force=True)
            except Exception:  # noqa: BLE001 - no state.json (killed mid-launch), or unreadable: the files go
                shutil.rmtree(os.path.join(root, cid), ignore_errors=True)
            log.info("removed runtime state of %s: no monitor runs it", cid[:12])

    async def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.settle(), 10)
        for t in list(self._restart_tasks.values()):
            t.cancel()
        for r in list(self.running.values()):
            if r.task:
                r.task.cancel()
            if r.writer:
                r.writer.close()
        await self.spawner.stop()

    async def _try_start(self, cid: str) -> None:
        try:
            await self.start_container(cid)
        except Exception as e:
            log.warning("restarting %s failed: %s", cid[:12], e)

    async def _readopt(self, c: Container) -> None:
        if not c.state.Running and c.state.Status not in ("running", "paused", "restarting"):
            self._unmount(c)
            return
        conn = MonitorConnection(self._sock(c.id))
        try:
            reader, writer = await conn.open({"op": "wait"})
        except MonitorGone:
            self._apply_exit(c, self._read_exit_file(c.id))
            await self._after_exit(c, restart=False)
            return
        run = Running(reader, writer, c.state.Pid, parse_time(c.state.StartedAt))
        self.running[c.id] = run
        run.task = asyncio.get_running_loop().create_task(self._watch(c.id, run))
        log.info("re-adopted running container %s (pid %d)", c.id[:12], c.state.Pid)

    def _read_exit_file(self, cid: str, pid: int = 0) -> dict[str, Any]:
        """The monitor's exit.json; with ``pid``, only if it is that init's (a monitor writes it just after
        sending the exit event, so a file from an earlier run can land after a restart's cleanup)."""
        try:
            with open(os.path.join(self.run_dir, cid, "exit.json")) as f:
                rec = json.load(f)
            if not pid or rec.get("pid") in (None, pid):
                return rec
        except (OSError, ValueError):
            pass
        return {"exit_code": 255, "oom_killed": False, "finished_at": time.time(),
                "error": "the container's monitor is gone and left no exit status"}

    # ------------------------------------------------------------------ records
    def _all(self) -> list[Container]:
        return [Container.loads(r["record"]) for r in self.db.all("SELECT record FROM containers ORDER BY created")]

    def _save(self, c: Container) -> None:
        self.db.execute("UPDATE containers SET name=?, record=? WHERE id=?", (c.name, c.dumps(), c.id))

    def get(self, ref: str) -> Container:
        if not ref:
            raise NotFound("No such container: ")
        row = self.db.one("SELECT record FROM containers WHERE id=?", (ref,))
        if row is None:
            row = self.db.one("SELECT record FROM containers WHERE name=?", (ref.lstrip("/"),))
        if row is None and all(ch in "0123456789abcdef" for ch in ref):
            rows = self.db.all("SELECT record FROM containers WHERE id LIKE ?", (ref + "%",))
            if len(rows) > 1:
                raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}")
            row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"No such container: {ref}")
        return Container.loads(row["record"])

    def _lock(self, cid: str) -> asyncio.Lock:
        return self._locks.setdefault(cid, asyncio.Lock())

    def _sock(self, cid: str) -> str:
        # short on purpose: AF_UNIX paths are limited to 107 bytes, and exec roots (tests) can be long
        return os.path.join(self.cfg.exec_root, "m", cid[:24])

    def bundle_dir(self, cid: str) -> str:
        return os.path.join(self.run_dir, cid)

    def rootfs(self, cid: str) -> str:
        return os.path.join(self.run_dir, cid, "rootfs")

    def counts(self) -> dict[str, int]:
        cs = self._all()
        running = sum(1 for c in cs if c.state.Running and not c.state.Paused)
        paused = sum(1 for c in cs if c.state.Paused)
        return {"Containers": len(cs), "ContainersRunning": running, "ContainersPaused": paused,
                "ContainersStopped": len(cs) - running - paused}

    def users_of_image(self, image_id: str) -> list[tuple[str, bool]]:
        return [(c.id, c.state.Running) for c in self._all() if c.image_id == image_id]

    def users_of_volume(self, name: str) -> list[str]:
        return [c.id for c in self._all() if any(m.get("Name") == name for m in c.mounts)]

    def _publish(self, action: str, c: Container, extra: dict[str, str] | None = None) -> None:
        attrs = {"name": c.name, "image": c.config.get("Image", "")}
        attrs.update({k: v for k, v in (c.config.get("Labels") or {}).items()})
        attrs.update(extra or {})
        self.svcs.events.publish("container", action, c.id, attrs)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ create
    async def create(self, body: dict[str, Any], name: str | None, platform: str | None = None) -> dict[str, Any]:
        image_ref = (body or {}).get("Image") or ""
        if not image_ref:
            raise InvalidArgument("Config cannot be empty in order to create a container")
        img = self.images.lookup(image_ref)
        if img is None:
            try:
                r = reference.parse(image_ref)
                shown = r.familiar() if (r.tag or r.digest) else r.with_default_tag().familiar()
            except InvalidArgument as e:
                raise InvalidArgument(str(e)) from None
            raise NotFound(f"No such image: {shown}")
        cid = new_id()
        if name:
            name = validate_name(name)
        else:
            name = random_name()
            while self.db.one("SELECT 1 FROM containers WHERE name=?", (name,)):
                name = random_name()
        c = build(cid, name, body, img, image_ref, self.cfg.default_runtime)
        plans = B.parse_mounts(c)
        nm = c.host_config["NetworkMode"]
        if nm.startswith("container:"):
            self.get(nm.split(":", 1)[1])
        if self.svcs.networks is not None:
            await self.svcs.networks.validate_create(c, (body or {}).get("NetworkingConfig"))
        elif nm not in ("bridge", "none", "host") and not nm.startswith("container:"):
            raise NotFound(f"network {nm} not found")
        data_dir = os.path.join(self.data_dir, cid)
        os.makedirs(data_dir, 0o710, exist_ok=True)
        c.log_path = os.path.join(data_dir, f"{cid}-json.log") if c.host_config["LogConfig"]["Type"] == "json-file" else ""
        c.hostname_path = os.path.join(data_dir, "hostname")
        c.hosts_path = os.path.join(data_dir, "hosts")
        c.resolv_conf_path = os.path.join(data_dir, "resolv.conf")
        try:
            with self.db.tx() as tx:
                existing = tx.execute("SELECT id FROM containers WHERE name=?", (name,)).fetchone()
                if existing:
                    raise Conflict(f'Conflict. The container name "/{name}" is already in use by container '
                                   f'"{existing[0]}". You have to remove (or rename) that container to be able to '
                                   "reuse that name.")
                tx.execute("INSERT INTO containers(id, name, image_id, created, record) VALUES(?,?,?,?,?)",
                           (cid, name, img.id, c.created, c.dumps()))
                self.snapshots.prepare(f"container-{cid}", img.top_layer)
            if self.svcs.volumes is not None:
                B.resolve_volumes(plans, self.svcs.volumes)
            c.mounts = [p.to_docker() for p in plans]
            if self.svcs.networks is not None:
                await self.svcs.networks.on_create(c, (body or {}).get("NetworkingConfig"))
            self._save(c)
        except BaseException:
            with contextlib.suppress(Exception):
                self.db.execute("DELETE FROM containers WHERE id=?", (cid,))
            with contextlib.suppress(Exception):
                if self.snapshots.exists(f"container-{cid}"):
                    self.snapshots.remove(f"container-{cid}")
            shutil.rmtree(data_dir, ignore_errors=True)
            raise
        self._publish("create", c)
        warnings: list[str] = []
        return {"Id": cid, "Warnings": warnings}

    # ------------------------------------------------------------------ start
    def _mount_rootfs(self, c: Container) -> str:
        root = self.rootfs(c.id)
        os.makedirs(root, 0o755, exist_ok=True)
        if not is_mountpoint(root):
            mount_all(self.snapshots.mounts(f"container-{c.id}"), root)
        return root

    def _unmount(self, c: Container) -> None:
        root = self.rootfs(c.id)
        for _ in range(3):
            if not os.path.isdir(root) or not is_mountpoint(root):
                break
            try:
                umount(root, MNT_DETACH)
            except OSError as e:
                log.warning("unmounting %s: %s", root, e)
                break

    def _write_etc(self, c: Container, addresses: list[str], dns_embedded: str | None) -> None:
        hc = c.host_config
        with open(c.hostname_path, "w") as f:
            f.write((c.config.get("Hostname") or c.id[:12]) + "\n")
        with open(c.hosts_path, "w") as f:
            f.write(B.hosts_file(c, addresses, list(hc.get("ExtraHosts") or [])))
        with open(c.resolv_conf_path, "w") as f:
            f.write(B.resolv_conf(list(hc.get("Dns") or []), list(hc.get("DnsSearch") or []),
                                  list(hc.get("DnsOptions") or []), dns_embedded))

    def _namespace_path(self, mode: str, kind: str) -> str | None:
        if mode == "host":
            return "host"
        if mode.startswith("container:"):
            other = self.get(mode.split(":", 1)[1])
            if not other.state.Running or not other.state.Pid:
                raise Conflict(f"cannot join {kind} namespace of a non running container: {other.name}")
            return f"/proc/{other.state.Pid}/ns/{kind}"
        return None

    async def start_container(self, ref: str) -> None:
        c = self.get(ref)
        async with self._lock(c.id):
            c = self.get(c.id)
            if c.state.Running:
                if c.state.Paused:
                    raise Conflict("cannot start a paused container, try unpause instead")
                raise NotModified("container already started")
            if c.state.Status == "removing":
                raise Conflict("container is marked for removal and cannot be started")
            self._starting_ids.add(c.id)
            try:
                await self._start_locked(c)
            finally:
                self._starting_ids.discard(c.id)

    async def _start_locked(self, c: Container) -> None:
        hc = c.host_config
        bdir = self.bundle_dir(c.id)
        os.makedirs(bdir, 0o711, exist_ok=True)
        for stale in ("exit.json", "started"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(bdir, stale))
        tr = Trace()
        log_cfg = hc.get("LogConfig") or {}
        opts = dict(self.cfg.log_opts)
        opts.update(log_cfg.get("Config") or {})
        runtime = c.runtime or self.cfg.default_runtime
        mcfg = {
            "id": c.id, "bundle": bdir, "state_dir": bdir, "tty": bool(c.config.get("Tty")),
            "open_stdin": bool(c.config.get("OpenStdin")), "stdin_once": bool(c.config.get("StdinOnce")),
            "log_path": c.log_path or None, "log_max_size": parse_size(opts.get("max-size")),
            "log_max_file": int(opts.get("max-file") or 1), "runtime": runtime,
            "runtime_binary": (self.cfg.runtimes.get(runtime) or {}).get("path"),
            "runtime_root": os.path.join(self.runtime_root, runtime),
            "cgroup_parent": hc.get("CgroupParent") or "/matou",
            "socket_path": self._sock(c.id),
            "requested_at": time.monotonic(),
        }
        # the monitor is asked for first: its fork and setup overlap the mount and the bundle below
        asked = await self.spawner.begin(mcfg)
        tr.step("ask for a monitor")
        net_mode = hc.get("NetworkMode") or "bridge"
        netns: str | None = None
        addresses: list[str] = []
        dns_embedded: str | None = None
        networks = self.svcs.networks
        net_plan = None
        spawned: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            rootfs = self._mount_rootfs(c)
            tr.step("mount rootfs (overlay)")
            plans = B.parse_mounts(c)
            known = {m["Destination"]: m for m in c.mounts}
            for p in plans:
                if p.type == "volume" and p.destination in known:
                    p.name = known[p.destination].get("Name", "")
                    p.source = known[p.destination].get("Source", "")
            if self.svcs.volumes is not None:
                B.seed_volumes(plans, rootfs, self.svcs.volumes)
            if net_mode == "host":
                netns = "host"
            elif net_mode.startswith("container:"):
                netns = self._namespace_path(net_mode, "net")
            elif networks is not None and net_mode != "none":
                # the kernel part comes after the spawn: the init joins a sandbox made ahead (a spare) or makes
                # its own namespace (netns stays None); the daemon configures it while the init builds its root
                # filesystem
                net_plan = await networks.plan(c)
                if net_plan.spare is not None:
                    netns = net_plan.sb.path
                addresses, dns_embedded = net_plan.addresses, net_plan.dns
                self._save(c)  # the network service filled in c.networks
            tr.step("endpoints (addresses, records)")
            self._write_etc(c, addresses, dns_embedded)
            ipc = hc.get("IpcMode") or ""
            pid_mode = hc.get("PidMode") or ""
            spec = B.write_bundle(c, bdir, rootfs, plans, bdir, netns,
                           ipc_path=self._namespace_path(ipc, "ipc") if ipc not in ("", "private", "shareable") else None,
                           pid_path=self._namespace_path(pid_mode, "pid") if pid_mode else None,
                           uts_host=hc.get("UTSMode") == "host")
            tr.step("bundle (config.json, /etc files)")
            msg, reader, writer = await asked.go(launch_hint(spec))
            spawned = reader, writer
            tr.step("monitor + runtime create")
            for k, v in (msg.get("trace") or {}).items():
                tr.steps["  " + k] = v
            # attach streams registered before start connect now (so no output is lost), while the network is
            # set up: the monitor takes them meanwhile
            attaching = self._pending_attach.pop(c.id, [])
            for fut in attaching:
                if not fut.done():
                    fut.set_result(None)
            if net_plan is not None and networks is not None:
                init_pid = int(msg.get("pid") or 0)
                try:
                    await networks.realize(c, net_plan, init_pid)
                except Exception:
                    if _has_netns(init_pid):
                        raise
                    # the init already failed (e.g. its program does not exist): start reports why
                else:
                    self._save(c)  # c.network_settings: sandbox, ports
                tr.step("network (veth, addresses, routes, ports)")
        except BaseException as e:
            if spawned is None:
                asked.abort()  # a monitor still waiting for "go" then leaves without creating anything
            else:  # the init waits for "start": end it, the monitor then cleans up and exits
                with contextlib.suppress(Exception):
                    spawned[1].write(b'{"op": "kill", "signal": 9}\n')
                    await spawned[1].drain()
                    spawned[1].close()
            self._unmount(c)
            if networks is not None and net_mode not in ("host", "none") and not net_mode.startswith("container:"):
                with contextlib.suppress(Exception):
                    await networks.teardown(c)
            self._record_start_failure(c, e)
            raise
        run = Running(reader, writer, int(msg.get("pid") or 0), time.time())
        self.running[c.id] = run
        if attaching:
            await self._attach_ready(c.id, len(attaching))
        tr.step("attach streams connected")
        writer.write(b'{"op": "start"}\n')
        await writer.drain()
        line = await reader.readline()
        reply = json.loads(line) if line else {"ok": False, "error": "monitor died during start", "exit_code": 125}
        tr.step("runtime start (exec)")
        self.traces[c.id] = tr.steps
        if not reply.get("ok"):
            # the monitor records the failure as the container's exit; collect it
            err = reply.get("error", "start failed")
            code = int(reply.get("exit_code") or 125)
            run.task = asyncio.get_running_loop().create_task(self._watch(c.id, run, start_error=(err, code)))
            exc = SystemError_(f"failed to create task for container: {err}")
            exc.exit_code = code  # type: ignore[attr-defined]
            c = self.get(c.id)
            c.state.Error = err
            c.state.ExitCode = code
            self._save(c)
            if code in (126, 127):
                raise _ExecFailed(err, code)
            raise exc
        c = self.get(c.id)
        c.state = State(Status="running", Running=True, Pid=run.pid, StartedAt=now(),
                        FinishedAt=c.state.FinishedAt, OOMKilled=False)
        c.has_been_started = True
        c.manually_stopped = False
        self._save(c)
        run.task = asyncio.get_running_loop().create_task(self._watch(c.id, run))
        self._publish("start", c)
        await self._notify()

    def _record_start_failure(self, c: Container, e: BaseException) -> None:
        with contextlib.suppress(Exception):
            c = self.get(c.id)
            c.state.Error = str(e)
            c.state.ExitCode = getattr(e, "exit_code", 128)
            c.state.Status = "created" if not c.has_been_started else "exited"
            self._save(c)

    async def _attach_ready(self, cid: str, n: int, timeout: float = 5.0) -> None:
        """Wait until n attach streams connected to the monitor (they were waiting for the start)."""
        ev = self._attach_event.setdefault(cid, asyncio.Event())
        deadline = time.monotonic() + timeout
        try:
            while self._attach_count.get(cid, 0) < n and time.monotonic() < deadline:
                ev.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ev.wait(), deadline - time.monotonic())
        finally:
            self._attach_count.pop(cid, None)
            self._attach_event.pop(cid, None)

    def attach_connected(self, cid: str) -> None:
        self._attach_count[cid] = self._attach_count.get(cid, 0) + 1
        ev = self._attach_event.get(cid)
        if ev is not None:
            ev.set()

    # ------------------------------------------------------------------ exit
    async def _watch(self, cid: str, run: Running, start_error: tuple[str, int] | None = None) -> None:
        rec: dict[str, Any] | None = None
        assert run.reader is not None
        try:
            while True:
                line = await run.reader.readline()
                if not line:
                    break
                msg = json.loads(line)
                if msg.get("event") == "exit":
                    rec = msg
                    break
        except (ConnectionError, ValueError):
            pass
        except asyncio.CancelledError:
            return
        finally:
            if run.writer is not None:
                run.writer.close()
        if rec is None:
            rec = self._read_exit_file(cid, run.pid)
        rec["monotonic_received"] = time.monotonic()
        if self.running.get(cid) is run:
            del self.running[cid]
        try:
            c = self.get(cid)
        except NotFound:
            return
        self._apply_exit(c, rec)
        if start_error:
            c.state.Error = start_error[0]
            self._save(c)
        t_apply = time.monotonic()
        await self._after_exit(c, restart=start_error is None)
        rec["after_exit_ms"] = (time.monotonic() - t_apply) * 1000
        if log.isEnabledFor(logging.DEBUG) and rec.get("monotonic_reaped"):
            r0 = rec["monotonic_reaped"]
            s0 = rec.get("monotonic_started") or r0
            log.debug("exit of %s: started->reaped %.2f ms, reaped->eof %.2f, ->finish %.2f, ->sent %.2f, "
                      "->received %.2f, ->handled %.2f (after_exit %.2f)", cid[:12], (r0 - s0) * 1000,
                      (rec.get("monotonic_eof", r0) - r0) * 1000, (rec.get("monotonic_finish", r0) - r0) * 1000,
                      (rec.get("monotonic_sent", r0) - r0) * 1000, (rec["monotonic_received"] - r0) * 1000,
                      (time.monotonic() - r0) * 1000, rec["after_exit_ms"])

    def _apply_exit(self, c: Container, rec: dict[str, Any]) -> None:
        c.state.Running = False
        c.state.Paused = False
        c.state.Restarting = False
        c.state.Pid = 0
        c.state.Status = "exited"
        c.state.ExitCode = int(rec.get("exit_code", 255))
        c.state.OOMKilled = bool(rec.get("oom_killed"))
        c.state.FinishedAt = _rfc(rec.get("finished_at") or time.time())
        if rec.get("error"):
            c.state.Error = rec["error"]
        self._save(c)
        self._execs_done(c.id)

    def _execs_done(self, cid: str) -> None:
        for e in self.execs.values():
            if e.container_id == cid and e.running:
                e.running = False
                if e.exit_code is None:
                    e.exit_code = 137
                e.done.set()

    async def _after_exit(self, c: Container, restart: bool) -> None:
        self._background(c.id, self._unmount_later(c))
        nm = c.host_config.get("NetworkMode") or "bridge"
        if self.svcs.networks is not None and nm not in ("host", "none") and not nm.startswith("container:"):
            with contextlib.suppress(Exception):
                await self.svcs.networks.teardown(c)
        if c.state.OOMKilled:
            self._publish("oom", c)
        self._publish("die", c, {"exitCode": str(c.state.ExitCode)})
        self._last_exit[c.id] = c.state.ExitCode
        if self._stopping:
            return
        will_restart = restart and self._should_restart(c)
        if not will_restart:
            self._exits[c.id] = self._exits.get(c.id, 0) + 1
        await self._notify()
        if will_restart:
            c.restart_count += 1
            c.state.Restarting = True
            c.state.Status = "restarting"
            self._save(c)
            ran = parse_time(c.state.FinishedAt) - parse_time(c.state.StartedAt)
            delay = 0.1 if ran > 10 else min(60.0, 0.1 * (2 ** min(c.restart_count - 1, 10)))
            self._restart_tasks[c.id] = asyncio.get_running_loop().create_task(self._restart_later(c.id, delay))
            return
        if c.host_config.get("AutoRemove"):
            if not self._removed_waiters.get(c.id):
                # Nobody waits for the removal (the docker CLI's `run --rm` does, and gets it at once), so a
                # client may still look at the container: docker-py's run(auto_remove=True) follows the logs,
                # then inspects it (a tty?), then waits for the exit. dockerd's slower removal leaves time for
                # that; so does this grace, instead of a 404.
                await asyncio.sleep(0.5)
            with contextlib.suppress(NotFound, Conflict):
                await self.remove(c.id, force=True, volumes=True)

    def _should_restart(self, c: Container) -> bool:
        pol = c.host_config.get("RestartPolicy") or {}
        name = pol.get("Name") or "no"
        if c.manually_stopped or name == "no" or c.id in self._removed:
            return False
        if name in ("always", "unless-stopped"):
            return True
        if name == "on-failure":
            mx = int(pol.get("MaximumRetryCount") or 0)
            return c.state.ExitCode != 0 and (mx == 0 or c.restart_count < mx)
        return False

    async def _restart_later(self, cid: str, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            c = self.get(cid)
            if not c.state.Restarting:
                return
            async with self._lock(cid):
                c = self.get(cid)
                if c.state.Running or not c.state.Restarting:
                    return
                c.state.Restarting = False
                self._save(c)
                self._publish("restart", c)
                await self._start_locked(c)
        except (NotFound, asyncio.CancelledError):
            pass
        except Exception as e:
            log.warning("restart of %s failed: %s", cid[:12], e)
            with contextlib.suppress(NotFound):
                c = self.get(cid)
                c.state.Restarting = False
                c.state.Status = "exited"
                self._save(c)
        finally:
            self._restart_tasks.pop(cid, None)

    # ------------------------------------------------------------------ control
    async def _monitor(self, c: Container, op: str, **kw: Any) -> dict[str, Any]:
        try:
            return await MonitorConnection(self._sock(c.id)).call(op, **kw)
        except MonitorGone:
            raise Conflict(f"Container {c.id} is not running") from None

    async def kill(self, ref: str, sig: str | int | None = None) -> None:
        c = self.get(ref)
        n = parse_signal(sig, _signal.SIGKILL)
        if not c.state.Running:
            raise Conflict(f"Cannot kill container: {ref}: Container {c.id} is not running")
        if n in (_signal.SIGKILL, _signal.SIGTERM, _signal.SIGINT) or n == parse_signal(c.config.get("StopSignal") or "TERM"):
            c.manually_stopped = True
            self._save(c)
        if c.state.Paused and n == _signal.SIGKILL:
            with contextlib.suppress(Exception):
                await self._monitor(c, "resume")
        await self._monitor(c, "kill", signal=n)
        self._publish("kill", c, {"signal": str(n)})

    async def stop_container(self, ref: str, timeout: int | None = None, sig: str | None = None) -> None:
        c = self.get(ref)
        if c.id in self._restart_tasks:
            self._restart_tasks.pop(c.id).cancel()
            c.state.Restarting = False
            c.state.Status = "exited"
            c.manually_stopped = True
            self._save(c)
            return
        if not c.state.Running:
            raise NotModified("container already stopped")
        c.manually_stopped = True
        self._save(c)
        n = parse_signal(sig or c.config.get("StopSignal") or "SIGTERM")
        if timeout is None:
            timeout = int(c.config.get("StopTimeout") or 10)
        if c.state.Paused:
            with contextlib.suppress(Exception):
                await self._monitor(c, "resume")
        with contextlib.suppress(Conflict):
            await self._monitor(c, "kill", signal=n)
        if timeout < 0 or not await self._wait_exit(c.id, timeout):
            with contextlib.suppress(Conflict):
                await self._monitor(c, "kill", signal=_signal.SIGKILL, all=True)
            await self._wait_exit(c.id, 30)
        self._publish("stop", self.get(c.id))

    async def _wait_exit(self, cid: str, timeout: float | None) -> bool:
        async def cond() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: cid not in self.running)

        try:
            await asyncio.wait_for(cond(), timeout)
            return True
        except TimeoutError:
            return False

    async def restart(self, ref: str, timeout: int | None = None, sig: str | None = None) -> None:
        c = self.get(ref)
        if c.state.Running:
            with contextlib.suppress(NotModified):
                await self.stop_container(c.id, timeout, sig)
        await self._wait_exit(c.id, 30)
        c = self.get(c.id)
        c.manually_stopped = False
        self._save(c)
        await self.start_container(c.id)
        self._publish("restart", c)

    async def wait(self, ref: str, condition: str = "not-running") -> dict[str, Any]:
        c = self.get(ref)
        if condition not in ("not-running", "next-exit", "removed", ""):
            raise InvalidArgument(f"invalid condition: {condition!r}")
        cid = c.id
        if condition == "removed":
            self._removed_waiters[cid] = self._removed_waiters.get(cid, 0) + 1
            try:
                async with self._changed:
                    await self._changed.wait_for(
                        lambda: self.db.one("SELECT 1 FROM containers WHERE id=?", (cid,)) is None)
            finally:
                n = self._removed_waiters.pop(cid, 1) - 1
                if n > 0:
                    self._removed_waiters[cid] = n
            code = self._last_exit.get(cid, 0)
            return {"StatusCode": code, "Error": None}
        if condition == "next-exit" or c.state.Running or cid in self._restart_tasks or self._starting(cid):
            seen = self._exits.get(cid, 0)
            async with self._changed:
                await self._changed.wait_for(
                    lambda: self._exits.get(cid, 0) > seen and cid not in self._restart_tasks
                    or self.db.one("SELECT 1 FROM containers WHERE id=?", (cid,)) is None)
        try:
            c = self.get(cid)
        except NotFound:
            return {"StatusCode": self._last_exit.get(cid, 0), "Error": None}
        return {"StatusCode": c.state.ExitCode, "Error": {"Message": c.state.Error} if c.state.Error else None}

    def _starting(self, cid: str) -> bool:
        # not the lock: the unmount after an exit holds it too, and a wait() then would miss that exit
        return cid in self._starting_ids

    async def pause(self, ref: str) -> None:
        c = self.get(ref)
        if not c.state.Running:
            raise Conflict(f"Container {c.id} is not running")
        if c.state.Paused:
            raise Conflict(f"Container {c.id} is already paused")
        await self._monitor(c, "pause")
        c = self.get(c.id)
        c.state.Paused = True
        c.state.Status = "paused"
        self._save(c)
        self._publish("pause", c)

    async def unpause(self, ref: str) -> None:
        c = self.get(ref)
        if not c.state.Paused:
            raise Conflict(f"Container {c.id} is not paused")
        await self._monitor(c, "resume")
        c = self.get(c.id)
        c.state.Paused = False
        c.state.Status = "running"
        self._save(c)
        self._publish("unpause", c)

    async def resize(self, ref: str, h: int, w: int, exec_id: str | None = None) -> None:
        c = self.get(ref)
        if not c.state.Running:
            raise Conflict(f"Container {c.id} is not running")
        await self._monitor(c, "resize", h=h, w=w, exec_id=exec_id)

    async def rename(self, ref: str, new: str) -> None:
        if not new:
            raise InvalidArgument("Neither old nor new names may be empty")
        c = self.get(ref)
        new = validate_name(new)
        if c.name == new:
            raise InvalidArgument("Renaming a container with the same name as its current name")
        with self.db.tx() as tx:
            other = tx.execute("SELECT id FROM containers WHERE name=?", (new,)).fetchone()
            if other:
                raise Conflict(f'Conflict. The container name "/{new}" is already in use by container "{other[0]}". '
                               "You have to remove (or rename) that container to be able to reuse that name.")
            old = c.name
            c.name = new
            tx.execute("UPDATE containers SET name=?, record=? WHERE id=?", (new, c.dumps(), c.id))
        self._publish("rename", c, {"oldName": "/" + old})

    async def update(self, ref: str, body: dict[str, Any]) -> dict[str, Any]:
        c = self.get(ref)
        hc = c.host_config
        keys = ("Memory", "MemorySwap", "MemoryReservation", "CpuShares", "NanoCpus", "CpuQuota", "CpuPeriod",
                "CpusetCpus", "CpusetMems", "PidsLimit", "BlkioWeight", "KernelMemory")
        for k in keys:
            if body.get(k) not in (None, 0, ""):
                hc[k] = body[k]
        if body.get("RestartPolicy"):
            if hc.get("AutoRemove") and body["RestartPolicy"].get("Name") not in ("", "no"):
                raise InvalidArgument("Restart policy cannot be updated because AutoRemove is enabled for the container")
            hc["RestartPolicy"] = body["RestartPolicy"]
        mem, swap = int(hc.get("Memory") or 0), int(hc.get("MemorySwap") or 0)
        if mem and swap > 0 and swap < mem:
            raise InvalidArgument("Memory limit should be smaller than already set memoryswap limit, "
                                  "update the memoryswap at the same time")
        if c.state.Running:
            from matou.runtime.spec import Resources

            quota, period = B.parse_cpus(hc)
            res = Resources(memory=mem or None, memory_swap=swap or None, cpu_shares=int(hc.get("CpuShares") or 0) or None,
                            cpu_quota=quota, cpu_period=period,
                            pids_limit=int(hc["PidsLimit"]) if hc.get("PidsLimit") and int(hc["PidsLimit"]) > 0 else None,
                            cpuset_cpus=hc.get("CpusetCpus") or None, cpuset_mems=hc.get("CpusetMems") or None)
            await self._monitor(c, "update", resources=res.to_oci())
        self._save(c)
        self._publish("update", c)
        return {"Warnings": []}

    # ------------------------------------------------------------------ remove
    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        c = self.get(ref)
        if c.state.Running or c.id in self.running:
            if not force:
                raise Conflict(f"You cannot remove a running container {c.id}. Stop the container before "
                               "attempting removal or force remove")
            c.manually_stopped = True
            self._save(c)
            self._removed.add(c.id)
            if c.state.Paused:
                with contextlib.suppress(Exception):
                    await self._monitor(c, "resume")
            # the monitor gone or going (reset): the container is exiting by itself
            with contextlib.suppress(Conflict, MonitorGone, ConnectionError):
                await self._monitor(c, "kill", signal=_signal.SIGKILL, all=True)
            await self._wait_exit(c.id, 30)
            c = self.get(c.id)
        if c.id in self._restart_tasks:
            self._restart_tasks.pop(c.id).cancel()
        self._removed.add(c.id)
        with self.db.tx() as tx:
            tx.execute("DELETE FROM containers WHERE id=?", (c.id,))
        self._last_exit[c.id] = c.state.ExitCode
        for e in [e for e in self.execs.values() if e.container_id == c.id]:
            self.execs.pop(e.id, None)
        if volumes and self.svcs.volumes is not None:
            for m in c.mounts:
                if m.get("Type") == "volume" and m.get("Name") and _is_anonymous(self.svcs.volumes, m["Name"]):
                    with contextlib.suppress(NotFound, Conflict):
                        self.svcs.volumes.remove(m["Name"])
        self._publish("destroy", c)
        await self._notify()
        # the record is gone; its files, mount, layer and network go off the caller's critical path
        self._background(c.id, self._dispose(c))

    def _background(self, cid: str, coro: Any) -> None:
        """A cleanup task; settle() waits for these."""
        task = asyncio.get_running_loop().create_task(coro)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    def track(self, coro: Any) -> None:
        """Run ``coro`` as a task this service holds on to: the event loop keeps only weak references, and a
        pending task that nobody references is collected mid-await (a restart after the daemon's own restart
        was lost that way: GeneratorExit inside the start recorded exit code 128)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _unmount_later(self, c: Container) -> None:
        async with self._lock(c.id):
            if c.id not in self.running:
                await asyncio.to_thread(self._unmount, c)

    async def _dispose(self, c: Container) -> None:
        """Unmount, remove the read-write layer and the directories of a removed container."""
        try:
            async with self._lock(c.id):
                await asyncio.to_thread(self._dispose_files, c)
                if self.svcs.networks is not None:
                    with contextlib.suppress(Exception):
                        await self.svcs.networks.on_remove(c)
        finally:
            self._locks.pop(c.id, None)

    def _dispose_files(self, c: Container) -> None:
        self._unmount(c)
        with contextlib.suppress(NotFound, Conflict):
            self.snapshots.remove(f"container-{c.id}")  # snapshot ids are never reused: no race with a new one
        shutil.rmtree(os.path.join(self.data_dir, c.id), ignore_errors=True)
        shutil.rmtree(self.bundle_dir(c.id), ignore_errors=True)

    async def settle(self) -> None:
        """Wait for background cleanups (tests, shutdown)."""
        while self._cleanups:
            await asyncio.gather(*list(self._cleanups), return_exceptions=True)

    @staticmethod
    def cleanup_orphans(run_dir: str, db: Database) -> None:
        """At start: unmount and drop bundle dirs of containers that no longer exist (a crash mid-removal)."""
        if not os.path.isdir(run_dir):
            return
        known = {r["id"] for r in db.all("SELECT id FROM containers")}
        for cid in os.listdir(run_dir):
            if cid in known:
                continue
            root = os.path.join(run_dir, cid, "rootfs")
            for _ in range(3):
                if not (os.path.isdir(root) and is_mountpoint(root)):
                    break
                with contextlib.suppress(OSError):
                    umount(root, MNT_DETACH)
            shutil.rmtree(os.path.join(run_dir, cid), ignore_errors=True)

    async def prune(self, filters: str | None) -> dict[str, Any]:
        from matou.util import filters as flt

        f = flt.parse(filters, {"until", "label", "label!"})
        deleted: list[str] = []
        freed = 0
        until = None
        if "until" in f:
            from matou.daemon.services.images import _parse_until

            until = _parse_until(f["until"][-1])
        for c in self._all():
            if c.state.Running or c.state.Status == "restarting":
                continue
            if until is not None and parse_time(c.created) >= until:
                continue
            if "label" in f and not flt.labels_match(c.config.get("Labels"), f["label"]):
                continue
            if "label!" in f and not flt.labels_match(c.config.get("Labels"), f["label!"], negate=True):
                continue
            with contextlib.suppress(Exception):
                freed += self.snapshots.usage(f"container-{c.id}")
            await self.remove(c.id)
            deleted.append(c.id)
        return {"ContainersDeleted": deleted or None, "SpaceReclaimed": freed}

    # ------------------------------------------------------------------ queries
    def image_name(self, c: Container) -> str:
        return c.config.get("Image") or c.image_id

    def list(self, all_: bool = False, limit: int = -1, size: bool = False, filters: str | None = None,
             latest: bool = False) -> list[dict[str, Any]]:
        from matou.daemon.services.containers.filters import ALLOWED, match
        from matou.util import filters as flt

        flt.parse(filters, ALLOWED)  # a bad filter is a 400 even when there is no container to match
        cs = list(reversed(self._all()))
        cs.sort(key=lambda c: parse_time(c.created), reverse=True)
        if latest:
            limit = 1
        if not all_ and limit <= 0 and not filters:
            cs = [c for c in cs if c.state.Running]
        if filters:
            cs = [c for c in cs if match(self, c, filters, all_ or limit > 0)]
        if limit > 0:
            cs = cs[:limit]
        return [c.summary(self.image_name(c), self._size(c) if size else None) for c in cs]

    def _size(self, c: Container) -> tuple[int, int]:
        try:
            rw = self.snapshots.usage(f"container-{c.id}")
        except NotFound:
            rw = 0
        img = self.images.get(c.image_id).size if self.images.exists(c.image_id) else 0
        return rw, rw + img

    def inspect(self, ref: str, size: bool = False) -> dict[str, Any]:
        c = self.get(ref)
        graph: dict[str, Any] = {"Name": "overlay2", "Data": None}
        with contextlib.suppress(NotFound):
            info = self.snapshots.chain(f"container-{c.id}")
            upper = self.snapshots.dir(info[0].key)
            lowers = [self.snapshots.dir(s.key) for s in info[1:]]
            graph["Data"] = {"LowerDir": ":".join(lowers), "MergedDir": self.rootfs(c.id), "UpperDir": upper,
                             "WorkDir": os.path.join(os.path.dirname(upper), "work")}
        return c.inspect(graph, self._size(c) if size else None)

    def df(self) -> list[dict[str, Any]]:
        return [c.summary(self.image_name(c), self._size(c)) for c in self._all()]

    async def top(self, ref: str, ps_args: str = "-ef") -> dict[str, Any]:
        c = self.get(ref)
        if not c.state.Running:
            raise Conflict(f"Container {c.id} is not running")
        pids = set((await self._monitor(c, "pids")).get("pids") or [])
        args = ps_args.split() if ps_args else ["-ef"]
        proc = await asyncio.create_subprocess_exec("ps", *args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise InvalidArgument(f"ps: {err.decode().strip()}")
        lines = out.decode().splitlines()
        if not lines:
            return {"Titles": [], "Processes": []}
        titles = lines[0].split()
        try:
            pid_col = titles.index("PID")
        except ValueError:
            raise InvalidArgument('Couldn\'t find PID field in ps output') from None
        procs = []
        for line in lines[1:]:
            fields = line.split(None, len(titles) - 1)
            if len(fields) > pid_col and fields[pid_col].isdigit() and int(fields[pid_col]) in pids:
                procs.append(fields)
        return {"Titles": titles, "Processes": procs}

    async def stats_once(self, ref: str) -> dict[str, Any]:
        from matou.daemon.services.containers.stats import docker_stats

        c = self.get(ref)
        raw: dict[str, Any] = {}
        if c.state.Running:
            with contextlib.suppress(Conflict):
                raw = (await self._monitor(c, "stats")).get("stats") or {}
        return docker_stats(c, raw)

    # ------------------------------------------------------------------ attach support
    async def wait_started(self, ref: str) -> Container:
        """For attach before start: returns once the monitor exists (or raise if the container is stopped)."""
        c = self.get(ref)
        if c.id in self.running:
            return c
        if c.state.Running:
            return c
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending_attach.setdefault(c.id, []).append(fut)
        try:
            await fut
        finally:
            lst = self._pending_attach.get(c.id)
            if lst and fut in lst:
                lst.remove(fut)
        return self.get(c.id)

    def monitor_socket(self, cid: str) -> str:
        return self._sock(cid)

    # ------------------------------------------------------------------ internal callers (builder)
    async def run_attached(self, body: dict[str, Any], on_output: Any, *, name: str | None = None,
                           remove: bool = True, keep: Any = None, on_created: Any = None) -> tuple[str, int]:
        """Create, start and wait for a container, streaming its output to ``on_output(stream, data)``
        (1 stdout, 2 stderr; may be a coroutine function). Returns (container id, exit code). With
        ``remove`` the container goes afterwards unless ``keep(exit_code)`` says otherwise.
        ``on_created(container_id)`` (may be a coroutine function) runs once the container exists."""
        created = await self.create(body, name)
        cid = created["Id"]
        if on_created is not None:
            r = on_created(cid)
            if asyncio.iscoroutine(r):
                await r
        return cid, await self.run_created(cid, on_output, remove=remove, keep=keep)

    async def run_created(self, cid: str, on_output: Any, *, remove: bool = True, keep: Any = None,
                          remove_on_error: bool = True) -> int:
        """run_attached() for a container that exists already; returns its exit code. A failed start
        raises, after removing the container if ``remove_on_error``."""
        from matou.monitor import protocol as P

        attach_task: asyncio.Task[None] | None = None

        async def pump() -> None:
            await self.wait_started(cid)
            try:
                reader, writer = await MonitorConnection(self._sock(cid)).open(
                    {"op": "attach", "stdin": False, "stdout": True, "stderr": True})
            except MonitorGone:
                return
            finally:
                self.attach_connected(cid)
            parser = P.FrameParser()
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        return
                    for stream, payload in parser.feed(data):
                        if stream in (P.STDOUT, P.STDERR):
                            r = on_output(stream, payload)
                            if asyncio.iscoroutine(r):
                                await r
            finally:
                writer.close()

        try:
            seen = self._exits.get(cid, 0)
            attach_task = asyncio.get_running_loop().create_task(pump())
            await asyncio.sleep(0)
            await self.start_container(cid)
            async with self._changed:
                await self._changed.wait_for(lambda: self._exits.get(cid, 0) > seen)
            code = self._last_exit[cid] if cid in self._last_exit else self.get(cid).state.ExitCode
        except BaseException:
            if attach_task is not None:
                attach_task.cancel()
            if remove_on_error:
                with contextlib.suppress(Exception):
                    await self.remove(cid, force=True, volumes=True)
            raise
        # the output still in flight and the removal, side by side: the monitor drained the container's pipes
        # before it reported the exit, and removing touches nothing of the attach stream
        removal = (asyncio.ensure_future(self.remove(cid, force=True, volumes=True))
                   if remove and not (keep and keep(code)) else None)
        try:
            await asyncio.wait_for(attach_task, 30)
        finally:
            if removal is not None:
                await removal
        return code

    # ------------------------------------------------------------------ exec
    def exec_create(self, ref: str, body: dict[str, Any]) -> str:
        c = self.get(ref)
        if not c.state.Running:
            raise Conflict(f"Container {c.id} is not running")
        if c.state.Paused:
            raise Conflict(f"Container {c.id} is paused, unpause the container before exec")
        if c.state.Restarting:
            raise Conflict(f"Container {c.id} is restarting, wait until the container is running")
        cmd = body.get("Cmd") or []
        if isinstance(cmd, str):
            cmd = [cmd]
        if not cmd:
            raise InvalidArgument("No exec command specified")
        eid = new_id()
        self.execs[eid] = ExecRecord(eid, c.id, dict(body, Cmd=cmd))
        c.exec_ids.append(eid)
        c.exec_ids = c.exec_ids[-50:]
        self._save(c)
        self._publish("exec_create: " + " ".join(cmd), c, {"execID": eid})
        return eid

    def exec_get(self, eid: str) -> ExecRecord:
        e = self.execs.get(eid)
        if e is None:
            raise NotFound(f"No such exec instance: {eid}")
        return e

    def exec_process(self, e: ExecRecord) -> dict[str, Any]:
        """The OCI process for an exec: the container's, with the exec's overrides."""
        from matou.runtime.spec import DEFAULT_CAPS, SpecOptions, default_spec
        from matou.runtime.users import resolve_user

        c = self.get(e.container_id)
        with open(os.path.join(self.bundle_dir(c.id), "config.json")) as f:
            spec = json.load(f)
        proc = dict(spec["process"])
        cfg = e.config
        proc["args"] = list(cfg["Cmd"])
        proc["terminal"] = bool(cfg.get("Tty"))
        env = list(proc.get("env") or [])
        for kv in cfg.get("Env") or []:
            k = kv.split("=", 1)[0]
            env = [x for x in env if x.split("=", 1)[0] != k] + [kv]
        if proc["terminal"] and not any(x.startswith("TERM=") for x in env):
            env.append("TERM=xterm")
        proc["env"] = env
        if cfg.get("WorkingDir"):
            proc["cwd"] = cfg["WorkingDir"]
        if cfg.get("User"):
            u = resolve_user(self.rootfs(c.id), cfg["User"])
            proc["user"] = {"uid": u.uid, "gid": u.gid, **({"additionalGids": list(u.additional_gids)}
                                                          if u.additional_gids else {})}
        if cfg.get("Privileged"):
            full = default_spec(SpecOptions(args=["x"], privileged=True))["process"]["capabilities"]
            proc["capabilities"] = full
        _ = DEFAULT_CAPS
        return proc


class _ExecFailed(SystemError_):
    """The container's program could not be executed (exit 126/127 in `run`)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(f"failed to create task for container: {message}")
        self.exit_code = code


def _is_anonymous(volumes: Any, name: str) -> bool:
    try:
        return "com.docker.volume.anonymous" in (volumes.get(name).get("Labels") or {})
    except NotFound:
        return False


def _rfc(ts: float) -> str:
    from matou.types.image import rfc3339

    return rfc3339(float(ts))

