"""The embedded DNS resolver containers on user networks see at 127.0.0.11, as Docker's.

One server per container: a UDP and a TCP socket opened inside the container's network namespace and bound to
127.0.0.11:53, served by the daemon's event loop. Because the sockets belong to one container, the resolver knows
who asks and answers only with the names of the networks that container is on (``resolve``); everything else is
forwarded, unchanged, to the host's resolvers from the host's namespace (so a 127.0.0.53 stub on the host works).
The wire format is dnslib's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable

from dnslib import PTR, QTYPE, RCODE, RR, A, DNSRecord

log = logging.getLogger("matoud.dns")

ADDRESS = "127.0.0.11"
TTL = 600
FORWARD_TIMEOUT = 2.0

Resolve = Callable[[str], "list[str] | None"]     # name -> IPv4 addresses, or None if not a container name
Reverse = Callable[[str], "str | None"]           # IPv4 address -> container name
Upstreams = Callable[[], "list[str]"]


def _hostport(server: str) -> tuple[str, int]:
    """An upstream as written in resolv.conf, or ``ip:port`` (IPv4) for a resolver on another port."""
    host, sep, port = server.rpartition(":")
    if sep and host.count(":") == 0 and port.isdigit():
        return host, int(port)
    return server, 53


def open_sockets() -> tuple[socket.socket, socket.socket]:
    """Call inside the container's namespace: unbound UDP and TCP sockets (bind once loopback is up)."""
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    return u, t


def bind_sockets(u: socket.socket, t: socket.socket) -> None:
    u.bind((ADDRESS, 53))
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((ADDRESS, 53))
    t.listen(64)


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        local = self.server.answer_local(data)
        if local is not None:
            if self.transport is not None:
                self.transport.sendto(local, addr)
            return
        self.server.spawn(self._forward(data, addr))

    async def _forward(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = await self.server.forward(data, tcp=False)
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)


class _Forward(asyncio.DatagramProtocol):
    def __init__(self, fut: asyncio.Future[bytes]) -> None:
        self.fut = fut

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.fut.done():
            self.fut.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.fut.done():
            self.fut.set_exception(exc)


class DNSServer:
    def __init__(self, resolve: Resolve, reverse: Reverse, upstreams: Upstreams) -> None:
        self.resolve = resolve
        self.reverse = reverse
        self.upstreams = upstreams
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._clients: set[asyncio.StreamWriter] = set()  # open TCP connections (they pin the namespace)

    async def start(self, udp: socket.socket, tcp: socket.socket | None) -> None:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _UDP(self), sock=udp)
        if tcp is not None:
            self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp)

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        for t in list(self._tasks):
            t.cancel()
        for w in list(self._clients):
            w.close()
        self._clients.clear()

    def spawn(self, coro: object) -> None:
        t = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ answers
    def answer_local(self, data: bytes) -> bytes | None:
        """The reply for a container name (or its reverse), or None to forward the query."""
        try:
            q = DNSRecord.parse(data)
        except Exception:
            return None
        if len(q.questions) != 1:
            return None
        name = str(q.q.qname).rstrip(".").lower()
        qtype = q.q.qtype
        if qtype == QTYPE.PTR and name.endswith(".in-addr.arpa"):
            try:
                ip = str(ipaddress.IPv4Address(".".join(reversed(name[:-len(".in-addr.arpa")].split(".")))))
            except ValueError:
                return None
            target = self.reverse(ip)
            if target is None:
                return None
            r = q.reply()
            r.add_answer(RR(q.q.qname, QTYPE.PTR, rdata=PTR(target + "."), ttl=TTL))
            return r.pack()
        if qtype not in (QTYPE.A, QTYPE.AAAA, QTYPE.ANY):
            return None
        ips = self.resolve(name)
        if ips is None:
            return None
        r = q.reply()
        if qtype in (QTYPE.A, QTYPE.ANY):
            for ip in ips:
                r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(ip), ttl=TTL))
        return r.pack()

    async def forward(self, data: bytes, tcp: bool) -> bytes | None:
        for server in self.upstreams():
            try:
                if tcp:
                    return await asyncio.wait_for(self._forward_tcp(server, data), FORWARD_TIMEOUT)
                return await self._forward_udp(server, data)
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as e:
                log.debug("upstream %s: %s", server, e)
                continue
        try:
            q = DNSRecord.parse(data)
        except Exception:
            return None
        r = q.reply()
        r.header.rcode = RCODE.SERVFAIL
        return r.pack()

    async def _forward_udp(self, server: str, data: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Forward(fut), remote_addr=_hostport(server))
        try:
            transport.sendto(data)
            return await asyncio.wait_for(fut, FORWARD_TIMEOUT)
        finally:
            transport.close()

    async def _forward_tcp(self, server: str, data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(*_hostport(server))
        try:
            writer.write(struct.pack("!H", len(data)) + data)
            await writer.drain()
            n = struct.unpack("!H", await reader.readexactly(2))[0]
            return await reader.readexactly(n)
        finally:
            writer.close()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while True:
                n = struct.unpack("!H", await reader.readexactly(2))[0]
                data = await reader.readexactly(n)
                reply = self.answer_local(data)
                if reply is None:
                    reply = await self.forward(data, tcp=True)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._clients.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
