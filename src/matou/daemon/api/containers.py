"""/containers/*, /exec/*, /commit and /volumes/* routes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
from typing import Any

from aiohttp import web

from matou.daemon.api import archive
from matou.daemon.api.app import Router, qbool, qint, services
from matou.daemon.api.hijack import MULTIPLEXED, RAW, hijack, parse_detach_keys
from matou.daemon.api.relay import relay
from matou.errors import Conflict, InvalidArgument, NotFound
from matou.logs import jsonfile
from matou.monitor import protocol as P
from matou.monitor.client import MonitorConnection, MonitorGone


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise InvalidArgument(f"invalid JSON body: {e}") from None
    if body is not None and not isinstance(body, dict):
        raise InvalidArgument("invalid JSON body: expected an object")
    return body or {}


def _ctr(request: web.Request) -> Any:
    return services(request).containers


# ---------------------------------------------------------------------------- queries

async def list_containers(request: web.Request) -> web.StreamResponse:
    s = _ctr(request)
    out = await asyncio.to_thread(s.list, qbool(request, "all"), qint(request, "limit", -1) or -1,
                                  qbool(request, "size"), request.query.get("filters"), qbool(request, "latest"))
    return web.json_response(out)


async def inspect(request: web.Request) -> web.StreamResponse:
    return web.json_response(await asyncio.to_thread(_ctr(request).inspect, request.match_info["id"],
                                                     qbool(request, "size")))


async def top(request: web.Request) -> web.StreamResponse:
    return web.json_response(await _ctr(request).top(request.match_info["id"], request.query.get("ps_args", "-ef")))


async def changes(request: web.Request) -> web.StreamResponse:
    s = _ctr(request)
    c = s.get(request.match_info["id"])
    from matou.layers.diff import changes as layer_changes

    chain = s.snapshots.chain(f"container-{c.id}")
    upper = s.snapshots.dir(chain[0].key)
    lowers = [s.snapshots.dir(x.key) for x in chain[1:]]

    def compute() -> list[dict[str, Any]]:
        kinds = {"C": 0, "A": 1, "D": 2}
        out = []
        for k, p in layer_changes(upper):
            if k == "C" and not any(os.path.lexists(os.path.join(lo, p.lstrip("/"))) for lo in lowers):
                k = "A"  # a directory the image never had is an addition, as docker reports it
            out.append({"Path": p, "Kind": kinds[k]})
        return out

    out = await asyncio.to_thread(compute)
    return web.json_response(out or None)


async def stats(request: web.Request) -> web.StreamResponse:
    s = _ctr(request)
    c = s.get(request.match_info["id"])
    stream = qbool(request, "stream", True) and not qbool(request, "one-shot")
    if not stream:
        return web.json_response(await s.stats_once(c.id))
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    prev: dict[str, Any] | None = None
    try:
        while True:
            cur = await s.stats_once(c.id)
            if prev is not None:
                cur["precpu_stats"] = prev["cpu_stats"]
                cur["preread"] = prev["read"]
            await resp.write(json.dumps(cur).encode() + b"\n")
            prev = cur
            if not s.get(c.id).state.Running:
                break
            await asyncio.sleep(1)
    except (ConnectionResetError, NotFound):
        pass
    return resp


# ---------------------------------------------------------------------------- lifecycle

async def create(request: web.Request) -> web.StreamResponse:
    body = await _json_body(request)
    out = await _ctr(request).create(body, request.query.get("name") or None, request.query.get("platform"))
    return web.json_response(out, status=201)


async def run(request: web.Request) -> web.StreamResponse:
    """A matou extension for the matou CLI: create, start and wait in one request, with the output on the
    same connection (what `run` without -d, -i or -t needs; docker's CLI makes four requests for it). The
    body and query are those of /containers/create plus ``remove``. Errors before the container exists are
    ordinary JSON errors; then the connection is hijacked and carries Docker's multiplexed frames, with
    stream 3 holding JSON control messages: ``{"Id"}`` first, ``{"StatusCode"[, "Error"][, "Trace"]}`` last."""
    s = _ctr(request)
    body = await _json_body(request)  # checked against /containers/create's schema by body_middleware
    if (body or {}).get("Tty") or (body or {}).get("OpenStdin"):
        raise InvalidArgument("/containers/run streams output only: use create, attach and start for a tty or stdin")
    created = await s.create(body, request.query.get("name") or None, request.query.get("platform"))
    cid = created["Id"]
    client = await hijack(request, MULTIPLEXED, head_first=False)  # only matou's CLI uses this endpoint
    try:
        await client.write(P.control({"Id": cid, "Warnings": created.get("Warnings") or []}))

        async def out(stream: int, data: bytes) -> None:
            await client.write(P.frame(stream, data))

        end: dict[str, Any]
        try:
            remove = qbool(request, "remove")
            end = {"StatusCode": await s.run_created(cid, out, remove=remove, remove_on_error=remove)}
        except Exception as e:  # noqa: BLE001 - reported on the stream, as start's error response would be
            end = {"StatusCode": int(getattr(e, "exit_code", 125) or 125), "Error": str(e) or type(e).__name__}
        trace = s.traces.pop(cid, None)
        if trace is not None and request.headers.get("X-Matou-Trace"):
            end["Trace"] = trace
        await client.write(P.control(end))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        client.close()
    return web.Response()


async def start(request: web.Request) -> web.StreamResponse:
    s = _ctr(request)
    await s.start_container(request.match_info["id"])
    headers = {}
    if request.headers.get("X-Matou-Trace"):
        c = s.get(request.match_info["id"])
        headers["X-Matou-Trace"] = json.dumps(s.traces.pop(c.id, {}))
    return web.Response(status=204, headers=headers)


async def stop(request: web.Request) -> web.StreamResponse:
    await _ctr(request).stop_container(request.match_info["id"], qint(request, "t"), request.query.get("signal"))
    return web.Response(status=204)


async def restart(request: web.Request) -> web.StreamResponse:
    await _ctr(request).restart(request.match_info["id"], qint(request, "t"), request.query.get("signal"))
    return web.Response(status=204)


async def kill(request: web.Request) -> web.StreamResponse:
    await _ctr(request).kill(request.match_info["id"], request.query.get("signal") or None)
    return web.Response(status=204)


async def pause(request: web.Request) -> web.StreamResponse:
    await _ctr(request).pause(request.match_info["id"])
    return web.Response(status=204)


async def unpause(request: web.Request) -> web.StreamResponse:
    await _ctr(request).unpause(request.match_info["id"])
    return web.Response(status=204)


async def rename(request: web.Request) -> web.StreamResponse:
    await _ctr(request).rename(request.match_info["id"], request.query.get("name", ""))
    return web.Response(status=204)


async def update(request: web.Request) -> web.StreamResponse:
    return web.json_response(await _ctr(request).update(request.match_info["id"], await _json_body(request)))


async def resize(request: web.Request) -> web.StreamResponse:
    h, w = qint(request, "h", 0) or 0, qint(request, "w", 0) or 0
    with contextlib.suppress(Conflict):
        await _ctr(request).resize(request.match_info["id"], h, w)
    return web.Response(status=200)


async def wait(request: web.Request) -> web.StreamResponse:
    s = _ctr(request)
    s.get(request.match_info["id"])  # 404 before the 200
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    task = asyncio.ensure_future(s.wait(request.match_info["id"], request.query.get("condition", "not-running")))
    # the status line is already out: keep the connection alive while waiting (docker's CLI expects so)
    try:
        out = await task
    except NotFound:
        out = {"StatusCode": 0, "Error": None}
    except Exception as e:  # noqa: BLE001
        out = {"StatusCode": 125, "Error": {"Message": str(e)}}
    with contextlib.suppress(ConnectionResetError):
        await resp.write(json.dumps(out).encode() + b"\n")
    return resp


async def remove(request: web.Request) -> web.StreamResponse:
    await _ctr(request).remove(request.match_info["id"], qbool(request, "force"), qbool(request, "v"))
    return web.Response(status=204)


async def prune(request: web.Request) -> web.StreamResponse:
    return web.json_response(await _ctr(request).prune(request.query.get("filters")))


# ---------------------------------------------------------------------------- streams

def _log_frames(entries: list[jsonfile.Entry], tty: bool, timestamps: bool, stdout: bool, stderr: bool) -> bytes:
    out = bytearray()
    for e in entries:
        if (e.stream == "stdout" and not stdout) or (e.stream == "stderr" and not stderr):
            continue
        data = (e.time.encode() + b" " + e.data) if timestamps else e.data
        if tty:
            out += data
        else:
            out += P.frame(P.STDOUT if e.stream == "stdout" else P.STDERR, data)
    return bytes(out)


def _ts_param(v: str | None) -> float:
    if not v or v == "0":
        return 0.0
    try:
        return float(v)
    except ValueError:
        from matou.daemon.api.system import _ts

        t = _ts(v)
        if t is None:
            raise InvalidArgument(f"invalid time value {v!r}") from None
        return t


async def logs(request: web.Request) -> web.StreamResponse:
    s = _ctr(request)
    c = s.get(request.match_info["id"])
    stdout, stderr = qbool(request, "stdout"), qbool(request, "stderr")
    if not stdout and not stderr:
        raise InvalidArgument("Bad parameters: you must choose at least one stream")
    if c.host_config.get("LogConfig", {}).get("Type") == "none" or not c.log_path:
        raise InvalidArgument('configured logging driver does not support reading')
    follow = qbool(request, "follow")
    ts = qbool(request, "timestamps")
    tail_s = request.query.get("tail", "all")
    tail = -1 if tail_s in ("all", "") else int(tail_s) if tail_s.lstrip("-").isdigit() else -1
    since, until = _ts_param(request.query.get("since")), _ts_param(request.query.get("until"))
    tty = bool(c.config.get("Tty"))
    resp = web.StreamResponse(headers={"Content-Type": RAW if tty else MULTIPLEXED})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    follower = jsonfile.Follower(c.log_path, start_at_end=True) if follow else None
    try:
        entries = await asyncio.to_thread(jsonfile.read, c.log_path, tail=tail, since=since, until=until)
        data = _log_frames(entries, tty, ts, stdout, stderr)
        if data:
            await resp.write(data)
        if follower is None:
            return resp
        seen_last = entries[-1].time if entries else ""
        first = True
        while True:
            new = follower.poll()
            if first and seen_last:
                new = [e for e in new if e.time > seen_last]
                first = False
            if until:
                new = [e for e in new if e.ts <= until]
            if new:
                await resp.write(_log_frames(new, tty, ts, stdout, stderr))
            if until and time.time() > until:
                break
            try:
                cur = s.get(c.id)
            except NotFound:
                break
            if not cur.state.Running and c.id not in s.running and not cur.state.Restarting:
                rest = follower.poll()
                if rest:
                    await resp.write(_log_frames(rest, tty, ts, stdout, stderr))
                break
            await asyncio.sleep(0.05)
    except ConnectionResetError:
        pass
    finally:
        if follower is not None:
            follower.close()
    return resp


async def attach(request: web.Request) -> web.StreamResponse:
    s = _ctr(request)
    c = s.get(request.match_info["id"])
    q = request.query
    want_in, want_out, want_err = qbool(request, "stdin"), qbool(request, "stdout"), qbool(request, "stderr")
    try:
        keys = parse_detach_keys(q.get("detachKeys"))
    except ValueError as e:
        raise InvalidArgument(str(e)) from None
    if not c.state.Running and c.has_been_started and not qbool(request, "logs") and c.id not in s.running:
        if c.state.Status != "created":
            raise Conflict("You cannot attach to a stopped container, start it first")
    tty = bool(c.config.get("Tty"))
    client = await hijack(request, RAW if tty else MULTIPLEXED)
    try:
        if qbool(request, "logs") and c.log_path:
            entries = await asyncio.to_thread(jsonfile.read, c.log_path)
            data = _log_frames(entries, tty, False, want_out, want_err)
            if data:
                await client.write(data)
        if not qbool(request, "stream", True):
            return web.Response()
        c = await s.wait_started(c.id)
        try:
            mreader, mwriter = await MonitorConnection(s.monitor_socket(c.id)).open(
                {"op": "attach", "stdin": want_in, "stdout": want_out, "stderr": want_err})
        except MonitorGone:
            return web.Response()
        finally:
            s.attach_connected(c.id)
        await relay(client, mreader, mwriter, tty=tty, stdin=want_in and bool(c.config.get("OpenStdin")),
                    detach_keys=keys if want_in else None)
        if want_in:
            with contextlib.suppress(NotFound):
                s._publish("detach", s.get(c.id)) if False else None
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        client.close()
    return web.Response()


# ---------------------------------------------------------------------------- exec

async def exec_create(request: web.Request) -> web.StreamResponse:
    eid = await asyncio.to_thread(_ctr(request).exec_create, request.match_info["id"], await _json_body(request))
    return web.json_response({"Id": eid}, status=201)


async def exec_inspect(request: web.Request) -> web.StreamResponse:
    s = _ctr(request)
    e = s.exec_get(request.match_info["id"])
    if e.running is False and e.exit_code is None and e.pid:
        _poll_exec_file(s, e)
    cfg = e.config
    cmd = cfg.get("Cmd") or []
    return web.json_response({
        "ID": e.id, "Running": e.running, "ExitCode": e.exit_code, "CanRemove": False,
        "ContainerID": e.container_id, "DetachKeys": cfg.get("DetachKeys", ""),
        "OpenStdin": bool(cfg.get("AttachStdin")), "OpenStderr": bool(cfg.get("AttachStderr")),
        "OpenStdout": bool(cfg.get("AttachStdout")), "Pid": e.pid,
        "ProcessConfig": {"tty": bool(cfg.get("Tty")), "entrypoint": cmd[0] if cmd else "",
                          "arguments": cmd[1:], "privileged": bool(cfg.get("Privileged")),
                          "user": cfg.get("User", "")},
    })


def _poll_exec_file(s: Any, e: Any) -> None:
    path = os.path.join(s.bundle_dir(e.container_id), "exec", e.id + ".json")
    with contextlib.suppress(OSError, ValueError):
        with open(path) as f:
            e.exit_code = json.load(f)["exit_code"]


async def exec_resize(request: web.Request) -> web.StreamResponse:
    s = _ctr(request)
    e = s.exec_get(request.match_info["id"])
    with contextlib.suppress(Conflict, MonitorGone):
        await s.resize(e.container_id, qint(request, "h", 0) or 0, qint(request, "w", 0) or 0, exec_id=e.id)
    return web.Response(status=201)


async def exec_start(request: web.Request) -> web.StreamResponse:
    s = _ctr(request)
    e = s.exec_get(request.match_info["id"])
    body = await _json_body(request)
    if e.running or e.exit_code is not None:
        raise Conflict(f"Error: Exec command {e.id} is already running" if e.running else
                       f"Error: Exec command {e.id} has already run")
    c = s.get(e.container_id)
    if not c.state.Running:
        raise Conflict(f"Container {c.id} is not running")
    detach = bool(body.get("Detach"))
    tty = bool(body.get("Tty", e.config.get("Tty")))
    e.config["Tty"] = tty
    process = await asyncio.to_thread(s.exec_process, e)
    want_in = bool(e.config.get("AttachStdin")) and not detach
    req = {"op": "exec", "exec_id": e.id, "process": process, "stdin": want_in, "detach": detach}
    # Answer 101 before the process starts, as dockerd does: output sent together with the response head ends up
    # in the client's HTTP buffer, which docker-py bypasses (it reads the raw socket), so that output was lost.
    client = None if detach else await hijack(request, RAW if tty else MULTIPLEXED)
    try:
        mreader, mwriter = await MonitorConnection(s.monitor_socket(c.id)).open(req)
        first = await _read_control(mreader)
    except (MonitorGone, OSError, asyncio.IncompleteReadError, ValueError) as err:
        if client is None:
            raise Conflict(f"Container {c.id} is not running") from err
        with contextlib.suppress(ConnectionResetError):
            text = f"Error response from daemon: Container {c.id} is not running\r\n".encode()
            await client.write(text if tty else P.frame(P.STDERR, text))
        client.close()
        return web.Response()
    except BaseException:
        if client is not None:
            client.close()
        raise
    if "error" in first:
        mwriter.close()
        code = int(first.get("exit_code") or 126)
        e.exit_code = code
        msg = first["error"]
        if client is None:
            raise Conflict(f"OCI runtime exec failed: {msg}")
        with contextlib.suppress(ConnectionResetError):
            text = f"OCI runtime exec failed: exec failed: {msg}: unknown\r\n".encode()
            await client.write(text if tty else P.frame(P.STDOUT, text))
        client.close()
        return web.Response()
    e.pid = int(first.get("pid") or 0)
    e.running = True
    s._publish("exec_start: " + " ".join(e.config.get("Cmd") or []), c, {"execID": e.id})
    if client is None:
        mwriter.close()
        s.track(_track_detached(s, e))
        return web.Response(status=200)
    try:
        res = await relay(client, mreader, mwriter, tty=tty, stdin=want_in,
                          detach_keys=parse_detach_keys(e.config.get("DetachKeys")) if want_in else None)
        if "exit_code" in res:
            e.exit_code = int(res["exit_code"])
            e.running = False
        elif not res.get("detached"):
            s.track(_track_detached(s, e))
    finally:
        client.close()
    if e.exit_code is not None:
        s._publish("exec_die", c, {"execID": e.id, "exitCode": str(e.exit_code)})
    return web.Response()


async def _read_control(reader: asyncio.StreamReader) -> dict[str, Any]:
    head = await reader.readexactly(P.HEADER.size)
    stream, size = P.HEADER.unpack(head)
    payload = await reader.readexactly(size)
    if stream != P.CONTROL:
        return {"error": "protocol error"}
    return json.loads(payload)


async def _track_detached(s: Any, e: Any) -> None:
    path = os.path.join(s.bundle_dir(e.container_id), "exec", e.id + ".json")
    while e.running:
        if os.path.exists(path):
            _poll_exec_file(s, e)
            if e.exit_code is not None:
                e.running = False
                break
        try:
            c = s.get(e.container_id)
            if not c.state.Running:
                e.running = False
                break
        except NotFound:
            break
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------------------- volumes

async def volumes_list(request: web.Request) -> web.StreamResponse:
    return web.json_response(await asyncio.to_thread(services(request).volumes.list, request.query.get("filters")))


async def volumes_create(request: web.Request) -> web.StreamResponse:
    body = await _json_body(request)
    rec = await asyncio.to_thread(services(request).volumes.create, body.get("Name") or None,
                                  body.get("Driver") or "local", body.get("Labels"), body.get("DriverOpts"))
    rec = dict(rec)
    rec.pop("Seeded", None)
    return web.json_response(rec, status=201)


async def volumes_inspect(request: web.Request) -> web.StreamResponse:
    return web.json_response(services(request).volumes.inspect(request.match_info["name"]))


async def volumes_remove(request: web.Request) -> web.StreamResponse:
    await asyncio.to_thread(services(request).volumes.remove, request.match_info["name"], qbool(request, "force"))
    return web.Response(status=204)


async def volumes_prune(request: web.Request) -> web.StreamResponse:
    return web.json_response(await asyncio.to_thread(services(request).volumes.prune, request.query.get("filters")))


def register(r: Router) -> None:
    r.get("/containers/json", list_containers)
    r.post("/containers/create", create)
    r.post("/containers/run", run)  # matou extension (the matou CLI's `run` without -d/-i/-t)
    r.post("/containers/prune", prune)
    r.get("/containers/{id}/json", inspect)
    r.get("/containers/{id}/top", top)
    r.get("/containers/{id}/logs", logs)
    r.get("/containers/{id}/changes", changes)
    r.get("/containers/{id}/export", archive.export)
    r.get("/containers/{id}/stats", stats)
    r.post("/containers/{id}/resize", resize)
    r.post("/containers/{id}/start", start)
    r.post("/containers/{id}/stop", stop)
    r.post("/containers/{id}/restart", restart)
    r.post("/containers/{id}/kill", kill)
    r.post("/containers/{id}/update", update)
    r.post("/containers/{id}/rename", rename)
    r.post("/containers/{id}/pause", pause)
    r.post("/containers/{id}/unpause", unpause)
    r.post("/containers/{id}/attach", attach)
    r.post("/containers/{id}/wait", wait)
    r.delete("/containers/{id}", remove)
    r.head("/containers/{id}/archive", archive.head)
    r.get("/containers/{id}/archive", archive.get)
    r.put("/containers/{id}/archive", archive.put)
    r.post("/containers/{id}/exec", exec_create)
    r.post("/exec/{id}/start", exec_start)
    r.post("/exec/{id}/resize", exec_resize)
    r.get("/exec/{id}/json", exec_inspect)
    r.post("/commit", archive.commit)
    r.get("/volumes", volumes_list)
    r.post("/volumes/create", volumes_create)
    r.post("/volumes/prune", volumes_prune)
    r.get("/volumes/{name}", volumes_inspect)
    r.delete("/volumes/{name}", volumes_remove)
    _ = base64
