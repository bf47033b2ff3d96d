"""matoud: the engine daemon. Serves the Docker Engine API on a Unix socket (and optionally TCP)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys

from matou.daemon.config import DaemonConfig, load_file
from matou.errors import MatouError

log = logging.getLogger("matoud")


def parse_args(argv: list[str] | None) -> DaemonConfig:
    p = argparse.ArgumentParser(prog="matoud", description="matou engine daemon")
    p.add_argument("-H", "--host", action="append", help="socket to listen on: unix:///path or tcp://ip:port")
    p.add_argument("--data-root", help="root of persistent state (default /var/lib/matou)")
    p.add_argument("--exec-root", help="root of runtime state (default /run/matou)")
    p.add_argument("-l", "--log-level", choices=["debug", "info", "warn", "warning", "error", "fatal"])
    p.add_argument("--log-file", help="write the daemon log here instead of stderr")
    p.add_argument("--config-file", help="daemon.json-style configuration file")
    p.add_argument("-p", "--pidfile")
    p.add_argument("-D", "--debug", action="store_true")
    p.add_argument("--insecure-registry", action="append", default=[])
    p.add_argument("--registry-mirror", action="append", default=[])
    a = p.parse_args(argv)
    cfg = DaemonConfig()
    cfg_file = a.config_file or ("/etc/matou/daemon.json" if os.path.exists("/etc/matou/daemon.json") else None)
    if cfg_file:
        cfg = load_file(cfg_file, cfg)
    if a.host:
        cfg.hosts = a.host
    if a.data_root:
        cfg.data_root = os.path.abspath(a.data_root)
    if a.exec_root:
        cfg.exec_root = os.path.abspath(a.exec_root)
    if a.log_level:
        cfg.log_level = a.log_level
    if a.log_file:
        cfg.log_file = a.log_file
    if a.pidfile:
        cfg.pidfile = a.pidfile
    if a.debug:
        cfg.debug = True
        cfg.log_level = "debug"
    cfg.insecure_registries += a.insecure_registry
    cfg.registry_mirrors += a.registry_mirror
    return cfg


def _setup_logging(cfg: DaemonConfig) -> None:
    level = {"warn": "WARNING", "fatal": "CRITICAL"}.get(cfg.log_level, cfg.log_level.upper())
    handler: logging.Handler
    if cfg.log_file:
        os.makedirs(os.path.dirname(os.path.abspath(cfg.log_file)), exist_ok=True)
        handler = logging.FileHandler(cfg.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _lock_pidfile(path: str) -> int:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.pread(fd, 32, 0).decode().strip()
        raise MatouError(f"another matoud (pid {other or '?'}) is running with {path}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _unix_socket(path: str) -> socket.socket:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale socket of a dead daemon
        else:
            probe.close()
            raise MatouError(f"{path} is in use by another daemon")
        finally:
            probe.close()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path + ".tmp")
    os.chmod(path + ".tmp", 0o660)
    os.rename(path + ".tmp", path)
    s.listen(1024)
    return s


async def serve(cfg: DaemonConfig) -> None:
    from aiohttp import web

    from matou.daemon.api.app import make_app
    from matou.daemon.engine import build_services, start_services, stop_services

    svcs = await asyncio.to_thread(build_services, cfg)
    loop = asyncio.get_running_loop()
    svcs.events.bind(loop)
    await start_services(svcs)
    app = make_app(svcs)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    sockets: list[str] = []
    for host in cfg.hosts:
        if host.startswith("unix://"):
            path = host[len("unix://"):]
            site: web.BaseSite = web.SockSite(runner, _unix_socket(path))
            sockets.append(path)
        elif host.startswith("tcp://"):
            h, _, port = host[len("tcp://"):].rpartition(":")
            site = web.TCPSite(runner, h or "127.0.0.1", int(port or 2375))
        else:
            raise MatouError(f"unsupported host {host!r}: use unix:///path or tcp://ip:port")
        await site.start()
    log.info("matoud ready: API on %s, data root %s", ", ".join(cfg.hosts), cfg.data_root)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("matoud shutting down (containers keep running)")
    await stop_services(svcs)
    await runner.cleanup()
    for p in sockets:
        with contextlib.suppress(OSError):
            os.unlink(p)


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(argv)
        _setup_logging(cfg)
        if os.geteuid() != 0:
            raise MatouError("matoud needs root")
        pidfile = cfg.pidfile or os.path.join(cfg.exec_root, "matoud.pid")
        _fd = _lock_pidfile(pidfile)
        asyncio.run(serve(cfg))
        with contextlib.suppress(OSError):
            os.unlink(pidfile)
        return 0
    except MatouError as e:
        sys.stderr.write(f"matoud: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
